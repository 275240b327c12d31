//! AWS KMS end to end with the real binary and a local KMS-compatible server (moto):
//! `[kms] backend = "aws-kms"` holds every org's KEK, a katman-c org moves its KEK to a
//! key in its own account (`byok kek move --kms acme-aws`), a rotation retires the old
//! key, deleting an org schedules its keys' deletion, and with KMS gone a call fails
//! closed as `kms_unavailable`.
//!
//! Skipped without `moto_server` (see `scripts/moto-server.sh`), unless
//! `BYOK_REQUIRE_MOTO=1`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::Write as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

use byok_kms_aws::testing::{self, MotoServer, TestAccount};
use byok_kms_aws::KeyState;
use byok_mock_provider::{MockConfig, MockProvider};
use serde_json::json;
use support::{admin_json, clean_command, operator_token, Server};

const KEY: &str = "sk-canary-aws-kms-e2e-openai-9f8e7d6c5b4a";

fn byok(argv: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let output = clean_command().args(argv).envs(env.iter().copied()).stdin(Stdio::null()).output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A chat call's status and body.
async fn chat(http: &reqwest::Client, server: &Server, token: &str) -> (u16, String) {
    let response = http
        .post(format!("{}/openai/v1/chat/completions", server.proxy_url))
        .bearer_auth(token)
        .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// Wait until `alias` is gone (a background rewrap retires or removes keys).
fn wait_for_alias_gone(account: &TestAccount, alias: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while account.alias_exists(alias).unwrap() {
        assert!(Instant::now() < deadline, "{alias} still exists");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn orgs_keep_their_keks_in_aws_kms_and_move_to_their_own_key() {
    // A server of this test's own: it is stopped at the end.
    let mut moto = match MotoServer::start() {
        Ok(Some(server)) => server,
        Ok(None) => {
            if testing::moto_required() {
                panic!("BYOK_REQUIRE_MOTO=1 but {}", testing::NOT_AVAILABLE);
            }
            let _ = writeln!(std::io::stderr(), "skipped: {}", testing::NOT_AVAILABLE);
            return;
        }
        Err(problem) => panic!("cannot start moto: {problem}"),
    };
    let account = moto.account().unwrap();
    let customer_key = account.create_key("acme's own key, granted to the platform").unwrap();
    let endpoint = moto.endpoint().to_owned();
    let scratch = tempfile::tempdir().unwrap();
    let config = scratch.path().join("byok.toml");
    std::fs::write(
        &config,
        format!(
            "[kms]\nbackend = \"aws-kms\"\n[kms.aws]\nregion = \"us-east-1\"\nendpoint_url = \"{endpoint}\"\n\
             [kms.customer.acme-aws]\nbackend = \"aws-kms\"\nkey_arn = \"{}\"\nendpoint_url = \"{endpoint}\"\n\
             orgs = [\"acme\"]\n",
            customer_key.arn
        ),
    )
    .unwrap();
    let mock =
        MockProvider::start(MockConfig { openai_keys: vec![KEY.to_owned()], ..MockConfig::default() }).await.unwrap();
    let upstream = mock.base_url();
    // Credentials for the local server, by environment as in production; no instance
    // metadata service is ever asked.
    let env = [
        ("BYOK_UPSTREAM_OPENAI", upstream.as_str()),
        ("BYOK_CONFIG", config.to_str().unwrap()),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    let server = Server::start_with(&env);
    let op = operator_token(&server);
    let http = reqwest::Client::new();
    let api = |path: &str| format!("{}{path}", server.admin_url);
    let (get, post) = (reqwest::Method::GET, reqwest::Method::POST);

    let mut ids = Vec::new();
    let mut tokens = Vec::new();
    for (org, tier) in [("acme", "katman-c"), ("beta", "katman-b"), ("gamma", "katman-a")] {
        let created =
            admin_json(&http, post.clone(), api("/v1/orgs"), &op, Some(json!({"name": org, "tier": tier}))).await;
        ids.push(created["id"].as_str().unwrap().to_owned());
        admin_json(&http, post.clone(), api(&format!("/v1/orgs/{org}/teams")), &op, Some(json!({"name": "core"})))
            .await;
        let credential = json!({"name": "main", "provider": "openai", "secret": KEY, "scope": {"teams": ["core"]},
            "expires_at": "2099-01-01T00:00:00Z"});
        admin_json(&http, post.clone(), api(&format!("/v1/orgs/{org}/credentials")), &op, Some(credential)).await;
        let issued =
            admin_json(&http, post.clone(), api(&format!("/v1/orgs/{org}/tokens")), &op, Some(json!({"team": "core"})))
                .await;
        tokens.push(issued["token"].as_str().unwrap().to_owned());
    }
    let [acme, beta, gamma] = [&ids[0], &ids[1], &ids[2]];
    // Each org's KEK is a KMS key of its own, behind alias/byok/<org id>.
    for id in [acme, beta, gamma] {
        let key = account.describe(&format!("alias/byok/{id}")).unwrap();
        assert_eq!((key.state, key.description.as_str()), (KeyState::Enabled, format!("byok KEK v1 of {id}").as_str()));
    }
    for token in &tokens[..2] {
        assert_eq!(chat(&http, &server, token).await.0, 200);
    }

    // acme moves into its own key; its keys in the installation's account are removed.
    let admin_env = [("BYOK_ADMIN_URL", server.admin_url.as_str()), ("BYOK_ADMIN_TOKEN", op.as_str())];
    let (code, stdout, stderr) = byok(&["kek", "move", "--org", "acme", "--kms", "acme-aws"], &admin_env);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("acme-aws"), "{stdout}");
    let status = admin_json(&http, get.clone(), api("/v1/orgs/acme/kek"), &op, None).await;
    assert_eq!((status["kms"].as_str(), status["kek_version"].as_u64()), (Some("acme-aws"), Some(2)), "{status}");
    wait_for_alias_gone(&account, &format!("alias/byok/{acme}"));
    let tags = account.tags(&customer_key.arn).unwrap();
    assert!(tags.contains(&(format!("byok:org:{acme}"), "2".to_owned())), "{tags:?}");
    assert_eq!(chat(&http, &server, &tokens[0]).await.0, 200);
    let (code, stdout, stderr) = byok(&["kms", "list"], &admin_env);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("acme-aws") && stdout.contains("aws-kms"), "{stdout}");

    // beta rotates: version 2 is a new key, and version 1's key is retired once rewrapped.
    let v1 = account.describe(&format!("alias/byok/{beta}/v1")).unwrap();
    let (code, _, stderr) = byok(&["kek", "rotate", "--org", "beta"], &admin_env);
    assert_eq!(code, 0, "{stderr}");
    wait_for_alias_gone(&account, &format!("alias/byok/{beta}/v1"));
    assert_eq!(account.describe(&v1.key_id).unwrap().state, KeyState::PendingDeletion);
    assert_eq!(account.describe(&format!("alias/byok/{beta}")).unwrap().description, format!("byok KEK v2 of {beta}"));
    assert_eq!(chat(&http, &server, &tokens[1]).await.0, 200);

    // Deleting beta schedules the deletion of its keys (crypto-shredding).
    let v2 = account.describe(&format!("alias/byok/{beta}/v2")).unwrap();
    let deleted = http.delete(api("/v1/orgs/beta?confirm=true")).bearer_auth(&op).send().await.unwrap();
    assert!(deleted.status().is_success(), "{}", deleted.text().await.unwrap());
    assert_eq!(account.describe(&v2.key_id).unwrap().state, KeyState::PendingDeletion);
    assert!(!account.alias_exists(&format!("alias/byok/{beta}/v2")).unwrap());

    // KMS gone: gamma's first call (its DEK was never unwrapped) fails closed.
    moto.stop();
    let (status, body) = chat(&http, &server, &tokens[2]).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("kms_unavailable"), "{body}");
    assert!(!body.contains(KEY));
    let ready = http.get(api("/readyz")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    let reason = ready.text().await.unwrap();
    assert!(reason.contains("AWS KMS"), "{reason}");
    mock.shutdown().await;
}
