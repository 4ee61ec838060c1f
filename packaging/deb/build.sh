#!/usr/bin/env bash
# Builds the Debian package: <target dir>/debian/ledgertail_<version>_<arch>.deb
# (the target dir is ./target, or CARGO_TARGET_DIR when set).
#
#   packaging/deb/build.sh
#
# Needs cargo-deb (`cargo install cargo-deb`). The release binary and the
# docs generator are built; the man pages and completions are generated
# from the clap definitions; the systemd units get the package's paths;
# the configuration becomes /etc/ledgertail/ledgertail.toml (a conffile)
# with the mirror under /var/lib/ledgertail. Then `cargo deb --no-build`
# packs what Cargo.toml's [package.metadata.deb] lists.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! cargo deb --version >/dev/null 2>&1; then
  echo "build.sh: cargo-deb is not installed: cargo install cargo-deb" >&2
  exit 2
fi

cargo build --release --locked --bin ledgertail --bin ledgertail-docs
# Where cargo put them: ./target, or CARGO_TARGET_DIR (or build.target-dir).
target_dir=$(cargo metadata --no-deps --format-version 1 \
  | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')

# The staging folder stays in this checkout: Cargo.toml's asset list
# names it relative to the crate (cargo-deb maps only target/release/ to
# the real target dir).
stage=target/deb
rm -rf "$stage"
mkdir -p "$stage/man" "$stage/systemd" "$stage/config"
"$target_dir/release/ledgertail-docs" --out "$stage/generated"
for page in "$stage"/generated/man/*.1; do
  gzip -9 -n -c "$page" > "$stage/man/$(basename "$page").gz"
done
cp -r "$stage/generated/completions" "$stage/completions"
# A native package's changelog is changelog.gz (cargo-deb's own option
# names it changelog.Debian.gz, the name for non-native packages).
gzip -9 -n -c packaging/deb/changelog > "$stage/changelog.gz"

# The units as shipped, with the packaged binary's path and without the
# install steps for a hand-made setup.
package_unit() {
  sed -e 's|/usr/local/bin/ledgertail|/usr/bin/ledgertail|g' \
      -e '/^# Install:/,/^$/d' "$1" > "$2"
}
package_unit packaging/ledgertail.service "$stage/systemd/ledgertail.service"
package_unit packaging/ledgertail-replay.service "$stage/systemd/ledgertail-replay.service"
cp packaging/ledgertail-replay.timer "$stage/systemd/ledgertail-replay.timer"

# The configuration: the commented example, with the paths of the package:
# the mirror in the unit's one writable place, /var/lib/ledgertail (0750,
# the sidecar's own); the ledger where an application writes it, which
# the sidecar only reads.
sed -e 's|^db = "ledgertail.db"|db = "/var/lib/ledgertail/ledgertail.db"|' \
    -e 's|^path = "ledger.jsonl"|path = "/srv/app/ledger.jsonl"   # your application'"'"'s ledger: the ledgertail user must be able to read it|' \
    config/ledgertail.toml > "$stage/config/ledgertail.toml"
grep -q '^db = "/var/lib/ledgertail/ledgertail.db"' "$stage/config/ledgertail.toml"

cargo deb --no-build --output "$target_dir/debian/"
ls "$target_dir"/debian/ledgertail_*.deb
