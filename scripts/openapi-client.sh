#!/usr/bin/env bash
# Checks that a Python client generated from the admin API's own OpenAPI document
# (/v1/openapi.json) works, and that the document passes an OpenAPI validator: starts
# `byok serve` on the embedded defaults in a throwaway data directory
# (scripts/lib/admin-server.sh), downloads the document, validates it with
# openapi-spec-validator, generates a client with openapi-python-client (failing on any
# warning, e.g. an endpoint it cannot generate, and if any operationId has no module),
# then drives org -> team -> credential -> token -> a refused data-plane call -> audit ->
# lifecycle with it (scripts/openapi_client_drive.py) and checks that the server's log
# never holds the credential's secret. Exits non-zero on any failure; the last line says
# `generated client: OK (N operations driven)`. Needs python3 (3.11 or later) with venv,
# and curl.
#
#   scripts/openapi-client.sh
#
# BYOK_BIN: a built `byok` (default: `cargo build -p byok`, then target/debug/byok).
# OPENAPI_CLIENT_VENV: a venv that already has openapi-spec-validator and
#   openapi-python-client (default: both from PyPI in a temporary venv).
# OPENAPI_CLIENT_KEEP: a directory to copy the document and the generated client into.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
# shellcheck source=scripts/lib/admin-server.sh
source scripts/lib/admin-server.sh
cleanup() {
  admin_server_stop
  rm -rf "$work"
}
trap cleanup EXIT

log() { printf '\n=== %s\n' "$*"; }
die() {
  echo "openapi-client: $*" >&2
  exit 1
}

admin_server_bin
if [ -n "${OPENAPI_CLIENT_VENV:-}" ]; then
  venv=$OPENAPI_CLIENT_VENV
else
  log "installing openapi-spec-validator and openapi-python-client from PyPI"
  venv="$work/venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check openapi-spec-validator openapi-python-client
fi
"$venv/bin/python" - <<'EOF'
from importlib.metadata import version
for name in ("openapi-spec-validator", "openapi-python-client"):
    print(f"{name} {version(name)}")
EOF

# No provider is reached: the one data-plane call is refused by scope before any upstream,
# and should one get through, the discard port on loopback is all it would find.
export BYOK_UPSTREAM_OPENAI=http://127.0.0.1:9
# Debug logging, so that the check at the end that the secret is not in the log means more.
BYOK_LOG=${BYOK_LOG:-debug} admin_server_start "$work"

log "GET $admin/v1/openapi.json"
doc="$work/openapi.json"
curl -fsS -o "$doc" "$admin/v1/openapi.json" || die "could not download the document"

log "openapi-spec-validator"
# Its own command prints the whole document with an unresolvable $ref: this says where.
# Validation and generation both run, so that one run reports every problem.
problems=()
"$venv/bin/python" - "$doc" <<'EOF' || problems+=("openapi-spec-validator: the document does not validate")
import json, sys
from importlib.metadata import version
from openapi_spec_validator import OpenAPIV31SpecValidator

doc = json.load(open(sys.argv[1]))
problems = []

def points_to(pointer):
    node = doc
    for part in pointer.split("/")[1:]:
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    return True

def walk(node, where):
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#") and not points_to(ref[1:]):
            problems.append(f"{' > '.join(where)}: $ref {ref} points to nothing")
        for key, value in node.items():
            walk(value, where + [key])
    elif isinstance(node, list):
        for i, value in enumerate(node):
            walk(value, where + [str(i)])

walk(doc, ["#"])
try:
    for err in OpenAPIV31SpecValidator(doc).iter_errors():
        where = getattr(err, "json_path", "") or "/".join(map(str, getattr(err, "path", [])))
        problems.append(f"{where}: {err.message[:1000]}")
except Exception as err:  # an unresolvable $ref ends the validation
    problems.append(f"validation stopped: {type(err).__name__}: {str(err).split(' within {')[0][:1000]}")
