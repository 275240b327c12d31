//! Per-key faults: rate limits with the providers' real headers, throttled, revoked,
//! forbidden and failing keys, in each provider's shape; and the model listings' key rules.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use byok_mock_provider::{KeyFault, MockProvider, ScriptedResponse};
use common::{assert_shape, client, start, Family, ANTHROPIC_KEY, AZURE_KEY, GEMINI_KEY, OPENAI_KEY};
use serde_json::{json, Value};

/// A response, read whole.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    async fn read(response: reqwest::Response) -> Answer {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.text().await.expect("body is read");
        Answer { status, headers, body }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|value| value.to_str().expect("header is text"))
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|error| panic!("body is JSON ({error}): {}", self.body))
    }

    fn retry_after(&self) -> u64 {
        self.header("retry-after").expect("retry-after is sent").parse().expect("retry-after is whole seconds")
    }
}

async fn chat(mock: &MockProvider, family: Family, stream: bool) -> Answer {
    Answer::read(family.send_chat(mock, Some(family.key()), "one two three", stream).await).await
}

/// Parses a duration as OpenAI writes `x-ratelimit-reset-*` (Go's format: `20ms`, `1m30.5s`).
fn parse_go_duration(text: &str) -> Duration {
    assert!(!text.is_empty(), "empty duration");
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let number_end = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
        let (number, tail) = rest.split_at(number_end);
        let number: f64 = number.parse().unwrap_or_else(|_| panic!("bad number in duration {text:?}"));
        let unit_end = tail.find(|c: char| c.is_ascii_digit()).unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let seconds = match unit {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            other => panic!("unknown unit {other:?} in duration {text:?}"),
        };
        total += Duration::from_secs_f64(number * seconds);
        rest = tail;
    }
    total
}

/// Parses an RFC 3339 UTC timestamp to the second (`2026-01-01T00:00:00Z`) into seconds since
/// the Unix epoch.
fn parse_rfc3339(text: &str) -> u64 {
    let bytes = text.as_bytes();
    assert_eq!(text.len(), 20, "RFC 3339 timestamp to the second: {text:?}");
    assert!(bytes[4] == b'-' && bytes[7] == b'-' && bytes[10] == b'T' && bytes[19] == b'Z', "{text:?}");
    let field = |range: std::ops::Range<usize>| -> i64 { text[range].parse().expect("digits") };
    let (year, month, day) = (field(0..4), field(5..7), field(8..10));
    let (hour, minute, second) = (field(11..13), field(14..16), field(17..19));
    // Howard Hinnant's days_from_civil.
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    u64::try_from(days * 86_400 + hour * 3600 + minute * 60 + second).expect("after 1970")
}

fn now_seconds() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

#[test]
fn the_test_parsers_read_known_values() {
    assert_eq!(parse_go_duration("6m0s"), Duration::from_secs(360));
    assert_eq!(parse_go_duration("20ms"), Duration::from_millis(20));
    assert_eq!(parse_go_duration("1m30.5s"), Duration::from_millis(90_500));
    assert_eq!(parse_rfc3339("2000-02-29T00:00:00Z"), 951_782_400);
    assert_eq!(parse_rfc3339("1970-01-01T00:00:01Z"), 1);
}

const RATE_HEADERS_OPENAI: [&str; 3] =
    ["x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests"];
const RATE_HEADERS_ANTHROPIC: [&str; 3] = [
    "anthropic-ratelimit-requests-limit",
    "anthropic-ratelimit-requests-remaining",
    "anthropic-ratelimit-requests-reset",
];

