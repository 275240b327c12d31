//! What survives `kill -9`: the real `byok serve` is killed (SIGKILL) in the middle of a
//! load of concurrent calls, then started again on the same data directory.
//!
//! The guarantee under test (SPEC §5): a call's `CredentialResolutionAudit` row is
//! durable before the credential is used. So every request that reached the provider
//! has exactly one allowed row with its call id, whatever the moment of the kill; the
//! hash chains still verify (the killed writer's segment simply ends where its last
//! commit ended); and the restarted server serves again, in a new segment.
//!
//! Requests are correlated by a marker in the body (`call <id>`), because byok strips
//! `x-byok-*` headers before forwarding; the same id is sent as `x-byok-call-id`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use byok_domain::{CredentialId, OrgId, Outcome, ResolutionAudit};
use byok_mock_provider::{MockConfig, MockProvider, RecordedRequest};
use byok_store::{AuditFilter, Store, TimelineItem};
use serde_json::{json, Value};
use support::{clean_command, free_port, readyz, Server};

/// Sent with every call and forwarded by byok (unlike `x-byok-call-id`).
const MARKER_HEADER: &str = "x-kill9-call-id";
const OPENAI_KEY: &str = "sk-canary-kill9-openai-3c0ffee5d15ea5e1";
/// Concurrent client loops.
const CLIENTS: usize = 16;
/// Load runs at least this long before the kill…
const MIN_LOAD: Duration = Duration::from_millis(1500);
/// …and until at least this many calls have been answered (a slow machine still kills
/// under real load), but never longer than `MAX_LOAD`.
const MIN_ANSWERED: usize = 200;
const MAX_LOAD: Duration = Duration::from_secs(60);
/// No client loop sends more than this many calls.
const MAX_CALLS_PER_CLIENT: usize = 100_000;

/// How one call ended, as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// 200 with the mock's reply.
    Answered,
    /// Another status.
    Status(u16),
    /// The connection was refused (the server was already gone).
    Refused,
    /// The connection broke mid-call (in flight when the server was killed).
    Broken,
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

/// The call id of a request the mock recorded: from the body marker; from the marker
/// header (which byok forwards like any application header) only when the body is empty
/// — the mock records a body it could not read in full (the sender was killed) as empty.
fn call_id_of(request: &RecordedRequest) -> String {
    let in_header = request.header(MARKER_HEADER).map(str::to_owned);
    match call_id_in_body(&request.body) {
        Some(id) => {
            assert_eq!(in_header.as_deref(), Some(id.as_str()), "body and header markers disagree");
            id
        }
        None => {
            assert!(request.body.is_empty(), "a body without a marker: {:?}", String::from_utf8_lossy(&request.body));
            in_header.unwrap_or_else(|| panic!("a request without a marker: {request:?}"))
        }
    }
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
        .header(MARKER_HEADER, call_id)
        .json(&body)
        .send()
        .await;
    match sent {
        Ok(response) => {
            let status = response.status().as_u16();
            match response.text().await {
                Ok(text) if status == 200 => {
                    assert!(text.contains(&format!("mock reply to: {}", marker(call_id))), "{call_id}: {text}");
                    Seen::Answered
                }
                Ok(_) => Seen::Status(status),
                Err(_) => Seen::Broken,
            }
        }
        Err(err) if err.is_connect() => Seen::Refused,
        Err(_) => Seen::Broken,
    }
}

/// `byok serve` started again on an existing data directory; killed on drop.
struct Restarted {
    child: Child,
    proxy_url: String,
    log: std::path::PathBuf,
    _logs: tempfile::TempDir,
}

