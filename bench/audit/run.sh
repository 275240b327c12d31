#!/usr/bin/env bash
# byok audit benchmark: durable audit rows per second under load (group commit vs one
# transaction per row), replay/verify of a credential with 10^6 calls, and statements of
# an org with 10^6 metered calls (usage rollup vs raw audit rows; the rollup's append cost).
#
# Usage: bench/audit/run.sh [options passed to the example]
#   bench/audit/run.sh                          # SQLite, full run (~5 min after the build)
#   BYOK_BENCH_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres bench/audit/run.sh
#                                               # SQLite, then PostgreSQL (fresh databases, dropped after)
#   bench/audit/run.sh --parts append --seconds 5 --clients 16
#   bench/audit/run.sh --parts replay --calls 100000 --backends postgres
#   bench/audit/run.sh --parts statement
# Options: --clients N (32) --seconds S (10) --warmup S (2) --calls N (1000000)
#          --fill-batch N (20000) --repeats N (5) --parts append,replay,statement
#          --backends sqlite,postgres
# Results go to stdout; progress to stderr. See bench/audit/README.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
exec cargo run --release --quiet -p byok-server --example audit_bench -- "$@"