#[tokio::test]
async fn each_fault_answers_in_openai_shape() {
    let mock = start().await;
    let openai_error = |message: Value, kind: &str, code: Value| json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
    let masked = format!("sk-test-{}ghij", "*".repeat(OPENAI_KEY.len() - 12));
    let cases: Vec<(KeyFault, u16, Value)> = vec![
        (
            KeyFault::Revoked,
            401,
            openai_error(
                json!(format!(
                    "Incorrect API key provided: {masked}. You can find your API key at https://platform.openai.com/account/api-keys."
                )),
                "invalid_request_error",
                json!("invalid_api_key"),
            ),
        ),
        (KeyFault::Forbidden, 403, openai_error(json!("<string>"), "invalid_request_error", json!("permission_denied"))),
        (KeyFault::Status(500), 500, openai_error(json!("<string>"), "server_error", json!(null))),
        (KeyFault::Status(502), 502, openai_error(json!("<string>"), "server_error", json!(null))),
        (
            KeyFault::Status(503),
            503,
            openai_error(
                json!("The engine is currently overloaded, please try again later."),
                "server_error",
                json!(null),
            ),
        ),
        (KeyFault::Status(504), 504, openai_error(json!("<string>"), "server_error", json!(null))),
        (
            KeyFault::Status(529),
            529,
            openai_error(
                json!("The engine is currently overloaded, please try again later."),
                "server_error",
                json!(null),
            ),
        ),
        (
            KeyFault::Throttled { retry_after: Duration::from_secs(30) },
            429,
            openai_error(json!("<string>"), "requests", json!("rate_limit_exceeded")),
        ),
        (KeyFault::ThrottledNoHint, 429, openai_error(json!("<string>"), "requests", json!("rate_limit_exceeded"))),
    ];
    for (fault, status, shape) in cases {
        mock.set_key_fault(OPENAI_KEY, fault.clone());
        let answer = chat(&mock, Family::OpenAi, false).await;
        assert_eq!(answer.status, status, "{fault:?}: {}", answer.body);
        assert_eq!(answer.header("content-type"), Some("application/json"), "{fault:?}");
        assert_shape(&answer.json(), &shape, &format!("{fault:?}"));
        match fault {
            KeyFault::Throttled { .. } => {
                let retry_after = answer.retry_after();
                assert!((29..=30).contains(&retry_after), "retry-after {retry_after}");
                let reset = parse_go_duration(answer.header("x-ratelimit-reset-requests").unwrap());
                assert!(reset > Duration::from_secs(29) && reset <= Duration::from_secs(30), "{reset:?}");
                assert_eq!(answer.header("x-ratelimit-remaining-requests"), Some("0"));
                let message = answer.json()["error"]["message"].as_str().unwrap().to_owned();
                assert!(message.starts_with("Rate limit reached for requests"), "{message}");
                assert!(message.contains("Please try again in"), "{message}");
            }
            _ => {
                assert!(answer.header("retry-after").is_none(), "{fault:?}");
                assert!(answer.header("x-ratelimit-reset-requests").is_none(), "{fault:?}");
            }
        }
    }
    mock.clear_key_fault(OPENAI_KEY);
    assert_eq!(chat(&mock, Family::OpenAi, false).await.status, 200);
}

#[tokio::test]
async fn each_fault_answers_in_anthropic_shape() {
    let mock = start().await;
    let anthropic_error =
        |kind: &str, message: &str| json!({"type": "error", "error": {"type": kind, "message": message}});
    let cases: Vec<(KeyFault, u16, Value)> = vec![
        (KeyFault::Revoked, 401, anthropic_error("authentication_error", "invalid x-api-key")),
        (KeyFault::Forbidden, 403, anthropic_error("permission_error", "<string>")),
        (KeyFault::Status(500), 500, anthropic_error("api_error", "<string>")),
        (KeyFault::Status(502), 502, anthropic_error("api_error", "<string>")),
        (KeyFault::Status(503), 503, anthropic_error("api_error", "<string>")),
        (KeyFault::Status(504), 504, anthropic_error("timeout_error", "<string>")),
        (KeyFault::Status(529), 529, anthropic_error("overloaded_error", "Overloaded")),
        (
            KeyFault::Throttled { retry_after: Duration::from_secs(30) },
            429,
            anthropic_error("rate_limit_error", "<string>"),
        ),
        (KeyFault::ThrottledNoHint, 429, anthropic_error("rate_limit_error", "<string>")),
    ];
    for (fault, status, shape) in cases {
        mock.set_key_fault(ANTHROPIC_KEY, fault.clone());
        let answer = chat(&mock, Family::Anthropic, false).await;
        assert_eq!(answer.status, status, "{fault:?}: {}", answer.body);
        assert_shape(&answer.json(), &shape, &format!("{fault:?}"));
        match fault {
            KeyFault::Throttled { .. } => {
                let retry_after = answer.retry_after();
                assert!((29..=30).contains(&retry_after), "retry-after {retry_after}");
                let reset = parse_rfc3339(answer.header("anthropic-ratelimit-requests-reset").unwrap());
                let now = now_seconds();
                assert!(reset >= now + 29 && reset <= now + 31, "reset {reset} vs now {now}");
                assert_eq!(answer.header("anthropic-ratelimit-requests-remaining"), Some("0"));
            }
            _ => {
                assert!(answer.header("retry-after").is_none(), "{fault:?}");
                assert!(answer.header("anthropic-ratelimit-requests-reset").is_none(), "{fault:?}");
            }
        }
    }
}

