#!/usr/bin/env bash
# byok KMS benchmark: does the DEK cache keep the KMS (an HSM via PKCS#11) off the hot path?
#
# The same load (non-streaming chat completions through `byok serve` to the mock provider)
# against three configurations, back to back in one invocation:
#
#   local           local keyring (the default KMS), DEK cache on (default settings): the baseline
#   pkcs11          PKCS#11 KMS on a throwaway SoftHSM2 token, DEK cache on (default settings)
#   pkcs11-refresh  the same token type, a DEK serves at most 1000 calls
#                   ([proxy] dek_cache_max_uses = 1000): a refresh every 1000 calls, to show
#                   that concurrent misses share one unwrap
#   pkcs11-nocache  the same token type, DEK cache off ([proxy] dek_cache_ttl_secs = 0):
#                   every call unwraps its DEK in the HSM
#
# For each: requests/s, p50/p99, calls, KMS unwraps in the measured window (from /metrics),
# unwraps per 1000 calls, mean unwrap latency, DEK cache hits/misses, byok CPU per call.
#
# Usage: bench/kms/run.sh                 (full run: ~1 min of load after the build)
#        BENCH_QUICK=1 bench/kms/run.sh   (3 s measured per configuration)
# Knobs (env): BENCH_QUICK BENCH_DURATION BENCH_WARMUP BENCH_CONNECTIONS BENCH_LOADGEN_THREADS
#   BENCH_KMS_CONFIGS ("local pkcs11 pkcs11-refresh pkcs11-nocache") BENCH_SKIP_BUILD BENCH_KEEP_TMP TMPDIR
# See bench/kms/README.md.
set -euo pipefail

KMS_BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$KMS_BENCH_DIR/../.." && pwd)"

if [[ "${BENCH_QUICK:-0}" == 1 ]]; then
  : "${BENCH_DURATION:=3}" "${BENCH_WARMUP:=1}"
fi
DURATION="${BENCH_DURATION:-10}"           # measured seconds per configuration
WARMUP="${BENCH_WARMUP:-2}"                # a separate, unmeasured load run before it
CONNECTIONS="${BENCH_CONNECTIONS:-32}"     # keep-alive connections, one request in flight each
LOADGEN_THREADS="${BENCH_LOADGEN_THREADS:-2}"
CONFIGS="${BENCH_KMS_CONFIGS:-local pkcs11 pkcs11-refresh pkcs11-nocache}"
RESULTS_DIR="$KMS_BENCH_DIR/results"

for n in "$DURATION" "$WARMUP"; do
  [[ "$n" =~ ^[0-9]+(\.[0-9]+)?$ ]] || { echo "bench/kms: '$n' is not a number of seconds" >&2; exit 2; }
done
for n in "$CONNECTIONS" "$LOADGEN_THREADS"; do
  [[ "$n" =~ ^[0-9]+$ ]] || { echo "bench/kms: '$n' is not a whole number" >&2; exit 2; }
done
((CONNECTIONS >= 1 && CONNECTIONS <= 1024 && LOADGEN_THREADS >= 1 && LOADGEN_THREADS <= 64)) \
  || { echo "bench/kms: out of bounds (connections 1-1024, loadgen threads 1-64)" >&2; exit 2; }
awk -v d="$DURATION" -v w="$WARMUP" 'BEGIN { exit !(d > 0 && d <= 600 && w <= 120) }' \
  || { echo "bench/kms: BENCH_DURATION must be in (0, 600], BENCH_WARMUP <= 120" >&2; exit 2; }
for c in $CONFIGS; do
  case "$c" in
    local | pkcs11 | pkcs11-refresh | pkcs11-nocache) ;;
    *) echo "bench/kms: unknown configuration '$c' (use: local pkcs11 pkcs11-refresh pkcs11-nocache)" >&2; exit 2 ;;
  esac
done
[[ -n "${CONFIGS// /}" ]] || { echo "bench/kms: BENCH_KMS_CONFIGS is empty" >&2; exit 2; }

