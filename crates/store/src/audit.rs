//! The `CredentialResolutionAudit` and call completions: append-only, written in
//! batches (the audit writer's group commit), read back per org.

use std::collections::HashMap;

use byok_domain::{CallCompletion, CredentialId, Metering, OrgId, Outcome, ResolutionAudit, Timestamp};
use sqlx::any::AnyRow;
use sqlx::Any;

use crate::error::{map_sqlx, StoreError};
use crate::rows::Row;
use crate::sql::Sql;
use crate::store::Store;

const AUDIT_COLUMNS: &str = "at_us, call_id, org_id, team_id, workflow_id, token_id, credential_id, \
     credential_version, fingerprint, provider, model, model_family, capability, mode, outcome, reason, detail, tier, \
     credential_owner, attempt";

const COMPLETION_COLUMNS: &str = "call_id, org_id, credential_id, at_us, upstream_status, latency_us, input_tokens, \
     output_tokens, status, team_id, tier, credential_owner, provider, model_family, rate_card, provider_price";

/// A resolution row and where it stands in its chain: its writer segment and its
/// position there (both absent on rows written before the chain existed).
#[derive(Debug, Clone)]
pub(crate) struct PlacedRow {
    pub(crate) resolution: ResolutionAudit,
    pub(crate) segment: Option<String>,
    pub(crate) position: Option<i64>,
}

/// Which audit rows [`Store::list_audit`] returns (all conditions must hold).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only rows about this credential.
    pub credential: Option<CredentialId>,
    /// Only rows of this call.
    pub call_id: Option<String>,
    /// Only allowed or only denied rows.
    pub outcome: Option<Outcome>,
    /// Only rows at or after this time.
    pub since: Option<Timestamp>,
    /// Only rows before this time.
    pub until: Option<Timestamp>,
    /// Only rows after this `seq` (paging).
    pub after_seq: Option<i64>,
    /// At most this many rows.
    pub limit: Option<u32>,
}

fn decode_audit(row: &AnyRow) -> Result<ResolutionAudit, StoreError> {
    let r = Row::new(row, "resolution_audit");
    Ok(ResolutionAudit {
        seq: r.int("seq")?,
        at: r.ts("at_us")?,
        call_id: r.text("call_id")?,
        org_id: r.opt_parse("org_id")?,
        team_id: r.opt_parse("team_id")?,
        workflow_id: r.opt_parse("workflow_id")?,
        token_id: r.opt_parse("token_id")?,
        credential_id: r.opt_parse("credential_id")?,
        credential_version: r.opt_u32("credential_version")?,
        fingerprint: r.opt_text("fingerprint")?,
        provider: r.opt_parse("provider")?,
        model: r.opt_text("model")?,
        model_family: r.opt_text("model_family")?,
        capability: r.opt_parse("capability")?,
        mode: r.opt_parse("mode")?,
        outcome: r.parse("outcome")?,
        reason: r.opt_text("reason")?,
        detail: r.opt_text("detail")?,
        tier: r.opt_parse("tier")?,
        credential_owner: r.opt_parse("credential_owner")?,
        attempt: r.opt_u32("attempt")?,
    })
}

fn decode_completion(row: &AnyRow) -> Result<CallCompletion, StoreError> {
    let r = Row::new(row, "call_completions");
    let tokens =
        |col: &str| -> Result<Option<u64>, StoreError> { Ok(r.opt_int(col)?.map(|v| u64::try_from(v).unwrap_or(0))) };
    Ok(CallCompletion {
        call_id: r.text("call_id")?,
        org_id: r.parse("org_id")?,
        credential_id: r.parse("credential_id")?,
        at: r.ts("at_us")?,
        upstream_status: r.opt_int("upstream_status")?.and_then(|s| u16::try_from(s).ok()),
        latency_us: r.int("latency_us")?,
        input_tokens: tokens("input_tokens")?,
        output_tokens: tokens("output_tokens")?,
        status: r.text("status")?,
        metering: decode_metering(&r)?,
    })
}

