//! The store heals itself after a write fails for lack of space: the failed transaction
//! leaves the writer usable, readiness says the store cannot write while it cannot, and
//! nothing acknowledged is lost.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use byok_crypto::WrappedDek;
use byok_domain::{
    Actor, AdminTokenId, EventId, KmsName, LifecycleKind, Name, Org, OrgId, OrgState, Outcome, ProviderId,
    ResolutionAudit, Tier, Timestamp,
};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use byok_store::testing::sqlx::{self, Connection as _, Executor as _};
use byok_store::testing::{for_each_backend, TestStore};
use byok_store::{AuditEntry, AuditFilter, Backend, NewEvent, Segment, Store, StoreError};
use serde_json::json;

fn now() -> Timestamp {
    Timestamp::now()
}

async fn new_org(store: &Store, org_name: &str) -> Org {
    let org = Org {
        id: OrgId::generate(),
        name: Name::parse(org_name).unwrap(),
        tier: Tier::KatmanB,
        state: OrgState::Active,
        kek_version: 1,
        kms: KmsName::default(),
        kms_moving_from: None,
        retention_days: None,
        rate_card: None,
        budget: Default::default(),
        controls: Default::default(),
        limits: Default::default(),
        created_at: now(),
    };
    let wrapped =
        WrappedDek { kek_version: 1, alg: "A256GCM-KW".to_owned(), bytes: vec![0xAA; 60], kms: KmsName::default() };
    let event = NewEvent {
        id: EventId::generate(),
        org_id: org.id,
        kind: LifecycleKind::OrgCreated,
        subject: org.id.to_string(),
        credential_id: None,
        version: None,
        fingerprint: None,
        actor: Actor::AdminToken { id: AdminTokenId::generate() },
        at: now(),
        details: json!({"note": "self-healing test"}),
    };
    store.insert_org(&org, &wrapped, &event).await.unwrap();
    org
}

/// A denied resolution row with a detail of `pad` bytes (to make batches big).
fn row(org: OrgId, call_id: String, pad: usize) -> AuditEntry {
    AuditEntry::Resolution(ResolutionAudit {
        seq: 0,
        at: now(),
        call_id,
        org_id: Some(org),
        team_id: None,
        workflow_id: None,
        token_id: None,
        credential_id: None,
        credential_version: None,
        fingerprint: None,
        provider: Some(ProviderId::Openai),
        model: None,
        model_family: None,
        capability: None,
        mode: None,
        outcome: Outcome::Denied,
        reason: Some("no_credential".into()),
        detail: Some("x".repeat(pad)),
        tier: Some(Tier::KatmanB),
        credential_owner: None,
        attempt: None,
    })
}

fn batch(org: OrgId, tag: &str, n: usize, pad: usize) -> Vec<AuditEntry> {
    (0..n).map(|i| row(org, format!("{tag}-{i}"), pad)).collect()
}

async fn audit_rows(store: &Store, org: &OrgId) -> Vec<ResolutionAudit> {
    let mut rows: Vec<ResolutionAudit> = Vec::new();
    loop {
        let filter = AuditFilter { after_seq: rows.last().map(|r| r.seq), limit: Some(5000), ..AuditFilter::default() };
        let page = store.list_audit(Some(org), &filter).await.unwrap();
        if page.is_empty() {
            return rows;
        }
        rows.extend(page);
    }
}

fn assert_full(err: &StoreError) {
    assert!(err.is_unavailable(), "{err}");
    assert!(err.to_string().contains("full"), "{err}");
}

/// Writes through several write paths, one after another and then at once (so that on
/// PostgreSQL every pooled connection is used).
async fn writes_work(store: &Store, org: &Org, tag: &str) {
    let mut segment = Segment::new();
    store.append_audit(&mut segment, &batch(org.id, tag, 5, 10)).await.unwrap_or_else(|e| panic!("{tag}: {e}"));
    new_org(store, &format!("{tag}-org")).await;
    let writes = (0..24).map(|i| {
        let store = store.clone();
        let org = org.id;
        let tag = format!("{tag}-{i}");
        async move { store.append_audit(&mut Segment::new(), &batch(org, &tag, 2, 10)).await }
    });
    for (i, outcome) in futures_join_all(writes).await.into_iter().enumerate() {
        outcome.unwrap_or_else(|e| panic!("{tag}: concurrent write {i}: {e}"));
    }
}

