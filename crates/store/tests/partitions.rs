//! The audit tables partitioned by month on PostgreSQL: partitions made ahead of time,
//! rows the DEFAULT partition caught moved into their month, whole months dropped by
//! retention with every chain still verifiable, and the migration of plain tables.
//! SQLite stays unpartitioned (the partition calls do nothing there).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::Write as _;

use byok_domain::{CallCompletion, CredentialId, OrgId, Outcome, ResolutionAudit, Timestamp};
use byok_store::testing::{for_each_backend, sqlx, TestStore, POSTGRES_URL_VAR};
use byok_store::{AuditEntry, AuditFilter, AuditMonth, Backend, RetentionCuts, Segment, Store, MONTHS_AHEAD};
use sqlx::{Connection as _, Executor as _};

const DAY: i64 = 86_400_000_000;

fn month(year: i32, month: u32) -> AuditMonth {
    AuditMonth::new(year, month).unwrap()
}

/// A moment `days` (and `us`) after the start of `m`.
fn into(m: AuditMonth, days: i64, us: i64) -> i64 {
    m.start_us() + days * DAY + us
}

fn ts(at_us: i64) -> Timestamp {
    Timestamp::from_micros(at_us).unwrap()
}

fn row(org: Option<OrgId>, at_us: i64, call: &str, outcome: Outcome) -> ResolutionAudit {
    ResolutionAudit {
        at: ts(at_us),
        org_id: org,
        credential_id: org.map(|_| CredentialId::generate()),
        outcome,
        reason: (outcome == Outcome::Denied).then(|| "no_credential".to_owned()),
        ..ResolutionAudit::denied(call.to_owned())
    }
}

fn completion(org: OrgId, at_us: i64, call: &str) -> CallCompletion {
    CallCompletion {
        call_id: call.to_owned(),
        org_id: org,
        credential_id: CredentialId::generate(),
        at: ts(at_us),
        upstream_status: Some(200),
        latency_us: 1_000,
        input_tokens: Some(10),
        output_tokens: Some(5),
        status: "completed".to_owned(),
        metering: None,
    }
}

/// An allowed call of `org` at `at_us`: its row and its completion a millisecond later.
fn call(org: OrgId, at_us: i64, call_id: &str) -> Vec<AuditEntry> {
    vec![
        AuditEntry::Resolution(row(Some(org), at_us, call_id, Outcome::Allowed)),
        AuditEntry::Completion(completion(org, at_us + 1_000, call_id)),
    ]
}

fn denied(org: Option<OrgId>, at_us: i64, call_id: &str) -> Vec<AuditEntry> {
    vec![AuditEntry::Resolution(row(org, at_us, call_id, Outcome::Denied))]
}

async fn verify_all(store: &Store, orgs: &[Option<OrgId>]) {
    for org in orgs {
        let report = store.verify_audit(org.as_ref()).await.unwrap();
        assert!(report.ok, "verify {org:?}: {report:?}");
    }
}

async fn count(t: &TestStore, sql: &str) -> i64 {
    t.query_i64(sql).await.unwrap()
}

/// Entries of an org (`None`: no org) in both tables.
async fn entries_of(t: &TestStore, org: Option<OrgId>) -> i64 {
    let clause = org.map_or_else(|| "org_id IS NULL".to_owned(), |o| format!("org_id = '{o}'"));
    count(t, &format!("SELECT COUNT(*) FROM resolution_audit WHERE {clause}")).await
        + count(t, &format!("SELECT COUNT(*) FROM call_completions WHERE {clause}")).await
}

fn cuts(orgs: &[(OrgId, i64)], no_org: i64) -> RetentionCuts {
    RetentionCuts { orgs: orgs.iter().map(|(o, c)| (*o, ts(*c))).collect(), no_org: Some(ts(no_org)) }
}

async fn postgres() -> Option<TestStore> {
    let store = TestStore::postgres().await.unwrap();
    if store.is_none() {
        let _ = writeln!(std::io::stderr(), "skipped on postgres: {POSTGRES_URL_VAR} is not set");
    }
    store
}