/// A completion's metering columns: all set (a call made with metering) or none (made
/// before metering existed).
fn decode_metering(r: &Row<'_>) -> Result<Option<Metering>, StoreError> {
    let Some(rate_card) = r.opt_text("rate_card")? else { return Ok(None) };
    let missing = |col: &str| r.corrupt(col, "is missing beside a rate card");
    Ok(Some(Metering {
        team_id: r.opt_parse("team_id")?.ok_or_else(|| missing("team_id"))?,
        tier: r.opt_parse("tier")?.ok_or_else(|| missing("tier"))?,
        credential_owner: r.opt_parse("credential_owner")?.ok_or_else(|| missing("credential_owner"))?,
        provider: r.opt_parse("provider")?.ok_or_else(|| missing("provider"))?,
        model_family: r.opt_text("model_family")?,
        rate_card,
        provider_price: r.opt_text("provider_price")?,
    }))
}

impl Store {
    /// Resolution rows of `org` matching `filter`, in `seq` order. `org = None` lists
    /// the rows no org could be established for (unknown tokens).
    pub async fn list_audit(
        &self,
        org: Option<&OrgId>,
        filter: &AuditFilter,
    ) -> Result<Vec<ResolutionAudit>, StoreError> {
        Ok(self.placed_audit_rows(org, filter).await?.into_iter().map(|row| row.resolution).collect())
    }

    /// [`Store::list_audit`], each allowed row with its completion when the call has
    /// ended (the upstream status, tokens, how it ended — `failed_over` for an attempt
    /// another credential took over).
    pub async fn list_audit_with_completions(
        &self,
        org: Option<&OrgId>,
        filter: &AuditFilter,
    ) -> Result<Vec<(ResolutionAudit, Option<CallCompletion>)>, StoreError> {
        let rows = self.placed_audit_rows(org, filter).await?;
        let completions = self.completions_for(&rows).await?;
        Ok(rows.into_iter().map(|row| row.resolution).zip(completions).collect())
    }

    async fn placed_audit_rows(&self, org: Option<&OrgId>, filter: &AuditFilter) -> Result<Vec<PlacedRow>, StoreError> {
        let mut sql = Sql::new(
            self.backend(),
            format!("SELECT seq, {AUDIT_COLUMNS}, segment, segment_seq FROM resolution_audit WHERE "),
        );
        sql.push_eq_or_null("org_id", org.map(OrgId::to_string));
        if let Some(credential) = &filter.credential {
            sql.push(" AND credential_id = ").push_bind(credential.to_string());
        }
        if let Some(call_id) = &filter.call_id {
            sql.push(" AND call_id = ").push_bind(call_id.as_str());
        }
        if let Some(outcome) = filter.outcome {
            sql.push(" AND outcome = ").push_bind(outcome.as_str());
        }
        if let Some(since) = filter.since {
            sql.push(" AND at_us >= ").push_bind(since.as_micros());
        }
        if let Some(until) = filter.until {
            sql.push(" AND at_us < ").push_bind(until.as_micros());
        }
        if let Some(after) = filter.after_seq {
            sql.push(" AND seq > ").push_bind(after);
        }
        sql.push(" ORDER BY seq");
        if let Some(limit) = filter.limit {
            sql.push(" LIMIT ").push_bind(i64::from(limit));
        }
        let rows = sql.query()?.fetch_all(self.reader()).await.map_err(map_sqlx)?;
        rows.iter()
            .map(|row| {
                let r = Row::new(row, "resolution_audit");
                Ok(PlacedRow {
                    resolution: decode_audit(row)?,
                    segment: r.opt_text("segment")?,
                    position: r.opt_int("segment_seq")?,
                })
            })
            .collect()
    }

