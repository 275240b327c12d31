//! The listener: accepts connections up to a cap and serves each over HTTP/1.1 within
//! [`ConnectionLimits`].
//!
//! Why not hyper's own knobs alone: hyper's header-read timer runs whenever a connection
//! waits for a head, idle keep-alive time included, so it cannot give a short bound on a
//! head and a longer one on idling; and hyper answers an oversized head with a bare
//! 431/414 that an SDK shows as an unexplained failure. So each connection is watched here
//! (bytes read, requests in flight), heads are measured before the router sees them and
//! refused in the provider's error shape, and hyper's buffer limit stays as the backstop,
//! at twice the configured limits.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::header::{HeaderValue, CONNECTION};
use axum::http::{Request, Response, Uri};
use axum::Router;
use byok_domain::ProviderId;
use byok_metrics::{CallOutcome, Metrics};
use byok_providers::Api;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tower::Service;

use crate::access::{CallFacts, Ending};
use crate::config::ConnectionLimits;
use crate::error::{Code, Refusal};
use crate::tls::ListenerTls;

/// Which provider's error shape answers a refused head.
pub(crate) type Shape = fn(&Uri) -> Api;

/// The API the path's first segment names (`/anthropic/…` → Anthropic), else OpenAI's,
/// whose shape most SDKs read.
pub(crate) fn provider_shape(uri: &Uri) -> Api {
    path_provider(uri).map_or(Api::OpenAi, |id| byok_providers::spec(id).api)
}

/// The provider the path's first segment names, if it names one.
fn path_provider(uri: &Uri) -> Option<ProviderId> {
    let path = uri.path();
    let first = path.strip_prefix('/').unwrap_or(path).split('/').next().unwrap_or_default();
    first.parse::<ProviderId>().ok()
}

/// What serves a listener: the shape of a refused head's answer, and — on the data plane —
/// where its calls are counted (a refused head is a denied call, with its access line).
#[derive(Clone)]
pub(crate) struct Front {
    pub(crate) shape: Shape,
    pub(crate) calls: Option<Arc<Metrics>>,
    /// TLS on this listener: every connection must complete a handshake first.
    pub(crate) tls: Option<ListenerTls>,
}

/// Serve `router` on `listener` within `limits` until `shutdown` completes, then drain
/// the connections (requests in flight, streams included, run to their end).
///
/// A refused head is answered `{"error":{"message","type","param","code"}}` — OpenAI's
/// shape, which carries the `code` and `message` fields of the admin API's errors too.
pub async fn serve_router(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_with(listener, router, limits, Front { shape: |_| Api::OpenAi, calls: None, tls: None }, shutdown).await
}

/// [`serve_router`], answering refused heads as `front` says.
pub(crate) async fn serve_with(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    front: Front,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let max_connections = limits.max_connections.clamp(1, ConnectionLimits::MAX_CONNECTIONS);
    let slots = Arc::new(Semaphore::new(max_connections));
    let (stop, stopped) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    loop {
        // At the cap nothing is accepted: new connections wait in the listen backlog
        // until a connection ends and gives its slot back.
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    accept_failed(err).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Responses and stream events go out as soon as they are written (as nginx's
        // `tcp_nodelay on`): without it a small write waits for the peer's delayed ACK.
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %err, "cannot set TCP_NODELAY");
        }
        let (router, front, stopped) = (router.clone(), front.clone(), stopped.clone());
        tokio::spawn(async move {
            match front.tls.clone() {
                None => serve_connection(stream, peer, router, limits, front, stopped, slot).await,
                Some(tls) => {
                    // The handshake is part of the head: it gets the head's time bound.
                    let handshake = tokio::time::timeout(limits.header_read_timeout, tls.acceptor().accept(stream));
                    match handshake.await {
                        Ok(Ok(stream)) => serve_connection(stream, peer, router, limits, front, stopped, slot).await,
                        Ok(Err(err)) => {
                            tracing::debug!(%peer, error = %byok_domain::error::Report(&err), "TLS handshake failed");
                        }
                        Err(_) => tracing::debug!(%peer, "TLS handshake did not complete in time"),
                    }
                }
            }
        });
    }
    drop(listener);
    let _ = stop.send(true);
    // Every connection holds its slot until it ends: all slots back means all drained.
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
    Ok(())
}

