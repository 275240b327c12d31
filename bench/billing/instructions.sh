#!/usr/bin/env bash
# byok billing benchmark, the stable figure: instructions per request (valgrind callgrind).
#
# Wall-clock figures (req/s, CPU µs/req: bench/billing/run.sh) are noisy on a shared VM; the
# number of instructions byok executes per proxied call is not. For each configuration
#
#   before            byok built from BENCH_BEFORE_REV (9000b33, the last commit before billing)
#   billing           the current byok, with a monthly budget on the org the load uses
#   billing-nobudget  the current byok without a budget
#
# it starts the mock provider (natively) and `byok serve` under `valgrind --tool=callgrind
# --instr-atstart=no` with a fresh data dir, sets byok up as bench/run.sh does (org, team,
# OpenAI credential holding the mock's key, workload token; plus the budget for `billing`),
# sends BENCH_IR_WARMUP uninstrumented requests, switches instrumentation on
# (callgrind_control --instr=on), sends exactly BENCH_IR_REQUESTS non-streaming chat
# completions (bench/run.sh's body) over BENCH_IR_CONCURRENCY keep-alive connections,
# switches it off, dumps, stops byok gracefully and checks its audit. Then it prints the
# instructions per request of each configuration, their ratio to `before`, and the
# functions whose cost per request differs most between `before` and `billing` (self and
# inclusive, from callgrind_annotate, matched by function name).
#
# Usage: bench/billing/instructions.sh                        (3 configurations, ~5-8 min)
#        BENCH_CURRENT_REV=HEAD bench/billing/instructions.sh (measure a commit, not the working tree)
# Knobs (env): BENCH_IR_REQUESTS (2000) BENCH_IR_WARMUP (300) BENCH_IR_CONCURRENCY (8)
#   BENCH_IR_TOP (15) BENCH_BILLING_CONFIGS ("before billing billing-nobudget") BENCH_BUDGET (1000000)
#   BENCH_BEFORE_REV (9000b33) BENCH_BEFORE_TARGET_DIR (target/bench-billing-before)
#   BENCH_CURRENT_REV (empty: the working tree's target/release/byok; else a commit built in a
#   worktree into BENCH_CURRENT_TARGET_DIR, default target/bench-billing-current)
#   BENCH_SKIP_BUILD BENCH_KEEP_TMP BENCH_BYOK_LOG TMPDIR
# See bench/billing/README.md, section "Instructions per request".
set -euo pipefail

BILLING_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BILLING_DIR/../.." && pwd)"

REQUESTS="${BENCH_IR_REQUESTS:-2000}"
WARMUP="${BENCH_IR_WARMUP:-300}"
CONCURRENCY="${BENCH_IR_CONCURRENCY:-8}"
TOP="${BENCH_IR_TOP:-15}"
CONFIGS="${BENCH_BILLING_CONFIGS:-before billing billing-nobudget}"
BUDGET="${BENCH_BUDGET:-1000000}"
BEFORE_REV="${BENCH_BEFORE_REV:-9000b33}"
BEFORE_TARGET="${BENCH_BEFORE_TARGET_DIR:-$ROOT/target/bench-billing-before}"
CURRENT_REV="${BENCH_CURRENT_REV:-}"
CURRENT_TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
[[ -n "$CURRENT_REV" ]] && CURRENT_TARGET="${BENCH_CURRENT_TARGET_DIR:-$ROOT/target/bench-billing-current}"
BYOK_LOG_LEVEL="${BENCH_BYOK_LOG:-}"
RESULTS_DIR="$ROOT/bench/results"

for n in "$REQUESTS" "$WARMUP" "$CONCURRENCY" "$TOP"; do
  [[ "$n" =~ ^[0-9]+$ ]] || { echo "bench/billing: '$n' is not a whole number" >&2; exit 2; }
done
((REQUESTS >= 100 && REQUESTS <= 100000 && CONCURRENCY >= 1 && CONCURRENCY <= 256 && TOP >= 1)) \
  || { echo "bench/billing: BENCH_IR_REQUESTS must be 100-100000, BENCH_IR_CONCURRENCY 1-256" >&2; exit 2; }