log() { printf '[bench/kms %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- prerequisites
need_pkgs=()
want() { command -v "$1" >/dev/null 2>&1 || need_pkgs+=("$2"); }
want curl curl
[[ " $CONFIGS " == *" pkcs11"* ]] && want softhsm2-util softhsm2
if ((${#need_pkgs[@]})); then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    log "installing: ${need_pkgs[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
  else
    die "missing tools; please install: ${need_pkgs[*]} (e.g. sudo apt-get install -y ${need_pkgs[*]})"
  fi
fi
command -v cargo >/dev/null || die "cargo not found (https://rustup.rs)"

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
  log "building release binaries (byok, byok-mock-provider, byok-loadgen); the first build takes a while"
  (cd "$ROOT" && cargo build --release --quiet -p byok -p byok-mock-provider -p byok-loadgen) || die "cargo build failed"
fi
BYOK="$TARGET_DIR/release/byok"
MOCK="$TARGET_DIR/release/byok-mock-provider"
LOADGEN="$TARGET_DIR/release/byok-loadgen"
for b in "$BYOK" "$MOCK" "$LOADGEN"; do [[ -x "$b" ]] || die "missing binary $b (build without BENCH_SKIP_BUILD=1)"; done

# ---------------------------------------------------------------- temp dir, cleanup
TMP="$(mktemp -d "${TMPDIR:-/tmp}/byok-kms-bench.XXXXXX")"
PIDS=()
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    kill -TERM "${PIDS[i]}" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [[ "${BENCH_KEEP_TMP:-0}" == 1 || $status != 0 ]]; then
    log "logs and data kept in $TMP"
  else
    rm -rf "$TMP"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() { "$LOADGEN" free-port; }
alive() { kill -0 "$1" 2>/dev/null; }
forget_pid() {
  local i
  for i in "${!PIDS[@]}"; do [[ "${PIDS[i]}" == "$1" ]] && unset 'PIDS[i]'; done
  PIDS=("${PIDS[@]}")
}
jnum() { grep -o "\"$1\":[-0-9.e]*" "$2" | head -1 | cut -d: -f2; }
# CPU ticks (user + system, all threads) of one process; SoftHSM2 runs inside byok's process.
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | awk '{ print $12 + $13 }'; }
host_jiffies() { awk '/^cpu / { idle = $5 + $6; t = 0; for (i = 2; i <= NF; i++) t += $i; print t - idle, t; exit }' /proc/stat; }
# prom FILE METRIC [LABEL=VALUE ...]: the sum of the samples of METRIC (exact name) whose
# labels include every LABEL="VALUE" given, in any order; 0 when there is none.
prom() {
  local file="$1" metric="$2"
  shift 2
  awk -v metric="$metric" -v want="$*" '
    BEGIN { n = split(want, w, " ") }
    /^#/ || NF == 0 { next }
    {
      line = $0; name = line; labels = ""
      if ((b = index(line, "{")) > 0) {
        name = substr(line, 1, b - 1)
        e = index(line, "}")
        labels = "," substr(line, b + 1, e - b - 1) ","
        rest = substr(line, e + 1)
      } else {
        sub(/[ \t].*$/, "", name)
        rest = substr(line, length(name) + 1)
      }
      if (name != metric) next
      for (i = 1; i <= n; i++) {
        split(w[i], kv, "=")
        if (index(labels, "," kv[1] "=\"" kv[2] "\",") == 0) next
      }
      split(rest, v, " ")
      sum += v[1]
    }
    END { printf "%.9g\n", sum + 0 }' "$file"
}
# delta BEFORE AFTER METRIC [LABEL=VALUE ...]: how much the metric grew between two scrapes.
delta() {
  local before="$1" after="$2"
  shift 2
  awk -v x="$(prom "$after" "$@")" -v y="$(prom "$before" "$@")" 'BEGIN { printf "%.9g", x - y }'
}
scrape() {
  curl -fsS "http://127.0.0.1:$ADMIN_PORT/metrics" >"$1" || die "cannot read http://127.0.0.1:$ADMIN_PORT/metrics"
}
run_bounded() { timeout --kill-after=5 "$1" "${@:2}"; }
LOADGEN_TIMEOUT="$(awk -v d="$DURATION" -v w="$WARMUP" 'BEGIN { printf "%d", d + w + 60 }')"

CLK_TCK="$(getconf CLK_TCK)"
MOCK_KEY="sk-bench-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
CHAT_BODY='{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello to the benchmark"}],"max_tokens":16}'

# ---------------------------------------------------------------- mock provider
log "starting the mock provider"
BYOK_MOCK_OPENAI_KEYS="$MOCK_KEY" "$MOCK" --listen 127.0.0.1:0 --no-record >"$TMP/mock.out" 2>"$TMP/mock.err" &
MOCK_PID=$!
PIDS+=("$MOCK_PID")
MOCK_ADDR=""
for _ in $(seq 100); do
  MOCK_ADDR="$(sed -n 's/^listening on \(127\.0\.0\.1:[0-9]*\)$/\1/p' "$TMP/mock.out" | head -1)"
  [[ -n "$MOCK_ADDR" ]] && break
  alive "$MOCK_PID" || die "the mock exited: $(cat "$TMP/mock.err")"
  sleep 0.1
done
[[ -n "$MOCK_ADDR" ]] || die "the mock did not print its address"
log "mock on $MOCK_ADDR"

# ---------------------------------------------------------------- one configuration
# run_config NAME: fresh data dir (and, for pkcs11, a fresh SoftHSM2 token), byok serve,
# setup through the CLI, preflight, warm-up run, scrape, measured run, scrape, stop.
# Leaves $TMP/NAME/{tp.json,before.prom,after.prom,kms.json,cpu,...}.
SOFTHSM_MODULE=""
run_config() {
  local name="$1" dir="$TMP/$1"
  local kms=local ttl="" uses=""
  case "$name" in
    pkcs11) kms=pkcs11 ;;
    pkcs11-refresh) kms=pkcs11 uses=1000 ;;
    pkcs11-nocache) kms=pkcs11 ttl=0 ;;
  esac
  mkdir -p "$dir"
  {
    echo "# Generated by bench/kms/run.sh: configuration '$name'."
    if [[ "$kms" == pkcs11 ]]; then
      # A throwaway token per configuration, so that both pkcs11 runs start from the same state.
      local exports
      exports="$("$ROOT/scripts/softhsm-token.sh" "$dir/softhsm")" || die "$name: scripts/softhsm-token.sh failed"
      eval "$exports"   # SOFTHSM2_CONF (inherited by byok serve) and BYOK_TEST_PKCS11_*
      SOFTHSM_MODULE="$BYOK_TEST_PKCS11_MODULE"
      printf '[kms]\nbackend = "pkcs11"\n[kms.pkcs11]\nmodule = "%s"\ntoken_label = "%s"\npin_file = "%s"\n' \
        "$BYOK_TEST_PKCS11_MODULE" "$BYOK_TEST_PKCS11_TOKEN" "$BYOK_TEST_PKCS11_PIN_FILE"
    fi
    if [[ -n "$ttl" ]]; then printf '[proxy]\ndek_cache_ttl_secs = %s\n' "$ttl"; fi
    if [[ -n "$uses" ]]; then printf '[proxy]\ndek_cache_max_uses = %s\n' "$uses"; fi
  } >"$dir/byok.toml"

  ADMIN_PORT="$(free_port)"
  PROXY_PORT="$(free_port)"
  local cache="on, default settings"
  [[ -n "$ttl" ]] && cache="off (dek_cache_ttl_secs = $ttl)"
  [[ -n "$uses" ]] && cache="on, dek_cache_max_uses = $uses"
  log "$name: starting byok serve (kms $kms, DEK cache $cache; admin 127.0.0.1:$ADMIN_PORT, data plane 127.0.0.1:$PROXY_PORT)"
  (
    export BYOK_UPSTREAM_OPENAI="http://$MOCK_ADDR" BYOK_CONFIG="$dir/byok.toml"
    exec "$BYOK" serve --data-dir "$dir/data" --admin-addr "127.0.0.1:$ADMIN_PORT" --proxy-addr "127.0.0.1:$PROXY_PORT"
  ) >"$dir/byok.out" 2>"$dir/byok.err" &
  BYOK_PID=$!
  PIDS+=("$BYOK_PID")
  local ready=0
  for _ in $(seq 300); do
    alive "$BYOK_PID" || die "$name: byok serve exited: $(tail -20 "$dir/byok.err")"
    if [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$ADMIN_PORT/readyz" || true)" == 200 ]]; then ready=1; break; fi
    sleep 0.1
  done
  ((ready)) || die "$name: byok did not become ready: $(tail -20 "$dir/byok.err")"

  log "$name: setting up through the CLI: org, team, OpenAI credential (the mock's key), workload token"
  local setup="$dir/setup.log" token
  export BYOK_ADMIN_URL="http://127.0.0.1:$ADMIN_PORT" BYOK_DATA_DIR="$dir/data"
  "$BYOK" org create bench --tier katman-b >"$setup" 2>&1 || die "$name: org create failed: $(cat "$setup")"
  "$BYOK" team create --org bench agents >>"$setup" 2>&1 || die "$name: team create failed: $(cat "$setup")"
  BENCH_OPENAI_KEY="$MOCK_KEY" "$BYOK" credential add --org bench --name mock-openai --provider openai \
    --secret-env BENCH_OPENAI_KEY >>"$setup" 2>&1 || die "$name: credential add failed: $(cat "$setup")"
  token="$("$BYOK" token create --org bench --team agents 2>>"$setup")" || die "$name: token create failed: $(cat "$setup")"
  [[ "$token" == byok_* ]] || die "$name: unexpected token output"
  unset BYOK_ADMIN_URL BYOK_DATA_DIR

  local url="http://127.0.0.1:$PROXY_PORT/openai/v1/chat/completions" auth="authorization: Bearer $token" code
  code="$(curl -s -o "$dir/preflight" -w '%{http_code}' -H "$auth" -H 'content-type: application/json' -d "$CHAT_BODY" "$url" || true)"
  [[ "$code" == 200 ]] || die "$name: preflight failed (HTTP $code): $(head -c 500 "$dir/preflight" 2>/dev/null)"
  scrape "$dir/setup.prom"

  # Warm-up as its own load run, so that the scrapes bracket exactly the measured run.
  if awk -v w="$WARMUP" 'BEGIN { exit !(w > 0) }'; then
    log "$name: warm-up — $CONNECTIONS connections, ${WARMUP}s (not measured)"
    run_bounded "$LOADGEN_TIMEOUT" "$LOADGEN" throughput --url "$url" -H "$auth" --body "$CHAT_BODY" \
      --connections "$CONNECTIONS" --warmup 0 --duration "$WARMUP" --threads "$LOADGEN_THREADS" \
      >"$dir/warmup.json" || die "$name: load generator failed (warm-up)"
  else
    echo '{"requests_total":0,"non_2xx_total":0,"errors_total":0}' >"$dir/warmup.json"
  fi

  log "$name: measured — $CONNECTIONS connections, ${DURATION}s"
  scrape "$dir/before.prom"
  local cpu0 cpu1 busy0 all0 busy1 all1
  cpu0="$(cpu_ticks "$BYOK_PID")"
  read -r busy0 all0 < <(host_jiffies)
  run_bounded "$LOADGEN_TIMEOUT" "$LOADGEN" throughput --url "$url" -H "$auth" --body "$CHAT_BODY" \
    --connections "$CONNECTIONS" --warmup 0 --duration "$DURATION" --threads "$LOADGEN_THREADS" \
    >"$dir/tp.json" || die "$name: load generator failed"
  cpu1="$(cpu_ticks "$BYOK_PID")"
  read -r busy1 all1 < <(host_jiffies)
  scrape "$dir/after.prom"
  echo "$((cpu1 - cpu0)) $(((busy1 - busy0) * 100 / (all1 - all0)))" >"$dir/cpu"

  # Cross-check through the API (after the last scrape: its health check talks to the KMS).
  curl -fsS -H "authorization: Bearer $(cat "$dir/data/operator.token")" "http://127.0.0.1:$ADMIN_PORT/v1/kms" \
    >"$dir/kms.json" 2>"$dir/kms.err" || echo null >"$dir/kms.json"

  alive "$BYOK_PID" || die "$name: byok is no longer running after the load"
  kill -TERM "$BYOK_PID"
  for _ in $(seq 300); do alive "$BYOK_PID" || break; sleep 0.05; done
  alive "$BYOK_PID" && die "$name: byok did not stop within 15 s of SIGTERM"
  local rc=0
  wait "$BYOK_PID" || rc=$?
  forget_pid "$BYOK_PID"
  ((rc == 0)) || die "$name: byok exited with status $rc: $(tail -20 "$dir/byok.err")"
}

