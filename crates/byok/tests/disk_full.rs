//! A full disk under load: the real `byok serve` keeps its SQLite data directory on a
//! small tmpfs that this test mounts (root only; skipped otherwise), calls flow from a
//! few clients to the mock provider, and the tmpfs is filled and emptied again.
//!
//! While it is full, calls fail closed (503 `audit_unavailable` / `store_unavailable`)
//! and none reaches the provider, and `/readyz` says the store cannot write. When the
//! space returns, calls succeed again without a restart, `/readyz` is ready, `byok audit
//! verify` passes, and every request the provider received has exactly one allowed
//! audit row (nothing acknowledged was lost, no refused call left a row).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use byok_domain::{Outcome, ResolutionAudit};
use byok_mock_provider::{MockConfig, MockProvider};
use byok_store::{AuditFilter, Store};
use serde_json::{json, Value};
use support::{clean_command, Server};

const OPENAI_KEY: &str = "sk-canary-diskfull-openai-5ca1ab1ef00d";
/// Concurrent client loops.
const CLIENTS: usize = 4;
/// The tmpfs holding the data directory.
const TMPFS_MB: u32 = 32;
/// Calls answered before the disk is filled, and again after it is emptied.
const WARM_CALLS: usize = 40;
/// How long the load runs with the disk full, once byok has noticed.
const FULL_WINDOW: Duration = Duration::from_secs(3);
/// Longest wait for any one phase.
const PHASE_DEADLINE: Duration = Duration::from_secs(60);

/// A tmpfs of `size_mb` MiB mounted on a fresh temporary directory, unmounted (and the
/// directory removed) on drop. Only root may mount: `Err` says why the test is skipped.
struct Tmpfs {
    mountpoint: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size_mb: u32) -> Result<Tmpfs, String> {
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

    fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// Write a filler file until the file system is full; returns its path.
    fn fill(&self) -> PathBuf {
        let path = self.mountpoint.join("filler");
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while let Ok(1..) = file.write(&chunk) {}
        // Whatever is left is smaller than a chunk: take it byte by byte.
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

/// How one call ended, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    /// 200 with the mock's reply.
    Answered,
    /// A refusal: status and byok error code.
    Refused(u16, String),
    /// The connection failed.
    Broken(String),
}

#[derive(Debug, Clone)]
struct Call {
    id: String,
    sent: Instant,
    done: Instant,
    seen: Seen,
}

fn marker(call_id: &str) -> String {
    format!("call {call_id}")
}

/// The call id in a request body the mock recorded.
fn call_id_in_body(body: &[u8]) -> Option<String> {
    let body: Value = serde_json::from_slice(body).ok()?;
    let content = body["messages"][0]["content"].as_str()?;
    content.strip_prefix("call ").map(str::to_owned)
}

async fn admin(client: &reqwest::Client, base: &str, token: &str, path: &str, body: Value) -> Value {
    let response = client.post(format!("{base}{path}")).bearer_auth(token).json(&body).send().await.unwrap();
    let status = response.status();
    let json: Value = response.json().await.unwrap();
    assert!(status.is_success(), "{path}: {status} {json}");
    json
}

async fn chat(client: &reqwest::Client, proxy: &str, token: &str, call_id: &str) -> Seen {
    let body = json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": marker(call_id)}],
    });
    let sent = client
        .post(format!("{proxy}/openai/v1/chat/completions"))
        .bearer_auth(token)
        .header("x-byok-call-id", call_id)
        .json(&body)
        .send()
        .await;
    let response = match sent {
        Ok(response) => response,
        Err(err) => return Seen::Broken(err.to_string()),
    };
    let status = response.status().as_u16();
    match response.text().await {
        Ok(text) if status == 200 => {
            assert!(text.contains(&format!("mock reply to: {}", marker(call_id))), "{call_id}: {text}");
            Seen::Answered
        }
        Ok(text) => {
            let code = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
                .unwrap_or(text);
            Seen::Refused(status, code)
        }
        Err(err) => Seen::Broken(err.to_string()),
    }
}

/// `/readyz`: whether it is ready, and its body.
async fn readiness(client: &reqwest::Client, admin_url: &str) -> (bool, String) {
    match client.get(format!("{admin_url}/readyz")).send().await {
        Ok(response) => {
            let ok = response.status().is_success();
            (ok, response.text().await.unwrap_or_default())
        }
        Err(err) => (false, err.to_string()),
    }
}

