//! Phase 9: stream and meter. The upstream's body passes through frame by frame as it
//! arrives; on the way, an echoed key is masked, usage is read, and when the body ends
//! (or the client goes away) the call's completion is recorded.

use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue};
use byok_audit::AuditWriter;
use byok_domain::{CallCompletion, CredentialId, Metering, OrgId, Timestamp};
use byok_providers::UsageTap;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use memchr::memmem;
use zeroize::Zeroizing;

/// Masks every occurrence of the key in a stream of chunks with `*` of the same length
/// (so a `Content-Length` stays true), holding back only a chunk tail that could be the
/// start of the key.
pub(crate) struct Redactor {
    needle: Zeroizing<Vec<u8>>,
    held: Zeroizing<Vec<u8>>,
}

impl Redactor {
    pub(crate) fn new(key: &[u8]) -> Self {
        Self { needle: Zeroizing::new(key.to_vec()), held: Zeroizing::new(Vec::new()) }
    }

    /// The longest proper prefix of the key that `buf` ends with.
    fn partial_suffix(&self, buf: &[u8]) -> usize {
        let Some(last) = buf.last() else { return 0 };
        if !self.needle.contains(last) {
            return 0;
        }
        let longest = (self.needle.len() - 1).min(buf.len());
        (1..=longest).rev().find(|k| buf.ends_with(&self.needle[..*k])).unwrap_or(0)
    }

    fn mask(&self, buf: &mut [u8]) {
        let n = self.needle.len();
        let mut from = 0;
        while let Some(at) = memmem::find(&buf[from..], &self.needle) {
            let start = from + at;
            buf[start..start + n].fill(b'*');
            from = start + n;
        }
    }

    /// The part of `chunk` (after anything held) that can be sent now.
    pub(crate) fn push(&mut self, chunk: Bytes) -> Bytes {
        if self.needle.len() < 8 {
            return chunk;
        }
        if self.held.is_empty() && memmem::find(&chunk, &self.needle).is_none() && self.partial_suffix(&chunk) == 0 {
            return chunk;
        }
        let mut buf = std::mem::take(&mut *self.held);
        buf.extend_from_slice(&chunk);
        self.mask(&mut buf);
        let keep = self.partial_suffix(&buf);
        let tail = buf.split_off(buf.len() - keep);
        *self.held = tail;
        Bytes::from(buf)
    }

    /// Whatever is still held, at the end of the body.
    pub(crate) fn finish(&mut self) -> Bytes {
        Bytes::from(std::mem::take(&mut *self.held))
    }

    /// Mask the key in header values.
    pub(crate) fn headers(&self, headers: &mut HeaderMap) {
        if self.needle.len() < 8 {
            return;
        }
        for value in headers.values_mut() {
            if memmem::find(value.as_bytes(), &self.needle).is_some() {
                let mut bytes = value.as_bytes().to_vec();
                self.mask(&mut bytes);
                if let Ok(masked) = HeaderValue::from_bytes(&bytes) {
                    *value = masked;
                }
            }
        }
    }
}

/// What to record when the call completes.
pub(crate) struct Meter {
    pub(crate) audit: AuditWriter,
    pub(crate) call_id: String,
    /// The calling org (whose audit and bill the call belongs to, also when a platform
    /// credential served it).
    pub(crate) org_id: OrgId,
    pub(crate) credential_id: CredentialId,
    pub(crate) started: Instant,
    pub(crate) upstream_status: u16,
    /// How the call is priced, fixed now that it is made.
    pub(crate) metering: Metering,
    /// Where this node counts spend for budgets.
    pub(crate) book: Arc<crate::spend::SpendBook>,
}

impl Meter {
    pub(crate) fn record(self, status: &str, tap: Option<UsageTap>) {
        let usage = tap.map(UsageTap::finish).unwrap_or_default();
        let completion = CallCompletion {
            call_id: self.call_id,
            org_id: self.org_id,
            credential_id: self.credential_id,
            at: Timestamp::now(),
            upstream_status: Some(self.upstream_status),
            latency_us: i64::try_from(self.started.elapsed().as_micros()).unwrap_or(i64::MAX),
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            status: status.to_owned(),
            metering: Some(self.metering),
        };
        self.book.completed(&completion);
        self.audit.complete(completion);
    }
}