#[tokio::test]
async fn gemini_and_azure_faults_answer_in_their_shapes() {
    let mock = start().await;
    let gemini = |code: u16, status: &str| json!({"error": {"code": code, "message": "<string>", "status": status}});
    let cases: Vec<(Family, KeyFault, u16, Value)> = vec![
        (
            Family::Gemini,
            KeyFault::Revoked,
            400,
            json!({"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.", "status": "INVALID_ARGUMENT"}}),
        ),
        (Family::Gemini, KeyFault::Forbidden, 403, gemini(403, "PERMISSION_DENIED")),
        (Family::Gemini, KeyFault::Status(500), 500, gemini(500, "INTERNAL")),
        (Family::Gemini, KeyFault::Status(503), 503, gemini(503, "UNAVAILABLE")),
        (Family::Gemini, KeyFault::ThrottledNoHint, 429, gemini(429, "RESOURCE_EXHAUSTED")),
        (
            Family::Gemini,
            KeyFault::Throttled { retry_after: Duration::from_secs(7) },
            429,
            json!({"error": {
                "code": 429,
                "status": "RESOURCE_EXHAUSTED",
                "details": [
                    {"@type": "type.googleapis.com/google.rpc.Help"},
                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}
                ]
            }}),
        ),
        (Family::Azure, KeyFault::Revoked, 401, json!({"error": {"code": "401", "message": "<string>"}})),
        (
            Family::Azure,
            KeyFault::Forbidden,
            403,
            json!({"error": {"code": "PermissionDenied", "message": "<string>"}}),
        ),
        (Family::Azure, KeyFault::Status(500), 500, json!({"error": {"type": "server_error"}})),
        (
            Family::Azure,
            KeyFault::Throttled { retry_after: Duration::from_secs(7) },
            429,
            json!({"error": {"code": "429", "message": "<string>"}}),
        ),
    ];
    for (family, fault, status, shape) in cases {
        mock.set_key_fault(family.key(), fault.clone());
        let answer = chat(&mock, family, false).await;
        assert_eq!(answer.status, status, "{family:?} {fault:?}: {}", answer.body);
        assert_shape(&answer.json(), &shape, &format!("{family:?} {fault:?}"));
        if matches!(fault, KeyFault::Throttled { .. }) {
            assert!((6..=7).contains(&answer.retry_after()), "{family:?}");
        }
        if family == Family::Azure && matches!(fault, KeyFault::Throttled { .. }) {
            let millis: u64 = answer.header("retry-after-ms").unwrap().parse().unwrap();
            assert!((6_000..=7_000).contains(&millis), "{millis}");
            assert!(parse_go_duration(answer.header("x-ratelimit-reset-requests").unwrap()) <= Duration::from_secs(7));
        }
        mock.clear_key_fault(family.key());
        assert_eq!(chat(&mock, family, false).await.status, 200, "{family:?} after clearing");
    }
}

