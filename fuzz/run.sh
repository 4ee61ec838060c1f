#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60), starting from the
# seed corpus kept in fuzz/seeds/<target>/ and growing fuzz/corpus/<target>/
# (not committed). Any crash, failed assertion or leak fails the run; the
# input that caused it is saved under fuzz/artifacts/<target>/ and printed.
#
#   fuzz/run.sh               # each target 60 s (what .ci/run does)
#   fuzz/run.sh 3600 json_reader   # one target, an hour
#
# Needs cargo-fuzz (cargo install cargo-fuzz). Its flags need a nightly
# compiler; RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(judge_line json_reader framer config conninfo tlog_text)
fi
export RUSTC_BOOTSTRAP=1
cargo fuzz build
for target in "${targets[@]}"; do
  echo "== fuzz $target for ${seconds}s"
  mkdir -p "corpus/$target"
  log="corpus/$target.log"
  status=0
  cargo fuzz run "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -max_len=8192 -print_final_stats=1 >"$log" 2>&1 || status=$?
  grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" || true
  if [ "$status" -ne 0 ]; then
    tail -n 60 "$log" >&2
    echo "fuzz/run.sh: $target failed; the input is under fuzz/artifacts/$target/" >&2
    exit 1
  fi
done
