//! [`crate::ScriptedResponse::EchoKeyAs`]: the presented key quoted back in some form, in
//! some place of the answer, as a JSON body or an SSE stream, optionally compressed — each
//! way an upstream has been seen (or could be expected) to leak a key past a proxy that
//! only masks the exact key bytes.

use axum::body::Bytes;
use axum::http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;

use crate::compress;
use crate::reply::{fixed_error_event, Reply, ReplyBody, EVENT_STREAM};

/// The form in which [`crate::ScriptedResponse::EchoKeyAs`] quotes the presented key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyForm {
    /// The key as presented.
    Raw,
    /// The key ASCII upper-cased.
    Upper,
    /// The key as a JSON encoder may write it inside a string, forms mixed within the one
    /// occurrence: of every four characters, the first and last as themselves, the second
    /// as `\u00xx` (lower-case hex), the third as `\u00XX` (upper-case hex); `/` always as
    /// `\/`. The text is inserted into the JSON body as it is (it is already escaped).
    JsonEscaped,
    /// The key percent-encoded, some characters only: of every three, the first as `%xx`,
    /// the second as itself, the third as `%XX`.
    PercentEncoded,
    /// Standard base64 of the key, padded.
    Base64,
    /// URL-safe base64 of the key, unpadded.
    Base64Url,
    /// Standard base64 of `user:KEY` (HTTP Basic credentials): the key starts at byte 5,
    /// two bytes into a base64 group.
    Base64Basic,
    /// Standard base64 of `Bearer KEY`: the key starts at byte 7, one byte into a group.
    Base64Bearer,
    /// Lower-case hex of the key.
    Hex,
    /// Upper-case hex of the key.
    HexUpper,
}

impl KeyForm {
    /// Every form.
    pub const ALL: [KeyForm; 10] = [
        KeyForm::Raw,
        KeyForm::Upper,
        KeyForm::JsonEscaped,
        KeyForm::PercentEncoded,
        KeyForm::Base64,
        KeyForm::Base64Url,
        KeyForm::Base64Basic,
        KeyForm::Base64Bearer,
        KeyForm::Hex,
        KeyForm::HexUpper,
    ];

    /// `key` in this form.
    pub fn render(self, key: &str) -> String {
        match self {
            KeyForm::Raw => key.to_owned(),
            KeyForm::Upper => key.to_ascii_uppercase(),
            KeyForm::JsonEscaped => json_escaped_mixed(key),
            KeyForm::PercentEncoded => percent_mixed(key),
            KeyForm::Base64 => STANDARD.encode(key),
            KeyForm::Base64Url => URL_SAFE_NO_PAD.encode(key),
            KeyForm::Base64Basic => STANDARD.encode(format!("user:{key}")),
            KeyForm::Base64Bearer => STANDARD.encode(format!("Bearer {key}")),
            KeyForm::Hex => key.bytes().map(|b| format!("{b:02x}")).collect(),
            KeyForm::HexUpper => key.bytes().map(|b| format!("{b:02X}")).collect(),
        }
    }

    /// Whether the form is already JSON string content (inserted as it is) rather than text
    /// to be escaped.
    fn is_json_text(self) -> bool {
        self == KeyForm::JsonEscaped
    }
}

fn json_escaped_mixed(key: &str) -> String {
    let mut out = String::new();
    for (index, ch) in key.chars().enumerate() {
        match ch {
            '/' => out.push_str("\\/"),
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ch if (ch as u32) < 0x20 || !ch.is_ascii() || index % 4 == 1 || index % 4 == 2 => {
                let mut units = [0_u16; 2];
                for unit in ch.encode_utf16(&mut units) {
                    if index % 4 == 2 {
                        out.push_str(&format!("\\u{unit:04X}"));
                    } else {
                        out.push_str(&format!("\\u{unit:04x}"));
                    }
                }
            }
            ch => out.push(ch),
        }
    }
    out
}

