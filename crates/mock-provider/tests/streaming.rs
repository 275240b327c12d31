//! Streaming: each provider's event sequence (names, types, order, usage in the right
//! place), that events are written as they are produced, and that a client leaving
//! mid-stream is noticed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{client, parse_sse, start, start_with, Family, SseEvent, OPENAI_KEY};
use serde_json::{json, Value};

const PROMPT: &str = "a b c";
const REPLY: &str = "mock reply to: a b c";

async fn post_stream(
    mock: &byok_mock_provider::MockProvider,
    path: &str,
    headers: &[(&str, &str)],
    body: Value,
) -> (String, String) {
    let mut request = client().post(format!("{}{path}", mock.base_url())).json(&body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200, "{path}");
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    (content_type, response.text().await.unwrap())
}

fn names(events: &[SseEvent]) -> Vec<&str> {
    events.iter().map(|event| event.event.as_deref().unwrap_or("-")).collect()
}

/// Checks an OpenAI chat stream; returns its chunks (without `[DONE]`).
fn check_openai_chat_stream(body: &str, model: &str, include_usage: bool, usage: Value) -> Vec<Value> {
    let events = parse_sse(body);
    assert!(events.iter().all(|event| event.event.is_none()));
    assert_eq!(events.last().unwrap().data, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(SseEvent::json).collect();
    let id = &chunks[0]["id"];
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(&chunk["id"], id);
        assert_eq!(chunk["model"], model);
        assert_eq!(chunk.get("usage").is_some(), include_usage, "{chunk}");
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let with_choices: Vec<&Value> =
        chunks.iter().filter(|chunk| !chunk["choices"].as_array().unwrap().is_empty()).collect();
    let text: String =
        with_choices.iter().filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, REPLY);
    let finishes: Vec<&Value> = with_choices.iter().map(|chunk| &chunk["choices"][0]["finish_reason"]).collect();
    assert_eq!(finishes.last().unwrap().as_str(), Some("stop"));
    assert!(finishes[..finishes.len() - 1].iter().all(|f| f.is_null()));
    if include_usage {
        let last = chunks.last().unwrap();
        assert_eq!(last["choices"], json!([]));
        assert_eq!(last["usage"]["prompt_tokens"], usage["prompt_tokens"]);
        assert_eq!(last["usage"]["completion_tokens"], usage["completion_tokens"]);
        assert_eq!(last["usage"]["total_tokens"], usage["total_tokens"]);
        assert!(chunks[..chunks.len() - 1].iter().all(|chunk| chunk["usage"].is_null()));
    }
    chunks
}

#[tokio::test]
async fn openai_chat_streams_chunks_then_usage_if_asked_then_done() {
    let mock = start().await;
    let usage = json!({"prompt_tokens": 3, "completion_tokens": 6, "total_tokens": 9});
    let bearer = format!("Bearer {OPENAI_KEY}");
    // (path, extra headers, model in the body, model expected back)
    type ChatRoute<'a> = (&'a str, Vec<(&'a str, &'a str)>, Option<&'a str>, &'a str);
    let routes: [ChatRoute; 2] = [
        ("/v1/chat/completions", vec![("authorization", bearer.as_str())], Some("gpt-4o"), "gpt-4o"),
        (
            "/openai/deployments/dep-1/chat/completions?api-version=2024-10-21",
            vec![("api-key", common::AZURE_KEY)],
            None,
            "dep-1",
        ),
    ];
    for (path, headers, model, expected_model) in routes {
        for include_usage in [false, true] {
            let mut body = json!({
                "messages": [{"role": "user", "content": PROMPT}],
                "stream": true,
                "stream_options": {"include_usage": include_usage}
            });
            if let Some(model) = model {
                body["model"] = json!(model);
            }
            let (content_type, text) = post_stream(&mock, path, &headers, body).await;
            assert!(content_type.starts_with("text/event-stream"), "{content_type}");
            check_openai_chat_stream(&text, expected_model, include_usage, usage.clone());
        }
    }
}

