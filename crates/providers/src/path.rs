//! One reading of a request path. A provider decides what a request does from its path;
//! byok decides which credential may serve it from the same path. If the two could read
//! one path differently (an encoded `:` before a Gemini method, a `..;` segment, a
//! fullwidth dot), a restricted credential could be used for something its scope does
//! not admit. So the path is normalized once, the normalized form is classified, and
//! exactly that form is sent upstream; anything that has no single reading is refused.

use std::fmt;

/// A request path in normal form; only [`normalize_path`] and [`normalize_path_for`] make
/// one.
///
/// It starts with `/` and holds only ASCII letters, digits, `-`, `.`, `_`, `~`, `/`, `:`
/// and the sub-delimiters `! $ & ' ( ) * + , =`: no `%` (nothing is left encoded), no
/// `@`, `;`, `\`, `?`, `#`, no control, space or non-ASCII character; it has no `.` or
/// `..` segment (nor any segment made only of dots) and no empty segment except after a
/// trailing `/`. It reads the same to byok and to any upstream, whether or not the
/// upstream decodes percent-escapes.
///
/// One exception, Bedrock's model id (`/model/{modelId}/…`, see [`normalize_path_for`]):
/// that one segment is kept percent-encoded in its single canonical form (every byte but
/// `A–Z a–z 0–9 - . _ ~` as `%XX`, upper-case hex), as the AWS SDKs send it and as the
/// request is signed, so `%3A` and `%2F` appear there and only there.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NormalizedPath(String);

impl NormalizedPath {
    /// The path.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl AsRef<str> for NormalizedPath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NormalizedPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a request path has no single reading. The `Display` text names the problem and
/// never repeats more of the path than one character.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathError {
    /// The path does not start with `/`.
    NotAbsolute,
    /// An empty segment (`//`) other than a trailing `/`.
    EmptySegment,
    /// A `.` or `..` segment, or one made only of dots (after decoding).
    DotSegment,
    /// A `;` (path parameters: some servers read `..;` as `..`).
    PathParameter,
    /// An `@` (user info to some URL parsers).
    At,
    /// A backslash (a separator to some servers).
    Backslash,
    /// A raw non-ASCII character (fullwidth dots and other look-alikes).
    NonAscii,
    /// A raw control character, space or DEL.
    Control,
    /// A raw character no provider path uses and URL parsers disagree on.
    Disallowed(char),
    /// A `%` not followed by two hexadecimal digits.
    MalformedEscape,
    /// `%2F` or `%5C`: an encoded separator.
    EncodedSeparator,
    /// `%25`: an encoded `%` (double encoding).
    EncodedPercent,
    /// An encoded reserved or otherwise meaningful ASCII character (`%3A`, `%3F`,
    /// `%23`, `%40`, `%3B`, `%20`, …).
    EncodedReserved(char),
    /// An encoded control character (`%00`–`%1F`, `%7F`).
    EncodedControl,
    /// An encoded byte above `%7F` (overlong UTF-8 such as `%C0%AE`, fullwidth forms).
    EncodedNonAscii,
    /// A Bedrock model id (`/model/{modelId}/…`) that decodes to something other than a
    /// model id, inference profile or ARN.
    BedrockModelId,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathError::NotAbsolute => f.write_str("the path must start with '/'"),
            PathError::EmptySegment => f.write_str("empty segments ('//') are not allowed"),
            PathError::DotSegment => f.write_str("'.' and '..' segments are not allowed"),
            PathError::PathParameter => f.write_str("';' (path parameters, as in '..;') is not allowed"),
            PathError::At => f.write_str("'@' is not allowed"),
            PathError::Backslash => f.write_str("backslashes are not allowed"),
            PathError::NonAscii => f.write_str("non-ASCII characters are not allowed"),
            PathError::Control => f.write_str("control characters and spaces are not allowed"),
            PathError::Disallowed(c) => write!(f, "'{c}' is not allowed"),
            PathError::MalformedEscape => f.write_str("'%' must be followed by two hexadecimal digits"),
            PathError::EncodedSeparator => f.write_str("percent-encoded separators (%2F, %5C) are not allowed"),
            PathError::EncodedPercent => f.write_str("a percent-encoded '%' (%25, double encoding) is not allowed"),
            PathError::EncodedReserved(c) => {
                write!(
                    f,
                    "a percent-encoded '{c}' (%{:02X}) is not allowed; send it unencoded or not at all",
                    *c as u32
                )
            }
            PathError::EncodedControl => f.write_str("percent-encoded control characters are not allowed"),
            PathError::BedrockModelId => f.write_str(
                "the model id in /model/{modelId}/ must decode to letters, digits and '-', '.', '_', ':', '/' \
                 (a model id, inference profile or ARN), with no empty or dot-only part",
            ),
            PathError::EncodedNonAscii => {
                f.write_str("percent-encoded non-ASCII bytes (overlong UTF-8, look-alike characters) are not allowed")
            }
        }
    }
}