fn percent_mixed(key: &str) -> String {
    let mut out = String::new();
    for (index, byte) in key.bytes().enumerate() {
        match index % 3 {
            0 => out.push_str(&format!("%{byte:02x}")),
            2 => out.push_str(&format!("%{byte:02X}")),
            _ if byte.is_ascii_graphic() && byte != b'%' => out.push(char::from(byte)),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// Where the key is quoted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EchoPlace {
    /// In the body: the error message of a JSON body, or the content of an SSE event.
    Body,
    /// In the value of the response header `x-mock-echo`.
    HeaderValue,
    /// In the name of a response header, `x-mock-echo-FORM: 1`. Only forms that are valid
    /// header-name characters can be sent (raw, upper-case — names are lower-cased on the
    /// wire —, hex, URL-safe base64, percent-encoded); for others no such header is sent.
    HeaderName,
}

/// How the body is encoded on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BodyCoding {
    /// `Content-Encoding: gzip`.
    Gzip,
    /// `Content-Encoding: deflate` (a zlib stream, as HTTP means it).
    Deflate,
    /// `Content-Encoding: deflate` sent as a raw DEFLATE stream without the zlib wrapper,
    /// as some servers do.
    RawDeflate,
    /// `Content-Encoding: NAME` declared, the body left as it is: for an encoding the
    /// client cannot decode (`br`, `zstd`, anything unknown).
    Declared(String),
}

/// What [`crate::ScriptedResponse::EchoKeyAs`] answers: built with [`Echo::new`] and the
/// `with_*` methods.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Echo {
    /// The form the key is quoted in.
    pub form: KeyForm,
    /// Where it is quoted.
    pub place: EchoPlace,
    /// An SSE stream (`text/event-stream`) instead of a JSON body.
    pub stream: bool,
    /// The body's content encoding, if any.
    pub coding: Option<BodyCoding>,
    /// Write the body (after compression) in pieces of this many bytes, each its own
    /// chunk; a streamed body is otherwise written one event at a time, a JSON one whole.
    pub chunk_size: Option<usize>,
    /// The status (200 unless set).
    pub status: u16,
}

impl Echo {
    /// A 200 JSON answer quoting the key in `form` at `place`.
    pub fn new(form: KeyForm, place: EchoPlace) -> Self {
        Self { form, place, stream: false, coding: None, chunk_size: None, status: 200 }
    }

    /// An SSE stream instead of a JSON body.
    pub fn streamed(mut self) -> Self {
        self.stream = true;
        self
    }

    /// With a content encoding.
    pub fn with_coding(mut self, coding: BodyCoding) -> Self {
        self.coding = Some(coding);
        self
    }

    /// Written in pieces of `size` bytes (at least 1).
    pub fn in_chunks(mut self, size: usize) -> Self {
        self.chunk_size = Some(size.max(1));
        self
    }

    /// With `status`.
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }
}

/// The usage both shapes report, so a proxy's meter has something to read.
const USAGE: &str = r#"{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}"#;

/// The answer to a request that presented `key`.
pub(crate) fn reply(echo: &Echo, key: Option<&str>) -> Reply {
    let key = key.unwrap_or_default();
    let form = echo.form.render(key);
    // The form as the content of a JSON string.
    let in_json = if echo.form.is_json_text() {
        form.clone()
    } else {
        let quoted = serde_json::Value::String(form.clone()).to_string();
        quoted[1..quoted.len() - 1].to_owned()
    };
    let quoted = if echo.place == EchoPlace::Body { in_json.as_str() } else { "(see the headers)" };
    let (content_type, body): (&'static str, Vec<u8>) = if echo.stream {
        let event = |content: &str| {
            format!(
                "data: {{\"id\":\"chatcmpl-echo\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{content}\"}}}}]}}\n\n"
            )
        };
        let mut text = event("Incorrect API key provided: ");
        text.push_str(&event(quoted));
        text.push_str(&event(". Check it."));
        text.push_str(&format!(
            "data: {{\"id\":\"chatcmpl-echo\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{USAGE}}}\n\n"
        ));
        text.push_str("data: [DONE]\n\n");
        (EVENT_STREAM, text.into_bytes())
    } else {
        let text = format!(
            "{{\"object\":\"mock.echo\",\"error\":{{\"message\":\"Incorrect API key provided: {quoted}. Check it.\",\"type\":\"invalid_request_error\"}},\"usage\":{USAGE}}}"
        );
        ("application/json", text.into_bytes())
    };
    let mut headers = vec![(CONTENT_TYPE, HeaderValue::from_static(content_type))];
    match echo.place {
        EchoPlace::Body => {}
        EchoPlace::HeaderValue => {
            if let Ok(value) = HeaderValue::try_from(format!("key={form}")) {
                headers.push((HeaderName::from_static("x-mock-echo"), value));
            }
        }
        EchoPlace::HeaderName => {
            if let Ok(name) = HeaderName::try_from(format!("x-mock-echo-{form}")) {
                headers.push((name, HeaderValue::from_static("1")));
            }
        }
    }
    let body = match &echo.coding {
        None => body,
        Some(coding) => {
            let (name, encoded) = match coding {
                BodyCoding::Gzip => ("gzip".to_owned(), compress::gzip(&body)),
                BodyCoding::Deflate => ("deflate".to_owned(), compress::zlib(&body)),
                BodyCoding::RawDeflate => ("deflate".to_owned(), compress::deflate_raw(&body)),
                BodyCoding::Declared(name) => (name.clone(), body),
            };
            if let Ok(value) = HeaderValue::try_from(name) {
                headers.push((CONTENT_ENCODING, value));
            }
            encoded
        }
    };
    let status = StatusCode::from_u16(echo.status).unwrap_or(StatusCode::OK);
    let pieces: Option<Vec<Bytes>> = match echo.chunk_size {
        Some(size) => Some(body.chunks(size).map(Bytes::copy_from_slice).collect()),
        // A stream is written an event at a time (a compressed one in small pieces).
        None if echo.stream && echo.coding.is_some() => Some(body.chunks(32).map(Bytes::copy_from_slice).collect()),
        None if echo.stream => {
            Some(body.split_inclusive(|b| *b == b'\n').map(Bytes::copy_from_slice).collect::<Vec<_>>())
        }
        None => None,
    };
    let body = match pieces {
        Some(pieces) => {
            ReplyBody::Stream { events: Box::new(pieces.into_iter()), error_event: fixed_error_event(Bytes::new()) }
        }
        None => ReplyBody::Full(Bytes::from(body)),
    };
    Reply { status, headers, body, tokens: 0 }
}

