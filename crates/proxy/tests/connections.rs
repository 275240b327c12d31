//! Connection limits on the data plane's listener: a request head must arrive within the
//! header-read timeout, a kept-alive connection is closed after the idle timeout, no more
//! than `max_connections` are served at once, and a request target or header block over
//! its limit is answered 414 / 431 in the provider's own error shape without reaching the
//! upstream.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use byok_domain::{ProviderId, ScopeInput};
use byok_mock_provider::{MockConfig, ScriptedResponse};
use byok_proxy::ProxyConfig;
use byok_store::testing::TestStore;
use serde_json::{json, Value};
use support::Env;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A request with no workload token: the sidecar answers it (401) without an upstream.
const UNAUTHENTICATED: &[u8] = b"GET /openai/v1/models HTTP/1.1\r\nhost: byok\r\n\r\n";

async fn start(tune: impl FnOnce(&mut ProxyConfig)) -> Env {
    Env::start_with(TestStore::sqlite().await.unwrap(), MockConfig::default(), tune).await
}

async fn connect(env: &Env) -> TcpStream {
    TcpStream::connect(env.proxy.trim_start_matches("http://")).await.unwrap()
}

/// One HTTP/1.1 response read off `stream`: status and body (`Content-Length` or chunked).
async fn read_response(stream: &mut TcpStream) -> (u16, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before a response head: {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let mut rest = buf[head_end..].to_vec();
    if let Some(length) = head.lines().find_map(|line| line.strip_prefix("content-length:")) {
        let length: usize = length.trim().parse().unwrap();
        fill(stream, &mut rest, length).await;
        rest.truncate(length);
        return (status, rest);
    }
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(at) = rest.windows(2).position(|w| w == b"\r\n") {
                break at;
            }
            let want = rest.len() + 1;
            fill(stream, &mut rest, want).await;
        };
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap().trim(), 16).unwrap();
        fill(stream, &mut rest, line_end + 2 + size + 2).await;
        body.extend_from_slice(&rest[line_end + 2..line_end + 2 + size]);
        rest.drain(..line_end + 2 + size + 2);
        if size == 0 {
            return (status, body);
        }
    }
}

/// Read from `stream` into `rest` until it holds `want` bytes.
async fn fill(stream: &mut TcpStream, rest: &mut Vec<u8>, want: usize) {
    let mut chunk = [0u8; 4096];
    while rest.len() < want {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed mid-body");
        rest.extend_from_slice(&chunk[..n]);
    }
}

/// How long after `since` the server closed `stream` (EOF or reset), waiting at most
/// `limit`; panics if it answered anything.
async fn closed_after(stream: &mut TcpStream, since: Instant, limit: Duration) -> Option<Duration> {
    let mut chunk = [0u8; 1024];
    match tokio::time::timeout(limit, stream.read(&mut chunk)).await {
        Ok(Ok(0) | Err(_)) => Some(since.elapsed()),
        Ok(Ok(n)) => panic!("the server answered instead of closing: {:?}", String::from_utf8_lossy(&chunk[..n])),
        Err(_) => None,
    }
}

/// A client that opens a connection and sends nothing, and one that dribbles a head a
/// byte at a time and never finishes it, are both cut off at the header-read timeout —
/// counted from the accept, so dribbling buys no time.
#[tokio::test]
async fn a_head_that_never_completes_is_cut_off_at_the_header_read_timeout() {
    let env = start(|config| {
        config.connections.header_read_timeout = Duration::from_millis(600);
        config.connections.idle_timeout = Duration::from_secs(30);
    })
    .await;
    let started = Instant::now();
    let mut silent = connect(&env).await;
    let mut dribbling = connect(&env).await;
    let head = b"POST /openai/v1/chat/completions HTTP/1.1\r\nhost: byok\r\nx-slow: ";
    let mut closed = None;
    for byte in head.iter().chain(std::iter::repeat(&b'a')) {
        if dribbling.write_all(&[*byte]).await.is_err() {
            closed = Some(started.elapsed());
            break;
        }
        if let Some(after) = closed_after(&mut dribbling, started, Duration::from_millis(50)).await {
            closed = Some(after);
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "a dribbling head kept its connection open");
    }
    let closed = closed.unwrap();
    assert!(closed >= Duration::from_millis(500), "closed before the header-read timeout: {closed:?}");
    assert!(closed < Duration::from_secs(3), "closed long after the header-read timeout: {closed:?}");
    let silent = closed_after(&mut silent, started, Duration::from_secs(3)).await;
    let silent = silent.expect("a connection that sent nothing stayed open");
    assert!(silent >= Duration::from_millis(500), "{silent:?}");
    assert_eq!(env.mock.request_count(), 0);
    env.stop().await;
}

