#!/usr/bin/env bash
# Keeps tests/data/ equal to the contract's test data in the contract's
# folder, which LEDGERTAIL_SHARED names (there is no default): the
# ledger-v1 vectors and the RFC 8785 data, data files only. For
# maintainers when the contract changes: a bare clone's tests read
# tests/data alone and never run this.
#
#   LEDGERTAIL_SHARED=DIR tests/data/refresh.sh           copy DIR over tests/data
#   LEDGERTAIL_SHARED=DIR tests/data/refresh.sh --check   exit 1 (and show how) if they differ
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
shared="${LEDGERTAIL_SHARED:-}"
sets=(vectors rfc8785)

if [ -z "$shared" ] || [ ! -d "$shared/vectors" ]; then
  echo "refresh: no contract folder${shared:+ at $shared} (LEDGERTAIL_SHARED must name one with vectors/ in it)." >&2
  echo "This script only brings the copy up to date from the contract's folder; the tests" >&2
  echo "read tests/data alone and need nothing else. Point LEDGERTAIL_SHARED at the folder." >&2
  exit 2
fi

differs=0
for set in "${sets[@]}"; do
  if [ "${1:-}" = "--check" ]; then
    if ! diff -r -x README.md "$shared/$set" "$here/$set" >/dev/null; then
      echo "tests/data/$set differs from $shared/$set:" >&2
      diff -r -q -x README.md "$shared/$set" "$here/$set" >&2 || true
      differs=1
    fi
  else
    rm -rf "${here:?}/$set"
    cp -r "$shared/$set" "$here/$set"
    rm -f "$here/$set/README.md"
    chmod -R u+w "$here/$set"
  fi
done
if [ "${1:-}" = "--check" ] && [ "$differs" = 1 ]; then
  echo "run tests/data/refresh.sh, look at what changed in the contract, and commit" >&2
  exit 1
fi
