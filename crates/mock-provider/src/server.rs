//! The server: accept, record, classify, authenticate, answer (normally or as scripted).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header::LOCATION;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;
use axum::serve::ListenerExt as _;
use axum::Router;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::{self, Auth};
use crate::body::{stopped, Break, EventSource, MockBody};
use crate::faults::{self, Faults, Verdict};
use crate::record::{Provider, RecordedRequest, Recorder, Tracker};
use crate::reply::{fixed_error_event, Reply, ReplyBody};
use crate::routes::{self, Route};
use crate::script::{ScriptedResponse, Scripts, StreamBreak};
use crate::{anthropic, bedrock, errors, gemini, openai, MockConfig};

/// The largest request body the mock reads.
const MAX_REQUEST_BODY: usize = 64 * 1024 * 1024;

/// State shared by every connection.
pub(crate) struct Shared {
    pub(crate) config: MockConfig,
    pub(crate) recorder: Recorder,
    pub(crate) scripts: Scripts,
    pub(crate) faults: Faults,
    ids: AtomicU64,
    stop: watch::Receiver<bool>,
}

impl Shared {
    pub(crate) fn new(config: MockConfig, stop: watch::Receiver<bool>) -> Self {
        Self {
            recorder: Recorder::new(config.record),
            config,
            scripts: Scripts::default(),
            faults: Faults::default(),
            ids: AtomicU64::new(1),
            stop,
        }
    }

    fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }
}

/// Serves until `stop` turns true, then shuts down gracefully.
pub(crate) async fn run(
    listener: TcpListener,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let router = Router::new().fallback(handle).with_state(shared);
    // Streamed events are small writes; Nagle's algorithm would hold them back.
    let listener = listener.tap_io(|stream| {
        let _ = stream.set_nodelay(true);
    });
    axum::serve(listener, router).with_graceful_shutdown(stopped(stop)).await
}

/// One incoming request, read whole.
struct Incoming {
    method: Method,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Bytes,
    route: Route,
    auth: Auth,
}

impl Incoming {
    fn describe(&self) -> RecordedRequest {
        RecordedRequest {
            method: self.method.to_string(),
            path: match &self.query {
                Some(query) => format!("{}?{query}", self.path),
                None => self.path.clone(),
            },
            headers: self
                .headers
                .iter()
                .map(|(name, value)| (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
                .collect(),
            body: self.body.to_vec(),
            provider: self.route.provider(),
            presented_key: self.auth.presented.clone(),
            key_valid: self.auth.is_valid(),
            status: None,
            completed: false,
            finished: false,
        }
    }
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    // A body that cannot be read (too large, or the client went away) is recorded empty.
    let body = axum::body::to_bytes(body, MAX_REQUEST_BODY).await.unwrap_or_default();
    let route = routes::classify(&parts.method, parts.uri.path(), &parts.headers);
    let auth = match route.provider() {
        // A signature covers the method, the path, the query, the headers and the body.
        Provider::Bedrock => bedrock::authenticate(&parts.method, &parts.uri, &parts.headers, &body, &shared.config),
        provider => auth::authenticate(provider, &parts.headers, parts.uri.query(), &shared.config),
    };
    let incoming = Incoming {
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        method: parts.method,
        headers: parts.headers,
        body,
        route,
        auth,
    };
    let tracker = shared.recorder.record(|| incoming.describe());
    let script = shared.scripts.take();
    respond(&shared, &incoming, script, tracker).await
}

/// Answers `incoming`, as scripted if a script is given.
async fn respond(
    shared: &Shared,
    incoming: &Incoming,
    mut script: Option<ScriptedResponse>,
    tracker: Tracker,
) -> Response {
    while let Some(ScriptedResponse::Delayed { delay, then }) = script {
        tokio::time::sleep(delay).await;
        script = Some(*then);
    }
    let provider = incoming.route.provider();
    let mut planned_break = None;
    let reply = match script {
        None | Some(ScriptedResponse::Normal | ScriptedResponse::Delayed { .. }) => serve(shared, incoming),
        Some(ScriptedResponse::BreakStream { after_events, how }) => {
            let reply = serve(shared, incoming);
            if how == StreamBreak::ErrorEvent && !reply.is_stream() {
                errors::scripted(provider, StatusCode::INTERNAL_SERVER_ERROR)
            } else {
                planned_break = Some((after_events, how));
                reply
            }
        }
        Some(ScriptedResponse::Hang) => {
            // The tracker stays alive while hanging: if the client goes away and the server
            // drops this future, the request is recorded as finished, not completed.
            stopped(shared.stop.clone()).await;
            Reply { status: StatusCode::SERVICE_UNAVAILABLE, headers: Vec::new(), body: ReplyBody::Broken, tokens: 0 }
        }
        Some(ScriptedResponse::Raw { status, headers, body }) => Reply {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            headers: headers
                .iter()
                .filter_map(|(name, value)| {
                    Some((HeaderName::try_from(name.as_str()).ok()?, HeaderValue::try_from(value.as_str()).ok()?))
                })
                .collect(),
            body: ReplyBody::Full(Bytes::from(body)),
            tokens: 0,
        },
        Some(ScriptedResponse::ProviderError { status }) => {
            errors::scripted(provider, StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        }
        Some(ScriptedResponse::Redirect { status, location }) => {
            let mut reply = Reply {
                status: StatusCode::from_u16(status).unwrap_or(StatusCode::FOUND),
                headers: Vec::new(),
                body: ReplyBody::Full(Bytes::new()),
                tokens: 0,
            };
            if let Ok(location) = HeaderValue::try_from(location) {
                reply.headers.push((LOCATION, location));
            }
            reply
        }
        Some(ScriptedResponse::EchoKey) => echo_key(incoming),
        Some(ScriptedResponse::EchoKeyAs(echo)) => crate::echo::reply(&echo, incoming.auth.presented.as_deref()),
        Some(ScriptedResponse::RawChunks { status, headers, chunks }) => {
            crate::echo::raw_chunks(status, &headers, &chunks)
        }
    };
    into_response(shared, reply, planned_break, tracker)
}

/// The normal behaviour: unknown path, key check, the key's fault, provider-specific
/// checks, endpoint.
fn serve(shared: &Shared, incoming: &Incoming) -> Reply {
    let provider = incoming.route.provider();
    if provider == Provider::Unknown {
        return errors::openai_not_found(incoming.method.as_str(), &incoming.path);
    }
    if let Some(rejection) = auth::rejection(provider, &incoming.auth, &shared.config) {
        return rejection;
    }
    let admission = match incoming.auth.presented.as_deref().map(|key| shared.faults.check(key)) {
        Some(Verdict::Refuse(refusal)) => return faults::reply(provider, &refusal, &incoming.auth, &shared.config),
        Some(Verdict::Admitted(admission)) => Some(admission),
        Some(Verdict::Serve) | None => None,
    };
    let reply = serve_endpoint(shared, incoming);
    match admission.and_then(|admission| shared.faults.charge(&admission, reply.tokens)) {
        Some(quota) => faults::with_quota(reply, provider, &quota),
        None => reply,
    }
}

/// The endpoint's answer to a request whose key was accepted and is not faulted.
fn serve_endpoint(shared: &Shared, incoming: &Incoming) -> Reply {
    let id = shared.next_id();
    let body = &incoming.body;
    match &incoming.route {
        Route::OpenAi(endpoint) => openai::serve(endpoint, body, None, id),
        Route::Azure { deployment, endpoint } => {
            if query_param(incoming.query.as_deref(), "api-version").is_none() {
                return errors::azure(
                    StatusCode::BAD_REQUEST,
                    "MissingApiVersionParameter",
                    "The api-version query parameter (?api-version=) is required for all \
                     requests.",
                );
            }
            match deployment {
                Some(deployment) => openai::serve(endpoint, body, Some(deployment), id),
                None => openai::serve_azure_models(endpoint, id),
            }
        }
        Route::Anthropic(endpoint) => {
            if !incoming.headers.contains_key("anthropic-version") {
                return errors::anthropic(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "anthropic-version: header is required",
                );
            }
            anthropic::serve(endpoint, body, id)
        }
        Route::Gemini(endpoint) => {
            let sse = query_param(incoming.query.as_deref(), "alt") == Some("sse");
            gemini::serve(endpoint, body, sse, id)
        }
        Route::Bedrock(endpoint) => bedrock::serve(endpoint, body, id),
        Route::NotFound(Provider::Bedrock) => bedrock::error(
            StatusCode::NOT_FOUND,
            "UnknownOperationException",
            &format!("byok-mock-provider does not serve {} {}", incoming.method, incoming.path),
        ),
        Route::NotFound(Provider::Anthropic) => {
            errors::anthropic(StatusCode::NOT_FOUND, "not_found_error", "Not Found")
        }
        Route::NotFound(Provider::Gemini) => errors::gemini(
            StatusCode::NOT_FOUND,
            &format!("byok-mock-provider does not serve {} {}", incoming.method, incoming.path),
            "NOT_FOUND",
        ),
        Route::NotFound(_) => errors::openai_not_found(incoming.method.as_str(), &incoming.path),
    }
}

fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    })
}

