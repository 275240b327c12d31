# shellcheck shell=bash
# A `byok serve` for scripts that test the admin API: sourced, it defines
#
#   admin_server_start WORK [more `byok serve` options]
#       Builds byok unless BYOK_BIN names one (`cargo build -p byok`, then
#       target/debug/byok), starts `byok serve` on the embedded defaults (SQLite, local
#       keyring) with its data in WORK/data and its log in WORK/serve.log, on two free
#       loopback ports, and waits until GET /readyz answers. Then sets
#         admin   the admin API's base URL (also exported as BYOK_ADMIN_URL, which the
#                 `byok` CLI reads)
#         proxy   the data plane's base URL (also exported as BYOK_PROXY_URL)
#         data    the data directory
#         server  the server's process id
#       and exports BYOK_OPERATOR_TOKEN (read from WORK/data/operator.token).
#       Returns non-zero (after printing the server's log) if it exits or is not ready
#       within 20 s.
#   admin_server_bin
#       Only the build step above (sets BYOK_BIN): to build before slower set-up.
#   admin_server_stop
#       Stops that server and waits for it (a no-op when none runs); call it from the
#       script's EXIT trap, before removing WORK.
#
#   source scripts/lib/admin-server.sh
#   work=$(mktemp -d)
#   trap 'admin_server_stop; rm -rf "$work"' EXIT
#   admin_server_start "$work"
#
# BYOK_BIN: a built `byok` (default: `cargo build -p byok`, then target/debug/byok).
# BYOK_LOG: the server's log filter (default: warn). The server inherits the rest of the
# environment (e.g. BYOK_UPSTREAM_<PROVIDER>).

_admin_server_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
server=${server:-}

_admin_server_log() { printf '\n=== %s\n' "$*"; }

# Sets BYOK_BIN, building byok if it is not set yet.
admin_server_bin() {
  if [ -z "${BYOK_BIN:-}" ]; then
    _admin_server_log "cargo build -p byok"
    (cd "$_admin_server_root" && cargo build --quiet -p byok) || return 1
    BYOK_BIN="$_admin_server_root/target/debug/byok"
  fi
}

admin_server_start() {
  local work=${1:?admin_server_start: a work directory}
  shift
  admin_server_bin || return 1
  mkdir -p "$work" || return 1

  # Two free loopback ports (the kernel picks them; the race until byok binds is harmless).
  local admin_port proxy_port
  read -r admin_port proxy_port < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
') || return 1
  admin="http://127.0.0.1:$admin_port"
  proxy="http://127.0.0.1:$proxy_port"
  data="$work/data"

  _admin_server_log "byok serve (admin API on $admin, proxy on $proxy)"
  BYOK_LOG=${BYOK_LOG:-warn} "$BYOK_BIN" serve --data-dir "$data" \
    --admin-addr "127.0.0.1:$admin_port" --proxy-addr "127.0.0.1:$proxy_port" "$@" \
    2>"$work/serve.log" &
  server=$!
  local _
  for _ in $(seq 1 100); do
    curl -fs "$admin/readyz" >/dev/null 2>&1 && break
    if ! kill -0 "$server" 2>/dev/null; then
      cat "$work/serve.log" >&2
      echo "byok serve exited" >&2
      wait "$server" 2>/dev/null || true
      server=""
      return 1
    fi
    sleep 0.2
  done
  if ! curl -fs "$admin/readyz" >/dev/null; then
    cat "$work/serve.log" >&2
    echo "byok serve did not become ready" >&2
    return 1
  fi
  BYOK_OPERATOR_TOKEN=$(cat "$data/operator.token") || return 1
  export BYOK_OPERATOR_TOKEN
  export BYOK_ADMIN_URL="$admin" BYOK_PROXY_URL="$proxy"
}

admin_server_stop() {
  if [ -n "${server:-}" ]; then
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    server=""
  fi
}
