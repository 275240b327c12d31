//! Graceful shutdown (SPEC 8): on SIGTERM `byok serve` stops accepting calls, lets a
//! stream in flight finish, writes its completion and exits — it does not hang (the data
//! plane's handle in the vault is weak, so the audit writer's last handle goes with the
//! listeners and the writer drains).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use byok_mock_provider::{MockConfig, MockProvider};
use reqwest::Method;
use serde_json::json;
use support::{admin_json, operator_token, Server};

const KEY: &str = "sk-shutdown-test-0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_stream_in_flight_and_exits() {
    let mock = MockProvider::start(MockConfig {
        openai_keys: vec![KEY.to_owned()],
        stream_chunk_delay: Duration::from_millis(150),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let upstream = mock.base_url();
    let mut server = Server::start_with(&[("BYOK_UPSTREAM_OPENAI", upstream.as_str())]);
    let operator = operator_token(&server);
    let http = reqwest::Client::new();
    let admin = |path: &str| format!("{}{path}", server.admin_url);
    admin_json(&http, Method::POST, admin("/v1/orgs"), &operator, Some(json!({"name": "acme", "tier": "katman-b"})))
        .await;
    admin_json(&http, Method::POST, admin("/v1/orgs/acme/teams"), &operator, Some(json!({"name": "agents"}))).await;
    let credential = json!({"name": "main", "provider": "openai", "secret": KEY});
    admin_json(&http, Method::POST, admin("/v1/orgs/acme/credentials"), &operator, Some(credential)).await;
    let token =
        admin_json(&http, Method::POST, admin("/v1/orgs/acme/tokens"), &operator, Some(json!({"team": "agents"})))
            .await["token"]
            .as_str()
            .unwrap()
            .to_owned();

    // A stream of several events, 150 ms apart, in flight when the signal arrives.
    let mut response = http
        .post(format!("{}/openai/v1/chat/completions", server.proxy_url))
        .bearer_auth(&token)
        .json(&json!({"model": "gpt-4o", "stream": true,
                      "messages": [{"role": "user", "content": "one two three four five six seven eight"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let first = response.chunk().await.unwrap().unwrap();
    assert!(!first.is_empty());
    let pid = server.child.id().to_string();
    let signalled = std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(signalled.success());

    // The stream finishes whole.
    let mut body = first.to_vec();
    while let Some(chunk) = response.chunk().await.unwrap() {
        body.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(body).unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "the stream was cut: {text}");

    // And the process ends, successfully, soon after.
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "byok serve did not exit after SIGTERM:\n{}", server.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status}:\n{}", server.logs());
    mock.shutdown().await;
}
