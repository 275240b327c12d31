//! Audit at scale on PostgreSQL: the figures behind `docs/capacity.md` (run it with
//! `bench/audit/partitions.sh`).
//!
//! On a fresh database (through `BYOK_TEST_POSTGRES_URL`, dropped afterwards):
//!
//! 1. **Load**: `BENCH_ENTRIES` chained entries (calls: a resolution row and its bound
//!    completion, 1 % denied without one) of `BENCH_ORGS` orgs, spread evenly over two
//!    months (January and February 2026), written by one writer through
//!    `Store::append_audit` in transactions of `BENCH_BATCH` entries — what a saturated
//!    audit writer commits — starting a new writer segment `BENCH_SEGMENTS` times.
//!    Entries per second, and the WAL written per entry.
//! 2. **Size**: bytes per row of each table's January partition (heap, each index,
//!    total), after `ANALYZE`.
//! 3. **Verify**: `verify_audit` of every org, entries per second.
//! 4. **Archive**: January of each org as JSON Lines in the archive format of
//!    `docs/capacity.md`, written to `BENCH_ARCHIVE_DIR` (when set) for the script to
//!    compress.
//! 5. **Retention**: January dropped whole (`drop_expired_audit_partitions`) against
//!    February's entries removed row by row (`purge_audit` of every org), the same
//!    number of rows; time and WAL of each, and the slowest append of a live writer
//!    (transactions of 64 entries, this month) during each.
//!
//! Figures go to standard output as `key value` lines, progress to standard error.
//! `BENCH_KEEP=1` stops before the retention part and keeps the database as loaded
//! (its URL goes to standard error), for a look at the query plans.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use byok_domain::{
    CallCompletion, Capability, CredentialId, CredentialOwner, Metering, Mode, OrgId, Outcome, ProviderId,
    ResolutionAudit, TeamId, Tier, Timestamp, TokenId, WorkflowId,
};
use byok_store::testing::{sqlx, TestStore};
use byok_store::{AuditEntry, AuditMonth, RetentionCuts, Segment, Store};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.replace('_', "").parse().ok()).unwrap_or(default)
}

fn ts(at_us: i64) -> Timestamp {
    Timestamp::from_micros(at_us).unwrap()
}

/// A fixed pseudo-random number for call `i` (the mix is the same in every run).
fn mix(i: u64, salt: u64) -> u64 {
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ salt.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 31;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 29)
}

/// What an org's calls are made with (ids fixed per org).
struct OrgShape {
    id: OrgId,
    teams: [TeamId; 2],
    workflow: WorkflowId,
    tokens: [TokenId; 2],
    credentials: [CredentialId; 2],
    fingerprints: [String; 2],
    tier: Tier,
}

fn org_shape(n: u64) -> OrgShape {
    let fingerprint = |k: u64| format!("fp_{:016x}{:016x}", mix(n, k), mix(n, k + 1));
    OrgShape {
        id: OrgId::generate(),
        teams: [TeamId::generate(), TeamId::generate()],
        workflow: WorkflowId::generate(),
        tokens: [TokenId::generate(), TokenId::generate()],
        credentials: [CredentialId::generate(), CredentialId::generate()],
        fingerprints: [fingerprint(1), fingerprint(3)],
        tier: [Tier::KatmanA, Tier::KatmanB, Tier::KatmanC][(n % 3) as usize],
    }
}