/// `futures::future::join_all` without the dependency: spawn each and await in order.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

/// SQLite's `PRAGMA data_version` seen from a connection of its own: it changes when
/// another connection commits.
struct DataVersion(sqlx::AnyConnection);

impl DataVersion {
    async fn open(t: &TestStore) -> Self {
        Self(sqlx::AnyConnection::connect(t.url()).await.unwrap())
    }

    async fn get(&mut self) -> i64 {
        sqlx::query_scalar::<sqlx::Any, i64>("PRAGMA data_version").fetch_one(&mut self.0).await.unwrap()
    }
}

// ----- a transaction the database ended on its own ----------------------------------------

/// The root cause, reproduced without a full disk: a single-row insert that needs more
/// pages than `max_page_count` allows fails with `SQLITE_FULL`, and (no statement journal)
/// SQLite rolls the whole transaction back by itself. sqlx still counted the connection
/// as inside a transaction, and every later write on the single writer connection failed
/// with "attempted to call begin_with at non-zero transaction depth" until a restart.
#[tokio::test]
async fn a_transaction_sqlite_rolled_back_on_its_own_does_not_wedge_the_writer() {
    let t = TestStore::sqlite().await.unwrap();
    let store = t.store();
    let org = new_org(store, "acme").await;
    t.execute("CREATE TABLE filler (b BLOB)").await.unwrap();
    for round in 0..3 {
        let pages = t.query_i64("PRAGMA page_count").await.unwrap();
        t.execute(&format!("PRAGMA max_page_count = {pages}")).await.unwrap();
        {
            let mut tx = t.pool().begin().await.unwrap();
            let err = tx.execute("INSERT INTO filler VALUES (zeroblob(1000000))").await.unwrap_err();
            assert!(err.to_string().contains("full"), "{err}");
            // Dropped here: the ROLLBACK sqlx queues finds no transaction.
        }
        if round == 0 {
            // Readiness hears of it (the probe itself runs on the fresh connection)…
            let err = store.check_writable().await.unwrap_err().to_string();
            assert!(err.contains("store cannot write") && err.contains("replaced"), "{err}");
            // …for a while: then the probe decides.
            tokio::time::sleep(Duration::from_millis(1100)).await;
            store.check_writable().await.unwrap();
        }
        writes_work(store, &org, &format!("round-{round}")).await;
        assert_eq!(t.count("filler").await.unwrap(), 0);
    }
    assert!(store.verify_audit(Some(&org.id)).await.unwrap().ok);
}

/// An audit batch that does not fit (SQLite says the database is full) is rolled back
/// whole: it leaves nothing, its segment does not move, and the next batch links on —
/// on a fresh audit connection, with its statements prepared again, as the writer
/// replaces its connection after any failed batch.
#[tokio::test]
async fn an_audit_batch_that_does_not_fit_leaves_nothing_and_the_next_links_on() {
    let t = TestStore::sqlite().await.unwrap();
    let store = t.store();
    let org = new_org(store, "acme").await;
    let mut segment = Segment::new();
    store.append_audit(&mut segment, &batch(org.id, "before", 10, 10)).await.unwrap();
    let mut expected = 10;
    for round in 0..3 {
        let pages = t.query_i64("PRAGMA page_count").await.unwrap();
        // `max_page_count` is per connection: set on the one audit batches are written on
        // (the fresh one opened after the failure has the default again).
        t.execute_on_audit_connection(&format!("PRAGMA max_page_count = {pages}")).await.unwrap();
        let err =
            store.append_audit(&mut segment, &batch(org.id, &format!("full-{round}"), 200, 500)).await.unwrap_err();
        assert_full(&err);
        store.append_audit(&mut segment, &batch(org.id, &format!("after-{round}"), 50, 10)).await.unwrap();
        expected += 50;
    }
    let rows = audit_rows(store, &org.id).await;
    assert_eq!(rows.len(), expected);
    assert!(rows.iter().all(|r| !r.call_id.starts_with("full-")), "a failed batch left rows behind");
    let report = store.verify_audit(Some(&org.id)).await.unwrap();
    assert!(report.ok, "{report:?}");
}

