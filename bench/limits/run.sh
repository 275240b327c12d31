#!/usr/bin/env bash
# byok limits benchmark: do rate limits (SPEC 3.1) cost the data plane's hot path?
#
# The load of bench/run.sh (non-streaming chat completions through `byok serve` to the
# mock provider, closed loop over keep-alive connections) against byok in up to three
# configurations, in interleaved rounds (the order rotating), each run a fresh byok with a
# fresh SQLite data dir set up through the admin API (org, team, OpenAI credential holding
# the mock's key, workload token):
#
#   none    no limits at all
#   limits  PUT /v1/orgs/bench/limits: org, team and token rpm 100,000,000 and tpm
#           1,000,000,000 (never reached): every call takes the admit check of three
#           subjects and reports its tokens (local limiter, in-process)
#   redis   the same limits with `[limits] redis_url` (one EVALSHA per call, tokens
#           written fire-and-forget), a unique key_prefix per run; skipped when Redis does
#           not answer PING
#
# Prints req/s, p50, p99, byok CPU µs per request (medians over the rounds) and the ratios
# limits/none and redis/none. Then counts the SQL statements byok runs per call in each
# configuration (sqlx's statement log, `BYOK_LOG=info,sqlx::query=debug`, over a fixed
# number of calls after a warm-up) to show that limits add no store query per call.
#
# Usage: bench/limits/run.sh                (3 rounds × 3 configs, ~2 min after the build)
#        BENCH_QUICK=1 bench/limits/run.sh  (1 round of 3 s per config, ~30 s)
# Knobs (env): BENCH_ROUNDS (3) BENCH_DURATION (8) BENCH_WARMUP (2) BENCH_CONNECTIONS (32)
#   BENCH_LOADGEN_THREADS (2) BENCH_LIMITS_CONFIGS ("none limits redis")
#   BENCH_REDIS_URL (redis://127.0.0.1:6379/) BENCH_SQL_CALLS (1000) BENCH_SQL_CONCURRENCY (1)
#   BENCH_STOP_WAIT (1) BENCH_SKIP_BUILD BENCH_KEEP_TMP TMPDIR
# See bench/limits/README.md.
set -euo pipefail

LIMITS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$LIMITS_DIR/../.." && pwd)"

if [[ "${BENCH_QUICK:-0}" == 1 ]]; then
  : "${BENCH_ROUNDS:=1}" "${BENCH_DURATION:=3}" "${BENCH_WARMUP:=1}" "${BENCH_SQL_CALLS:=300}"
fi
ROUNDS="${BENCH_ROUNDS:-3}"
DURATION="${BENCH_DURATION:-8}"
WARMUP="${BENCH_WARMUP:-2}"
CONNECTIONS="${BENCH_CONNECTIONS:-32}"
LOADGEN_THREADS="${BENCH_LOADGEN_THREADS:-2}"
CONFIGS="${BENCH_LIMITS_CONFIGS:-none limits redis}"
REDIS_URL="${BENCH_REDIS_URL:-redis://127.0.0.1:6379/}"
SQL_CALLS="${BENCH_SQL_CALLS:-1000}"
SQL_CONCURRENCY="${BENCH_SQL_CONCURRENCY:-1}"
SQL_WARMUP_CALLS=50
STOP_WAIT="${BENCH_STOP_WAIT:-1}"   # seconds byok gets to exit after SIGTERM before SIGKILL
RPM=100000000         # org, team and token rpm: never reached
TPM=1000000000        # tpm (the largest a limit may be)
RESULTS_DIR="$ROOT/bench/results"

for n in "$DURATION" "$WARMUP"; do
  [[ "$n" =~ ^[0-9]+(\.[0-9]+)?$ ]] || { echo "bench/limits: '$n' is not a number of seconds" >&2; exit 2; }
done
for n in "$ROUNDS" "$CONNECTIONS" "$LOADGEN_THREADS" "$SQL_CALLS" "$SQL_CONCURRENCY" "$STOP_WAIT"; do
  [[ "$n" =~ ^[0-9]+$ ]] || { echo "bench/limits: '$n' is not a whole number" >&2; exit 2; }
