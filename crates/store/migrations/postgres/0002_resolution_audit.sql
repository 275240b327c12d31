-- byok schema, version 2 (PostgreSQL): the CredentialResolutionAudit and call completions.
-- Both are append-only. Rows keep no foreign keys: the audit outlives everything it names.

CREATE TABLE resolution_audit (
    seq                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at_us              BIGINT  NOT NULL,
    call_id            TEXT    NOT NULL,
    org_id             TEXT,
    team_id            TEXT,
    workflow_id        TEXT,
    token_id           TEXT,
    credential_id      TEXT,
    credential_version BIGINT ,
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
    hash               BYTEA
);
CREATE INDEX resolution_audit_org_idx ON resolution_audit (org_id, seq);
CREATE INDEX resolution_audit_credential_idx ON resolution_audit (credential_id, seq);
CREATE INDEX resolution_audit_call_idx ON resolution_audit (call_id);

CREATE TABLE call_completions (
    seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    call_id         TEXT    NOT NULL,
    org_id          TEXT    NOT NULL,
    credential_id   TEXT    NOT NULL,
    at_us           BIGINT  NOT NULL,
    upstream_status BIGINT ,
    latency_us      BIGINT  NOT NULL,
    input_tokens    BIGINT ,
    output_tokens   BIGINT ,
    status          TEXT    NOT NULL
);
CREATE INDEX call_completions_call_idx ON call_completions (call_id);
CREATE INDEX call_completions_org_idx ON call_completions (org_id, at_us);