#[tokio::test]
async fn openai_legacy_completions_stream() {
    let mock = start().await;
    let bearer = format!("Bearer {OPENAI_KEY}");
    let (_, text) = post_stream(
        &mock,
        "/v1/completions",
        &[("authorization", &bearer)],
        json!({"model": "gpt-3.5-turbo-instruct", "prompt": PROMPT, "stream": true}),
    )
    .await;
    let events = parse_sse(&text);
    assert_eq!(events.last().unwrap().data, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(SseEvent::json).collect();
    assert!(chunks.iter().all(|c| c["object"] == "text_completion"));
    let text: String = chunks.iter().map(|c| c["choices"][0]["text"].as_str().unwrap()).collect();
    assert_eq!(text, REPLY);
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn openai_responses_stream_named_events_in_order() {
    let mock = start().await;
    let bearer = format!("Bearer {OPENAI_KEY}");
    let (_, text) = post_stream(
        &mock,
        "/v1/responses",
        &[("authorization", &bearer)],
        json!({"model": "gpt-4.1", "input": PROMPT, "stream": true}),
    )
    .await;
    let events = parse_sse(&text);
    let names = names(&events);
    assert_eq!(
        names[..4],
        ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"]
    );
    assert_eq!(
        names[names.len() - 4..],
        ["response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"]
    );
    let mut deltas = String::new();
    for (index, event) in events.iter().enumerate() {
        let data = event.json();
        assert_eq!(data["type"], event.event.as_deref().unwrap());
        assert_eq!(data["sequence_number"], index);
        if event.event.as_deref() == Some("response.output_text.delta") {
            deltas.push_str(data["delta"].as_str().unwrap());
        }
    }
    assert_eq!(deltas, REPLY);
    let completed = events.last().unwrap().json();
    assert_eq!(completed["response"]["status"], "completed");
    assert_eq!(completed["response"]["usage"]["input_tokens"], 3);
    assert_eq!(completed["response"]["usage"]["output_tokens"], 6);
    assert!(events[0].json()["response"]["usage"].is_null());
}

#[tokio::test]
async fn anthropic_streams_the_named_event_sequence() {
    let mock = start().await;
    let response = Family::Anthropic.send_chat(&mock, Some(common::ANTHROPIC_KEY), PROMPT, true).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let events = parse_sse(&response.text().await.unwrap());
    let names = names(&events);
    let deltas = names.len() - 6;
    let mut expected = vec!["message_start", "content_block_start", "ping"];
    expected.extend(std::iter::repeat_n("content_block_delta", deltas));
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names, expected);
    assert_eq!(deltas, 6, "one delta per word");

    let mut text = String::new();
    for event in &events {
        let data = event.json();
        assert_eq!(data["type"], event.event.as_deref().unwrap(), "{data}");
        if data["type"] == "content_block_delta" {
            assert_eq!(data["delta"]["type"], "text_delta");
            text.push_str(data["delta"]["text"].as_str().unwrap());
        }
    }
    assert_eq!(text, REPLY);
    let start = events[0].json();
    assert_eq!(start["message"]["usage"]["input_tokens"], 3);
    assert_eq!(start["message"]["content"], json!([]));
    let delta = events[events.len() - 2].json();
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta["usage"]["output_tokens"], 6);
}

/// Checks Gemini stream chunks: text in each, the finish reason only in the last, usage
/// in every one (the candidates' tokens so far; the whole usage in the last).
fn check_gemini_chunks(chunks: &[Value]) {
    let text: String =
        chunks.iter().map(|c| c["candidates"][0]["content"]["parts"][0]["text"].as_str().unwrap()).collect();
    assert_eq!(text, REPLY);
    let (last, rest) = chunks.split_last().unwrap();
    assert!(!rest.is_empty());
    for (index, chunk) in rest.iter().enumerate() {
        let so_far = index as u64 + 1;
        assert_eq!(chunk["usageMetadata"]["promptTokenCount"], 3, "{chunk}");
        assert_eq!(chunk["usageMetadata"]["candidatesTokenCount"], so_far, "{chunk}");
        assert_eq!(chunk["usageMetadata"]["totalTokenCount"], 3 + so_far, "{chunk}");
        assert!(chunk["candidates"][0].get("finishReason").is_none());
        assert_eq!(chunk["candidates"][0]["content"]["role"], "model");
    }
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    assert_eq!(last["usageMetadata"]["promptTokenCount"], 3);
    assert_eq!(last["usageMetadata"]["candidatesTokenCount"], 6);
    assert_eq!(last["usageMetadata"]["totalTokenCount"], 9);
}

