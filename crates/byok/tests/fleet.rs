//! A fleet of sidecars, end to end with the real binary: several `byok serve` processes on
//! one PostgreSQL database.
//!
//! * A node whose KMS is not the fleet's (its own local keyring, next to another node's)
//!   refuses to start, naming the fix, instead of creating KEKs the others cannot open.
//! * Three nodes on one database and one SoftHSM2 token: any node's operator token works
//!   on every node; changes through each node are enforced by the others within the
//!   SPEC's second; calls through all three at once; a checkpoint signed by one node
//!   verifies on another; a node killed with `kill -9` mid-load comes back; and the one
//!   audit verifies, with an allowed row for every call that was answered.
//!
//! The three-node test runs twice: on one SoftHSM2 token, and on AWS KMS (a `moto`
//! server). Skipped (saying so) without `BYOK_TEST_POSTGRES_URL`, without SoftHSM2 unless
//! `BYOK_REQUIRE_PKCS11=1`, without `moto_server` unless `BYOK_REQUIRE_MOTO=1`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::Write as _;
use std::path::Path;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use byok_mock_provider::{MockConfig, MockProvider};
use byok_store::testing::TestStore;
use byok_store::AuditFilter;
use serde_json::json;
use support::{admin_json, chat, operator_token, serve_refused, Server};

const KEY: &str = "sk-canary-fleet-openai-5e1f0c2a9b7d3e48";

#[tokio::test(flavor = "multi_thread")]
async fn a_node_whose_kms_is_not_the_fleets_refuses_to_start() {
    let Some(db) = TestStore::postgres().await.unwrap() else {
        let _ = writeln!(
            std::io::stderr(),
            "skipped a_node_whose_kms_is_not_the_fleets_refuses_to_start: BYOK_TEST_POSTGRES_URL is not set"
        );
        return;
    };
    let url = db.url().to_owned();
    let first = Server::start_with(&[("BYOK_DATABASE_URL", &url)]);
    let op = operator_token(&first);
    let http = reqwest::Client::new();
    admin_json(
        &http,
        reqwest::Method::POST,
        format!("{}/v1/orgs", first.admin_url),
        &op,
        Some(json!({"name": "acme", "tier": "katman-b"})),
    )
    .await;

    // A second node with its own local keyring: it would hold none of the first's KEKs.
    let second = tempfile::tempdir().unwrap();
    let refused = serve_refused(second.path(), &[("BYOK_DATABASE_URL", &url)]);
    for needle in ["already served with", "same KMS", "Running several sidecars", "local:"] {
        assert!(refused.contains(needle), "the refusal lacks {needle:?}: {refused}");
    }
    // Even before any org exists: a new database is claimed by its first node.
    let empty = TestStore::postgres().await.unwrap().unwrap();
    let _claimed = Server::start_with(&[("BYOK_DATABASE_URL", empty.url())]);
    let late = tempfile::tempdir().unwrap();
    let refused = serve_refused(late.path(), &[("BYOK_DATABASE_URL", empty.url())]);
    assert!(refused.contains("already served with"), "{refused}");
    // The first node is unharmed.
    let orgs = admin_json(&http, reqwest::Method::GET, format!("{}/v1/orgs", first.admin_url), &op, None).await;
    assert_eq!(orgs["orgs"][0]["name"], "acme");
}

fn pkcs11_config(scratch: &Path) -> Option<String> {
    let Some(token) = byok_kms_pkcs11::testing::test_token(scratch).unwrap() else {
        if byok_kms_pkcs11::testing::pkcs11_required() {
            panic!("BYOK_REQUIRE_PKCS11=1 but {}", byok_kms_pkcs11::testing::NOT_INSTALLED);
        }
        eprintln!(
            "skipped three_nodes_on_one_softhsm_token_are_one_system: {}",
            byok_kms_pkcs11::testing::NOT_INSTALLED
        );
        return None;
    };
    let path = scratch.join("fleet.toml");
    std::fs::write(
        &path,
        format!(
            "[kms]\nbackend = \"pkcs11\"\n[kms.pkcs11]\nmodule = {:?}\ntoken_label = {:?}\npin_file = {:?}\n",
            token.module.display().to_string(),
            token.token_label,
            token.pin_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
        ),
    )
    .unwrap();
    Some(path.to_str().unwrap().to_owned())
}

