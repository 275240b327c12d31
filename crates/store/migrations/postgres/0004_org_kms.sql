-- byok schema, version 4: customer-managed KMSs.
-- Every wrapped key names the configured KMS that holds its KEK ('default' is the
-- installation's own). An org's current KEK lives in orgs.kms; while it moves to
-- another KMS, orgs.kms_moving_from names the one it is leaving.

ALTER TABLE orgs ADD COLUMN kms TEXT NOT NULL DEFAULT 'default';
ALTER TABLE orgs ADD COLUMN kms_moving_from TEXT;
ALTER TABLE orgs ADD COLUMN fpk_kms TEXT NOT NULL DEFAULT 'default';
ALTER TABLE credential_versions ADD COLUMN kek_kms TEXT NOT NULL DEFAULT 'default';
