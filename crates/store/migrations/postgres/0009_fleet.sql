-- What every node of a fleet must agree on. A node claims each KMS it uses by name on
-- start (the first node's claim stands); a node whose KMS is another refuses to start.
CREATE TABLE fleet_kms (
    kms_name      TEXT   PRIMARY KEY,
    identity      TEXT   NOT NULL,
    claimed_at_us BIGINT NOT NULL
);

-- Every node's audit checkpoint key (public half): a checkpoint signed by any node of the
-- fleet verifies on every node.
CREATE TABLE audit_signing_keys (
    key_id           TEXT   PRIMARY KEY,
    public_key       TEXT   NOT NULL,
    registered_at_us BIGINT NOT NULL
);
