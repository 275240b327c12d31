#!/usr/bin/env bash
# byok billing benchmark: does metering cost the data plane's hot path?
#
# The same load as bench/run.sh (non-streaming chat completions through `byok serve` to
# the mock provider, closed loop; then streamed calls for time to first byte) against two
# builds of byok, in interleaved rounds:
#
#   before   byok built from the last commit before billing (BENCH_BEFORE_REV, 9000b33), in a
#            git worktree under a temp dir with its own CARGO_TARGET_DIR
#   billing  byok built from this working tree, with a monthly budget on the org the load
#            uses (PUT /v1/orgs/bench/budget), so every call also takes the budget check
#   billing-nobudget  (optional, BENCH_BILLING_CONFIGS) the same build without a budget:
#            metering alone, to tell its cost from the budget check's
#
# Each round runs bench/run.sh once per build (BENCH_TARGETS=byok, a fresh byok, data dir
# and mock each time), the order rotating between rounds. Prints req/s, p50, p99, byok CPU
# µs per request and stream TTFB p50 of each (medians over the rounds) and the ratios to
# `before`.
#
# Usage: bench/billing/run.sh                 (full run: 5 rounds, ~5 min of load after the builds)
#        BENCH_QUICK=1 bench/billing/run.sh   (smoke run: 1 round of 3 s per build)
# Knobs (env): BENCH_ROUNDS (5) BENCH_BILLING_CONFIGS ("before billing") BENCH_BEFORE_REV (9000b33)
#   BENCH_BUDGET (1000000)
#   BENCH_BEFORE_TARGET_DIR (target/bench-billing-before) BENCH_SKIP_BUILD BENCH_KEEP_TMP
#   and bench/run.sh's: BENCH_QUICK BENCH_DURATION BENCH_WARMUP BENCH_CONNECTIONS
#   BENCH_STREAM_REQUESTS BENCH_STREAM_CONCURRENCY BENCH_STREAM_DELAY_MS BENCH_LOADGEN_THREADS
#   BENCH_BYOK_LOG TMPDIR
# See bench/billing/README.md.
set -euo pipefail

BILLING_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BILLING_DIR/../.." && pwd)"

if [[ "${BENCH_QUICK:-0}" == 1 ]]; then
  : "${BENCH_ROUNDS:=1}" "${BENCH_DURATION:=3}" "${BENCH_WARMUP:=1}" "${BENCH_STREAM_REQUESTS:=40}"
fi
ROUNDS="${BENCH_ROUNDS:-5}"
CONFIGS="${BENCH_BILLING_CONFIGS:-before billing}"
BEFORE_REV="${BENCH_BEFORE_REV:-9000b33}"
BUDGET="${BENCH_BUDGET:-1000000}"
BEFORE_TARGET="${BENCH_BEFORE_TARGET_DIR:-$ROOT/target/bench-billing-before}"
CURRENT_TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
RESULTS_DIR="$ROOT/bench/results"

[[ "$ROUNDS" =~ ^[0-9]+$ ]] && ((ROUNDS >= 1 && ROUNDS <= 20)) || { echo "bench/billing: BENCH_ROUNDS must be 1-20" >&2; exit 2; }
[[ "$BUDGET" =~ ^[0-9]{1,12}(\.[0-9]{1,12})?$ ]] || { echo "bench/billing: BENCH_BUDGET must be a decimal amount" >&2; exit 2; }
[[ "$BEFORE_REV" =~ ^[0-9A-Za-z._/-]+$ ]] || { echo "bench/billing: BENCH_BEFORE_REV is not a revision" >&2; exit 2; }
for c in $CONFIGS; do
  case "$c" in
    before | billing | billing-nobudget) ;;
    *) echo "bench/billing: unknown configuration '$c' (use: before billing billing-nobudget)" >&2; exit 2 ;;
  esac
done
[[ " $CONFIGS " == *" before "* && $(wc -w <<<"$CONFIGS") -ge 2 ]] \
  || { echo "bench/billing: BENCH_BILLING_CONFIGS needs 'before' and at least one other" >&2; exit 2; }