impl std::error::Error for PathError {}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Raw characters a normalized path may hold besides unreserved ones and `/`.
fn is_allowed_delimiter(b: u8) -> bool {
    matches!(b, b':' | b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b'=')
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The byte `%XY` stands for, where `rest` starts after the `%`.
fn escaped_byte(rest: &[u8]) -> Option<u8> {
    let high = hex_value(*rest.first()?)?;
    let low = hex_value(*rest.get(1)?)?;
    Some(high << 4 | low)
}

fn refuse_raw(b: u8) -> PathError {
    match b {
        b'@' => PathError::At,
        b'\\' => PathError::Backslash,
        b';' => PathError::PathParameter,
        0x80..=0xFF => PathError::NonAscii,
        0x00..=0x20 | 0x7F => PathError::Control,
        other => PathError::Disallowed(char::from(other)),
    }
}

fn refuse_encoded(b: u8) -> PathError {
    match b {
        b'/' | b'\\' => PathError::EncodedSeparator,
        b'%' => PathError::EncodedPercent,
        0x00..=0x1F | 0x7F => PathError::EncodedControl,
        0x80..=0xFF => PathError::EncodedNonAscii,
        other => PathError::EncodedReserved(char::from(other)),
    }
}

/// Normalize a request path (RFC 3986 §6.2.2, made strict): percent-encoded unreserved
/// characters (`A–Z a–z 0–9 - . _ ~`) are decoded; every other escape, and every raw
/// character that servers and URL parsers read differently, is refused; so are dot
/// segments (`.`, `..`, `...`; also when spelled `%2E`) and empty segments other than a
/// trailing `/`.
///
/// Guarantees, for every input: it returns and never panics; on success the result is a
/// [`NormalizedPath`] (see there for what it may contain), no longer than the input, and
/// normalizing it again gives it back unchanged; on failure the [`PathError`] names the
/// first thing wrong.
pub fn normalize_path(path: &str) -> Result<NormalizedPath, PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    let mut out = String::with_capacity(bytes.len());
    let mut index = 0;
    while let Some(&b) = bytes.get(index) {
        if b == b'%' {
            let decoded = bytes.get(index + 1..).and_then(escaped_byte).ok_or(PathError::MalformedEscape)?;
            if !is_unreserved(decoded) {
                return Err(refuse_encoded(decoded));
            }
            out.push(char::from(decoded));
            index += 3;
        } else if is_unreserved(b) || b == b'/' || is_allowed_delimiter(b) {
            out.push(char::from(b));
            index += 1;
        } else {
            return Err(refuse_raw(b));
        }
    }
    let segments: Vec<&str> = out.split('/').skip(1).collect();
    for (position, segment) in segments.iter().enumerate() {
        if segment.is_empty() {
            if position + 1 != segments.len() {
                return Err(PathError::EmptySegment);
            }
        } else if segment.bytes().all(|b| b == b'.') {
            return Err(PathError::DotSegment);
        }
    }
    Ok(NormalizedPath(out))
}

/// The characters a decoded Bedrock model id may hold: model ids
/// (`anthropic.claude-sonnet-4-5-20250929-v1:0`), inference profiles (`us.anthropic.…`) and
/// ARNs (`arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.…`).
fn is_bedrock_model_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':' | b'/')
}

