//! A mock of the AI provider HTTP APIs that byok sits in front of.
//!
//! The only thing byok's tests simulate are the providers. [`MockProvider`] is a real HTTP
//! server on a loopback port that speaks enough of each provider's API for the official
//! OpenAI and Anthropic SDKs to work against it unchanged (base URL aside), and records
//! every request it receives so tests can assert on exactly what reached "the provider":
//! which key was presented, which headers and which body.
//!
//! | family | paths | key header |
//! | --- | --- | --- |
//! | [`Provider::OpenAi`] (and OpenAI-compatible) | `[PREFIX]/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`, `/v1/responses`, `GET /v1/models[/{id}]` | `Authorization: Bearer` |
//! | [`Provider::Anthropic`] | `/v1/messages`, `/v1/messages/count_tokens`, `GET /v1/models` (when `anthropic-version` or `x-api-key` is sent) | `x-api-key` only |
//! | [`Provider::Gemini`] | `/v1beta/models/{model}:generateContent`, `:streamGenerateContent`, `:embedContent`, `:batchEmbedContents`, `:countTokens`, `GET /v1beta/models[/{model}]` | `x-goog-api-key` only |
//! | [`Provider::AzureOpenAi`] | `/openai/deployments/{deployment}/chat/completions`, `/completions`, `/embeddings`, `GET /openai/models[/{id}]` (all with `?api-version=`) | `api-key` |
//! | [`Provider::Bedrock`] | `POST /model/{modelId}/converse`, `/converse-stream`, `/invoke`, `/invoke-with-response-stream` (streams in AWS event-stream framing) | a SigV4 signature by a known access key (verified), or `Authorization: Bearer` with a Bedrock API key |
//!
//! `[PREFIX]` is any path before the first `/v1/`, so Groq's `/openai/v1/…`, OpenRouter's
//! `/api/v1/…` and plain `/v1/…` all reach the OpenAI handlers.
//!
//! Content is deterministic so tests can check it: the reply is `"mock reply to: "` followed
//! by the text of the last user message, and a token is a whitespace-separated word (prompt
//! tokens count the words of every message and system prompt; completion tokens count the
//! words of the reply). `max_tokens` (or `max_completion_tokens`, `maxOutputTokens`) cuts
//! the reply to that many words and reports the provider's "length" stop reason.
//!
//! Each key can be made to misbehave like a throttled or broken key at the real provider
//! (for failover and key-health tests), on every endpoint of the providers that accept it,
//! streaming ones and the model listings included:
//!
//! | [`KeyFault`] | answer |
//! | --- | --- |
//! | [`KeyFault::RateLimit`] | served within `requests_per_minute` (and `tokens_per_minute`) per sliding 60 s, with the provider's rate-limit headers; past it 429 with `retry-after` |
//! | [`KeyFault::Throttled`] | 429 with `retry-after` and reset headers, until `retry_after` has passed |
//! | [`KeyFault::ThrottledNoHint`] | 429 without `retry-after` or reset headers |
//! | [`KeyFault::Revoked`] | the provider's wrong-key answer (401; Gemini 400 `API_KEY_INVALID`) |
//! | [`KeyFault::Forbidden`] | 403 in the provider's shape |
//! | [`KeyFault::Status`] | that status in the provider's error shape (500, 502, 503, 504, 529, …) |
//!
//! [`MockProvider::set_key_fault`] sets a key's fault until [`MockProvider::clear_key_fault`]
//! (a `Throttled` fault also clears itself once its time is up);
//! [`MockProvider::fail_key_times`] faults only the key's next few requests, ahead of any
//! fault set for it.
//!
//! Rate-limit headers: the OpenAI family (OpenAI, OpenAI-compatible, Azure) sends
//! `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, the resets as durations in
//! OpenAI's (Go's) format (`20ms`, `8.64s`, `1m0s`); Anthropic sends
//! `anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}`, the resets as RFC 3339
//! timestamps. A reset is when the limit is fully replenished. Every 429 with a hint carries
//! `retry-after` in whole seconds (rounded up), plus `retry-after-ms` for Azure and a
//! `RetryInfo` detail in Gemini's body.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use byok_mock_provider::{MockConfig, MockProvider, ScriptedResponse};
//!
//! let mock = MockProvider::start(MockConfig {
//!     openai_keys: vec!["sk-test-openai-0123456789".into()],
//!     ..MockConfig::default()
//! })
//! .await?;
//! // Point the system under test at `mock.base_url()`; then, for example:
//! mock.set_next_response(ScriptedResponse::redirect("http://127.0.0.1:1/stolen"));
//! // … drive a request …
//! let seen = mock.requests();
//! assert!(seen.iter().all(|r| r.header("authorization").is_some()));
//! mock.shutdown().await;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod anthropic;
mod auth;
mod bedrock;
mod body;
mod compress;
mod echo;
mod errors;
mod faults;
mod gemini;
mod openai;
mod record;
mod reply;
mod routes;
mod script;
mod server;
mod text;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use bedrock::{decode_event_stream, BedrockAccessKey};
pub use echo::{BodyCoding, Echo, EchoPlace, KeyForm};
pub use faults::KeyFault;
pub use record::{Provider, RecordedRequest};
pub use script::{ScriptedResponse, StreamBreak};