/// A kept-alive connection survives a call that takes longer than both timeouts and an
/// idle pause longer than the header-read timeout, and is closed once it has been idle for
/// the idle timeout.
#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_at_the_idle_timeout() {
    let env = start(|config| {
        config.connections.header_read_timeout = Duration::from_millis(300);
        config.connections.idle_timeout = Duration::from_millis(1000);
    })
    .await;
    env.credential("main", ProviderId::Openai, ScopeInput::default()).await;
    let token = env.token(&[]).await;
    env.mock.set_next_response(ScriptedResponse::delayed(
        Duration::from_millis(1500),
        ScriptedResponse::json(200, &json!({"object": "list", "data": []})),
    ));
    let mut stream = connect(&env).await;
    let slow = format!("GET /openai/v1/models HTTP/1.1\r\nhost: byok\r\nauthorization: Bearer {token}\r\n\r\n");
    stream.write_all(slow.as_bytes()).await.unwrap();
    let (status, _) = read_response(&mut stream).await;
    assert_eq!(status, 200, "a call in flight was cut off");
    assert_eq!(env.mock.request_count(), 1);

    // Idle longer than the header-read timeout: waiting for a request is not reading one.
    tokio::time::sleep(Duration::from_millis(600)).await;
    stream.write_all(UNAUTHENTICATED).await.unwrap();
    let (status, _) = read_response(&mut stream).await;
    assert_eq!(status, 401);
    let answered = Instant::now();

    let closed = closed_after(&mut stream, answered, Duration::from_secs(5)).await;
    let closed = closed.expect("an idle kept-alive connection stayed open");
    assert!(closed >= Duration::from_millis(850), "closed before the idle timeout: {closed:?}");
    assert!(closed < Duration::from_secs(4), "closed long after the idle timeout: {closed:?}");
    env.stop().await;
}

/// With `max_connections = 2`, a third connection is not served while two are open: it
/// waits (in the listen backlog) and is served as soon as one of the two closes.
#[tokio::test]
async fn a_connection_beyond_the_cap_waits_until_one_closes() {
    let env = start(|config| {
        config.connections.max_connections = 2;
        config.connections.header_read_timeout = Duration::from_secs(30);
        config.connections.idle_timeout = Duration::from_secs(30);
    })
    .await;
    let mut first = connect(&env).await;
    let mut second = connect(&env).await;
    for stream in [&mut first, &mut second] {
        stream.write_all(UNAUTHENTICATED).await.unwrap();
        assert_eq!(read_response(stream).await.0, 401);
    }

    let mut third = connect(&env).await;
    third.write_all(UNAUTHENTICATED).await.unwrap();
    let early = tokio::time::timeout(Duration::from_millis(800), read_response(&mut third)).await;
    assert!(early.is_err(), "a connection beyond max_connections was served");

    drop(first);
    let served = tokio::time::timeout(Duration::from_secs(5), read_response(&mut third)).await;
    assert_eq!(served.expect("the waiting connection was not served once a slot freed").0, 401);
    // The other connection was never disturbed.
    second.write_all(UNAUTHENTICATED).await.unwrap();
    assert_eq!(read_response(&mut second).await.0, 401);
    env.stop().await;
}

/// An authenticated env with an OpenAI and an Anthropic credential, default limits.
async fn authenticated() -> (Env, String) {
    let env = start(|_| {}).await;
    env.credential("openai", ProviderId::Openai, ScopeInput::default()).await;
    env.credential("anthropic", ProviderId::Anthropic, ScopeInput::default()).await;
    let token = env.token(&[]).await;
    (env, token)
}

/// `GET /{provider}/v1/models{query}` with the token where the provider's SDK puts it and
/// `extra` headers.
async fn list_models(
    env: &Env,
    provider: ProviderId,
    token: &str,
    query: &str,
    extra: &[(&str, String)],
) -> reqwest::Result<reqwest::Response> {
    let mut request = env.http.get(env.url(&format!("/{}/v1/models{query}", provider.as_str())));
    request = match provider {
        ProviderId::Anthropic => request.header("x-api-key", token).header("anthropic-version", "2023-06-01"),
        _ => request.bearer_auth(token),
    };
    for (name, value) in extra {
        request = request.header(*name, value);
    }
    request.send().await
}