/// Normalize a request path to a provider of dialect `api`: [`normalize_path`], except
/// that for Bedrock the model id of `/model/{modelId}/{action…}` is percent-decoded (any
/// escape: `%3A`, `%2F`), checked to be a model id (ASCII letters, digits, `- . _ : /`, no
/// empty or dot-only part between `/`s) and written back in its one canonical encoding
/// (everything but `A–Z a–z 0–9 - . _ ~` as upper-case `%XX`: `:` is `%3A`, `/` is `%2F`).
/// That is how boto3 and the other AWS SDKs send it, what AWS decodes to the same id, and
/// what the SigV4 signature is computed over. The rest of the path is normalized as usual.
pub fn normalize_path_for(api: crate::Api, path: &str) -> Result<NormalizedPath, PathError> {
    if api != crate::Api::Bedrock {
        return normalize_path(path);
    }
    let Some(rest) = path.strip_prefix("/model/") else { return normalize_path(path) };
    let (raw_id, after) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, ""),
    };
    let bytes = raw_id.as_bytes();
    let mut id = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while let Some(&b) = bytes.get(index) {
        let byte = if b == b'%' {
            let decoded = bytes.get(index + 1..).and_then(escaped_byte).ok_or(PathError::MalformedEscape)?;
            index += 3;
            decoded
        } else {
            index += 1;
            b
        };
        if !is_bedrock_model_byte(byte) {
            return Err(PathError::BedrockModelId);
        }
        id.push(byte);
    }
    if id.split(|b| *b == b'/').any(|part| part.is_empty() || part.iter().all(|b| *b == b'.')) {
        return Err(PathError::BedrockModelId);
    }
    let after = if after.is_empty() { String::new() } else { normalize_path(after)?.into_string() };
    let mut out = String::with_capacity(path.len() + 2 * id.len());
    out.push_str("/model/");
    for byte in id {
        if is_unreserved(byte) {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push_str(&format!("{byte:02X}"));
        }
    }
    out.push_str(&after);
    Ok(NormalizedPath(out))
}

