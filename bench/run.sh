#!/usr/bin/env bash
# byok data-plane benchmark: the same load against three targets, side by side.
#
#   direct  the mock provider itself (no proxy at all)
#   nginx   nginx reverse proxy in front of the mock, injecting a static Authorization header
#   byok    `byok serve` (release) in front of the mock: SQLite store, local keyring,
#           durable audit (one row per call, committed before the key is used)
#
# Workloads: (1) non-streaming chat completions, closed loop over N keep-alive connections
# for a fixed time -> requests/s, p50, p99; (2) streamed chat completions (the mock waits
# between SSE events) -> time to first body byte p50/p99.
#
# Usage: bench/run.sh                 (full run: ~3 min of load after the build)
#        BENCH_QUICK=1 bench/run.sh   (short smoke run, ~30 s)
# Knobs (env): BENCH_QUICK BENCH_ROUNDS BENCH_DURATION BENCH_WARMUP BENCH_CONNECTIONS
#   BENCH_STREAM_REQUESTS BENCH_STREAM_WARMUP BENCH_STREAM_CONCURRENCY BENCH_STREAM_DELAY_MS
#   BENCH_LOADGEN_THREADS BENCH_NGINX_WORKERS BENCH_TARGETS BENCH_SKIP_BUILD BENCH_KEEP_TMP
#   BENCH_BYOK_LOG BENCH_WRK BENCH_PROFILE (perf|strace) TMPDIR
#   BENCH_BYOK_BIN BENCH_BYOK_LABEL BENCH_BYOK_SETUP BENCH_RESULTS_JSON (another byok build; bench/billing uses them)
# See bench/README.md.
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH_DIR/.." && pwd)"

if [[ "${BENCH_QUICK:-0}" == 1 ]]; then
  : "${BENCH_DURATION:=3}" "${BENCH_WARMUP:=1}" "${BENCH_STREAM_REQUESTS:=40}"
fi
DURATION="${BENCH_DURATION:-10}"             # measured seconds per throughput run
WARMUP="${BENCH_WARMUP:-2}"                  # unmeasured seconds before it
CONNECTIONS="${BENCH_CONNECTIONS:-32}"       # keep-alive connections, one request in flight each
STREAM_REQUESTS="${BENCH_STREAM_REQUESTS:-200}"
STREAM_WARMUP="${BENCH_STREAM_WARMUP:-10}"
STREAM_CONCURRENCY="${BENCH_STREAM_CONCURRENCY:-4}"
STREAM_DELAY_MS="${BENCH_STREAM_DELAY_MS:-20}"   # mock's pause between SSE events (11 events: ~200 ms a stream)
LOADGEN_THREADS="${BENCH_LOADGEN_THREADS:-2}"
NGINX_WORKERS="${BENCH_NGINX_WORKERS:-auto}"
TARGETS="${BENCH_TARGETS:-direct nginx byok}"
BYOK_LOG_LEVEL="${BENCH_BYOK_LOG:-}"         # empty = byok's default (info)
if [[ "${BENCH_QUICK:-0}" == 1 ]]; then : "${BENCH_ROUNDS:=1}"; fi
ROUNDS="${BENCH_ROUNDS:-3}"                  # throughput rounds (targets interleaved); the median is reported
PROFILE="${BENCH_PROFILE:-}"                 # perf | strace | empty
HOLD_STREAMS="${BENCH_HOLD_STREAMS:-1000}"   # streams held open at once through byok for its RSS (0: skip)
HOLD_DELAY_MS="${BENCH_HOLD_DELAY_MS:-2000}" # the slow mock's pause between events while they are held
IR_REQUESTS="${BENCH_IR_REQUESTS:-1000}"     # calls counted under callgrind per proxy (0: skip the instruction counts)
RESULTS_DIR="$BENCH_DIR/results"
RESULTS_JSON="${BENCH_RESULTS_JSON:-$RESULTS_DIR/latest.json}"
BYOK_LABEL="${BENCH_BYOK_LABEL:-byok}"       # how the byok target is named in the table and the JSON
BYOK_SETUP="${BENCH_BYOK_SETUP:-}"           # a shell command run after byok's setup (see README)
[[ "$BYOK_LABEL" =~ ^[A-Za-z0-9._-]{1,16}$ ]] || { echo "bench: BENCH_BYOK_LABEL must be 1-16 of [A-Za-z0-9._-]" >&2; exit 2; }

for n in "$DURATION" "$WARMUP"; do
  [[ "$n" =~ ^[0-9]+(\.[0-9]+)?$ ]] || { echo "bench: '$n' is not a number of seconds" >&2; exit 2; }
done
for n in "$ROUNDS" "$CONNECTIONS" "$STREAM_REQUESTS" "$STREAM_WARMUP" "$STREAM_CONCURRENCY" "$STREAM_DELAY_MS" "$LOADGEN_THREADS" "$HOLD_STREAMS" "$HOLD_DELAY_MS" "$IR_REQUESTS"; do
  [[ "$n" =~ ^[0-9]+$ ]] || { echo "bench: '$n' is not a whole number" >&2; exit 2; }
done
(( ROUNDS >= 1 && ROUNDS <= 10 && CONNECTIONS >= 1 && CONNECTIONS <= 1024 && STREAM_REQUESTS >= 1 \
  && STREAM_REQUESTS <= 100000 && STREAM_CONCURRENCY >= 1 && STREAM_CONCURRENCY <= 256 && STREAM_DELAY_MS <= 10000 )) \
  || { echo "bench: out of bounds (rounds 1-10, connections 1-1024, stream requests 1-100000, stream concurrency 1-256)" >&2; exit 2; }
(( HOLD_STREAMS <= 10000 && HOLD_DELAY_MS >= 100 && HOLD_DELAY_MS <= 60000 && IR_REQUESTS <= 100000 )) \
  || { echo "bench: out of bounds (hold streams 0-10000, hold delay 100-60000 ms, instruction-count requests 0-100000)" >&2; exit 2; }
awk -v d="$DURATION" -v w="$WARMUP" 'BEGIN { exit !(d > 0 && d <= 600 && w <= 120) }' \
  || { echo "bench: BENCH_DURATION must be in (0, 600], BENCH_WARMUP <= 120" >&2; exit 2; }

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- prerequisites
need_pkgs=()
PATH="$PATH:/usr/sbin:/sbin"   # nginx lives in /usr/sbin, often not on a normal user's PATH
want() { command -v "$1" >/dev/null 2>&1 || need_pkgs+=("$2"); }
want pgrep procps
[[ " $TARGETS " == *" nginx "* ]] && want nginx nginx
want curl curl
want sqlite3 sqlite3
[[ "${BENCH_WRK:-0}" == 1 ]] && want wrk wrk
((IR_REQUESTS > 0)) && { want valgrind valgrind; want callgrind_control valgrind; }
case "$PROFILE" in
  "") ;;
  perf) want perf linux-perf ;;
  strace) want strace strace ;;
  *) echo "bench: BENCH_PROFILE must be perf or strace" >&2; exit 2 ;;
