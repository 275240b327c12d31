//! Which provider and endpoint a request's method and path address.

use axum::http::{HeaderMap, Method};

use crate::bedrock::{self, BedrockEndpoint};
use crate::record::Provider;

/// An OpenAI-shaped endpoint (OpenAI, the OpenAI-compatible providers, Azure OpenAI).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum OpenAiEndpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    Responses,
    ListModels,
    GetModel(String),
}

/// An Anthropic endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum AnthropicEndpoint {
    Messages,
    CountTokens,
    ListModels,
}

/// A Gemini endpoint; the model is the path's `{model}` segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum GeminiEndpoint {
    GenerateContent(String),
    StreamGenerateContent(String),
    EmbedContent(String),
    BatchEmbedContents(String),
    CountTokens(String),
    ListModels,
    GetModel(String),
}

/// Where a request goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    OpenAi(OpenAiEndpoint),
    /// Azure OpenAI: a deployment's endpoint, or (without a deployment) the resource's model
    /// listing `GET /openai/models[/{id}]`.
    Azure {
        deployment: Option<String>,
        endpoint: OpenAiEndpoint,
    },
    Anthropic(AnthropicEndpoint),
    Gemini(GeminiEndpoint),
    Bedrock(BedrockEndpoint),
    /// A path of `provider`'s family (or of none: [`Provider::Unknown`]) that the mock does
    /// not serve.
    NotFound(Provider),
}

impl Route {
    pub(crate) fn provider(&self) -> Provider {
        match self {
            Route::OpenAi(_) => Provider::OpenAi,
            Route::Azure { .. } => Provider::AzureOpenAi,
            Route::Anthropic(_) => Provider::Anthropic,
            Route::Gemini(_) => Provider::Gemini,
            Route::Bedrock(_) => Provider::Bedrock,
            Route::NotFound(provider) => *provider,
        }
    }
}

/// Classifies a request.
///
/// - `/model/{modelId}/…` is Bedrock;
/// - `/v1beta/…` and `/v1/models/{model}:{action}` are Gemini;
/// - `/openai/deployments/{deployment}/…` and `/openai/models[/{id}]` are Azure OpenAI;
/// - `/v1/messages…` is Anthropic, and so is `GET /v1/models` when the request carries an
///   `anthropic-version` or `x-api-key` header (both providers list models there);
/// - anything else with a `/v1/` segment is the OpenAI family, whatever path comes before
///   `/v1/` (Groq's `/openai/v1`, OpenRouter's `/api/v1`, …).
pub(crate) fn classify(method: &Method, path: &str, headers: &HeaderMap) -> Route {
    if let Some(rest) = path.strip_prefix("/model/") {
        return bedrock::endpoint(method, rest).map_or(Route::NotFound(Provider::Bedrock), Route::Bedrock);
    }
    if let Some(rest) = path.strip_prefix("/v1beta/") {
        return gemini(method, rest);
    }
    if let Some(rest) = path.strip_prefix("/openai/deployments/") {
        return azure(method, rest);
    }
    if path == "/openai/models" || path.starts_with("/openai/models/") {
        return azure_models(method, &path["/openai/".len()..]);
    }
    if path == "/v1/messages" || path.starts_with("/v1/messages/") {
        return anthropic(method, path);
    }
    if path == "/v1/models" && (headers.contains_key("anthropic-version") || headers.contains_key("x-api-key")) {
        return anthropic(method, path);
    }
    if let Some(rest) = path.strip_prefix("/v1/models/").filter(|rest| method == Method::POST && rest.contains(':')) {
        if let Route::Gemini(endpoint) = gemini_action(method, rest) {
            return Route::Gemini(endpoint);
        }
    }
    match path.find("/v1/") {
        Some(index) => openai(method, &path[index + "/v1/".len()..]),
        None => Route::NotFound(Provider::Unknown),
    }
}

fn openai_endpoint(method: &Method, rest: &str) -> Option<OpenAiEndpoint> {
    let rest = rest.trim_end_matches('/');
    match (method, rest) {
        (&Method::POST, "chat/completions") => Some(OpenAiEndpoint::ChatCompletions),
        (&Method::POST, "completions") => Some(OpenAiEndpoint::Completions),
        (&Method::POST, "embeddings") => Some(OpenAiEndpoint::Embeddings),
        (&Method::POST, "responses") => Some(OpenAiEndpoint::Responses),
        (&Method::GET, "models") => Some(OpenAiEndpoint::ListModels),
        (&Method::GET, _) => {
            rest.strip_prefix("models/").filter(|id| !id.is_empty()).map(|id| OpenAiEndpoint::GetModel(id.to_owned()))
        }
        _ => None,
    }
}

fn openai(method: &Method, rest: &str) -> Route {
    openai_endpoint(method, rest).map_or(Route::NotFound(Provider::OpenAi), Route::OpenAi)
}

fn azure(method: &Method, rest: &str) -> Route {
    let Some((deployment, endpoint)) = rest.split_once('/') else {
        return Route::NotFound(Provider::AzureOpenAi);
    };
    match openai_endpoint(method, endpoint) {
        Some(
            endpoint @ (OpenAiEndpoint::ChatCompletions | OpenAiEndpoint::Completions | OpenAiEndpoint::Embeddings),
        ) if !deployment.is_empty() => Route::Azure { deployment: Some(deployment.to_owned()), endpoint },
        _ => Route::NotFound(Provider::AzureOpenAi),
    }
}

/// Azure OpenAI's model listing: `rest` is the path after `/openai/`.
fn azure_models(method: &Method, rest: &str) -> Route {
    match openai_endpoint(method, rest) {
        Some(endpoint @ (OpenAiEndpoint::ListModels | OpenAiEndpoint::GetModel(_))) => {
            Route::Azure { deployment: None, endpoint }
        }
        _ => Route::NotFound(Provider::AzureOpenAi),
    }
}