/// A failed accept: a connection reset before it was taken is nothing; anything else
/// (out of file descriptors) is logged and accepting pauses, as it is unlikely to clear
/// at once.
async fn accept_failed(err: io::Error) {
    if matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %byok_domain::error::Report(&err), "cannot accept a connection");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    router: Router,
    limits: ConnectionLimits,
    front: Front,
    mut stopped: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched { stream, activity: Arc::clone(&activity) });
    let service = {
        let activity = Arc::clone(&activity);
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let in_flight = activity.request_started();
            let started = std::time::Instant::now();
            let mut router = router.clone();
            let front = front.clone();
            async move {
                let response = match head_refusal(&request, &limits) {
                    Some(refusal) => {
                        tracing::debug!(%peer, code = refusal.code.as_str(), "request head refused");
                        let mut response = refusal_response((front.shape)(request.uri()), &refusal);
                        if let Some(metrics) = &front.calls {
                            head_refused(metrics, &request, &refusal, started, &mut response);
                        }
                        response
                    }
                    None => {
                        let mut request = request;
                        // The peer address is needed for katman-c source allow-lists.
                        request.extensions_mut().insert(ConnectInfo(peer));
                        std::future::poll_fn(|cx| Service::<Request<Incoming>>::poll_ready(&mut router, cx)).await?;
                        router.call(request).await?
                    }
                };
                Ok::<_, Infallible>(response.map(|body| InFlightBody { body, _in_flight: in_flight }))
            }
        })
    };
    let mut builder = http1::Builder::new();
    // Head and idle bounds are kept below (hyper's header timer would count idle time);
    // hyper's buffer limit is the backstop for heads far beyond the configured limits.
    builder.header_read_timeout(None).max_buf_size(backstop(&limits));
    let mut connection = pin!(builder.serve_connection(io, service));
    let mut draining = false;
    loop {
        let (at, expiry) = activity.deadline(&limits);
        if let Some(expiry) = expiry {
            if at <= Instant::now() {
                tracing::debug!(%peer, "{}: connection closed", expiry.as_str());
                return;
            }
        }
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(err) = served {
                    tracing::trace!(%peer, error = %byok_domain::error::Report(&err), "connection ended");
                }
                return;
            }
            () = tokio::time::sleep_until(at) => {}
            () = activity.changed.notified() => {}
            _ = stopped.changed(), if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// A data-plane call refused for its head: said like any call's end (its access line and
/// metrics), its call id answered.
fn head_refused(
    metrics: &Metrics,
    request: &Request<Incoming>,
    refusal: &Refusal,
    started: std::time::Instant,
    response: &mut Response<Body>,
) {
    let call_id = crate::server::call_id(request.headers());
    let facts = CallFacts { provider: path_provider(request.uri()), ..CallFacts::default() };
    let ending = Ending {
        outcome: CallOutcome::Denied,
        code: refusal.code.as_str(),
        upstream_status: None,
        input_tokens: None,
        output_tokens: None,
        total: started.elapsed(),
        upstream: Duration::ZERO,
    };
    crate::access::call_ended(metrics, &call_id, &facts, None, &ending);
    if let Ok(value) = HeaderValue::from_str(&call_id) {
        response.headers_mut().insert(axum::http::HeaderName::from_static(crate::server::CALL_ID_HEADER), value);
    }
}

/// hyper's own limit on a buffered head: well above the configured limits, so that a
/// head just over them still reaches [`head_refusal`] and gets an answer an SDK shows.
fn backstop(limits: &ConnectionLimits) -> usize {
    (2 * (limits.max_uri_bytes + limits.max_header_bytes)).max(64 * 1024)
}

/// A refusal for a head beyond `limits`: its request target (414), then its header
/// block (431).
fn head_refusal(request: &Request<Incoming>, limits: &ConnectionLimits) -> Option<Refusal> {
    let uri = request.uri();
    let target = uri.scheme_str().map_or(0, |scheme| scheme.len() + 3)
        + uri.authority().map_or(0, |authority| authority.as_str().len())
        + uri.path_and_query().map_or(0, |path| path.as_str().len());
    if target > limits.max_uri_bytes {
        let message = format!(
            "the request target is {target} bytes long; this server accepts at most {} (send long input in the body)",
            limits.max_uri_bytes
        );
        return Some(Refusal::new(Code::UriTooLong, message));
    }
    let headers: usize = request.headers().iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
    if headers > limits.max_header_bytes {
        let message = format!(
            "the request headers are {headers} bytes long; this server accepts at most {}",
            limits.max_header_bytes
        );
        return Some(Refusal::new(Code::HeadersTooLarge, message));
    }
    None
}