esac
if ((${#need_pkgs[@]})); then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    log "installing: ${need_pkgs[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
  else
    die "missing tools; please install: ${need_pkgs[*]} (e.g. sudo apt-get install -y ${need_pkgs[*]})"
  fi
fi
NGINX_BIN="$(command -v nginx || true)"
command -v cargo >/dev/null || die "cargo not found (https://rustup.rs)"

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
  log "building release binaries (byok, byok-mock-provider, byok-loadgen); the first build takes a while"
  (cd "$ROOT" && cargo build --release --quiet -p byok -p byok-mock-provider -p byok-loadgen) || die "cargo build failed"
fi
BYOK="${BENCH_BYOK_BIN:-$TARGET_DIR/release/byok}"
MOCK="$TARGET_DIR/release/byok-mock-provider"
LOADGEN="$TARGET_DIR/release/byok-loadgen"
for b in "$BYOK" "$MOCK" "$LOADGEN"; do [[ -x "$b" ]] || die "missing binary $b (build without BENCH_SKIP_BUILD=1)"; done

# ---------------------------------------------------------------- temp dir, cleanup
TMP="$(mktemp -d "${TMPDIR:-/tmp}/byok-bench.XXXXXX")"
PIDS=()
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    local pid="${PIDS[i]}"
    kill -TERM "$pid" 2>/dev/null || true
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
# Sum of user+system CPU ticks of the given pids and all their children.
cpu_ticks() {
  local total=0 pid t child
  local all=("$@")
  for pid in "$@"; do
    for child in $(pgrep -P "$pid" 2>/dev/null || true); do all+=("$child"); done
  done
  for pid in "${all[@]}"; do
    [[ -r /proc/$pid/stat ]] || continue
    t=$(sed 's/^.*) //' "/proc/$pid/stat" | awk '{ print $12 + $13 }')
    total=$((total + t))
  done
  echo "$total"
}
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
hwm_kb() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
# Busy and total jiffies of the whole host (all CPUs), from /proc/stat.
host_jiffies() { awk '/^cpu / { idle = $5 + $6; t = 0; for (i = 2; i <= NF; i++) t += $i; print t - idle, t; exit }' /proc/stat; }
jnum() { grep -o "\"$1\":[-0-9.e]*" "$2" | head -1 | cut -d: -f2; }

CLK_TCK="$(getconf CLK_TCK)"
MOCK_KEY="sk-bench-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
CHAT_BODY='{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello to the benchmark"}],"max_tokens":16}'
STREAM_BODY='{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Say hello to the benchmark"}]}'

# ---------------------------------------------------------------- mock provider
log "starting the mock provider (stream delay ${STREAM_DELAY_MS} ms/event)"
BYOK_MOCK_OPENAI_KEYS="$MOCK_KEY" "$MOCK" --listen 127.0.0.1:0 --no-record --stream-delay-ms "$STREAM_DELAY_MS" \
  >"$TMP/mock.out" 2>"$TMP/mock.err" &
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

# A second mock whose streams are slow (BENCH_HOLD_DELAY_MS between events), as byok's
# Anthropic upstream: the streams held open for the memory figure.
SLOW_ADDR=""
SLOW_KEY="sk-ant-bench-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
if [[ " $TARGETS " == *" byok "* ]] && ((HOLD_STREAMS > 0)); then
  BYOK_MOCK_ANTHROPIC_KEYS="$SLOW_KEY" "$MOCK" --listen 127.0.0.1:0 --no-record --stream-delay-ms "$HOLD_DELAY_MS" \
    >"$TMP/slow.out" 2>"$TMP/slow.err" &
  SLOW_PID=$!
  PIDS+=("$SLOW_PID")
  for _ in $(seq 100); do
    SLOW_ADDR="$(sed -n 's/^listening on \(127\.0\.0\.1:[0-9]*\)$/\1/p' "$TMP/slow.out" | head -1)"
    [[ -n "$SLOW_ADDR" ]] && break
    alive "$SLOW_PID" || die "the slow mock exited: $(cat "$TMP/slow.err")"
    sleep 0.1
  done
  [[ -n "$SLOW_ADDR" ]] || die "the slow mock did not print its address"
fi

# ---------------------------------------------------------------- nginx
NGINX_PORT=""
NGINX_PID=""
if [[ " $TARGETS " == *" nginx "* ]]; then
  NGINX_PORT="$(free_port)"
  NGX="$TMP/nginx"
  mkdir -p "$NGX/tmp"
  chmod 755 "$TMP" "$NGX" "$NGX/tmp"   # workers may run as 'nobody' when started by root
  cat >"$NGX/nginx.conf" <<EOF
# Generated by bench/run.sh: the floor for "a proxy that adds a header".
worker_processes $NGINX_WORKERS;
pid $NGX/nginx.pid;
error_log $NGX/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $NGX/tmp/body;
  proxy_temp_path $NGX/tmp/proxy;
  fastcgi_temp_path $NGX/tmp/fastcgi;
  uwsgi_temp_path $NGX/tmp/uwsgi;
  scgi_temp_path $NGX/tmp/scgi;
  upstream mock {
    server $MOCK_ADDR;
    keepalive 128;
  }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "Bearer $MOCK_KEY";
      # Streams must be forwarded as they arrive (byok never buffers them either).
      proxy_buffering off;
    }
  }
}
EOF
  "$NGINX_BIN" -t -q -p "$NGX" -c "$NGX/nginx.conf" -e "$NGX/error.log" 2>"$NGX/test.err" \
    || die "nginx config test failed: $(cat "$NGX/test.err")"
  log "starting nginx on 127.0.0.1:$NGINX_PORT (worker_processes $NGINX_WORKERS, upstream keepalive, access_log off)"
  "$NGINX_BIN" -p "$NGX" -c "$NGX/nginx.conf" -e "$NGX/error.log" -g 'daemon off;' >"$NGX/stdout" 2>&1 &
  NGINX_PID=$!
  PIDS+=("$NGINX_PID")
fi