impl Restarted {
    fn start(data_dir: &Path, env: &[(&str, &str)]) -> Self {
        let logs = tempfile::tempdir().unwrap();
        let log = logs.path().join("serve.log");
        let admin_port = free_port();
        let proxy_port = free_port();
        let mut child = clean_command()
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--admin-addr", &format!("127.0.0.1:{admin_port}")])
            .env("BYOK_PROXY_ADDR", format!("127.0.0.1:{proxy_port}"))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !readyz(admin_port) {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "restarted byok serve exited ({status}):\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "restarted byok serve was not ready within 60 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, proxy_url: format!("http://127.0.0.1:{proxy_port}"), log, _logs: logs }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Restarted {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every resolution row of `org`, paged by `seq`.
async fn all_rows(store: &Store, org: &OrgId) -> Vec<ResolutionAudit> {
    let mut rows: Vec<ResolutionAudit> = Vec::new();
    for _page in 0..10_000 {
        let filter = AuditFilter { after_seq: rows.last().map(|r| r.seq), limit: Some(5000), ..AuditFilter::default() };
        let page = store.list_audit(Some(org), &filter).await.unwrap();
        if page.is_empty() {
            return rows;
        }
        rows.extend(page);
    }
    panic!("more than 50 million audit rows?");
}

/// Call ids of the credential's calls that have a completion, through the replay timeline.
async fn completed_calls(store: &Store, org: &OrgId, credential: &CredentialId) -> HashSet<String> {
    let mut done = HashSet::new();
    let mut cursor = None;
    for _page in 0..10_000 {
        let (items, next) = store.credential_timeline(org, Some(org), credential, cursor, 10_000).await.unwrap();
        for item in items {
            if let TimelineItem::Call { resolution, completion: Some(_) } = item {
                done.insert(resolution.call_id);
            }
        }
        match next {
            Some(next) => cursor = Some(next),
            None => return done,
        }
    }
    panic!("timeline paging did not end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_call_that_reached_the_provider_is_audited_after_kill_9() {
    let mock = MockProvider::start(MockConfig { openai_keys: vec![OPENAI_KEY.to_owned()], ..MockConfig::default() })
        .await
        .unwrap();
    let upstream = mock.base_url();
    let env = [("BYOK_UPSTREAM_OPENAI", upstream.as_str()), ("BYOK_LOG", "warn")];
    let mut server = Server::start_with(&env);
    let operator = std::fs::read_to_string(server.data_dir.path().join("operator.token")).unwrap();
    let operator = operator.trim().to_owned();
    let http = reqwest::Client::new();

    admin(&http, &server.admin_url, &operator, "/v1/orgs", json!({"name": "acme", "tier": "katman-b"})).await;
    admin(&http, &server.admin_url, &operator, "/v1/orgs/acme/teams", json!({"name": "agents"})).await;
    let credential = admin(
        &http,
        &server.admin_url,
        &operator,
        "/v1/orgs/acme/credentials",
        json!({"name": "openai", "provider": "openai", "secret": OPENAI_KEY, "scope": {"teams": ["agents"]}}),
    )
    .await;
    let credential_id: CredentialId = credential["id"].as_str().unwrap().parse().unwrap();
    let token = admin(&http, &server.admin_url, &operator, "/v1/orgs/acme/tokens", json!({"team": "agents"})).await
        ["token"]
        .as_str()
        .unwrap()
        .to_owned();

    // Load: CLIENTS loops, each sending one call after another until the server is gone.
    let answered = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut loops = Vec::new();
    for client in 0..CLIENTS {
        let (proxy, token, answered) = (server.proxy_url.clone(), token.clone(), Arc::clone(&answered));
        loops.push(tokio::spawn(async move {
            let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
            let mut seen = Vec::new();
            for i in 0..MAX_CALLS_PER_CLIENT {
                let call_id = format!("k9-{client:02}-{i:06}");
                let outcome = chat(&http, &proxy, &token, &call_id).await;
                seen.push((call_id, outcome));
                match outcome {
                    Seen::Answered => {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    Seen::Status(status) => panic!("a call under load got {status}"),
                    // The server is gone: this loop is done.
                    Seen::Refused | Seen::Broken => break,
                }
            }
            seen
        }));
    }
    while started.elapsed() < MIN_LOAD || answered.load(Ordering::Relaxed) < MIN_ANSWERED {
        assert!(
            started.elapsed() < MAX_LOAD,
            "only {} calls answered in {MAX_LOAD:?}:\n{}",
            answered.load(Ordering::Relaxed),
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // std's Child::kill sends SIGKILL on Unix: no shutdown path runs.
    server.child.kill().unwrap();
    let status = server.child.wait().unwrap();
    let load_time = started.elapsed();
    assert!(!status.success(), "killed server reported success: {status}");

    let mut sent: HashMap<String, Seen> = HashMap::new();
    for handle in loops {
        let seen = tokio::time::timeout(Duration::from_secs(60), handle).await.expect("client loop hung").unwrap();
        sent.extend(seen);
    }
    let count = |what: Seen| sent.values().filter(|s| **s == what).count();
    let (answered, refused, broken) = (count(Seen::Answered), count(Seen::Refused), count(Seen::Broken));
    // Every loop ended because the server went away, not by running out of calls.
    assert_eq!(refused + broken, CLIENTS, "each client loop must end on the kill");

    // Start again on the same data directory; it must serve a new call.
    let restarted = Restarted::start(server.data_dir.path(), &env);
    let after = chat(&http, &restarted.proxy_url, &token, "k9-after-restart").await;
    assert_eq!(after, Seen::Answered, "after restart:\n{}", restarted.logs());

    // What reached the provider, by body marker.
    let requests = mock.requests();
    let mut reached: HashSet<String> = HashSet::new();
    let mut cut_short = 0;
    for request in &requests {
        assert!(request.key_valid, "{} reached the mock with a wrong key", request.path);
        let call_id = call_id_of(request);
        cut_short += usize::from(request.body.is_empty());
        assert!(reached.insert(call_id.clone()), "{call_id} reached the provider twice");
    }
    assert!(reached.contains("k9-after-restart"));
    for (call_id, seen) in &sent {
        if *seen == Seen::Answered {
            assert!(reached.contains(call_id), "{call_id} was answered but the mock did not see it");
        }
    }

    // The audit, read straight from the database file.
    let store = Store::open_sqlite(&server.data_dir.path().join("byok.db")).await.unwrap();
    let org = store.list_orgs().await.unwrap().into_iter().find(|o| o.name.as_str() == "acme").unwrap().id;
    let rows = all_rows(&store, &org).await;
    let mut by_call: HashMap<&str, Vec<&ResolutionAudit>> = HashMap::new();
    for row in &rows {
        by_call.entry(row.call_id.as_str()).or_default().push(row);
    }
    for call_id in &reached {
        let found = by_call.get(call_id.as_str()).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(found.len(), 1, "{call_id} reached the provider; audit rows: {found:?}");
        let row = found[0];
        assert_eq!(row.outcome, Outcome::Allowed, "{call_id}: {row:?}");
        assert_eq!(row.credential_id, Some(credential_id), "{call_id}: {row:?}");
    }
    for row in &rows {
        assert!(
            sent.contains_key(&row.call_id) || row.call_id == "k9-after-restart",
            "a row for a call nobody sent: {row:?}"
        );
        assert_eq!(by_call[row.call_id.as_str()].len(), 1, "two rows for {}", row.call_id);
    }
    // Rows whose call never reached the provider: killed between commit and forward.
    let audited_not_sent = rows.iter().filter(|r| !reached.contains(&r.call_id)).count();

    // The chains verify: the killed writer's segment ends at its last commit, the
    // restarted writer began a new one.
    let report = store.verify_audit(Some(&org)).await.unwrap();
    assert!(report.ok, "verify after kill -9: {report:?}");
    assert!(report.checked as usize >= rows.len(), "{report:?}");
    let unowned = store.verify_audit(None).await.unwrap();
    assert!(unowned.ok, "verify (no org) after kill -9: {unowned:?}");
    let segments = store.chain_heads(Some(&org)).await.unwrap().into_iter().filter(|h| h.chain.starts_with("calls/"));
    assert!(segments.count() >= 2, "the restarted writer must start its own segment");

    // Completions are recorded after the fact and unawaited: some of the last calls'
    // may be lost, never an allowed row.
    let completed = completed_calls(&store, &org, &credential_id).await;
    assert!(completed.iter().all(|c| by_call.contains_key(c.as_str())), "a completion without its row");

    eprintln!(
        "kill -9 after {load_time:.2?} of load from {CLIENTS} clients: calls sent {} (answered {answered}, broken in \
         flight {broken}, refused after the kill {refused}); reached the provider {} (incl. 1 after restart; {cut_short} with their body cut short); allowed \
         rows {}; rows whose call never reached the provider {audited_not_sent}; completions recorded {}; verify \
         checked {} entries: ok",
        sent.len(),
        reached.len(),
        rows.len(),
        completed.len(),
        report.checked,
    );
    store.close().await;
    drop(restarted);
    drop(server);
    mock.shutdown().await;
}
