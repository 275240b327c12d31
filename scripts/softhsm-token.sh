#!/usr/bin/env bash
# Create a throwaway SoftHSM2 token for byok's pkcs11 KMS tests.
#
# Usage: scripts/softhsm-token.sh <dir>
#
# Writes <dir>/softhsm2.conf (token directory <dir>/tokens), initializes a token labelled
# `byok-test` with random SO and user PINs, stores the user PIN in <dir>/user.pin (mode
# 0600) and prints `export` lines for the test suite:
#
#   eval "$(scripts/softhsm-token.sh "$(mktemp -d)")"
#   cargo test -p byok-kms-pkcs11
#
# Needs only the softhsm2 package (no network). The SO PIN is not kept: nobody needs it
# for a throwaway token.
set -euo pipefail

die() {
    echo "softhsm-token.sh: $*" >&2
    exit 1
}

[ $# -eq 1 ] || die "usage: $0 <dir>"

command -v softhsm2-util >/dev/null 2>&1 \
    || die "softhsm2-util is not installed; install SoftHSM2 with: apt-get install softhsm2"

find_module() {
    local candidate
    for candidate in \
        "${SOFTHSM2_MODULE:-}" \
        /usr/lib/softhsm/libsofthsm2.so \
        /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so \
        /usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so \
        /usr/local/lib/softhsm/libsofthsm2.so \
        /usr/lib64/pkcs11/libsofthsm2.so \
        /usr/lib/pkcs11/libsofthsm2.so; do
        if [ -n "$candidate" ] && [ -f "$candidate" ]; then
            echo "$candidate"
            return 0
        fi
    done
    if command -v dpkg >/dev/null 2>&1; then
        candidate=$(dpkg -L softhsm2 libsofthsm2 2>/dev/null | grep '/libsofthsm2\.so$' | head -n 1 || true)
        if [ -n "$candidate" ] && [ -f "$candidate" ]; then
            echo "$candidate"
            return 0
        fi
    fi
    return 1
}

module=$(find_module) || die "cannot find libsofthsm2.so (set SOFTHSM2_MODULE to its path)"

mkdir -p "$1"
dir=$(cd "$1" && pwd)
mkdir -p "$dir/tokens"
chmod 0700 "$dir" "$dir/tokens"

conf="$dir/softhsm2.conf"
cat >"$conf" <<CONF
# Throwaway SoftHSM2 configuration written by scripts/softhsm-token.sh.
directories.tokendir = $dir/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
CONF

random_pin() {
    od -An -N16 -tx1 /dev/urandom | tr -d ' \n'
}

so_pin=$(random_pin)
user_pin=$(random_pin)
label=byok-test

SOFTHSM2_CONF="$conf" softhsm2-util --init-token --free --label "$label" \
    --so-pin "$so_pin" --pin "$user_pin" >/dev/null \
    || die "softhsm2-util could not initialize the token in $dir/tokens"

(
    umask 077
    printf '%s\n' "$user_pin" >"$dir/user.pin"
)
chmod 0600 "$dir/user.pin"

# Single-quote a value for the shell (a ' becomes '\'').
quote() {
    printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"
}

echo "export SOFTHSM2_CONF=$(quote "$conf")"
echo "export BYOK_TEST_PKCS11_MODULE=$(quote "$module")"
echo "export BYOK_TEST_PKCS11_TOKEN=$(quote "$label")"
echo "export BYOK_TEST_PKCS11_PIN_FILE=$(quote "$dir/user.pin")"
