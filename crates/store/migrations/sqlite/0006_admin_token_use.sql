-- byok schema, version 6 (SQLite): when an admin token last authenticated a request
-- (recorded at most once a minute per token), for `GET /v1/orgs/{org}/admin-tokens`.

ALTER TABLE admin_tokens ADD COLUMN last_used_at INTEGER;
