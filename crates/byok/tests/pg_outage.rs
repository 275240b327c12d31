//! Self-healing: a node whose PostgreSQL goes away fails closed and serves again by itself
//! when it returns, with no restart and no lost audit row.
//!
//! The test starts a PostgreSQL cluster of its own (`initdb` + `pg_ctl` on a free port;
//! never the machine's shared server, which other tests use), puts a real `byok serve`
//! on it under a load of concurrent calls, stops the cluster (`pg_ctl stop -m fast`:
//! every connection is cut) until 16 calls have been refused, and starts it again. While
//! the database is down every call is refused (after at most the store's 10 s wait for a
//! connection) in the provider's error shape (`store_unavailable` or
//! `audit_unavailable`) and `/readyz` says 503; once it is back, calls succeed again
//! without touching the node; at the end every call that was answered 200 has its
//! allowed row and its completion (status, usage), and the audit verifies.
//!
//! Skipped (saying so) when PostgreSQL's server binaries are not installed, unless
//! `BYOK_REQUIRE_POSTGRES_BIN=1`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::{BTreeMap, HashSet};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use byok_mock_provider::{MockConfig, MockProvider};
use byok_store::{AuditFilter, Store};
use serde_json::json;
use support::{admin_json, chat, free_port, operator_token, readyz, Server};

const KEY: &str = "sk-canary-pg-outage-openai-7a5c3e1f9b2d";

/// PostgreSQL's server binaries (`initdb`, `pg_ctl`), newest version first.
fn postgres_bin() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists() && bin.join("pg_ctl").exists())
        .collect();
    versions.sort();
    versions.pop()
}

/// A throwaway PostgreSQL cluster. As root, its commands run as the `postgres` user
/// (initdb refuses root).
struct Cluster {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }

    fn run(&self, program: &str, args: &[&str]) {
        let output = self.command(program).args(args).stdin(Stdio::null()).output().unwrap();
        assert!(
            output.status.success(),
            "{program} {args:?}: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn init(bin: PathBuf) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        if is_root() {
            let status = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status().unwrap();
            assert!(status.success());
        }
        let cluster = Cluster { bin, data, port: free_port(), _dir: dir };
        let data = cluster.data.to_str().unwrap().to_owned();
        cluster.run("initdb", &["-D", &data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]);
        cluster
    }

    fn start(&self) {
        let data = self.data.to_str().unwrap();
        let log = self.data.parent().unwrap().join("postgres.log");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.data.parent().unwrap().display()
        );
        self.run("pg_ctl", &["-D", data, "-l", log.to_str().unwrap(), "-o", &options, "-w", "-t", "60", "start"]);
    }

    fn stop(&self) {
        self.run("pg_ctl", &["-D", self.data.to_str().unwrap(), "-m", "fast", "-w", "stop"]);
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.command("pg_ctl").args(["-D", self.data.to_str().unwrap(), "-m", "immediate", "stop"]).output();
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false)
}

