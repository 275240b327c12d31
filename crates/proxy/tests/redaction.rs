//! An upstream that echoes the key, in any form and any place, never gets it to the client.
//!
//! The mock provider echoes the key it was sent in every form (raw, upper-case, JSON-escaped
//! with forms mixed, percent-encoded, base64 — plain, URL-safe, of `user:KEY`, of
//! `Bearer KEY` —, hex in both cases), in every place (body, a header's value, a header's
//! name), as a JSON body and as an SSE stream written in pieces of many sizes, plain and
//! compressed; a raw-socket upstream puts it in the reason phrase and in a trailer. The
//! client side is a raw socket too, so the check sees exactly the bytes byok sent: the
//! status line, every header name and value, and the body — and it looks for the key by
//! decoding every form back, independently of the redactor's own matching.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::Read as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use byok_domain::{CallCompletion, ProviderId, ScopeInput};
use byok_mock_provider::{BodyCoding, Echo, EchoPlace, KeyForm, MockConfig, ScriptedResponse};
use byok_proxy::UpstreamBase;
use byok_store::testing::TestStore;
use support::{openai_chat, Env};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---------------------------------------------------------------------------------------
// The client: a raw HTTP/1.1 exchange, parsed by hand.

/// What the client received, byte for byte.
struct Received {
    status_line: Vec<u8>,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// The body with the transfer coding removed (content coding left as sent).
    body: Vec<u8>,
    /// Trailers of a chunked body.
    trailers: Vec<(Vec<u8>, Vec<u8>)>,
    /// Whether the body ended properly (the last chunk, or exactly `Content-Length`).
    complete: bool,
}

impl Received {
    fn status(&self) -> u16 {
        let line = String::from_utf8_lossy(&self.status_line).into_owned();
        line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_fields(block: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    block
        .split(|b| *b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .filter(|line| !line.is_empty())
        .filter_map(|line| {
            let colon = line.iter().position(|b| *b == b':')?;
            Some((line[..colon].to_vec(), line[colon + 1..].trim_ascii().to_vec()))
        })
        .collect()
}

fn parse_response(raw: &[u8]) -> Received {
    let head_end =
        find(raw, b"\r\n\r\n").unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(raw)));
    let head = &raw[..head_end];
    let rest = &raw[head_end + 4..];
    let line_end = find(head, b"\r\n").unwrap_or(head.len());
    let status_line = head[..line_end].to_vec();
    let headers = parse_fields(&head[line_end..]);
    let mut received = Received { status_line, headers, body: Vec::new(), trailers: Vec::new(), complete: false };
    let chunked = received.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    if chunked {
        let mut at = 0;
        while let Some(size_end) = find(&rest[at..], b"\r\n") {
            let size_text = String::from_utf8_lossy(&rest[at..at + size_end]).into_owned();
            let Ok(size) = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16) else { break };
            at += size_end + 2;
            if size == 0 {
                let trailer_end = find(&rest[at..], b"\r\n\r\n").map(|e| at + e);
                match trailer_end {
                    Some(end) => {
                        received.trailers = parse_fields(&rest[at..end]);
                        received.complete = true;
                    }
                    None if rest[at..].starts_with(b"\r\n") => received.complete = true,
                    None => {}
                }
                break;
            }
            if rest.len() < at + size + 2 {
                received.body.extend_from_slice(&rest[at..rest.len().min(at + size)]);
                break;
            }
            received.body.extend_from_slice(&rest[at..at + size]);
            at += size + 2;
        }
    } else if let Some(length) = received.header("content-length") {
        let length: usize = length.parse().unwrap();
        assert_eq!(rest.len(), length, "Content-Length must be exactly the body's length");
        received.body = rest.to_vec();
        received.complete = true;
    } else {
        received.body = rest.to_vec();
        received.complete = true;
    }
    received
}

/// POST an OpenAI chat call through the sidecar on a raw socket and read the whole answer.
async fn call(env: &Env, token: &str, stream: bool, extra: &[(&str, &str)]) -> Received {
    let addr = env.proxy.trim_start_matches("http://");
    let body = openai_chat("gpt-4o", stream).to_string();
    let mut request = format!(
        "POST /openai/v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (name, value) in extra {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(&body);
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut raw)).await;
    parse_response(&raw)
}

