-- byok schema, version 10 (PostgreSQL): the audit tables partitioned by month.
--
-- resolution_audit and call_completions become RANGE-partitioned on at_us (microseconds,
-- UTC): one partition per calendar month, `<table>_pYYYY_MM` holding
-- [first µs of the month, first µs of the next), and a DEFAULT partition `<table>_default`
-- that catches anything no month partition covers, so an insert never fails for want of
-- a partition. The store creates the partitions of the current and the next two months
-- on start and every hour (see crates/store/src/partitions.rs); retention drops a month
-- of both tables at once, after writing the chain anchors of every chain it ends.
--
-- What changes for the rows:
-- * seq is numbered by a sequence of its own (PostgreSQL 15 has no identity columns on
--   partitioned tables) that continues where the identity left off; every query that
--   orders by seq keeps working. Unlike the identity it accepts an explicit value; byok
--   never gives one.
-- * The primary key must contain the partition key: (seq, at_us). seq alone stays
--   unique (one sequence numbers every row).
-- * Every row keeps every column value, so every hash chain verifies as before.
--
-- The index plan (which query uses which index) is in ARCHITECTURE.md. It drops one
-- index: call_completions (call_id), which only Store::list_completions (a test helper)
-- read; the replay's lookup by call id uses call_completions_unbound_call_idx.
--
-- Existing rows are copied in this transaction: the months they fall in get their
-- partitions (a row before 1970 or from 2100 on goes to DEFAULT), then the indexes are
-- built. Allow for the copy: docs/capacity.md gives the rate measured.

ALTER TABLE resolution_audit RENAME TO resolution_audit_unpartitioned;
ALTER TABLE call_completions RENAME TO call_completions_unpartitioned;

CREATE TABLE resolution_audit (
    seq                BIGINT  NOT NULL,
    at_us              BIGINT  NOT NULL,
    call_id            TEXT    NOT NULL,
    org_id             TEXT,
    team_id            TEXT,
    workflow_id        TEXT,
    token_id           TEXT,
    credential_id      TEXT,
    credential_version BIGINT,
    fingerprint        TEXT,
    provider           TEXT,
    model              TEXT,
    model_family       TEXT,
    capability         TEXT,
    mode               TEXT,
    outcome            TEXT    NOT NULL,
    reason             TEXT,
    detail             TEXT,
    prev_hash          BYTEA,
    hash               BYTEA,
    segment            TEXT,
    segment_seq        BIGINT,
    tier               TEXT,
    credential_owner   TEXT
) PARTITION BY RANGE (at_us);

CREATE TABLE call_completions (
    seq              BIGINT  NOT NULL,
    call_id          TEXT    NOT NULL,
    org_id           TEXT    NOT NULL,
    credential_id    TEXT    NOT NULL,
    at_us            BIGINT  NOT NULL,
    upstream_status  BIGINT,
    latency_us       BIGINT  NOT NULL,
    input_tokens     BIGINT,
    output_tokens    BIGINT,
    status           TEXT    NOT NULL,
    segment          TEXT,
    segment_seq      BIGINT,
    prev_hash        BYTEA,
    hash             BYTEA,
    team_id          TEXT,
    tier             TEXT,
    credential_owner TEXT,
    provider         TEXT,
    model_family     TEXT,
    rate_card        TEXT,
    provider_price   TEXT,
    resolution_seq   BIGINT
) PARTITION BY RANGE (at_us);

DO $$
DECLARE
    tbl       TEXT;
    m_start   TIMESTAMP;
    cols      TEXT;
    last_used BIGINT;
BEGIN
    -- The same months for both tables: a month is dropped as a whole.
    CREATE TEMPORARY TABLE audit_months ON COMMIT DROP AS
        SELECT DISTINCT date_trunc('month', to_timestamp(at_us / 1000000) AT TIME ZONE 'UTC') AS month
        FROM (SELECT at_us FROM resolution_audit_unpartitioned
              UNION ALL SELECT at_us FROM call_completions_unpartitioned) AS rows
        WHERE at_us >= 0 AND at_us < 4102444800000000
        UNION
        SELECT date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => ahead)
        FROM generate_series(0, 2) AS ahead;

    FOREACH tbl IN ARRAY ARRAY['resolution_audit', 'call_completions'] LOOP
        FOR m_start IN SELECT a.month FROM audit_months AS a ORDER BY a.month LOOP
            EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%s) TO (%s)',
                tbl || to_char(m_start, '"_p"YYYY_MM'), tbl,
                (extract(epoch FROM m_start AT TIME ZONE 'UTC') * 1000000)::BIGINT,
                (extract(epoch FROM (m_start + interval '1 month') AT TIME ZONE 'UTC') * 1000000)::BIGINT);
        END LOOP;
        EXECUTE format('CREATE TABLE %I PARTITION OF %I DEFAULT', tbl || '_default', tbl);

        SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) INTO cols
        FROM pg_attribute WHERE attrelid = tbl::regclass AND attnum > 0 AND NOT attisdropped;
        EXECUTE format('INSERT INTO %I (%s) SELECT %s FROM %I', tbl, cols, cols, tbl || '_unpartitioned');

        -- The last seq handed out: the identity's position, or a row's if one is higher.
        EXECUTE format('SELECT GREATEST((SELECT COALESCE(MAX(seq), 0) FROM %I), '
                       '(SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM %s))',
                       tbl || '_unpartitioned', pg_get_serial_sequence(tbl || '_unpartitioned', 'seq'))
            INTO last_used;
        EXECUTE format('DROP TABLE %I', tbl || '_unpartitioned');
        EXECUTE format('CREATE SEQUENCE %I AS BIGINT OWNED BY %I.seq', tbl || '_seq_seq', tbl);
        PERFORM setval(tbl || '_seq_seq', GREATEST(last_used, 1), last_used >= 1);
        EXECUTE format('ALTER TABLE %I ALTER COLUMN seq SET DEFAULT nextval(%L)', tbl, tbl || '_seq_seq');
    END LOOP;
END
$$;

-- Built after the copy (on every partition; later partitions get them when created).
ALTER TABLE resolution_audit ADD PRIMARY KEY (seq, at_us);
CREATE INDEX resolution_audit_org_idx ON resolution_audit (org_id, seq);
CREATE INDEX resolution_audit_credential_idx ON resolution_audit (credential_id, seq);
CREATE INDEX resolution_audit_call_idx ON resolution_audit (call_id);
CREATE INDEX resolution_audit_chain_idx ON resolution_audit (org_id, segment, segment_seq);
CREATE INDEX resolution_audit_credential_at_idx ON resolution_audit (credential_id, at_us, seq);
CREATE INDEX resolution_audit_org_at_idx ON resolution_audit (org_id, at_us);

ALTER TABLE call_completions ADD PRIMARY KEY (seq, at_us);
CREATE INDEX call_completions_chain_idx ON call_completions (org_id, segment, segment_seq);
CREATE INDEX call_completions_org_idx ON call_completions (org_id, at_us);
CREATE INDEX call_completions_resolution_idx ON call_completions (org_id, segment, resolution_seq);
CREATE INDEX call_completions_unbound_call_idx ON call_completions (call_id) WHERE resolution_seq IS NULL;