/// The refusal's JSON, checked to be in `provider`'s shape with `code`.
async fn assert_shaped(response: reqwest::Response, provider: ProviderId, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status);
    let content_type = response.headers().get("content-type").unwrap().to_str().unwrap().to_owned();
    assert_eq!(content_type, "application/json");
    let body: Value = response.json().await.unwrap();
    match provider {
        ProviderId::Anthropic => {
            assert_eq!(body["type"], "error", "{body}");
            assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
        }
        _ => assert_eq!(body["error"]["type"], "invalid_request_error", "{body}"),
    }
    assert_eq!(body["error"]["code"], code, "{body}");
    body
}

#[tokio::test]
async fn a_too_long_request_target_gets_414_in_the_provider_shape() {
    let (env, token) = authenticated().await;
    let long = format!("?filler={}", "a".repeat(9000));
    for provider in [ProviderId::Openai, ProviderId::Anthropic] {
        let response = list_models(&env, provider, &token, &long, &[]).await.unwrap();
        let body = assert_shaped(response, provider, 414, "uri_too_long").await;
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("8192"), "the message names the limit: {message}");
    }
    assert_eq!(env.mock.request_count(), 0, "a refused head reached the upstream");

    // Just under the limit is served.
    let fits = format!("?filler={}", "a".repeat(8000));
    let response = list_models(&env, ProviderId::Openai, &token, &fits, &[]).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(env.mock.request_count(), 1);
    env.stop().await;
}

#[tokio::test]
async fn an_oversized_header_block_gets_431_in_the_provider_shape() {
    let (env, token) = authenticated().await;
    for provider in [ProviderId::Openai, ProviderId::Anthropic] {
        let call_id = format!("head-431-{}", ulid::Ulid::new());
        let filler = [("x-filler", "a".repeat(70 * 1024)), ("x-byok-call-id", call_id.clone())];
        let response = list_models(&env, provider, &token, "", &filler).await.unwrap();
        assert_eq!(response.headers()["x-byok-call-id"], call_id.as_str(), "the call id is answered");
        let body = assert_shaped(response, provider, 431, "headers_too_large").await;
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("65536"), "the message names the limit: {message}");
        // A refused head is a denied call: one access line.
        let line = support::access_line(&call_id);
        let named = format!("provider=\"{}\"", provider.as_str());
        for field in ["outcome=\"denied\"", "code=\"headers_too_large\"", "attempts=0", &named] {
            assert!(line.contains(field), "{field}: {line}");
        }
    }
    // Far beyond the limits the HTTP parser itself cuts the head off (a bare 431, or the
    // connection closed while the client is still sending).
    let huge = [("x-filler", "a".repeat(300 * 1024))];
    if let Ok(response) = list_models(&env, ProviderId::Openai, &token, "", &huge).await {
        assert_eq!(response.status().as_u16(), 431);
    }
    assert_eq!(env.mock.request_count(), 0, "a refused head reached the upstream");

    // Just under the limit is served.
    let fits = [("x-filler", "a".repeat(60 * 1024))];
    let response = list_models(&env, ProviderId::Openai, &token, "", &fits).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(env.mock.request_count(), 1);
    env.stop().await;
}

/// `serve_router` (what `byok serve` runs the admin API with) applies the same limits,
/// answers a refused head with the admin API's `{"error":{"code","message"}}` fields, and
/// on shutdown stops accepting but lets a request in flight finish.
#[tokio::test]
async fn serve_router_limits_heads_and_drains_on_shutdown() {
    let router = axum::Router::new().route(
        "/slow",
        axum::routing::get(|| async {
            tokio::time::sleep(Duration::from_millis(800)).await;
            "done"
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let limits = byok_proxy::ConnectionLimits::default();
    let server = tokio::spawn(byok_proxy::serve_router(listener, router, limits, async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    }));
    let http = reqwest::Client::new();

    let long = format!("http://{addr}/v1/orgs?filler={}", "a".repeat(9000));
    let response = http.get(long).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 414);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "uri_too_long", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("8192"), "{body}");

    let slow = tokio::spawn({
        let http = http.clone();
        async move { http.get(format!("http://{addr}/slow")).send().await.unwrap().text().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.send(true).unwrap();
    assert_eq!(slow.await.unwrap(), "done", "a request in flight was cut off by the shutdown");
    tokio::time::timeout(Duration::from_secs(5), server).await.unwrap().unwrap().unwrap();
    assert!(TcpStream::connect(addr).await.is_err(), "the listener still accepts after shutdown");
}
