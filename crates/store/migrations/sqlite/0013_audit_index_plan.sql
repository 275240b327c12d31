-- byok schema, version 13 (SQLite): the audit tables keep only the index entries their
-- queries read. Every index costs every append (one entry per row); the plan, with the
-- query each index serves, is in ARCHITECTURE.md (Index plan).
--
-- On SQLite `seq` is the INTEGER PRIMARY KEY, i.e. the rowid, and every index entry ends
-- with the rowid already: an index on (x, seq) stores seq twice. These three are rebuilt
-- without the copy; each keeps exactly its order (x, then seq), so every query keeps its
-- plan (a range on seq is a range on the rowid; no sort is added):
--
--   resolution_audit_org_idx (org_id [, rowid = seq])
--       Store::list_audit: org_id = ? [AND seq > after] ORDER BY seq LIMIT n.
--   resolution_audit_credential_idx (credential_id [, seq])
--       Store::list_audit with a credential.
--   resolution_audit_credential_at_idx (credential_id, at_us [, seq])
--       the credential timeline (replay): (at_us, seq) > (…) ORDER BY at_us, seq.
--
-- Unchanged, each read by its query:
--   resolution_audit_call_idx (call_id)             Store::list_audit with a call id
--   resolution_audit_chain_idx (org_id, segment, segment_seq)
--       verify, chain heads, head_intact, segments of an org (skip scan), purge, export
--   resolution_audit_org_at_idx (org_id, at_us)     statements (denied rows of the
--       partial hours) and Store::list_audit with since/until (SQLite has no partitions
--       to bound a time range, so this one stays here; PostgreSQL keeps only its denied
--       part, see the PostgreSQL migration)
--   call_completions_chain_idx (org_id, segment, segment_seq)   as for resolution_audit
--   call_completions_org_idx (org_id, at_us)        statements: completions of the
--       partial hours
--   call_completions_resolution_idx (org_id, segment, resolution_seq)
--       replay and export: the completion bound to a row
--   call_completions_unbound_call_idx (call_id) WHERE resolution_seq IS NULL
--       replay: completions that name no row (holds only those)

DROP INDEX resolution_audit_org_idx;
CREATE INDEX resolution_audit_org_idx ON resolution_audit (org_id);
DROP INDEX resolution_audit_credential_idx;
CREATE INDEX resolution_audit_credential_idx ON resolution_audit (credential_id);
DROP INDEX resolution_audit_credential_at_idx;
CREATE INDEX resolution_audit_credential_at_idx ON resolution_audit (credential_id, at_us);