#[tokio::test]
async fn gemini_streams_sse_with_alt_sse_and_a_json_array_without() {
    let mock = start().await;
    let headers = [("x-goog-api-key", common::GEMINI_KEY)];
    let body = json!({"contents": [{"role": "user", "parts": [{"text": PROMPT}]}]});

    let (content_type, text) =
        post_stream(&mock, "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", &headers, body.clone())
            .await;
    assert!(content_type.starts_with("text/event-stream"));
    let events = parse_sse(&text);
    assert!(events.iter().all(|event| event.event.is_none()));
    check_gemini_chunks(&events.iter().map(SseEvent::json).collect::<Vec<_>>());

    let (content_type, text) =
        post_stream(&mock, "/v1beta/models/gemini-2.5-flash:streamGenerateContent", &headers, body).await;
    assert!(content_type.starts_with("application/json"));
    let array: Value = serde_json::from_str(&text).unwrap();
    check_gemini_chunks(array.as_array().unwrap());
}

#[tokio::test]
async fn stream_stop_reasons_follow_the_token_limit() {
    let mock = start().await;
    let bearer = format!("Bearer {OPENAI_KEY}");
    let (_, text) = post_stream(
        &mock,
        "/v1/chat/completions",
        &[("authorization", &bearer)],
        json!({"model": "m", "max_completion_tokens": 2, "stream": true,
               "messages": [{"role": "user", "content": PROMPT}]}),
    )
    .await;
    let events = parse_sse(&text);
    let last_chunk = events[events.len() - 2].json();
    assert_eq!(last_chunk["choices"][0]["finish_reason"], "length");

    let (_, text) = post_stream(
        &mock,
        "/v1/messages",
        &[("x-api-key", common::ANTHROPIC_KEY), ("anthropic-version", "2023-06-01")],
        json!({"model": "m", "max_tokens": 2, "stream": true,
               "messages": [{"role": "user", "content": PROMPT}]}),
    )
    .await;
    let events = parse_sse(&text);
    let delta = events[events.len() - 2].json();
    assert_eq!(delta["delta"]["stop_reason"], "max_tokens");
    assert_eq!(delta["usage"]["output_tokens"], 2);
}

#[tokio::test]
async fn streams_are_written_as_they_are_produced() {
    let mock = start_with(|config| config.stream_chunk_delay = Duration::from_millis(40)).await;
    for family in Family::ALL {
        let started = Instant::now();
        let mut response = family.send_chat(&mock, Some(family.key()), "one two three four five six", true).await;
        assert_eq!(response.status(), 200, "{family:?}");
        let mut arrivals = Vec::new();
        while let Some(chunk) = response.chunk().await.unwrap() {
            arrivals.push((started.elapsed(), chunk));
        }
        // At least ten events 40 ms apart: the first must arrive well before the last, and
        // the body must come in many pieces rather than one buffered blob.
        let first = arrivals.first().unwrap().0;
        let last = arrivals.last().unwrap().0;
        assert!(arrivals.len() >= 5, "{family:?}: only {} chunks", arrivals.len());
        assert!(first * 3 < last, "{family:?}: first chunk at {first:?}, last at {last:?}");
        // The first piece holds only the first events, not the whole reply.
        let first_text = String::from_utf8_lossy(&arrivals[0].1).into_owned();
        assert!(!first_text.contains("six"), "{family:?}: first chunk {first_text:?}");
    }
}

#[tokio::test]
async fn a_client_leaving_mid_stream_is_recorded_as_not_completed() {
    let mock = start_with(|config| config.stream_chunk_delay = Duration::from_millis(25)).await;
    let long_prompt = "word ".repeat(40);
    for family in Family::ALL {
        mock.clear();
        let mut response = family.send_chat(&mock, Some(family.key()), &long_prompt, true).await;
        let first = response.chunk().await.unwrap().expect("a first chunk");
        assert!(!first.is_empty());
        drop(response);
        let requests = mock
            .wait_for(Duration::from_secs(10), |r| r.len() == 1 && r[0].finished)
            .await
            .unwrap_or_else(|r| panic!("{family:?}: the mock did not notice: {r:?}"));
        assert!(!requests[0].completed, "{family:?}");
        assert_eq!(requests[0].status, Some(200));

        // Control: the same stream read to its end is completed.
        let response = family.send_chat(&mock, Some(family.key()), "short", true).await;
        response.text().await.unwrap();
        let requests = mock.wait_for(Duration::from_secs(10), |r| r.len() == 2 && r[1].finished).await.unwrap();
        assert!(requests[1].completed, "{family:?}");
        assert!(!requests[0].completed, "{family:?}");
    }
}
