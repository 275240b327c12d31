//! Path normalization and request classification, as the data plane runs them on a call.
//!
//! Input: `<request target>\n<body>` (no newline: the whole input is the target, the
//! body is empty).
//!
//! Properties:
//! * nothing panics (routing, normalization, query parameter names, classification,
//!   model-family lookup);
//! * a normalized path is what `NormalizedPath` promises (starts with `/`; only ASCII
//!   letters, digits, `-._~/:` and `!$&'()*+,=`, and for Bedrock `%XX` escapes in the
//!   model id of `/model/{modelId}/` alone; no dot-only or empty segment but a trailing
//!   one), no longer than the input (a Bedrock model id may triple: `:` becomes `%3A`),
//!   and normalizing it again gives it back;
//! * a target the `route` phase accepts has such a path, appended to an upstream origin
//!   it stays a path of that origin (the request never chooses the host), and routing
//!   `/{provider}{path}?{query}` again gives the same route;
//! * classification is a function of the request (same answer twice), `batch` mode goes
//!   with the `batches` capability and only with it, and a model is never empty, at most
//!   `MAX_MODEL_NAME_LEN` bytes and free of control characters.
#![no_main]

use std::sync::OnceLock;

use axum::http::Uri;
use byok_domain::{Capability, Mode, ModelFamilyRegistry};
use byok_providers::{
    classify, normalize_path, normalize_path_for, query_parameter_names, Api, NormalizedPath, MAX_MODEL_NAME_LEN,
};
use byok_proxy::fuzzing;
use libfuzzer_sys::fuzz_target;

const APIS: [Api; 5] = [Api::OpenAi, Api::AzureOpenAi, Api::Anthropic, Api::Gemini, Api::Bedrock];

/// Origins an upstream path is appended to: a registry default, a port, an admin-set
/// base URL with a path, and a plain-http operator override.
const ORIGINS: [(&str, &str); 4] = [
    ("https://api.openai.com", "api.openai.com"),
    ("https://generativelanguage.googleapis.com:443", "generativelanguage.googleapis.com:443"),
    ("https://acme.openai.azure.com/base", "acme.openai.azure.com"),
    ("http://127.0.0.1:9000", "127.0.0.1:9000"),
];

fn families() -> &'static ModelFamilyRegistry {
    static FAMILIES: OnceLock<ModelFamilyRegistry> = OnceLock::new();
    FAMILIES.get_or_init(ModelFamilyRegistry::seeded)
}

fn check_classification(api: Api, path: &NormalizedPath, query: Option<&str>, body: &[u8]) {
    let result = classify(api, path, query, body);
    assert_eq!(result, classify(api, path, query, body), "classification is not a function of the request");
    let Ok(classification) = result else { return };
    assert_eq!(
        classification.mode == Mode::Batch,
        classification.capability == Capability::Batches,
        "batch mode without the batches capability (or the reverse): {classification:?}"
    );
    if let Some(model) = &classification.model {
        assert!(!model.is_empty(), "an empty model: {path} {body:?}");
        assert!(model.len() <= MAX_MODEL_NAME_LEN, "a model of {} bytes", model.len());
        assert!(!model.chars().any(char::is_control), "a control character in the model {model:?}");
        let _ = families().family_of(model);
    }
}

