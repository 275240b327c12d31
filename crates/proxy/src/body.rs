//! Phase 9: stream and meter. The upstream's body passes through frame by frame as it
//! arrives; on the way, a compressed body is decoded (byok asks for `identity`, but an
//! upstream may compress anyway, and a compressed echo of the key cannot be masked), an
//! echoed key is masked (see [`crate::redact`]), usage is read, and when the body ends
//! (or the client goes away) the call's completion is recorded and its end said (the
//! access line and the call's metrics, see [`crate::access`]).

use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use std::sync::Arc;

use axum::http::header::{CONTENT_ENCODING, CONTENT_LENGTH};
use axum::http::HeaderMap;
use byok_audit::AuditWriter;
use byok_domain::{CallCompletion, CredentialId, Metering, OrgId, Timestamp};
use byok_metrics::{Metrics, OpenStream};
use byok_providers::UsageTap;
use bytes::Bytes;
use flate2::{Crc, Decompress, FlushDecompress, Status};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::access::{CallFacts, Ending};
use crate::error::{Code, Refusal};
pub(crate) use crate::redact::Redactor;

/// How the upstream's body is coded on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Coding {
    /// As it is (no `Content-Encoding`, or `identity`).
    Identity,
    /// `gzip` (or `x-gzip`): decoded before anything else sees it.
    Gzip,
    /// `deflate`: a zlib stream, or (as some servers send it) a raw DEFLATE stream.
    Deflate,
}

/// Reads the answer's `Content-Encoding`. A body byok can decode will be sent decoded, so
/// its `Content-Encoding` and (now wrong) `Content-Length` are removed and it goes out
/// chunked; any other coding (`br`, `zstd`, `compress`, unknown, or more than one) is
/// refused: byok could neither mask an echoed key in it nor read usage. A body-less answer
/// (`has_body` false: HEAD, 204, 304) has nothing to decode and keeps its headers.
pub(crate) fn take_coding(headers: &mut HeaderMap, has_body: bool) -> Result<Coding, Refusal> {
    if !has_body {
        return Ok(Coding::Identity);
    }
    // The upstream's value is never quoted: it is upstream text, and could hold the key.
    let refuse = || {
        Refusal::new(
            Code::UpstreamUnreachable,
            "the upstream answered in a content encoding byok cannot decode (byok asks for identity; it decodes gzip and deflate)",
        )
    };
    let mut codings = Vec::new();
    for value in headers.get_all(CONTENT_ENCODING) {
        let text = value.to_str().map_err(|_| refuse())?;
        for token in text.split(',').map(str::trim) {
            if !token.is_empty() && !token.eq_ignore_ascii_case("identity") {
                codings.push(token.to_ascii_lowercase());
            }
        }
    }
    let coding = match codings.as_slice() {
        [] => return Ok(Coding::Identity),
        [one] if one == "gzip" || one == "x-gzip" => Coding::Gzip,
        [one] if one == "deflate" => Coding::Deflate,
        _ => return Err(refuse()),
    };
    headers.remove(CONTENT_ENCODING);
    headers.remove(CONTENT_LENGTH);
    Ok(coding)
}

