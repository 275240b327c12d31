-- byok schema, version 5 (PostgreSQL): billing tiers that bill.
--
-- * The operator's platform credential pool is stored like an org (its own KEK,
--   fingerprint key and event chain): orgs.kind = 'platform', at most one such row.
-- * An org's negotiated rate card (katman-c), budget and controls.
-- * When a credential's current version was made (maximum credential age).
-- * Every resolution row records the org's tier and the credential's owner; every
--   completion records how its call is priced (tier, owner, provider, family, the rate
--   card and provider price codes in force), fixed when the call was made.
-- * usage_rollup: calls, tokens and denials per org, hour, team, price and audit writer
--   segment, maintained in the audit writer's own transactions, so a month's statement
--   reads a few hundred rows (and a node can tell its own calls from the others').

ALTER TABLE orgs ADD COLUMN kind TEXT NOT NULL DEFAULT 'tenant';
ALTER TABLE orgs ADD COLUMN rate_card TEXT;
ALTER TABLE orgs ADD COLUMN budget TEXT;
ALTER TABLE orgs ADD COLUMN controls TEXT;
CREATE UNIQUE INDEX orgs_platform_key ON orgs (kind) WHERE kind = 'platform';

ALTER TABLE credentials ADD COLUMN version_at BIGINT;
UPDATE credentials SET version_at = (
    SELECT v.created_at FROM credential_versions v
    WHERE v.credential_id = credentials.id AND v.version = credentials.version
);
UPDATE credentials SET version_at = updated_at WHERE version_at IS NULL;

ALTER TABLE resolution_audit ADD COLUMN tier TEXT;
ALTER TABLE resolution_audit ADD COLUMN credential_owner TEXT;

ALTER TABLE call_completions ADD COLUMN team_id TEXT;
ALTER TABLE call_completions ADD COLUMN tier TEXT;
ALTER TABLE call_completions ADD COLUMN credential_owner TEXT;
ALTER TABLE call_completions ADD COLUMN provider TEXT;
ALTER TABLE call_completions ADD COLUMN model_family TEXT;
ALTER TABLE call_completions ADD COLUMN rate_card TEXT;
ALTER TABLE call_completions ADD COLUMN provider_price TEXT;

-- A statement's partial first and last hours are read from the raw rows by org and time
-- (call_completions_org_idx already covers completions).
CREATE INDEX resolution_audit_org_at_idx ON resolution_audit (org_id, at_us);

-- Empty text stands for "none" in key columns (NULLs never conflict in a unique key).
CREATE TABLE usage_rollup (
    org_id           TEXT    NOT NULL,
    segment          TEXT    NOT NULL,
    hour_us          BIGINT  NOT NULL,
    team_id          TEXT    NOT NULL,
    tier             TEXT    NOT NULL,
    provider         TEXT    NOT NULL,
    model_family     TEXT    NOT NULL,
    credential_owner TEXT    NOT NULL,
    rate_card        TEXT    NOT NULL,
    provider_price   TEXT    NOT NULL,
    calls            BIGINT  NOT NULL,
    unanswered       BIGINT  NOT NULL,
    denied           BIGINT  NOT NULL,
    input_tokens     BIGINT  NOT NULL,
    output_tokens    BIGINT  NOT NULL,
    PRIMARY KEY (org_id, hour_us, segment, team_id, tier, provider, model_family, credential_owner, rate_card,
                 provider_price)
);