log() { printf '[bench/billing %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

command -v cargo >/dev/null || die "cargo not found (https://rustup.rs)"
command -v git >/dev/null || die "git not found"
command -v curl >/dev/null || die "curl not found"
git -C "$ROOT" rev-parse --verify --quiet "$BEFORE_REV^{commit}" >/dev/null || die "no commit $BEFORE_REV in $ROOT"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/byok-bench-billing.XXXXXX")"
WORKTREE="$TMP/before"
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [[ -d "$WORKTREE" ]]; then
    git -C "$ROOT" worktree remove --force "$WORKTREE" 2>/dev/null || true
  fi
  git -C "$ROOT" worktree prune 2>/dev/null || true
  if [[ "${BENCH_KEEP_TMP:-0}" == 1 || $status != 0 ]]; then
    log "outputs kept in $TMP"
  else
    rm -rf "$TMP"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- builds
BEFORE_COMMIT="$(git -C "$ROOT" rev-parse --short "$BEFORE_REV^{commit}")"
CURRENT_COMMIT="$(git -C "$ROOT" rev-parse --short HEAD)"
if [[ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no -- crates Cargo.toml Cargo.lock \
  ':(exclude)crates/*/examples/*' ':(exclude)crates/*/tests/*' 2>/dev/null)" ]]; then
  CURRENT_COMMIT="$CURRENT_COMMIT+uncommitted"
fi
BEFORE_BYOK="$BEFORE_TARGET/release/byok"
CURRENT_BYOK="$CURRENT_TARGET/release/byok"
if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
  log "building byok at $BEFORE_COMMIT (before billing) in a worktree, CARGO_TARGET_DIR=$BEFORE_TARGET"
  git -C "$ROOT" worktree add --detach "$WORKTREE" "$BEFORE_REV" >"$TMP/worktree.log" 2>&1 \
    || die "git worktree add failed: $(cat "$TMP/worktree.log")"
  (cd "$WORKTREE" && CARGO_TARGET_DIR="$BEFORE_TARGET" cargo build --release --quiet --locked -p byok) \
    || die "building byok at $BEFORE_COMMIT failed"
  log "building byok at $CURRENT_COMMIT (billing), byok-mock-provider and byok-loadgen"
  (cd "$ROOT" && cargo build --release --quiet -p byok -p byok-mock-provider -p byok-loadgen) || die "cargo build failed"
fi
for b in "$BEFORE_BYOK" "$CURRENT_BYOK"; do
  [[ -x "$b" ]] || die "missing binary $b (run without BENCH_SKIP_BUILD=1)"
done

# ---------------------------------------------------------------- rounds
# The budget: set through the admin API with the operator token of byok's data dir
# (bench/run.sh runs this after its setup, with BYOK_ADMIN_URL and BYOK_DATA_DIR set).
BUDGET_SETUP="curl -sS --fail-with-body -X PUT -H \"authorization: Bearer \$(cat \"\$BYOK_DATA_DIR/operator.token\")\" \
-H 'content-type: application/json' -d '{\"monthly_limit\":\"$BUDGET\"}' \"\$BYOK_ADMIN_URL/v1/orgs/\$BENCH_ORG/budget\" \
| tee /dev/stderr | grep -q '\"monthly_limit\":\"'"

run_one() {
  local label="$1" round="$2" bin setup=""
  case "$label" in
    before) bin="$BEFORE_BYOK" ;;
    billing) bin="$CURRENT_BYOK"; setup="$BUDGET_SETUP" ;;
    billing-nobudget) bin="$CURRENT_BYOK" ;;
  esac
  log "round $round/$ROUNDS: $label ($bin)"
  BENCH_TARGETS=byok BENCH_ROUNDS=1 BENCH_SKIP_BUILD=1 BENCH_BYOK_BIN="$bin" BENCH_BYOK_LABEL="$label" \
    BENCH_BYOK_SETUP="$setup" BENCH_RESULTS_JSON="$TMP/$label.$round.json" CARGO_TARGET_DIR="$CURRENT_TARGET" \
    "$ROOT/bench/run.sh" >"$TMP/$label.$round.out" 2>"$TMP/$label.$round.err" \
    || die "bench/run.sh failed for $label in round $round: $(tail -15 "$TMP/$label.$round.err")"
  sed 's/^/    /' "$TMP/$label.$round.out" | grep -E "^    $label |audit:|memory:|WARNING" >&2 || true
}