fn refusal_response(api: Api, refusal: &Refusal) -> Response<Body> {
    let mut response = crate::server::refusal_response(api, refusal);
    // The request's body, if any, is not read: the connection cannot be reused.
    response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Why a connection was closed.
#[derive(Debug, Clone, Copy)]
enum Expiry {
    HeaderRead,
    Idle,
}

impl Expiry {
    fn as_str(self) -> &'static str {
        match self {
            Expiry::HeaderRead => "the request head did not arrive in time",
            Expiry::Idle => "the kept-alive connection was idle too long",
        }
    }
}

/// What one connection is doing, as far as its deadlines care.
struct Activity {
    state: Mutex<State>,
    /// Woken when a deadline moves earlier than the one being waited for.
    changed: Notify,
}

struct State {
    /// Requests dispatched whose answers have not been written out.
    in_flight: usize,
    /// When the head now being read began: the accept, or the first byte after idling.
    head_since: Option<Instant>,
    /// When the last answer was written out.
    idle_since: Instant,
}

impl Activity {
    fn new() -> Self {
        let now = Instant::now();
        Self {
            state: Mutex::new(State { in_flight: 0, head_since: Some(now), idle_since: now }),
            changed: Notify::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Bytes arrived: on an idle connection they begin the next head.
    fn bytes_read(&self) {
        let mut state = self.state();
        if state.in_flight == 0 && state.head_since.is_none() {
            state.head_since = Some(Instant::now());
            drop(state);
            self.changed.notify_one();
        }
    }

    /// A whole head was read and its request dispatched.
    fn request_started(self: &Arc<Self>) -> InFlight {
        let mut state = self.state();
        state.in_flight += 1;
        state.head_since = None;
        InFlight(Arc::clone(self))
    }

    fn request_finished(&self) {
        let mut state = self.state();
        state.in_flight = state.in_flight.saturating_sub(1);
        if state.in_flight == 0 {
            state.idle_since = Instant::now();
            drop(state);
            self.changed.notify_one();
        }
    }

    /// When to look again, and what expires then (nothing while a request is in flight).
    fn deadline(&self, limits: &ConnectionLimits) -> (Instant, Option<Expiry>) {
        let state = self.state();
        let after = |since: Instant, bound: Duration| since.checked_add(bound).unwrap_or(since + FAR);
        if state.in_flight > 0 {
            (Instant::now() + FAR, None)
        } else if let Some(since) = state.head_since {
            (after(since, limits.header_read_timeout), Some(Expiry::HeaderRead))
        } else {
            (after(state.idle_since, limits.idle_timeout), Some(Expiry::Idle))
        }
    }
}

/// A wake-up far enough away to mean "not until something changes".
const FAR: Duration = Duration::from_secs(24 * 3600);

/// A request in flight; the connection counts as idle again when the last one drops.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// A response body that keeps its request in flight until hyper has written it out
/// (or dropped it with the connection).
struct InFlightBody {
    body: Body,
    _in_flight: InFlight,
}

impl HttpBody for InFlightBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The connection's stream (a socket, or TLS over one), telling [`Activity`] when bytes
/// arrive.
struct Watched<S> {
    stream: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.bytes_read();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_heads_take_the_shape_of_the_provider_named_in_the_path() {
        let cases = [
            ("/openai/v1/chat/completions", Api::OpenAi),
            ("/anthropic/v1/messages", Api::Anthropic),
            ("/gemini/v1beta/models", Api::Gemini),
            ("/azure-openai/openai/deployments/x", Api::AzureOpenAi),
            ("/nope/v1", Api::OpenAi),
            ("/", Api::OpenAi),
        ];
        for (path, api) in cases {
            let uri: Uri = path.parse().unwrap_or_default();
            assert_eq!(provider_shape(&uri), api, "{path}");
        }
    }

    #[test]
    fn the_parser_backstop_stays_above_the_limits() {
        let limits = ConnectionLimits::default();
        assert!(backstop(&limits) > limits.max_uri_bytes + limits.max_header_bytes);
        let small = ConnectionLimits { max_uri_bytes: 1024, max_header_bytes: 1024, ..limits };
        assert_eq!(backstop(&small), 64 * 1024);
    }
}
