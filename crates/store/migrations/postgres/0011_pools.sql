-- Several credentials for one call (SPEC 3.1): a credential's share of its pool, the
-- provider account's own limits, and its durable health (the provider rejected it:
-- `failing` until rotated, enabled again or verified; NULL: not failing).
ALTER TABLE credentials ADD COLUMN weight BIGINT NOT NULL DEFAULT 1;
ALTER TABLE credentials ADD COLUMN rpm BIGINT;
ALTER TABLE credentials ADD COLUMN tpm BIGINT;
ALTER TABLE credentials ADD COLUMN failing_status BIGINT;

-- An org's rate limits (JSON: org, teams by id, tokens by id); NULL: none.
ALTER TABLE orgs ADD COLUMN limits TEXT;

-- Which attempt of a call a resolution row is (1, 2, … when byok failed over).
ALTER TABLE resolution_audit ADD COLUMN attempt BIGINT;

-- The nodes of a fleet, seen recently: when the shared limit store is unreachable, each
-- node enforces its share of a limit (limit ÷ live nodes).
CREATE TABLE fleet_nodes (
    node_id      TEXT   PRIMARY KEY,
    last_seen_us BIGINT NOT NULL
);
