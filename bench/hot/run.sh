#!/usr/bin/env bash
# The data plane's hot functions, counted in instructions: a figure that does not move
# with the load on a shared machine, so CI can print it and compare it with the committed
# baseline (bench/hot/baseline.tsv).
#
# Each case of `byok-hot` (bench/hot/src/main.rs) builds its data, then runs its function
# in a loop inside `measured`; callgrind counts only that function (--toggle-collect), at
# two loop lengths, and the difference divided by the extra iterations is the cost of one
# call, free of setup and of the loop's fixed cost.
#
# Usage: bench/hot/run.sh                     print the table, a loud line per case >20% over its baseline
#        bench/hot/run.sh --update-baseline   write the figures as the new baseline
#        BENCH_HOT_STRICT=1 bench/hot/run.sh  exit 1 when a case grew >20%
# Knobs: BENCH_HOT_CASES (space-separated subset), BENCH_HOT_SKIP_BUILD=1, BENCH_HOT_TOLERANCE (percent, 20)
set -euo pipefail
HOT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HOT_DIR/../.." && pwd)"
BASELINE="$HOT_DIR/baseline.tsv"
TOLERANCE="${BENCH_HOT_TOLERANCE:-20}"
UPDATE=0
case "${1:-}" in
  "") ;;
  --update-baseline) UPDATE=1 ;;
  *) echo "usage: bench/hot/run.sh [--update-baseline]" >&2; exit 2 ;;
esac
[[ "$TOLERANCE" =~ ^[0-9]+$ ]] || { echo "bench/hot: BENCH_HOT_TOLERANCE must be a whole number of percent" >&2; exit 2; }
command -v valgrind >/dev/null || { echo "bench/hot: valgrind is needed (apt-get install valgrind)" >&2; exit 2; }

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
if [[ "${BENCH_HOT_SKIP_BUILD:-0}" != 1 ]]; then
  (cd "$ROOT" && cargo build --release --quiet -p byok-hot)
fi
HOT="$TARGET_DIR/release/byok-hot"
[[ -x "$HOT" ]] || { echo "bench/hot: missing $HOT" >&2; exit 2; }
CASES="${BENCH_HOT_CASES:-$("$HOT" list | tr '\n' ' ')}"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/byok-hot.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

# Instructions callgrind counted inside `measured` for CASE run N times.
count() {
  local case="$1" n="$2" out="$TMP/$1.$2.out"
  valgrind --tool=callgrind --callgrind-out-file="$out" --toggle-collect='byok_hot::measured*' \
    "$HOT" "$case" "$n" >"$TMP/$case.$n.log" 2>&1 || { cat "$TMP/$case.$n.log" >&2; return 1; }
  awk '/^(summary|totals):/ { print $2; exit }' "$out"
}

LOW=10
HIGH=60
declare -A base=()
if [[ -f "$BASELINE" ]]; then
  while IFS=$'\t' read -r name value; do
    [[ "$name" == \#* || -z "$name" ]] && continue
    base[$name]="$value"
  done <"$BASELINE"
fi

printf '%-18s %14s %14s %8s\n' case "instr/call" baseline ratio
grew=()
declare -A now=()
for case in $CASES; do
  low=$(count "$case" "$LOW")
  high=$(count "$case" "$HIGH")
  per=$(( (high - low) / (HIGH - LOW) ))
  now[$case]=$per
  if [[ -n "${base[$case]:-}" && "${base[$case]}" -gt 0 ]]; then
    ratio=$(awk -v a="$per" -v b="${base[$case]}" 'BEGIN { printf "%.3f", a / b }')
    printf '%-18s %14d %14d %8s\n' "$case" "$per" "${base[$case]}" "x$ratio"
    if awk -v a="$per" -v b="${base[$case]}" -v t="$TOLERANCE" 'BEGIN { exit !(a > b * (1 + t / 100)) }'; then
      grew+=("$case x$ratio")
    fi
  else
    printf '%-18s %14d %14s %8s\n' "$case" "$per" - -
  fi
done

if ((UPDATE)); then
  {
    echo "# bench/hot/run.sh --update-baseline: instructions per call of each hot function (callgrind)"
    for case in $CASES; do printf '%s\t%s\n' "$case" "${now[$case]}"; done
  } >"$BASELINE"
  echo "baseline written: $BASELINE"
fi
if ((${#grew[@]})); then
  for g in "${grew[@]}"; do
    echo "!!!!!!!! HOT-PATH REGRESSION: $g over the committed baseline (more than ${TOLERANCE}% more instructions per call) !!!!!!!!"
  done
  [[ "${BENCH_HOT_STRICT:-0}" == 1 ]] && exit 1
fi
exit 0