/// A `COMMIT` that fails (a deferred foreign key) leaves every pooled connection usable,
/// on both backends: on PostgreSQL the failed `COMMIT` ends the transaction, on SQLite
/// the transaction stays open and the dropped transaction's `ROLLBACK` ends it.
#[tokio::test]
async fn a_failed_commit_leaves_every_connection_usable() {
    for_each_backend("a_failed_commit_leaves_every_connection_usable", |t| async move {
        let store = t.store();
        let org = new_org(store, "acme").await;
        t.execute("CREATE TABLE heal_parent (id BIGINT PRIMARY KEY)").await.unwrap();
        t.execute("CREATE TABLE heal_child (parent BIGINT REFERENCES heal_parent (id) DEFERRABLE INITIALLY DEFERRED)")
            .await
            .unwrap();
        for round in 0..3 {
            let mut tx = t.pool().begin().await.unwrap();
            tx.execute("INSERT INTO heal_child VALUES (1)").await.unwrap();
            let err = tx.commit().await.unwrap_err();
            assert!(err.to_string().to_ascii_lowercase().contains("foreign key"), "{err}");
            writes_work(store, &org, &format!("round-{round}")).await;
        }
        assert_eq!(t.count("heal_child").await.unwrap(), 0);
        store.check_writable().await.unwrap();
        assert!(store.verify_audit(Some(&org.id)).await.unwrap().ok);
    })
    .await
    .unwrap();
}

// ----- readiness ------------------------------------------------------------------------------