/// How long [`MockProvider::shutdown`] waits for in-flight responses before cutting them off.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How the mock behaves: which keys it accepts and how it streams.
///
/// An empty key list accepts no key at all for that provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MockConfig {
    /// Keys accepted as `Authorization: Bearer <key>` by the OpenAI family (OpenAI itself and
    /// the OpenAI-compatible providers served under a path prefix).
    pub openai_keys: Vec<String>,
    /// Keys accepted as `x-api-key` by the Anthropic endpoints.
    pub anthropic_keys: Vec<String>,
    /// Keys accepted as `x-goog-api-key` by the Gemini endpoints.
    pub gemini_keys: Vec<String>,
    /// Keys accepted as `api-key` by the Azure OpenAI endpoints.
    pub azure_keys: Vec<String>,
    /// AWS access keys whose SigV4 signatures the Bedrock endpoints verify.
    pub bedrock_access_keys: Vec<BedrockAccessKey>,
    /// Bedrock API keys accepted as `Authorization: Bearer` by the Bedrock endpoints.
    pub bedrock_api_keys: Vec<String>,
    /// Delay between two events of a streamed response (zero by default).
    pub stream_chunk_delay: Duration,
    /// Quote the whole wrong key in OpenAI-family 401 messages, as some OpenAI-compatible
    /// servers do, instead of OpenAI's masked form.
    pub echo_full_key_in_401: bool,
    /// Record requests (on by default). Benchmarks turn it off so per-request work stays
    /// minimal; [`MockProvider::request_count`] still counts.
    pub record: bool,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            openai_keys: Vec::new(),
            anthropic_keys: Vec::new(),
            gemini_keys: Vec::new(),
            azure_keys: Vec::new(),
            bedrock_access_keys: Vec::new(),
            bedrock_api_keys: Vec::new(),
            stream_chunk_delay: Duration::ZERO,
            echo_full_key_in_401: false,
            record: true,
        }
    }
}

