#!/usr/bin/env bash
# byok fleet benchmark: change propagation between sidecars, and per-org cache invalidation.
#
# Two measurements, in one invocation (both are ignored tests of crates/proxy/tests/propagation.rs,
# real sidecars in-process on one database, the mock provider as upstream):
#
#   isolation    org A's call latency (p50/p99, sequential calls) and store reads of A's token
#                or snapshot per 1000 calls: with no changes (the baseline), with a steady
#                stream of changes in other orgs through the same node and through another
#                node, with the same stream in A itself (for contrast: what every org paid for
#                any change anywhere while invalidation was global), and the baseline again.
#   propagation  3 sidecars on one PostgreSQL: N workload-token revocations through one node;
#                for each, the time from the revocation's commit until each other node refuses
#                the token (p50/p99/max over 2N observations).
#
# Usage: BYOK_TEST_POSTGRES_URL=postgres://user@host:5432/postgres bench/fleet/run.sh
#        (without it, isolation runs on SQLite — one node — and propagation is skipped)
# Knobs (env): BENCH_DURATION (5 s per isolation scenario), BENCH_CHANGE_RATE (20 changes/s),
#   BENCH_OTHER_ORGS (100), BENCH_PROPAGATION_CHANGES (100), BENCH_POLL_MS (250: the fallback
#   poll; propagation within it comes from notifications), BENCH_PROFILE (dev | release).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
profile=()
if [[ "${BENCH_PROFILE:-dev}" == release ]]; then
  profile=(--release)
fi
exec cargo test "${profile[@]}" -p byok-proxy --test propagation -- \
  --ignored --nocapture --test-threads 1 bench_fleet_