# ---------------------------------------------------------------- byok
BYOK_PID=""
BYOK_DATA="$TMP/byok-data"
ADMIN_PORT=""
PROXY_PORT=""
BYOK_TOKEN=""
# start_byok DATA ADMIN_PORT PROXY_PORT [WRAPPER...]: `byok serve` (under WRAPPER, e.g.
# valgrind) with a fresh data dir, set up through the CLI: org `bench`, team `agents`, an
# OpenAI credential holding the mock's key (and an Anthropic one for the slow mock when
# streams are held), a workload token -> STARTED_PID, STARTED_TOKEN.
start_byok() {
  local data="$1" admin="$2" proxy="$3" name
  shift 3
  name="$(basename "$data")"
  (
    export BYOK_UPSTREAM_OPENAI="http://$MOCK_ADDR"
    [[ -n "$SLOW_ADDR" ]] && export BYOK_UPSTREAM_ANTHROPIC="http://$SLOW_ADDR"
    [[ -n "$BYOK_LOG_LEVEL" ]] && export BYOK_LOG="$BYOK_LOG_LEVEL"
    exec "$@" "$BYOK" serve --data-dir "$data" --admin-addr "127.0.0.1:$admin" --proxy-addr "127.0.0.1:$proxy"
  ) >"$TMP/$name.out" 2>"$TMP/$name.err" &
  STARTED_PID=$!
  PIDS+=("$STARTED_PID")
  local ready=0
  for _ in $(seq 1200); do
    alive "$STARTED_PID" || die "byok serve exited: $(tail -20 "$TMP/$name.err")"
    if [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$admin/readyz" || true)" == 200 ]]; then ready=1; break; fi
    sleep 0.1
  done
  ((ready)) || die "byok did not become ready: $(tail -20 "$TMP/$name.err")"
  log "setting up byok ($name) through the CLI: org, team, OpenAI credential (the mock's key), workload token"
  local setup="$TMP/$name.setup.log"
  (
    export BYOK_ADMIN_URL="http://127.0.0.1:$admin" BYOK_DATA_DIR="$data"
    "$BYOK" org create bench --tier katman-b >"$setup" 2>&1 || die "org create failed: $(cat "$setup")"
    "$BYOK" team create --org bench agents >>"$setup" 2>&1 || die "team create failed: $(cat "$setup")"
    BENCH_OPENAI_KEY="$MOCK_KEY" "$BYOK" credential add --org bench --name mock-openai --provider openai \
      --secret-env BENCH_OPENAI_KEY >>"$setup" 2>&1 || die "credential add failed: $(cat "$setup")"
    if [[ -n "$SLOW_ADDR" ]]; then
      BENCH_ANTHROPIC_KEY="$SLOW_KEY" "$BYOK" credential add --org bench --name slow-anthropic --provider anthropic \
        --secret-env BENCH_ANTHROPIC_KEY >>"$setup" 2>&1 || die "credential add failed: $(cat "$setup")"
    fi
    "$BYOK" token create --org bench --team agents 2>>"$setup" >"$TMP/$name.token" || die "token create failed: $(cat "$setup")"
    if [[ -n "$BYOK_SETUP" ]]; then
      BYOK_BIN="$BYOK" BENCH_ORG=bench bash -c "$BYOK_SETUP" >>"$setup" 2>&1 \
        || die "BENCH_BYOK_SETUP failed: $(tail -20 "$setup")"
    fi
  ) || exit 1
  STARTED_TOKEN="$(cat "$TMP/$name.token")"
  [[ "$STARTED_TOKEN" == byok_* ]] || die "unexpected token output"
}

if [[ " $TARGETS " == *" byok "* ]]; then
  ADMIN_PORT="$(free_port)"
  PROXY_PORT="$(free_port)"
  log "starting byok serve (admin 127.0.0.1:$ADMIN_PORT, data plane 127.0.0.1:$PROXY_PORT, data dir $BYOK_DATA)"
  [[ -n "$BYOK_SETUP" ]] && log "BENCH_BYOK_SETUP: $BYOK_SETUP"
  start_byok "$BYOK_DATA" "$ADMIN_PORT" "$PROXY_PORT"
  BYOK_PID="$STARTED_PID"
  BYOK_TOKEN="$STARTED_TOKEN"
fi

# ---------------------------------------------------------------- per-target plumbing
target_url() {
  case "$1" in
    direct) echo "http://$MOCK_ADDR/v1/chat/completions" ;;
    nginx) echo "http://127.0.0.1:$NGINX_PORT/v1/chat/completions" ;;
    byok) echo "http://127.0.0.1:$PROXY_PORT/openai/v1/chat/completions" ;;
  esac
}
target_auth() {
  case "$1" in
    direct) echo "authorization: Bearer $MOCK_KEY" ;;
    nginx) echo "authorization: Bearer not-the-key" ;;   # nginx overwrites it with the real key
    byok) echo "authorization: Bearer $BYOK_TOKEN" ;;
  esac
}
target_label() {
  case "$1" in
    byok) echo "$BYOK_LABEL" ;;
    *) echo "$1" ;;
  esac
}
target_pids() {
  case "$1" in
    direct) echo "" ;;
    nginx) echo "$NGINX_PID" ;;
    byok) echo "$BYOK_PID" ;;
  esac
}

# Preflight: one plain and one streamed call per target must answer 200 (also proves that
# nginx injects the key and that byok resolves the credential).
BYOK_PREFLIGHT=0
for t in $TARGETS; do
  url="$(target_url "$t")"
  ok=0
  for _ in $(seq 100); do
    code="$(curl -s -o "$TMP/preflight.$t" -w '%{http_code}' -H "$(target_auth "$t")" -H 'content-type: application/json' -d "$CHAT_BODY" "$url" || true)"
    [[ "$t" == byok ]] && [[ "$code" != 000 ]] && BYOK_PREFLIGHT=$((BYOK_PREFLIGHT + 1))
    [[ "$code" == 200 ]] && { ok=1; break; }
    [[ "$code" != 000 ]] && break   # answered, but not 200: no point retrying
    sleep 0.1
  done
  ((ok)) || die "preflight of $t failed (HTTP $code): $(head -c 500 "$TMP/preflight.$t" 2>/dev/null)"
  code="$(curl -s -N -o "$TMP/preflight-stream.$t" -w '%{http_code}' -H "$(target_auth "$t")" -H 'content-type: application/json' -d "$STREAM_BODY" "$url" || true)"
  [[ "$t" == byok ]] && BYOK_PREFLIGHT=$((BYOK_PREFLIGHT + 1))
  [[ "$code" == 200 ]] && grep -q 'data: \[DONE\]' "$TMP/preflight-stream.$t" \
    || die "streamed preflight of $t failed (HTTP $code): $(head -c 500 "$TMP/preflight-stream.$t")"
done
log "preflight ok for: $TARGETS"
BYOK_RSS_START=0
[[ -n "$BYOK_PID" ]] && BYOK_RSS_START="$(rss_kb "$BYOK_PID")"