[[ "$BUDGET" =~ ^[0-9]{1,12}(\.[0-9]{1,12})?$ ]] || { echo "bench/billing: BENCH_BUDGET must be a decimal amount" >&2; exit 2; }
for rev in "$BEFORE_REV" "$CURRENT_REV"; do
  [[ -z "$rev" || "$rev" =~ ^[0-9A-Za-z._/-]+$ ]] || { echo "bench/billing: '$rev' is not a revision" >&2; exit 2; }
done
for c in $CONFIGS; do
  case "$c" in
    before | billing | billing-nobudget) ;;
    *) echo "bench/billing: unknown configuration '$c' (use: before billing billing-nobudget)" >&2; exit 2 ;;
  esac
done
[[ " $CONFIGS " == *" before "* ]] || { echo "bench/billing: BENCH_BILLING_CONFIGS needs 'before'" >&2; exit 2; }

log() { printf '[bench/billing/ir %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

need_pkgs=()
want() { command -v "$1" >/dev/null 2>&1 || need_pkgs+=("$2"); }
want valgrind valgrind
want callgrind_control valgrind
want callgrind_annotate valgrind
want curl curl
want sqlite3 sqlite3
if ((${#need_pkgs[@]})); then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    log "installing: ${need_pkgs[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
  else
    die "missing tools; please install: ${need_pkgs[*]}"
  fi
fi
command -v cargo >/dev/null || die "cargo not found (https://rustup.rs)"
git -C "$ROOT" rev-parse --verify --quiet "$BEFORE_REV^{commit}" >/dev/null || die "no commit $BEFORE_REV in $ROOT"
[[ -z "$CURRENT_REV" ]] || git -C "$ROOT" rev-parse --verify --quiet "$CURRENT_REV^{commit}" >/dev/null \
  || die "no commit $CURRENT_REV in $ROOT"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/byok-bench-billing-ir.XXXXXX")"
PIDS=()
WORKTREES=()
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill -TERM "${PIDS[i]}" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  for wt in "${WORKTREES[@]}"; do git -C "$ROOT" worktree remove --force "$wt" 2>/dev/null || true; done
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
# A commit built in a worktree of its own (under the temp dir, removed at exit), with its own
# CARGO_TARGET_DIR, as bench/billing/run.sh does; the commit is noted next to the binary
# (release/byok.bench-rev) so that a later run reuses the build only for the same commit.
build_rev() { # rev target_dir name packages...
  local rev="$1" target="$2" name="$3" wt="$TMP/$3" sha
  shift 3
  sha="$(git -C "$ROOT" rev-parse "$rev^{commit}")"
  if [[ -x "$target/release/byok" && "$(cat "$target/release/byok.bench-rev" 2>/dev/null)" == "$sha" ]]; then
    log "reusing $target/release/byok (built from ${sha:0:7})"
    return
  fi
  if [[ "$name" == before && -x "$target/release/byok" && ! -f "$target/release/byok.bench-rev" ]]; then
    log "reusing $target/release/byok (built by bench/billing/run.sh; delete it to rebuild)"
    return
  fi
  log "building $* at ${sha:0:7} in a worktree, CARGO_TARGET_DIR=$target"
  git -C "$ROOT" worktree add --detach "$wt" "$sha" >"$TMP/worktree.$name.log" 2>&1 \
    || die "git worktree add failed: $(cat "$TMP/worktree.$name.log")"
  WORKTREES+=("$wt")
  local p args=()
  for p in "$@"; do args+=(-p "$p"); done
  (cd "$wt" && CARGO_TARGET_DIR="$target" cargo build --release --quiet --locked "${args[@]}") || die "building at $rev failed"
  echo "$sha" >"$target/release/byok.bench-rev"
}
if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
  build_rev "$BEFORE_REV" "$BEFORE_TARGET" before byok
  if [[ -n "$CURRENT_REV" ]]; then
    build_rev "$CURRENT_REV" "$CURRENT_TARGET" current byok byok-mock-provider byok-loadgen
  else
    log "building byok (the working tree), byok-mock-provider and byok-loadgen"
    (cd "$ROOT" && cargo build --release --quiet -p byok -p byok-mock-provider -p byok-loadgen) || die "cargo build failed"
  fi
fi
BEFORE_BYOK="$BEFORE_TARGET/release/byok"
CURRENT_BYOK="$CURRENT_TARGET/release/byok"
MOCK="$CURRENT_TARGET/release/byok-mock-provider"
LOADGEN="$CURRENT_TARGET/release/byok-loadgen"
built_from() { # target_dir fallback-rev
  local sha
  sha="$(cat "$1/release/byok.bench-rev" 2>/dev/null || git -C "$ROOT" rev-parse "$2^{commit}")"
  echo "${sha:0:7}"
}
BEFORE_COMMIT="$(built_from "$BEFORE_TARGET" "$BEFORE_REV")"
if [[ -n "$CURRENT_REV" ]]; then
  CURRENT_COMMIT="$(built_from "$CURRENT_TARGET" "$CURRENT_REV")"
else
  CURRENT_COMMIT="$(git -C "$ROOT" rev-parse --short HEAD)"
  if [[ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no -- crates Cargo.toml Cargo.lock \
    ':(exclude)crates/*/examples/*' ':(exclude)crates/*/tests/*' 2>/dev/null)" ]]; then
    CURRENT_COMMIT="$CURRENT_COMMIT+uncommitted"
  fi
fi
for b in "$BEFORE_BYOK" "$CURRENT_BYOK" "$MOCK" "$LOADGEN"; do
  [[ -x "$b" ]] || die "missing binary $b (run without BENCH_SKIP_BUILD=1)"
done

CHAT_BODY='{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello to the benchmark"}],"max_tokens":16}'
jnum() { grep -o "\"$1\":[-0-9.e]*" "$2" | head -1 | cut -d: -f2; }
alive() { kill -0 "$1" 2>/dev/null; }
forget_pid() {
  local i
  for i in "${!PIDS[@]}"; do [[ "${PIDS[i]}" == "$1" ]] && unset 'PIDS[i]'; done
  PIDS=("${PIDS[@]}")
}
stop() { # pid seconds -> STOP_RC: exit status (or "timeout"); not in a subshell (wait needs the parent)
  local pid="$1" n=$(($2 * 10)) k
  kill -TERM "$pid" 2>/dev/null || true
  for ((k = 0; k < n; k++)); do alive "$pid" || break; sleep 0.1; done
  if alive "$pid"; then STOP_RC=timeout; return; fi
  set +e; wait "$pid"; STOP_RC=$?; set -e
  forget_pid "$pid"
}
# Load: exactly N non-streaming calls over C keep-alive connections (`byok-loadgen ttfb`
# with a fixed request count; with a non-streaming body it simply reads each whole answer).
load() { # n out
  timeout --kill-after=5 1800 "$LOADGEN" ttfb --url "http://127.0.0.1:$PROXY_PORT/openai/v1/chat/completions" \
    -H "authorization: Bearer $BYOK_TOKEN" --body "$CHAT_BODY" --requests "$1" --warmup-requests 0 \
    --concurrency "$CONCURRENCY" --threads 2 >"$2" || die "load generator failed: $(cat "$2")"
  local bad=$(($(jnum non_2xx_total "$2") + $(jnum errors_total "$2")))
  ((bad == 0)) || die "$bad failed requests: $(cat "$2")"
  [[ "$(jnum ok_total "$2")" == "$1" ]] || die "expected $1 answers: $(cat "$2")"
}

# ---------------------------------------------------------------- one configuration
run_config() {
  local label="$1" bin="$BEFORE_BYOK" d="$TMP/$1"
  [[ "$label" != before ]] && bin="$CURRENT_BYOK"
  mkdir -p "$d"
  log "$label: $bin"
  local mock_key; mock_key="sk-bench-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
  BYOK_MOCK_OPENAI_KEYS="$mock_key" "$MOCK" --listen 127.0.0.1:0 --no-record >"$d/mock.out" 2>"$d/mock.err" &
  local mock_pid=$!
  PIDS+=("$mock_pid")
  local mock_addr=""
  for _ in $(seq 100); do
    mock_addr="$(sed -n 's/^listening on \(127\.0\.0\.1:[0-9]*\)$/\1/p' "$d/mock.out" | head -1)"
    [[ -n "$mock_addr" ]] && break
    alive "$mock_pid" || die "the mock exited: $(cat "$d/mock.err")"
    sleep 0.1
  done
  [[ -n "$mock_addr" ]] || die "the mock did not print its address"

  local admin_port; admin_port="$("$LOADGEN" free-port)"
  PROXY_PORT="$("$LOADGEN" free-port)"
  local data="$d/byok-data" out="$d/callgrind.out"
  (
    export BYOK_UPSTREAM_OPENAI="http://$mock_addr"
    [[ -n "$BYOK_LOG_LEVEL" ]] && export BYOK_LOG="$BYOK_LOG_LEVEL"
    exec valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out" \
      "$bin" serve --data-dir "$data" --admin-addr "127.0.0.1:$admin_port" --proxy-addr "127.0.0.1:$PROXY_PORT"
  ) >"$d/byok.out" 2>"$d/byok.err" &
  local byok_pid=$!
  PIDS+=("$byok_pid")
  local ready=0
  for _ in $(seq 1200); do
    alive "$byok_pid" || die "byok serve exited: $(tail -20 "$d/byok.err")"
    if [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$admin_port/readyz" || true)" == 200 ]]; then ready=1; break; fi
    sleep 0.1
  done
  ((ready)) || die "byok did not become ready under valgrind: $(tail -20 "$d/byok.err")"

  # The setup of bench/run.sh, with the same binary's CLI (the admin API is served by byok
  # under valgrind, uninstrumented).
  (
    export BYOK_ADMIN_URL="http://127.0.0.1:$admin_port" BYOK_DATA_DIR="$data"
    "$bin" org create bench --tier katman-b
    "$bin" team create --org bench agents
    BENCH_OPENAI_KEY="$mock_key" "$bin" credential add --org bench --name mock-openai --provider openai \
      --secret-env BENCH_OPENAI_KEY
    "$bin" token create --org bench --team agents >"$d/token"
    if [[ "$label" == billing ]]; then
      # The budget of bench/billing/run.sh (PUT /v1/orgs/bench/budget with the operator token).
      curl -sS --fail-with-body -X PUT -H "authorization: Bearer $(cat "$data/operator.token")" \
        -H 'content-type: application/json' -d "{\"monthly_limit\":\"$BUDGET\"}" "$BYOK_ADMIN_URL/v1/orgs/bench/budget" \
        | tee /dev/stderr | grep -q '"monthly_limit":"'
    fi
  ) >"$d/setup.log" 2>&1 || die "$label: setup failed: $(tail -20 "$d/setup.log")"
  BYOK_TOKEN="$(cat "$d/token")"
  [[ "$BYOK_TOKEN" == byok_* ]] || die "unexpected token output"

  log "$label: warm-up, $WARMUP requests (uninstrumented)"
  load "$WARMUP" "$d/warmup.json"
  callgrind_control --instr=on "$byok_pid" >"$d/control.log" 2>&1 || die "callgrind_control --instr=on failed: $(cat "$d/control.log")"
  log "$label: measured, $REQUESTS requests over $CONCURRENCY connections (instrumented)"
  load "$REQUESTS" "$d/measured.json"
  callgrind_control --instr=off "$byok_pid" >>"$d/control.log" 2>&1 || die "callgrind_control --instr=off failed"
  callgrind_control --dump="measured $label" "$byok_pid" >>"$d/control.log" 2>&1 || die "callgrind_control --dump failed"
  local dump=""
  for _ in $(seq 300); do
    dump="$(grep -l '^desc: Trigger: .*measured' "$out"* 2>/dev/null | head -1 || true)"
    [[ -n "$dump" ]] && grep -q '^totals:' "$dump" && break
    dump=""
    sleep 0.1
  done
  [[ -n "$dump" ]] || die "no callgrind dump with the measured window in $d ($(ls "$d"))"
  cp "$dump" "$d/measured.callgrind"

  stop "$byok_pid" 120
  [[ "$STOP_RC" == 0 ]] || die "$label: byok did not stop cleanly (exit $STOP_RC): $(tail -20 "$d/byok.err")"
  stop "$mock_pid" 10

  # Every call answered left its resolution row and its completion (as bench/run.sh checks).
  local sent=$((WARMUP + REQUESTS)) rows completions
  rows="$(sqlite3 "$data/byok.db" "SELECT count(*) FROM resolution_audit WHERE outcome = 'allowed'")"
  completions="$(sqlite3 "$data/byok.db" 'SELECT count(*) FROM call_completions')"
  [[ "$rows" == "$sent" && "$completions" == "$sent" ]] \
    || die "$label: audit has $rows allowed rows and $completions completions for $sent requests"

  local ir; ir="$(awk '/^totals:/ { print $2; exit }' "$d/measured.callgrind")"
  [[ "$ir" =~ ^[0-9]+$ ]] || die "no totals line in $d/measured.callgrind"
  echo "$ir $(jnum ok_total "$d/measured.json") $(jnum elapsed_s "$d/measured.json")" >"$d/result"
  log "$label: $ir instructions for $(jnum ok_total "$d/measured.json") requests ($(jnum elapsed_s "$d/measured.json") s under valgrind); audit $rows rows, $completions completions: OK"
}

for label in $CONFIGS; do run_config "$label"; done

# ---------------------------------------------------------------- report
# callgrind_annotate's function table -> "cost<TAB>name": name without file, object path,
# Rust hash suffix or recursion mark (builds differ in all of these), equal names summed.
functions() { # file inclusive(yes|no)
  callgrind_annotate --inclusive="$2" --threshold=100 --auto=no "$1" 2>/dev/null | awk '
    /^-+$/ { dashes++; next }
    dashes < 5 { next }   # header, event line, PROGRAM TOTALS, column header
    /^ *[0-9,]+ / {
      line = $0
      sub(/^ */, "", line)
      cost = line; sub(/ .*/, "", cost); gsub(/,/, "", cost)
      sub(/^[0-9,]+ +/, "", line)
      sub(/^\([^)]*\) +/, "", line)            # (12.3%)
      obj = ""
      if (match(line, / \[[^]]*\]$/)) { obj = substr(line, RSTART + 2, RLENGTH - 3); line = substr(line, 1, RSTART - 1) }
      sub(/^.*\//, "", obj)
      if (line ~ /^[^: ]*(\?\?\?|\.[A-Za-z]+):/) sub(/^[^:]*:/, "", line)   # ???:f or file.c:f
      gsub(/::h[0-9a-f]{16}/, "", line)
      sub(/'"'"'[0-9]+$/, "", line)                # callgrind recursion depth: f'"'"'2
      key = line (obj != "" && obj != "byok" ? " [" obj "]" : "")
      c[key] += cost
    }
    END { for (k in c) printf "%s\t%s\n", c[k], k }'
}
declare -A IR N SECS SHA
for label in $CONFIGS; do
  read -r IR[$label] N[$label] SECS[$label] <"$TMP/$label/result"
  functions "$TMP/$label/measured.callgrind" no >"$TMP/fn.$label.no"
  functions "$TMP/$label/measured.callgrind" yes >"$TMP/fn.$label.yes"
  # SHA-256 block compression: valgrind does not emulate the SHA extensions, so the sha2
  # crate takes its software path here, while on a host with SHA-NI (this VM has it) it
  # does not: shown apart, and the total without it.
  SHA[$label]="$(awk -F'\t' '$2 ~ /^sha2::sha256::/ { s += $1 } END { printf "%d", s }' "$TMP/fn.$label.no")"
done
per() { awk -v i="$1" -v n="$2" 'BEGIN { printf "%.0f", i / n }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
OTHER=billing
[[ " $CONFIGS " == *" billing "* ]] || OTHER="$(tr ' ' '\n' <<<"$CONFIGS" | grep -v '^before$' | head -1 || true)"

mkdir -p "$RESULTS_DIR/billing-instructions"
REPORT="$RESULTS_DIR/billing-instructions.txt"
{
  printf 'byok instructions per request (valgrind callgrind: Ir of byok serve, all threads), before billing (%s) vs billing (%s)\n' \
    "$BEFORE_COMMIT" "$CURRENT_COMMIT"
  printf '%s non-streaming chat completions measured over %s keep-alive connections, after %s uninstrumented; fresh data dir each; "billing": org budget of %s\n' \
    "$REQUESTS" "$CONCURRENCY" "$WARMUP" "$BUDGET"
  printf '%-18s %12s %9s  %12s %12s %9s  %14s %9s %9s\n' '' 'instr/req' 'x before' 'SHA-256/req' 'w/o SHA/req' 'x before' 'instructions' requests 'seconds'
  for label in $CONFIGS; do
    printf '%-18s %12s %9s  %12s %12s %9s  %14s %9s %9s\n' "$label" \
      "$(per "${IR[$label]}" "${N[$label]}")" "$(ratio "$(per "${IR[$label]}" "${N[$label]}")" "$(per "${IR[before]}" "${N[before]}")")" \
      "$(per "${SHA[$label]}" "${N[$label]}")" "$(per $((IR[$label] - SHA[$label])) "${N[$label]}")" \
      "$(ratio "$(per $((IR[$label] - SHA[$label])) "${N[$label]}")" "$(per $((IR[before] - SHA[before])) "${N[before]}")")" \
      "${IR[$label]}" "${N[$label]}" "${SECS[$label]}"
  done
  echo '(SHA-256/req: self cost of sha2::sha256::*, the software path valgrind forces — natively SHA-NI does it in far fewer instructions; seconds: the measured window under valgrind)'
  if [[ -n "$OTHER" ]]; then
    for kind in no yes; do
      echo
      if [[ $kind == no ]]; then
        printf 'top %s functions by self cost per request, %s minus before (instructions per request; matched by name: inlining differs between builds)\n' "$TOP" "$OTHER"
      else
        printf "top %s of byok's own functions (byok_*) by inclusive cost per request, %s minus before (the runtime's frames, which hold everything, left out)\n" "$TOP" "$OTHER"
      fi
      printf '%10s %10s %10s  %s\n' before "$OTHER" diff function
      awk -F'\t' -v kind="$kind" -v nb="${N[before]}" -v no="${N[$OTHER]}" '
        kind == "yes" && $2 !~ /byok_/ { next }
        FNR == NR { b[$2] = $1; seen[$2] = 1; next }
        { o[$2] = $1; seen[$2] = 1 }
        END {
          for (k in seen) {
            x = b[k] / nb; y = o[k] / no; d = y - x
            printf "%.3f\t%10.0f %10.0f %+10.0f  %s\n", (d < 0 ? -d : d), x, y, d, k
          }
        }' "$TMP/fn.before.$kind" "$TMP/fn.$OTHER.$kind" | sort -t$'\t' -k1,1gr | awk -v top="$TOP" 'NR <= top' \
        | cut -f2- | cut -c1-240
    done
  fi
} >"$REPORT"
for label in $CONFIGS; do
  cp "$TMP/$label/measured.callgrind" "$RESULTS_DIR/billing-instructions/$label.callgrind"
  cp "$TMP/fn.$label.no" "$RESULTS_DIR/billing-instructions/$label.self.tsv"
  cp "$TMP/fn.$label.yes" "$RESULTS_DIR/billing-instructions/$label.inclusive.tsv"
done
echo
cat "$REPORT"
printf 'report: %s; callgrind files and per-function costs: %s/\n' "${REPORT#"$ROOT"/}" "${RESULTS_DIR#"$ROOT"/}/billing-instructions"