/// What `NormalizedPath` promises, and that normalizing is idempotent.
fn check_normal_form(api: Api, input: &str, path: &NormalizedPath) {
    let text = path.as_str();
    assert!(text.starts_with('/'), "{text:?} does not start with '/'");
    // Only a Bedrock model id is kept encoded: the segment after `/model/`.
    let (model_id, plain) = match (api, text.strip_prefix("/model/")) {
        (Api::Bedrock, Some(rest)) => {
            let end = rest.find('/').unwrap_or(rest.len());
            (&rest[..end], format!("/model/x{}", &rest[end..]))
        }
        _ => ("", text.to_owned()),
    };
    if model_id.is_empty() {
        assert!(text.len() <= input.len(), "{input:?} grew into {text:?}");
    } else {
        assert!(text.len() <= 3 * input.len(), "{input:?} grew into {text:?}");
        let bytes = model_id.as_bytes();
        let mut at = 0;
        while at < bytes.len() {
            if bytes[at] == b'%' {
                let hex = &model_id[at + 1..at + 3];
                assert!(
                    hex.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)),
                    "{text:?}: escape {hex}"
                );
                let byte = u8::from_str_radix(hex, 16).unwrap();
                assert!(!byte.is_ascii_alphanumeric() && !b"-._~".contains(&byte), "{text:?}: needless escape {hex}");
                at += 3;
            } else {
                assert!(
                    bytes[at].is_ascii_alphanumeric() || b"-._~".contains(&bytes[at]),
                    "{text:?}: raw {}",
                    bytes[at]
                );
                at += 1;
            }
        }
    }
    assert!(
        plain.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~/:!$&'()*+,=".contains(&b)),
        "{text:?} holds a character a normal form may not"
    );
    let segments: Vec<&str> = plain.split('/').skip(1).collect();
    for (index, segment) in segments.iter().enumerate() {
        assert!(segment.is_empty() || !segment.bytes().all(|b| b == b'.'), "dot segment in {text:?} (from {input:?})");
        assert!(!segment.is_empty() || index + 1 == segments.len(), "empty segment in {text:?}");
    }
    assert_eq!(normalize_path_for(api, text).as_ref(), Ok(path), "normalizing {text:?} again changed it");
}

fn check_route(target: &[u8], body: &[u8]) {
    let Some(routed) = fuzzing::route(target) else { return };
    let Ok((spec, path, query)) = routed else { return };

    // The phase sends the path in normal form.
    let normal =
        normalize_path_for(spec.api, &path).unwrap_or_else(|e| panic!("routed path {path:?} is not normal: {e}"));
    assert_eq!(normal.as_str(), path, "the routed path is not its own normal form");
    check_normal_form(spec.api, &path, &normal);

    // Appended to an origin (as the outbound request is built), the path never moves the
    // request to another host, and the URI parser leaves it as it is.
    for (origin, authority) in ORIGINS {
        let mut outbound = format!("{origin}{path}");
        if let Some(query) = &query {
            outbound.push('?');
            outbound.push_str(query);
        }
        if let Ok(uri) = outbound.parse::<Uri>() {
            assert_eq!(uri.authority().map(|a| a.as_str()), Some(authority), "{outbound:?} changed the upstream host");
            assert!(uri.path().ends_with(path.as_str()), "{outbound:?}: the path became {:?}", uri.path());
        }
    }

    // Routing the routed request again gives the same route.
    let mut again = format!("/{}{path}", spec.id);
    if let Some(query) = &query {
        again.push('?');
        again.push_str(query);
    }
    match fuzzing::route(again.as_bytes()) {
        Some(Ok((spec2, path2, query2))) => {
            assert_eq!((spec2.id, &path2, &query2), (spec.id, &path, &query), "routing {again:?} again moved it")
        }
        other => panic!("routing {again:?} again failed: {other:?}"),
    }

    check_classification(spec.api, &normal, query.as_deref(), body);
}

fuzz_target!(|data: &[u8]| {
    let (target, body) = match data.iter().position(|b| *b == b'\n') {
        Some(newline) => (&data[..newline], &data[newline + 1..]),
        None => (data, &[][..]),
    };
    check_route(target, body);

    // Classification on its own, with any path text (not only what routing lets through).
    let text = String::from_utf8_lossy(target);
    let (path, query) = match text.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (&*text, None),
    };
    if let Some(query) = query {
        let names: Vec<Option<String>> = query_parameter_names(query).collect();
        assert!(names.len() <= query.split('&').count(), "more parameter names than parameters in {query:?}");
    }
    if let Ok(normal) = normalize_path(path) {
        check_normal_form(Api::OpenAi, path, &normal);
        for api in APIS {
            check_classification(api, &normal, query, body);
        }
    }
    if let Ok(normal) = normalize_path_for(Api::Bedrock, path) {
        check_normal_form(Api::Bedrock, path, &normal);
        check_classification(Api::Bedrock, &normal, query, body);
    }
});
