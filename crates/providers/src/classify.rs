//! What a request is: capability (from the endpoint), mode, and model — read from the
//! request itself, never from a caller's claim.
//!
//! A provider acts on its own reading of a request; byok must never read it differently,
//! or a restricted credential could serve a call its scope does not admit. So a request
//! with more than one possible reading is refused rather than guessed: a path segment
//! byok reads spelt in another letter case (`DEPLOYMENTS`), a body a JSON endpoint
//! cannot parse as one object (compressed, BOM-prefixed, not JSON), a top-level key
//! given twice, a `model` that is not a string, a `stream` that is not a boolean, a
//! query parameter name that does not decode. Paths are read only in their normal form
//! ([`NormalizedPath`]).

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use byok_domain::{Capability, Mode};

use crate::path::{decode_form_component, decode_model_segment, NormalizedPath};
use crate::registry::Api;

/// The longest model name byok accepts, in bytes (the longest real ones — Bedrock
/// inference-profile ARNs — are about half that).
pub const MAX_MODEL_NAME_LEN: usize = 256;

/// The classification of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    /// From the endpoint.
    pub capability: Capability,
    /// `stream` when the request asks to stream, `batch` for batch endpoints.
    pub mode: Mode,
    /// The model as the request names it (JSON `model`, or the path for Gemini and
    /// Azure deployments); never empty, at most [`MAX_MODEL_NAME_LEN`] bytes, without
    /// control or invisible characters.
    pub model: Option<String>,
}

/// Why a request cannot be classified with certainty. The `Display` text says what is
/// wrong; it quotes at most a short, escaped excerpt of what the caller sent.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ambiguity {
    /// A path segment differs from one byok reads only in letter case.
    CaseVariant {
        /// The segment as sent (shortened, escaped).
        found: String,
        /// The spelling byok reads.
        expected: &'static str,
    },
    /// A query parameter name (or the value of one byok reads) has a malformed escape
    /// or is not UTF-8 once decoded.
    QueryParameter,
    /// The body starts with a byte-order mark.
    ByteOrderMark,
    /// The endpoint takes a JSON object and the body is not one.
    BodyNotJson,
    /// A top-level key of the JSON body appears more than once.
    DuplicateKey(String),
    /// `model` is neither a string nor `null`.
    ModelNotText,
    /// `stream` is neither `true`, `false` nor `null`.
    StreamNotBoolean,
    /// The model name holds a control or invisible character.
    ModelControlCharacter,
    /// The model name is longer than [`MAX_MODEL_NAME_LEN`] bytes (its length).
    ModelTooLong(usize),
}

impl fmt::Display for Ambiguity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ambiguity::CaseVariant { found, expected } => {
                write!(f, "the path segment '{found}' differs from '{expected}' only in letter case")
            }
            Ambiguity::QueryParameter => {
                f.write_str("a query parameter name or value has a malformed escape or is not UTF-8")
            }
            Ambiguity::ByteOrderMark => f.write_str("the body starts with a byte-order mark"),
            Ambiguity::BodyNotJson => f.write_str(
                "this endpoint takes a JSON object and the body is not one (compressed, not JSON, or not an object)",
            ),
            Ambiguity::DuplicateKey(key) => write!(f, "the JSON body has the key '{key}' more than once"),
            Ambiguity::ModelNotText => f.write_str("\"model\" must be a string"),
            Ambiguity::StreamNotBoolean => f.write_str("\"stream\" must be true or false (a JSON boolean)"),
            Ambiguity::ModelControlCharacter => f.write_str("the model name contains a control or invisible character"),
            Ambiguity::ModelTooLong(len) => {
                write!(f, "the model name is {len} bytes long; at most {MAX_MODEL_NAME_LEN} are accepted")
            }
        }
    }
}

impl std::error::Error for Ambiguity {}

/// At most 64 characters of `text`, escaped, for a message.
fn excerpt(text: &str) -> String {
    let mut shown: String = text.chars().take(64).flat_map(char::escape_debug).collect();
    if text.chars().nth(64).is_some() {
        shown.push('…');
    }
    shown
}

/// Classify a request to `api` with upstream `path` (after the `/{provider}` prefix, in
/// normal form), `query` and `body` (the whole request body, as the upstream will
/// receive it). A body that looks like a JSON object is read strictly wherever it is
/// sent; an endpoint that takes JSON must get an empty body or one JSON object; other
/// bodies (multipart uploads) have no model.
pub fn classify(
    api: Api,
    path: &NormalizedPath,
    query: Option<&str>,
    body: &[u8],
) -> Result<Classification, Ambiguity> {
    let path = path.as_str();
    let endpoint = match api {
        Api::OpenAi => openai(path)?,
        Api::Bedrock => bedrock(path)?,
        Api::AzureOpenAi => azure(path)?,
        Api::Anthropic => anthropic(path)?,
        Api::Gemini => gemini(path, query)?,
    };
    let body = read_body(body, endpoint.json)?;
    let model = match endpoint.model {
        Source::Body => body.model,
        Source::Path(model) => model,
    };
    let stream = match endpoint.stream {
        Source::Body => body.stream,
        Source::Path(stream) => stream,
    };
    let model = model.filter(|m| !m.is_empty());
    if let Some(model) = &model {
        check_model_name(model)?;
    }
    let capability = endpoint.capability;
    Ok(Classification { capability, mode: mode(stream, capability), model })
}