fn wait(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_survives_its_database_going_away_and_coming_back() {
    let Some(bin) = postgres_bin() else {
        assert!(
            std::env::var("BYOK_REQUIRE_POSTGRES_BIN").as_deref() != Ok("1"),
            "BYOK_REQUIRE_POSTGRES_BIN=1 but no initdb/pg_ctl under /usr/lib/postgresql"
        );
        let _ = writeln!(
            std::io::stderr(),
            "skipped a_node_survives_its_database_going_away_and_coming_back: no initdb/pg_ctl"
        );
        return;
    };
    let cluster = Cluster::init(bin);
    cluster.start();
    let mock =
        MockProvider::start(MockConfig { openai_keys: vec![KEY.to_owned()], ..MockConfig::default() }).await.unwrap();
    let upstream = mock.base_url();
    let url = cluster.url();
    let node = Server::start_with(&[("BYOK_DATABASE_URL", &url), ("BYOK_UPSTREAM_OPENAI", &upstream)]);
    let op = operator_token(&node);
    let http = reqwest::Client::new();
    let api = |path: &str| format!("{}{path}", node.admin_url);
    let post = reqwest::Method::POST;
    admin_json(&http, post.clone(), api("/v1/orgs"), &op, Some(json!({"name": "acme", "tier": "katman-b"}))).await;
    admin_json(&http, post.clone(), api("/v1/orgs/acme/teams"), &op, Some(json!({"name": "agents"}))).await;
    let credential = json!({"name": "main", "provider": "openai", "secret": KEY});
    admin_json(&http, post.clone(), api("/v1/orgs/acme/credentials"), &op, Some(credential)).await;
    let issued = admin_json(&http, post, api("/v1/orgs/acme/tokens"), &op, Some(json!({"team": "agents"}))).await;
    let token = issued["token"].as_str().unwrap().to_owned();

    // Load: 8 clients, each recording (phase, status, code) per call id.
    #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
    enum Phase {
        Up,
        Stopping,
        Down,
        Starting,
        Back,
    }
    let phase = Arc::new(Mutex::new(Phase::Up));
    let results: Arc<Mutex<Vec<(Phase, String, u16, Option<String>)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for client in 0..8 {
        let (http, token, phase, results, stop) =
            (http.clone(), token.clone(), phase.clone(), results.clone(), stop.clone());
        let proxy = node.proxy_url.clone();
        clients.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let call_id = format!("c{client}-{n}");
                let before = *phase.lock().unwrap();
                let (status, body) = chat(&http, &proxy, &token, &call_id).await;
                assert!(!body.to_string().contains(KEY), "the key leaked: {body}");
                let code = body["error"]["code"].as_str().map(str::to_owned);
                let after = *phase.lock().unwrap();
                // Only calls that started and ended in one phase are judged by it.
                if before == after {
                    results.lock().unwrap().push((before, call_id, status, code));
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    let tally = results.clone();
    let count = move |wanted: Phase, ok: bool| {
        tally.lock().unwrap().iter().filter(|(p, _, s, _)| *p == wanted && (*s == 200) == ok).count()
    };
    let count = Arc::new(count);
    {
        let count = count.clone();
        tokio::task::spawn_blocking(move || {
            wait("calls answered before the outage", Duration::from_secs(60), || count(Phase::Up, true) >= 100)
        })
        .await
        .unwrap();
    }

    // The database goes away.
    *phase.lock().unwrap() = Phase::Stopping;
    cluster.stop();
    let sent_before_outage = mock.request_count();
    *phase.lock().unwrap() = Phase::Down;
    let admin_port = port_of(&node.admin_url);
    tokio::task::spawn_blocking(move || wait("/readyz says 503", Duration::from_secs(30), || !readyz(admin_port)))
        .await
        .unwrap();
    {
        let count = count.clone();
        tokio::task::spawn_blocking(move || {
            wait("calls refused during the outage", Duration::from_secs(90), || count(Phase::Down, false) >= 16)
        })
        .await
        .unwrap();
    }
    *phase.lock().unwrap() = Phase::Starting;
    let sent_during_outage = mock.request_count() - sent_before_outage;

    // It comes back; the node serves again by itself.
    cluster.start();
    *phase.lock().unwrap() = Phase::Back;
    tokio::task::spawn_blocking(move || wait("/readyz says 200 again", Duration::from_secs(60), || readyz(admin_port)))
        .await
        .unwrap();
    {
        let count = count.clone();
        tokio::task::spawn_blocking(move || {
            wait("calls answered after the outage", Duration::from_secs(60), || count(Phase::Back, true) >= 100)
        })
        .await
        .unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }

    let results = results.lock().unwrap().clone();
    let mut codes: BTreeMap<(Phase, u16, Option<String>), usize> = BTreeMap::new();
    for (phase, _, status, code) in &results {
        *codes.entry((*phase, *status, code.clone())).or_default() += 1;
    }
    eprintln!("calls by phase, status and code: {codes:?}");
    // While down: every call refused, failing closed with the store's or the audit's code.
    let unanswered: Vec<_> = codes.iter().filter(|((_, status, _), _)| *status == 0).collect();
    // (A call without an HTTP answer is recorded as status 0, code `no_answer`.)
    assert!(unanswered.is_empty(), "calls without an HTTP answer: {unanswered:?}\n{}", node.logs());
    for ((phase, status, code), n) in &codes {
        // Before the outage and once the database is back: every call answered.
        if matches!(phase, Phase::Up | Phase::Back) {
            assert_eq!(*status, 200, "{n} calls {phase:?}: {code:?}");
        }
        if *phase == Phase::Down {
            assert_eq!(*status, 503, "{n} calls during the outage: {status} {code:?}");
            assert!(
                matches!(code.as_deref(), Some("store_unavailable" | "audit_unavailable")),
                "{n} calls during the outage: {code:?}"
            );
        }
    }
    // Nothing reached the provider once the database was down: a call is forwarded only
    // after its allowed row is durable, which the database refused. (Calls in flight
    // when it stopped had their rows committed before.)
    assert_eq!(sent_during_outage, 0, "requests reached the provider while the database was down");

    // No lost audit row: every answered call has its allowed row, and the audit verifies.
    let report = admin_json(&http, reqwest::Method::GET, api("/v1/orgs/acme/audit/verify"), &op, None).await;
    assert_eq!(report["ok"], true, "{report}");
    let store = Store::open(&url).await.unwrap();
    let org = store.find_org_by_name("acme").await.unwrap().unwrap();
    let rows = store
        .list_audit(Some(&org.id), &AuditFilter { limit: Some(1_000_000), ..AuditFilter::default() })
        .await
        .unwrap();
    let allowed: HashSet<&str> =
        rows.iter().filter(|r| r.outcome == byok_domain::Outcome::Allowed).map(|r| r.call_id.as_str()).collect();
    let answered: Vec<&String> = results.iter().filter(|(_, _, s, _)| *s == 200).map(|(_, id, _, _)| id).collect();
    let missing: Vec<&&String> = answered.iter().filter(|id| !allowed.contains(id.as_str())).collect();
    assert!(
        missing.is_empty(),
        "{} answered calls have no allowed row: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    // Nor a completion: those of calls answered while the database went away are written
    // once it is back (nobody waits for them; they are kept, not dropped).
    let deadline = Instant::now() + Duration::from_secs(30);
    for id in &answered {
        while store.list_completions(id).await.unwrap().is_empty() {
            assert!(Instant::now() < deadline, "answered call {id} has no completion row");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    store.close().await;
}
