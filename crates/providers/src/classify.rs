//! What a request is: capability (from the endpoint), mode, and model — read from the
//! request itself, never from a caller's claim.

use byok_domain::{Capability, Mode};

use crate::registry::Api;

/// The classification of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    /// From the endpoint.
    pub capability: Capability,
    /// `stream` when the request asks to stream, `batch` for batch endpoints.
    pub mode: Mode,
    /// The model as the request names it (JSON `model`, or the path for Gemini and
    /// Azure deployments).
    pub model: Option<String>,
}

/// Classify a request to `api` with upstream `path` (after the `/{provider}` prefix),
/// `query` and `body` (the whole request body; non-JSON bodies have no model).
pub fn classify(api: Api, path: &str, query: Option<&str>, body: &[u8]) -> Classification {
    let json = parse_object(body);
    let body_model = json.as_ref().and_then(|j| j.get("model")).and_then(|m| m.as_str()).map(str::to_owned);
    let body_stream = json.as_ref().and_then(|j| j.get("stream")).and_then(serde_json::Value::as_bool) == Some(true);
    match api {
        Api::OpenAi | Api::Bedrock => openai(path, body_model, body_stream),
        Api::AzureOpenAi => azure(path, body_model, body_stream),
        Api::Anthropic => anthropic(path, body_model, body_stream),
        Api::Gemini => gemini(path, query),
    }
}

fn parse_object(body: &[u8]) -> Option<serde_json::Map<String, serde_json::Value>> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace())?;
    if *first != b'{' {
        return None;
    }
    match serde_json::from_slice::<serde_json::Value>(body).ok()? {
        serde_json::Value::Object(map) => Some(map),
        _ => None,
    }
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

/// The endpoint after the API version segment: `/openai/v1/chat/completions` →
/// `chat/completions`.
fn after_version<'a>(path: &'a str, versions: &[&str]) -> Option<&'a str> {
    let mut segments = path.trim_start_matches('/').split('/');
    let mut offset = 1;
    for segment in segments.by_ref() {
        offset += segment.len() + 1;
        if versions.contains(&segment) {
            return Some(path.get(offset.min(path.len())..).unwrap_or(""));
        }
    }
    None
}

fn openai_capability(endpoint: &str) -> Capability {
    let first = endpoint.split('/').next().unwrap_or("");
    match first {
        "chat" => Capability::Chat,
        "responses" => Capability::Responses,
        "completions" => Capability::Completions,
        "embeddings" => Capability::Embeddings,
        "images" => Capability::Images,
        "audio" => Capability::Audio,
        "moderations" => Capability::Moderations,
        "files" | "uploads" => Capability::Files,
        "batches" => Capability::Batches,
        "models" => Capability::Models,
        "realtime" => Capability::Realtime,
        _ => Capability::Other,
    }
}

fn openai(path: &str, model: Option<String>, stream: bool) -> Classification {
    let capability = after_version(path, &["v1"]).map_or(Capability::Other, openai_capability);
    Classification { capability, mode: mode(stream, capability), model }
}

fn azure(path: &str, body_model: Option<String>, stream: bool) -> Classification {
    // /openai/deployments/{deployment}/chat/completions — the deployment stands for the model.
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if let ["openai", "deployments", deployment, rest @ ..] = segments.as_slice() {
        let capability = openai_capability(&rest.join("/"));
        return Classification {
            capability,
            mode: mode(stream, capability),
            model: Some((*deployment).to_owned()).filter(|d| !d.is_empty()),
        };
    }
    openai(path, body_model, stream)
}

fn anthropic(path: &str, model: Option<String>, stream: bool) -> Classification {
    let endpoint = after_version(path, &["v1"]).unwrap_or("");
    let capability = if endpoint == "messages" {
        Capability::Chat
    } else if endpoint.starts_with("messages/count_tokens") {
        Capability::CountTokens
    } else if endpoint.starts_with("messages/batches") {
        Capability::Batches
    } else if endpoint == "complete" {
        Capability::Completions
    } else if endpoint.starts_with("models") {
        Capability::Models
    } else if endpoint.starts_with("files") {
        Capability::Files
    } else {
        Capability::Other
    };
    Classification { capability, mode: mode(stream, capability), model }
}

fn gemini(path: &str, query: Option<&str>) -> Classification {
    let endpoint = after_version(path, &["v1", "v1beta", "v1alpha"]).unwrap_or("");
    let alt_sse = query.is_some_and(|q| q.split('&').any(|pair| pair == "alt=sse"));
    // models/{model}:{method}
    let (model, method) = match endpoint.strip_prefix("models/") {
        Some(rest) => match rest.split_once(':') {
            Some((model, method)) => (Some(model.to_owned()), method),
            None => (None, ""),
        },
        None => (None, ""),
    };
    let capability = match method {
        "generateContent" | "streamGenerateContent" => Capability::Chat,
        "embedContent" | "batchEmbedContents" => Capability::Embeddings,
        "countTokens" => Capability::CountTokens,
        "batchGenerateContent" => Capability::Batches,
        "" if endpoint.starts_with("models") => Capability::Models,
        "" if endpoint.starts_with("files") => Capability::Files,
        _ => Capability::Other,
    };
    let stream = method == "streamGenerateContent" || alt_sse;
    Classification { capability, mode: mode(stream, capability), model: model.filter(|m| !m.is_empty()) }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let c = classify(api, path, query, body);
            assert_eq!((c.capability, c.mode, c.model.as_deref()), (capability, mode, model), "{api:?} {path}");
        }
    }
}
