//! Recording and scripted responses: what the mock captures, and each scripted behaviour
//! (redirects, errors, key echo, hangs, delays, broken streams).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use byok_mock_provider::{Provider, ScriptedResponse, StreamBreak};
use common::{client, parse_sse, start, start_with, Family, OPENAI_KEY};
use serde_json::{json, Value};

#[tokio::test]
async fn recording_captures_method_path_headers_body_and_key() {
    let mock = start().await;
    let body = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"exact bytes"}]}"#;
    let response = client()
        .post(format!("{}/v1/chat/completions?trace=1&x=y", mock.base_url()))
        .bearer_auth(OPENAI_KEY)
        .header("content-type", "application/json")
        .header("x-trace-id", "trace-123")
        .header("OpenAI-Organization", "org-abc")
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.bytes().await.unwrap();

    let requests = mock.wait_for(Duration::from_secs(5), |r| r.iter().all(|r| r.finished)).await.unwrap();
    assert_eq!(requests.len(), 1);
    let recorded = &requests[0];
    assert_eq!(recorded.method, "POST");
    assert_eq!(recorded.path, "/v1/chat/completions?trace=1&x=y");
    assert_eq!(recorded.query_param("trace"), Some("1"));
    assert_eq!(recorded.body, body);
    assert_eq!(recorded.body_json().unwrap()["model"], "gpt-4o");
    assert_eq!(recorded.header("X-Trace-Id"), Some("trace-123"));
    assert_eq!(recorded.header("openai-organization"), Some("org-abc"));
    assert_eq!(recorded.header("authorization"), Some(format!("Bearer {OPENAI_KEY}").as_str()));
    assert!(recorded.headers.iter().all(|(name, _)| name == &name.to_lowercase()));
    assert_eq!(recorded.provider, Provider::OpenAi);
    assert_eq!(recorded.presented_key.as_deref(), Some(OPENAI_KEY));
    assert!(recorded.key_valid);
    assert_eq!(recorded.status, Some(200));
    assert!(recorded.completed);
    assert_eq!(mock.request_count(), 1);

    mock.clear();
    assert!(mock.requests().is_empty());
    assert_eq!(mock.request_count(), 0);
}

#[tokio::test]
async fn requests_are_recorded_in_order_and_counted_without_recording() {
    let mock = start().await;
    for family in Family::ALL {
        family.send_chat(&mock, Some(family.key()), "x", false).await;
    }
    let providers: Vec<Provider> = mock.requests().iter().map(|r| r.provider).collect();
    assert_eq!(providers, [Provider::OpenAi, Provider::Anthropic, Provider::Gemini, Provider::AzureOpenAi]);

    let quiet = start_with(|config| config.record = false).await;
    for _ in 0..3 {
        let response = Family::OpenAi.send_chat(&quiet, Some(OPENAI_KEY), "x", false).await;
        assert_eq!(response.status(), 200);
    }
    assert!(quiet.requests().is_empty());
    assert_eq!(quiet.request_count(), 3);
}

