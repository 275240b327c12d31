-- byok schema, version 10 (SQLite): the audit tables' index plan (ARCHITECTURE.md).
--
-- On PostgreSQL this version partitions the audit tables by month; SQLite keeps them
-- unpartitioned (one node, retention purges row by row). Both drop the one index no
-- query needs: call_completions (call_id) served only Store::list_completions (a test
-- helper); the replay's lookup by call id uses call_completions_unbound_call_idx.

DROP INDEX IF EXISTS call_completions_call_idx;