#[tokio::test]
async fn rate_limit_refuses_exactly_the_request_past_the_limit_with_openai_headers() {
    let mock = start().await;
    mock.set_key_fault(OPENAI_KEY, KeyFault::RateLimit { requests_per_minute: 3, tokens_per_minute: None });
    for remaining in ["2", "1", "0"] {
        let answer = chat(&mock, Family::OpenAi, false).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.header("x-ratelimit-limit-requests"), Some("3"));
        assert_eq!(answer.header("x-ratelimit-remaining-requests"), Some(remaining));
        let reset = parse_go_duration(answer.header("x-ratelimit-reset-requests").unwrap());
        assert!(reset > Duration::from_secs(55) && reset <= Duration::from_secs(60), "{reset:?}");
        assert!(answer.header("x-ratelimit-limit-tokens").is_none(), "no token limit was set");
        assert!(answer.header("retry-after").is_none());
    }
    let refused = chat(&mock, Family::OpenAi, false).await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_shape(
        &refused.json(),
        &json!({"error": {"message": "<string>", "type": "requests", "param": null, "code": "rate_limit_exceeded"}}),
        "429",
    );
    let message = refused.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.starts_with("Rate limit reached for requests"), "{message}");
    assert!(message.contains("Limit 3, Used 3"), "{message}");
    let retry_after = refused.retry_after();
    assert!((1..=60).contains(&retry_after), "retry-after {retry_after}");
    for (name, value) in RATE_HEADERS_OPENAI.iter().zip(["3", "0"]) {
        assert_eq!(refused.header(name), Some(value), "{name}");
    }
    let reset = parse_go_duration(refused.header("x-ratelimit-reset-requests").unwrap());
    assert!(reset > Duration::from_secs(55) && reset <= Duration::from_secs(60), "{reset:?}");

    // Streaming requests are limited too, and refused with JSON, not an event stream.
    let streamed = chat(&mock, Family::OpenAi, true).await;
    assert_eq!(streamed.status, 429);
    assert_eq!(streamed.header("content-type"), Some("application/json"));
    assert_eq!(streamed.json()["error"]["code"], "rate_limit_exceeded");

    // Every request was recorded and counted, refused ones included.
    let statuses: Vec<Option<u16>> = mock.requests().iter().map(|request| request.status).collect();
    assert_eq!(statuses, [Some(200), Some(200), Some(200), Some(429), Some(429)]);
    assert_eq!(mock.request_count(), 5);
    assert!(mock.requests().iter().all(|request| request.key_valid));

    // Setting the fault again starts an empty window.
    mock.set_key_fault(OPENAI_KEY, KeyFault::RateLimit { requests_per_minute: 3, tokens_per_minute: None });
    assert_eq!(chat(&mock, Family::OpenAi, false).await.status, 200);
}

#[tokio::test]
async fn rate_limit_refuses_exactly_the_request_past_the_limit_with_anthropic_headers() {
    let mock = start().await;
    mock.set_key_fault(ANTHROPIC_KEY, KeyFault::RateLimit { requests_per_minute: 2, tokens_per_minute: Some(1000) });
    for remaining in ["1", "0"] {
        let answer = chat(&mock, Family::Anthropic, true).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert!(answer.header("content-type").unwrap().starts_with("text/event-stream"));
        assert_eq!(answer.header("anthropic-ratelimit-requests-limit"), Some("2"));
        assert_eq!(answer.header("anthropic-ratelimit-requests-remaining"), Some(remaining));
        assert_eq!(answer.header("anthropic-ratelimit-tokens-limit"), Some("1000"));
        let now = now_seconds();
        for name in ["anthropic-ratelimit-requests-reset", "anthropic-ratelimit-tokens-reset"] {
            let reset = parse_rfc3339(answer.header(name).unwrap());
            assert!(reset >= now + 55 && reset <= now + 61, "{name} {reset} vs now {now}");
        }
    }
    let refused = chat(&mock, Family::Anthropic, false).await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_shape(
        &refused.json(),
        &json!({"type": "error", "error": {"type": "rate_limit_error", "message": "<string>"}}),
        "429",
    );
    let retry_after = refused.retry_after();
    assert!((1..=60).contains(&retry_after), "retry-after {retry_after}");
    for (name, value) in RATE_HEADERS_ANTHROPIC.iter().zip(["2", "0"]) {
        assert_eq!(refused.header(name), Some(value), "{name}");
    }
    let reset = parse_rfc3339(refused.header("anthropic-ratelimit-requests-reset").unwrap());
    assert!(reset >= now_seconds() + 55, "reset {reset}");
}

