#!/usr/bin/env bash
# Builds the container image ledgertail:<version> with buildah (no daemon
# needed), from scratch: the release binary, the shared libraries `ldd`
# lists for it, and the container's config. No base image is pulled.
#
#   packaging/container/build.sh [IMAGE]     (default: ledgertail:<version>,
#                                             also tagged ledgertail:latest)
#
# Run it with podman or docker (after `buildah push` to their store):
#   podman run --rm -v "$PWD:/data" -p 9898:9898 ledgertail:<version>
set -euo pipefail
cd "$(dirname "$0")/../.."

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
image="${1:-ledgertail:$version}"
cargo build --release --locked --bin ledgertail
# Where cargo put it: ./target, or CARGO_TARGET_DIR (or build.target-dir).
target_dir=$(cargo metadata --no-deps --format-version 1 \
  | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
# The image carries a stripped copy (no symbol tables).
work=$(mktemp -d)
ctr=""
trap '[ -n "$ctr" ] && buildah rm "$ctr" >/dev/null 2>&1; rm -rf "$work"' EXIT
binary="$work/ledgertail"
strip -o "$binary" "$target_dir/release/ledgertail"

ctr=$(buildah from scratch)
buildah copy "$ctr" "$binary" /usr/local/bin/ledgertail >/dev/null
# The dynamic loader and the libraries the binary links (glibc, libgcc).
for lib in $(ldd "$binary" | grep -o '/[^ ]*' | sort -u); do
  buildah copy "$ctr" "$lib" "$lib" >/dev/null
done
buildah copy "$ctr" packaging/container.toml /etc/ledgertail/ledgertail.toml >/dev/null
# /data: the ledger's folder, mounted over by the operator; writable by
# the image's user for a mirror kept beside the ledger.
mkdir -m 0755 "$work/data"
buildah copy --chown 65532:65532 "$ctr" "$work/data" /data >/dev/null
buildah config \
  --user 65532:65532 \
  --workingdir /data \
  --port 9898 \
  --stop-signal SIGTERM \
  --label org.opencontainers.image.title=ledgertail \
  --label "org.opencontainers.image.version=$version" \
  --label org.opencontainers.image.licenses=Apache-2.0 \
  --entrypoint '["/usr/local/bin/ledgertail", "run", "--config", "/etc/ledgertail/ledgertail.toml"]' \
  "$ctr"
buildah commit --quiet "$ctr" "$image" >/dev/null
# The default name is also tagged :latest, for `podman run ledgertail`.
if [ $# -eq 0 ]; then
  buildah tag "$image" ledgertail:latest
fi
echo "$image"