# ---------------------------------------------------------------- runs
# BENCH_PROFILE=perf|strace: profile byok during its throughput run (see README).
profile_report() {
  mkdir -p "$RESULTS_DIR"
  case "$PROFILE" in
    perf)
      [[ -f "$TMP/perf.data" ]] || { log "perf recorded nothing: $(cat "$TMP/profile.log")"; return; }
      {
        echo "# byok CPU by component during the measured window (perf, 999 Hz; bench/perf-buckets.awk)"
        perf script -i "$TMP/perf.data" --no-inline 2>/dev/null \
          | awk -v requests="$(jnum measured "$TMP/tp.byok.1.json")" -v hz=999 -f "$BENCH_DIR/perf-buckets.awk"
        echo
        echo "# self time by symbol"
        perf report -i "$TMP/perf.data" --no-children --stdio --sort dso,sym --percent-limit 0.4 -g none 2>/dev/null | grep -v '^$'
        echo
        echo "# inclusive (children) time by symbol"
        perf report -i "$TMP/perf.data" --children --stdio --sort sym --percent-limit 3 -g none 2>/dev/null | grep -v '^$'
        echo
        echo "# by thread"
        perf report -i "$TMP/perf.data" --no-children --stdio --sort comm -g none 2>/dev/null | grep -v '^$'
      } >"$RESULTS_DIR/byok-perf.txt"
      log "perf report: ${RESULTS_DIR#"$ROOT"/}/byok-perf.txt (raw data: $TMP/perf.data; set BENCH_KEEP_TMP=1 to keep it)"
      ;;
    strace)
      { echo "# byok syscalls during ${DURATION}s of the throughput run (strace -c -w -f: wall time in syscalls)"; cat "$TMP/strace.txt"; } \
        >"$RESULTS_DIR/byok-syscalls.txt"
      log "syscall summary: ${RESULTS_DIR#"$ROOT"/}/byok-syscalls.txt"
      ;;
  esac
}
run_bounded() { timeout --kill-after=5 "$1" "${@:2}"; }
THROUGHPUT_TIMEOUT="$(awk -v d="$DURATION" -v w="$WARMUP" 'BEGIN { printf "%d", d + w + 60 }')"
STREAM_TIMEOUT="$(awk -v n="$STREAM_REQUESTS" -v w="$STREAM_WARMUP" -v c="$STREAM_CONCURRENCY" -v d="$STREAM_DELAY_MS" \
  'BEGIN { printf "%d", 60 + (n + w) * (d * 20 + 500) / 1000 / c }')"

BYOK_SENT=0          # requests byok answered (each must have left exactly one audit row)
BYOK_WRK_SLACK=0     # wrk does not count requests still in flight when it stops
for ((round = 1; round <= ROUNDS; round++)); do
  for t in $TARGETS; do
    log "throughput: $t — $CONNECTIONS connections, ${WARMUP}s warm-up + ${DURATION}s measured (round $round/$ROUNDS)"
    pids="$(target_pids "$t")"
    before_proxy=0; before_mock="$(cpu_ticks "$MOCK_PID")"
    [[ -n "$pids" ]] && before_proxy="$(cpu_ticks $pids)"
    read -r before_busy before_all < <(host_jiffies)
    PROF_PID=""
    if [[ "$t" == byok && -n "$PROFILE" && $round == 1 ]]; then
      # Attach for the measured window only (after the warm-up). Profiling perturbs the numbers.
      (
        sleep "$WARMUP"
        case "$PROFILE" in
          perf) exec perf record -q -F 999 --call-graph dwarf,8192 -p "$BYOK_PID" -o "$TMP/perf.data" -- sleep "$DURATION" ;;
          strace) exec timeout -s INT "$DURATION" strace -q -c -w -f -p "$BYOK_PID" -o "$TMP/strace.txt" ;;
        esac
      ) >"$TMP/profile.log" 2>&1 &
      PROF_PID=$!
    fi
    run_bounded "$THROUGHPUT_TIMEOUT" "$LOADGEN" throughput --url "$(target_url "$t")" -H "$(target_auth "$t")" \
      --body "$CHAT_BODY" --connections "$CONNECTIONS" --warmup "$WARMUP" --duration "$DURATION" \
      --threads "$LOADGEN_THREADS" >"$TMP/tp.$t.$round.json" || die "load generator failed on $t"
    after_mock="$(cpu_ticks "$MOCK_PID")"; after_proxy=0
    [[ -n "$pids" ]] && after_proxy="$(cpu_ticks $pids)"
    read -r after_busy after_all < <(host_jiffies)
    if [[ -n "$PROF_PID" ]]; then
      wait "$PROF_PID" || true
      profile_report
    fi
    # Host CPU used by anything other than the target, the mock and the load generator
    # (other tenants of the machine): a noise indicator.
    ours=$((after_proxy - before_proxy + after_mock - before_mock))
    ours="$(awk -v o="$ours" -v l="$(jnum loadgen_cpu_s "$TMP/tp.$t.$round.json")" -v hz="$CLK_TCK" 'BEGIN { printf "%d", o + l * hz }')"
    outside=$(((after_busy - before_busy - ours) * 100 / (after_all - before_all)))
    ((outside < 0)) && outside=0
    echo "$((after_proxy - before_proxy)) $((after_mock - before_mock)) $(((after_busy - before_busy) * 100 / (after_all - before_all))) $outside" >"$TMP/cpu.$t.$round"
    [[ "$t" == byok ]] && BYOK_SENT=$((BYOK_SENT + $(jnum requests_total "$TMP/tp.$t.$round.json")))
    if [[ "${BENCH_WRK:-0}" == 1 ]]; then
      log "throughput (wrk cross-check): $t"
      cat >"$TMP/wrk.$t.lua" <<EOF
wrk.method = "POST"
wrk.body = [[$CHAT_BODY]]
wrk.headers["content-type"] = "application/json"
wrk.headers["authorization"] = "$(target_auth "$t" | sed 's/^authorization: //')"
EOF
      run_bounded "$THROUGHPUT_TIMEOUT" wrk -t2 -c"$CONNECTIONS" -d"${DURATION%.*}s" --latency -s "$TMP/wrk.$t.lua" \
        "$(target_url "$t")" >"$TMP/wrk.$t.$round.txt" 2>&1 || die "wrk failed on $t"
      if [[ "$t" == byok ]]; then
        BYOK_SENT=$((BYOK_SENT + $(awk '/requests in/ { print $1 }' "$TMP/wrk.$t.$round.txt")))
        BYOK_WRK_SLACK=$((BYOK_WRK_SLACK + CONNECTIONS))
      fi
    fi
  done
done
# Report the median round (by requests/s) of each target; every round is kept in the JSON.
for t in $TARGETS; do
  median="$(for ((r = 1; r <= ROUNDS; r++)); do echo "$(jnum rps "$TMP/tp.$t.$r.json") $r"; done | sort -n | awk '{ a[NR] = $2 } END { print a[int((NR + 1) / 2)] }')"
  cp "$TMP/tp.$t.$median.json" "$TMP/tp.$t.json"
  cp "$TMP/cpu.$t.$median" "$TMP/cpu.$t"
  [[ -f "$TMP/wrk.$t.$median.txt" ]] && cp "$TMP/wrk.$t.$median.txt" "$TMP/wrk.$t.txt"
  for ((r = 1; r <= ROUNDS; r++)); do jnum rps "$TMP/tp.$t.$r.json"; done | paste -sd, >"$TMP/rounds.$t"
done