/// Decode a Bedrock model id segment of a [`NormalizedPath`] (canonically encoded:
/// every escape is a byte of the id, and the result is ASCII).
pub(crate) fn decode_model_segment(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while let Some(&b) = bytes.get(index) {
        if b == b'%' {
            out.push(bytes.get(index + 1..).and_then(escaped_byte)?);
            index += 3;
        } else {
            out.push(b);
            index += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Decode one `application/x-www-form-urlencoded` component (`+` is a space, `%XY` a
/// byte). `None` when an escape is malformed or the result is not UTF-8: such a
/// component has no single reading.
pub(crate) fn decode_form_component(component: &str) -> Option<String> {
    let bytes = component.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while let Some(&b) = bytes.get(index) {
        match b {
            b'%' => {
                out.push(bytes.get(index + 1..).and_then(escaped_byte)?);
                index += 3;
            }
            b'+' => {
                out.push(b' ');
                index += 1;
            }
            other => {
                out.push(other);
                index += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The decoded name of each parameter of `query` (`a=1&b&c=` → `a`, `b`, `c`), in order;
/// `None` for a name with no single reading (a malformed escape, or not UTF-8 once
/// decoded). Names are compared decoded, as the upstream will read them: `%6Bey` is `key`.
pub fn query_parameter_names(query: &str) -> impl Iterator<Item = Option<String>> + '_ {
    query.split('&').filter(|pair| !pair.is_empty()).map(|pair| {
        let name = pair.split_once('=').map_or(pair, |(name, _)| name);
        decode_form_component(name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legitimate_paths_are_kept_as_they_are() {
        for path in [
            "/",
            "/v1/chat/completions",
            "/v1/models/",
            "/openai/v1/chat/completions",
            "/api/v1/chat/completions",
            "/v1beta/models/gemini-2.5-pro:generateContent",
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
            "/v1beta/tunedModels/my-model-1:generateContent",
            "/openai/deployments/prod-4o/chat/completions",
            "/openai/deployments/gpt-4.1_mini~eu/embeddings",
            "/v1/files/file-abc123/content",
            "/v1/messages/batches/msgbatch_01/results",
            "/model/anthropic.claude-sonnet-4-5-20250929-v1:0/converse",
        ] {
            assert_eq!(normalize_path(path).map(NormalizedPath::into_string), Ok(path.to_owned()), "{path}");
        }
    }

    #[test]
    fn bedrock_model_ids_are_kept_in_their_one_encoding() {
        let cases = [
            (
                "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse",
                "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse",
            ),
            (
                "/model/anthropic.claude-3-haiku-20240307-v1:0/converse-stream",
                "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse-stream",
            ),
            ("/model/us.anthropic.claude-v1%3a0/invoke", "/model/us.anthropic.claude-v1%3A0/invoke"),
            (
                "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.meta.llama3-v1%3A0/invoke-with-response-stream",
                "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.meta.llama3-v1%3A0/invoke-with-response-stream",
            ),
            ("/model/amazon.nova-pro-v1%3A0/%63onverse", "/model/amazon.nova-pro-v1%3A0/converse"),
            ("/model/m%2Dx", "/model/m-x"),
        ];
        for (path, normal) in cases {
            assert_eq!(
                normalize_path_for(crate::Api::Bedrock, path).map(NormalizedPath::into_string),
                Ok(normal.to_owned()),
                "{path}"
            );
            let again = normalize_path_for(crate::Api::Bedrock, normal).map(NormalizedPath::into_string);
            assert_eq!(again, Ok(normal.to_owned()), "{normal} is its own normal form");
        }
        let refused = [
            ("/model/a%252Fb/converse", PathError::BedrockModelId),
            ("/model/a%20b/converse", PathError::BedrockModelId),
            ("/model/a%2F..%2Fb/converse", PathError::BedrockModelId),
            ("/model/%2Fb/converse", PathError::BedrockModelId),
            ("/model/a%40b/converse", PathError::BedrockModelId),
            ("/model/a%3/converse", PathError::MalformedEscape),
            ("/model/a/../converse", PathError::DotSegment),
            ("/model/a%3A0/x%3Ay", PathError::EncodedReserved(':')),
        ];
        for (path, error) in refused {
            assert_eq!(normalize_path_for(crate::Api::Bedrock, path), Err(error), "{path}");
        }
        // Other providers keep the strict rule.
        assert_eq!(
            normalize_path_for(crate::Api::OpenAi, "/model/a%3A0/converse"),
            Err(PathError::EncodedReserved(':'))
        );
    }

    #[test]
    fn encoded_unreserved_characters_are_decoded() {
        let cases = [
            ("/v1/chat/%63ompletions", "/v1/chat/completions"),
            ("/v1/models/gpt-4%2E1", "/v1/models/gpt-4.1"),
            ("/openai/deployments/prod%2d4o/chat/completions", "/openai/deployments/prod-4o/chat/completions"),
            ("/%7e%5F%41z", "/~_Az"),
        ];
        for (path, normal) in cases {
            assert_eq!(normalize_path(path).map(NormalizedPath::into_string), Ok(normal.to_owned()), "{path}");
        }
    }

    #[test]
    fn paths_without_a_single_reading_are_refused() {
        let cases = [
            ("", PathError::NotAbsolute),
            ("v1/models", PathError::NotAbsolute),
            ("/v1//models", PathError::EmptySegment),
            ("//evil.example/v1", PathError::EmptySegment),
            ("/v1/../admin", PathError::DotSegment),
            ("/v1/./models", PathError::DotSegment),
            ("/v1/...", PathError::DotSegment),
            ("/v1/..", PathError::DotSegment),
            ("/v1/%2e%2e/admin", PathError::DotSegment),
            ("/v1/%2E./admin", PathError::DotSegment),
            ("/v1/..;/admin", PathError::PathParameter),
            ("/v1/chat/completions;x=1", PathError::PathParameter),
            ("/v1/models@evil.example", PathError::At),
            ("/v1/x\\..", PathError::Backslash),
            ("/v1/\u{ff0e}\u{ff0e}/admin", PathError::NonAscii),
            ("/v1/caf\u{e9}", PathError::NonAscii),
            ("/v1/a b", PathError::Control),
            ("/v1/a\tb", PathError::Control),
            ("/v1/a\u{7f}", PathError::Control),
            ("/v1/{x}", PathError::Disallowed('{')),
            ("/v1/a|b", PathError::Disallowed('|')),
            ("/v1/a?b", PathError::Disallowed('?')),
            ("/v1/a#b", PathError::Disallowed('#')),
            ("/v1/%", PathError::MalformedEscape),
            ("/v1/%4", PathError::MalformedEscape),
            ("/v1/%zz", PathError::MalformedEscape),
            ("/v1/%+1", PathError::MalformedEscape),
            ("/v1%2fchat%2fcompletions", PathError::EncodedSeparator),
            ("/v1/x%5Cy", PathError::EncodedSeparator),
            ("/v1/x%252fy", PathError::EncodedPercent),
            ("/v1beta/models/gemini-2.5-pro%3AgenerateContent", PathError::EncodedReserved(':')),
            ("/v1beta/models/gemini-2.5-pro%3agenerateContent", PathError::EncodedReserved(':')),
            ("/v1/models%3F/chat/completions", PathError::EncodedReserved('?')),
            ("/v1/models%23/chat/completions", PathError::EncodedReserved('#')),
            ("/v1/models%40evil", PathError::EncodedReserved('@')),
            ("/v1/..%3B/admin", PathError::EncodedReserved(';')),
            ("/v1/a%20b", PathError::EncodedReserved(' ')),
            ("/v1/a%00", PathError::EncodedControl),
            ("/v1/a%0d%0aHost:x", PathError::EncodedControl),
            ("/v1/%c0%ae%c0%ae/admin", PathError::EncodedNonAscii),
            ("/v1/%ef%bc%8e%ef%bc%8e/admin", PathError::EncodedNonAscii),
            ("/v1/%e0%80%ae", PathError::EncodedNonAscii),
        ];
        for (path, error) in cases {
            assert_eq!(normalize_path(path), Err(error), "{path:?}");
            assert!(!error.to_string().is_empty());
        }
    }

    #[test]
    fn normal_form_is_a_fixed_point_and_never_grows() {
        // Every short string over an alphabet of the interesting characters: the
        // normalizer answers, and whatever it accepts is already normal.
        let alphabet = ["/", ".", "%2e", "%2E", "%2f", "%3a", "%41", "%", "a", ":", ";", "@", "\\", "~", "\u{ff0e}"];
        let mut inputs = vec![String::new()];
        let mut level = vec![String::new()];
        for _ in 0..4 {
            level = level.iter().flat_map(|input| alphabet.map(|piece| format!("{input}{piece}"))).collect();
            inputs.extend(level.iter().cloned());
        }
        let mut accepted = 0;
        for input in inputs {
            for candidate in [input.clone(), format!("/{input}")] {
                if let Ok(normal) = normalize_path(&candidate) {
                    accepted += 1;
                    assert!(normal.as_str().len() <= candidate.len(), "{candidate:?}");
                    assert!(!normal.as_str().contains('%'), "{candidate:?}");
                    assert_eq!(normalize_path(normal.as_str()).as_ref(), Ok(&normal), "{candidate:?}");
                }
            }
        }
        assert!(accepted > 100, "the alphabet exercises accepted paths too ({accepted})");
    }

    #[test]
    fn query_parameter_names_are_decoded() {
        let names: Vec<Option<String>> = query_parameter_names("alt=sse&%6Bey=x&ke%79&k+ey=1&&%zz=1&%ff=2").collect();
        let expected = [Some("alt"), Some("key"), Some("key"), Some("k ey"), None, None];
        assert_eq!(names, expected.map(|n| n.map(str::to_owned)));
        assert_eq!(decode_form_component("%73se"), Some("sse".to_owned()));
    }
}
