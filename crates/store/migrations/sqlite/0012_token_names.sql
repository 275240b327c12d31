-- Workload tokens people can tell apart: an optional name (unique in its org; NULLs do
-- not collide) and an optional description.
ALTER TABLE workload_tokens ADD COLUMN name TEXT;
ALTER TABLE workload_tokens ADD COLUMN description TEXT;
CREATE UNIQUE INDEX workload_tokens_name_key ON workload_tokens (org_id, name);