/// A call's completion not yet recorded: if the call is dropped before anything takes
/// it over (the client went away while the upstream had not answered), the drop records
/// `client_cancelled`, so every allowed row gets its completion.
pub(crate) struct PendingCompletion(Option<Meter>);

impl PendingCompletion {
    pub(crate) fn new(meter: Meter) -> Self {
        Self(Some(meter))
    }

    /// Hand the completion over, with the upstream's status when there is one.
    pub(crate) fn take(&mut self, upstream_status: u16) -> Option<Meter> {
        self.0.take().map(|mut meter| {
            meter.upstream_status = upstream_status;
            meter
        })
    }
}

impl Drop for PendingCompletion {
    fn drop(&mut self) {
        if let Some(meter) = self.0.take() {
            meter.record("client_cancelled", None);
        }
    }
}

/// The response body: the upstream's, redacted and metered.
pub(crate) struct MeteredBody {
    inner: Incoming,
    tap: Option<UsageTap>,
    redactor: Redactor,
    meter: Option<Meter>,
    ended: bool,
}

impl MeteredBody {
    pub(crate) fn new(inner: Incoming, tap: UsageTap, redactor: Redactor, meter: Option<Meter>) -> Self {
        Self { inner, tap: Some(tap), redactor, meter, ended: false }
    }

    fn finish(&mut self, status: &str) {
        if let Some(meter) = self.meter.take() {
            meter.record(status, self.tap.take());
        }
    }
}

impl Body for MeteredBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        if let Some(tap) = this.tap.as_mut() {
                            tap.feed(&data);
                        }
                        let mut out = this.redactor.push(data);
                        if this.inner.is_end_stream() {
                            // The server may stop polling once a Content-Length is met:
                            // finish with the last frame rather than on a later poll.
                            this.ended = true;
                            this.finish("completed");
                            let tail = this.redactor.finish();
                            if !tail.is_empty() {
                                let mut joined = Vec::with_capacity(out.len() + tail.len());
                                joined.extend_from_slice(&out);
                                joined.extend_from_slice(&tail);
                                out = Bytes::from(joined);
                            }
                        }
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                Some(Err(err)) => {
                    this.finish("upstream_error");
                    return Poll::Ready(Some(Err(err)));
                }
                None => {
                    this.ended = true;
                    this.finish("completed");
                    let tail = this.redactor.finish();
                    if !tail.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(tail))));
                    }
                    return Poll::Ready(None);
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for MeteredBody {
    fn drop(&mut self) {
        // Dropped before the end: the client went away. Dropping `inner` closes the
        // upstream connection, which cancels the upstream request.
        self.finish("client_cancelled");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"sk-live-0123456789abcdef";

    fn run(chunks: &[&[u8]]) -> Vec<u8> {
        let mut redactor = Redactor::new(KEY);
        let mut out = Vec::new();
        for chunk in chunks {
            out.extend_from_slice(&redactor.push(Bytes::copy_from_slice(chunk)));
        }
        out.extend_from_slice(&redactor.finish());
        out
    }

    #[test]
    fn masks_keys_across_any_chunking_and_keeps_length() {
        let body = b"{\"error\":\"Incorrect API key provided: sk-live-0123456789abcdef. again sk-live-0123456789abcdef\"} sk-li";
        for size in 1..body.len() {
            let chunks: Vec<&[u8]> = body.chunks(size).collect();
            let out = run(&chunks);
            assert_eq!(out.len(), body.len(), "chunk size {size}");
            assert!(memmem::find(&out, KEY).is_none(), "chunk size {size}");
            assert!(out.ends_with(b"sk-li"), "a partial key at the very end is not the key");
        }
    }

    #[test]
    fn passes_clean_chunks_through_untouched() {
        let mut redactor = Redactor::new(KEY);
        let chunk = Bytes::from_static(b"data: {\"choices\":[]}\n\n");
        let out = redactor.push(chunk.clone());
        assert_eq!(out, chunk);
        assert_eq!(out.as_ptr(), chunk.as_ptr(), "no copy on the fast path");
    }

    #[test]
    fn masks_header_values() {
        let redactor = Redactor::new(KEY);
        let mut headers = HeaderMap::new();
        headers.insert("x-echo", HeaderValue::from_static("key=sk-live-0123456789abcdef"));
        redactor.headers(&mut headers);
        assert_eq!(headers["x-echo"], "key=************************");
    }
}