    /// The credential's resolution rows after (`at_us`, `seq_floor`) in time order, with
    /// where each stands in its chain. A platform credential's rows belong to the orgs it
    /// served (`org = None`).
    pub(crate) async fn audit_rows_for_timeline(
        &self,
        org: Option<&OrgId>,
        credential: &CredentialId,
        at_us: i64,
        seq_floor: i64,
        limit: i64,
    ) -> Result<Vec<PlacedRow>, StoreError> {
        let sql = format!(
            "SELECT seq, {AUDIT_COLUMNS}, segment, segment_seq FROM resolution_audit WHERE credential_id = $1 \
             AND (at_us, seq) > ($2, $3) ORDER BY at_us, seq LIMIT $4"
        );
        let rows = sqlx::query::<Any>(&sql)
            .bind(credential.to_string())
            .bind(at_us)
            .bind(seq_floor)
            .bind(limit)
            .fetch_all(self.reader())
            .await
            .map_err(map_sqlx)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let resolution = decode_audit(row)?;
            // An org's credential's rows all carry its org; the check guards against a mix-up.
            if org.is_some_and(|org| resolution.org_id != Some(*org)) {
                continue;
            }
            let r = Row::new(row, "resolution_audit");
            out.push(PlacedRow { segment: r.opt_text("segment")?, position: r.opt_int("segment_seq")?, resolution });
        }
        Ok(out)
    }

    /// The completion of each of `rows` (in the same order; `None` while a call has none).
    ///
    /// A completion names its resolution row (its segment, org and position), so it is
    /// paired with that row alone, whichever other rows share its call id. Completions
    /// written before they named their row are paired with an allowed row of their call
    /// id, org, writer segment and credential (and team, when they record one).
    pub(crate) async fn completions_for(&self, rows: &[PlacedRow]) -> Result<Vec<Option<CallCompletion>>, StoreError> {
        let mut out: Vec<Option<CallCompletion>> = vec![None; rows.len()];
        // Only an allowed row has a completion.
        let calls: Vec<usize> = (0..rows.len())
            .filter(|&i| rows[i].resolution.outcome == Outcome::Allowed && rows[i].resolution.org_id.is_some())
            .collect();
        let bound = self.bound_completions(rows, &calls).await?;
        let mut unpaired = Vec::new();
        for &i in &calls {
            let row = &rows[i];
            let key = row.resolution.org_id.zip(row.segment.clone()).zip(row.position);
            match key.and_then(|key| bound.get(&key)) {
                Some(completion) => out[i] = Some(completion.clone()),
                None => unpaired.push(i),
            }
        }
        for (i, completion) in self.unbound_completions(rows, &unpaired).await? {
            out[i] = Some(completion);
        }
        Ok(out)
    }

    /// The completions bound to `rows[calls]`, by (org, segment, position).
    async fn bound_completions(
        &self,
        rows: &[PlacedRow],
        calls: &[usize],
    ) -> Result<HashMap<((OrgId, String), i64), CallCompletion>, StoreError> {
        // Grouped by chain: one `org_id = … AND segment = … AND resolution_seq IN (…)` term
        // per chain a chunk of rows is in (a page is usually in one or two).
        let mut chains: Vec<((OrgId, &str), Vec<i64>)> = Vec::new();
        for &i in calls {
            let row = &rows[i];
            let (Some(org), Some(segment), Some(position)) = (row.resolution.org_id, &row.segment, row.position) else {
                continue;
            };
            match chains.iter_mut().find(|(chain, _)| *chain == (org, segment.as_str())) {
                Some((_, positions)) => positions.push(position),
                None => chains.push(((org, segment.as_str()), vec![position])),
            }
        }
        let mut found = HashMap::new();
        let mut terms: Vec<((OrgId, &str), &[i64])> = Vec::new();
        for (chain, positions) in &chains {
            for chunk in positions.chunks(500) {
                terms.push((*chain, chunk));
            }
        }
        let mut batch: Vec<((OrgId, &str), &[i64])> = Vec::new();
        let mut batch_len = 0;
        for (i, term) in terms.iter().enumerate() {
            batch.push(*term);
            batch_len += term.1.len();
            if batch_len >= 500 || i + 1 == terms.len() {
                self.bound_batch(&batch, &mut found).await?;
                batch.clear();
                batch_len = 0;
            }
        }
        Ok(found)
    }

    async fn bound_batch(
        &self,
        terms: &[((OrgId, &str), &[i64])],
        found: &mut HashMap<((OrgId, String), i64), CallCompletion>,
    ) -> Result<(), StoreError> {
        let mut sql = Sql::new(
            self.backend(),
            format!("SELECT {COMPLETION_COLUMNS}, segment, resolution_seq FROM call_completions WHERE "),
        );
        for (i, ((org, segment), positions)) in terms.iter().enumerate() {
            sql.push(if i == 0 { "(" } else { " OR (" });
            sql.push("org_id = ").push_bind(org.to_string());
            sql.push(" AND segment = ").push_bind(*segment);
            sql.push(" AND resolution_seq IN (");
            let mut list = sql.separated(", ");
            for position in *positions {
                list.push_bind(*position);
            }
            sql.push("))");
        }
        sql.push(" ORDER BY seq");
        for row in sql.query()?.fetch_all(self.reader()).await.map_err(map_sqlx)? {
            let completion = decode_completion(&row)?;
            let r = Row::new(&row, "call_completions");
            let (Some(segment), Some(position)) = (r.opt_text("segment")?, r.opt_int("resolution_seq")?) else {
                continue;
            };
            found.insert(((completion.org_id, segment), position), completion);
        }
        Ok(())
    }

    /// Completions that name no row, for `rows[unpaired]`: the latest of each row's call
    /// id, org, segment and credential (and team, when the completion records one).
    async fn unbound_completions(
        &self,
        rows: &[PlacedRow],
        unpaired: &[usize],
    ) -> Result<Vec<(usize, CallCompletion)>, StoreError> {
        let mut out = Vec::new();
        for chunk in unpaired.chunks(500) {
            // By call id only (the rest is checked here): with an `org_id = …` term SQLite
            // may walk the org's index instead of the call-id index.
            let mut sql = Sql::new(
                self.backend(),
                format!("SELECT {COMPLETION_COLUMNS}, segment FROM call_completions WHERE call_id IN ("),
            );
            let mut list = sql.separated(", ");
            for &i in chunk {
                list.push_bind(rows[i].resolution.call_id.as_str());
            }
            sql.push(") AND resolution_seq IS NULL ORDER BY seq");
            let mut candidates = Vec::new();
            for row in sql.query()?.fetch_all(self.reader()).await.map_err(map_sqlx)? {
                let segment = Row::new(&row, "call_completions").opt_text("segment")?;
                candidates.push((segment, decode_completion(&row)?));
            }
            for &i in chunk {
                let row = &rows[i];
                let r = &row.resolution;
                // The latest that fits (completions are in `seq` order).
                let found = candidates.iter().rev().find(|(segment, c)| {
                    c.call_id == r.call_id
                        && Some(c.org_id) == r.org_id
                        && *segment == row.segment
                        && Some(c.credential_id) == r.credential_id
                        && c.metering.as_ref().is_none_or(|m| Some(m.team_id) == r.team_id)
                });
                if let Some((_, completion)) = found {
                    out.push((i, completion.clone()));
                }
            }
        }
        Ok(out)
    }

    /// The completions recorded for `call_id`, oldest first: of every org and team that
    /// used that call id (a caller chooses it). Replay pairs a completion with its own row.
    ///
    /// For tests (feature `testing`): the product reads completions beside the rows they
    /// pair with (the timeline).
    #[cfg(feature = "testing")]
    pub async fn list_completions(&self, call_id: &str) -> Result<Vec<CallCompletion>, StoreError> {
        let sql = format!("SELECT {COMPLETION_COLUMNS} FROM call_completions WHERE call_id = $1 ORDER BY seq");
        let rows = sqlx::query::<Any>(&sql).bind(call_id).fetch_all(self.reader()).await.map_err(map_sqlx)?;
        rows.iter().map(decode_completion).collect()
    }

    /// The highest lifecycle event `seq` (0 when there is none). Sidecars poll it to
    /// notice changes made through other nodes.
    pub async fn latest_event_seq(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar::<Any, i64>("SELECT CAST(COALESCE(MAX(seq), 0) AS BIGINT) FROM lifecycle_events")
            .fetch_one(self.reader())
            .await
            .map_err(map_sqlx)
    }
}