for c in $CONFIGS; do run_config "$c"; done

# ---------------------------------------------------------------- numbers
# metrics NAME -> "calls measured rps p50 p99 bad unwraps per1k unwrap_us hits misses lookups cpu_us busy setup_unwraps warmup_unwraps"
metrics() {
  local dir="$TMP/$1" tp="$TMP/$1/tp.json"
  local b="$dir/before.prom" a="$dir/after.prom" s="$dir/setup.prom"
  local calls bad unwraps sum hits misses lookups setup_unwraps warmup_unwraps cpu busy
  calls="$(jnum requests_total "$tp")"
  bad=$(($(jnum non_2xx_total "$tp") + $(jnum errors_total "$tp") + $(jnum non_2xx_total "$dir/warmup.json") + $(jnum errors_total "$dir/warmup.json")))
  unwraps="$(delta "$b" "$a" byok_kms_operations_total op=unwrap)"
  sum="$(delta "$b" "$a" byok_kms_operation_seconds_sum op=unwrap)"
  local count; count="$(delta "$b" "$a" byok_kms_operation_seconds_count op=unwrap)"
  hits="$(delta "$b" "$a" byok_dek_cache_lookups_total result=hit)"
  misses="$(delta "$b" "$a" byok_dek_cache_lookups_total result=miss)"
  lookups=$((hits + misses))
  setup_unwraps="$(prom "$s" byok_kms_operations_total op=unwrap)"
  warmup_unwraps="$(awk -v x="$(prom "$b" byok_kms_operations_total op=unwrap)" -v y="$setup_unwraps" 'BEGIN { print x - y }')"
  read -r cpu busy <"$dir/cpu"
  printf '%s %s %s %s %s %s %s %s %s %s %s %s %s %s %s %s\n' \
    "$calls" "$(jnum measured "$tp")" "$(jnum rps "$tp")" "$(jnum p50_ms "$tp")" "$(jnum p99_ms "$tp")" "$bad" "$unwraps" \
    "$(awk -v u="$unwraps" -v n="$calls" 'BEGIN { if (n > 0) printf "%.3f", u * 1000 / n; else printf "null" }')" \
    "$(awk -v s="$sum" -v c="$count" 'BEGIN { if (c > 0) printf "%.1f", s / c * 1e6; else printf "null" }')" \
    "$hits" "$misses" "$lookups" \
    "$(awk -v c="$cpu" -v n="$calls" -v hz="$CLK_TCK" 'BEGIN { if (n > 0) printf "%.1f", c / hz * 1e6 / n; else printf "null" }')" \
    "$busy" "$setup_unwraps" "$warmup_unwraps"
}
kms_of() { case "$1" in local) echo local ;; *) echo pkcs11 ;; esac; }
cache_of() { case "$1" in pkcs11-nocache) echo "off (ttl 0)" ;; pkcs11-refresh) echo "1000 uses" ;; *) echo "on (default)" ;; esac; }
for c in $CONFIGS; do metrics "$c" >"$TMP/$c/row"; done