#[tokio::test]
async fn a_store_makes_the_coming_months_partitions_and_sqlite_stays_plain() {
    for_each_backend("coming_months", |t| async move {
        let store = t.store();
        let partitions = store.audit_partitions().await.unwrap();
        match t.backend() {
            Backend::Sqlite => {
                assert!(partitions.is_empty());
                let report = store.maintain_audit_partitions(Timestamp::now(), &RetentionCuts::default()).await;
                assert_eq!(report.unwrap(), Default::default());
            }
            Backend::Postgres => {
                let mut expected = AuditMonth::containing(Timestamp::now());
                for _ in 0..=MONTHS_AHEAD {
                    for table in ["resolution_audit", "call_completions"] {
                        assert!(partitions[table].contains(&expected.partition(table)), "{partitions:?}");
                        assert!(partitions[table].contains(&format!("{table}_default")));
                    }
                    expected = expected.next();
                }
                // Again: nothing to do.
                let again = store.ensure_audit_partitions(Timestamp::now()).await.unwrap();
                assert!(again.created.is_empty() && !again.busy, "{again:?}");
                // A year on: three more months each.
                let later = Timestamp::from_micros(Timestamp::now().as_micros() + 365 * DAY).unwrap();
                let made = store.ensure_audit_partitions(later).await.unwrap();
                assert_eq!(made.created.len(), 2 * (MONTHS_AHEAD as usize + 1), "{made:?}");
            }
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn rows_the_default_partition_caught_move_into_their_month() {
    let Some(t) = postgres().await else { return };
    let store = t.store();
    let org = OrgId::generate();
    let august = month(2031, 8);
    let mut segment = Segment::new();
    let mut entries = Vec::new();
    for day in 0..5 {
        entries.extend(call(org, into(august, day, 0), &format!("aug-{day}")));
    }
    // Beyond any partition the store makes: DEFAULT takes it, the insert never fails.
    entries.extend(call(org, into(month(2250, 1), 0, 0), "far-future"));
    entries.extend(denied(Some(org), -5, "before-1970"));
    store.append_audit(&mut segment, &entries).await.unwrap();
    assert_eq!(count(&t, "SELECT COUNT(*) FROM resolution_audit_default").await, 7);
    assert_eq!(count(&t, "SELECT COUNT(*) FROM call_completions_default").await, 6);

    let report = store.ensure_audit_partitions(ts(into(august, 3, 0))).await.unwrap();
    assert!(report.created.contains(&"resolution_audit_p2031_08".to_owned()), "{report:?}");
    assert_eq!(count(&t, "SELECT COUNT(*) FROM resolution_audit_p2031_08").await, 5);
    assert_eq!(count(&t, "SELECT COUNT(*) FROM call_completions_p2031_08").await, 5);
    assert_eq!(count(&t, "SELECT COUNT(*) FROM resolution_audit_default").await, 2);
    assert_eq!(count(&t, "SELECT COUNT(*) FROM call_completions_default").await, 1);
    // Every row is still found where queries look, in seq order, and the chain verifies.
    let rows = store.list_audit(Some(&org), &AuditFilter::default()).await.unwrap();
    assert_eq!(rows.len(), 7);
    assert!(rows.windows(2).all(|w| w[0].seq < w[1].seq));
    verify_all(store, &[Some(org)]).await;
    // The moved partitions got every index of the parent.
    let indexes = count(&t, "SELECT COUNT(*) FROM pg_indexes WHERE tablename = 'resolution_audit_p2031_08'").await;
    assert_eq!(
        indexes,
        count(&t, "SELECT COUNT(*) FROM pg_indexes WHERE tablename = 'resolution_audit_default'").await
    );
}

/// Three orgs' chains over January to March 2024, written by two writers; one chain's
/// entries cross the end of January out of time order.
struct Months {
    t: TestStore,
    short: OrgId,
    long: OrgId,
    /// Entries of each org (and of no org) per month of their time.
    written: BTreeMap<(Option<OrgId>, AuditMonth), i64>,
}

async fn three_months(t: TestStore) -> Months {
    let store = t.store();
    let (jan, feb, mar) = (month(2024, 1), month(2024, 2), month(2024, 3));
    // Partitions for January to June (the store makes three months from "now").
    store.ensure_audit_partitions(ts(jan.start_us())).await.unwrap();
    store.ensure_audit_partitions(ts(month(2024, 4).start_us())).await.unwrap();
    let (short, long) = (OrgId::generate(), OrgId::generate());
    let mut written: BTreeMap<(Option<OrgId>, AuditMonth), i64> = BTreeMap::new();
    let mut note = |entries: &[AuditEntry]| {
        for entry in entries {
            let (org, at) = match entry {
                AuditEntry::Resolution(r) => (r.org_id, r.at),
                AuditEntry::Completion(c) | AuditEntry::BoundCompletion { completion: c, .. } => (Some(c.org_id), c.at),
            };
            *written.entry((org, AuditMonth::containing(at))).or_default() += 1;
        }
    };
    let mut first = Segment::new();
    for (m, days) in [(jan, 10..31), (feb, 1..28), (mar, 0..20)] {
        for day in days.step_by(3) {
            let mut batch = Vec::new();
            for org in [short, long] {
                batch.extend(call(org, into(m, day, 0), &format!("{org}-{m}-{day}")));
            }
            batch.extend(denied(None, into(m, day, 5), &format!("anon-{m}-{day}")));
            note(&batch);
            store.append_audit(&mut first, &batch).await.unwrap();
        }
        if m == jan {
            // Across the end of January out of order: an entry of February 1st, then
            // one of January 31st in the same chain.
            let batch = [
                denied(Some(short), feb.start_us() + 1_000_000, "just-after"),
                denied(Some(short), feb.start_us() - 1_000_000, "just-before"),
            ]
            .concat();
            note(&batch);
            store.append_audit(&mut first, &batch).await.unwrap();
        }
    }
    // A second writer, started in February.
    let mut second = Segment::new();
    for (m, days) in [(feb, 10..28), (mar, 0..20)] {
        for day in days.step_by(4) {
            let batch = [call(short, into(m, day, 7), "w2"), call(long, into(m, day, 9), "w2")].concat();
            note(&batch);
            store.append_audit(&mut second, &batch).await.unwrap();
        }
    }
    verify_all(store, &[Some(short), Some(long), None]).await;
    Months { t, short, long, written }
}

#[tokio::test]
async fn dropping_whole_months_keeps_every_chain_verifiable() {
    let Some(t) = postgres().await else { return };
    let Months { t, short, long, written } = three_months(t).await;
    let store = t.store();
    let (jan, feb, mar) = (month(2024, 1), month(2024, 2), month(2024, 3));
    let orgs = [Some(short), Some(long), None];

    // Every retention has passed January; the short org's has not passed February.
    let feb_15 = into(feb, 14, 0);
    let report =
        store.drop_expired_audit_partitions(&cuts(&[(short, feb_15), (long, into(mar, 9, 0))], feb_15)).await.unwrap();
    assert_eq!(report.dropped.len(), 1, "{report:?}");
    let dropped = &report.dropped[0];
    assert_eq!(dropped.month, jan);
    assert_eq!(dropped.partitions, ["resolution_audit_p2024_01", "call_completions_p2024_01"]);
    // The February 1st entry that comes before January 31st in its chain went with it.
    assert_eq!(dropped.stragglers, 1);
    assert_eq!(dropped.anchors, 3, "one chain per org of the first writer");
    assert_eq!(dropped.removed.get(&Some(short)).copied(), Some((written[&(Some(short), jan)] + 1) as u64));
    assert_eq!(dropped.removed.get(&Some(long)).copied(), Some(written[&(Some(long), jan)] as u64));
    assert_eq!(dropped.removed.get(&None).copied(), Some(written[&(None, jan)] as u64));
    let held = report.held.unwrap();
    assert!(held.contains("month 2024-02") && held.contains("from 2024-02-15T00:00:00"), "{held}");
    let partitions = store.audit_partitions().await.unwrap();
    assert!(!partitions["resolution_audit"].contains(&"resolution_audit_p2024_01".to_owned()));
    assert_eq!(entries_of(&t, Some(short)).await, written[&(Some(short), feb)] + written[&(Some(short), mar)] - 1);
    assert_eq!(entries_of(&t, Some(long)).await, written[&(Some(long), feb)] + written[&(Some(long), mar)]);
    verify_all(store, &orgs).await;

    // The short org loses the first half of February row by row; still verifiable.
    let purged = store.purge_audit(Some(&short), ts(feb_15)).await.unwrap();
    assert!(purged > 0);
    verify_all(store, &orgs).await;

    // Once every retention has passed March, February and March go; April stays (its
    // end is after every cut).
    let april = into(month(2024, 4), 0, 0);
    let report = store.drop_expired_audit_partitions(&cuts(&[(short, april), (long, april)], april)).await.unwrap();
    let months: Vec<AuditMonth> = report.dropped.iter().map(|d| d.month).collect();
    assert_eq!(months, [feb, mar], "{report:?}");
    assert!(report.held.is_none() && !report.busy, "{report:?}");
    for org in orgs {
        assert_eq!(entries_of(&t, org).await, 0);
    }
    verify_all(store, &orgs).await;
    let partitions = store.audit_partitions().await.unwrap();
    assert!(partitions["call_completions"].contains(&"call_completions_p2024_04".to_owned()), "{partitions:?}");

    // The chains go on where they were: a writer's next entries link to the anchors.
    let anchors = count(&t, "SELECT COUNT(*) FROM audit_anchors").await;
    assert_eq!(anchors, 5, "two writers' chains of two orgs, and the first writer's of no org");
    // Nothing more to drop, and again nothing.
    let again = store.drop_expired_audit_partitions(&cuts(&[(short, april), (long, april)], april)).await.unwrap();
    assert!(again.dropped.is_empty() && again.held.is_none(), "{again:?}");
}

#[tokio::test]
async fn a_month_is_kept_while_an_org_must_keep_something_in_it() {
    let Some(t) = postgres().await else { return };
    let Months { t, short, long, .. } = three_months(t).await;
    let store = t.store();
    let (jan, mar) = (month(2024, 1), month(2024, 3));
    let before = count(&t, "SELECT COUNT(*) FROM resolution_audit").await;
    let late = into(mar, 25, 0);

    // An org with entries in January and no known retention holds it.
    let report = store.drop_expired_audit_partitions(&cuts(&[(short, late)], late)).await.unwrap();
    assert!(report.dropped.is_empty(), "{report:?}");
    assert!(report.held.as_deref().unwrap().contains("no known retention"), "{report:?}");
    // So does an org whose retention has not passed January's end.
    let report =
        store.drop_expired_audit_partitions(&cuts(&[(short, late), (long, into(jan, 30, 0))], late)).await.unwrap();
    assert!(report.dropped.is_empty() && report.held.as_deref().unwrap().contains(&long.to_string()));

    // A third writer: an entry of late March, then one back in January (a clock that
    // jumped). Dropping January would take the March entry with it, which its org keeps.
    let mut third = Segment::new();
    store.append_audit(&mut third, &denied(Some(long), into(mar, 20, 0), "march")).await.unwrap();
    store.append_audit(&mut third, &denied(Some(long), into(jan, 20, 0), "january")).await.unwrap();
    let report =
        store.drop_expired_audit_partitions(&cuts(&[(short, late), (long, into(mar, 10, 0))], late)).await.unwrap();
    assert!(report.dropped.is_empty(), "{report:?}");
    assert!(report.held.as_deref().unwrap().contains(third.id()), "{report:?}");
    // Nothing was touched.
    assert_eq!(count(&t, "SELECT COUNT(*) FROM resolution_audit").await, before + 2);
    assert_eq!(count(&t, "SELECT COUNT(*) FROM audit_anchors").await, 0);
    verify_all(store, &[Some(short), Some(long), None]).await;

    // When the org's retention has passed the March entry too, January goes and takes it.
    let report =
        store.drop_expired_audit_partitions(&cuts(&[(short, late), (long, into(mar, 21, 0))], late)).await.unwrap();
    assert_eq!(report.dropped.first().map(|d| d.month), Some(jan), "{report:?}");
    assert_eq!(count(&t, "SELECT COUNT(*) FROM resolution_audit WHERE call_id = 'march'").await, 0);
    verify_all(store, &[Some(short), Some(long), None]).await;
}

/// A database at schema version 9 (plain audit tables) with chained rows and anchors
/// is converted by migration 10 into partitioned tables: every row, seq and chain kept.
#[tokio::test]
async fn the_migration_partitions_existing_audit_tables() {
    let Some(source) = postgres().await else { return };
    let admin_url = std::env::var(POSTGRES_URL_VAR).unwrap();
    // Rows written by this store, with a row-wise purge behind them (anchors).
    let Months { t: source, short, long, .. } = three_months(source).await;
    let extra =
        [denied(Some(long), -DAY, "before-1970"), call(long, into(month(2250, 1), 0, 0), "far-future")].concat();
    source.store().append_audit(&mut Segment::new(), &extra).await.unwrap();
    let purged = source.store().purge_audit(Some(&short), ts(into(month(2024, 1), 20, 0))).await.unwrap();
    assert!(purged > 0);

    // A database with the schema as it was before partitioning.
    let name = format!("byok_test_{}", OrgId::generate().ulid().to_string().to_ascii_lowercase());
    let mut admin = sqlx::AnyConnection::connect(&admin_url).await.unwrap();
    admin.execute(format!("CREATE DATABASE {name}").as_str()).await.unwrap();
    let _guard = DropDatabase { admin_url: admin_url.clone(), name: name.clone() };
    let (base, _) = admin_url.rsplit_once('/').unwrap();
    let url = format!("{base}/{name}");
    let all =
        sqlx::migrate::Migrator::new(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres")))
            .await
            .unwrap();
    let before: Vec<_> = all.migrations.iter().filter(|m| m.version < 10).cloned().collect();
    let old =
        sqlx::migrate::Migrator { migrations: std::borrow::Cow::Owned(before), ..sqlx::migrate::Migrator::DEFAULT };
    let pool = sqlx::any::AnyPoolOptions::new().max_connections(1).connect(&url).await.unwrap();
    old.run(&pool).await.unwrap();
    // The rows, copied as they are (seq included), and the identity moved past them as
    // if later rows had been purged.
    for table in ["resolution_audit", "call_completions", "audit_anchors"] {
        let json: String =
            sqlx::query_scalar(&format!("SELECT CAST(COALESCE(json_agg(t), '[]') AS TEXT) FROM {table} AS t"))
                .fetch_one(source.pool())
                .await
                .unwrap();
        let overriding = if table == "audit_anchors" { "" } else { "OVERRIDING SYSTEM VALUE" };
        sqlx::query(&format!(
            "INSERT INTO {table} {overriding} SELECT * FROM json_populate_recordset(CAST(NULL AS {table}), CAST($1 AS json))"
        ))
        .bind(json)
        .execute(&pool)
        .await
        .unwrap();
    }
    let max_seq = source.query_i64("SELECT MAX(seq) FROM resolution_audit").await.unwrap();
    pool.execute(
        format!("SELECT setval(pg_get_serial_sequence('resolution_audit', 'seq'), {})", max_seq + 40).as_str(),
    )
    .await
    .unwrap();
    pool.close().await;

    let store = Store::open(&url).await.unwrap();
    let raw = sqlx::any::AnyPoolOptions::new().max_connections(1).connect(&url).await.unwrap();
    let migrated = count_at(&raw, "SELECT COUNT(*) FROM pg_partitioned_table").await;
    assert_eq!(migrated, 2);
    let partitions = store.audit_partitions().await.unwrap();
    for table in ["resolution_audit", "call_completions"] {
        for m in ["2024_01", "2024_02", "2024_03"] {
            assert!(partitions[table].contains(&format!("{table}_p{m}")), "{partitions:?}");
        }
        assert!(partitions[table].contains(&AuditMonth::containing(Timestamp::now()).partition(table)));
    }
    assert_eq!(count_at(&raw, "SELECT COUNT(*) FROM resolution_audit_default").await, 2);
    for org in [Some(short), Some(long), None] {
        let filter = AuditFilter::default();
        assert_eq!(
            store.list_audit(org.as_ref(), &filter).await.unwrap(),
            source.store().list_audit(org.as_ref(), &filter).await.unwrap()
        );
        let (new, old) =
            (store.verify_audit(org.as_ref()).await.unwrap(), source.store().verify_audit(org.as_ref()).await.unwrap());
        assert!(new.ok && old.ok && new.checked == old.checked, "{new:?} {old:?}");
    }
    for table in ["resolution_audit", "call_completions"] {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        assert_eq!(count_at(&raw, &sql).await, source.query_i64(&sql).await.unwrap());
    }
    // seq goes on after the identity's last value.
    let mut segment = Segment::new();
    store.append_audit(&mut segment, &call(long, Timestamp::now().as_micros(), "after")).await.unwrap();
    let seq = count_at(&raw, "SELECT seq FROM resolution_audit WHERE call_id = 'after'").await;
    assert_eq!(seq, max_seq + 41);
    verify_all(&store, &[Some(long)]).await;
    // Every migration applied once.
    let migrations = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres")).unwrap().count();
    assert_eq!(count_at(&raw, "SELECT COUNT(*) FROM _sqlx_migrations").await, migrations as i64);
    raw.close().await;
    store.close().await;
}

async fn count_at(pool: &sqlx::AnyPool, sql: &str) -> i64 {
    sqlx::query_scalar::<sqlx::Any, i64>(sql).fetch_one(pool).await.unwrap()
}

/// Drops a database made by a test when dropped (also when the test fails).
struct DropDatabase {
    admin_url: String,
    name: String,
}

impl Drop for DropDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let mut conn = sqlx::AnyConnection::connect(&admin_url).await.unwrap();
                conn.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str()).await.unwrap();
            })
        })
        .join();
    }
}

