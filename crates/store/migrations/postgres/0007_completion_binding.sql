-- byok schema, version 7 (PostgreSQL): a completion names its own resolution row.
--
-- A call id is the caller's to choose, so two calls (of two teams, or a retry) may share
-- one. A completion records the position of its resolution row in their writer
-- segment's chain for their org (resolution_seq; hash-chained), and replay pairs the two
-- by it. Completions written before (resolution_seq NULL) are still paired by call id.

ALTER TABLE call_completions ADD COLUMN resolution_seq BIGINT;
CREATE INDEX call_completions_resolution_idx ON call_completions (org_id, segment, resolution_seq);
CREATE INDEX call_completions_unbound_call_idx ON call_completions (call_id) WHERE resolution_seq IS NULL;