/// Where a fact about the call is read.
enum Source<T> {
    Body,
    Path(T),
}

/// What the path says.
struct Endpoint {
    capability: Capability,
    model: Source<Option<String>>,
    stream: Source<bool>,
    /// The endpoint takes a JSON object (so any other non-empty body is refused).
    json: bool,
}

/// What the body says.
#[derive(Default)]
struct BodyFacts {
    model: Option<String>,
    stream: bool,
}

const BYTE_ORDER_MARKS: [&[u8]; 3] = [b"\xEF\xBB\xBF", b"\xFE\xFF", b"\xFF\xFE"];

fn first_non_space(bytes: &[u8]) -> Option<u8> {
    bytes.iter().copied().find(|b| !b.is_ascii_whitespace())
}

fn read_body(body: &[u8], json_endpoint: bool) -> Result<BodyFacts, Ambiguity> {
    if body.is_empty() {
        return Ok(BodyFacts::default());
    }
    if let Some(mark) = BYTE_ORDER_MARKS.iter().find(|mark| body.starts_with(mark)) {
        let rest = body.get(mark.len()..).unwrap_or_default();
        if json_endpoint || first_non_space(rest) == Some(b'{') {
            return Err(Ambiguity::ByteOrderMark);
        }
    }
    let not_json = || if json_endpoint { Err(Ambiguity::BodyNotJson) } else { Ok(BodyFacts::default()) };
    if first_non_space(body) != Some(b'{') {
        return not_json();
    }
    // One pass over the whole document, strict (valid UTF-8 throughout, one object,
    // nothing after it), keeping only the top-level keys and the values of `model` and
    // `stream`: no tree of the messages is built.
    let Ok(text) = std::str::from_utf8(body) else { return not_json() };
    let mut reader = serde_json::Deserializer::from_str(text);
    let scan = match serde::Deserializer::deserialize_map(&mut reader, TopLevel)
        .and_then(|scan| reader.end().map(|()| scan))
    {
        Ok(scan) => scan,
        Err(_) => return not_json(),
    };
    if let Some(key) = scan.duplicate {
        return Err(Ambiguity::DuplicateKey(excerpt(&key)));
    }
    let model = match scan.model {
        None | Some(Scalar::Null) => None,
        Some(Scalar::Text(model)) => Some(model),
        Some(_) => return Err(Ambiguity::ModelNotText),
    };
    let stream = match scan.stream {
        None | Some(Scalar::Null) => false,
        Some(Scalar::Bool(stream)) => stream,
        Some(_) => return Err(Ambiguity::StreamNotBoolean),
    };
    Ok(BodyFacts { model, stream })
}

/// What one pass over a request body's top-level object keeps.
#[derive(Default)]
struct Scan {
    /// The first key given twice.
    duplicate: Option<String>,
    model: Option<Scalar>,
    stream: Option<Scalar>,
}

/// A value, as far as classification cares.
enum Scalar {
    Null,
    Bool(bool),
    Text(String),
    /// A number, an array or an object.
    Other,
}

/// Visits the top-level object.
struct TopLevel;

impl<'de> serde::de::Visitor<'de> for TopLevel {
    type Value = Scan;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Scan, A::Error> {
        let mut scan = Scan::default();
        let mut keys: HashSet<Cow<'de, str>> = HashSet::new();
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            match key.as_ref() {
                "model" => scan.model = Some(map.next_value::<Scalar>()?),
                "stream" => scan.stream = Some(map.next_value::<Scalar>()?),
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
            if scan.duplicate.is_none() && keys.contains(&key) {
                scan.duplicate = Some(key.into_owned());
            } else {
                keys.insert(key);
            }
        }
        Ok(scan)
    }
}

/// A key, borrowed from the body unless it holds an escape.
struct Key<'de>(Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> serde::de::Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