#[tokio::test]
async fn token_rate_limit_counts_the_usage_the_mock_reports() {
    let mock = start().await;
    // "one two three" is 3 prompt tokens; the reply "mock reply to: one two three" is 6.
    mock.set_key_fault(OPENAI_KEY, KeyFault::RateLimit { requests_per_minute: 100, tokens_per_minute: Some(10) });
    let first = chat(&mock, Family::OpenAi, false).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.json()["usage"]["total_tokens"], 9);
    assert_eq!(first.header("x-ratelimit-limit-tokens"), Some("10"));
    assert_eq!(first.header("x-ratelimit-remaining-tokens"), Some("1"));
    assert_eq!(first.header("x-ratelimit-remaining-requests"), Some("99"));
    let reset = parse_go_duration(first.header("x-ratelimit-reset-tokens").unwrap());
    assert!(reset > Duration::from_secs(55) && reset <= Duration::from_secs(60), "{reset:?}");
    // The window holds 9 < 10 tokens: admitted, and then it holds 18.
    let second = chat(&mock, Family::OpenAi, true).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.header("x-ratelimit-remaining-tokens"), Some("0"));
    let refused = chat(&mock, Family::OpenAi, false).await;
    assert_eq!(refused.status, 429);
    assert_shape(&refused.json(), &json!({"error": {"type": "tokens", "code": "rate_limit_exceeded"}}), "tokens 429");
    assert!(refused.retry_after() >= 1);
    assert_eq!(refused.header("x-ratelimit-remaining-tokens"), Some("0"));
    assert_eq!(refused.header("x-ratelimit-remaining-requests"), Some("98"));
}

#[tokio::test]
async fn gemini_rate_limit_answers_resource_exhausted_with_retry_info() {
    let mock = start().await;
    mock.set_key_fault(GEMINI_KEY, KeyFault::RateLimit { requests_per_minute: 1, tokens_per_minute: None });
    assert_eq!(chat(&mock, Family::Gemini, false).await.status, 200);
    let refused = chat(&mock, Family::Gemini, true).await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_shape(
        &refused.json(),
        &json!({"error": {
            "code": 429,
            "status": "RESOURCE_EXHAUSTED",
            "details": [
                {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{"quotaValue": "1"}]},
                {"@type": "type.googleapis.com/google.rpc.Help"},
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "<string>"}
            ]
        }}),
        "gemini 429",
    );
    assert!(refused.retry_after() >= 1);
}

#[tokio::test]
async fn throttled_clears_itself_after_its_time() {
    let mock = start().await;
    mock.set_key_fault(OPENAI_KEY, KeyFault::Throttled { retry_after: Duration::from_millis(400) });
    let throttled = chat(&mock, Family::OpenAi, false).await;
    assert_eq!(throttled.status, 429);
    assert_eq!(throttled.retry_after(), 1);
    assert!(parse_go_duration(throttled.header("x-ratelimit-reset-requests").unwrap()) <= Duration::from_millis(400));
    tokio::time::sleep(Duration::from_millis(450)).await;
    let served = chat(&mock, Family::OpenAi, false).await;
    assert_eq!(served.status, 200, "{}", served.body);
    assert!(served.header("retry-after").is_none());
    assert_eq!(chat(&mock, Family::OpenAi, false).await.status, 200);
}