for t in $TARGETS; do
  log "stream TTFB: $t — $STREAM_REQUESTS requests (+$STREAM_WARMUP warm-up), $STREAM_CONCURRENCY at a time"
  run_bounded "$STREAM_TIMEOUT" "$LOADGEN" ttfb --url "$(target_url "$t")" -H "$(target_auth "$t")" \
    --body "$STREAM_BODY" --requests "$STREAM_REQUESTS" --warmup-requests "$STREAM_WARMUP" \
    --concurrency "$STREAM_CONCURRENCY" --threads "$LOADGEN_THREADS" >"$TMP/ttfb.$t.json" || die "load generator failed on $t (stream)"
done

# ---------------------------------------------------------------- byok: memory with open streams
# BENCH_HOLD_STREAMS streamed calls (Anthropic Messages, to the slow mock) opened at once,
# each on its own connection; byok's RSS is sampled for 2 s once every one has its first
# byte (all open: each lasts ~8 events x BENCH_HOLD_DELAY_MS).
BYOK_RSS_HOLD=null
if [[ -n "$BYOK_PID" ]] && ((HOLD_STREAMS > 0)); then
  log "open streams: $HOLD_STREAMS streamed calls held open through byok at once (slow mock, ${HOLD_DELAY_MS} ms/event)"
  HOLD_BODY='{"model":"claude-sonnet-4-5","max_tokens":16,"stream":true,"messages":[{"role":"user","content":"Say hello to the benchmark"}]}'
  rm -f "$TMP/hold.ready"
  run_bounded "$((120 + HOLD_STREAMS / 10 + HOLD_DELAY_MS * 20 / 1000))" "$LOADGEN" hold \
    --url "http://127.0.0.1:$PROXY_PORT/anthropic/v1/messages" -H "x-api-key: $BYOK_TOKEN" -H "anthropic-version: 2023-06-01" \
    --body "$HOLD_BODY" --streams "$HOLD_STREAMS" --ready "$TMP/hold.ready" --threads "$LOADGEN_THREADS" >"$TMP/hold.json" &
  HOLD_LOADGEN=$!
  peak=0; sampled_from=""
  while alive "$HOLD_LOADGEN"; do
    if [[ -f "$TMP/hold.ready" ]]; then
      [[ -z "$sampled_from" ]] && sampled_from="$(date +%s%N)"
      if (( $(date +%s%N) - sampled_from < 2000000000 )); then
        r="$(rss_kb "$BYOK_PID")"; ((r > peak)) && peak=$r
      fi
    fi
    sleep 0.1
  done
  wait "$HOLD_LOADGEN" || die "load generator failed (held streams): $(cat "$TMP/hold.json")"
  [[ "$(jnum ok_total "$TMP/hold.json")" == "$HOLD_STREAMS" ]] || die "held streams: not all answered 200: $(cat "$TMP/hold.json")"
  BYOK_RSS_HOLD="$peak"
  BYOK_SENT=$((BYOK_SENT + HOLD_STREAMS))
  log "open streams: all $HOLD_STREAMS open after $(jnum all_open_s "$TMP/hold.json") s; byok RSS $((peak / 1024)) MiB"
fi

