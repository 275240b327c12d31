//! What reached the mock: recorded requests, and how far their responses got.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The API family a request's path belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Provider {
    /// OpenAI and the OpenAI-compatible providers (any path prefix before `/v1/`).
    OpenAi,
    /// Anthropic's Messages API.
    Anthropic,
    /// Google's Gemini API (`/v1beta/models/…`).
    Gemini,
    /// Azure OpenAI (`/openai/deployments/{deployment}/…`).
    AzureOpenAi,
    /// AWS Bedrock runtime (`/model/{modelId}/…`).
    Bedrock,
    /// A path that belongs to none of the families above.
    Unknown,
}

impl Provider {
    /// The provider's id as byok's configuration spells it (`openai`, `anthropic`, `gemini`,
    /// `azure-openai`), or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::Anthropic => "anthropic",
            Provider::Gemini => "gemini",
            Provider::AzureOpenAi => "azure-openai",
            Provider::Bedrock => "bedrock",
            Provider::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One request as the mock received it, with the state of the response it got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    /// The HTTP method, e.g. `POST`.
    pub method: String,
    /// The request target: path and query string, e.g. `/v1beta/models/m:streamGenerateContent?alt=sse`.
    pub path: String,
    /// Every header in arrival order, names lowercase, values decoded lossily as UTF-8.
    pub headers: Vec<(String, String)>,
    /// The request body as received.
    pub body: Vec<u8>,
    /// Which API family the path belongs to.
    pub provider: Provider,
    /// The key taken from the provider's own key header (`Authorization: Bearer` for the
    /// OpenAI family, `x-api-key`, `x-goog-api-key`, `api-key`). For Gemini, a `key=` query
    /// parameter is reported here when no header key was sent. For Bedrock, the access key
    /// id of a SigV4 signature, or the Bedrock API key sent as a bearer token.
    pub presented_key: Option<String>,
    /// Whether the presented key is one the configuration accepts, in the right place (for
    /// a Bedrock signature: whether it verified).
    pub key_valid: bool,
    /// The status code of the response, once the mock has produced its head.
    pub status: Option<u16>,
    /// Whether the whole response body was handed to the connection. False while it is
    /// still being written, and for good when the client went away mid-response or a
    /// scripted [`crate::StreamBreak`] cut it.
    pub completed: bool,
    /// Whether the mock is done with this request: the response was fully written
    /// (`completed`), or it ended early because the client disconnected, a script broke it,
    /// or the server shut down.
    pub finished: bool,
}

impl RecordedRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
    }

    /// Whether any header has the name `name` (case-insensitive).
    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    /// The value of query parameter `name`, undecoded; `Some("")` for a bare `name`.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        let (_, query) = self.path.split_once('?')?;
        query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == name).then_some(value)
        })
    }

    /// The body parsed as JSON, if it is JSON.
    pub fn body_json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A recorded request plus the response state that changes after it was recorded.
#[derive(Debug)]
pub(crate) struct Entry {
    request: RecordedRequest,
    status: AtomicU16,
    completed: AtomicBool,
    finished: AtomicBool,
}

impl Entry {
    fn snapshot(&self) -> RecordedRequest {
        let status = self.status.load(Ordering::SeqCst);
        RecordedRequest {
            status: (status != 0).then_some(status),
            completed: self.completed.load(Ordering::SeqCst),
            finished: self.finished.load(Ordering::SeqCst),
            ..self.request.clone()
        }
    }
}

/// The request log shared by the connections.
#[derive(Debug)]
pub(crate) struct Recorder {
    enabled: bool,
    entries: Mutex<Vec<Arc<Entry>>>,
    count: AtomicUsize,
}

impl Recorder {
    pub(crate) fn new(enabled: bool) -> Self {
        Self { enabled, entries: Mutex::new(Vec::new()), count: AtomicUsize::new(0) }
    }

    fn entries(&self) -> MutexGuard<'_, Vec<Arc<Entry>>> {
        // A panic while holding the lock cannot leave the Vec half-updated: push and clear
        // are the only writes. Keep serving.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a request and, when recording is on, logs what `describe` builds (only called
    /// then, so a benchmark pays nothing for it).
    pub(crate) fn record(&self, describe: impl FnOnce() -> RecordedRequest) -> Tracker {
        self.count.fetch_add(1, Ordering::Relaxed);
        if !self.enabled {
            return Tracker::detached();
        }
        let entry = Arc::new(Entry {
            request: describe(),
            status: AtomicU16::new(0),
            completed: AtomicBool::new(false),
            finished: AtomicBool::new(false),
        });
        self.entries().push(Arc::clone(&entry));
        Tracker { entry: Some(entry), settled: AtomicBool::new(false) }
    }

    pub(crate) fn snapshot(&self) -> Vec<RecordedRequest> {
        let entries: Vec<Arc<Entry>> = self.entries().clone();
        entries.iter().map(|entry| entry.snapshot()).collect()
    }

    pub(crate) fn last(&self) -> Option<RecordedRequest> {
        let last = self.entries().last().cloned();
        last.map(|entry| entry.snapshot())
    }

    pub(crate) fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub(crate) fn clear(&self) {
        self.entries().clear();
        self.count.store(0, Ordering::Relaxed);
    }
}

/// Follows one response to its end and writes the outcome into the request's entry.
///
/// If it is dropped before [`Tracker::settle`] — the client went away and the server dropped
/// the handler or the body — the request is marked finished but not completed.
#[derive(Debug)]
pub(crate) struct Tracker {
    entry: Option<Arc<Entry>>,
    settled: AtomicBool,
}

impl Tracker {
    fn detached() -> Self {
        Self { entry: None, settled: AtomicBool::new(false) }
    }

    pub(crate) fn set_status(&self, status: u16) {
        if let Some(entry) = &self.entry {
            entry.status.store(status, Ordering::SeqCst);
        }
    }

    /// Records the outcome once; later calls are ignored.
    pub(crate) fn settle(&self, completed: bool) {
        if self.settled.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Some(entry) = &self.entry {
            entry.completed.store(completed, Ordering::SeqCst);
            entry.finished.store(true, Ordering::SeqCst);
        }
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.settle(false);
    }
}