/// A running mock provider server bound to a local port.
///
/// Dropping it asks the server to stop; [`MockProvider::shutdown`] also waits for it.
pub struct MockProvider {
    addr: SocketAddr,
    shared: Arc<server::Shared>,
    stop: watch::Sender<bool>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

impl MockProvider {
    /// Starts a mock on `127.0.0.1` with a port chosen by the operating system.
    pub async fn start(config: MockConfig) -> std::io::Result<MockProvider> {
        Self::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), config).await
    }

    /// Starts a mock listening on `addr` (port 0 picks a free port).
    pub async fn start_on(addr: SocketAddr, config: MockConfig) -> std::io::Result<MockProvider> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let shared = Arc::new(server::Shared::new(config, stopped.clone()));
        let server = tokio::spawn(server::run(listener, Arc::clone(&shared), stopped));
        Ok(MockProvider { addr, shared, stop, server: Some(server) })
    }

    /// The address the mock listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The mock's base URL, `http://ADDR:PORT`, without a trailing slash. The OpenAI SDK's
    /// base URL is this plus `/v1`; the Anthropic SDK's is this as it is.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received since the start or the last [`MockProvider::clear`], in
    /// arrival order, with the current state of its response. Empty when recording is off.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.recorder.snapshot()
    }

    /// The most recent request, if any was recorded.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.shared.recorder.last()
    }

    /// How many requests arrived since the start or the last [`MockProvider::clear`]
    /// (counted even when recording is off).
    pub fn request_count(&self) -> usize {
        self.shared.recorder.count()
    }

    /// Forgets the recorded requests and resets the count. Scripted responses stay queued.
    pub fn clear(&self) {
        self.shared.recorder.clear();
    }

    /// Queues a scripted response: the next request that arrives gets it instead of the
    /// normal behaviour, once. Several calls queue several responses, served in order.
    pub fn set_next_response(&self, response: ScriptedResponse) {
        self.shared.scripts.push(response);
    }

    /// Sets (or, with `None`, removes) a standing response served to every request for
    /// which no queued one-off response is waiting.
    pub fn set_every_response(&self, response: Option<ScriptedResponse>) {
        self.shared.scripts.set_standing(response);
    }

    /// Drops every queued one-off response and the standing response.
    pub fn clear_scripted_responses(&self) {
        self.shared.scripts.clear();
    }

    /// Makes every request presenting `key` get `fault` instead of being served, until
    /// [`MockProvider::clear_key_fault`] (or, for [`KeyFault::Throttled`], until its time is
    /// up). Replaces the key's previous fault; a rate limit starts with an empty window.
    pub fn set_key_fault(&self, key: &str, fault: KeyFault) {
        self.shared.faults.set(key, fault);
    }

    /// Removes `key`'s fault, and any count left from [`MockProvider::fail_key_times`]: the
    /// key is served normally again.
    pub fn clear_key_fault(&self, key: &str) {
        self.shared.faults.clear(key);
    }

    /// Answers the next `times` requests presenting `key` as `fault` would (a
    /// [`KeyFault::RateLimit`] as a limit just used up, a [`KeyFault::Throttled`] with its
    /// `retry_after` as the hint each time), then serves normally again, or as the fault set
    /// with [`MockProvider::set_key_fault`] says. Replaces an earlier count for the key;
    /// `times == 0` cancels it.
    pub fn fail_key_times(&self, key: &str, fault: KeyFault, times: u32) {
        self.shared.faults.fail_times(key, fault, times);
    }

    /// Polls the recorded requests until `done` holds for them or `timeout` passes.
    ///
    /// Returns `Ok` with the requests that satisfied `done`, or `Err` with the last ones seen.
    /// Useful to wait for a response to settle, e.g.
    /// `mock.wait_for(t, |r| r.iter().all(|r| r.finished)).await`.
    pub async fn wait_for<F>(
        &self,
        timeout: Duration,
        mut done: F,
    ) -> Result<Vec<RecordedRequest>, Vec<RecordedRequest>>
    where
        F: FnMut(&[RecordedRequest]) -> bool,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let requests = self.requests();
            if done(&requests) {
                return Ok(requests);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(requests);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops accepting connections, lets in-flight responses finish (hanging and stalled
    /// ones are cut off at once; anything still running after a few seconds is aborted) and
    /// waits for the server to end.
    pub async fn shutdown(mut self) {
        self.stop.send_replace(true);
        if let Some(mut server) = self.server.take() {
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await.is_err() {
                server.abort();
            }
        }
    }
}

impl std::fmt::Debug for MockProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockProvider").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl Drop for MockProvider {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}