#[tokio::test]
async fn many_concurrent_connections_are_served() {
    let mock = start().await;
    let base = mock.base_url();
    let tasks: Vec<_> = (0..32)
        .map(|worker| {
            let base = base.clone();
            tokio::spawn(async move {
                // One client per worker: its own connection.
                let client = client();
                for round in 0..5 {
                    let response = client
                        .post(format!("{base}/v1/chat/completions"))
                        .bearer_auth(OPENAI_KEY)
                        .json(&json!({"model": "m", "stream": round % 2 == 0,
                                      "messages": [{"role": "user", "content": format!("w{worker} r{round}")}]}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 200);
                    let text = response.text().await.unwrap();
                    assert!(text.contains(&format!("w{worker}")));
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(mock.request_count(), 160);
    assert_eq!(mock.requests().len(), 160);
}

#[tokio::test]
async fn scripted_responses_replace_the_next_requests_once_in_order() {
    let mock = start().await;
    mock.set_next_response(ScriptedResponse::redirect("http://127.0.0.1:9/elsewhere"));
    mock.set_next_response(ScriptedResponse::Raw {
        status: 418,
        headers: vec![("x-custom".into(), "yes".into())],
        body: b"teapot".to_vec(),
    });

    let first = Family::OpenAi.send_chat(&mock, Some(OPENAI_KEY), "x", false).await;
    assert_eq!(first.status(), 302);
    assert_eq!(first.headers()["location"], "http://127.0.0.1:9/elsewhere");

    let second = Family::OpenAi.send_chat(&mock, Some(OPENAI_KEY), "x", false).await;
    assert_eq!(second.status(), 418);
    assert_eq!(second.headers()["x-custom"], "yes");
    assert_eq!(second.text().await.unwrap(), "teapot");

    let third = Family::OpenAi.send_chat(&mock, Some(OPENAI_KEY), "x", false).await;
    assert_eq!(third.status(), 200, "scripts are one-off");

    let statuses: Vec<Option<u16>> = mock.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [Some(302), Some(418), Some(200)]);
}

#[tokio::test]
async fn a_standing_response_applies_until_removed_and_one_offs_come_first() {
    let mock = start().await;
    mock.set_every_response(Some(ScriptedResponse::provider_error(503)));
    mock.set_next_response(ScriptedResponse::Normal);
    let statuses = [200, 503, 503];
    for expected in statuses {
        let response = Family::OpenAi.send_chat(&mock, Some(OPENAI_KEY), "x", false).await;
        assert_eq!(response.status(), expected);
    }
    mock.set_every_response(None);
    let response = Family::OpenAi.send_chat(&mock, Some(OPENAI_KEY), "x", false).await;
    assert_eq!(response.status(), 200);

    mock.set_next_response(ScriptedResponse::provider_error(500));
    mock.clear_scripted_responses();
    let response = Family::OpenAi.send_chat(&mock, Some(OPENAI_KEY), "x", false).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn provider_errors_come_in_each_providers_shape() {
    let cases: Vec<(Family, u16, Value)> = vec![
        (
            Family::OpenAi,
            500,
            json!({"error": {"message": "<string>", "type": "server_error", "param": null, "code": null}}),
        ),
        (Family::OpenAi, 429, json!({"error": {"type": "requests", "code": "rate_limit_exceeded"}})),
        (
            Family::Anthropic,
            529,
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        ),
        (Family::Anthropic, 500, json!({"type": "error", "error": {"type": "api_error"}})),
        (Family::Anthropic, 429, json!({"type": "error", "error": {"type": "rate_limit_error"}})),
        (Family::Gemini, 500, json!({"error": {"code": 500, "status": "INTERNAL", "message": "<string>"}})),
        (Family::Gemini, 429, json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED"}})),
        (Family::Azure, 500, json!({"error": {"type": "server_error"}})),
    ];
    let mock = start().await;
    for (family, status, shape) in cases {
        mock.set_next_response(ScriptedResponse::provider_error(status));
        let response = family.send_chat(&mock, Some(family.key()), "x", false).await;
        assert_eq!(response.status().as_u16(), status, "{family:?}");
        let body: Value = response.json().await.unwrap();
        common::assert_shape(&body, &shape, &format!("{family:?} {status}"));
    }
}

#[tokio::test]
async fn echo_key_quotes_the_presented_key_in_body_and_header() {
    let mock = start().await;
    for family in Family::ALL {
        mock.set_next_response(ScriptedResponse::EchoKey);
        let response = family.send_chat(&mock, Some(family.key()), "x", false).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-mock-echo-key"], family.key());
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["presented_key"], family.key(), "{family:?}");
        let (header, value) = family.key_header(family.key());
        assert!(body["headers"].as_array().unwrap().contains(&json!([header, value])));
    }
    // Scripted responses do not check keys: the wrong key is echoed too.
    mock.set_next_response(ScriptedResponse::EchoKey);
    let response = Family::OpenAi.send_chat(&mock, Some("sk-not-accepted"), "x", false).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-mock-echo-key"], "sk-not-accepted");
    assert!(!mock.last_request().unwrap().key_valid);
}

#[tokio::test]
async fn delayed_responses_wait_before_answering() {
    let mock = start().await;
    let delay = Duration::from_millis(300);
    mock.set_next_response(ScriptedResponse::delayed(delay, ScriptedResponse::Normal));
    let started = Instant::now();
    let response = Family::Anthropic.send_chat(&mock, Some(common::ANTHROPIC_KEY), "x", false).await;
    assert!(started.elapsed() >= delay);
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_hanging_upstream_never_answers_and_shutdown_cuts_it() {
    let mock = start().await;
    mock.set_next_response(ScriptedResponse::Hang);
    let (path, body) = Family::OpenAi.chat("x", false);
    let outcome = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap()
        .post(format!("{}{path}", mock.base_url()))
        .bearer_auth(OPENAI_KEY)
        .json(&body)
        .send()
        .await;
    let error = outcome.expect_err("a hanging upstream does not answer");
    assert!(error.is_timeout(), "{error}");
    let requests = mock
        .wait_for(Duration::from_secs(5), |r| r[0].finished)
        .await
        .expect("the mock notices that the client gave up");
    assert!(!requests[0].completed);
    assert_eq!(requests[0].status, None, "no response head was sent");

    // A second hanging request, still waiting when the mock shuts down, is cut off.
    mock.set_next_response(ScriptedResponse::Hang);
    let url = format!("{}{path}", mock.base_url());
    let waiting = tokio::spawn(async move { client().post(url).bearer_auth(OPENAI_KEY).json(&body).send().await });
    mock.wait_for(Duration::from_secs(5), |r| r.len() == 2).await.unwrap();
    let requests = mock.requests();
    assert!(!requests[1].completed);
    let started = Instant::now();
    mock.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(4), "shutdown did not wait out the hang");
    let outcome = tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap();
    assert!(outcome.is_err() || outcome.unwrap().text().await.is_err(), "the hanging request fails");
}

#[tokio::test]
async fn broken_streams_abort_error_or_stall_after_n_events() {
    let mock = start().await;

    // Abort: the connection is cut after two events.
    mock.set_next_response(ScriptedResponse::BreakStream { after_events: 2, how: StreamBreak::Abort });
    let response = Family::OpenAi.send_chat(&mock, Some(OPENAI_KEY), "a b c", true).await;
    assert_eq!(response.status(), 200);
    let mut response = response;
    let mut received = Vec::new();
    let failure = loop {
        match response.chunk().await {
            Ok(Some(chunk)) => received.extend_from_slice(&chunk),
            Ok(None) => break None,
            Err(error) => break Some(error),
        }
    };
    assert!(failure.is_some(), "the body must fail, not end cleanly");
    let received = String::from_utf8(received).unwrap();
    assert_eq!(received.matches("data: ").count(), 2, "two events: {received}");
    let requests = mock.wait_for(Duration::from_secs(5), |r| r[0].finished).await.unwrap();
    assert!(!requests[0].completed);

    // ErrorEvent: each provider's mid-stream error, then a clean end.
    let cases: [(Family, &str); 3] = [
        (Family::OpenAi, r#"data: {"error":"#),
        (Family::Anthropic, "event: error\ndata: "),
        (Family::Gemini, r#"data: {"error":"#),
    ];
    for (family, error_prefix) in cases {
        mock.set_next_response(ScriptedResponse::BreakStream { after_events: 3, how: StreamBreak::ErrorEvent });
        let response = family.send_chat(&mock, Some(family.key()), "a b c", true).await;
        let text = response.text().await.unwrap();
        let events = parse_sse(&text);
        assert_eq!(events.len(), 4, "{family:?}: {text}");
        let last = text.rsplit("\n\n").nth(1).unwrap();
        assert!(last.starts_with(error_prefix), "{family:?}: last event {last}");
        assert!(!text.contains("[DONE]"));
        let error = events[3].json();
        assert!(error.get("error").is_some(), "{family:?}: {error}");
    }

    // Gemini's streamed JSON array stays valid JSON, wherever the error lands.
    for after_events in [0, 2] {
        mock.set_next_response(ScriptedResponse::BreakStream { after_events, how: StreamBreak::ErrorEvent });
        let text = client()
            .post(format!("{}/v1beta/models/gemini-2.5-flash:streamGenerateContent", mock.base_url()))
            .header("x-goog-api-key", common::GEMINI_KEY)
            .json(&Family::Gemini.chat("a b c", false).1)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let array: Value = serde_json::from_str(&text).unwrap();
        let array = array.as_array().unwrap();
        assert_eq!(array.len(), after_events + 1, "{text}");
        assert_eq!(array.last().unwrap()["error"]["status"], "INTERNAL");
    }

    // ErrorEvent on a non-streamed request serves the provider's 500.
    mock.set_next_response(ScriptedResponse::BreakStream { after_events: 0, how: StreamBreak::ErrorEvent });
    let response = Family::Anthropic.send_chat(&mock, Some(common::ANTHROPIC_KEY), "x", false).await;
    assert_eq!(response.status(), 500);

    // Stall: one event, then nothing until the client gives up.
    mock.set_next_response(ScriptedResponse::BreakStream { after_events: 1, how: StreamBreak::Stall });
    let (path, body) = Family::Anthropic.chat("x", true);
    let mut response = reqwest::Client::builder()
        .no_proxy()
        .read_timeout(Duration::from_millis(300))
        .build()
        .unwrap()
        .post(format!("{}{path}", mock.base_url()))
        .header("x-api-key", common::ANTHROPIC_KEY)
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .unwrap();
    let first = response.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).starts_with("event: message_start"));
    let stalled = response.chunk().await;
    assert!(stalled.as_ref().is_err_and(reqwest::Error::is_timeout), "{stalled:?}");
}
