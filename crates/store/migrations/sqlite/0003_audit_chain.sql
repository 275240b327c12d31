-- byok schema, version 3 (SQLite): the audit hash chain.
-- Lifecycle events form one chain per org (chain_seq 1, 2, …). Resolution rows and call
-- completions form chains per (writer segment, org): each sidecar's audit writer starts
-- a segment and numbers its entries per org (segment_seq 1, 2, …).

ALTER TABLE lifecycle_events ADD COLUMN chain_seq INTEGER;
CREATE INDEX lifecycle_events_chain_idx ON lifecycle_events (org_id, chain_seq);

ALTER TABLE resolution_audit ADD COLUMN segment TEXT;
ALTER TABLE resolution_audit ADD COLUMN segment_seq INTEGER;
CREATE INDEX resolution_audit_chain_idx ON resolution_audit (org_id, segment, segment_seq);

ALTER TABLE call_completions ADD COLUMN segment TEXT;
ALTER TABLE call_completions ADD COLUMN segment_seq INTEGER;
ALTER TABLE call_completions ADD COLUMN prev_hash BLOB;
ALTER TABLE call_completions ADD COLUMN hash BLOB;
CREATE INDEX call_completions_chain_idx ON call_completions (org_id, segment, segment_seq);

-- Where a chain resumes after a retention purge: the last purged entry's position and hash.
CREATE TABLE audit_anchors (
    org_id      TEXT,
    segment     TEXT    NOT NULL,
    last_seq    INTEGER NOT NULL,
    last_hash   BLOB    NOT NULL,
    purged_at   INTEGER NOT NULL
);
CREATE UNIQUE INDEX audit_anchors_key ON audit_anchors (COALESCE(org_id, ''), segment);

-- Signed checkpoints issued to auditors.
CREATE TABLE audit_checkpoints (
    id        TEXT    NOT NULL PRIMARY KEY,
    org_id    TEXT,
    at_us     INTEGER NOT NULL,
    body      TEXT    NOT NULL,
    signature TEXT    NOT NULL
);

ALTER TABLE orgs ADD COLUMN retention_days INTEGER;

-- Replay reads a credential's calls in time order.
CREATE INDEX resolution_audit_credential_at_idx ON resolution_audit (credential_id, at_us, seq);
CREATE INDEX lifecycle_events_credential_at_idx ON lifecycle_events (credential_id, at_us, seq);
