//! What a handler answers, before it becomes an HTTP response.

use axum::body::Bytes;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use serde_json::Value;

/// A lazily produced sequence of body pieces, built one at a time as the stream advances
/// (at most one ahead of the piece being written), not up front.
pub(crate) type Events = Box<dyn Iterator<Item = Bytes> + Send>;

/// Builds a provider's mid-stream error event, given how many events were written before it.
pub(crate) type ErrorEvent = Box<dyn FnOnce(usize) -> Bytes + Send>;

/// An error event that does not depend on what came before it.
pub(crate) fn fixed_error_event(event: Bytes) -> ErrorEvent {
    Box::new(move |_| event)
}

/// A handler's answer: status, headers and a body that is either whole or a stream.
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) body: ReplyBody,
    /// The tokens the reply reports as used (input plus output), which count against a
    /// per-key token rate limit ([`crate::KeyFault::RateLimit`]). Zero for errors.
    pub(crate) tokens: u64,
}

/// The body of a [`Reply`].
pub(crate) enum ReplyBody {
    /// A complete body, sent with `Content-Length`.
    Full(Bytes),
    /// A streamed body, one piece per event.
    Stream {
        /// The events, produced one by one.
        events: Events,
        /// The provider's mid-stream error event, for [`crate::StreamBreak::ErrorEvent`].
        error_event: ErrorEvent,
    },
    /// A body that fails at once: the connection is cut after the head.
    Broken,
}

impl Reply {
    /// A JSON body.
    pub(crate) fn json(status: StatusCode, body: &Value) -> Reply {
        Reply {
            status,
            headers: vec![(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            body: ReplyBody::Full(Bytes::from(body.to_string())),
            tokens: 0,
        }
    }

    /// A streamed body of content type `content_type`.
    pub(crate) fn stream(content_type: &'static str, events: Events, error_event: ErrorEvent) -> Reply {
        Reply {
            status: StatusCode::OK,
            headers: vec![
                (CONTENT_TYPE, HeaderValue::from_static(content_type)),
                (axum::http::header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            ],
            body: ReplyBody::Stream { events, error_event },
            tokens: 0,
        }
    }

    /// Adds a header whose value is known to be valid.
    pub(crate) fn with_header(mut self, name: &'static str, value: String) -> Reply {
        if let Ok(value) = HeaderValue::from_str(&value) {
            self.headers.push((HeaderName::from_static(name), value));
        }
        self
    }

    /// Sets the tokens the reply reports as used (input plus output).
    pub(crate) fn with_tokens(mut self, tokens: u64) -> Reply {
        self.tokens = tokens;
        self
    }

    /// Whether the body is streamed.
    pub(crate) fn is_stream(&self) -> bool {
        matches!(self.body, ReplyBody::Stream { .. })
    }
}

/// `text/event-stream` as OpenAI and Anthropic send it.
pub(crate) const EVENT_STREAM: &str = "text/event-stream; charset=utf-8";

/// An unnamed SSE event: `data: JSON\n\n`.
pub(crate) fn sse_data(data: &Value) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}

/// A named SSE event: `event: NAME\ndata: JSON\n\n`.
pub(crate) fn sse_event(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|elapsed| elapsed.as_secs()).unwrap_or(0)
}