/// How long until every node in `proxies` refuses `token` (polling each every 2 ms).
async fn until_refused_everywhere(http: &reqwest::Client, proxies: &[String], token: &str) -> Duration {
    let started = Instant::now();
    let mut pending: Vec<&String> = proxies.iter().collect();
    while !pending.is_empty() {
        assert!(started.elapsed() < Duration::from_secs(5), "a revocation was not enforced within 5 s");
        let mut still = Vec::new();
        for proxy in pending {
            let status = http
                .get(format!("{proxy}/openai/v1/models"))
                .bearer_auth(token)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            if status != 401 {
                still.push(proxy);
            }
        }
        pending = still;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread")]
async fn three_nodes_on_one_softhsm_token_are_one_system() {
    let Some(db) = TestStore::postgres().await.unwrap() else {
        let _ = writeln!(
            std::io::stderr(),
            "skipped three_nodes_on_one_softhsm_token_are_one_system: BYOK_TEST_POSTGRES_URL is not set"
        );
        return;
    };
    let scratch = tempfile::tempdir().unwrap();
    let Some(config) = pkcs11_config(scratch.path()) else { return };
    fleet_of_three(&db, &config, &[]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn three_nodes_on_aws_kms_are_one_system() {
    let Some(db) = TestStore::postgres().await.unwrap() else {
        let _ = writeln!(
            std::io::stderr(),
            "skipped three_nodes_on_aws_kms_are_one_system: BYOK_TEST_POSTGRES_URL is not set"
        );
        return;
    };
    let mut moto = match byok_kms_aws::testing::MotoServer::start() {
        Ok(Some(server)) => server,
        Ok(None) if byok_kms_aws::testing::moto_required() => panic!("BYOK_REQUIRE_MOTO=1 but no moto_server"),
        Ok(None) => {
            let _ = writeln!(
                std::io::stderr(),
                "skipped three_nodes_on_aws_kms_are_one_system: no moto_server (scripts/moto-server.sh)"
            );
            return;
        }
        Err(err) => panic!("moto_server: {err}"),
    };
    let scratch = tempfile::tempdir().unwrap();
    let config = scratch.path().join("fleet.toml");
    std::fs::write(
        &config,
        format!(
            "[kms]\nbackend = \"aws-kms\"\n[kms.aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n",
            moto.endpoint()
        ),
    )
    .unwrap();
    // Credentials by environment, as in production; no instance metadata service is asked.
    let aws =
        [("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"), ("AWS_EC2_METADATA_DISABLED", "true")];
    fleet_of_three(&db, config.to_str().unwrap(), &aws).await;

    // The KMS stops answering (the process is paused: a hung KMS, the harder case) and
    // comes back: what needs it fails closed, then works again with no restart.
    let db = TestStore::postgres().await.unwrap().unwrap();
    let mock =
        MockProvider::start(MockConfig { openai_keys: vec![KEY.to_owned()], ..MockConfig::default() }).await.unwrap();
    let upstream = mock.base_url();
    let mut env = vec![
        ("BYOK_DATABASE_URL", db.url()),
        ("BYOK_CONFIG", config.to_str().unwrap()),
        ("BYOK_UPSTREAM_OPENAI", upstream.as_str()),
    ];
    env.extend_from_slice(&aws);
    let node = Server::start_with(&env);
    let op = operator_token(&node);
    let http = reqwest::Client::new();
    let api = |path: &str| format!("{}{path}", node.admin_url);
    let post = reqwest::Method::POST;
    admin_json(&http, post.clone(), api("/v1/orgs"), &op, Some(json!({"name": "acme", "tier": "katman-b"}))).await;
    let mut tokens = Vec::new();
    for team in ["warm", "cold"] {
        admin_json(&http, post.clone(), api("/v1/orgs/acme/teams"), &op, Some(json!({"name": team}))).await;
        let credential = json!({"name": team, "provider": "openai", "secret": KEY, "scope": {"teams": [team]}});
        admin_json(&http, post.clone(), api("/v1/orgs/acme/credentials"), &op, Some(credential)).await;
        let issued =
            admin_json(&http, post.clone(), api("/v1/orgs/acme/tokens"), &op, Some(json!({"team": team}))).await;
        tokens.push(issued["token"].as_str().unwrap().to_owned());
    }
    assert_eq!(chat(&http, &node.proxy_url, &tokens[0], "warm-1").await.0, 200);
    let pattern = format!("moto_server -H 127.0.0.1 -p {}", moto.endpoint().rsplit(':').next().unwrap());
    let signal = |sig: &str| {
        let status = std::process::Command::new("pkill").args([sig, "-f", &pattern]).status().unwrap();
        assert!(status.success(), "pkill {sig} {pattern}");
    };
    signal("-STOP");
    // A DEK already opened serves from the cache; one that must be opened cannot be.
    assert_eq!(chat(&http, &node.proxy_url, &tokens[0], "warm-2").await.0, 200);
    let (status, body) = chat(&http, &node.proxy_url, &tokens[1], "cold-1").await;
    assert_eq!((status, &body["error"]["code"]), (503, &json!("kms_unavailable")), "{body}");
    let rotate = http
        .post(api("/v1/orgs/acme/credentials/cold/rotate"))
        .bearer_auth(&op)
        .json(&json!({"secret": KEY}))
        .send()
        .await
        .unwrap();
    assert_eq!(rotate.status().as_u16(), 503, "{}", rotate.text().await.unwrap());
    let seen = mock.request_count();
    signal("-CONT");
    // Back: the same calls work, with no restart.
    let deadline = Instant::now() + Duration::from_secs(60);
    while chat(&http, &node.proxy_url, &tokens[1], "cold-again").await.0 != 200 {
        assert!(Instant::now() < deadline, "the node did not recover from the KMS outage");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    admin_json(&http, post, api("/v1/orgs/acme/credentials/cold/rotate"), &op, Some(json!({"secret": KEY}))).await;
    assert!(mock.request_count() > seen);
    moto.stop();
}

/// Three nodes on `db` with the KMS configuration `config` (and `extra` environment).
async fn fleet_of_three(db: &TestStore, config: &str, extra: &[(&str, &str)]) {
    let mock =
        MockProvider::start(MockConfig { openai_keys: vec![KEY.to_owned()], ..MockConfig::default() }).await.unwrap();
    let upstream = mock.base_url();
    let url = db.url().to_owned();
    let mut env =
        vec![("BYOK_DATABASE_URL", url.as_str()), ("BYOK_CONFIG", config), ("BYOK_UPSTREAM_OPENAI", upstream.as_str())];
    env.extend_from_slice(extra);
    let mut nodes: Vec<Server> = (0..3).map(|_| Server::start_with(&env)).collect();
    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();
    let (post, get, patch) = (reqwest::Method::POST, reqwest::Method::GET, reqwest::Method::PATCH);

    // Any node's operator token works on every node (each registered its own).
    let ops: Vec<String> = nodes.iter().map(operator_token).collect();
    for node in &nodes {
        for op in &ops {
            admin_json(&http, get.clone(), format!("{}/v1/orgs", node.admin_url), op, None).await;
        }
    }
    let op = ops[0].clone();
    let admin_urls: Vec<String> = nodes.iter().map(|n| n.admin_url.clone()).collect();
    let api = |node: usize, path: &str| format!("{}{path}", admin_urls[node]);

    // Set up through one node, use through the others.
    admin_json(&http, post.clone(), api(0, "/v1/orgs"), &op, Some(json!({"name": "acme", "tier": "katman-b"}))).await;
    admin_json(&http, post.clone(), api(1, "/v1/orgs/acme/teams"), &op, Some(json!({"name": "agents"}))).await;
    let credential = json!({"name": "main", "provider": "openai", "secret": KEY, "scope": {"teams": ["agents"]}});
    admin_json(&http, post.clone(), api(2, "/v1/orgs/acme/credentials"), &op, Some(credential)).await;
    let issue = |node: usize| {
        let http = http.clone();
        let (url, op) = (api(node, "/v1/orgs/acme/tokens"), op.clone());
        async move {
            admin_json(&http, reqwest::Method::POST, url, &op, Some(json!({"team": "agents"}))).await["token"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let token = issue(0).await;
    for (i, node) in nodes.iter().enumerate() {
        assert_eq!(chat(&http, &node.proxy_url, &token, &format!("setup-{i}")).await.0, 200, "node {i}");
    }
    // A rotation through one node serves through another (the new version opens there).
    let rotated = admin_json(
        &http,
        post.clone(),
        api(1, "/v1/orgs/acme/credentials/main/rotate"),
        &op,
        Some(json!({"secret": KEY})),
    )
    .await;
    assert_eq!(rotated["version"], 2);
    assert_eq!(chat(&http, &nodes[2].proxy_url, &token, "after-rotation").await.0, 200);
    admin_json(&http, patch, api(2, "/v1/orgs/acme/credentials/main"), &op, Some(json!({"priority": 1}))).await;

    // Propagation: a revocation through each node in turn, enforced by all three.
    let proxies: Vec<String> = nodes.iter().map(|n| n.proxy_url.clone()).collect();
    let mut delays = Vec::new();
    for round in 0..30 {
        let via = round % 3;
        let victim = issue(via).await;
        let listed = admin_json(&http, get.clone(), api(via, "/v1/orgs/acme/tokens"), &op, None).await;
        let id = listed["tokens"].as_array().unwrap().last().unwrap()["id"].as_str().unwrap().to_owned();
        // Warm every node's cache with the token first.
        for proxy in &proxies {
            let status =
                http.get(format!("{proxy}/openai/v1/models")).bearer_auth(&victim).send().await.unwrap().status();
            assert_eq!(status.as_u16(), 200, "round {round}");
        }
        let started = Instant::now();
        admin_json(&http, reqwest::Method::DELETE, api(via, &format!("/v1/orgs/acme/tokens/{id}")), &op, None).await;
        let enforced = until_refused_everywhere(&http, &proxies, &victim).await;
        delays.push(started.elapsed().max(enforced));
    }
    delays.sort();
    let p50 = delays[delays.len() / 2];
    let max = delays[delays.len() - 1];
    eprintln!("revocation enforced on all 3 nodes: p50 {p50:?}, max {max:?} over {} revocations", delays.len());
    assert!(max < Duration::from_secs(1), "SPEC: a change is enforced everywhere within 1 s (max {max:?})");

    // A checkpoint signed by one node verifies on another.
    let checkpoint = admin_json(&http, post.clone(), api(0, "/v1/orgs/acme/audit/checkpoints"), &op, None).await;
    let checked = admin_json(&http, post.clone(), api(2, "/v1/orgs/acme/audit/verify"), &op, Some(checkpoint)).await;
    assert_eq!((checked["signature_valid"].clone(), checked["ok"].clone()), (json!(true), json!(true)), "{checked}");
    let keys = admin_json(&http, get.clone(), api(1, "/v1/audit/public-keys"), &op, None).await;
    assert_eq!(keys["keys"].as_array().unwrap().len(), 3, "one checkpoint key per node: {keys}");

    // Load through all three nodes; node 2 is killed with SIGKILL mid-load and restarted.
    let answered: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for client in 0..12 {
        let (http, token, answered, stop, sent) =
            (http.clone(), token.clone(), answered.clone(), stop.clone(), sent.clone());
        let proxies = proxies.clone();
        clients.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let proxy = &proxies[(client + n) % proxies.len()];
                let call_id = format!("load-{client}-{n}");
                sent.fetch_add(1, Ordering::Relaxed);
                if chat(&http, proxy, &token, &call_id).await.0 == 200 {
                    answered.lock().unwrap().push(call_id);
                }
                n += 1;
            }
        }));
    }
    let wait_for = |count: usize| {
        let answered = answered.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while answered.lock().unwrap().len() < count {
                assert!(Instant::now() < deadline, "the fleet stopped answering");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_for(150).await;
    let killed = nodes.remove(2);
    let data_dir = killed.stop();
    let before_restart = answered.lock().unwrap().len();
    wait_for(before_restart + 100).await;
    nodes.push(Server::start_in(data_dir, &env));
    let after_restart = answered.lock().unwrap().len();
    wait_for(after_restart + 100).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let restarted = &nodes[2];
    assert_eq!(chat(&http, &restarted.proxy_url, &token, "after-restart").await.0, 200);

    // One audit, verifying, with an allowed row for every answered call.
    let report = admin_json(&http, get.clone(), api(1, "/v1/orgs/acme/audit/verify"), &op, None).await;
    assert_eq!(report["ok"], true, "{report}");
    let org = db.store().find_org_by_name("acme").await.unwrap().unwrap();
    let rows = db
        .store()
        .list_audit(Some(&org.id), &AuditFilter { limit: Some(1_000_000), ..AuditFilter::default() })
        .await
        .unwrap();
    let allowed: std::collections::HashSet<&str> = rows
        .iter()
        .filter(|row| row.outcome == byok_domain::Outcome::Allowed)
        .map(|row| row.call_id.as_str())
        .collect();
    let answered = answered.lock().unwrap();
    let missing: Vec<&String> = answered.iter().filter(|id| !allowed.contains(id.as_str())).collect();
    assert!(
        missing.is_empty(),
        "{} answered calls have no allowed row, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    eprintln!(
        "{} calls sent, {} answered through 3 nodes (one killed and restarted), {} audit rows, audit verifies",
        sent.load(Ordering::Relaxed),
        answered.len(),
        rows.len()
    );
}
