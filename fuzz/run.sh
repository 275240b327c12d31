#!/usr/bin/env bash
# Runs the fuzz targets (all, or those named), one after the other, each for a bounded
# time, from the committed seeds plus whatever an earlier run left in fuzz/corpus/.
# Fails on the first crash, leak, timeout or out-of-memory; the input that caused it is
# kept in fuzz/artifacts/<target>/ (reproduce with `cargo +nightly fuzz run <target>
# <that file>`).
#
#   fuzz/run.sh [seconds per target, default 60] [target ...]
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(classify sse_usage redact admin_json)
fi

cargo +nightly fuzz build
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for target in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$target"
  printf '\n--- %s: %s s\n' "$target" "$seconds"
  status=0
  cargo +nightly fuzz run "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
    -dict="fuzz/dicts/$target.dict" -max_total_time="$seconds" -timeout=60 -rss_limit_mb=4096 \
    -print_final_stats=1 >"$log" 2>&1 || status=$?
  if [ "$status" -ne 0 ]; then
    tail -n 60 "$log"
    echo "fuzz target $target failed (exit $status); the input is in fuzz/artifacts/$target/" >&2
    exit "$status"
  fi
  grep -E '^#[0-9]+[[:space:]]+DONE|^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)' "$log"
done