/// A streamed answer of exactly these pieces.
pub(crate) fn raw_chunks(status: u16, headers: &[(String, String)], chunks: &[Vec<u8>]) -> Reply {
    let pieces: Vec<Bytes> = chunks.iter().map(|chunk| Bytes::copy_from_slice(chunk)).collect();
    Reply {
        status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        headers: headers
            .iter()
            .filter_map(|(name, value)| {
                Some((HeaderName::try_from(name.as_str()).ok()?, HeaderValue::try_from(value.as_str()).ok()?))
            })
            .collect(),
        body: ReplyBody::Stream { events: Box::new(pieces.into_iter()), error_event: fixed_error_event(Bytes::new()) },
        tokens: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sk-canary/0123+abcXYZ";

    #[test]
    fn forms() {
        assert_eq!(KeyForm::Raw.render(KEY), KEY);
        assert_eq!(KeyForm::Upper.render(KEY), "SK-CANARY/0123+ABCXYZ");
        let json = KeyForm::JsonEscaped.render(KEY);
        assert!(json.starts_with("s\\u006b\\u002Dca\\u006e"), "{json}");
        assert!(json.contains("\\/"), "{json}");
        let decoded: String = serde_json::from_str(&format!("\"{json}\"")).unwrap();
        assert_eq!(decoded, KEY);
        assert!(KeyForm::PercentEncoded.render(KEY).starts_with("%73k%2D%63a%6E"));
        assert_eq!(KeyForm::Hex.render("sk"), "736b");
        assert_eq!(KeyForm::HexUpper.render("s\u{fe}"), "73C3BE");
        assert_eq!(STANDARD.decode(KeyForm::Base64Basic.render(KEY)).unwrap(), format!("user:{KEY}").as_bytes());
        assert_eq!(STANDARD.decode(KeyForm::Base64Bearer.render(KEY)).unwrap(), format!("Bearer {KEY}").as_bytes());
        assert_eq!(URL_SAFE_NO_PAD.decode(KeyForm::Base64Url.render(KEY)).unwrap(), KEY.as_bytes());
    }

    #[test]
    fn placement_and_pieces() {
        let reply = super::reply(&Echo::new(KeyForm::Raw, EchoPlace::HeaderName).streamed(), Some("sk-abc"));
        assert!(reply.headers.iter().any(|(name, _)| name.as_str() == "x-mock-echo-sk-abc"));
        match reply.body {
            ReplyBody::Stream { events, .. } => {
                let pieces: Vec<Bytes> = events.collect();
                assert!(pieces.len() > 4);
                let text: Vec<u8> = pieces.concat();
                assert!(!text.windows(6).any(|w| w == b"sk-abc"));
                assert!(text.ends_with(b"data: [DONE]\n\n"));
            }
            _ => panic!("a stream"),
        }
        let reply = super::reply(&Echo::new(KeyForm::Hex, EchoPlace::Body).in_chunks(5), Some("sk"));
        match reply.body {
            ReplyBody::Stream { events, .. } => {
                let pieces: Vec<Bytes> = events.collect();
                assert!(pieces.iter().all(|p| p.len() <= 5));
                let text = String::from_utf8(pieces.concat()).unwrap();
                assert!(text.contains("provided: 736b. Check"), "{text}");
            }
            _ => panic!("in pieces"),
        }
    }
}