/// Call `i` of `org` at `at_us`: the resolution row, and the completion (absent when denied).
fn call(org: &OrgShape, i: u64, at_us: i64) -> (ResolutionAudit, Option<CallCompletion>) {
    let r = mix(i, 7);
    let side = (r % 2) as usize;
    let (provider, model, family) = match r % 5 {
        0 | 1 => (ProviderId::Openai, "gpt-4o-mini", "gpt-4o-mini"),
        2 => (ProviderId::Openai, "gpt-4o", "gpt-4o"),
        _ => (ProviderId::Anthropic, "claude-sonnet-4-5", "claude-sonnet"),
    };
    let denied = r % 100 == 42;
    let row = ResolutionAudit {
        at: ts(at_us),
        org_id: Some(org.id),
        team_id: Some(org.teams[side]),
        workflow_id: r.is_multiple_of(3).then_some(org.workflow),
        token_id: Some(org.tokens[side]),
        credential_id: (!denied).then_some(org.credentials[side]),
        credential_version: (!denied).then_some(1 + (r % 3) as u32),
        fingerprint: (!denied).then(|| org.fingerprints[side].clone()),
        provider: Some(provider),
        model: Some(model.to_owned()),
        model_family: Some(family.to_owned()),
        capability: Some(Capability::Chat),
        mode: Some(if r.is_multiple_of(4) { Mode::Stream } else { Mode::Sync }),
        outcome: if denied { Outcome::Denied } else { Outcome::Allowed },
        reason: denied.then(|| "scope_denied".to_owned()),
        tier: Some(org.tier),
        credential_owner: (!denied).then_some(CredentialOwner::Org),
        attempt: None,
        ..ResolutionAudit::denied(ulid::Ulid::new().to_string())
    };
    let completion = (!denied).then(|| CallCompletion {
        call_id: row.call_id.clone(),
        org_id: org.id,
        credential_id: org.credentials[side],
        at: ts(at_us + 300_000 + (mix(i, 11) % 1_700_000) as i64),
        upstream_status: Some(200),
        latency_us: 300_000 + (mix(i, 11) % 1_700_000) as i64,
        input_tokens: Some(40 + mix(i, 13) % 4000),
        output_tokens: Some(5 + mix(i, 17) % 900),
        status: "completed".to_owned(),
        metering: Some(Metering {
            team_id: org.teams[side],
            tier: org.tier,
            credential_owner: CredentialOwner::Org,
            provider,
            model_family: Some(family.to_owned()),
            rate_card: "USD:0.002:0.4:1.6".to_owned(),
            provider_price: None,
        }),
    });
    (row, completion)
}

async fn scalar(store: &TestStore, sql: &str) -> i64 {
    store.query_i64(sql).await.unwrap()
}

/// The server's WAL position, in bytes.
async fn wal(t: &TestStore) -> i64 {
    scalar(t, "SELECT CAST(pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0') AS BIGINT)").await
}

fn out(key: &str, value: impl std::fmt::Display) {
    println!("{key} {value}");
}