// ---------------------------------------------------------------------------------------
// The checker: every form of the key, found by decoding what was received.

fn json_unescape(input: &[u8]) -> Vec<u8> {
    let hex4 = |s: &[u8]| -> Option<u32> {
        let text = std::str::from_utf8(s.get(..4)?).ok()?;
        u32::from_str_radix(text, 16).ok()
    };
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'\\' && i + 1 < input.len() {
            let escaped = input[i + 1];
            if escaped == b'u' {
                if let Some(unit) = hex4(&input[i + 2..]) {
                    let mut consumed = 6;
                    let mut code = unit;
                    if (0xd800..0xdc00).contains(&unit)
                        && input.get(i + 6) == Some(&b'\\')
                        && input.get(i + 7) == Some(&b'u')
                    {
                        if let Some(low) = hex4(&input[i + 8..]).filter(|l| (0xdc00..0xe000).contains(l)) {
                            code = 0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00);
                            consumed = 12;
                        }
                    }
                    if let Some(ch) = char::from_u32(code) {
                        let mut buf = [0; 4];
                        out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                        i += consumed;
                        continue;
                    }
                }
            } else if let Some(plain) = match escaped {
                b'/' => Some(b'/'),
                b'\\' => Some(b'\\'),
                b'"' => Some(b'"'),
                b'n' => Some(b'\n'),
                b't' => Some(b'\t'),
                b'r' => Some(b'\r'),
                _ => None,
            } {
                out.push(plain);
                i += 2;
                continue;
            }
        }
        out.push(input[i]);
        i += 1;
    }
    out
}

fn percent_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' && i + 2 < input.len() + 1 {
            if let Some(byte) = input
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(input[i]);
        i += 1;
    }
    out
}

fn runs(input: &[u8], member: impl Fn(u8) -> bool) -> Vec<&[u8]> {
    input.split(|b| !member(*b)).filter(|run| !run.is_empty()).collect()
}

/// Base64 (either alphabet) decoded leniently from `text`, which starts on a group boundary.
fn base64_lenient(text: &[u8]) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' | b'-' => Some(62),
        b'/' | b'_' => Some(63),
        _ => None,
    };
    let (mut acc, mut bits, mut out) = (0_u32, 0, Vec::new());
    for &c in text {
        let Some(v) = value(c) else { continue };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xff) as u8);
        }
    }
    out
}

fn hex_decode(text: &[u8]) -> Vec<u8> {
    text.chunks_exact(2)
        .filter_map(|pair| std::str::from_utf8(pair).ok().and_then(|p| u8::from_str_radix(p, 16).ok()))
        .collect()
}

fn contains_ci(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
}

/// Which form of `key` `text` holds, if any.
fn leaked_form(key: &str, text: &[u8]) -> Option<&'static str> {
    let key = key.as_bytes();
    let views = [
        ("as sent", text.to_vec()),
        ("JSON-unescaped", json_unescape(text)),
        ("percent-decoded", percent_decode(text)),
        ("JSON-unescaped, percent-decoded", percent_decode(&json_unescape(text))),
        ("percent-decoded, JSON-unescaped", json_unescape(&percent_decode(text))),
    ];
    for (view, bytes) in &views {
        if contains_ci(bytes, key) {
            return Some(view);
        }
        let base64_char = |b: u8| b.is_ascii_alphanumeric() || b"+/-_".contains(&b);
        for run in runs(bytes, base64_char) {
            for offset in 0..4.min(run.len()) {
                if contains_ci(&base64_lenient(&run[offset..]), key) {
                    return Some("base64");
                }
            }
        }
        for run in runs(bytes, |b| b.is_ascii_hexdigit()) {
            for offset in 0..2.min(run.len()) {
                if contains_ci(&hex_decode(&run[offset..]), key) {
                    return Some("hex");
                }
            }
        }
    }
    None
}

