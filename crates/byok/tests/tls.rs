//! The data-plane listener over TLS (`[proxy] tls_cert_file`, `tls_key_file`): a real
//! `byok serve` with a certificate made here (a test CA and a leaf for 127.0.0.1) answers
//! calls over https to a client that trusts the CA, and nothing over plain http; files
//! that cannot be used stop the start with an error naming the setting and the file.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use byok_mock_provider::{MockConfig, MockProvider};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde_json::{json, Value};
use support::pki::Pki;
use support::{admin_json, operator_token, serve_refused, Server};

const OPENAI_KEY: &str = "sk-canary-tls-listener-a1b2c3d4e5f60718";

type Client = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

/// An https client trusting `roots` only (rustls on ring).
fn https_client(roots: &[CertificateDer<'static>]) -> Client {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    let connector =
        hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config).https_only().enable_http1().build();
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector)
}

fn chat_request(url: &str, token: &str) -> hyper::Request<Full<Bytes>> {
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello over tls"}]});
    hyper::Request::post(url)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .header("x-byok-call-id", "tls-call")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_data_plane_answers_over_tls_only() {
    let pki = Pki::new();
    let mock = MockProvider::start(MockConfig { openai_keys: vec![OPENAI_KEY.to_owned()], ..MockConfig::default() })
        .await
        .unwrap();
    let upstream = mock.base_url();
    let server = Server::start_tls(&pki, &[("BYOK_UPSTREAM_OPENAI", upstream.as_str())]);
    let operator = operator_token(&server);
    let http = reqwest::Client::new();
    let admin = |path: &str, body: Value| {
        admin_json(&http, reqwest::Method::POST, format!("{}{path}", server.admin_url), &operator, Some(body))
    };
    admin("/v1/orgs", json!({"name": "acme", "tier": "katman-b"})).await;
    admin("/v1/orgs/acme/teams", json!({"name": "apps"})).await;
    admin("/v1/orgs/acme/credentials", json!({"name": "openai", "provider": "openai", "secret": OPENAI_KEY})).await;
    let token = admin("/v1/orgs/acme/tokens", json!({"team": "apps"})).await["token"].as_str().unwrap().to_owned();
    let https_base = server.proxy_url.replacen("http://", "https://", 1);
    let url = format!("{https_base}/openai/v1/chat/completions");

    // Over https, trusting the test CA: the call is served with the stored key.
    let ca = CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).unwrap();
    let client = https_client(std::slice::from_ref(&ca));
    let response = client.request(chat_request(&url, &token)).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["x-byok-credential"].to_str().unwrap().starts_with("cred_"));
    let body: Value = serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "mock reply to: hello over tls");
    assert!(body["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    let received = mock.requests();
    assert_eq!(received.len(), 1);
    assert!(received[0].key_valid && received[0].presented_key.as_deref() == Some(OPENAI_KEY));
    assert!(received[0].headers.iter().all(|(_, value)| !value.contains(&token)), "workload token forwarded");

    // A second call on the same kept-alive TLS connection works too.
    let again = client.request(chat_request(&url, &token)).await.unwrap();
    assert_eq!(again.status(), 200);

    // A client that does not trust the CA cannot complete the handshake.
    let untrusting = https_client(&[]);
    let refused = untrusting.request(chat_request(&url, &token)).await;
    assert!(refused.is_err(), "an untrusted certificate was accepted");

    // Plain http to the TLS listener gets no HTTP answer: the handshake fails and the
    // connection is closed. Nothing more reached the provider.
    let plain = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let sent = plain
        .post(format!("{}/openai/v1/chat/completions", server.proxy_url))
        .bearer_auth(&token)
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "plain"}]}))
        .send()
        .await;
    assert!(sent.is_err(), "a plain-http request was answered: {:?}", sent.map(|r| r.status()));
    assert_eq!(mock.requests().len(), 2);

    // The workload token and the key never reached the logs.
    let logs = server.logs();
    assert!(!logs.contains(OPENAI_KEY) && !logs.contains(&token));
    assert!(logs.contains("tls=true") || logs.contains("\"tls\":true"), "the start does not say TLS is on:\n{logs}");
    drop(server);
    mock.shutdown().await;
}

fn refused_with(cert: &Path, key: &Path) -> String {
    let data_dir = tempfile::tempdir().unwrap();
    serve_refused(
        data_dir.path(),
        &[("BYOK_PROXY_TLS_CERT_FILE", cert.to_str().unwrap()), ("BYOK_PROXY_TLS_KEY_FILE", key.to_str().unwrap())],
    )
}

#[test]
fn unusable_certificate_or_key_files_stop_the_start_naming_setting_and_file() {
    let pki = Pki::new();
    let missing = pki.path("missing.crt");
    let cases = [
        (missing.clone(), pki.path("proxy.key"), "tls_cert_file", missing.clone()),
        (pki.path("not-pem.txt"), pki.path("proxy.key"), "tls_cert_file", pki.path("not-pem.txt")),
        (pki.path("proxy.crt"), pki.path("not-pem.txt"), "tls_key_file", pki.path("not-pem.txt")),
        (pki.path("proxy.crt"), pki.path("other.key"), "tls_key_file", pki.path("other.key")),
    ];
    for (cert, key, setting, file) in cases {
        let stderr = refused_with(&cert, &key);
        assert!(stderr.contains(setting), "{setting} not named:\n{stderr}");
        assert!(stderr.contains(file.to_str().unwrap()), "{} not named:\n{stderr}", file.display());
    }
    // One of the two alone is refused too.
    let data_dir = tempfile::tempdir().unwrap();
    let cert = pki.path("proxy.crt");
    let stderr = serve_refused(data_dir.path(), &[("BYOK_PROXY_TLS_CERT_FILE", cert.to_str().unwrap())]);
    assert!(stderr.contains("tls_key_file"), "{stderr}");
}