fn anthropic(method: &Method, path: &str) -> Route {
    match (method, path) {
        (&Method::POST, "/v1/messages") => Route::Anthropic(AnthropicEndpoint::Messages),
        (&Method::POST, "/v1/messages/count_tokens") => Route::Anthropic(AnthropicEndpoint::CountTokens),
        (&Method::GET, "/v1/models") => Route::Anthropic(AnthropicEndpoint::ListModels),
        _ => Route::NotFound(Provider::Anthropic),
    }
}

fn gemini(method: &Method, rest: &str) -> Route {
    match (method, rest) {
        (&Method::GET, "models") => Route::Gemini(GeminiEndpoint::ListModels),
        _ => match rest.strip_prefix("models/") {
            Some(model_and_action) => gemini_action(method, model_and_action),
            None => Route::NotFound(Provider::Gemini),
        },
    }
}

/// `{model}:{action}` (POST) or `{model}` (GET) after `models/`.
fn gemini_action(method: &Method, rest: &str) -> Route {
    let endpoint = match (method, rest.split_once(':')) {
        (&Method::POST, Some((model, action))) if !model.is_empty() => {
            let model = model.to_owned();
            match action {
                "generateContent" => Some(GeminiEndpoint::GenerateContent(model)),
                "streamGenerateContent" => Some(GeminiEndpoint::StreamGenerateContent(model)),
                "embedContent" => Some(GeminiEndpoint::EmbedContent(model)),
                "batchEmbedContents" => Some(GeminiEndpoint::BatchEmbedContents(model)),
                "countTokens" => Some(GeminiEndpoint::CountTokens(model)),
                _ => None,
            }
        }
        (&Method::GET, None) if !rest.is_empty() && !rest.contains('/') => {
            Some(GeminiEndpoint::GetModel(rest.to_owned()))
        }
        _ => None,
    };
    endpoint.map_or(Route::NotFound(Provider::Gemini), Route::Gemini)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_paths() {
        let anthropic_headers = {
            let mut headers = HeaderMap::new();
            headers.insert("anthropic-version", axum::http::HeaderValue::from_static("2023-06-01"));
            headers
        };
        let none = HeaderMap::new();
        let cases: &[(Method, &str, &HeaderMap, Route)] = &[
            (Method::POST, "/v1/chat/completions", &none, Route::OpenAi(OpenAiEndpoint::ChatCompletions)),
            (Method::POST, "/openai/v1/chat/completions", &none, Route::OpenAi(OpenAiEndpoint::ChatCompletions)),
            (Method::POST, "/api/v1/embeddings", &none, Route::OpenAi(OpenAiEndpoint::Embeddings)),
            (Method::GET, "/v1/models", &none, Route::OpenAi(OpenAiEndpoint::ListModels)),
            (Method::GET, "/v1/models/gpt-4o", &none, Route::OpenAi(OpenAiEndpoint::GetModel("gpt-4o".into()))),
            (Method::GET, "/v1/models", &anthropic_headers, Route::Anthropic(AnthropicEndpoint::ListModels)),
            (Method::POST, "/v1/messages", &none, Route::Anthropic(AnthropicEndpoint::Messages)),
            (Method::POST, "/v1/messages/batches", &none, Route::NotFound(Provider::Anthropic)),
            (
                Method::POST,
                "/v1beta/models/gemini-2.0-flash:streamGenerateContent",
                &none,
                Route::Gemini(GeminiEndpoint::StreamGenerateContent("gemini-2.0-flash".into())),
            ),
            (
                Method::POST,
                "/v1/models/gemini-2.0-flash:generateContent",
                &none,
                Route::Gemini(GeminiEndpoint::GenerateContent("gemini-2.0-flash".into())),
            ),
            (Method::POST, "/v1beta/models/gemini-2.0-flash:frobnicate", &none, Route::NotFound(Provider::Gemini)),
            (
                Method::POST,
                "/openai/deployments/my-gpt/chat/completions",
                &none,
                Route::Azure { deployment: Some("my-gpt".into()), endpoint: OpenAiEndpoint::ChatCompletions },
            ),
            (
                Method::GET,
                "/openai/models",
                &none,
                Route::Azure { deployment: None, endpoint: OpenAiEndpoint::ListModels },
            ),
            (
                Method::GET,
                "/openai/models/gpt-4o",
                &none,
                Route::Azure { deployment: None, endpoint: OpenAiEndpoint::GetModel("gpt-4o".into()) },
            ),
            (Method::POST, "/openai/models", &none, Route::NotFound(Provider::AzureOpenAi)),
            (Method::POST, "/openai/deployments/my-gpt/responses", &none, Route::NotFound(Provider::AzureOpenAi)),
            (Method::GET, "/v1/chat/completions", &none, Route::NotFound(Provider::OpenAi)),
            (Method::GET, "/healthz", &none, Route::NotFound(Provider::Unknown)),
            (
                Method::POST,
                "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse",
                &none,
                Route::Bedrock(BedrockEndpoint::Converse("anthropic.claude-3-haiku-20240307-v1:0".into())),
            ),
            (
                Method::POST,
                "/model/us.amazon.nova-pro-v1%3A0/invoke-with-response-stream",
                &none,
                Route::Bedrock(BedrockEndpoint::InvokeStream("us.amazon.nova-pro-v1:0".into())),
            ),
            (Method::POST, "/model/m/frobnicate", &none, Route::NotFound(Provider::Bedrock)),
        ];
        for (method, path, headers, expected) in cases {
            assert_eq!(&classify(method, path, headers), expected, "{method} {path}");
        }
    }
}