#[tokio::test]
async fn fail_key_times_fails_that_many_requests_then_serves_normally() {
    let mock = start().await;
    mock.fail_key_times(ANTHROPIC_KEY, KeyFault::Status(529), 2);
    for _ in 0..2 {
        let answer = chat(&mock, Family::Anthropic, true).await;
        assert_eq!(answer.status, 529);
        assert_eq!(answer.header("content-type"), Some("application/json"));
        assert_eq!(answer.json()["error"]["type"], "overloaded_error");
    }
    assert_eq!(chat(&mock, Family::Anthropic, false).await.status, 200);
    assert_eq!(chat(&mock, Family::Anthropic, false).await.status, 200);

    // Counted faults go first, then the standing fault applies again.
    mock.set_key_fault(OPENAI_KEY, KeyFault::Forbidden);
    mock.fail_key_times(OPENAI_KEY, KeyFault::Throttled { retry_after: Duration::from_secs(3) }, 1);
    let throttled = chat(&mock, Family::OpenAi, false).await;
    assert_eq!((throttled.status, throttled.retry_after()), (429, 3));
    assert_eq!(chat(&mock, Family::OpenAi, false).await.status, 403);
    mock.clear_key_fault(OPENAI_KEY);
    assert_eq!(chat(&mock, Family::OpenAi, false).await.status, 200);

    // Zero times faults nothing; a counted rate limit answers as a used-up limit.
    mock.fail_key_times(OPENAI_KEY, KeyFault::Revoked, 0);
    assert_eq!(chat(&mock, Family::OpenAi, false).await.status, 200);
    mock.fail_key_times(OPENAI_KEY, KeyFault::RateLimit { requests_per_minute: 5, tokens_per_minute: None }, 1);
    let limited = chat(&mock, Family::OpenAi, false).await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.header("x-ratelimit-limit-requests"), Some("5"));
    assert_eq!(limited.header("x-ratelimit-remaining-requests"), Some("0"));
    assert!(limited.retry_after() >= 1);
    assert_eq!(chat(&mock, Family::OpenAi, false).await.status, 200);
    assert_eq!(mock.request_count(), 10);
}

#[tokio::test]
async fn unknown_keys_get_the_wrong_key_answer_and_other_keys_are_unaffected() {
    let mock = common::start_with(|config| config.openai_keys.push("sk-test-second-key-0123456789".into())).await;
    mock.set_key_fault("sk-not-accepted-0123456789", KeyFault::Status(503));
    let response = Family::OpenAi.send_chat(&mock, Some("sk-not-accepted-0123456789"), "x", false).await;
    let answer = Answer::read(response).await;
    assert_eq!(answer.status, 401);
    assert_eq!(answer.json()["error"]["code"], "invalid_api_key");

    mock.set_key_fault(OPENAI_KEY, KeyFault::Revoked);
    let other = Family::OpenAi.send_chat(&mock, Some("sk-test-second-key-0123456789"), "x", false).await;
    assert_eq!(other.status(), 200);
    assert_eq!(chat(&mock, Family::OpenAi, false).await.status, 401);
}

#[tokio::test]
async fn scripted_responses_are_served_before_key_faults() {
    let mock = start().await;
    mock.set_key_fault(OPENAI_KEY, KeyFault::Status(500));
    mock.set_next_response(ScriptedResponse::provider_error(418));
    assert_eq!(chat(&mock, Family::OpenAi, false).await.status, 418);
    mock.set_next_response(ScriptedResponse::Normal);
    assert_eq!(chat(&mock, Family::OpenAi, false).await.status, 500);
}

/// A `GET` of a model listing with `headers`.
async fn get(mock: &MockProvider, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut request = client().get(format!("{}{path}", mock.base_url()));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    Answer::read(request.send().await.expect("request is sent")).await
}