# ---------------------------------------------------------------- byok: memory, shutdown, audit
BYOK_RSS_END=0; BYOK_HWM=0; SHUTDOWN_S=null; SHUTDOWN_RC=null
AUDIT_ROWS=null; AUDIT_ALLOWED=null; COMPLETIONS=null; NO_COMPLETION=null; COMPLETION_STATUSES=""; UPSTREAM_STATUSES=""; AUDIT_EXPECTED=null; AUDIT_OK=null; AUDIT_HASHED=null
BYOK_WARN_LINES=0; BYOK_ERROR_LINES=0
AUDIT_COMMITS=null; AUDIT_PER_COMMIT=null; AUDIT_COMMIT_MS=null; DISK_KIB_PER_CALL=null
if [[ -n "$BYOK_PID" ]]; then
  BYOK_RSS_END="$(rss_kb "$BYOK_PID")"; BYOK_HWM="$(hwm_kb "$BYOK_PID")"
  alive "$BYOK_PID" || die "byok is no longer running after the load"
  # What the durable audit cost the disk: group commits (entries per commit, time per
  # commit) from byok's metrics, and the bytes byok sent to storage per call.
  if curl -sf "http://127.0.0.1:$ADMIN_PORT/metrics" >"$TMP/byok.metrics"; then
    read -r AUDIT_COMMITS AUDIT_PER_COMMIT AUDIT_COMMIT_MS < <(awk '
      /^byok_audit_commit_seconds_count / { n = $2 } /^byok_audit_commit_seconds_sum / { s = $2 }
      /^byok_audit_batch_entries_sum / { e = $2 }
      END { if (n > 0) printf "%d %.1f %.2f\n", n, e / n, s / n * 1000; else print "null null null" }' "$TMP/byok.metrics")
  fi
  written="$(awk '/^write_bytes:/ { print $2 }' "/proc/$BYOK_PID/io" 2>/dev/null || true)"
  [[ -n "$written" ]] && DISK_KIB_PER_CALL="$(awk -v b="$written" -v n="$((BYOK_PREFLIGHT + BYOK_SENT))" 'BEGIN { printf "%.1f", b / 1024 / (n > 0 ? n : 1) }')"
  # Graceful stop: drains calls and flushes the audit writer (call completions are queued
  # without waiting; resolution rows were durable before each call went out).
  t0=$(date +%s.%N)
  kill -TERM "$BYOK_PID"
  for _ in $(seq 300); do alive "$BYOK_PID" || break; sleep 0.05; done
  if alive "$BYOK_PID"; then SHUTDOWN_RC='"timeout"'; else
    set +e; wait "$BYOK_PID"; SHUTDOWN_RC=$?; set -e
    # Reaped: forget its pid so that cleanup can never signal a recycled one.
    for i in "${!PIDS[@]}"; do [[ "${PIDS[i]}" == "$BYOK_PID" ]] && unset 'PIDS[i]'; done
    PIDS=("${PIDS[@]}")
  fi
  SHUTDOWN_S="$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')"
  AUDIT_EXPECTED=$((BYOK_PREFLIGHT + BYOK_SENT + $(jnum requests_total "$TMP/ttfb.byok.json")))
  DB="$BYOK_DATA/byok.db"
  if command -v sqlite3 >/dev/null && [[ -f "$DB" ]]; then
    AUDIT_ROWS="$(sqlite3 "$DB" 'SELECT count(*) FROM resolution_audit')"
    AUDIT_ALLOWED="$(sqlite3 "$DB" "SELECT count(*) FROM resolution_audit WHERE outcome = 'allowed'")"
    AUDIT_HASHED="$(sqlite3 "$DB" 'SELECT count(*) FROM resolution_audit WHERE hash IS NOT NULL')"
    COMPLETIONS="$(sqlite3 "$DB" 'SELECT count(*) FROM call_completions')"
    # A completion names its row (org, segment, position): found through the binding index,
    # not by call id (which has no index of its own: a scan per row).
    NO_COMPLETION="$(sqlite3 "$DB" "SELECT count(*) FROM resolution_audit r WHERE outcome = 'allowed' AND NOT EXISTS (SELECT 1 FROM call_completions c WHERE c.org_id = r.org_id AND c.segment = r.segment AND c.resolution_seq = r.segment_seq)")"
    COMPLETION_STATUSES="$(sqlite3 "$DB" "SELECT '\"' || status || '\":' || count(*) FROM call_completions GROUP BY status" | paste -sd,)"
    UPSTREAM_STATUSES="$(sqlite3 "$DB" "SELECT '\"' || coalesce(upstream_status, 'none') || '\":' || count(*) FROM call_completions GROUP BY upstream_status" | paste -sd,)"
    # Exact, unless wrk ran (it stops with requests in flight that byok answered and audited).
    if ((AUDIT_ALLOWED == AUDIT_ROWS && AUDIT_ROWS >= AUDIT_EXPECTED && AUDIT_ROWS <= AUDIT_EXPECTED + BYOK_WRK_SLACK)); then
      AUDIT_OK=true
    else
      AUDIT_OK=false
    fi
  else
    log "sqlite3 or the database is missing: audit row count not checked"
  fi
  BYOK_WARN_LINES="$(grep -c ' WARN ' "$TMP/byok-data.err" || true)"
  BYOK_ERROR_LINES="$(grep -c ' ERROR ' "$TMP/byok-data.err" || true)"
fi

# ---------------------------------------------------------------- instructions per call
# The figure that does not move with the machine's load: valgrind callgrind counts the
# instructions a proxy executes (all threads) for exactly BENCH_IR_REQUESTS non-streaming
# calls over 8 connections, after 200 uninstrumented warm-up calls. byok: a second
# instance, set up like the first; nginx: one process (master_process off) with the same
# configuration.
IR_BYOK=null; IR_NGINX=null
if ((IR_REQUESTS > 0)); then
  ir_measure() { # name pid url auth out -> instructions per call on stdout
    local name="$1" pid="$2" url="$3" auth="$4" out="$5" dump=""
    "$LOADGEN" ttfb --url "$url" -H "$auth" --body "$CHAT_BODY" --requests 200 --warmup-requests 0 --concurrency 8 \
      >"$TMP/ir.$name.warmup.json" || die "instructions: warm-up of $name failed"
    callgrind_control --instr=on "$pid" >"$TMP/ir.$name.control" 2>&1 || die "callgrind_control failed: $(cat "$TMP/ir.$name.control")"
    "$LOADGEN" ttfb --url "$url" -H "$auth" --body "$CHAT_BODY" --requests "$IR_REQUESTS" --warmup-requests 0 --concurrency 8 \
      >"$TMP/ir.$name.json" || die "instructions: load on $name failed"
    callgrind_control --instr=off "$pid" >>"$TMP/ir.$name.control" 2>&1 || die "callgrind_control failed"
    callgrind_control --dump="measured $name" "$pid" >>"$TMP/ir.$name.control" 2>&1 || die "callgrind_control --dump failed"
    for _ in $(seq 300); do
      dump="$(grep -l '^desc: Trigger: .*measured' "$out"* 2>/dev/null | head -1 || true)"
      [[ -n "$dump" ]] && grep -q '^totals:' "$dump" && break
      dump=""; sleep 0.1
    done
    [[ -n "$dump" ]] || die "instructions: no callgrind dump for $name"
    [[ "$(jnum ok_total "$TMP/ir.$name.json")" == "$IR_REQUESTS" ]] || die "instructions: $name did not answer every call: $(cat "$TMP/ir.$name.json")"
    awk -v n="$IR_REQUESTS" '/^totals:/ { printf "%d", $2 / n; exit }' "$dump"
  }
  if [[ " $TARGETS " == *" byok "* ]]; then
    log "instructions: byok under callgrind, $IR_REQUESTS calls"
    IR_ADMIN="$(free_port)"; IR_PROXY="$(free_port)"
    start_byok "$TMP/byok-ir" "$IR_ADMIN" "$IR_PROXY" valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$TMP/callgrind.byok.out"
    IR_BYOK_PID="$STARTED_PID"
    IR_BYOK="$(ir_measure byok "$IR_BYOK_PID" "http://127.0.0.1:$IR_PROXY/openai/v1/chat/completions" "authorization: Bearer $STARTED_TOKEN" "$TMP/callgrind.byok.out")"
    kill -TERM "$IR_BYOK_PID" 2>/dev/null || true
  fi
  if [[ " $TARGETS " == *" nginx "* ]]; then
    log "instructions: nginx under callgrind (master_process off), $IR_REQUESTS calls"
    IR_NGINX_PORT="$(free_port)"
    sed -e "s/listen 127.0.0.1:$NGINX_PORT;/listen 127.0.0.1:$IR_NGINX_PORT;/" -e "s#pid $NGX/nginx.pid;#pid $NGX/nginx-ir.pid;#" \
      "$NGX/nginx.conf" >"$NGX/nginx-ir.conf"
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$TMP/callgrind.nginx.out" \
      "$NGINX_BIN" -p "$NGX" -c "$NGX/nginx-ir.conf" -e "$NGX/error-ir.log" -g 'daemon off; master_process off;' \
      >"$NGX/ir.stdout" 2>&1 &
    IR_NGINX_PID=$!
    PIDS+=("$IR_NGINX_PID")
    for _ in $(seq 600); do
      [[ "$(curl -s -o /dev/null -w '%{http_code}' -H 'content-type: application/json' -d "$CHAT_BODY" "http://127.0.0.1:$IR_NGINX_PORT/v1/chat/completions" || true)" == 200 ]] && break
      alive "$IR_NGINX_PID" || die "nginx under valgrind exited: $(cat "$NGX/ir.stdout")"
      sleep 0.1
    done
    IR_NGINX="$(ir_measure nginx "$IR_NGINX_PID" "http://127.0.0.1:$IR_NGINX_PORT/v1/chat/completions" "authorization: Bearer not-the-key" "$TMP/callgrind.nginx.out")"
    kill -TERM "$IR_NGINX_PID" 2>/dev/null || true
  fi
fi

# ---------------------------------------------------------------- report
mkdir -p "$RESULTS_DIR" "$(dirname "$RESULTS_JSON")"
row_json() {
  local t="$1" cpu_proxy cpu_mock busy outside
  read -r cpu_proxy cpu_mock busy outside <"$TMP/cpu.$t"
  local total; total="$(jnum requests_total "$TMP/tp.$t.json")"
  printf '{"target":"%s","label":"%s","url":"%s","throughput":%s,"rps_all_rounds":[%s],"stream":%s,"host_cpu_busy_pct_during_throughput":%s,"host_cpu_pct_used_by_other_processes":%s,"cpu_us_per_request":{"proxy":%s,"mock":%s,"loadgen":%s}' \
    "$t" "$(target_label "$t")" "$(target_url "$t")" "$(cat "$TMP/tp.$t.json")" "$(cat "$TMP/rounds.$t")" "$(cat "$TMP/ttfb.$t.json")" "$busy" "$outside" \
    "$(awk -v c="$cpu_proxy" -v n="$total" -v hz="$CLK_TCK" 'BEGIN { printf "%.1f", n ? c / hz * 1e6 / n : 0 }')" \
    "$(awk -v c="$cpu_mock" -v n="$total" -v hz="$CLK_TCK" 'BEGIN { printf "%.1f", n ? c / hz * 1e6 / n : 0 }')" \
    "$(awk -v c="$(jnum loadgen_cpu_s "$TMP/tp.$t.json")" -v n="$total" 'BEGIN { printf "%.1f", n ? c * 1e6 / n : 0 }')"
  if [[ -f "$TMP/wrk.$t.txt" ]]; then
    printf ',"wrk":{"rps":%s,"non_2xx":%s}' "$(awk '/^Requests\/sec:/ { print $2 }' "$TMP/wrk.$t.txt")" \
      "$(awk '/Non-2xx/ { print $NF; f=1 } END { if (!f) print 0 }' "$TMP/wrk.$t.txt")"
  fi
  printf '}'
}

rps() { jnum rps "$TMP/tp.$1.json"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "n/a" }'; }

{
  printf '{\n  "generated_at": "%s",\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  printf '  "host": {"cpus": %s, "kernel": "%s", "nginx": "%s"},\n' "$(nproc)" "$(uname -r)" "$([[ -n "$NGINX_BIN" ]] && "$NGINX_BIN" -v 2>&1 | sed 's/.*nginx\///')"
  printf '  "settings": {"rounds": %s, "connections": %s, "warmup_s": %s, "duration_s": %s, "stream_requests": %s, "stream_concurrency": %s, "stream_delay_ms": %s, "loadgen_threads": %s, "nginx_worker_processes": "%s", "byok_log": "%s"},\n' \
    "$ROUNDS" "$CONNECTIONS" "$WARMUP" "$DURATION" "$STREAM_REQUESTS" "$STREAM_CONCURRENCY" "$STREAM_DELAY_MS" "$LOADGEN_THREADS" "$NGINX_WORKERS" "${BYOK_LOG_LEVEL:-default(info)}"
  printf '  "targets": [\n'
  first=1
  for t in $TARGETS; do
    ((first)) || printf ',\n'
    first=0
    printf '    '; row_json "$t"
  done
  printf '\n  ],\n'
  if [[ -n "$BYOK_PID" ]]; then
    printf '  "byok": {"label": "%s", "binary": "%s", "setup_hook": %s, "store": "sqlite (WAL, synchronous=FULL)",' "$BYOK_LABEL" "$BYOK" "$([[ -n "$BYOK_SETUP" ]] && echo true || echo false)"
    printf '  "kms": "local keyring", "audit": "on, durable before use (group commit)",\n'
    printf '           "audit_rows": %s, "audit_rows_allowed": %s, "audit_rows_hashed": %s, "call_completions": %s, "completion_statuses": {%s}, "completion_upstream_statuses": {%s}, "allowed_rows_without_completion": %s, "requests_sent": %s, "audit_matches_requests": %s,\n' \
      "$AUDIT_ROWS" "$AUDIT_ALLOWED" "$AUDIT_HASHED" "$COMPLETIONS" "$COMPLETION_STATUSES" "$UPSTREAM_STATUSES" "$NO_COMPLETION" "$AUDIT_EXPECTED" "$AUDIT_OK"
    printf '           "rss_kb_after_setup": %s, "rss_kb_after_load": %s, "rss_kb_peak": %s, "rss_kb_with_open_streams": %s, "open_streams": %s, "log_warn_lines": %s, "log_error_lines": %s,\n' \
      "$BYOK_RSS_START" "$BYOK_RSS_END" "$BYOK_HWM" "$BYOK_RSS_HOLD" "$HOLD_STREAMS" "$BYOK_WARN_LINES" "$BYOK_ERROR_LINES"
    printf '           "audit_group_commits": %s, "audit_entries_per_commit": %s, "audit_ms_per_commit": %s, "storage_kib_per_call": %s,\n' \
      "$AUDIT_COMMITS" "$AUDIT_PER_COMMIT" "$AUDIT_COMMIT_MS" "$DISK_KIB_PER_CALL"
    printf '           "graceful_shutdown_s": %s, "exit_status": %s},\n' "$SHUTDOWN_S" "$SHUTDOWN_RC"
  fi
  printf '  "instructions_per_call": {"byok": %s, "nginx": %s, "calls": %s},\n' "$IR_BYOK" "$IR_NGINX" "$IR_REQUESTS"
  printf '  "ratios": {"byok_over_nginx_rps": "%s", "byok_over_direct_rps": "%s", "nginx_over_direct_rps": "%s"}\n}\n' \
    "$( [[ -f $TMP/tp.byok.json && -f $TMP/tp.nginx.json ]] && ratio "$(rps byok)" "$(rps nginx)" || echo n/a)" \
    "$( [[ -f $TMP/tp.byok.json && -f $TMP/tp.direct.json ]] && ratio "$(rps byok)" "$(rps direct)" || echo n/a)" \
    "$( [[ -f $TMP/tp.nginx.json && -f $TMP/tp.direct.json ]] && ratio "$(rps nginx)" "$(rps direct)" || echo n/a)"
} >"$RESULTS_JSON"
if command -v jq >/dev/null; then jq . "$RESULTS_JSON" >/dev/null || die "internal: $RESULTS_JSON is not valid JSON"; fi

echo
printf 'byok benchmark — %s CPUs, %s connections, %ss measured (+%ss warm-up), median of %s rounds; stream: %s requests, %s at a time, mock %s ms/event\n' \
  "$(nproc)" "$CONNECTIONS" "$DURATION" "$WARMUP" "$ROUNDS" "$STREAM_REQUESTS" "$STREAM_CONCURRENCY" "$STREAM_DELAY_MS"
printf '%-7s %9s %8s %8s %9s  %9s %9s %10s  %9s %11s %9s %9s %6s%s\n' target 'req/s' 'p50 ms' 'p99 ms' 'errors' 'TTFB p50' 'TTFB p99' 'stream' 'proxy CPU' 'proxy instr' 'mock CPU' 'load CPU' 'host' "$([[ "${BENCH_WRK:-0}" == 1 ]] && echo '  wrk req/s')"
printf '%-7s %9s %8s %8s %9s  %9s %9s %10s  %9s %11s %9s %9s %6s\n' '' '' '' '' '(non-2xx)' 'ms' 'ms' 'p50 ms' 'us/req' 'per req' 'us/req' 'us/req' 'busy'
FAILED=0
NOISE_PCT=0
for t in $TARGETS; do
  tp="$TMP/tp.$t.json"; st="$TMP/ttfb.$t.json"
  read -r cpu_proxy cpu_mock busy outside <"$TMP/cpu.$t"
  ((outside > NOISE_PCT)) && NOISE_PCT=$outside
  total="$(jnum requests_total "$tp")"
  # Failed requests of every round (warm-ups included) and of the stream run.
  bad=$(($(jnum non_2xx_total "$st") + $(jnum errors_total "$st")))
  for ((r = 1; r <= ROUNDS; r++)); do
    bad=$((bad + $(jnum non_2xx_total "$TMP/tp.$t.$r.json") + $(jnum errors_total "$TMP/tp.$t.$r.json")))
  done
  ((bad == 0)) || FAILED=1
  wrkcol=""
  [[ -f "$TMP/wrk.$t.txt" ]] && wrkcol="$(awk '/^Requests\/sec:/ { printf "  %9.0f", $2 }' "$TMP/wrk.$t.txt")"
  grep -qs 'Non-2xx' "$TMP"/wrk."$t".*.txt && FAILED=1
  instr=-
  [[ "$t" == byok && "$IR_BYOK" != null ]] && instr="$IR_BYOK"
  [[ "$t" == nginx && "$IR_NGINX" != null ]] && instr="$IR_NGINX"
  printf '%-7s %9.0f %8.2f %8.2f %9s  %9.2f %9.2f %10.1f  %9s %11s %9s %9s %5s%%%s\n' "$(target_label "$t")" "$(rps "$t")" \
    "$(jnum p50_ms "$tp")" "$(jnum p99_ms "$tp")" "$bad" \
    "$(jnum ttfb_p50_ms "$st")" "$(jnum ttfb_p99_ms "$st")" "$(jnum stream_p50_ms "$st")" \
    "$([[ -n "$(target_pids "$t")" ]] && awk -v c="$cpu_proxy" -v n="$total" -v hz="$CLK_TCK" 'BEGIN { printf "%.0f", c / hz * 1e6 / n }' || echo -)" \
    "$instr" \
    "$(awk -v c="$cpu_mock" -v n="$total" -v hz="$CLK_TCK" 'BEGIN { printf "%.0f", c / hz * 1e6 / n }')" \
    "$(awk -v c="$(jnum loadgen_cpu_s "$tp")" -v n="$total" 'BEGIN { printf "%.0f", c * 1e6 / n }')" "$busy" "$wrkcol"
done
echo
if [[ -f $TMP/tp.byok.json && -f $TMP/tp.nginx.json && -f $TMP/tp.direct.json ]]; then
  printf 'byok/nginx throughput ratio: %s   byok/direct: %s   nginx/direct: %s\n' \
    "$(ratio "$(rps byok)" "$(rps nginx)")" "$(ratio "$(rps byok)" "$(rps direct)")" "$(ratio "$(rps nginx)" "$(rps direct)")"
  printf 'byok added latency over nginx: p50 %+.2f ms, p99 %+.2f ms; stream TTFB p50 %+.2f ms\n' \
    "$(awk -v a="$(jnum p50_ms "$TMP/tp.byok.json")" -v b="$(jnum p50_ms "$TMP/tp.nginx.json")" 'BEGIN { print a - b }')" \
    "$(awk -v a="$(jnum p99_ms "$TMP/tp.byok.json")" -v b="$(jnum p99_ms "$TMP/tp.nginx.json")" 'BEGIN { print a - b }')" \
    "$(awk -v a="$(jnum ttfb_p50_ms "$TMP/ttfb.byok.json")" -v b="$(jnum ttfb_p50_ms "$TMP/ttfb.nginx.json")" 'BEGIN { print a - b }')"
fi
if [[ -n "$BYOK_PID" ]]; then
  printf 'byok: store sqlite (WAL, synchronous=FULL), local keyring, audit ON (durable before use)\n'
  printf 'byok audit: %s rows (%s allowed, %s hash-chained), %s call completions {%s}, %s allowed rows without completion; requests sent to byok: %s -> %s\n' \
    "$AUDIT_ROWS" "$AUDIT_ALLOWED" "$AUDIT_HASHED" "$COMPLETIONS" "$COMPLETION_STATUSES" "$NO_COMPLETION" "$AUDIT_EXPECTED" \
    "$([[ "$AUDIT_OK" == true ]] && echo 'one row per request: OK' || echo "MISMATCH ($AUDIT_OK)")"
  printf 'byok memory: RSS %s MiB idle after setup, %s MiB after load, %s with %s streams open at once, peak %s MiB; log: %s WARN, %s ERROR lines; graceful shutdown %ss (exit %s)\n' \
    "$((BYOK_RSS_START / 1024))" "$((BYOK_RSS_END / 1024))" \
    "$([[ "$BYOK_RSS_HOLD" != null ]] && echo "$((BYOK_RSS_HOLD / 1024)) MiB" || echo 'not measured')" "$HOLD_STREAMS" \
    "$((BYOK_HWM / 1024))" "$BYOK_WARN_LINES" "$BYOK_ERROR_LINES" "$SHUTDOWN_S" "$SHUTDOWN_RC"
  printf 'byok audit writes: %s group commits, %s entries per commit, %s ms per commit (means); %s KiB sent to storage per call (WAL, checkpoints)\n' \
    "$AUDIT_COMMITS" "$AUDIT_PER_COMMIT" "$AUDIT_COMMIT_MS" "$DISK_KIB_PER_CALL"
  [[ "$AUDIT_OK" == false ]] && FAILED=1
  [[ "$SHUTDOWN_RC" != 0 ]] && FAILED=1
fi
if [[ "$IR_BYOK" != null && "$IR_NGINX" != null ]]; then
  printf 'instructions per call (callgrind, %s calls): byok %s, nginx %s: byok/nginx %s\n' "$IR_REQUESTS" "$IR_BYOK" "$IR_NGINX" "$(ratio "$IR_BYOK" "$IR_NGINX")"
fi
if ((NOISE_PCT > 10)); then
  printf 'WARNING: up to %s%% of the host CPU went to processes outside the benchmark during a run: absolute numbers are noisy; compare CPU us/req and re-run on a quiet machine.\n' "$NOISE_PCT"
fi
printf 'JSON: %s\n' "${RESULTS_JSON#"$ROOT"/}"
for t in $TARGETS; do
  for f in "$TMP"/tp."$t".[0-9]*.json "$TMP/ttfb.$t.json"; do
    err="$(grep -o '"first_error":"[^"]*' "$f" | cut -d'"' -f4- || true)"
    [[ -n "$err" ]] && log "$t: first error: $err"
  done
done
if ((FAILED)); then
  log "FAILED: some target answered non-2xx or failed requests, or byok's audit/shutdown check failed (details above and in $RESULTS_JSON)"
  exit 1
fi
