#!/usr/bin/env bash
# Schemathesis against the admin API's own OpenAPI document (/v1/openapi.json): starts
# `byok serve` on the embedded defaults (SQLite, local keyring) in a throwaway data
# directory, creates an org with a team, a workflow and a credential so that calls reach
# past the 404s, and runs every operation with the operator token. Exits non-zero when
# any answer is a 5xx or breaks another check below.
#
#   scripts/schemathesis.sh [more `st run` options, e.g. --max-time 600]
#
# BYOK_BIN: a built `byok` (default: `cargo build -p byok`, then target/debug/byok).
# SCHEMATHESIS: an `st` executable (default: schemathesis from PyPI in a temporary venv).
# SCHEMATHESIS_MAX_EXAMPLES: examples per operation and phase (default 30).
# SCHEMATHESIS_SEED: the generator's seed (fixed by default, so a run can be repeated).
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
server=""
cleanup() {
  if [ -n "$server" ]; then
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

log() { printf '\n=== %s\n' "$*"; }

if [ -z "${BYOK_BIN:-}" ]; then
  log "cargo build -p byok"
  cargo build --quiet -p byok
  BYOK_BIN=target/debug/byok
fi
if [ -z "${SCHEMATHESIS:-}" ]; then
  log "installing schemathesis from PyPI"
  python3 -m venv "$work/venv"
  "$work/venv/bin/pip" install -q --disable-pip-version-check schemathesis
  SCHEMATHESIS="$work/venv/bin/st"
fi

# Two free loopback ports (the kernel picks them; the race until byok binds is harmless).
read -r admin_port proxy_port < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
')
admin="http://127.0.0.1:$admin_port"
data="$work/data"

log "byok serve (admin API on $admin)"
BYOK_LOG=${BYOK_LOG:-warn} "$BYOK_BIN" serve --data-dir "$data" \
  --admin-addr "127.0.0.1:$admin_port" --proxy-addr "127.0.0.1:$proxy_port" 2>"$work/serve.log" &
server=$!
for _ in $(seq 1 100); do
  curl -fs "$admin/readyz" >/dev/null 2>&1 && break
  kill -0 "$server" 2>/dev/null || { cat "$work/serve.log"; echo "byok serve exited" >&2; exit 1; }
  sleep 0.2
done
curl -fs "$admin/readyz" >/dev/null || { cat "$work/serve.log"; echo "byok serve did not become ready" >&2; exit 1; }
export BYOK_OPERATOR_TOKEN
BYOK_OPERATOR_TOKEN=$(cat "$data/operator.token")

# Something for `{org}` and `{cred}` to name.
api() {
  local status
  status=$(curl -s -o "$work/answer" -w '%{http_code}' -X "$1" "$admin$2" \
    -H "Authorization: Bearer $BYOK_OPERATOR_TOKEN" -H 'content-type: application/json' -d "$3")
  case "$status" in
    2??) ;;
    *) echo "setup $1 $2: $status $(cat "$work/answer")" >&2; exit 1 ;;
  esac
}
# katman-c, so that its rate card and controls can be set too.
api POST /v1/orgs '{"name":"acme","tier":"katman-c"}'
api POST /v1/orgs/acme/teams '{"name":"agents"}'
api POST /v1/orgs/acme/workflows '{"name":"triage","team":"agents"}'
api POST /v1/orgs/acme/credentials '{"name":"prod","provider":"openai","secret":"sk-schemathesis-0123456789abcdef",
  "scope":{"teams":["agents"]},"expires_at":"2099-01-01T00:00:00Z"}'
api POST /v1/platform/credentials '{"name":"prod","provider":"openai","secret":"sk-platform-0123456789abcdef"}'
api POST /v1/orgs/acme/tokens '{"team":"agents"}'
api POST /v1/orgs/acme/admin-tokens '{}'
org_admin_token=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["token"])' "$work/answer")

# Path parameters name what exists (random ones only ever meet 404); deleting the org is
# left out so that it exists to the end (its own tests cover crypto-shredding).
cat >"$work/schemathesis.toml" <<EOF
[parameters]
"path.org" = "acme"
"path.cred" = "prod"

[generation]
max-examples = ${SCHEMATHESIS_MAX_EXAMPLES:-30}
EOF

run_schemathesis() {
  local who=$1 token=$2
  shift 2
  log "schemathesis run $admin/v1/openapi.json, as the $who"
  # From the scratch directory: schemathesis and hypothesis keep caches in the current one.
  (cd "$work" && "$SCHEMATHESIS" --config-file "$work/schemathesis.toml" run "$admin/v1/openapi.json" \
    --header "Authorization: Bearer $token" \
    --checks all --exclude-checks positive_data_acceptance,use_after_free \
    --exclude-operation-id delete_org \
    --workers 1 --request-timeout 30 --seed "${SCHEMATHESIS_SEED:-20261205}" \
    --suppress-health-check too_slow,filter_too_much \
    ${SCHEMATHESIS_REPORT:+--report har --report-dir "$SCHEMATHESIS_REPORT/$who"} "$@")
}

# Every check but two whose premise does not hold here:
# * positive_data_acceptance: a body can match the schema and still be refused with 400,
#   because byok checks what a schema cannot say (that a named team or workflow exists,
#   that an expiry is in the future, that a checkpoint is this org's, a page cursor);
# * use_after_free: DELETE on an org's budget, controls or rate card puts the setting
#   back to its default, which GET then shows (200), rather than removing a resource.
# First as an org admin of acme (operator-only calls must be refused, not fail), then as
# the operator. Schemathesis reuses ids from answers: the org admin would revoke its own
# token, so that call is left to the operator's run.
status=0
run_schemathesis "org admin of acme" "$org_admin_token" --phases examples,coverage,fuzzing \
  --exclude-operation-id revoke_admin_token "$@" || status=$?
run_schemathesis "operator" "$BYOK_OPERATOR_TOKEN" "$@" || status=$?

if grep -q 'panicked' "$work/serve.log"; then
  log "byok serve panicked"
  grep -A5 'panicked' "$work/serve.log" >&2
  status=1
fi
exit "$status"