/// A month drop and a row-wise purge never interleave: while a purge transaction holds
/// the retention lock (shared), a drop waits for it within its lock timeout and then
/// reports `busy`, leaving everything as it was.
#[tokio::test]
async fn a_month_drop_waits_for_row_wise_purges() {
    let Some(t) = postgres().await else { return };
    let Months { t, short, long, .. } = three_months(t).await;
    let store = t.store();
    let late = into(month(2024, 4), 0, 0);
    let everything = cuts(&[(short, late), (long, late)], late);
    // What a purge transaction of `purge_audit` holds (the store's retention lock).
    let mut purge = t.pool().begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock_shared(CAST($1 AS BIGINT))")
        .bind(0x6279_6f6b_5265_746e_i64)
        .execute(&mut *purge)
        .await
        .unwrap();
    let report = store.drop_expired_audit_partitions(&everything).await.unwrap();
    assert!(report.busy && report.dropped.is_empty(), "{report:?}");
    assert!(store.audit_partitions().await.unwrap()["resolution_audit"].contains(&"resolution_audit_p2024_01".into()));
    purge.rollback().await.unwrap();
    let report = store.drop_expired_audit_partitions(&everything).await.unwrap();
    assert_eq!(report.dropped.len(), 3, "{report:?}");
    verify_all(store, &[Some(short), Some(long), None]).await;
}