verdict = "OK" if not problems else f"{len(problems)} problem(s)"
print(f"openapi-spec-validator {version('openapi-spec-validator')} (OpenAPI {doc.get('openapi')}, "
      f"{len(doc.get('paths', {}))} paths, {len(doc.get('components', {}).get('schemas', {}))} schemas): {verdict}")
for problem in problems:
    print(f"  {problem}")
sys.exit(1 if problems else 0)
EOF

log "openapi-python-client generate"
mkdir "$work/client"
# ruff (a dependency of openapi-python-client) formats the output: its post-hooks need it
# on PATH. --fail-on-warning: an endpoint or schema it could not generate fails the run.
# The audit export answers JSON Lines (application/x-ndjson), which the generator does not
# know: it is read as text, one JSON value per line.
cat >"$work/generate.yaml" <<'EOF'
content_type_overrides:
  application/x-ndjson: text/plain
EOF
gen_status=0
(cd "$work/client" && PATH="$venv/bin:$PATH" "$venv/bin/openapi-python-client" generate \
  --path "$doc" --meta none --config "$work/generate.yaml" --output-path "$work/client/byok_admin_client" \
  --fail-on-warning) \
  >"$work/generate.log" 2>&1 || gen_status=$?
cat "$work/generate.log"
if [ "$gen_status" -ne 0 ]; then
  problems+=("openapi-python-client: exit $gen_status (its warnings above)")
# Should a version warn yet exit 0: its warnings, skipped endpoints and skipped post-hooks.
elif grep -Eq 'Warning\(s\) encountered|Error\(s\) encountered|Unable to|WARNING|will not be generated|Skipping' \
  "$work/generate.log"; then
  problems+=("openapi-python-client: reported problems with the document (above)")
fi
# Every operation in the document has its module: <package>.api.<tag>.<operationId>.
"$venv/bin/python" - "$doc" "$work/client/byok_admin_client" <<'EOF' ||
import json, pathlib, re, sys
doc = json.load(open(sys.argv[1]))
package = pathlib.Path(sys.argv[2])
def module(name):
    # openapi-python-client's snake case of an operationId or a tag.
    return re.sub(r"[^a-z0-9]+", "_", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()).strip("_")
missing, count = [], 0
for path, item in doc["paths"].items():
    for method, op in item.items():
        if not isinstance(op, dict) or "operationId" not in op:
            continue
        count += 1
        tag = (op.get("tags") or ["default"])[0]
        if not (package / "api" / module(tag) / f"{module(op['operationId'])}.py").is_file():
            missing.append(f"{method.upper()} {path} ({op['operationId']})")
for m in missing:
    print(f"not generated: {m}", file=sys.stderr)
print(f"{count} operations in the document, {count - len(missing)} generated")
sys.exit(1 if missing else 0)
EOF
  problems+=("openapi-python-client: operations missing from the generated client")
if [ -n "${OPENAPI_CLIENT_KEEP:-}" ]; then
  mkdir -p "$OPENAPI_CLIENT_KEEP"
  cp -r "$doc" "$work/client/." "$OPENAPI_CLIENT_KEEP/"
fi
if ((${#problems[@]})); then
  printf 'openapi-client: %s\n' "${problems[@]}" >&2
  exit 1
fi

log "driving the admin API with the generated client"
mkdir -m 700 "$work/scratch"
out="$work/drive.out"
PYTHONPATH="$work/client${PYTHONPATH:+:$PYTHONPATH}" "$venv/bin/python" scripts/openapi_client_drive.py \
  --admin-url "$admin" --proxy-url "$proxy" --operator-token-file "$data/operator.token" \
  --scratch "$work/scratch" | tee "$out" || {
  echo "--- byok serve log" >&2
  cat "$work/serve.log" >&2
  die "the generated client's run failed"
}
# The secret (the driver wrote it to the scratch directory) is not in the server's log.
if grep -qF -- "$(cat "$work/scratch/openai.key")" "$work/serve.log"; then
  die "the server's log contains the credential's secret"
fi
driven=$(sed -n 's/^operations driven: \([0-9][0-9]*\).*/\1/p' "$out")
[ -n "$driven" ] || die "the driver did not report what it drove"
echo "generated client: OK ($driven operations driven)"
