//! Scripted responses: one-off (or standing) answers that replace the normal behaviour.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::echo::Echo;

/// A response a test scripts with [`crate::MockProvider::set_next_response`] or
/// [`crate::MockProvider::set_every_response`].
///
/// A scripted response is served whatever key the request carried (the request is still
/// recorded with its key and `key_valid`), except [`ScriptedResponse::Normal`] and
/// [`ScriptedResponse::BreakStream`], which run the normal handling, key checks included.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ScriptedResponse {
    /// The normal response. Useful inside [`ScriptedResponse::Delayed`].
    Normal,
    /// Waits `delay` before the response head, then serves `then`.
    Delayed {
        /// How long to wait before answering.
        delay: Duration,
        /// What to answer after the wait.
        then: Box<ScriptedResponse>,
    },
    /// Exactly this status, these headers and this body.
    Raw {
        /// The status code (an invalid one becomes 500).
        status: u16,
        /// Response headers; pairs that are not valid HTTP headers are skipped.
        headers: Vec<(String, String)>,
        /// The response body.
        body: Vec<u8>,
    },
    /// An error of status `status` in the error shape of the request's provider (OpenAI's
    /// shape for unknown paths), e.g. 500 `server_error`/`api_error`/`INTERNAL`, 429 rate
    /// limit, 529 `overloaded_error`.
    ProviderError {
        /// The status code (an invalid one becomes 500).
        status: u16,
    },
    /// A redirect: `status` (e.g. 302 or 307) with a `Location` header and an empty body.
    /// A proxy must not follow it with the key attached.
    Redirect {
        /// The status code (an invalid one becomes 302).
        status: u16,
        /// The `Location` header's value.
        location: String,
    },
    /// 200 with a JSON body that quotes the presented key (`presented_key`), every request
    /// header (`headers`) and the provider, and the key again in the `x-mock-echo-key`
    /// response header. For tests that a proxy scrubs keys from what flows back.
    EchoKey,
    /// The presented key quoted back in another form and place, as a JSON body or an SSE
    /// stream, optionally compressed (see [`Echo`]). For tests that a proxy scrubs every
    /// form of the key, not only its exact bytes.
    EchoKeyAs(Echo),
    /// Exactly this status and these headers, and a body written as these pieces, each its
    /// own chunk (chunked transfer encoding). For streams a test builds byte by byte, e.g.
    /// a compressed stream that turns corrupt half-way.
    RawChunks {
        /// The status code (an invalid one becomes 500).
        status: u16,
        /// Response headers; pairs that are not valid HTTP headers are skipped.
        headers: Vec<(String, String)>,
        /// The body's pieces, in order.
        chunks: Vec<Vec<u8>>,
    },
    /// Never answers: no response head is sent until the client gives up (the request is then
    /// recorded as finished but not completed, with no status) or the mock shuts down (then
    /// the connection is cut). For timeout tests.
    Hang,
    /// The normal response (key checks included), broken after `after_events` events of its
    /// body. A non-streamed body counts as one event, so `after_events: 0` breaks it right
    /// after the head and any larger number leaves it intact.
    BreakStream {
        /// How many events are written before the break.
        after_events: usize,
        /// How the response breaks.
        how: StreamBreak,
    },
}

impl ScriptedResponse {
    /// A `302 Found` redirect to `location`.
    pub fn redirect(location: impl Into<String>) -> Self {
        ScriptedResponse::Redirect { status: 302, location: location.into() }
    }

    /// An error of `status` in the request provider's error shape.
    pub fn provider_error(status: u16) -> Self {
        ScriptedResponse::ProviderError { status }
    }

    /// `then`, after waiting `delay`.
    pub fn delayed(delay: Duration, then: ScriptedResponse) -> Self {
        ScriptedResponse::Delayed { delay, then: Box::new(then) }
    }

    /// The presented key echoed as `echo` describes.
    pub fn echo_key_as(echo: Echo) -> Self {
        ScriptedResponse::EchoKeyAs(echo)
    }

    /// A JSON response with `status` and `body`.
    pub fn json(status: u16, body: &serde_json::Value) -> Self {
        ScriptedResponse::Raw {
            status,
            headers: vec![("content-type".to_owned(), "application/json".to_owned())],
            body: body.to_string().into_bytes(),
        }
    }
}

/// How a [`ScriptedResponse::BreakStream`] response breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamBreak {
    /// The connection is cut mid-body: the client sees a truncated chunked body.
    Abort,
    /// The provider's mid-stream error event is written and the stream ends cleanly: OpenAI
    /// `data: {"error": …}` without `[DONE]`, Anthropic `event: error` (`overloaded_error`),
    /// Gemini `data: {"error": {… "INTERNAL"}}`. For a non-streamed response this serves the
    /// provider's 500 error instead.
    ErrorEvent,
    /// Nothing more is written (the connection stays open) until the client gives up or the
    /// mock shuts down.
    Stall,
}

/// The queue of one-off responses and the standing one.
#[derive(Debug, Default)]
pub(crate) struct Scripts {
    /// Whether anything is scripted at all: keeps the lock off the unscripted hot path.
    armed: AtomicBool,
    state: Mutex<ScriptState>,
}

#[derive(Debug, Default)]
struct ScriptState {
    queue: VecDeque<ScriptedResponse>,
    standing: Option<ScriptedResponse>,
}

impl ScriptState {
    fn armed(&self) -> bool {
        !self.queue.is_empty() || self.standing.is_some()
    }
}

impl Scripts {
    fn state(&self) -> MutexGuard<'_, ScriptState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn push(&self, response: ScriptedResponse) {
        let mut state = self.state();
        state.queue.push_back(response);
        self.armed.store(true, Ordering::SeqCst);
    }

    pub(crate) fn set_standing(&self, response: Option<ScriptedResponse>) {
        let mut state = self.state();
        state.standing = response;
        self.armed.store(state.armed(), Ordering::SeqCst);
    }

    pub(crate) fn clear(&self) {
        let mut state = self.state();
        state.queue.clear();
        state.standing = None;
        self.armed.store(false, Ordering::SeqCst);
    }

    /// The response scripted for the request that just arrived, if any.
    pub(crate) fn take(&self) -> Option<ScriptedResponse> {
        if !self.armed.load(Ordering::SeqCst) {
            return None;
        }
        let mut state = self.state();
        let next = state.queue.pop_front().or_else(|| state.standing.clone());
        self.armed.store(state.armed(), Ordering::SeqCst);
        next
    }
}