# ---------------------------------------------------------------- JSON
mkdir -p "$RESULTS_DIR"
{
  printf '{\n  "generated_at": "%s",\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  printf '  "host": {"cpus": %s, "kernel": "%s", "softhsm2": "%s", "softhsm2_module": "%s"},\n' "$(nproc)" "$(uname -r)" \
    "$(softhsm2-util --version 2>/dev/null || echo unknown)" "$SOFTHSM_MODULE"
  printf '  "settings": {"connections": %s, "warmup_s": %s, "duration_s": %s, "loadgen_threads": %s, "order": "%s",\n' \
    "$CONNECTIONS" "$WARMUP" "$DURATION" "$LOADGEN_THREADS" "$CONFIGS"
  printf '               "method": "per configuration: fresh data dir (and SoftHSM2 token), 1 preflight call, a separate %ss warm-up load run, /metrics scrape, measured load run (loadgen --warmup 0), /metrics scrape; KMS and cache figures are the differences between the two scrapes"},\n' "$WARMUP"
  printf '  "configs": [\n'
  first=1
  for c in $CONFIGS; do
    read -r calls measured rps p50 p99 bad unwraps per1k unwrap_us hits misses lookups cpu_us busy setup_unwraps warmup_unwraps <"$TMP/$c/row"
    ((first)) || printf ',\n'
    first=0
    printf '    {"name": "%s", "kms": "%s", "dek_cache": "%s", "config_toml": %s,\n' "$c" "$(kms_of "$c")" "$(cache_of "$c")" \
      "$(awk 'BEGIN { printf "\"" } { gsub(/\\/, "\\\\"); gsub(/"/, "\\\""); printf "%s\\n", $0 } END { printf "\"" }' "$TMP/$c/byok.toml")"
    printf '     "rps": %s, "p50_ms": %s, "p99_ms": %s, "calls": %s, "calls_in_window": %s, "failed_calls": %s,\n' \
      "$rps" "$p50" "$p99" "$calls" "$measured" "$bad"
    printf '     "kms_unwraps": %s, "unwraps_per_1000_calls": %s, "unwrap_mean_us": %s, "dek_cache_hits": %s, "dek_cache_misses": %s, "dek_cache_lookups": %s,\n' \
      "$unwraps" "$per1k" "$unwrap_us" "$hits" "$misses" "$lookups"
    printf '     "byok_cpu_us_per_call": %s, "host_cpu_busy_pct": %s, "unwraps_during_setup_and_preflight": %s, "unwraps_during_warmup": %s, "warmup_calls": %s,\n' \
      "$cpu_us" "$busy" "$setup_unwraps" "$warmup_unwraps" "$(jnum requests_total "$TMP/$c/warmup.json")"
    printf '     "loadgen": %s,\n     "v1_kms_after": %s}' "$(cat "$TMP/$c/tp.json")" "$(cat "$TMP/$c/kms.json")"
  done
  printf '\n  ]\n}\n'
} >"$RESULTS_DIR/latest.json"
if command -v jq >/dev/null; then jq . "$RESULTS_DIR/latest.json" >/dev/null || die "internal: latest.json is not valid JSON"; fi