/// Poll `until` every 50 ms for at most `PHASE_DEADLINE`; panic with `what` and the
/// server's logs if it never holds.
async fn wait_for<F, Fut>(server: &Server, what: &str, mut until: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + PHASE_DEADLINE;
    while !until().await {
        assert!(Instant::now() < deadline, "{what}: not within {PHASE_DEADLINE:?}\n{}", server.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every resolution row of `org`, paged by `seq`.
async fn all_rows(store: &Store, org: &byok_domain::OrgId) -> Vec<ResolutionAudit> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_fail_closed_while_the_disk_is_full_and_recover_without_a_restart() {
    let tmpfs = match Tmpfs::mount(TMPFS_MB) {
        Ok(tmpfs) => tmpfs,
        Err(why) => {
            let _ = writeln!(
                std::io::stderr(),
                "skipped calls_fail_closed_while_the_disk_is_full_and_recover_without_a_restart: {why}"
            );
            return;
        }
    };
    let begun = Instant::now();
    let mock = MockProvider::start(MockConfig { openai_keys: vec![OPENAI_KEY.to_owned()], ..MockConfig::default() })
        .await
        .unwrap();
    let upstream = mock.base_url();
    let env = [("BYOK_UPSTREAM_OPENAI", upstream.as_str()), ("BYOK_LOG", "warn")];
    let data_dir = tempfile::Builder::new().prefix("byok-data").tempdir_in(tmpfs.path()).unwrap();
    let server = Server::start_in(data_dir, &env);
    let operator = std::fs::read_to_string(server.data_dir.path().join("operator.token")).unwrap();
    let operator = operator.trim().to_owned();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();

    admin(&http, &server.admin_url, &operator, "/v1/orgs", json!({"name": "acme", "tier": "katman-b"})).await;
    admin(&http, &server.admin_url, &operator, "/v1/orgs/acme/teams", json!({"name": "agents"})).await;
    admin(
        &http,
        &server.admin_url,
        &operator,
        "/v1/orgs/acme/credentials",
        json!({"name": "openai", "provider": "openai", "secret": OPENAI_KEY, "scope": {"teams": ["agents"]}}),
    )
    .await;
    let token = admin(&http, &server.admin_url, &operator, "/v1/orgs/acme/tokens", json!({"team": "agents"})).await
        ["token"]
        .as_str()
        .unwrap()
        .to_owned();

    // Load: CLIENTS loops, one call after another, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let mut loops = Vec::new();
    for client in 0..CLIENTS {
        let (proxy, token, stop) = (server.proxy_url.clone(), token.clone(), Arc::clone(&stop));
        let (answered, refused) = (Arc::clone(&answered), Arc::clone(&refused));
        loops.push(tokio::spawn(async move {
            let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
            let mut calls = Vec::new();
            for i in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let id = format!("df-{client:02}-{i:06}");
                let sent = Instant::now();
                let seen = chat(&http, &proxy, &token, &id).await;
                match &seen {
                    Seen::Answered => answered.fetch_add(1, Ordering::Relaxed),
                    Seen::Refused(..) => refused.fetch_add(1, Ordering::Relaxed),
                    Seen::Broken(why) => panic!("{id}: the connection failed: {why}"),
                };
                calls.push(Call { id, sent, done: Instant::now(), seen });
            }
            calls
        }));
    }
    let answered_now = || answered.load(Ordering::Relaxed);
    wait_for(&server, "warm-up calls answered", || async { answered_now() >= WARM_CALLS }).await;
    assert_eq!(refused.load(Ordering::Relaxed), 0, "calls refused before the disk was full:\n{}", server.logs());

    // Fill the disk.
    let filled_at = Instant::now();
    let filler = tmpfs.fill();
    wait_for(&server, "a call refused on the full disk", || async { refused.load(Ordering::Relaxed) > 0 }).await;
    let noticed = filled_at.elapsed();
    let deadline = Instant::now() + PHASE_DEADLINE;
    let full_reason = loop {
        match readiness(&http, &server.admin_url).await {
            (false, body) => break body,
            (true, _) => assert!(Instant::now() < deadline, "/readyz stayed ready on the full disk"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(full_reason.contains("store cannot write"), "{full_reason}");

    // Full and noticed: for FULL_WINDOW nothing reaches the provider.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let window_start = Instant::now();
    let reached_before = mock.request_count();
    let refused_before = refused.load(Ordering::Relaxed);
    tokio::time::sleep(FULL_WINDOW).await;
    let reached_after = mock.request_count();
    let window_end = Instant::now();
    let refused_in_window = refused.load(Ordering::Relaxed) - refused_before;
    assert_eq!(reached_after, reached_before, "calls reached the provider while the disk was full");
    assert!(refused_in_window > 0, "no call was refused while the disk was full");
    let (ready, body) = readiness(&http, &server.admin_url).await;
    assert!(!ready && body.contains("store cannot write"), "/readyz while full: {body}");

    // Space again: calls succeed without a restart.
    std::fs::remove_file(&filler).unwrap();
    let freed_at = Instant::now();
    let answered_at_free = answered_now();
    wait_for(&server, "calls answered after the space came back", || async {
        answered_now() >= answered_at_free + WARM_CALLS
    })
    .await;
    let recovered = freed_at.elapsed();
    wait_for(&server, "/readyz ready after the space came back", || {
        let (http, admin_url) = (http.clone(), server.admin_url.clone());
        async move { readiness(&http, &admin_url).await.0 }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut calls: Vec<Call> = Vec::new();
    for handle in loops {
        calls.extend(tokio::time::timeout(Duration::from_secs(60), handle).await.expect("client loop hung").unwrap());
    }

    // Every call made entirely while full was refused, fail-closed, with a store code.
    let mut in_window = 0;
    for call in calls.iter().filter(|c| c.sent >= window_start && c.done <= window_end) {
        in_window += 1;
        match &call.seen {
            Seen::Refused(503, code) if code == "audit_unavailable" || code == "store_unavailable" => {}
            other => panic!("{} was made while the disk was full and ended {other:?}", call.id),
        }
    }
    assert!(in_window > 0, "no call ran entirely inside the full window");
    // Every call made after recovery was answered once the first one was.
    let first_after =
        calls.iter().filter(|c| c.sent >= freed_at && c.seen == Seen::Answered).map(|c| c.sent).min().unwrap();
    for call in calls.iter().filter(|c| c.sent > first_after) {
        assert_eq!(call.seen, Seen::Answered, "{} after recovery", call.id);
    }
    let codes: HashSet<&str> = calls
        .iter()
        .filter_map(|c| match &c.seen {
            Seen::Refused(_, code) => Some(code.as_str()),
            _ => None,
        })
        .collect();

    // `byok audit verify` for the org, through the running server.
    let verified = tokio::task::block_in_place(|| {
        clean_command()
            .args(["--admin-url", &server.admin_url])
            .arg("--data-dir")
            .arg(server.data_dir.path())
            .args(["audit", "verify", "--org", "acme"])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    });
    let verify_out = String::from_utf8_lossy(&verified.stdout).into_owned();
    assert!(
        verified.status.success() && verify_out.contains("all links intact"),
        "byok audit verify: {}\n{verify_out}\n{}",
        verified.status,
        String::from_utf8_lossy(&verified.stderr)
    );

    // What reached the provider against the audit, read from the database file.
    let data_dir = server.stop();
    let requests = mock.requests();
    let mut reached: HashSet<String> = HashSet::new();
    for request in &requests {
        assert!(request.key_valid, "{} reached the mock with a wrong key", request.path);
        let id = call_id_in_body(&request.body).unwrap_or_else(|| panic!("a request without a marker: {request:?}"));
        assert!(reached.insert(id.clone()), "{id} reached the provider twice");
    }
    let store = Store::open_sqlite(&data_dir.path().join("byok.db")).await.unwrap();
    let org = store.list_orgs().await.unwrap().into_iter().find(|o| o.name.as_str() == "acme").unwrap().id;
    let rows = all_rows(&store, &org).await;
    let mut by_call: HashMap<&str, Vec<&ResolutionAudit>> = HashMap::new();
    for row in &rows {
        by_call.entry(row.call_id.as_str()).or_default().push(row);
    }
    for id in &reached {
        let found = by_call.get(id.as_str()).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(found.len(), 1, "{id} reached the provider; audit rows: {found:?}");
        assert_eq!(found[0].outcome, Outcome::Allowed, "{id}: {:?}", found[0]);
    }
    let by_id: HashMap<&str, &Call> = calls.iter().map(|c| (c.id.as_str(), c)).collect();
    for call in &calls {
        match call.seen {
            Seen::Answered => {
                assert!(reached.contains(&call.id), "{} was answered but never reached the mock", call.id)
            }
            _ => {
                assert!(!reached.contains(&call.id), "{} was refused but reached the mock", call.id);
                assert!(!by_call.contains_key(call.id.as_str()), "{} was refused but has an audit row", call.id);
            }
        }
    }
    for row in &rows {
        assert!(by_id.contains_key(row.call_id.as_str()), "a row for a call nobody sent: {row:?}");
        assert_eq!(by_call[row.call_id.as_str()].len(), 1, "two rows for {}", row.call_id);
    }
    let report = store.verify_audit(Some(&org)).await.unwrap();
    assert!(report.ok, "verify: {report:?}");
    store.close().await;

    let answered = calls.iter().filter(|c| c.seen == Seen::Answered).count();
    eprintln!(
        "disk full: {} calls from {CLIENTS} clients, {answered} answered, {} refused ({codes:?}); byok refused the first \
         call {noticed:.2?} after the fill; {in_window} calls in the {FULL_WINDOW:?} full window, all refused, none \
         reached the provider; readiness while full: {full_reason}; calls answered again {recovered:.2?} after the space \
         came back; {} requests reached the provider, each with one allowed row; audit verify ok ({} entries); {:.1?} \
         in all",
        calls.len(),
        calls.len() - answered,
        reached.len(),
        report.checked,
        begun.elapsed(),
    );
    drop(data_dir);
    mock.shutdown().await;
    drop(tmpfs);
}
