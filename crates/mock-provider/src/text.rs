//! Deterministic content: token counts, replies, embeddings and key masking.

use serde_json::{Map, Value};

/// The mock's tokenizer: one token per whitespace-separated word.
pub(crate) fn count_tokens(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// The words of the reply to `prompt`, cut to `max_tokens` words; the flag says whether it
/// was cut.
pub(crate) fn reply_words(prompt: &str, max_tokens: Option<u64>) -> (Vec<String>, bool) {
    let mut words: Vec<String> = format!("mock reply to: {prompt}").split_whitespace().map(str::to_owned).collect();
    let limit = max_tokens.map_or(usize::MAX, |max| usize::try_from(max).unwrap_or(usize::MAX));
    let truncated = words.len() > limit;
    words.truncate(limit);
    (words, truncated)
}

/// The pieces a streamed reply is sent in: the words, each after the first with a leading
/// space, so that the pieces concatenate to `words.join(" ")`.
pub(crate) fn stream_pieces(words: &[String]) -> Vec<String> {
    words.iter().enumerate().map(|(index, word)| if index == 0 { word.clone() } else { format!(" {word}") }).collect()
}

/// The text of a message `content` in the shapes the providers accept: a string, or an array
/// of parts of which those with a string `text` count (OpenAI `text`/`input_text`, Anthropic
/// `text` blocks, Gemini parts).
pub(crate) fn content_text(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|part| match part {
                Value::String(text) => Some(text.as_str()),
                other => other.get("text").and_then(Value::as_str),
            })
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// A deterministic embedding of `text`: `dims` values in `[-1, 1)` from a hash of the text.
pub(crate) fn embedding(text: &str, dims: usize) -> Vec<f32> {
    // FNV-1a seeds an xorshift generator; 24-bit mantissas keep every value exact in f32.
    let mut state = text
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
        | 1;
    (0..dims)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let unit = (state >> 40) as f32 / (1_u64 << 24) as f32;
            unit * 2.0 - 1.0
        })
        .collect()
}

/// An embedding as OpenAI's `encoding_format: "base64"` sends it: little-endian f32s.
pub(crate) fn embedding_base64(values: &[f32]) -> String {
    use base64::Engine as _;
    let bytes: Vec<u8> = values.iter().flat_map(|value| value.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A wrong key as OpenAI quotes it in a 401: the first 8 and last 4 characters with one `*`
/// for each character between. Like OpenAI, short keys (12 characters or fewer) are quoted
/// whole.
pub(crate) fn mask_key(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 12 {
        return key.to_owned();
    }
    let head: String = chars.iter().take(8).collect();
    let tail: String = chars.iter().skip(chars.len() - 4).collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 12))
}

/// Whether the boolean at `path` (object keys from the top) is `true`.
pub(crate) fn flag(request: &Map<String, Value>, path: &[&str]) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    rest.iter()
        .fold(request.get(*first), |value, key| value.and_then(|v| v.get(*key)))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// The first of `names` that is an unsigned integer.
pub(crate) fn number(request: &Map<String, Value>, names: &[&str]) -> Option<u64> {
    names.iter().find_map(|name| request.get(*name).and_then(Value::as_u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_like_openai() {
        // A classic 51-character key: OpenAI printed `sk-zhj0s` + 39 stars + `CMuq`.
        let long_key = format!("sk-zhj0s{}CMuq", "A".repeat(39));
        let long_masked = format!("sk-zhj0s{}CMuq", "*".repeat(39));
        for (key, masked) in [
            (long_key.as_str(), long_masked.as_str()),
            ("sk-1234567890", "sk-12345*7890"),
            ("API_KEY", "API_KEY"),
            ("sk-123456789", "sk-123456789"),
        ] {
            assert_eq!(mask_key(key), masked, "{key}");
        }
    }

    #[test]
    fn reply_is_cut_to_max_tokens() {
        let (words, cut) = reply_words("one two three", Some(4));
        assert_eq!(words.join(" "), "mock reply to: one");
        assert!(cut);
        let (words, cut) = reply_words("one", None);
        assert_eq!(words, ["mock", "reply", "to:", "one"]);
        assert!(!cut);
        assert_eq!(stream_pieces(&words).concat(), "mock reply to: one");
    }

    #[test]
    fn embeddings_are_deterministic_and_bounded() {
        let first = embedding("hello", 16);
        assert_eq!(first, embedding("hello", 16));
        assert_ne!(first, embedding("hello!", 16));
        assert!(first.iter().all(|value| (-1.0..1.0).contains(value)));
    }
}