#[tokio::test]
async fn model_listings_check_each_providers_key_and_see_faults() {
    let mock = start().await;
    let openai_bearer = format!("Bearer {OPENAI_KEY}");
    let wrong_bearer = "Bearer sk-wrong-0123456789abcdef".to_owned();
    let version = ("anthropic-version", "2023-06-01");
    let azure_path = "/openai/models?api-version=2024-10-21";
    // (path, headers, status, body shape)
    let cases: Vec<(&str, Vec<(&str, &str)>, u16, Value)> = vec![
        (
            "/v1/models",
            vec![("authorization", &openai_bearer)],
            200,
            json!({"object": "list", "data": [{"object": "model"}]}),
        ),
        ("/v1/models", vec![("authorization", &wrong_bearer)], 401, json!({"error": {"code": "invalid_api_key"}})),
        ("/v1/models", vec![], 401, json!({"error": {"type": "invalid_request_error", "code": null}})),
        (
            "/v1/models",
            vec![("x-api-key", ANTHROPIC_KEY), version],
            200,
            json!({"data": [{"type": "model"}], "has_more": false}),
        ),
        (
            "/v1/models",
            vec![("x-api-key", "sk-ant-wrong"), version],
            401,
            json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}),
        ),
        ("/v1/models", vec![version], 401, json!({"type": "error", "error": {"type": "authentication_error"}})),
        ("/v1beta/models", vec![("x-goog-api-key", GEMINI_KEY)], 200, json!({"models": [{"name": "<string>"}]})),
        (
            "/v1beta/models",
            vec![("x-goog-api-key", "AIzaWrong")],
            400,
            json!({"error": {"status": "INVALID_ARGUMENT"}}),
        ),
        ("/v1beta/models", vec![], 403, json!({"error": {"status": "PERMISSION_DENIED"}})),
        (
            azure_path,
            vec![("api-key", AZURE_KEY)],
            200,
            json!({"object": "list", "data": [{"object": "model", "id": "<string>", "status": "succeeded"}]}),
        ),
        (
            "/openai/models/gpt-4o-2024-08-06?api-version=2024-10-21",
            vec![("api-key", AZURE_KEY)],
            200,
            json!({"object": "model"}),
        ),
        (azure_path, vec![("api-key", "azure-wrong")], 401, json!({"error": {"code": "401"}})),
        (azure_path, vec![], 401, json!({"error": {"code": "401"}})),
        ("/openai/models", vec![("api-key", AZURE_KEY)], 400, json!({"error": {"code": "MissingApiVersionParameter"}})),
    ];
    for (path, headers, status, shape) in &cases {
        let answer = get(&mock, path, headers).await;
        assert_eq!(answer.status, *status, "{path} {headers:?}: {}", answer.body);
        assert_shape(&answer.json(), shape, &format!("{path} {headers:?}"));
    }

    // Key verification sees a revoked key, on every provider's listing.
    for key in [OPENAI_KEY, ANTHROPIC_KEY, GEMINI_KEY, AZURE_KEY] {
        mock.set_key_fault(key, KeyFault::Revoked);
    }
    let revoked: Vec<(&str, Vec<(&str, &str)>, u16)> = vec![
        ("/v1/models", vec![("authorization", &openai_bearer)], 401),
        ("/v1/models", vec![("x-api-key", ANTHROPIC_KEY), version], 401),
        ("/v1beta/models", vec![("x-goog-api-key", GEMINI_KEY)], 400),
        (azure_path, vec![("api-key", AZURE_KEY)], 401),
    ];
    for (path, headers, status) in &revoked {
        let answer = get(&mock, path, headers).await;
        assert_eq!(answer.status, *status, "{path} {headers:?}: {}", answer.body);
    }
    // And a rate-limited key's listing carries the rate-limit headers.
    mock.set_key_fault(AZURE_KEY, KeyFault::RateLimit { requests_per_minute: 1, tokens_per_minute: None });
    let listed = get(&mock, azure_path, &[("api-key", AZURE_KEY)]).await;
    assert_eq!((listed.status, listed.header("x-ratelimit-remaining-requests")), (200, Some("0")));
    let refused = get(&mock, azure_path, &[("api-key", AZURE_KEY)]).await;
    assert_eq!(refused.status, 429);
    assert_shape(&refused.json(), &json!({"error": {"code": "429", "message": "<string>"}}), "azure 429");
    assert!(refused.retry_after() >= 1);
    assert!(refused.header("retry-after-ms").is_some());
}