# ---------------------------------------------------------------- table
echo
printf 'byok KMS benchmark — %s CPUs, %s connections, %ss measured per configuration (after a separate %ss warm-up), configurations run back to back\n' \
  "$(nproc)" "$CONNECTIONS" "$DURATION" "$WARMUP"
printf '%-15s %-7s %-12s %8s %7s %7s %8s %8s %9s %9s %8s %7s %8s\n' \
  config kms 'DEK cache' 'req/s' 'p50 ms' 'p99 ms' calls unwraps 'unw/1k' 'unwrap us' 'hits' misses 'CPU us'
FAILED=0
for c in $CONFIGS; do
  read -r calls measured rps p50 p99 bad unwraps per1k unwrap_us hits misses lookups cpu_us busy setup_unwraps warmup_unwraps <"$TMP/$c/row"
  printf '%-15s %-7s %-12s %8.0f %7.2f %7.2f %8s %8s %9s %9s %8s %7s %8s\n' "$c" "$(kms_of "$c")" "$(cache_of "$c")" \
    "$rps" "$p50" "$p99" "$calls" "$unwraps" "${per1k/null/-}" "${unwrap_us/null/-}" "$hits" "$misses" "${cpu_us/null/-}"
  ((bad == 0)) || { FAILED=1; log "$c: $bad calls failed (non-2xx or transport errors); see the JSON"; }
  # Every call the load generator sent (all completed before it exited) looks the DEK up once.
  ((lookups == calls)) || log "$c: note: $lookups DEK cache lookups for $calls calls"
  err="$(grep -o '"first_error":"[^"]*' "$TMP/$c/tp.json" "$TMP/$c/warmup.json" | head -1 | cut -d'"' -f4- || true)"
  [[ -n "$err" ]] && log "$c: first error: $err"
done
echo
echo 'calls: every request of the measured run (all completed; req/s and latency count those inside the window);'
echo 'unwraps, hits, misses: /metrics differences around the measured run; unwrap us: mean from the histogram sum/count;'
echo 'CPU us: byok process CPU (SoftHSM2 runs inside it) per call during the measured run.'
printf 'JSON: %s\n' "${RESULTS_DIR#"$ROOT"/}/latest.json"
if ((FAILED)); then
  log "FAILED: some calls failed (details above and in ${RESULTS_DIR#"$ROOT"/}/latest.json)"
  exit 1
fi
