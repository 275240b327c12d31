#!/usr/bin/env bash
# Start a local KMS-compatible server (moto's moto_server) for byok's aws-kms tests.
#
# Usage: scripts/moto-server.sh <dir>
#
# Uses moto_server from PATH, or installs moto[server] into a virtualenv under <dir>
# (python3 and its venv module are needed, and PyPI). Starts it in the background on a
# free loopback port (log: <dir>/moto.log), waits until it answers, and prints `export`
# lines for the test suite:
#
#   eval "$(scripts/moto-server.sh "$(mktemp -d)")"
#   cargo test -p byok-kms-aws
#   kill "$BYOK_MOTO_PID"
#
# The credentials printed are moto's dummy ones: moto accepts any.
set -euo pipefail

die() {
    echo "moto-server.sh: $*" >&2
    exit 1
}

[ $# -eq 1 ] || die "usage: $0 <dir>"

mkdir -p "$1"
dir=$(cd "$1" && pwd)

command -v python3 >/dev/null 2>&1 || die "python3 is not installed (apt-get install python3 python3-venv)"

if command -v moto_server >/dev/null 2>&1; then
    moto=$(command -v moto_server)
elif [ -x "$dir/venv/bin/moto_server" ]; then
    moto="$dir/venv/bin/moto_server"
else
    python3 -m venv "$dir/venv" >&2 \
        || die "cannot create a virtualenv in $dir/venv (apt-get install python3-venv)"
    "$dir/venv/bin/pip" install -q --disable-pip-version-check 'moto[server]>=5,<6' >&2 \
        || die "cannot install moto[server] from PyPI into $dir/venv"
    moto="$dir/venv/bin/moto_server"
fi

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
endpoint="http://127.0.0.1:$port"

# Detached from this script's output, so that `eval "$(…)"` does not wait for it.
"$moto" -H 127.0.0.1 -p "$port" </dev/null >"$dir/moto.log" 2>&1 &
pid=$!

answers() {
    python3 - "$endpoint" <<'PY' >/dev/null 2>&1
import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(sys.argv[1] + "/moto-api/", timeout=1)
except urllib.error.HTTPError:
    pass  # an HTTP answer of any status: the server is up
PY
}

for _ in $(seq 1 120); do
    if answers; then
        break
    fi
    kill -0 "$pid" 2>/dev/null || die "moto_server exited at once; see $dir/moto.log"
    sleep 0.5
done
answers || {
    kill "$pid" 2>/dev/null || true
    die "moto_server did not answer on $endpoint within 60 s; see $dir/moto.log"
}

# Single-quote a value for the shell (a ' becomes '\'').
quote() {
    printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"
}

echo "export MOTO_ENDPOINT=$(quote "$endpoint")"
echo "export BYOK_MOTO_SERVER=$(quote "$moto")"
echo "export BYOK_MOTO_PID=$(quote "$pid")"
echo "export AWS_ACCESS_KEY_ID='testing'"
echo "export AWS_SECRET_ACCESS_KEY='testing'"
echo "export AWS_DEFAULT_REGION='us-east-1'"
echo "export AWS_EC2_METADATA_DISABLED='true'"