/// The write probe really commits, and at most once a second however often it is asked.
#[tokio::test]
async fn the_write_probe_commits_at_most_once_a_second() {
    for_each_backend("the_write_probe_commits_at_most_once_a_second", |t| async move {
        let store = t.store();
        store.check_writable().await.unwrap();
        if t.backend() != Backend::Sqlite {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let mut version = DataVersion::open(&t).await;
        let before = version.get().await;
        for _ in 0..50 {
            store.check_writable().await.unwrap();
        }
        let after = version.get().await;
        assert_ne!(before, after, "the probe committed nothing");
        for _ in 0..50 {
            store.check_writable().await.unwrap();
        }
        assert_eq!(version.get().await, after, "the probe ran again within a second");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        store.check_writable().await.unwrap();
        assert_ne!(version.get().await, after, "the probe did not run again after a second");
        // `user_version` is as it was.
        assert_eq!(t.query_i64("PRAGMA user_version").await.unwrap(), 0);
    })
    .await
    .unwrap();
}

/// A closed store cannot write.
#[tokio::test]
async fn a_closed_store_cannot_write() {
    let t = TestStore::sqlite().await.unwrap();
    t.store().close().await;
    let err = t.store().check_writable().await.unwrap_err();
    assert!(err.to_string().contains("store cannot write"), "{err}");
}

// ----- a real full disk -------------------------------------------------------------------------

/// A tmpfs of `size_mb` MiB mounted on a fresh temporary directory, unmounted (and the
/// directory removed) on drop. Only root may mount: `Err` says why the test is skipped.
pub struct Tmpfs {
    mountpoint: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn mount(size_mb: u32) -> Result<Tmpfs, String> {
        let status = std::fs::read_to_string("/proc/self/status").map_err(|e| format!("cannot read /proc: {e}"))?;
        let euid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            .ok_or("no Uid line in /proc/self/status")?;
        if euid != "0" {
            return Err(format!("mounting a tmpfs needs root (euid {euid})"));
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mountpoint = dir.path().join("tmpfs");
        std::fs::create_dir(&mountpoint).map_err(|e| e.to_string())?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mb}m,mode=0700"), "tmpfs"])
            .arg(&mountpoint)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !output.status.success() {
            return Err(format!("mount is not permitted here: {}", String::from_utf8_lossy(&output.stderr).trim()));
        }
        Ok(Tmpfs { mountpoint, _dir: dir })
    }

    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// Write a filler file until the file system is full; returns its path.
    pub fn fill(&self) -> PathBuf {
        let path = self.mountpoint.join("filler");
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        loop {
            match file.write(&chunk) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        // Whatever is left is smaller than a page: fill it byte by byte.
        while let Ok(1..) = file.write(&chunk[..1]) {}
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        for args in [&["--"][..], &["-l", "--"][..]] {
            let ok = Command::new("umount").args(args).arg(&self.mountpoint).status().is_ok_and(|s| s.success());
            if ok {
                return;
            }
        }
        eprintln!("could not unmount the test tmpfs at {}", self.mountpoint.display());
    }
}

/// On a tmpfs that is filled and emptied: writes fail closed while it is full (the
/// `COMMIT` cannot append to the WAL), readiness says the store cannot write, and when
/// the space comes back writes succeed again on the same `Store`, with every
/// acknowledged row kept, no row of a failed batch, and chains that verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_writes_closed_and_the_store_recovers_when_space_returns() {
    let tmpfs = match Tmpfs::mount(16) {
        Ok(tmpfs) => tmpfs,
        Err(why) => {
            let _ = writeln!(
                std::io::stderr(),
                "skipped a_full_disk_fails_writes_closed_and_the_store_recovers_when_space_returns: {why}"
            );
            return;
        }
    };
    let store = Store::open_sqlite(&tmpfs.path().join("byok.db")).await.unwrap();
    let org = new_org(&store, "acme").await;
    let mut segment = Segment::new();
    let mut acknowledged = 0usize;
    let mut failed_batches = 0usize;
    store.append_audit(&mut segment, &batch(org.id, "ok-0", 20, 200)).await.unwrap();
    acknowledged += 20;
    store.check_writable().await.unwrap();

    let filler = tmpfs.fill();
    let started = Instant::now();
    let mut first_error = None;
    for i in 1..20_000 {
        match store.append_audit(&mut segment, &batch(org.id, &format!("ok-{i}"), 20, 200)).await {
            Ok(()) => acknowledged += 20,
            Err(err) => {
                first_error = Some(err);
                break;
            }
        }
    }
    let err = first_error.expect("the writes never failed on a full tmpfs");
    assert!(err.is_unavailable(), "{err}");
    eprintln!("full after {acknowledged} rows: {err}");
    // Still full: every write fails closed, none wedges, and readiness says so.
    for i in 0..5 {
        let err = store.append_audit(&mut segment, &batch(org.id, &format!("full-{i}"), 20, 200)).await.unwrap_err();
        assert!(err.is_unavailable(), "{err}");
        assert!(!err.to_string().contains("transaction depth"), "{err}");
        failed_batches += 1;
    }
    let not_ready = store.check_writable().await.unwrap_err();
    assert!(not_ready.to_string().contains("store cannot write"), "{not_ready}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let not_ready = store.check_writable().await.unwrap_err();
    assert!(not_ready.to_string().contains("store cannot write"), "{not_ready}");
    eprintln!("readiness while full: {not_ready}");

    // Space again: the same store writes at once.
    std::fs::remove_file(&filler).unwrap();
    for i in 0..20 {
        store.append_audit(&mut segment, &batch(org.id, &format!("after-{i}"), 20, 200)).await.unwrap();
        acknowledged += 20;
    }
    new_org(&store, "after").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Err(err) = store.check_writable().await {
        assert!(Instant::now() < deadline, "still not ready after the space came back: {err}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let rows = audit_rows(&store, &org.id).await;
    assert_eq!(rows.len(), acknowledged, "acknowledged rows lost or failed rows kept");
    assert!(rows.iter().all(|r| r.call_id.starts_with("ok-") || r.call_id.starts_with("after-")));
    let report = store.verify_audit(Some(&org.id)).await.unwrap();
    assert!(report.ok, "{report:?}");
    store.close().await;
    // Reopened, it reads the same.
    let again = Store::open_sqlite(&tmpfs.path().join("byok.db")).await.unwrap();
    assert_eq!(audit_rows(&again, &org.id).await.len(), acknowledged);
    assert!(again.verify_audit(Some(&org.id)).await.unwrap().ok);
    again.close().await;
    eprintln!(
        "full disk: {acknowledged} rows acknowledged and kept, {failed_batches} batches refused while full, {:.1?}",
        started.elapsed()
    );
}
