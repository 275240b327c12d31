//! KMSs end to end with the real binary and SoftHSM2 tokens: a katman-c org moves its KEK
//! into its own token (`byok kek move`), then the whole data directory migrates from the
//! local keyring into the installation's token (`byok kms migrate`, dry run first), and
//! every org's calls keep working with the same workload tokens.
//!
//! Skipped without SoftHSM2, unless `BYOK_REQUIRE_PKCS11=1`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use byok_kms_pkcs11::Pkcs11Config;
use byok_mock_provider::{MockConfig, MockProvider};
use serde_json::{json, Value};
use support::{admin_json, clean_command, operator_token, serve_refused, Server};

const KEY: &str = "sk-canary-kms-e2e-openai-0a1b2c3d4e5f6071";

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn byok(argv: &[&str], env: &[(&str, &str)]) -> Run {
    let output = clean_command().args(argv).envs(env.iter().copied()).stdin(Stdio::null()).output().unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A second SoftHSM2 token (the customer's), in the same SoftHSM2 configuration as the
/// test token; `None` when the test token is not SoftHSM2's.
fn customer_token(scratch: &Path, base: &Pkcs11Config) -> Option<Pkcs11Config> {
    std::env::var_os("SOFTHSM2_CONF")?;
    let label = format!("cust-{}", &ulid::Ulid::new().to_string()[16..]);
    let pin = format!("{}", ulid::Ulid::new().0 % 1_000_000_000);
    let status = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", &label, "--so-pin", &format!("so{pin}"), "--pin", &pin])
        .stdout(Stdio::null())
        .status()
        .ok()?;
    assert!(status.success(), "softhsm2-util could not make the customer's token");
    let pin_file = scratch.join("customer.pin");
    std::fs::write(&pin_file, &pin).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pin_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    Some(Pkcs11Config { token_label: label, pin_file: Some(pin_file), ..base.clone() })
}

fn token_toml(section: &str, config: &Pkcs11Config) -> String {
    format!(
        "[{section}]\nmodule = {:?}\ntoken_label = {:?}\npin_file = {:?}\n",
        config.module.display().to_string(),
        config.token_label,
        config.pin_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
    )
}

async fn chat(http: &reqwest::Client, server: &Server, token: &str) -> u16 {
    http.post(format!("{}/openai/v1/chat/completions", server.proxy_url))
        .bearer_auth(token)
        .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// What the store says about keys: every org's KEK version and KMS, every wrapped key,
/// how many lifecycle events.
async fn keys_state(data_dir: &Path) -> String {
    let store = byok_store::Store::open_sqlite(&data_dir.join("byok.db")).await.unwrap();
    let mut state = String::new();
    for org in store.list_orgs().await.unwrap() {
        let events = store.list_events(&org.id, &byok_store::EventFilter::default()).await.unwrap().len();
        let keys = store.list_wrapped_deks(&org.id).await.unwrap();
        let fingerprint_key = store.org_fingerprint_key(&org.id).await.unwrap();
        state.push_str(&format!("{org:?} {events} {keys:?} {fingerprint_key:?}\n"));
    }
    store.close().await;
    state
}

#[tokio::test(flavor = "multi_thread")]
async fn a_customer_kms_and_a_data_directory_migration_keep_every_call_working() {
    let scratch = tempfile::tempdir().unwrap();
    let Some(token) = byok_kms_pkcs11::testing::test_token(scratch.path()).unwrap() else {
        if byok_kms_pkcs11::testing::pkcs11_required() {
            panic!("BYOK_REQUIRE_PKCS11=1 but {}", byok_kms_pkcs11::testing::NOT_INSTALLED);
        }
        let _ = writeln!(std::io::stderr(), "skipped: {}", byok_kms_pkcs11::testing::NOT_INSTALLED);
        return;
    };
    let customer = customer_token(scratch.path(), &token).unwrap_or_else(|| token.clone());
    let customer_section = format!(
        "[kms.customer.acme-hsm]\nbackend = \"pkcs11\"\norgs = [\"acme\"]\n{}",
        token_toml("kms.customer.acme-hsm.pkcs11", &customer)
    );
    let local_config = scratch.path().join("local.toml");
    std::fs::write(&local_config, &customer_section).unwrap();
    let hsm_config = scratch.path().join("hsm.toml");
    std::fs::write(
        &hsm_config,
        format!("[kms]\nbackend = \"pkcs11\"\n{}{customer_section}", token_toml("kms.pkcs11", &token)),
    )
    .unwrap();
    let local_config = local_config.to_str().unwrap().to_owned();
    let hsm_config = hsm_config.to_str().unwrap().to_owned();

    let mock =
        MockProvider::start(MockConfig { openai_keys: vec![KEY.to_owned()], ..MockConfig::default() }).await.unwrap();
    let upstream = mock.base_url();
    let upstream_env = ("BYOK_UPSTREAM_OPENAI", upstream.as_str());

    // 1. Local keyring by default, the customer's token configured.
    let server = Server::start_with(&[upstream_env, ("BYOK_CONFIG", &local_config)]);
    let op = operator_token(&server);
    let http = reqwest::Client::new();
    let api = |path: &str| format!("{}{path}", server.admin_url);
    let post = reqwest::Method::POST;
    let in_a_year = "2099-01-01T00:00:00Z";
    for (org, tier) in [("acme", "katman-c"), ("beta", "katman-b")] {
        admin_json(&http, post.clone(), api("/v1/orgs"), &op, Some(json!({"name": org, "tier": tier}))).await;
        admin_json(&http, post.clone(), api(&format!("/v1/orgs/{org}/teams")), &op, Some(json!({"name": "core"})))
            .await;
        let credential = json!({"name": "main", "provider": "openai", "secret": KEY, "scope": {"teams": ["core"]}, "expires_at": in_a_year});
        admin_json(&http, post.clone(), api(&format!("/v1/orgs/{org}/credentials")), &op, Some(credential)).await;
    }
    let mut tokens = Vec::new();
    for org in ["acme", "beta"] {
        let issued =
            admin_json(&http, post.clone(), api(&format!("/v1/orgs/{org}/tokens")), &op, Some(json!({"team": "core"})))
                .await;
        tokens.push(issued["token"].as_str().unwrap().to_owned());
    }
    for token in &tokens {
        assert_eq!(chat(&http, &server, token).await, 200);
    }

    // 2. acme moves into its own token with the CLI; beta may not (katman-b).
    let admin_env = [("BYOK_ADMIN_URL", server.admin_url.as_str()), ("BYOK_ADMIN_TOKEN", op.as_str())];
    let refused = byok(&["kek", "move", "--org", "beta", "--kms", "acme-hsm"], &admin_env);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(refused.stderr.contains("katman-c"), "{}", refused.stderr);
    // The token is reserved for acme: another katman-c org may not use it.
    admin_json(&http, post.clone(), api("/v1/orgs"), &op, Some(json!({"name": "gamma", "tier": "katman-c"}))).await;
    let refused = byok(&["kek", "move", "--org", "gamma", "--kms", "acme-hsm"], &admin_env);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(refused.stderr.contains("reserved for acme"), "{}", refused.stderr);
    let moved = byok(&["kek", "move", "--org", "acme", "--kms", "acme-hsm"], &admin_env);
    assert_eq!(moved.code, 0, "{}", moved.stderr);
    assert!(moved.stdout.contains("acme-hsm"), "{}", moved.stdout);
    let status = admin_json(&http, reqwest::Method::GET, api("/v1/orgs/acme/kek"), &op, None).await;
    assert_eq!((status["kms"].as_str(), status["kek_version"].as_u64()), (Some("acme-hsm"), Some(2)), "{status}");
    assert!(status.get("moving_from").is_none(), "{status}");
    for token in &tokens {
        assert_eq!(chat(&http, &server, token).await, 200);
    }
    let kms = byok(&["kms", "list"], &admin_env);
    assert_eq!(kms.code, 0, "{}", kms.stderr);
    assert!(
        kms.stdout.contains("acme-hsm") && kms.stdout.contains("pkcs11") && kms.stdout.contains("local"),
        "{}",
        kms.stdout
    );
    let metrics = http.get(api("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"byok_kms_operations_total{kms="acme-hsm",op="unwrap"}"#), "{metrics}");
    assert!(!metrics.contains(KEY));

    // 3. Migrate the data directory into the installation's token, offline.
    let running =
        byok(&["--data-dir", server.data_dir.path().to_str().unwrap(), "kms", "migrate", "--config", &hsm_config], &[]);
    assert_ne!(running.code, 0);
    assert!(running.stderr.contains("stop it first"), "{}", running.stderr);
    let data_dir = server.stop();
    let dir = data_dir.path().to_str().unwrap().to_owned();
    let keyring = data_dir.path().join("keyring.json");
    let keyring_before = std::fs::read(&keyring).unwrap();
    let db_before = keys_state(data_dir.path()).await;

    let refused = serve_refused(data_dir.path(), &[upstream_env, ("BYOK_CONFIG", &hsm_config)]);
    assert!(refused.contains("byok kms migrate"), "{refused}");

    let dry = byok(&["--data-dir", &dir, "kms", "migrate", "--config", &hsm_config, "--dry-run"], &[]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert!(dry.stdout.contains("would migrate") && dry.stdout.contains("customer KMS 'acme-hsm'"), "{}", dry.stdout);
    assert!(dry.stdout.contains("nothing was changed"), "{}", dry.stdout);
    assert!(std::fs::read(&keyring).unwrap() == keyring_before, "a dry run leaves the keyring as it was");
    assert!(keys_state(data_dir.path()).await == db_before, "a dry run leaves the store as it was");

    let migrated = byok(&["--data-dir", &dir, "--json", "kms", "migrate", "--config", &hsm_config], &[]);
    assert_eq!(migrated.code, 0, "{}", migrated.stderr);
    let report: Value = serde_json::from_str(&migrated.stdout).unwrap();
    let beta = report["orgs"].as_array().unwrap().iter().find(|o| o["name"] == "beta").unwrap();
    assert_eq!((beta["state"].as_str(), beta["to_kek_version"].as_u64()), (Some("migrated"), Some(2)), "{report}");
    assert!(!keyring.exists(), "the emptied keyring is set aside");
    let retired = std::fs::read_to_string(data_dir.path().join("keyring.json.migrated")).unwrap();
    assert!(!retired.contains("\"1\""), "no key is left in the retired keyring: {retired}");

    // A local configuration no longer fits the data directory.
    let refused = serve_refused(data_dir.path(), &[upstream_env, ("BYOK_CONFIG", &local_config)]);
    assert!(refused.contains("pkcs11"), "{refused}");

    // 4. Serving from the tokens: same workload tokens, every call works, audit verifies.
    let server = Server::start_in(data_dir, &[upstream_env, ("BYOK_CONFIG", &hsm_config)]);
    for token in &tokens {
        assert_eq!(chat(&http, &server, token).await, 200);
    }
    let verify =
        admin_json(&http, reqwest::Method::GET, format!("{}/v1/orgs/beta/audit/verify", server.admin_url), &op, None)
            .await;
    assert_eq!(verify["ok"], true, "{verify}");
    let lifecycle = admin_json(
        &http,
        reqwest::Method::GET,
        format!("{}/v1/orgs/beta/credentials/main/lifecycle", server.admin_url),
        &op,
        None,
    )
    .await;
    let rewrapped = lifecycle["events"].as_array().unwrap().iter().filter(|e| e["kind"] == "rewrapped").count();
    assert_eq!(rewrapped, 1, "{lifecycle}");
    mock.shutdown().await;
}
