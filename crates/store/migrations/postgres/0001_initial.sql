-- byok schema, version 1 (PostgreSQL).
-- Times are microseconds since the Unix epoch (BIGINT); ids are prefixed ULID text;
-- hashes, nonces, ciphertexts and wrapped keys are BYTEA; scope/details are JSON text.

CREATE TABLE orgs (
    id              TEXT    NOT NULL PRIMARY KEY,
    name            TEXT    NOT NULL,
    tier            TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    kek_version     BIGINT  NOT NULL,
    -- the org's fingerprint key, wrapped by its KEK
    fpk_kek_version BIGINT  NOT NULL,
    fpk_alg         TEXT    NOT NULL,
    fpk_wrapped     BYTEA   NOT NULL,
    created_at      BIGINT  NOT NULL,
    deleted_at      BIGINT,
    CONSTRAINT orgs_name_key UNIQUE (name)
);

CREATE TABLE teams (
    id         TEXT    NOT NULL PRIMARY KEY,
    org_id     TEXT    NOT NULL REFERENCES orgs (id),
    name       TEXT    NOT NULL,
    created_at BIGINT  NOT NULL,
    CONSTRAINT teams_name_key UNIQUE (org_id, name),
    CONSTRAINT teams_org_id_key UNIQUE (org_id, id)
);

CREATE TABLE workflows (
    id         TEXT    NOT NULL PRIMARY KEY,
    org_id     TEXT    NOT NULL REFERENCES orgs (id),
    name       TEXT    NOT NULL,
    team_id    TEXT,
    created_at BIGINT  NOT NULL,
    CONSTRAINT workflows_name_key UNIQUE (org_id, name),
    CONSTRAINT workflows_team_fkey FOREIGN KEY (org_id, team_id) REFERENCES teams (org_id, id)
);
CREATE INDEX workflows_team_idx ON workflows (team_id);

CREATE TABLE credentials (
    id          TEXT    NOT NULL PRIMARY KEY,
    org_id      TEXT    NOT NULL REFERENCES orgs (id),
    name        TEXT    NOT NULL,
    provider    TEXT    NOT NULL,
    scope       TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    version     BIGINT  NOT NULL,
    fingerprint TEXT    NOT NULL,
    base_url    TEXT,
    expires_at  BIGINT,
    priority    BIGINT  NOT NULL,
    created_at  BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL,
    revision    BIGINT  NOT NULL,
    CONSTRAINT credentials_name_key UNIQUE (org_id, name),
    CONSTRAINT credentials_org_id_key UNIQUE (org_id, id)
);
CREATE INDEX credentials_provider_idx ON credentials (org_id, provider);

CREATE TABLE credential_versions (
    credential_id TEXT    NOT NULL,
    version       BIGINT  NOT NULL,
    org_id        TEXT    NOT NULL,
    aead          TEXT    NOT NULL,
    nonce         BYTEA   NOT NULL,
    ciphertext    BYTEA   NOT NULL,
    dek_alg       TEXT    NOT NULL,
    kek_version   BIGINT  NOT NULL,
    wrapped_dek   BYTEA   NOT NULL,
    fingerprint   TEXT    NOT NULL,
    created_at    BIGINT  NOT NULL,
    PRIMARY KEY (credential_id, version),
    CONSTRAINT credential_versions_credential_fkey FOREIGN KEY (org_id, credential_id) REFERENCES credentials (org_id, id)
);
CREATE INDEX credential_versions_kek_idx ON credential_versions (org_id, kek_version);

CREATE TABLE workload_tokens (
    id         TEXT    NOT NULL PRIMARY KEY,
    org_id     TEXT    NOT NULL REFERENCES orgs (id),
    team_id    TEXT    NOT NULL,
    token_hash BYTEA   NOT NULL,
    workflows  TEXT    NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT,
    created_at BIGINT  NOT NULL,
    CONSTRAINT workload_tokens_hash_key UNIQUE (token_hash),
    CONSTRAINT workload_tokens_team_fkey FOREIGN KEY (org_id, team_id) REFERENCES teams (org_id, id)
);
CREATE INDEX workload_tokens_org_idx ON workload_tokens (org_id, created_at);
CREATE INDEX workload_tokens_team_idx ON workload_tokens (org_id, team_id);

CREATE TABLE admin_tokens (
    id         TEXT    NOT NULL PRIMARY KEY,
    org_id     TEXT    REFERENCES orgs (id),
    token_hash BYTEA   NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT,
    created_at BIGINT  NOT NULL,
    CONSTRAINT admin_tokens_hash_key UNIQUE (token_hash)
);
CREATE INDEX admin_tokens_org_idx ON admin_tokens (org_id);

CREATE TABLE lifecycle_events (
    seq           BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id            TEXT    NOT NULL,
    org_id        TEXT    NOT NULL REFERENCES orgs (id),
    kind          TEXT    NOT NULL,
    subject       TEXT    NOT NULL,
    credential_id TEXT,
    version       BIGINT,
    fingerprint   TEXT,
    actor         TEXT    NOT NULL,
    at_us         BIGINT  NOT NULL,
    details       TEXT    NOT NULL,
    -- reserved for the audit hash chain
    prev_hash     BYTEA,
    hash          BYTEA,
    CONSTRAINT lifecycle_events_id_key UNIQUE (id)
);
CREATE INDEX lifecycle_events_org_idx ON lifecycle_events (org_id, seq);
CREATE INDEX lifecycle_events_subject_idx ON lifecycle_events (org_id, subject, seq);
CREATE INDEX lifecycle_events_credential_idx ON lifecycle_events (credential_id, seq);