done
((ROUNDS >= 1 && ROUNDS <= 10 && CONNECTIONS >= 1 && CONNECTIONS <= 1024 && SQL_CALLS >= 1 && SQL_CALLS <= 100000 \
  && SQL_CONCURRENCY >= 1 && SQL_CONCURRENCY <= 256)) \
  || { echo "bench/limits: out of bounds (rounds 1-10, connections 1-1024, sql calls 1-100000, sql concurrency 1-256)" >&2; exit 2; }
for c in $CONFIGS; do
  case "$c" in
    none | limits | redis) ;;
    *) echo "bench/limits: unknown configuration '$c' (use: none limits redis)" >&2; exit 2 ;;
  esac
done
[[ " $CONFIGS " == *" none "* && $(wc -w <<<"$CONFIGS") -ge 2 ]] \
  || { echo "bench/limits: BENCH_LIMITS_CONFIGS needs 'none' and at least one other" >&2; exit 2; }
[[ "$REDIS_URL" =~ ^redis://([A-Za-z0-9.-]+|\[[0-9a-fA-F:]+\])(:[0-9]+)?(/[0-9]*)?$ ]] \
  || { echo "bench/limits: BENCH_REDIS_URL must look like redis://HOST:PORT/DB (no password)" >&2; exit 2; }

log() { printf '[bench/limits %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

command -v cargo >/dev/null || die "cargo not found (https://rustup.rs)"
command -v curl >/dev/null || die "curl not found"

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
  log "building release binaries (byok, byok-mock-provider, byok-loadgen)"
  (cd "$ROOT" && cargo build --release --quiet -p byok -p byok-mock-provider -p byok-loadgen) || die "cargo build failed"
fi
BYOK="$TARGET_DIR/release/byok"
MOCK="$TARGET_DIR/release/byok-mock-provider"
LOADGEN="$TARGET_DIR/release/byok-loadgen"
for b in "$BYOK" "$MOCK" "$LOADGEN"; do [[ -x "$b" ]] || die "missing binary $b (build without BENCH_SKIP_BUILD=1)"; done

# ---------------------------------------------------------------- temp dir, cleanup
TMP="$(mktemp -d "${TMPDIR:-/tmp}/byok-bench-limits.XXXXXX")"
PIDS=()
REDIS_PREFIXES=()
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill -TERM "${PIDS[i]}" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  # The keys this run wrote in Redis expire after 61 s anyway; remove them now.
  if ((${#REDIS_PREFIXES[@]})) && command -v redis-cli >/dev/null; then
    for prefix in "${REDIS_PREFIXES[@]}"; do
      redis-cli -u "$REDIS_URL" --scan --pattern "$prefix*" 2>/dev/null | xargs -r redis-cli -u "$REDIS_URL" del >/dev/null 2>&1 || true
    done
  fi
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

alive() { kill -0 "$1" 2>/dev/null; }
forget_pid() {
  local i
  for i in "${!PIDS[@]}"; do [[ "${PIDS[i]}" == "$1" ]] && unset 'PIDS[i]'; done
  PIDS=("${PIDS[@]}")
}
# User + system CPU ticks of a process (all its threads).
cpu_ticks() {
  [[ -r "/proc/$1/stat" ]] || { echo 0; return; }
  sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}
# Busy and total jiffies of the whole host (all CPUs), from /proc/stat.
host_jiffies() { awk '/^cpu / { idle = $5 + $6; t = 0; for (i = 2; i <= NF; i++) t += $i; print t - idle, t; exit }' /proc/stat; }
jnum() { grep -o "\"$1\":[-0-9.e]*" "$2" | head -1 | cut -d: -f2; }
jstr() { grep -o "\"$1\":\"[^\"]*\"" | head -1 | cut -d'"' -f4; }
metric_value() { grep "^$1 " | awk '{ print $2 }' | head -1; }
median() { sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else printf "n/a" }'; }
CLK_TCK="$(getconf CLK_TCK)"
MOCK_KEY="sk-bench-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
CHAT_BODY='{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello to the benchmark"}],"max_tokens":16}'

# ---------------------------------------------------------------- Redis
redis_ping() {
  if command -v redis-cli >/dev/null; then
    [[ "$(redis-cli -u "$REDIS_URL" ping 2>/dev/null)" == PONG ]]
  else
    local hostport="${REDIS_URL#redis://}"
    hostport="${hostport%%/*}"
    local host="${hostport%:*}" port="${hostport##*:}"
    [[ "$hostport" == *:* ]] || port=6379
    timeout 2 bash -c "exec 3<>/dev/tcp/$host/$port && printf 'PING\r\n' >&3 && head -c 5 <&3 | grep -q PONG" 2>/dev/null
  fi
}
if [[ " $CONFIGS " == *" redis "* ]] && ! redis_ping; then
  log "Redis at $REDIS_URL does not answer PING: the 'redis' configuration is skipped"
  CONFIGS="$(tr ' ' '\n' <<<"$CONFIGS" | grep -v '^redis$' | paste -sd' ')"
fi
read -r -a CONFIG_LIST <<<"$CONFIGS"
N_CONFIGS=${#CONFIG_LIST[@]}

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

# ---------------------------------------------------------------- byok
BYOK_PID=""; ADMIN=""; PROXY=""; TOKEN=""; OP=""; RUN_DIR=""; REDIS_PREFIX=""
admin() { # METHOD PATH [BODY] -> the answer; fails on a non-2xx
  local method="$1" path="$2" body="${3:-}"
  local args=(-sS --fail-with-body -X "$method" -H "authorization: Bearer $OP" "$ADMIN$path")
  [[ -n "$body" ]] && args+=(-H 'content-type: application/json' -d "$body")
  curl "${args[@]}" 2>>"$RUN_DIR/setup.log" || die "admin $method $path failed: $(tail -3 "$RUN_DIR/setup.log")"
}
call() { # TOKEN -> HTTP status of one chat completion
  curl -s -o /dev/null -w '%{http_code}' -H "authorization: Bearer $1" -H 'content-type: application/json' \
    -d "$CHAT_BODY" "$PROXY/openai/v1/chat/completions" || true
}
# start_byok CONFIG RUN_NAME [BYOK_LOG]: a fresh byok on a fresh data dir, set up for CONFIG.
start_byok() {
  local config="$1" name="$2" log_filter="${3:-}"
  RUN_DIR="$TMP/$name"
  mkdir -p "$RUN_DIR"
  local admin_port proxy_port config_args=()
  admin_port="$("$LOADGEN" free-port)"; proxy_port="$("$LOADGEN" free-port)"
  ADMIN="http://127.0.0.1:$admin_port"; PROXY="http://127.0.0.1:$proxy_port"
  REDIS_PREFIX=""
  if [[ "$config" == redis ]]; then
    REDIS_PREFIX="byok-bench-limits-$$-$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')-$name:"
    REDIS_PREFIXES+=("$REDIS_PREFIX")
    printf '[limits]\nredis_url = "%s"\nkey_prefix = "%s"\n' "$REDIS_URL" "$REDIS_PREFIX" >"$RUN_DIR/byok.toml"
    config_args=(--config "$RUN_DIR/byok.toml")
  fi
  (
    for var in BYOK_DATA_DIR BYOK_ADMIN_URL BYOK_ADMIN_TOKEN BYOK_ADMIN_TOKEN_FILE BYOK_CONFIG BYOK_DATABASE_URL \
      BYOK_LIMITS_REDIS_URL BYOK_LOG; do unset "$var"; done
    export BYOK_UPSTREAM_OPENAI="http://$MOCK_ADDR"
    [[ -n "$log_filter" ]] && export BYOK_LOG="$log_filter"
    exec "$BYOK" serve --data-dir "$RUN_DIR/data" --admin-addr "127.0.0.1:$admin_port" \
      --proxy-addr "127.0.0.1:$proxy_port" "${config_args[@]}"
  ) >"$RUN_DIR/byok.out" 2>"$RUN_DIR/byok.err" &
  BYOK_PID=$!
  PIDS+=("$BYOK_PID")
  local ready=0
  for _ in $(seq 300); do
    alive "$BYOK_PID" || die "byok serve exited ($name): $(tail -20 "$RUN_DIR/byok.err")"
    if [[ "$(curl -s -o /dev/null -w '%{http_code}' "$ADMIN/readyz" || true)" == 200 ]]; then ready=1; break; fi
    sleep 0.1
  done
  ((ready)) || die "byok did not become ready ($name): $(tail -20 "$RUN_DIR/byok.err")"
  OP="$(cat "$RUN_DIR/data/operator.token")"
  admin POST /v1/orgs '{"name":"bench","tier":"katman-b"}' >/dev/null
  admin POST /v1/orgs/bench/teams '{"name":"agents"}' >/dev/null
  admin POST /v1/orgs/bench/credentials "{\"name\":\"mock-openai\",\"provider\":\"openai\",\"secret\":\"$MOCK_KEY\"}" >/dev/null
  local answer token_id
  answer="$(admin POST /v1/orgs/bench/tokens '{"team":"agents"}')"
  TOKEN="$(jstr token <<<"$answer")"; token_id="$(jstr id <<<"$answer")"
  [[ "$TOKEN" == byok_* && "$token_id" == tok_* ]] || die "unexpected token answer"
  [[ "$(call "$TOKEN")" == 200 ]] || die "preflight call failed ($name)"
  if [[ "$config" != none ]]; then
    # Limits never reached on the load's org, team and token. A second token of the team
    # with rpm 1 shows that the data plane enforces the document: its second call is
    # refused (the load's token has its own, huge, limit; the canary's is not checked for it).
    local canary canary_id limits
    answer="$(admin POST /v1/orgs/bench/tokens '{"team":"agents"}')"
    canary="$(jstr token <<<"$answer")"; canary_id="$(jstr id <<<"$answer")"
    limits="{\"org\":{\"rpm\":$RPM,\"tpm\":$TPM},\"teams\":{\"agents\":{\"rpm\":$RPM,\"tpm\":$TPM}},"
    limits+="\"tokens\":{\"$token_id\":{\"rpm\":$RPM,\"tpm\":$TPM},\"$canary_id\":{\"rpm\":1}}}"
    admin PUT /v1/orgs/bench/limits "$limits" >/dev/null
    admin GET /v1/orgs/bench/limits | grep -q "\"rpm\":$RPM" || die "the limits did not read back"
    local enforced=0 first
    first="$(call "$canary")"
    for _ in $(seq 50); do
      [[ "$(call "$canary")" == 429 ]] && { enforced=1; break; }
      sleep 0.1
    done
    [[ "$first" == 200 ]] && ((enforced)) || die "the limits are not enforced on the data plane ($name)"
    [[ "$(call "$TOKEN")" == 200 ]] || die "the load's token is refused under the high limits ($name)"
  fi
}
# stop_byok: SIGTERM, and SIGKILL when byok has not exited within STOP_WAIT seconds (the
# audit is durable before each call goes out, so nothing measured here is lost). Runs that
# needed the SIGKILL are counted and reported: a graceful shutdown should not need it.
KILLED=0
stop_byok() {
  kill -TERM "$BYOK_PID" 2>/dev/null || true
  local i
  for ((i = 0; i < STOP_WAIT * 20; i++)); do alive "$BYOK_PID" || break; sleep 0.05; done
  if alive "$BYOK_PID"; then
    KILLED=$((KILLED + 1))
    kill -KILL "$BYOK_PID" 2>/dev/null || true
  fi
  local rc=0
  wait "$BYOK_PID" 2>/dev/null || rc=$?
  forget_pid "$BYOK_PID"
  ((rc == 0 || rc == 137)) || die "byok exited with status $rc ($RUN_DIR): $(tail -5 "$RUN_DIR/byok.err")"
}
STOPS=0

# ---------------------------------------------------------------- throughput rounds
run_one() {
  local config="$1" round="$2" name="tp.$1.$2"
  start_byok "$config" "$name"
  log "round $round/$ROUNDS: $config — $CONNECTIONS connections, ${WARMUP}s warm-up + ${DURATION}s"
  local before after limited fallback=0 redis_keys="" org_rpm="" mock0 mock1 busy0 all0 busy1 all1 redis_pid="" redis0=0 redis1=0
  # A local Redis server's CPU is part of the 'redis' configuration's cost, not noise.
  [[ "$config" == redis ]] && redis_pid="$(pgrep -x redis-server | head -1 || true)"
  [[ -n "$redis_pid" ]] && redis0="$(cpu_ticks "$redis_pid")"
  mock0="$(cpu_ticks "$MOCK_PID")"
  read -r busy0 all0 < <(host_jiffies)
  before="$(cpu_ticks "$BYOK_PID")"
  timeout $((${DURATION%.*} + ${WARMUP%.*} + 60)) "$LOADGEN" throughput --url "$PROXY/openai/v1/chat/completions" \
    -H "authorization: Bearer $TOKEN" --body "$CHAT_BODY" --connections "$CONNECTIONS" --warmup "$WARMUP" \
    --duration "$DURATION" --threads "$LOADGEN_THREADS" >"$TMP/$name.json" || die "load generator failed ($name)"
  after="$(cpu_ticks "$BYOK_PID")"
  read -r busy1 all1 < <(host_jiffies)
  mock1="$(cpu_ticks "$MOCK_PID")"
  [[ -n "$redis_pid" ]] && redis1="$(cpu_ticks "$redis_pid")"
  # Host CPU used by anything but byok, the mock, the load generator (and Redis): other
  # tenants of the machine, a noise indicator (as in bench/run.sh).
  awk -v busy=$((busy1 - busy0)) -v all=$((all1 - all0)) -v ours=$((after - before + mock1 - mock0 + redis1 - redis0)) \
    -v lg="$(jnum loadgen_cpu_s "$TMP/$name.json")" -v hz="$CLK_TCK" \
    'BEGIN { o = all ? (busy - ours - lg * hz) * 100 / all : 0; if (o < 0) o = 0; printf "%d %d\n", all ? busy * 100 / all : 0, o }' \
    >"$TMP/$name.host"
  curl -s "$ADMIN/metrics" >"$TMP/$name.metrics" || true
  local total bad
  total="$(jnum requests_total "$TMP/$name.json")"
  bad=$(($(jnum non_2xx_total "$TMP/$name.json") + $(jnum errors_total "$TMP/$name.json")))
  ((bad == 0)) || die "$bad requests failed in $name: $(grep -o '"first_error":"[^"]*' "$TMP/$name.json")"
  awk -v c=$((after - before)) -v n="$total" -v hz="$CLK_TCK" 'BEGIN { printf "%.1f\n", n ? c / hz * 1e6 / n : 0 }' >"$TMP/$name.cpu"
  limited="$(metric_value byok_rate_limited_total <"$TMP/$name.metrics")"
  # The canary's one refusal; the load itself is never refused.
  [[ "$config" == none && "${limited:-0}" == 0 || "$config" != none && "${limited:-0}" -le 1 ]] \
    || die "$name: byok_rate_limited_total is $limited: the load hit a limit"
  if [[ "$config" == redis ]]; then
    fallback="$(metric_value byok_limits_fallback <"$TMP/$name.metrics")"
    [[ "$fallback" == 0 ]] || die "$name: byok fell back to local limits (Redis unreachable?): see $RUN_DIR/byok.err"
    if command -v redis-cli >/dev/null; then
      redis_keys="$(redis-cli -u "$REDIS_URL" --scan --pattern "$REDIS_PREFIX*" | wc -l)"

      org_rpm="$(redis-cli -u "$REDIS_URL" --scan --pattern "${REDIS_PREFIX}org:*:rpm" | head -1)"
      [[ -n "$org_rpm" ]] || die "$name: no org rpm hash under $REDIS_PREFIX in Redis"
      org_rpm="$(redis-cli -u "$REDIS_URL" hvals "$org_rpm" | awk '{ s += $1 } END { print s + 0 }')"
      echo "$redis_keys $org_rpm" >"$TMP/$name.redis"
    fi
  fi
  stop_byok
  STOPS=$((STOPS + 1))
  local note=""
  if [[ -f "$TMP/$name.redis" ]]; then
    read -r redis_keys org_rpm <"$TMP/$name.redis"
    note="  (Redis: $redis_keys keys under the run's prefix; org rpm count in the window: $org_rpm)"
  fi
  local host_busy outside
  read -r host_busy outside <"$TMP/$name.host"
  printf '    %-7s %9.0f req/s  p50 %6.2f ms  p99 %6.2f ms  byok %5.0f us/req  host busy %3s%%, others %3s%%%s\n' "$config" \
    "$(jnum rps "$TMP/$name.json")" "$(jnum p50_ms "$TMP/$name.json")" "$(jnum p99_ms "$TMP/$name.json")" \
    "$(cat "$TMP/$name.cpu")" "$host_busy" "$outside" "$note" >&2
}

T0=$(date +%s)
for ((round = 1; round <= ROUNDS; round++)); do
  for ((k = 0; k < N_CONFIGS; k++)); do
    run_one "${CONFIG_LIST[$(((round - 1 + k) % N_CONFIGS))]}" "$round"
  done
done

# ---------------------------------------------------------------- SQL statements per call
# sqlx logs every statement it runs at debug level (target sqlx::query): count them over
# SQL_CALLS calls after a warm-up that fills byok's caches (token, org, credentials, key).
sql_count() {
  local config="$1" name="sql.$1"
  start_byok "$config" "$name" "info,sqlx::query=debug"
  log "SQL statements: $config — $SQL_CALLS calls, $SQL_CONCURRENCY at a time (after $SQL_WARMUP_CALLS warm-up calls)"
  "$LOADGEN" ttfb --url "$PROXY/openai/v1/chat/completions" -H "authorization: Bearer $TOKEN" --body "$CHAT_BODY" \
    --requests "$SQL_WARMUP_CALLS" --warmup-requests 0 --concurrency "$SQL_CONCURRENCY" >"$TMP/$name.warm.json" \
    || die "load generator failed ($name warm-up)"
  sleep 0.5
  local from to t0 t1
  from="$(wc -l <"$RUN_DIR/byok.err")"; t0="$(date +%s.%N)"
  "$LOADGEN" ttfb --url "$PROXY/openai/v1/chat/completions" -H "authorization: Bearer $TOKEN" --body "$CHAT_BODY" \
    --requests "$SQL_CALLS" --warmup-requests 0 --concurrency "$SQL_CONCURRENCY" >"$TMP/$name.json" \
    || die "load generator failed ($name)"
  sleep 0.2   # the last completions' commit
  to="$(wc -l <"$RUN_DIR/byok.err")"; t1="$(date +%s.%N)"
  local bad=$(($(jnum non_2xx_total "$TMP/$name.json") + $(jnum errors_total "$TMP/$name.json")))
  ((bad == 0)) || die "$bad requests failed in $name"
  # One line per statement: its verb and table (from sqlx's summary).
  sed -n "$((from + 1)),${to}p" "$RUN_DIR/byok.err" | grep ' sqlx::query: ' \
    | sed -n 's/.* db\.statement="\(.*\)" rows_affected=.*/\1/p' | sed 's/\\[nt]/ /g' \
    | awk '{ verb = toupper($1); table = "";
             for (i = 1; i < NF; i++) if (toupper($i) == "FROM" || toupper($i) == "INTO" || toupper($i) == "UPDATE") { table = $(i + 1); break }
             if (verb == "UPDATE") table = $2;
             gsub(/[^A-Za-z0-9_]/, "", table); print verb " " table }' \
    | sort | uniq -c | awk '{ print $2 " " $3 "\t" $1 }' >"$TMP/$name.counts"
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f\n", b - a }' >"$TMP/$name.secs"
  [[ -s "$TMP/$name.counts" ]] || die "no sqlx statement was logged in $name: does BYOK_LOG=sqlx::query=debug still log statements?"
  stop_byok
  STOPS=$((STOPS + 1))
}
for config in "${CONFIG_LIST[@]}"; do sql_count "$config"; done
ELAPSED=$(($(date +%s) - T0))

# ---------------------------------------------------------------- report
KEYS="rps p50_ms p99_ms cpu"
value() { # config round key
  if [[ "$3" == cpu ]]; then cat "$TMP/tp.$1.$2.cpu"; else jnum "$3" "$TMP/tp.$1.$2.json"; fi
}
declare -A M
for c in "${CONFIG_LIST[@]}"; do
  for key in $KEYS; do
    M[$c.$key]="$(for ((r = 1; r <= ROUNDS; r++)); do value "$c" "$r" "$key"; done | median)"
  done
  M[$c.rounds]="$(for ((r = 1; r <= ROUNDS; r++)); do value "$c" "$r" rps; done | awk '{ printf "%s%.0f", (NR > 1 ? " " : ""), $1 }')"
done
OTHERS="$(tr ' ' '\n' <<<"$CONFIGS" | grep -v '^none$' | paste -sd' ')"
ALL_STATEMENTS="$(cat "$TMP"/sql.*.counts | cut -f1 | sort -u)"
count_of() { awk -F'\t' -v s="$2" '$1 == s { print $2; f = 1 } END { if (!f) print 0 }' "$TMP/sql.$1.counts"; }
total_of() { awk -F'\t' -v v="$2" '(v == "" || index($1, v " ") == 1) { s += $2 } END { print s + 0 }' "$TMP/sql.$1.counts"; }
per_call() { awk -v n="$1" -v c="$SQL_CALLS" 'BEGIN { printf "%.3f", n / c }'; }

mkdir -p "$RESULTS_DIR"
{
  printf '{\n  "generated_at": "%s",\n  "host_cpus": %s,\n  "commit": "%s",\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(nproc)" \
    "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  printf '  "settings": {"rounds": %s, "connections": %s, "warmup_s": %s, "duration_s": %s, "configs": "%s", "limits": {"rpm": %s, "tpm": %s}, "redis_url": "%s", "sql_calls": %s, "sql_concurrency": %s},\n' \
    "$ROUNDS" "$CONNECTIONS" "$WARMUP" "$DURATION" "$CONFIGS" "$RPM" "$TPM" "$REDIS_URL" "$SQL_CALLS" "$SQL_CONCURRENCY"
  printf '  "shutdown": {"runs": %s, "sigkill_after_sigterm": %s, "wait_s": %s},\n' "$STOPS" "$KILLED" "$STOP_WAIT"
  printf '  "medians": {\n'
  first=1
  for c in "${CONFIG_LIST[@]}"; do
    ((first)) || printf ',\n'
    first=0
    printf '    "%s": {"rps": %s, "p50_ms": %s, "p99_ms": %s, "byok_cpu_us_per_request": %s, "rps_all_rounds": [%s]}' \
      "$c" "${M[$c.rps]}" "${M[$c.p50_ms]}" "${M[$c.p99_ms]}" "${M[$c.cpu]}" "$(tr ' ' ',' <<<"${M[$c.rounds]}")"
  done
  printf '\n  },\n  "over_none": {\n'
  first=1
  for c in $OTHERS; do
    ((first)) || printf ',\n'
    first=0
    printf '    "%s": {"rps": "%s", "p50_ms": "%s", "p99_ms": "%s", "byok_cpu_us_per_request": "%s"}' "$c" \
      "$(ratio "${M[$c.rps]}" "${M[none.rps]}")" "$(ratio "${M[$c.p50_ms]}" "${M[none.p50_ms]}")" \
      "$(ratio "${M[$c.p99_ms]}" "${M[none.p99_ms]}")" "$(ratio "${M[$c.cpu]}" "${M[none.cpu]}")"
  done
  printf '\n  },\n  "sql_statements": {\n'
  first=1
  for c in "${CONFIG_LIST[@]}"; do
    ((first)) || printf ',\n'
    first=0
    printf '    "%s": {"calls": %s, "window_s": %s, "total": %s, "select": %s, "by_statement": {%s}}' "$c" "$SQL_CALLS" \
      "$(cat "$TMP/sql.$c.secs")" "$(total_of "$c" "")" "$(total_of "$c" SELECT)" \
      "$(awk -F'\t' '{ printf "%s\"%s\": %s", (NR > 1 ? ", " : ""), $1, $2 }' "$TMP/sql.$c.counts")"
  done
  printf '\n  },\n  "runs": {\n'
  first=1
  for ((r = 1; r <= ROUNDS; r++)); do
    for c in "${CONFIG_LIST[@]}"; do
      ((first)) || printf ',\n'
      first=0
      read -r host_busy outside <"$TMP/tp.$c.$r.host"
      printf '    "%s.%s": {"throughput": %s, "byok_cpu_us_per_request": %s, "host_cpu_busy_pct": %s, "host_cpu_pct_used_by_other_processes": %s}' \
        "$c" "$r" "$(cat "$TMP/tp.$c.$r.json")" "$(cat "$TMP/tp.$c.$r.cpu")" "$host_busy" "$outside"
    done
  done
  printf '\n  }\n}\n'
} >"$RESULTS_DIR/limits.json"
if command -v jq >/dev/null; then jq . "$RESULTS_DIR/limits.json" >/dev/null || die "internal: limits.json is not valid JSON"; fi

echo
printf 'byok with and without rate limits — %s CPUs, %s connections, %ss measured (+%ss warm-up), %s rounds interleaved, medians over rounds\n' \
  "$(nproc)" "$CONNECTIONS" "$DURATION" "$WARMUP" "$ROUNDS"
printf '(limits: org, team and token rpm %s, tpm %s; redis: %s)\n' "$RPM" "$TPM" \
  "$([[ " $CONFIGS " == *" redis "* ]] && echo "$REDIS_URL, a key_prefix per run" || echo 'not run')"
printf '%-14s %9s %8s %8s %10s   %s\n' '' 'req/s' 'p50 ms' 'p99 ms' 'byok CPU' 'req/s of each round'
printf '%-14s %9s %8s %8s %10s\n' '' '' '' '' 'us/req'
for c in "${CONFIG_LIST[@]}"; do
  printf '%-14s %9.0f %8.2f %8.2f %10.0f   %s\n' "$c" "${M[$c.rps]}" "${M[$c.p50_ms]}" "${M[$c.p99_ms]}" "${M[$c.cpu]}" "${M[$c.rounds]}"
done
for c in $OTHERS; do
  printf '%-14s %9s %8s %8s %10s\n' "$c/none" "$(ratio "${M[$c.rps]}" "${M[none.rps]}")" \
    "$(ratio "${M[$c.p50_ms]}" "${M[none.p50_ms]}")" "$(ratio "${M[$c.p99_ms]}" "${M[none.p99_ms]}")" \
    "$(ratio "${M[$c.cpu]}" "${M[none.cpu]}")"
done
echo
printf 'SQL statements per call (sqlx statement log; %s calls, %s at a time, after %s warm-up calls; each column its own fresh byok)\n' \
  "$SQL_CALLS" "$SQL_CONCURRENCY" "$SQL_WARMUP_CALLS"
printf '%-34s' 'statement'
for c in "${CONFIG_LIST[@]}"; do printf ' %9s %8s' "$c" 'per call'; done
echo
while read -r statement; do
  [[ -z "$statement" ]] && continue
  printf '%-34s' "$statement"
  for c in "${CONFIG_LIST[@]}"; do n="$(count_of "$c" "$statement")"; printf ' %9s %8s' "$n" "$(per_call "$n")"; done
  echo
done <<<"$ALL_STATEMENTS"
printf '%-34s' 'all statements'
for c in "${CONFIG_LIST[@]}"; do n="$(total_of "$c" "")"; printf ' %9s %8s' "$n" "$(per_call "$n")"; done
echo
printf '%-34s' 'of which SELECT'
for c in "${CONFIG_LIST[@]}"; do n="$(total_of "$c" SELECT)"; printf ' %9s %8s' "$n" "$(per_call "$n")"; done
echo
printf '%-34s' 'window (s)'
for c in "${CONFIG_LIST[@]}"; do printf ' %9s %8s' "$(cat "$TMP/sql.$c.secs")" ''; done
echo
echo '(SELECTs in the window are byok'"'"'s periodic background reads — change feed, fleet heartbeat — and scale with the window, not with the calls.)'
NOISE_PCT="$(cat "$TMP"/tp.*.host | awk '$2 > m { m = $2 } END { print m + 0 }')"
if ((NOISE_PCT > 10)); then
  printf 'WARNING: up to %s%% of the host CPU went to processes outside the benchmark during a round: req/s and latency are noisy; compare byok CPU us/req, re-run on a quiet machine.\n' "$NOISE_PCT"
fi
if ((KILLED)); then
  printf 'WARNING: byok did not exit within %s s of SIGTERM in %s of %s runs (stopped with SIGKILL): graceful shutdown hangs.\n' \
    "$STOP_WAIT" "$KILLED" "$STOPS"
fi
printf 'load and counting took %s s; JSON: %s\n' "$ELAPSED" "${RESULTS_DIR#"$ROOT"/}/limits.json"