/// 200 quoting the presented key, in the body and in `x-mock-echo-key`.
fn echo_key(incoming: &Incoming) -> Reply {
    let headers: Vec<(&str, String)> = incoming
        .headers
        .iter()
        .map(|(name, value)| (name.as_str(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
        .collect();
    let reply = Reply::json(
        StatusCode::OK,
        &json!({
            "object": "mock.echo",
            "provider": incoming.route.provider().as_str(),
            "presented_key": incoming.auth.presented,
            "headers": headers,
        }),
    );
    match &incoming.auth.presented {
        Some(key) => reply.with_header("x-mock-echo-key", key.clone()),
        None => reply,
    }
}

fn into_response(
    shared: &Shared,
    reply: Reply,
    planned_break: Option<(usize, StreamBreak)>,
    tracker: Tracker,
) -> Response {
    if !matches!(reply.body, ReplyBody::Broken) {
        // A broken body cuts the connection before the head goes out.
        tracker.set_status(reply.status.as_u16());
    }
    let stop = shared.stop.clone();
    let delay = shared.config.stream_chunk_delay;
    let body = match (reply.body, planned_break) {
        (ReplyBody::Broken, _) => MockBody::broken(tracker),
        (ReplyBody::Full(bytes), None) => MockBody::full(bytes, tracker),
        (ReplyBody::Full(bytes), Some((after_events, how))) => {
            // A whole body breaks as a stream of one event.
            let planned = Break { after_events, how, error_event: fixed_error_event(Bytes::new()) };
            let events = Box::new(std::iter::once(bytes));
            MockBody::events(EventSource::new(events, delay, Some(planned), stop), tracker)
        }
        (ReplyBody::Stream { events, error_event }, planned_break) => {
            let planned = planned_break.map(|(after_events, how)| Break { after_events, how, error_event });
            MockBody::events(EventSource::new(events, delay, planned, stop), tracker)
        }
    };
    let mut response = Response::new(Body::new(body));
    *response.status_mut() = reply.status;
    response.headers_mut().extend(reply.headers);
    response
}
