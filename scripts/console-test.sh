#!/usr/bin/env bash
# The web console (/ui on the admin listener) in a real browser: starts the mock provider
# and `byok serve` on free loopback ports with a throwaway data directory
# (scripts/lib/admin-server.sh), does what README's "Five minutes with byok" does (an org,
# a team, a credential read from stdin, a workload token, one call through the data
# plane with curl), adds two calls the credential's scope refuses whose model is hostile
# markup, checks the API refuses a credential named with markup, then drives Chromium
# with Playwright through e2e/console/console_test.py: sign in with the operator token,
# the org, the credential (state, version, fingerprint, the `created` event and the call
# in its timeline, paged, the audit chain verified), the usage statement, a hostile name
# shown as text, an org-admin token landing on its org; the provider key never on a page.
# Saves a screenshot of the credential page. Exits non-zero on any failure; the last line
# says `console-test: OK`.
#
#   scripts/console-test.sh
#
# BYOK_BIN, BYOK_MOCK_BIN: built `byok` and `byok-mock-provider` (default: both built
#   with `cargo build -p byok -p byok-mock-provider`, from target/debug).
# CONSOLE_TEST_PYTHON: a Python that has playwright (default: playwright from PyPI in a
#   temporary venv). Playwright's own browser download is not used.
# CHROMIUM: the browser (default /usr/bin/chromium; Debian: apt-get install chromium).
# CONSOLE_SCREENSHOT: where the screenshot goes (default target/console/credential.png).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work=$(mktemp -d)
# shellcheck source=scripts/lib/admin-server.sh
source scripts/lib/admin-server.sh
mock=""
cleanup() {
  admin_server_stop
  if [ -n "$mock" ]; then
    kill "$mock" 2>/dev/null || true
    wait "$mock" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

log() { printf '\n=== %s\n' "$*"; }
die() {
  echo "console-test: $*" >&2
  exit 1
}

chromium=${CHROMIUM:-/usr/bin/chromium}
[ -x "$chromium" ] || die "no browser at $chromium (Debian: apt-get install -y chromium; or set CHROMIUM)"
screenshot=${CONSOLE_SCREENSHOT:-$root/target/console/credential.png}

if [ -z "${BYOK_BIN:-}" ] || [ -z "${BYOK_MOCK_BIN:-}" ]; then
  log "cargo build -p byok -p byok-mock-provider"
  cargo build --quiet -p byok -p byok-mock-provider
fi
BYOK_BIN=${BYOK_BIN:-$root/target/debug/byok}
BYOK_MOCK_BIN=${BYOK_MOCK_BIN:-$root/target/debug/byok-mock-provider}

if [ -n "${CONSOLE_TEST_PYTHON:-}" ]; then
  python=$CONSOLE_TEST_PYTHON
else
  log "installing playwright from PyPI"
  python3 -m venv "$work/venv"
  "$work/venv/bin/pip" install -q --disable-pip-version-check playwright
  python="$work/venv/bin/python"
fi
"$python" -c 'from importlib.metadata import version; print("playwright", version("playwright"))' ||
  die "$python has no playwright (pip install playwright)"

# --- the mock provider and byok ------------------------------------------------------
provider_key=sk-console-0123456789abcdef
log "byok-mock-provider"
"$BYOK_MOCK_BIN" --listen 127.0.0.1:0 --openai-key "$provider_key" >"$work/mock.out" 2>"$work/mock.log" &
mock=$!
for _ in $(seq 1 100); do
  grep -q '^listening on ' "$work/mock.out" 2>/dev/null && break
  kill -0 "$mock" 2>/dev/null || die "the mock provider exited: $(cat "$work/mock.log")"
  sleep 0.1
done
mock_addr=$(sed -n 's/^listening on //p' "$work/mock.out" | head -n 1)
[ -n "$mock_addr" ] || die "the mock provider did not say where it listens"
echo "mock provider on $mock_addr"

export BYOK_UPSTREAM_OPENAI="http://$mock_addr"
admin_server_start "$work"
# The CLI finds the operator token in the data directory, as on the sidecar's own host.
export BYOK_DATA_DIR="$data"

# --- README's five minutes -----------------------------------------------------------
log "an org, a team, a credential, a workload token"
"$BYOK_BIN" org create acme --tier katman-b >/dev/null
"$BYOK_BIN" team create --org acme agents >/dev/null
printf '%s\n' "$provider_key" | "$BYOK_BIN" credential add --org acme --name prod-openai \
  --provider openai --team agents --model-family gpt-4o-mini >/dev/null
workload=$("$BYOK_BIN" token create --org acme --team agents 2>/dev/null)
org_admin=$("$BYOK_BIN" org admin-token acme 2>/dev/null)
fingerprint=$(curl -fsS "$admin/v1/orgs/acme/credentials/prod-openai" -H "Authorization: Bearer $BYOK_OPERATOR_TOKEN" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["fingerprint"])')
echo "prod-openai: $fingerprint"

chat() {
  curl -sS -D "$work/call.headers" -o "$work/call.json" -w '%{http_code}' \
    "$proxy/openai/v1/chat/completions" -H "Authorization: Bearer $workload" \
    -H 'content-type: application/json' -d "$1"
}
log "one call through the data plane"
status=$(chat '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}')
[ "$status" = 200 ] || die "the call answered $status: $(cat "$work/call.json")"
call_id=$(sed -n 's/^x-byok-call-id: *//Ip' "$work/call.headers" | tr -d '\r' | head -n 1)
[ -n "$call_id" ] || die "no x-byok-call-id on the call's answer"
echo "call $call_id: $(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["choices"][0]["message"]["content"])' "$work/call.json")"

# Markup where the API lets a caller put free text: a model name. Refused by the scope,
# audited, and so in the credential's timeline.
hostile='<img src=x onerror="__pwned=1"><script>__pwned=2</script>'
json() { python3 -c 'import json, sys; print(json.dumps(json.loads(sys.argv[1]) | {sys.argv[2]: sys.argv[3]}))' "$@"; }
log "two refused calls with markup for a model"
for suffix in "" "-again"; do
  status=$(chat "$(json '{"messages":[{"role":"user","content":"hello"}]}' model "gpt-4o-mini$hostile$suffix")")
  [ "$status" = 403 ] || die "a call for a hostile model answered $status: $(cat "$work/call.json")"
done
echo "refused: $(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["error"]["code"])' "$work/call.json")"

log "the API refuses a credential named with markup"
status=$(curl -sS -o "$work/refused.json" -w '%{http_code}' -X POST "$admin/v1/orgs/acme/credentials" \
  -H "Authorization: Bearer $BYOK_OPERATOR_TOKEN" -H 'content-type: application/json' \
  -d "$(json '{"provider":"openai","secret":"sk-console-other-0123456789"}' name "$hostile")")
[ "$status" = 400 ] || die "a credential named with markup answered $status: $(cat "$work/refused.json")"
cat "$work/refused.json"
echo

# --- the browser -----------------------------------------------------------------------
log "Chromium: e2e/console/console_test.py"
CONSOLE_ORG_ADMIN_TOKEN="$org_admin" CONSOLE_ORG=acme CONSOLE_CREDENTIAL=prod-openai \
  CONSOLE_FINGERPRINT="$fingerprint" CONSOLE_CALL_ID="$call_id" CONSOLE_HOSTILE="$hostile" \
  CONSOLE_SECRETS="$provider_key" CONSOLE_SCREENSHOT="$screenshot" CHROMIUM="$chromium" \
  "$python" e2e/console/console_test.py

if grep -q -- "$provider_key" "$work/serve.log"; then
  die "the provider key is in byok's log"
fi
if grep -q 'panicked' "$work/serve.log"; then
  grep -A5 'panicked' "$work/serve.log" >&2
  die "byok serve panicked"
fi
echo "console-test: OK (screenshot: ${screenshot#"$root"/})"