/// Fails if any form of `key` is anywhere in what the client received.
fn assert_no_key(key: &str, received: &Received, what: &str) {
    if let Err(leak) = find_key(key, received, what) {
        panic!("{leak}");
    }
}

/// Where any form of `key` is in what the client received.
fn find_key(key: &str, received: &Received, what: &str) -> Result<(), String> {
    let mut places: Vec<(String, Vec<u8>)> = vec![("status line".into(), received.status_line.clone())];
    for (name, value) in received.headers.iter().chain(&received.trailers) {
        places.push((format!("header name {:?}", String::from_utf8_lossy(name)), name.clone()));
        places.push((format!("header {:?}", String::from_utf8_lossy(name)), value.clone()));
    }
    places.push(("body".into(), received.body.clone()));
    // A body the client would decompress is checked decompressed too.
    match received.header("content-encoding").map(|v| v.to_ascii_lowercase()) {
        Some(coding) if coding.contains("gzip") => {
            let mut plain = Vec::new();
            let _ = flate2::read::MultiGzDecoder::new(&received.body[..]).read_to_end(&mut plain);
            places.push(("gzip-decoded body".into(), plain));
        }
        Some(coding) if coding.contains("deflate") => {
            let mut plain = Vec::new();
            if flate2::read::ZlibDecoder::new(&received.body[..]).read_to_end(&mut plain).is_err() {
                plain.clear();
                let _ = flate2::read::DeflateDecoder::new(&received.body[..]).read_to_end(&mut plain);
            }
            places.push(("deflate-decoded body".into(), plain));
        }
        _ => {}
    }
    for (place, bytes) in places {
        if let Some(form) = leaked_form(key, &bytes) {
            return Err(format!(
                "{what}: the key leaked ({form}) in the {place}: {:?}",
                String::from_utf8_lossy(&bytes)
            ));
        }
    }
    Ok(())
}

#[test]
fn the_checker_finds_every_form() {
    let key = "sk-canary-openai-01jabcdefghjkmnpqrstvwxyz0";
    for form in KeyForm::ALL {
        let text = format!("message: \"{}\".", form.render(key));
        assert!(leaked_form(key, text.as_bytes()).is_some(), "{form:?}: {text}");
    }
    let masked = format!("message: \"{}\".", "*".repeat(key.len()));
    assert!(leaked_form(key, masked.as_bytes()).is_none());
}

// ---------------------------------------------------------------------------------------
// The environment.

async fn env() -> (Env, String, String) {
    let env = Env::start(TestStore::sqlite().await.unwrap()).await;
    env.credential("main", ProviderId::Openai, ScopeInput::default()).await;
    let token = env.token(&[]).await;
    let key = env.keys.openai.clone();
    (env, token, key)
}

