#!/usr/bin/env bash
# byok audit at scale on PostgreSQL: the figures behind docs/capacity.md.
#
# Loads BENCH_ENTRIES synthetic, hash-chained audit entries (default 1 000 000: 500 000
# calls, each a resolution row and its completion) through the store into a fresh
# database with the audit tables partitioned by month, then reports bytes per row (table
# and each index), WAL per entry, the single-writer append rate, verify rate, January
# dropped whole against February removed row by row (and a live writer's slowest append
# during each), the archive's JSON Lines size and its gzip/zstd compression, and how fast
# migration 0010 converts plain tables.
#
# Usage: bench/audit/partitions.sh
#   BENCH_ENTRIES=4000000 bench/audit/partitions.sh      # a bigger run
#   BENCH_BATCH=64 bench/audit/partitions.sh             # group-commit-sized transactions
# Environment: BYOK_BENCH_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/postgres;
#   a fresh database is created there and dropped afterwards), BENCH_ENTRIES, BENCH_BATCH
#   (1024: the audit writer's largest transaction), BENCH_ORGS (50), BENCH_SEGMENTS (8
#   writer segments), BENCH_MIGRATION_ROWS (100000 rows per table; 0 skips that part).
# Needs psql, gzip and zstd. Output: one "key value" line per figure on stdout, progress on
# stderr. The default run takes about two minutes after the build on a 2-core machine.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
URL="${BYOK_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
MIGRATION_ROWS="${BENCH_MIGRATION_ROWS:-100000}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

cargo build --release --quiet -p byok-store --example audit_partitions
mkdir -p "$WORK/archive"
BYOK_TEST_POSTGRES_URL="$URL" BENCH_ARCHIVE_DIR="$WORK/archive" \
    "$ROOT/target/release/examples/audit_partitions"

# The archive: each org's January as JSON Lines, compressed as it would be uploaded.
pack() { # key, files…: compressed size, ratio and speed of the files with "$TOOL"
    local key=$1; shift
    local raw packed start end
    raw=$(cat "$@" | wc -c)
    start=$(date +%s.%N)
    packed=$(cat "$@" | $TOOL -c | wc -c)
    end=$(date +%s.%N)
    echo "$key.bytes $packed"
    awk -v r="$raw" -v p="$packed" -v s="$start" -v e="$end" -v k="$key" \
        'BEGIN { printf "%s.ratio %.2f\n%s.mb_per_s %.1f\n", k, r / p, k, r / (e - s) / 1e6 }'
}
for TOOL in "gzip -6" "zstd -3"; do
    pack "archive.${TOOL// /}" "$WORK"/archive/*.jsonl
done
# The slowest setting (~2 MB/s) on a sample only: the first 5 000 lines of one org's month.
head -n 5000 "$(ls "$WORK"/archive/*.jsonl | head -n 1)" > "$WORK/sample.jsonl"
echo "archive.sample.bytes $(wc -c < "$WORK/sample.jsonl")"
for TOOL in "zstd -3" "zstd -19"; do
    pack "archive.sample.${TOOL// /}" "$WORK/sample.jsonl"
done

# Migration 0010 on a database at version 9 with MIGRATION_ROWS rows in each audit table.
if [ "$MIGRATION_ROWS" -gt 0 ]; then
    db="byok_bench_$(date +%s)_$$"
    base="${URL%/*}"
    psql -q "$URL" -c "CREATE DATABASE $db"
    trap 'psql -q "$URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1; rm -rf "$WORK"' EXIT
    for f in crates/store/migrations/postgres/*.sql; do
        version=$((10#$(basename "$f" | cut -d_ -f1)))
        [ "$version" -lt 10 ] && psql -q -v ON_ERROR_STOP=1 "$base/$db" -f "$f" >/dev/null
    done
    # Rows of the same shape as the store's (ids, hashes and text of realistic length),
    # over three months; the hashes are random here: this measures the copy, not verify.
    psql -q -v ON_ERROR_STOP=1 "$base/$db" >/dev/null <<SQL
INSERT INTO resolution_audit (at_us, call_id, org_id, team_id, workflow_id, token_id, credential_id,
    credential_version, fingerprint, provider, model, model_family, capability, mode, outcome, tier,
    credential_owner, segment, segment_seq, prev_hash, hash)
SELECT 1767225600000000 + g * (7776000000000 / $MIGRATION_ROWS), upper(substr(md5(g::text), 1, 26)),
    'org_01JBENCH' || lpad((g % 50)::text, 16, '0'), 'team_01JBENCH' || lpad((g % 100)::text, 16, '0'),
    NULL, 'tok_01JBENCH' || lpad((g % 100)::text, 16, '0'), 'cred_01JBENCH' || lpad((g % 100)::text, 16, '0'),
    1, 'fp_' || md5((g % 100)::text), 'openai', 'gpt-4o-mini', 'gpt-4o-mini', 'chat', 'sync', 'allowed',
    'katman-b', 'org', '01JBENCHSEGMENT0000000000' || (g % 8), g, sha256(g::text::bytea), sha256((g + 1)::text::bytea)
FROM generate_series(1, $MIGRATION_ROWS) AS g;
INSERT INTO call_completions (call_id, org_id, credential_id, at_us, upstream_status, latency_us, input_tokens,
    output_tokens, status, segment, segment_seq, prev_hash, hash, team_id, tier, credential_owner, provider,
    model_family, rate_card, resolution_seq)
SELECT upper(substr(md5(g::text), 1, 26)), 'org_01JBENCH' || lpad((g % 50)::text, 16, '0'),
    'cred_01JBENCH' || lpad((g % 100)::text, 16, '0'), 1767225600000000 + g * (7776000000000 / $MIGRATION_ROWS) + 900000,
    200, 900000, 1200, 300, 'completed', '01JBENCHSEGMENT0000000000' || (g % 8), g, sha256(g::text::bytea),
    sha256((g + 1)::text::bytea), 'team_01JBENCH' || lpad((g % 100)::text, 16, '0'), 'katman-b', 'org', 'openai',
    'gpt-4o-mini', 'USD:0.002:0.4:1.6', g
FROM generate_series(1, $MIGRATION_ROWS) AS g;
CHECKPOINT;
SQL
    migration=$(ls crates/store/migrations/postgres/0010_*.sql)
    start=$(date +%s.%N)
    psql -q -v ON_ERROR_STOP=1 -1 "$base/$db" -f "$migration" >/dev/null
    end=$(date +%s.%N)
    echo "migration.rows $((2 * MIGRATION_ROWS))"
    awk -v n="$((2 * MIGRATION_ROWS))" -v s="$start" -v e="$end" \
        'BEGIN { printf "migration.seconds %.2f\nmigration.rows_per_s %.0f\n", e - s, n / (e - s) }'
fi