impl<'de> serde::Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;
        impl<'de> serde::de::Visitor<'de> for ScalarVisitor {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Scalar, E> {
                Ok(Scalar::Null)
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar::Bool(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar::Text(v.to_owned()))
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Scalar, E> {
                Ok(Scalar::Other)
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Scalar, E> {
                Ok(Scalar::Other)
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Scalar, E> {
                Ok(Scalar::Other)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
                while map.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
        }
        deserializer.deserialize_any(ScalarVisitor)
    }
}

fn is_control_or_invisible(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{2069}' | '\u{FEFF}'
        )
}

/// A model name is recorded in the audit and matched against families: it must be
/// short and printable.
fn check_model_name(model: &str) -> Result<(), Ambiguity> {
    if model.len() > MAX_MODEL_NAME_LEN {
        return Err(Ambiguity::ModelTooLong(model.len()));
    }
    if model.chars().any(is_control_or_invisible) {
        return Err(Ambiguity::ModelControlCharacter);
    }
    Ok(())
}

fn mode(stream: bool, capability: Capability) -> Mode {
    if capability == Capability::Batches {
        Mode::Batch
    } else if stream {
        Mode::Stream
    } else {
        Mode::Sync
    }
}

/// Whether `segment` is `keyword`. A segment that differs from it only in letter case is
/// refused: a case-insensitive upstream would read it as the keyword, byok would not.
fn is(segment: &str, keyword: &'static str) -> Result<bool, Ambiguity> {
    if segment == keyword {
        Ok(true)
    } else if segment.eq_ignore_ascii_case(keyword) {
        Err(Ambiguity::CaseVariant { found: excerpt(segment), expected: keyword })
    } else {
        Ok(false)
    }
}

/// The value `segment` names in `table` (see [`is`] for letter case).
fn lookup<T: Copy>(segment: &str, table: &[(&'static str, T)]) -> Result<Option<T>, Ambiguity> {
    for (keyword, value) in table {
        if is(segment, keyword)? {
            return Ok(Some(*value));
        }
    }
    Ok(None)
}

/// The endpoint after the first API version segment: `/openai/v1/chat/completions` →
/// `chat/completions`.
fn after_version<'a>(path: &'a str, versions: &[&'static str]) -> Result<Option<&'a str>, Ambiguity> {
    let mut rest = path.strip_prefix('/').unwrap_or(path);
    loop {
        let (segment, after) = match rest.split_once('/') {
            Some((segment, after)) => (segment, Some(after)),
            None => (rest, None),
        };
        for version in versions {
            if is(segment, version)? {
                return Ok(Some(after.unwrap_or("")));
            }
        }
        match after {
            Some(after) => rest = after,
            None => return Ok(None),
        }
    }
}

const OPENAI_ENDPOINTS: [(&str, Capability); 12] = [
    ("chat", Capability::Chat),
    ("responses", Capability::Responses),
    ("completions", Capability::Completions),
    ("embeddings", Capability::Embeddings),
    ("images", Capability::Images),
    ("audio", Capability::Audio),
    ("moderations", Capability::Moderations),
    ("files", Capability::Files),
    ("uploads", Capability::Files),
    ("batches", Capability::Batches),
    ("models", Capability::Models),
    ("realtime", Capability::Realtime),
];

/// Capability of an OpenAI-style endpoint (`chat/completions`), and whether it takes JSON
/// (image edits and variations, transcriptions, translations and uploads are multipart).
fn openai_endpoint(endpoint: &str) -> Result<(Capability, bool), Ambiguity> {
    let mut segments = endpoint.split('/');
    let first = segments.next().unwrap_or("");
    let second = segments.next().unwrap_or("");
    let capability = lookup(first, &OPENAI_ENDPOINTS)?.unwrap_or(Capability::Other);
    let json = match capability {
        Capability::Chat
        | Capability::Responses
        | Capability::Completions
        | Capability::Embeddings
        | Capability::Moderations
        | Capability::Batches => true,
        Capability::Images => lookup(second, &[("edits", ()), ("variations", ())])?.is_none(),
        Capability::Audio => lookup(second, &[("transcriptions", ()), ("translations", ())])?.is_none(),
        _ => false,
    };
    Ok((capability, json))
}

fn openai(path: &str) -> Result<Endpoint, Ambiguity> {
    let (capability, json) = match after_version(path, &["v1"])? {
        Some(endpoint) => openai_endpoint(endpoint)?,
        None => (Capability::Other, false),
    };
    Ok(Endpoint { capability, model: Source::Body, stream: Source::Body, json })
}

fn azure(path: &str) -> Result<Endpoint, Ambiguity> {
    // /openai/deployments/{deployment}/chat/completions — the deployment stands for the model.
    let mut segments = path.trim_start_matches('/').splitn(4, '/');
    let (first, second, deployment) = (segments.next(), segments.next(), segments.next());
    if let (Some(first), Some(second), Some(deployment)) = (first, second, deployment) {
        if is(first, "openai")? && is(second, "deployments")? {
            let (capability, json) = openai_endpoint(segments.next().unwrap_or(""))?;
            return Ok(Endpoint {
                capability,
                model: Source::Path(Some(deployment.to_owned())),
                stream: Source::Body,
                json,
            });
        }
    }
    openai(path)
}

fn anthropic(path: &str) -> Result<Endpoint, Ambiguity> {
    let endpoint = after_version(path, &["v1"])?.unwrap_or("");
    let mut segments = endpoint.split('/');
    let first = segments.next().unwrap_or("");
    let second = segments.next().unwrap_or("");
    let capability = if !is(first, "messages")? {
        let others =
            [("complete", Capability::Completions), ("models", Capability::Models), ("files", Capability::Files)];
        lookup(first, &others)?.unwrap_or(Capability::Other)
    } else if second.is_empty() {
        Capability::Chat
    } else {
        lookup(second, &[("count_tokens", Capability::CountTokens), ("batches", Capability::Batches)])?
            .unwrap_or(Capability::Other)
    };
    let json = matches!(
        capability,
        Capability::Chat | Capability::CountTokens | Capability::Batches | Capability::Completions
    );
    Ok(Endpoint { capability, model: Source::Body, stream: Source::Body, json })
}

const GEMINI_METHODS: [(&str, Capability); 6] = [
    ("generateContent", Capability::Chat),
    ("streamGenerateContent", Capability::Chat),
    ("embedContent", Capability::Embeddings),
    ("batchEmbedContents", Capability::Embeddings),
    ("countTokens", Capability::CountTokens),
    ("batchGenerateContent", Capability::Batches),
];

/// Whether the query asks for server-sent events (`alt=sse`). Names and values are
/// decoded as Google decodes them; a name (or `alt` value) that does not decode is
/// refused: byok drops `key` parameters by their decoded name.
fn gemini_alt_sse(query: Option<&str>) -> Result<bool, Ambiguity> {
    let Some(query) = query else { return Ok(false) };
    let mut sse = false;
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if decode_form_component(name).ok_or(Ambiguity::QueryParameter)? == "alt" {
            sse |= decode_form_component(value).ok_or(Ambiguity::QueryParameter)? == "sse";
        }
    }
    Ok(sse)
}

fn gemini(path: &str, query: Option<&str>) -> Result<Endpoint, Ambiguity> {
    let endpoint = after_version(path, &["v1", "v1beta", "v1alpha"])?.unwrap_or("");
    let stream_query = gemini_alt_sse(query)?;
    let (first, rest) = endpoint.split_once('/').unwrap_or((endpoint, ""));
    let mut model = None;
    let mut method = None;
    let capability = if is(first, "models")? {
        // models/{model}:{method}
        match rest.split_once(':') {
            Some((named, called)) => {
                model = Some(named.to_owned());
                method = lookup(called, &GEMINI_METHODS)?.map(|capability| (called, capability));
                method.map_or(Capability::Other, |(_, capability)| capability)
            }
            None => Capability::Models,
        }
    } else if is(first, "files")? {
        Capability::Files
    } else {
        // Tuned models are not classified, but their collection must be spelt one way too.
        is(first, "tunedModels")?;
        Capability::Other
    };
    let stream = method.is_some_and(|(called, _)| called == "streamGenerateContent") || stream_query;
    Ok(Endpoint { capability, model: Source::Path(model), stream: Source::Path(stream), json: method.is_some() })
}

/// Bedrock runtime operations on `/model/{modelId}/…`: whether each streams.
const BEDROCK_ACTIONS: [(&str, bool); 4] =
    [("converse", false), ("converse-stream", true), ("invoke", false), ("invoke-with-response-stream", true)];

fn bedrock(path: &str) -> Result<Endpoint, Ambiguity> {
    // /model/{modelId}/{action}: the model comes from the path (canonically encoded by
    // `normalize_path_for`), never from the body; streaming from the action.
    let mut segments = path.trim_start_matches('/').splitn(3, '/');
    if let (Some(first), Some(id), Some(action)) = (segments.next(), segments.next(), segments.next()) {
        if is(first, "model")? {
            if let Some(stream) = lookup(action, &BEDROCK_ACTIONS)? {
                return Ok(Endpoint {
                    capability: Capability::Chat,
                    model: Source::Path(decode_model_segment(id)),
                    stream: Source::Path(stream),
                    json: true,
                });
            }
        }
    }
    Ok(Endpoint { capability: Capability::Other, model: Source::Path(None), stream: Source::Path(false), json: false })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bedrock_reads_the_model_and_the_mode_from_the_path() {
        let converse = br#"{"messages":[{"role":"user","content":[{"text":"hi"}]}]}"#.as_slice();
        let cases: [(&str, &[u8], Capability, Mode, Option<&str>); 7] = [
            (
                "/model/anthropic.claude-3-haiku-20240307-v1:0/converse",
                converse,
                Capability::Chat,
                Mode::Sync,
                Some("anthropic.claude-3-haiku-20240307-v1:0"),
            ),
            ("/model/us.amazon.nova-pro-v1%3A0/converse-stream", converse, Capability::Chat, Mode::Stream, Some("us.amazon.nova-pro-v1:0")),
            (
                "/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke",
                br#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":5,"messages":[]}"#,
                Capability::Chat,
                Mode::Sync,
                Some("anthropic.claude-sonnet-4-5-20250929-v1:0"),
            ),
            (
                "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.meta.llama3-3-70b-instruct-v1%3A0/invoke-with-response-stream",
                b"{}",
                Capability::Chat,
                Mode::Stream,
                Some("arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.meta.llama3-3-70b-instruct-v1:0"),
            ),
            // A model in the body is not what Bedrock reads: the path's is.
            ("/model/mistral.mistral-large-2407-v1%3A0/converse", br#"{"model":"claude-opus-4"}"#, Capability::Chat, Mode::Sync, Some("mistral.mistral-large-2407-v1:0")),
            ("/model/m/frobnicate", b"", Capability::Other, Mode::Sync, None),
            ("/guardrail/g/version/1/apply", b"{}", Capability::Other, Mode::Sync, None),
        ];
        for (path, body, capability, mode, model) in cases {
            let path = crate::normalize_path_for(Api::Bedrock, path).unwrap();
            let got = classify(Api::Bedrock, &path, None, body).unwrap();
            assert_eq!(got, Classification { capability, mode, model: model.map(str::to_owned) }, "{path}");
        }
        let path = crate::normalize_path_for(Api::Bedrock, "/model/m-1/CONVERSE").unwrap();
        assert!(matches!(classify(Api::Bedrock, &path, None, b""), Err(Ambiguity::CaseVariant { .. })));
        let path = crate::normalize_path_for(Api::Bedrock, "/model/m-1/converse").unwrap();
        assert_eq!(classify(Api::Bedrock, &path, None, b"not json"), Err(Ambiguity::BodyNotJson));
    }

    #[test]
    fn classification_table() {
        let chat = br#"{"model":"gpt-4o","messages":[]}"#.as_slice();
        let chat_stream = br#"{"model":"gpt-4o","stream":true}"#.as_slice();
        let claude = br#"{"model":"claude-sonnet-4-5","max_tokens":5,"stream":true}"#.as_slice();
        let cases: Vec<(Api, &str, Option<&str>, &[u8], Capability, Mode, Option<&str>)> = vec![
            (Api::OpenAi, "/v1/chat/completions", None, chat, Capability::Chat, Mode::Sync, Some("gpt-4o")),
            (Api::OpenAi, "/v1/chat/completions", None, chat_stream, Capability::Chat, Mode::Stream, Some("gpt-4o")),
            (Api::OpenAi, "/openai/v1/chat/completions", None, chat, Capability::Chat, Mode::Sync, Some("gpt-4o")),
            (
                Api::OpenAi,
                "/v1/embeddings",
                None,
                br#"{"model":"text-embedding-3-small"}"#,
                Capability::Embeddings,
                Mode::Sync,
                Some("text-embedding-3-small"),
            ),
            (Api::OpenAi, "/v1/responses", None, chat_stream, Capability::Responses, Mode::Stream, Some("gpt-4o")),
            (Api::OpenAi, "/v1/models", None, b"", Capability::Models, Mode::Sync, None),
            (Api::OpenAi, "/v1/batches", None, b"{}", Capability::Batches, Mode::Batch, None),
            (Api::OpenAi, "/v1/audio/transcriptions", None, b"--multipart", Capability::Audio, Mode::Sync, None),
            (
                Api::OpenAi,
                "/v1/images/generations",
                None,
                br#"{"model":"dall-e-3"}"#,
                Capability::Images,
                Mode::Sync,
                Some("dall-e-3"),
            ),
            (Api::OpenAi, "/v1/something-new", None, b"", Capability::Other, Mode::Sync, None),
            (Api::OpenAi, "/v2/chat/completions", None, chat, Capability::Other, Mode::Sync, Some("gpt-4o")),
            (Api::Anthropic, "/v1/messages", None, claude, Capability::Chat, Mode::Stream, Some("claude-sonnet-4-5")),
            (
                Api::Anthropic,
                "/v1/messages/count_tokens",
                None,
                br#"{"model":"claude-haiku-4-5"}"#,
                Capability::CountTokens,
                Mode::Sync,
                Some("claude-haiku-4-5"),
            ),
            (Api::Anthropic, "/v1/messages/batches", None, b"{}", Capability::Batches, Mode::Batch, None),
            (
                Api::Gemini,
                "/v1beta/models/gemini-2.5-pro:generateContent",
                None,
                b"{}",
                Capability::Chat,
                Mode::Sync,
                Some("gemini-2.5-pro"),
            ),
            (
                Api::Gemini,
                "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
                Some("alt=sse"),
                b"{}",
                Capability::Chat,
                Mode::Stream,
                Some("gemini-2.5-flash"),
            ),
            (
                Api::Gemini,
                "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
                None,
                b"{}",
                Capability::Chat,
                Mode::Stream,
                Some("gemini-2.5-flash"),
            ),
            (
                Api::Gemini,
                "/v1beta/models/text-embedding-004:embedContent",
                None,
                b"{}",
                Capability::Embeddings,
                Mode::Sync,
                Some("text-embedding-004"),
            ),
            (Api::Gemini, "/v1beta/models", None, b"", Capability::Models, Mode::Sync, None),
            (
                Api::AzureOpenAi,
                "/openai/deployments/prod-4o/chat/completions",
                Some("api-version=2024-10-21"),
                chat_stream,
                Capability::Chat,
                Mode::Stream,
                Some("prod-4o"),
            ),
            (
                Api::AzureOpenAi,
                "/openai/deployments/emb/embeddings",
                None,
                b"{}",
                Capability::Embeddings,
                Mode::Sync,
                Some("emb"),
            ),
            (Api::AzureOpenAi, "/openai/v1/chat/completions", None, chat, Capability::Chat, Mode::Sync, Some("gpt-4o")),
        ];
        for (api, path, query, body, capability, mode, model) in cases {
            let c = classify(api, &normal(path), query, body).unwrap();
            assert_eq!((c.capability, c.mode, c.model.as_deref()), (capability, mode, model), "{api:?} {path}");
        }
    }

    fn normal(path: &str) -> NormalizedPath {
        crate::path::normalize_path(path).unwrap()
    }

    #[test]
    fn legitimate_requests_are_read() {
        let cases: Vec<(Api, &str, Option<&str>, &[u8], Capability, Mode, Option<&str>)> = vec![
            // Multipart endpoints: the body is not JSON and names no model byok reads.
            (Api::OpenAi, "/v1/images/edits", None, b"--x\r\n", Capability::Images, Mode::Sync, None),
            (Api::OpenAi, "/v1/files", None, b"--x\r\n", Capability::Files, Mode::Sync, None),
            // Empty bodies (GET, DELETE, cancel) on JSON endpoints.
            (Api::OpenAi, "/v1/chat/completions/chatcmpl-1", None, b"", Capability::Chat, Mode::Sync, None),
            (Api::Anthropic, "/v1/messages/batches/b1/cancel", None, b"", Capability::Batches, Mode::Batch, None),
            // `null` is no model and no stream; whitespace and key escapes are fine.
            (
                Api::OpenAi,
                "/v1/chat/completions",
                None,
                br#" {"model":null,"stream":null} "#,
                Capability::Chat,
                Mode::Sync,
                None,
            ),
            (
                Api::OpenAi,
                "/v1/chat/completions",
                None,
                b"{\"mod\\u0065l\":\"gpt-4o\",\"stream\":false}",
                Capability::Chat,
                Mode::Sync,
                Some("gpt-4o"),
            ),
            // Nested keys may repeat names of top-level ones.
            (
                Api::OpenAi,
                "/v1/chat/completions",
                None,
                br#"{"model":"gpt-4o","metadata":{"model":"x","stream":"y"},"tools":[{"model":1}],"stream":true}"#,
                Capability::Chat,
                Mode::Stream,
                Some("gpt-4o"),
            ),
            (
                Api::OpenAi,
                "/v1/chat/completions",
                None,
                br#"{"model":"a\"b{","x":"}:,\\"}"#,
                Capability::Chat,
                Mode::Sync,
                Some("a\"b{"),
            ),
            // Gemini reads `alt` decoded; `key` and other parameters do not matter here.
            (
                Api::Gemini,
                "/v1beta/models/gemini-2.5-flash:generateContent",
                Some("%61lt=%73se&key=x"),
                b"{}",
                Capability::Chat,
                Mode::Stream,
                Some("gemini-2.5-flash"),
            ),
            (Api::Gemini, "/v1beta/models/gemini-2.5-flash", None, b"", Capability::Models, Mode::Sync, None),
            (Api::Gemini, "/v1beta/files/abc", None, b"", Capability::Files, Mode::Sync, None),
            // A model name of exactly the limit.
            (
                Api::OpenAi,
                "/v1/embeddings",
                None,
                format!(r#"{{"model":"{}"}}"#, "m".repeat(MAX_MODEL_NAME_LEN)).leak().as_bytes(),
                Capability::Embeddings,
                Mode::Sync,
                Some("m".repeat(MAX_MODEL_NAME_LEN).leak()),
            ),
            (
                Api::AzureOpenAi,
                "/openai/deployments/prod-4o/audio/transcriptions",
                Some("api-version=2024-10-21"),
                b"--x\r\n",
                Capability::Audio,
                Mode::Sync,
                Some("prod-4o"),
            ),
        ];
        for (api, path, query, body, capability, mode, model) in cases {
            let c = classify(api, &normal(path), query, body).unwrap_or_else(|e| panic!("{api:?} {path}: {e}"));
            assert_eq!((c.capability, c.mode, c.model.as_deref()), (capability, mode, model), "{api:?} {path}");
        }
    }

    #[test]
    fn requests_with_more_than_one_reading_are_refused() {
        let chat = br#"{"model":"gpt-4o"}"#.as_slice();
        let case = |found: &str, expected: &'static str| Ambiguity::CaseVariant { found: found.to_owned(), expected };
        let long_model = format!(r#"{{"model":"{}"}}"#, "m".repeat(MAX_MODEL_NAME_LEN + 1));
        let gemini_long = format!("/v1beta/models/{}:generateContent", "g".repeat(300));
        let cases: Vec<(Api, &str, Option<&str>, &[u8], Ambiguity)> = vec![
            // Bodies.
            (
                Api::OpenAi,
                "/v1/chat/completions",
                None,
                b"\xEF\xBB\xBF{\"model\":\"gpt-4o\"}",
                Ambiguity::ByteOrderMark,
            ),
            (Api::OpenAi, "/v1/files", None, b"\xEF\xBB\xBF {\"model\":\"gpt-4o\"}", Ambiguity::ByteOrderMark),
            (Api::Anthropic, "/v1/messages", None, b"\xFF\xFE{\x00", Ambiguity::ByteOrderMark),
            (Api::OpenAi, "/v1/chat/completions", None, b"\x1f\x8b\x08\x00\x00\x00", Ambiguity::BodyNotJson),
            (Api::OpenAi, "/v1/chat/completions", None, b"model=gpt-4o&stream=true", Ambiguity::BodyNotJson),
            (Api::OpenAi, "/v1/chat/completions", None, b"[{\"model\":\"gpt-4o\"}]", Ambiguity::BodyNotJson),
            (Api::OpenAi, "/v1/chat/completions", None, b"{\"model\":\"gpt-4o\",}", Ambiguity::BodyNotJson),
            (Api::OpenAi, "/v1/chat/completions", None, b"{\"model\":\"gpt-4o\"} {}", Ambiguity::BodyNotJson),
            (Api::OpenAi, "/v1/chat/completions", None, b"   ", Ambiguity::BodyNotJson),
            (Api::OpenAi, "/v1/images/generations", None, b"--x\r\n", Ambiguity::BodyNotJson),
            (Api::OpenAi, "/v1/audio/speech", None, b"--x\r\n", Ambiguity::BodyNotJson),
            (Api::Anthropic, "/v1/messages/count_tokens", None, b"--x", Ambiguity::BodyNotJson),
            (Api::Gemini, "/v1beta/models/gemini-2.5-pro:generateContent", None, b"--x", Ambiguity::BodyNotJson),
            (Api::AzureOpenAi, "/openai/deployments/d/chat/completions", None, b"--x", Ambiguity::BodyNotJson),
            (
                Api::OpenAi,
                "/v1/chat/completions",
                None,
                br#"{"model":"gpt-4o-mini","stream":false,"model":"o1-pro"}"#,
                Ambiguity::DuplicateKey("model".into()),
            ),
            // Invalid UTF-8 anywhere, also in a value classification does not read.
            (
                Api::OpenAi,
                "/v1/chat/completions",
                None,
                b"{\"model\":\"gpt-4o\",\"messages\":[{\"content\":\"\xff\xfe\"}]}",
                Ambiguity::BodyNotJson,
            ),
            (Api::OpenAi, "/v1/chat/completions", None, b"{\"model\":\"gpt-4o\",\"user\":\"\xc3\"}", Ambiguity::BodyNotJson),
            // A key given twice inside a nested object is the provider's business, not a
            // second reading of the call; at the top level it is refused even after other values.
            (
                Api::OpenAi,
                "/v1/chat/completions",
                None,
                br#"{"messages":[{"role":"user","role":"x"}],"stream":true,"n":1,"metadata":{"a":{"b":[1,{"c":null}]}},"stream":false}"#,
                Ambiguity::DuplicateKey("stream".into()),
            ),
            (
                Api::OpenAi,
                "/v1/chat/completions",
                None,
                br#"{"model":"gpt-4o","mod\u0065l":"o1-pro"}"#,
                Ambiguity::DuplicateKey("model".into()),
            ),
            (
                Api::Anthropic,
                "/v1/messages",
                None,
                br#"{"stream":false,"model":"claude-haiku-4-5","stream":true}"#,
                Ambiguity::DuplicateKey("stream".into()),
            ),
            (
                Api::OpenAi,
                "/v1/files",
                None,
                br#"{"purpose":"a","purpose":"b"}"#,
                Ambiguity::DuplicateKey("purpose".into()),
            ),
            (
                Api::OpenAi,
                "/v1/chat/completions",
                None,
                br#"{"model":"gpt-4o","stream":"true"}"#,
                Ambiguity::StreamNotBoolean,
            ),
            (
                Api::Anthropic,
                "/v1/messages",
                None,
                br#"{"model":"claude-haiku-4-5","stream":1}"#,
                Ambiguity::StreamNotBoolean,
            ),
            (Api::OpenAi, "/v1/chat/completions", None, br#"{"model":["gpt-4o","o1-pro"]}"#, Ambiguity::ModelNotText),
            (Api::OpenAi, "/v1/chat/completions", None, br#"{"model":{"id":"gpt-4o"}}"#, Ambiguity::ModelNotText),
            // Model names.
            (
                Api::OpenAi,
                "/v1/chat/completions",
                None,
                br#"{"model":"gpt-4o\n2024-01-01 allowed"}"#,
                Ambiguity::ModelControlCharacter,
            ),
            (
                Api::OpenAi,
                "/v1/chat/completions",
                None,
                br#"{"model":"gpt-4o\u0000"}"#,
                Ambiguity::ModelControlCharacter,
            ),
            (
                Api::OpenAi,
                "/v1/chat/completions",
                None,
                br#"{"model":"gpt-4o\u202e"}"#,
                Ambiguity::ModelControlCharacter,
            ),
            (
                Api::OpenAi,
                "/v1/chat/completions",
                None,
                br#"{"model":"gpt\u200b-4o"}"#,
                Ambiguity::ModelControlCharacter,
            ),
            (
                Api::OpenAi,
                "/v1/chat/completions",
                None,
                long_model.as_bytes(),
                Ambiguity::ModelTooLong(MAX_MODEL_NAME_LEN + 1),
            ),
            (Api::Gemini, gemini_long.as_str(), None, b"{}", Ambiguity::ModelTooLong(300)),
            // Path keywords in another letter case.
            (
                Api::AzureOpenAi,
                "/openai/DEPLOYMENTS/prod-4o/chat/completions",
                None,
                chat,
                case("DEPLOYMENTS", "deployments"),
            ),
            (
                Api::AzureOpenAi,
                "/openai/Deployments/prod-4o/chat/completions",
                None,
                chat,
                case("Deployments", "deployments"),
            ),
            (Api::AzureOpenAi, "/OpenAI/deployments/prod-4o/chat/completions", None, chat, case("OpenAI", "openai")),
            (Api::AzureOpenAi, "/openai/deployments/prod-4o/Embeddings", None, chat, case("Embeddings", "embeddings")),
            (Api::OpenAi, "/V1/chat/completions", None, chat, case("V1", "v1")),
            (Api::OpenAi, "/v1/CHAT/completions", None, chat, case("CHAT", "chat")),
            (Api::OpenAi, "/v1/images/EDITS", None, chat, case("EDITS", "edits")),
            (Api::Anthropic, "/v1/Messages", None, chat, case("Messages", "messages")),
            (Api::Anthropic, "/v1/messages/Batches", None, chat, case("Batches", "batches")),
            (Api::Gemini, "/v1BETA/models/gemini-2.5-pro:generateContent", None, b"{}", case("v1BETA", "v1beta")),
            (Api::Gemini, "/v1beta/Models/gemini-2.5-pro:generateContent", None, b"{}", case("Models", "models")),
            (
                Api::Gemini,
                "/v1beta/models/gemini-2.5-pro:GenerateContent",
                None,
                b"{}",
                case("GenerateContent", "generateContent"),
            ),
            (
                Api::Gemini,
                "/v1beta/models/gemini-2.5-pro:streamgeneratecontent",
                None,
                b"{}",
                case("streamgeneratecontent", "streamGenerateContent"),
            ),
            // Query parameters Google would decode and byok could not.
            (
                Api::Gemini,
                "/v1beta/models/gemini-2.5-pro:generateContent",
                Some("%zzey=x"),
                b"{}",
                Ambiguity::QueryParameter,
            ),
            (
                Api::Gemini,
                "/v1beta/models/gemini-2.5-pro:generateContent",
                Some("alt=%ff"),
                b"{}",
                Ambiguity::QueryParameter,
            ),
        ];
        for (api, path, query, body, expected) in cases {
            let got = classify(api, &normal(path), query, body);
            assert_eq!(got.as_ref().err(), Some(&expected), "{api:?} {path} {:?}", String::from_utf8_lossy(body));
            assert!(!expected.to_string().is_empty());
        }
    }

    #[test]
    fn messages_quote_little_of_what_was_sent() {
        let key = format!("{}\\u0007", "k".repeat(500));
        let body = format!(r#"{{"{key}":1,"{key}":2}}"#);
        let err = classify(Api::OpenAi, &normal("/v1/chat/completions"), None, body.as_bytes()).unwrap_err();
        let message = err.to_string();
        assert!(message.len() < 200, "{message}");
        assert!(!message.contains('\u{7}'), "{message}");
    }
}