async fn completion(env: &Env, call_id: &str) -> CallCompletion {
    for _ in 0..500 {
        if let Some(done) = env.t.store().list_completions(call_id).await.unwrap().pop() {
            return done;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no completion recorded for {call_id}");
}

/// The forms that are valid header-name characters (the others cannot be sent in a name).
fn fits_a_header_name(form: KeyForm) -> bool {
    matches!(
        form,
        KeyForm::Raw | KeyForm::Upper | KeyForm::PercentEncoded | KeyForm::Base64Url | KeyForm::Hex | KeyForm::HexUpper
    )
}

// ---------------------------------------------------------------------------------------
// The tests.

/// What an echo of the key must look like once through byok: no form of the key anywhere,
/// the rest intact, the key masked where it was.
fn check_echo(key: &str, received: &Received, echo: &Echo, what: &str) -> Result<(), String> {
    let fail = |message: &str| Err(format!("{what}: {message}"));
    if received.status() != 200 || !received.complete {
        return fail(&format!("status {} complete {}", received.status(), received.complete));
    }
    find_key(key, received, what)?;
    let text = received.text();
    if !text.contains("Incorrect API key provided: ") || !text.contains(". Check it.") {
        return fail(&format!("the text around the key is intact: {text}"));
    }
    if echo.stream && !text.ends_with("data: [DONE]\n\n") {
        return fail(&format!("the stream is whole: {text}"));
    }
    match echo.place {
        // Base64 of `user:KEY` keeps the characters of `user:`.
        EchoPlace::Body if !text.contains("*****") => fail(&format!("masked in place: {text}")),
        EchoPlace::HeaderValue
            if !received.header("x-mock-echo").is_some_and(|v| v.starts_with("key=") && v.contains("*****")) =>
        {
            fail(&format!("masked in the header: {:?}", received.header("x-mock-echo")))
        }
        EchoPlace::HeaderName if !received.headers.iter().any(|(name, _)| name.starts_with(b"x-mock-echo-*****")) => {
            fail("the header is renamed with the mask")
        }
        _ => Ok(()),
    }
}

/// Every form, in the body, a header value and a header name; a JSON answer (whose
/// `Content-Length` stays true) and an SSE stream written in pieces of many sizes.
#[tokio::test]
async fn every_form_in_every_place_is_masked() {
    let (env, token, key) = env().await;
    let mut failures = Vec::new();
    for form in KeyForm::ALL {
        for place in [EchoPlace::Body, EchoPlace::HeaderValue, EchoPlace::HeaderName] {
            if place == EchoPlace::HeaderName && !fits_a_header_name(form) {
                continue;
            }
            let mut shapes = vec![(Echo::new(form, place), "JSON".to_owned())];
            shapes.push((Echo::new(form, place).streamed(), "SSE by event".to_owned()));
            if place == EchoPlace::Body {
                for size in [1, 2, 3, 5, 8, 13, 64] {
                    shapes.push((
                        Echo::new(form, place).streamed().in_chunks(size),
                        format!("SSE in {size}-byte pieces"),
                    ));
                }
                shapes.push((Echo::new(form, place).in_chunks(7), "JSON in 7-byte pieces".to_owned()));
            }
            for (echo, shape) in shapes {
                let what = format!("{form:?} in the {place:?}, {shape}");
                env.mock.set_next_response(ScriptedResponse::echo_key_as(echo.clone()));
                let received = call(&env, &token, echo.stream, &[]).await;
                // Every failure is listed, not only the first.
                if let Err(failure) = check_echo(&key, &received, &echo, &what) {
                    failures.push(failure);
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
    env.stop().await;
}

/// An upstream that compresses although byok asked for `identity`: the answer is decoded,
/// masked and sent plain (chunked: its length changed), and usage is read from it.
#[tokio::test]
async fn compressed_answers_are_decoded_then_masked() {
    let (env, token, key) = env().await;
    let mut n = 0;
    for coding in [BodyCoding::Gzip, BodyCoding::Deflate, BodyCoding::RawDeflate] {
        for form in KeyForm::ALL {
            let mut shapes = vec![(Echo::new(form, EchoPlace::Body), "JSON".to_owned())];
            for size in [1, 3, 32, 4096] {
                shapes.push((
                    Echo::new(form, EchoPlace::Body).streamed().in_chunks(size),
                    format!("SSE in {size}-byte pieces"),
                ));
            }
            for (echo, shape) in shapes {
                n += 1;
                let what = format!("{coding:?}, {form:?}, {shape}");
                let call_id = format!("call-compressed-{n}");
                env.mock.set_next_response(ScriptedResponse::echo_key_as(echo.clone().with_coding(coding.clone())));
                let received = call(&env, &token, echo.stream, &[("x-byok-call-id", &call_id)]).await;
                assert_eq!(received.status(), 200, "{what}");
                assert!(received.complete, "{what}");
                assert_eq!(received.header("content-encoding"), None, "{what}: sent decoded");
                assert_eq!(
                    received.header("content-length"),
                    None,
                    "{what}: the encoded length is not the decoded one"
                );
                assert_no_key(&key, &received, &what);
                let text = received.text();
                assert!(text.contains("Incorrect API key provided: ") && text.contains("*****"), "{what}: {text}");
                assert!(text.contains(". Check it."), "{what}: {text}");
                let done = completion(&env, &call_id).await;
                assert_eq!(done.status, "completed", "{what}");
                assert_eq!(
                    (done.input_tokens, done.output_tokens),
                    (Some(3), Some(4)),
                    "{what}: usage read from the decoded body"
                );
            }
        }
    }
    env.stop().await;
}

/// An encoding byok cannot decode is refused before anything reaches the client: 502
/// `upstream_unreachable`, none of the upstream's body.
#[tokio::test]
async fn undecodable_encodings_are_refused_with_502() {
    let (env, token, key) = env().await;
    for (n, coding) in
        ["br", "zstd", "compress", "x-something", "gzip, br", "gzip, gzip", "GZIP;q=1"].into_iter().enumerate()
    {
        for stream in [false, true] {
            let call_id = format!("call-undecodable-{n}-{stream}");
            let mut echo =
                Echo::new(KeyForm::Raw, EchoPlace::Body).with_coding(BodyCoding::Declared(coding.to_owned()));
            if stream {
                echo = echo.streamed();
            }
            env.mock.set_next_response(ScriptedResponse::echo_key_as(echo));
            let received = call(&env, &token, stream, &[("x-byok-call-id", &call_id)]).await;
            let what = format!("Content-Encoding {coding}, stream {stream}");
            assert_eq!(received.status(), 502, "{what}");
            let text = received.text();
            assert!(text.contains("upstream_unreachable"), "{what}: {text}");
            assert!(
                !text.contains("Incorrect API key") && !text.contains("chatcmpl-echo"),
                "{what}: no upstream byte: {text}"
            );
            assert!(!text.contains(coding), "{what}: the upstream's header value is not quoted");
            assert_eq!(received.header("content-encoding"), None, "{what}");
            assert_no_key(&key, &received, &what);
            let done = completion(&env, &call_id).await;
            assert_eq!(done.status, "upstream_unreachable", "{what}");
            assert_eq!(done.upstream_status, Some(200), "{what}");
        }
    }
    env.stop().await;
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// A compressed stream that breaks half-way (corrupt, or cut short) is cut for the client
/// too, and its completion records an upstream error; what came before the break arrives.
#[tokio::test]
async fn a_broken_compressed_stream_is_cut() {
    let (env, token, key) = env().await;
    let first = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"before the break\"}}]}\n\n".to_vec();
    let mut whole = first.clone();
    // Text that compresses as little as model output does, so that the first half of the
    // compressed stream holds the first event whole.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for _ in 0..300 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        whole.extend_from_slice(
            format!("data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{state:016x}\"}}}}]}}\n\n")
                .as_bytes(),
        );
    }
    let compressed = gzip(&whole);
    let half = compressed.len() / 2;
    let mut corrupt = compressed[half..].to_vec();
    for byte in corrupt.iter_mut() {
        *byte ^= 0x5a;
    }
    let cases: [(&str, Vec<Vec<u8>>); 3] = [
        ("corrupt half-way", vec![compressed[..half].to_vec(), corrupt]),
        ("cut short", vec![compressed[..half].to_vec()]),
        ("a bad checksum", {
            let mut bad = compressed.clone();
            let at = bad.len() - 8;
            bad[at] ^= 1;
            vec![bad[..half].to_vec(), bad[half..].to_vec()]
        }),
    ];
    for (n, (what, chunks)) in cases.into_iter().enumerate() {
        let call_id = format!("call-broken-{n}");
        env.mock.set_next_response(ScriptedResponse::RawChunks {
            status: 200,
            headers: vec![
                ("content-type".into(), "text/event-stream".into()),
                ("content-encoding".into(), "gzip".into()),
            ],
            chunks,
        });
        let received = call(&env, &token, true, &[("x-byok-call-id", &call_id)]).await;
        assert_eq!(received.status(), 200, "{what}: the head went out before the break");
        assert!(!received.complete, "{what}: the client sees a cut stream, not a clean end");
        let text = received.text();
        assert!(
            text.starts_with(&String::from_utf8_lossy(&first).into_owned()),
            "{what}: {} bytes: {:?}",
            text.len(),
            &text[..text.len().min(300)]
        );
        assert_no_key(&key, &received, what);
        let done = completion(&env, &call_id).await;
        assert_eq!(done.status, "upstream_error", "{what}");
    }
    env.stop().await;
}

/// A raw-socket upstream: answers every request with `answer(presented key)`.
async fn raw_upstream(answer: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            let answer = Arc::clone(&answer);
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0_u8; 4096];
                let head_end = loop {
                    let Ok(n) = socket.read(&mut buf).await else { return };
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                    if let Some(end) = find(&request, b"\r\n\r\n") {
                        break end;
                    }
                };
                let fields = parse_fields(&request[..head_end]);
                let field = |name: &str| {
                    fields
                        .iter()
                        .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
                        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                };
                let length: usize = field("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
                while request.len() < head_end + 4 + length {
                    let Ok(n) = socket.read(&mut buf).await else { return };
                    if n == 0 {
                        break;
                    }
                    request.extend_from_slice(&buf[..n]);
                }
                let key = field("authorization")
                    .and_then(|v| v.strip_prefix("Bearer ").map(str::to_owned))
                    .unwrap_or_default();
                let _ = socket.write_all(&answer(&key)).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    format!("http://{addr}")
}

async fn env_with_upstream(upstream: &str) -> (Env, String, String) {
    let base = UpstreamBase::parse(upstream).unwrap();
    let env = Env::start_with(TestStore::sqlite().await.unwrap(), MockConfig::default(), |config| {
        config.upstreams.insert(ProviderId::Openai, base);
    })
    .await;
    env.credential("main", ProviderId::Openai, ScopeInput::default()).await;
    let token = env.token(&[]).await;
    let key = env.keys.openai.clone();
    (env, token, key)
}

/// hyper keeps a non-canonical reason phrase and would write it back out: the client
/// always gets the canonical one, whatever form of the key the upstream's phrase held.
#[tokio::test]
async fn the_reason_phrase_is_never_forwarded() {
    let form = Arc::new(Mutex::new(KeyForm::Raw));
    let chosen = Arc::clone(&form);
    let upstream = raw_upstream(move |key| {
        let quoted = chosen.lock().unwrap().render(key);
        let body = "{\"error\":{\"message\":\"bad key\"}}";
        format!(
            "HTTP/1.1 400 Incorrect key {quoted}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    })
    .await;
    let (env, token, key) = env_with_upstream(&upstream).await;
    for each in KeyForm::ALL {
        *form.lock().unwrap() = each;
        let received = call(&env, &token, false, &[]).await;
        let what = format!("{each:?} in the reason phrase");
        // (Not a 401: that would make the key `failing` after the first form.)
        assert_eq!(received.status(), 400, "{what}");
        assert_eq!(received.status_line, b"HTTP/1.1 400 Bad Request", "{what}: the canonical phrase");
        assert_no_key(&key, &received, &what);
    }
    env.stop().await;
}

/// Trailers never carry the key to the client: the sidecar strips the upstream's `Trailer`
/// header (hop-by-hop), so hyper sends no trailer fields at all; should that change, the
/// stream phase masks trailer names and values like the head's.
#[tokio::test]
async fn trailers_never_carry_the_key() {
    let upstream = raw_upstream(|key| {
        let event = "data: {\"choices\":[]}\n\n";
        let hex: String = key.bytes().map(|b| format!("{b:02X}")).collect();
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\
             trailer: x-echo, x-hex, x-{key}\r\nconnection: close\r\n\r\n{:x}\r\n{event}\r\n0\r\n\
             x-echo: {key}\r\nx-hex: {hex}\r\nx-{key}: 1\r\n\r\n",
            event.len()
        )
        .into_bytes()
    })
    .await;
    let (env, token, key) = env_with_upstream(&upstream).await;
    let received = call(&env, &token, true, &[("te", "trailers")]).await;
    assert_eq!(received.status(), 200);
    assert!(received.complete);
    assert_eq!(received.text(), "data: {\"choices\":[]}\n\n");
    assert_no_key(&key, &received, "trailers");
    env.stop().await;
}