/// A writer appending 64 single-row entries per transaction at the current time until
/// stopped; returns the latency of every append.
fn live_writer(store: Store, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Vec<Duration>> {
    tokio::spawn(async move {
        let org = org_shape(999);
        let mut segment = Segment::new();
        let mut latencies = Vec::new();
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let mut batch = Vec::with_capacity(64);
            for _ in 0..64 {
                i += 1;
                batch.push(AuditEntry::Resolution(call(&org, i, Timestamp::now().as_micros()).0));
            }
            let started = Instant::now();
            store.append_audit(&mut segment, &batch).await.unwrap();
            latencies.push(started.elapsed());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        latencies
    })
}

fn worst(latencies: &mut [Duration]) -> (f64, f64, usize) {
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let p99 = latencies.get(latencies.len().saturating_sub(1) * 99 / 100).copied().unwrap_or_default();
    (ms(latencies.last().copied().unwrap_or_default()), ms(p99), latencies.len())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let entries = env_usize("BENCH_ENTRIES", 1_000_000);
    let batch = env_usize("BENCH_BATCH", 1024).max(2);
    let org_count = env_usize("BENCH_ORGS", 50).max(1);
    let segments = env_usize("BENCH_SEGMENTS", 8).max(1);
    let archive_dir = std::env::var("BENCH_ARCHIVE_DIR").ok().filter(|d| !d.is_empty());

    let Some(t) = TestStore::postgres().await.unwrap() else {
        eprintln!("set BYOK_TEST_POSTGRES_URL to a PostgreSQL server (a fresh database is created there)");
        std::process::exit(2);
    };
    let store = t.store().clone();
    let (jan, feb) = (AuditMonth::new(2026, 1).unwrap(), AuditMonth::new(2026, 2).unwrap());
    store.ensure_audit_partitions(ts(jan.start_us())).await.unwrap();
    let orgs: Vec<OrgShape> = (0..org_count as u64).map(org_shape).collect();

    // The server's WAL is shared with whatever else runs on it: its rate while this
    // run is idle, to judge the WAL figures by.
    let idle = wal(&t).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let background = (wal(&t).await - idle) as f64 / 2.0;
    out("wal.background_bytes_per_s", format!("{background:.0}"));

    // 1. Load.
    eprintln!("loading {entries} entries in transactions of {batch}…");
    let calls = entries as u64 / 2;
    let span = feb.end_us() - jan.start_us();
    let wal_before = wal(&t).await;
    let mut segment = Segment::new();
    let mut positions: HashMap<OrgId, i64> = HashMap::new();
    let mut pending: Vec<AuditEntry> = Vec::with_capacity(batch + 2);
    let (mut written, mut transactions) = (0u64, 0u64);
    let mut in_append = Duration::ZERO;
    let started = Instant::now();
    let per_segment = calls.div_ceil(segments as u64);
    let mut i = 0u64;
    while written + (pending.len() as u64) < entries as u64 {
        if i > 0 && i.is_multiple_of(per_segment) {
            // A writer restart: the batch in hand goes out first.
            let begun = Instant::now();
            store.append_audit(&mut segment, &pending).await.unwrap();
            in_append += begun.elapsed();
            written += pending.len() as u64;
            transactions += 1;
            pending.clear();
            segment = Segment::new();
            positions.clear();
        }
        let org = &orgs[(mix(i, 3) % org_count as u64) as usize];
        let at_us = jan.start_us() + (i128::from(span) * i128::from(i) / i128::from(calls.max(1))) as i64;
        let (row, completion) = call(org, i, at_us);
        let position = positions.entry(org.id).or_default();
        *position += 1;
        let resolution = *position;
        pending.push(AuditEntry::Resolution(row));
        if let Some(completion) = completion {
            *position += 1;
            pending.push(AuditEntry::BoundCompletion { completion, resolution });
        }
        if pending.len() >= batch {
            let begun = Instant::now();
            store.append_audit(&mut segment, &pending).await.unwrap();
            in_append += begun.elapsed();
            written += pending.len() as u64;
            transactions += 1;
            pending.clear();
            if transactions % 100 == 0 {
                eprintln!("  {written} entries, {:.0} entries/s", written as f64 / in_append.as_secs_f64());
            }
        }
        i += 1;
    }
    if !pending.is_empty() {
        let begun = Instant::now();
        store.append_audit(&mut segment, &pending).await.unwrap();
        in_append += begun.elapsed();
        written += pending.len() as u64;
        transactions += 1;
    }
    let wall = started.elapsed();
    let wal_load = wal(&t).await - wal_before;
    out("load.entries", written);
    out("load.calls", i);
    out("load.transactions", transactions);
    out("load.seconds", format!("{:.2}", wall.as_secs_f64()));
    out("load.append_seconds", format!("{:.2}", in_append.as_secs_f64()));
    out("load.entries_per_s", format!("{:.0}", written as f64 / in_append.as_secs_f64()));
    out("load.wal_bytes", wal_load);
    out("load.wal_bytes_per_entry", format!("{:.0}", wal_load as f64 / written as f64));
    out(
        "load.wal_bytes_per_entry_less_background",
        format!("{:.0}", (wal_load as f64 - background * wall.as_secs_f64()).max(0.0) / written as f64),
    );

    // 2. Size.
    t.execute("ANALYZE resolution_audit").await.unwrap();
    t.execute("ANALYZE call_completions").await.unwrap();
    let mut total_bytes = 0i64;
    let mut total_rows = 0i64;
    for table in ["resolution_audit", "call_completions"] {
        let partition = jan.partition(table);
        let rows = scalar(&t, &format!("SELECT COUNT(*) FROM {partition}")).await;
        let heap = scalar(&t, &format!("SELECT pg_table_size('{partition}')")).await;
        let indexes = scalar(&t, &format!("SELECT pg_indexes_size('{partition}')")).await;
        let total = scalar(&t, &format!("SELECT pg_total_relation_size('{partition}')")).await;
        total_bytes += total;
        total_rows += rows;
        out(&format!("size.{table}.rows"), rows);
        out(&format!("size.{table}.heap_bytes_per_row"), format!("{:.1}", heap as f64 / rows as f64));
        out(&format!("size.{table}.index_bytes_per_row"), format!("{:.1}", indexes as f64 / rows as f64));
        out(&format!("size.{table}.total_bytes_per_row"), format!("{:.1}", total as f64 / rows as f64));
        out(&format!("size.{table}.total_bytes"), total);
        let per_index = sqlx::query_as::<sqlx::Any, (String, i64)>(&format!(
            "SELECT CAST(c.relname AS TEXT), CAST(pg_relation_size(c.oid) AS BIGINT) FROM pg_index AS i \
             JOIN pg_class AS c ON c.oid = i.indexrelid WHERE i.indrelid = CAST('{partition}' AS regclass) \
             ORDER BY c.relname"
        ))
        .fetch_all(t.pool())
        .await
        .unwrap();
        for (index, bytes) in per_index {
            let short = index.trim_start_matches(&format!("{partition}_"));
            out(&format!("size.{table}.index.{short}"), format!("{:.1}", bytes as f64 / rows as f64));
        }
    }
    out("size.month_entries", total_rows);
    out("size.bytes_per_entry", format!("{:.1}", total_bytes as f64 / total_rows as f64));

    // 3. Verify.
    eprintln!("verifying every org…");
    let started = Instant::now();
    let mut checked = 0u64;
    for org in &orgs {
        let report = store.verify_audit(Some(&org.id)).await.unwrap();
        assert!(report.ok, "{report:?}");
        checked += report.checked;
    }
    let seconds = started.elapsed().as_secs_f64();
    out("verify.entries", checked);
    out("verify.seconds", format!("{seconds:.2}"));
    out("verify.entries_per_s", format!("{:.0}", checked as f64 / seconds));

    // 4. Archive: January of each org, one JSON object per entry, per chain in order.
    if let Some(dir) = &archive_dir {
        eprintln!("writing the January archive of every org to {dir}…");
        let started = Instant::now();
        let (mut lines, mut bytes) = (0u64, 0u64);
        for org in &orgs {
            let path = std::path::Path::new(dir).join(format!("{}-{jan}.jsonl", org.id));
            let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
            for line in archive_lines(&t, &org.id, jan).await {
                file.write_all(line.as_bytes()).unwrap();
                file.write_all(b"\n").unwrap();
                lines += 1;
                bytes += line.len() as u64 + 1;
            }
            file.flush().unwrap();
        }
        out("archive.lines", lines);
        out("archive.bytes", bytes);
        out("archive.bytes_per_line", format!("{:.1}", bytes as f64 / lines as f64));
        out("archive.seconds", format!("{:.2}", started.elapsed().as_secs_f64()));
    }

    if std::env::var("BENCH_KEEP").is_ok_and(|v| v == "1") {
        eprintln!("keeping the database, as loaded: {}", t.url());
        std::mem::forget(t);
        return;
    }

    // 5. Retention: January dropped whole, February row by row, a live writer alongside.
    let jan_rows = scalar(&t, &format!("SELECT COUNT(*) FROM {}", jan.partition("resolution_audit"))).await
        + scalar(&t, &format!("SELECT COUNT(*) FROM {}", jan.partition("call_completions"))).await;
    let feb_rows = scalar(&t, &format!("SELECT COUNT(*) FROM {}", feb.partition("resolution_audit"))).await
        + scalar(&t, &format!("SELECT COUNT(*) FROM {}", feb.partition("call_completions"))).await;
    let stop = Arc::new(AtomicBool::new(false));
    let live = live_writer(store.clone(), Arc::clone(&stop));
    tokio::time::sleep(Duration::from_millis(500)).await;

    eprintln!("dropping January ({jan_rows} entries)…");
    let cut = ts(jan.end_us());
    let cuts = RetentionCuts { orgs: orgs.iter().map(|o| (o.id, cut)).collect(), no_org: Some(cut) };
    let wal_before = wal(&t).await;
    let started = Instant::now();
    let report = store.drop_expired_audit_partitions(&cuts).await.unwrap();
    let drop_seconds = started.elapsed().as_secs_f64();
    let drop_wal = wal(&t).await - wal_before;
    assert_eq!(report.dropped.len(), 1, "{report:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut during_drop = live.await.unwrap();
    let dropped = &report.dropped[0];
    out("drop.entries", jan_rows);
    out("drop.anchors", dropped.anchors);
    out("drop.stragglers", dropped.stragglers);
    out("drop.seconds", format!("{drop_seconds:.3}"));
    out("drop.wal_bytes", drop_wal);
    let (max, p99, n) = worst(&mut during_drop);
    out("drop.live_append_max_ms", format!("{max:.1}"));
    out("drop.live_append_p99_ms", format!("{p99:.1}"));
    out("drop.live_appends", n);

    eprintln!("purging February row by row ({feb_rows} entries)…");
    let stop = Arc::new(AtomicBool::new(false));
    let live = live_writer(store.clone(), Arc::clone(&stop));
    let cut = ts(feb.end_us());
    let wal_before = wal(&t).await;
    let started = Instant::now();
    let mut purged = 0;
    for org in &orgs {
        purged += store.purge_audit(Some(&org.id), cut).await.unwrap();
    }
    let purge_seconds = started.elapsed().as_secs_f64();
    let purge_wal = wal(&t).await - wal_before;
    stop.store(true, Ordering::Relaxed);
    let mut during_purge = live.await.unwrap();
    out("purge.entries", purged);
    out("purge.seconds", format!("{purge_seconds:.3}"));
    out("purge.entries_per_s", format!("{:.0}", purged as f64 / purge_seconds));
    out("purge.wal_bytes", purge_wal);
    out("purge.wal_bytes_per_entry", format!("{:.0}", purge_wal as f64 / purged.max(1) as f64));
    let (max, p99, n) = worst(&mut during_purge);
    out("purge.live_append_max_ms", format!("{max:.1}"));
    out("purge.live_append_p99_ms", format!("{p99:.1}"));
    out("purge.live_appends", n);
    out("purge_vs_drop", format!("{:.0}", purge_seconds / drop_seconds.max(1e-6)));

    // Every chain still verifies from its anchor.
    for org in &orgs {
        let report = store.verify_audit(Some(&org.id)).await.unwrap();
        assert!(report.ok, "{report:?}");
    }
    out("after.verified", "ok");
}

/// The archive lines of `org`'s entries in `month`, per chain in position order.
async fn archive_lines(t: &TestStore, org: &OrgId, month: AuditMonth) -> Vec<String> {
    let resolution = format!(
        "SELECT segment, segment_seq, CAST(json_build_object('v', 1, 'table', 'resolution_audit', 'seq', seq, \
         'segment', segment, 'segment_seq', segment_seq, 'at_us', at_us, 'call_id', call_id, 'org_id', org_id, \
         'team_id', team_id, 'workflow_id', workflow_id, 'token_id', token_id, 'credential_id', credential_id, \
         'credential_version', credential_version, 'fingerprint', fingerprint, 'provider', provider, 'model', model, \
         'model_family', model_family, 'capability', capability, 'mode', mode, 'outcome', outcome, \
         'reason', reason, 'detail', detail, 'tier', tier, 'credential_owner', credential_owner, \
         'prev_hash', encode(prev_hash, 'hex'), 'hash', encode(hash, 'hex')) AS TEXT) AS line \
         FROM {} WHERE org_id = $1",
        month.partition("resolution_audit")
    );
    let completion = format!(
        "SELECT segment, segment_seq, CAST(json_build_object('v', 1, 'table', 'call_completions', 'seq', seq, \
         'segment', segment, 'segment_seq', segment_seq, 'call_id', call_id, 'org_id', org_id, \
         'credential_id', credential_id, 'at_us', at_us, 'upstream_status', upstream_status, \
         'latency_us', latency_us, 'input_tokens', input_tokens, 'output_tokens', output_tokens, 'status', status, \
         'team_id', team_id, 'tier', tier, 'credential_owner', credential_owner, 'provider', provider, \
         'model_family', model_family, 'rate_card', rate_card, 'provider_price', provider_price, \
         'resolution_seq', resolution_seq, 'prev_hash', encode(prev_hash, 'hex'), 'hash', encode(hash, 'hex')) \
         AS TEXT) AS line FROM {} WHERE org_id = $1",
        month.partition("call_completions")
    );
    let sql = format!("{resolution} UNION ALL {completion} ORDER BY segment, segment_seq");
    sqlx::query_as::<sqlx::Any, (String, i64, String)>(&sql)
        .bind(org.to_string())
        .fetch_all(t.pool())
        .await
        .unwrap()
        .into_iter()
        .map(|(_, _, line)| compact(&line))
        .collect()
}

/// JSON text without the blanks PostgreSQL puts around `:` and `,` (outside strings).
fn compact(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !c.is_whitespace() {
            out.push(c);
        }
    }
    out
}