/// Why a compressed body could not be decoded. Never holds body bytes.
#[derive(Debug)]
pub(crate) struct DecodeError(&'static str);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the upstream's compressed body {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

/// The most decoded bytes one step produces: what a compression bomb can make byok hold.
const DECODED_CHUNK: usize = 32 * 1024;

/// The longest gzip member header accepted (a file name or comment without its end would
/// otherwise be buffered for ever).
const MAX_GZIP_HEADER: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Before the body: a gzip member's header, or the first two bytes of a deflate body
    /// (which tell zlib from raw DEFLATE).
    Header,
    Body,
    /// A gzip member's CRC-32 and length.
    Trailer,
    /// The (last) stream ended: nothing may follow.
    Done,
}

/// A streaming gzip/deflate decoder: compressed chunks in, decoded pieces of at most
/// [`DECODED_CHUNK`] bytes out, so memory stays bounded whatever the ratio.
pub(crate) struct Inflater {
    gzip: bool,
    stage: Stage,
    inflate: Decompress,
    crc: Crc,
    /// Compressed bytes not consumed yet (from `pos`).
    input: Vec<u8>,
    pos: usize,
    /// Whether any compressed byte arrived (an empty body is an empty body).
    received: bool,
    /// Gzip members completed.
    members: usize,
}

impl Inflater {
    pub(crate) fn new(coding: Coding) -> Option<Self> {
        let gzip = match coding {
            Coding::Identity => return None,
            Coding::Gzip => true,
            Coding::Deflate => false,
        };
        Some(Self {
            gzip,
            stage: Stage::Header,
            inflate: Decompress::new(false),
            crc: Crc::new(),
            input: Vec::new(),
            pos: 0,
            received: false,
            members: 0,
        })
    }

    /// More compressed bytes.
    pub(crate) fn push(&mut self, chunk: &[u8]) {
        if self.pos > 0 {
            self.input.drain(..self.pos);
            self.pos = 0;
        }
        self.received |= !chunk.is_empty();
        self.input.extend_from_slice(chunk);
    }

    /// The next decoded piece; `None` when more input is needed (or, once `end` — no more
    /// input will come —, when the body is complete).
    pub(crate) fn next(&mut self, end: bool) -> Result<Option<Bytes>, DecodeError> {
        const TRUNCATED: DecodeError = DecodeError("ends before its end");
        const CORRUPT: DecodeError = DecodeError("is corrupt");
        loop {
            let available = &self.input[self.pos..];
            match self.stage {
                Stage::Header => {
                    let header = if self.gzip {
                        gzip_header_len(available)
                    } else if let [cmf, flg, ..] = *available {
                        // zlib-wrapped (as HTTP says) or raw DEFLATE (as some servers send
                        // it), told apart by the zlib header's method and check bits; the
                        // header itself is the decoder's to read.
                        let zlib = cmf & 0x0f == 8 && cmf >> 4 <= 7 && (u16::from(cmf) << 8 | u16::from(flg)) % 31 == 0;
                        self.inflate = Decompress::new(zlib);
                        Ok(Some(0))
                    } else {
                        Ok(None)
                    };
                    match header {
                        Err(()) => return Err(CORRUPT),
                        Ok(Some(len)) => {
                            self.pos += len;
                            self.stage = Stage::Body;
                        }
                        Ok(None) if !end => {
                            if available.len() > MAX_GZIP_HEADER {
                                return Err(CORRUPT);
                            }
                            return Ok(None);
                        }
                        // Nothing at all, or nothing after a complete gzip member.
                        Ok(None) if available.is_empty() && (!self.received || self.members > 0) => {
                            self.stage = Stage::Done;
                        }
                        Ok(None) => return Err(TRUNCATED),
                    }
                }
                Stage::Body => {
                    // Called even without new input: the inflater may hold decoded bytes
                    // it hands out only when asked again.
                    let mut out = Vec::with_capacity(DECODED_CHUNK);
                    let before = self.inflate.total_in();
                    // No `Finish` at the end: it wants room for all the rest at once. Without
                    // it, a stream that stops short shows as no progress.
                    let status =
                        self.inflate.decompress_vec(available, &mut out, FlushDecompress::None).map_err(|_| CORRUPT)?;
                    let consumed = usize::try_from(self.inflate.total_in() - before).unwrap_or(usize::MAX);
                    self.pos += consumed;
                    if self.gzip {
                        self.crc.update(&out);
                    }
                    if status == Status::StreamEnd {
                        self.stage = if self.gzip { Stage::Trailer } else { Stage::Done };
                    }
                    if !out.is_empty() {
                        return Ok(Some(Bytes::from(out)));
                    }
                    if status != Status::StreamEnd && consumed == 0 {
                        return if end { Err(TRUNCATED) } else { Ok(None) };
                    }
                }
                Stage::Trailer => {
                    let Some(trailer) = available.get(..8) else {
                        return if end { Err(TRUNCATED) } else { Ok(None) };
                    };
                    let crc = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
                    let size = u32::from_le_bytes([trailer[4], trailer[5], trailer[6], trailer[7]]);
                    if crc != self.crc.sum() || size != self.crc.amount() {
                        return Err(DecodeError("fails its checksum"));
                    }
                    self.pos += 8;
                    self.members += 1;
                    // Another member may follow (gzip allows several).
                    self.inflate.reset(false);
                    self.crc.reset();
                    self.stage = Stage::Header;
                }
                Stage::Done => {
                    return if available.is_empty() { Ok(None) } else { Err(DecodeError("has data after its end")) };
                }
            }
        }
    }
}

/// The length of the gzip member header `bytes` starts with: `Ok(None)` while incomplete.
fn gzip_header_len(bytes: &[u8]) -> Result<Option<usize>, ()> {
    const MAGIC: [u8; 3] = [0x1f, 0x8b, 8];
    if bytes.iter().zip(MAGIC).any(|(b, m)| *b != m) {
        return Err(());
    }
    let Some(&flags) = bytes.get(3) else { return Ok(None) };
    if flags & 0xe0 != 0 {
        return Err(());
    }
    let mut at = 10;
    if flags & 0x04 != 0 {
        // FEXTRA: a 2-byte length and that many bytes.
        let Some(len) = bytes.get(at..at + 2) else { return Ok(None) };
        at += 2 + usize::from(u16::from_le_bytes([len[0], len[1]]));
    }
    for flag in [0x08, 0x10] {
        // FNAME, FCOMMENT: zero-terminated.
        if flags & flag != 0 {
            let Some(rest) = bytes.get(at..) else { return Ok(None) };
            let Some(zero) = memchr::memchr(0, rest) else { return Ok(None) };
            at += zero + 1;
        }
    }
    if flags & 0x02 != 0 {
        at += 2; // FHCRC
    }
    Ok((bytes.len() >= at).then_some(at))
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
    /// The rate-limit subjects whose `tpm` counts this call's tokens (`None`: none has one).
    pub(crate) tokens: Option<TokenTally>,
    /// What the access line says of the call besides the above.
    pub(crate) facts: CallFacts,
    /// Time the call spent on the upstream so far (earlier attempts' included): waiting
    /// for answers, relaying the answer's body.
    pub(crate) upstream_time: Duration,
    /// Since when the call is on the upstream, while it is.
    pub(crate) upstream_since: Option<Instant>,
    /// Where the call is counted.
    pub(crate) metrics: Arc<Metrics>,
}

/// Where a completed call's tokens are counted for `tpm` limits.
pub(crate) struct TokenTally {
    pub(crate) limiter: Arc<crate::limits::Limiter>,
    pub(crate) keys: Vec<crate::limits::LimitKey>,
}

impl Meter {
    /// This attempt was answered with a status that moved the call to another credential
    /// (failover): its completion records the status, and no metering — the call is billed
    /// once, on the attempt that answered the client. The call's end is said by a later
    /// attempt (or the refusal that ends it), which is handed the time this attempt
    /// waited for the upstream, returned.
    pub(crate) fn superseded(self) -> Duration {
        let upstream = self.upstream_time();
        let completion = CallCompletion {
            call_id: self.call_id,
            org_id: self.org_id,
            credential_id: self.credential_id,
            at: Timestamp::now(),
            upstream_status: (self.upstream_status != 0).then_some(self.upstream_status),
            latency_us: i64::try_from(self.started.elapsed().as_micros()).unwrap_or(i64::MAX),
            input_tokens: None,
            output_tokens: None,
            status: "failed_over".to_owned(),
            metering: None,
        };
        self.audit.complete(completion);
        upstream
    }

    /// The call goes to the upstream (`true`: waits for its answer, relays its body) or is
    /// back (`false`).
    pub(crate) fn on_upstream(&mut self, on: bool) {
        self.upstream_time = self.upstream_time();
        self.upstream_since = on.then(Instant::now);
    }

    /// Time the call spent on the upstream until now.
    fn upstream_time(&self) -> Duration {
        self.upstream_time + self.upstream_since.map_or(Duration::ZERO, |since| since.elapsed())
    }

    /// The call ended with `status` (`completed`, `upstream_error`, `client_cancelled`,
    /// or the code of the refusal that ended it): its completion is recorded, and its end
    /// said.
    pub(crate) fn record(self, status: &'static str, tap: Option<UsageTap>) {
        let usage = tap.map(UsageTap::finish).unwrap_or_default();
        let total = self.started.elapsed();
        let upstream = self.upstream_time();
        let completion = CallCompletion {
            call_id: self.call_id,
            org_id: self.org_id,
            credential_id: self.credential_id,
            at: Timestamp::now(),
            upstream_status: Some(self.upstream_status),
            latency_us: i64::try_from(total.as_micros()).unwrap_or(i64::MAX),
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            status: status.to_owned(),
            metering: Some(self.metering),
        };
        if let Some(tally) = &self.tokens {
            let tokens = completion.input_tokens.unwrap_or(0).saturating_add(completion.output_tokens.unwrap_or(0));
            tally.limiter.add_tokens(&tally.keys, tokens);
        }
        self.book.completed(&completion);
        let ending = Ending {
            outcome: crate::access::outcome_of(status),
            code: status,
            upstream_status: (self.upstream_status != 0).then_some(self.upstream_status),
            input_tokens: completion.input_tokens,
            output_tokens: completion.output_tokens,
            total,
            upstream,
        };
        let family = completion.metering.as_ref().and_then(|m| m.model_family.as_deref());
        crate::access::call_ended(&self.metrics, &completion.call_id, &self.facts, family, &ending);
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

    /// One with nothing to record (what is left behind when its meter was handed over).
    pub(crate) fn empty() -> Self {
        Self(None)
    }

    /// The call goes to the upstream, or is back (see [`Meter::on_upstream`]).
    pub(crate) fn on_upstream(&mut self, on: bool) {
        if let Some(meter) = self.0.as_mut() {
            meter.on_upstream(on);
        }
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

/// The response body: the upstream's, decoded, redacted and metered.
pub(crate) struct MeteredBody {
    inner: Incoming,
    /// Decodes a compressed body before anything else sees it.
    decoder: Option<Inflater>,
    tap: Option<UsageTap>,
    redactor: Redactor,
    meter: Option<Meter>,
    /// The upstream's body has been read to its end.
    input_done: bool,
    /// Everything has been sent but, perhaps, the trailers.
    ended: bool,
    /// The upstream's trailers (masked), sent last.
    trailers: Option<HeaderMap>,
    /// The error that cuts the body, returned on the poll after the one that found it.
    failed: Option<BoxError>,
    /// Counted in `byok_open_streams` while the body lives.
    _open: Option<OpenStream>,
}

impl MeteredBody {
    pub(crate) fn new(
        inner: Incoming,
        coding: Coding,
        tap: UsageTap,
        redactor: Redactor,
        mut meter: Option<Meter>,
    ) -> Self {
        let open = meter.as_mut().map(|meter| {
            // Relaying the body is the upstream's time (it sends as it generates).
            meter.on_upstream(true);
            meter.metrics.stream_opened()
        });
        Self {
            _open: open,
            inner,
            decoder: Inflater::new(coding),
            tap: Some(tap),
            redactor,
            meter,
            input_done: false,
            ended: false,
            trailers: None,
            failed: None,
        }
    }

    fn finish(&mut self, status: &'static str) {
        if let Some(meter) = self.meter.take() {
            meter.record(status, self.tap.take());
        }
    }

    /// Plain body bytes on their way out: usage is read, the key masked.
    fn pass(&mut self, plain: Bytes) -> Bytes {
        if let Some(tap) = self.tap.as_mut() {
            tap.feed(&plain);
        }
        self.redactor.push(plain)
    }

    /// The body ended well: the completion is recorded; what the redactor held goes out.
    fn end(&mut self) -> Bytes {
        self.ended = true;
        self.finish("completed");
        self.redactor.finish()
    }

    /// The upstream's body broke: the client's is cut (no clean end, no held bytes, no
    /// trailers) and the completion records an upstream error. The error is returned on
    /// the next poll: the connection drops what it has not flushed when a body fails, so it
    /// gets a chance to send what came before the break.
    fn fail(&mut self, err: BoxError, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.ended = true;
        self.trailers = None;
        self.finish("upstream_error");
        self.failed = Some(err);
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn last_frames(&mut self, tail: Bytes) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if tail.is_empty() {
            Poll::Ready(self.trailers.take().map(|trailers| Ok(Frame::trailers(trailers))))
        } else {
            Poll::Ready(Some(Ok(Frame::data(tail))))
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Body for MeteredBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Some(err) = this.failed.take() {
            return Poll::Ready(Some(Err(err)));
        }
        loop {
            if this.ended {
                return Poll::Ready(this.trailers.take().map(|trailers| Ok(Frame::trailers(trailers))));
            }
            // A compressed body: hand out what is decoded before reading more.
            if let Some(decoder) = this.decoder.as_mut() {
                match decoder.next(this.input_done) {
                    Err(err) => return this.fail(Box::new(err), cx),
                    Ok(Some(plain)) => {
                        let out = this.pass(plain);
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                        continue;
                    }
                    Ok(None) => {}
                }
            }
            if this.input_done {
                let tail = this.end();
                return this.last_frames(tail);
            }
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        this.input_done = this.inner.is_end_stream();
                        if let Some(decoder) = this.decoder.as_mut() {
                            decoder.push(&data);
                            continue;
                        }
                        let mut out = this.pass(data);
                        if this.input_done {
                            // The server may stop polling once a Content-Length is met:
                            // finish with the last frame rather than on a later poll.
                            let tail = this.end();
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
                    Err(frame) => {
                        // Trailers end the body; they are headers, masked like the head's.
                        if let Ok(mut trailers) = frame.into_trailers() {
                            this.redactor.headers(&mut trailers);
                            this.trailers = Some(trailers);
                        }
                        this.input_done = true;
                    }
                },
                Some(Err(err)) => return this.fail(Box::new(err), cx),
                None => this.input_done = true,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.trailers.is_none() && self.failed.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        if self.decoder.is_some() {
            // Decoded, the length is anyone's guess.
            SizeHint::default()
        } else {
            // Masking keeps lengths.
            self.inner.size_hint()
        }
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
    use axum::http::HeaderValue;
    use memchr::memmem;

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

#[cfg(test)]
mod decoding {
    use std::io::Write as _;

    use super::*;

    fn encode(coding: &str, data: &[u8]) -> Vec<u8> {
        let level = flate2::Compression::default();
        match coding {
            "gzip" => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), level);
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            "zlib" => {
                let mut e = flate2::write::ZlibEncoder::new(Vec::new(), level);
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            _ => {
                let mut e = flate2::write::DeflateEncoder::new(Vec::new(), level);
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
        }
    }

    fn coding_of(name: &str) -> Coding {
        if name == "gzip" {
            Coding::Gzip
        } else {
            Coding::Deflate
        }
    }

    /// Decodes `encoded` fed in pieces of `size`, checking every output piece is bounded.
    fn decode(coding: Coding, encoded: &[u8], size: usize) -> Result<Vec<u8>, DecodeError> {
        let mut inflater = Inflater::new(coding).unwrap();
        let mut out = Vec::new();
        let mut pieces = encoded.chunks(size.max(1)).peekable();
        loop {
            let end = pieces.peek().is_none();
            while let Some(piece) = inflater.next(end)? {
                assert!(piece.len() <= DECODED_CHUNK);
                out.extend_from_slice(&piece);
            }
            match pieces.next() {
                Some(piece) => inflater.push(piece),
                None => return Ok(out),
            }
        }
    }

    fn sample() -> Vec<u8> {
        let mut data = Vec::new();
        for i in 0..400 {
            data.extend_from_slice(format!("data: {{\"n\":{i},\"text\":\"some words and more\"}}\n\n").as_bytes());
        }
        data
    }

    #[test]
    fn decodes_gzip_zlib_and_raw_deflate_in_any_pieces() {
        let data = sample();
        for name in ["gzip", "zlib", "raw"] {
            let encoded = encode(name, &data);
            for size in [1, 2, 3, 7, 10, 11, 64, 1000, encoded.len()] {
                assert_eq!(decode(coding_of(name), &encoded, size).unwrap(), data, "{name} in pieces of {size}");
            }
        }
    }

    #[test]
    fn several_gzip_members_and_optional_header_fields() {
        let mut two = encode("gzip", b"first member, ");
        two.extend_from_slice(&encode("gzip", b"second member"));
        assert_eq!(decode(Coding::Gzip, &two, 5).unwrap(), b"first member, second member");
        let mut builder = flate2::GzBuilder::new().filename("echo.json").comment("c").extra(vec![1, 2, 3]);
        builder = builder.mtime(1);
        let mut e = builder.write(Vec::new(), flate2::Compression::fast());
        e.write_all(b"with a header").unwrap();
        let named = e.finish().unwrap();
        for size in 1..=named.len() {
            assert_eq!(decode(Coding::Gzip, &named, size).unwrap(), b"with a header", "pieces of {size}");
        }
    }

    #[test]
    fn an_empty_body_is_empty() {
        assert_eq!(decode(Coding::Gzip, b"", 1).unwrap(), b"");
        assert_eq!(decode(Coding::Deflate, b"", 1).unwrap(), b"");
    }

    #[test]
    fn broken_streams_are_errors() {
        let data = sample();
        let gzip = encode("gzip", &data);
        let zlib = encode("zlib", &data);
        let mut bad_crc = gzip.clone();
        let at = bad_crc.len() - 6;
        bad_crc[at] ^= 1;
        let mut bad_adler = zlib.clone();
        let last = bad_adler.len() - 1;
        bad_adler[last] ^= 1;
        let mut garbage = gzip.clone();
        for byte in &mut garbage[40..] {
            *byte = !*byte;
        }
        let mut trailing = zlib.clone();
        trailing.extend_from_slice(b"junk");
        let cases: [(&str, Coding, &[u8]); 8] = [
            ("truncated gzip", Coding::Gzip, &gzip[..gzip.len() / 2]),
            ("gzip without its trailer", Coding::Gzip, &gzip[..gzip.len() - 3]),
            ("bad crc", Coding::Gzip, &bad_crc),
            ("corrupt gzip", Coding::Gzip, &garbage),
            ("not gzip", Coding::Gzip, b"{\"plain\":\"json\"}"),
            ("truncated zlib", Coding::Deflate, &zlib[..zlib.len() / 2]),
            ("bad adler", Coding::Deflate, &bad_adler),
            ("data after the end", Coding::Deflate, &trailing),
        ];
        for (what, coding, encoded) in cases {
            for size in [1, 13, encoded.len()] {
                assert!(decode(coding, encoded, size).is_err(), "{what} in pieces of {size}");
            }
        }
    }

    /// A bomb (a few KiB that inflate to 64 MiB) comes out in bounded pieces.
    #[test]
    fn a_compression_bomb_comes_out_in_bounded_pieces() {
        let zeros = vec![0_u8; 64 * 1024 * 1024];
        let bomb = encode("gzip", &zeros);
        assert!(bomb.len() < 100 * 1024);
        let mut inflater = Inflater::new(Coding::Gzip).unwrap();
        inflater.push(&bomb);
        let (mut total, mut pieces) = (0, 0);
        while let Some(piece) = inflater.next(true).unwrap() {
            assert!(piece.len() <= DECODED_CHUNK);
            total += piece.len();
            pieces += 1;
        }
        assert_eq!(total, zeros.len());
        assert!(pieces >= zeros.len() / DECODED_CHUNK);
    }

    #[test]
    fn codings_from_the_head() {
        let head = |values: &[&str]| {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append(CONTENT_ENCODING, axum::http::HeaderValue::from_str(value).unwrap());
            }
            headers.insert(CONTENT_LENGTH, axum::http::HeaderValue::from_static("10"));
            headers
        };
        for (values, expected) in [
            (&[][..], Some(Coding::Identity)),
            (&["identity"][..], Some(Coding::Identity)),
            (&["gzip"][..], Some(Coding::Gzip)),
            (&["X-GZIP"][..], Some(Coding::Gzip)),
            (&["identity, deflate"][..], Some(Coding::Deflate)),
            (&["br"][..], None),
            (&["zstd"][..], None),
            (&["gzip", "gzip"][..], None),
            (&["gzip, br"][..], None),
            (&["gzip;q=1"][..], None),
        ] {
            let mut headers = head(values);
            let got = take_coding(&mut headers, true);
            match expected {
                None => {
                    let refusal = got.err().unwrap();
                    assert_eq!(refusal.code, Code::UpstreamUnreachable, "{values:?}");
                }
                Some(coding) => {
                    assert_eq!(got.ok(), Some(coding), "{values:?}");
                    let decoded = coding != Coding::Identity;
                    assert_eq!(headers.contains_key(CONTENT_LENGTH), !decoded, "{values:?}");
                    assert_eq!(headers.contains_key(CONTENT_ENCODING), !decoded && !values.is_empty(), "{values:?}");
                }
            }
        }
        // A body-less answer keeps its headers and is not refused.
        let mut headers = head(&["br"]);
        assert_eq!(take_coding(&mut headers, false).ok(), Some(Coding::Identity));
        assert!(headers.contains_key(CONTENT_ENCODING));
    }
}