read -r -a CONFIG_LIST <<<"$CONFIGS"
N_CONFIGS=${#CONFIG_LIST[@]}
for ((round = 1; round <= ROUNDS; round++)); do
  # Rotate the order, so that no configuration always runs first (or right after another).
  for ((k = 0; k < N_CONFIGS; k++)); do
    run_one "${CONFIG_LIST[$(((round - 1 + k) % N_CONFIGS))]}" "$round"
  done
done

# ---------------------------------------------------------------- report
# First occurrence of a key in a run's JSON: throughput's rps/p50/p99 come before the
# stream's keys; "proxy" is only in cpu_us_per_request.
jnum() { grep -o "\"$1\":[-0-9.e]*" "$2" | head -1 | cut -d: -f2; }
median() { sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
metric() { # label key -> median over rounds
  local r
  for ((r = 1; r <= ROUNDS; r++)); do jnum "$2" "$TMP/$1.$r.json"; done | median
}
all_rounds() {
  local r
  for ((r = 1; r <= ROUNDS; r++)); do jnum "$2" "$TMP/$1.$r.json"; done | paste -sd' '
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else printf "n/a" }'; }

KEYS="rps p50_ms p99_ms proxy ttfb_p50_ms"
declare -A M
for label in $CONFIGS; do
  for key in $KEYS; do M[$label.$key]="$(metric "$label" "$key")"; done
done
OTHERS="$(tr ' ' '\n' <<<"$CONFIGS" | grep -v '^before$' | paste -sd' ')"

mkdir -p "$RESULTS_DIR"
{
  printf '{\n  "generated_at": "%s",\n  "host_cpus": %s,\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(nproc)"
  printf '  "before": {"commit": "%s", "binary": "%s"},\n  "billing": {"commit": "%s", "binary": "%s", "budget_monthly_limit": "%s"},\n' \
    "$BEFORE_COMMIT" "$BEFORE_BYOK" "$CURRENT_COMMIT" "$CURRENT_BYOK" "$BUDGET"
  printf '  "rounds": %s,\n  "configs": "%s",\n  "medians": {\n' "$ROUNDS" "$CONFIGS"
  first=1
  for label in $CONFIGS; do
    ((first)) || printf ',\n'
    first=0
    printf '    "%s": {"rps": %s, "p50_ms": %s, "p99_ms": %s, "proxy_cpu_us_per_request": %s, "ttfb_p50_ms": %s, "rps_all_rounds": [%s]}' \
      "$label" "${M[$label.rps]}" "${M[$label.p50_ms]}" "${M[$label.p99_ms]}" "${M[$label.proxy]}" "${M[$label.ttfb_p50_ms]}" \
      "$(all_rounds "$label" rps | tr ' ' ',')"
  done
  printf '\n  },\n  "over_before": {\n'
  first=1
  for label in $OTHERS; do
    ((first)) || printf ',\n'
    first=0
    printf '    "%s": {"rps": "%s", "p50_ms": "%s", "p99_ms": "%s", "proxy_cpu_us_per_request": "%s", "ttfb_p50_ms": "%s"}' "$label" \
      "$(ratio "${M[$label.rps]}" "${M[before.rps]}")" "$(ratio "${M[$label.p50_ms]}" "${M[before.p50_ms]}")" \
      "$(ratio "${M[$label.p99_ms]}" "${M[before.p99_ms]}")" "$(ratio "${M[$label.proxy]}" "${M[before.proxy]}")" \
      "$(ratio "${M[$label.ttfb_p50_ms]}" "${M[before.ttfb_p50_ms]}")"
  done
  printf '\n  },\n  "runs": {\n'
  first=1
  for ((r = 1; r <= ROUNDS; r++)); do
    for label in $CONFIGS; do
      ((first)) || printf ',\n'
      first=0
      printf '    "%s.%s": ' "$label" "$r"; tr -d '\n' <"$TMP/$label.$r.json"
    done
  done
  printf '\n  }\n}\n'
} >"$RESULTS_DIR/billing.json"
if command -v jq >/dev/null; then jq . "$RESULTS_DIR/billing.json" >/dev/null || die "internal: billing.json is not valid JSON"; fi

settings="$(grep -m1 '^byok benchmark' "$TMP/before.1.out" | sed 's/^byok benchmark — //; s/, median of 1 rounds//')"
echo
printf 'byok before billing (%s) vs billing (%s; "billing": org budget of %s set), %s rounds interleaved, medians over rounds\n' \
  "$BEFORE_COMMIT" "$CURRENT_COMMIT" "$BUDGET" "$ROUNDS"
printf '(%s)\n' "$settings"
printf '%-24s %9s %8s %8s %11s %10s   %s\n' '' 'req/s' 'p50 ms' 'p99 ms' 'proxy CPU' 'TTFB p50' 'req/s of each round'
printf '%-24s %9s %8s %8s %11s %10s\n' '' '' '' '' 'us/req' 'ms'
for label in $CONFIGS; do
  printf '%-24s %9.0f %8.2f %8.2f %11.0f %10.2f   %s\n' "$label" "${M[$label.rps]}" "${M[$label.p50_ms]}" \
    "${M[$label.p99_ms]}" "${M[$label.proxy]}" "${M[$label.ttfb_p50_ms]}" "$(all_rounds "$label" rps)"
done
for label in $OTHERS; do
  printf '%-24s %9s %8s %8s %11s %10s\n' "$label/before" "$(ratio "${M[$label.rps]}" "${M[before.rps]}")" \
    "$(ratio "${M[$label.p50_ms]}" "${M[before.p50_ms]}")" "$(ratio "${M[$label.p99_ms]}" "${M[before.p99_ms]}")" \
    "$(ratio "${M[$label.proxy]}" "${M[before.proxy]}")" "$(ratio "${M[$label.ttfb_p50_ms]}" "${M[before.ttfb_p50_ms]}")"
done
if grep -qs '^WARNING' "$TMP"/*.out; then
  echo 'WARNING: other processes took host CPU during some runs (see the per-run lines above): compare CPU us/req, re-run on a quiet machine.'
fi
printf 'JSON: %s\n' "${RESULTS_DIR#"$ROOT"/}/billing.json"
