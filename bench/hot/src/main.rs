//! `byok-hot CASE ITERATIONS`: build CASE's data, then run CASE's hot function ITERATIONS
//! times inside [`measured`], the one function `bench/hot/run.sh` has callgrind count.
//! `byok-hot list` names the cases.
#![forbid(unsafe_code)]

use std::hint::black_box;
use std::process::ExitCode;

use byok_domain::chain;
use byok_domain::{
    Capability, CredentialId, CredentialOwner, Mode, OrgId, Outcome, ProviderId, ResolutionAudit, TeamId, Tier,
    Timestamp, TokenId,
};
use byok_providers::{classify, normalize_path, Api, UsageTap};
use byok_proxy::benching::{self, Resolution};
use bytes::Bytes;

/// The cases, in the order they are printed.
const CASES: [&str; 8] = [
    "classify-chat",
    "resolve-10",
    "resolve-1000",
    "resolve-100000",
    "audit-row-encode",
    "redact-stream",
    "usage-stream",
    "usage-json",
];

/// A chat completion request as an SDK sends it: a system prompt, a short conversation,
/// sampling options (1.2 KB).
fn chat_body() -> Vec<u8> {
    let turns: Vec<String> = (0..6)
        .map(|i| {
            let role = if i % 2 == 0 { "user" } else { "assistant" };
            format!(
                r#"{{"role":"{role}","content":"Turn {i}: summarise the quarterly figures for the board, with the \"risks\" first and a table of the top five accounts."}}"#
            )
        })
        .collect();
    format!(
        r#"{{"model":"gpt-4o-mini","messages":[{{"role":"system","content":"You are a careful analyst."}},{}],"temperature":0.2,"max_tokens":512,"stream":false,"user":"u-1234"}}"#,
        turns.join(",")
    )
    .into_bytes()
}

/// A streamed chat completion as it leaves the provider: 40 SSE events, the last with
/// usage, cut into the 1 KiB reads a socket gives.
fn sse_chunks() -> Vec<Bytes> {
    let mut body = String::new();
    for i in 0..40 {
        body.push_str(&format!(
            "data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"word{i} \"}},\"finish_reason\":null}}]}}\n\n"
        ));
    }
    body.push_str("data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":31,\"completion_tokens\":40,\"total_tokens\":71}}\n\ndata: [DONE]\n\n");
    body.as_bytes().chunks(1024).map(Bytes::copy_from_slice).collect()
}

/// A chat completion answer as the provider sends it (1 KB: the message, logprobs off,
/// usage with its details).
fn chat_answer() -> Vec<u8> {
    let content = "The quarterly figures show revenue up 12% on the year, with the largest accounts \
                   growing fastest; the main risks are concentration and a slower pipeline. "
        .repeat(4);
    format!(
        r#"{{"id":"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT","object":"chat.completion","created":1741569952,"model":"gpt-4o-mini-2024-07-18","choices":[{{"index":0,"message":{{"role":"assistant","content":"{content}","refusal":null,"annotations":[]}},"logprobs":null,"finish_reason":"stop"}}],"usage":{{"prompt_tokens":31,"completion_tokens":120,"total_tokens":151,"prompt_tokens_details":{{"cached_tokens":0,"audio_tokens":0}},"completion_tokens_details":{{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}},"service_tier":"default","system_fingerprint":"fp_06737a9306"}}"#
    )
    .into_bytes()
}

fn resolution_row() -> ResolutionAudit {
    ResolutionAudit {
        seq: 0,
        at: Timestamp::from_micros(1_700_000_000_000_000).unwrap_or_else(Timestamp::now),
        call_id: "call_01JBENCHBENCHBENCHBENCH0000".into(),
        org_id: Some(OrgId::generate()),
        team_id: Some(TeamId::generate()),
        workflow_id: None,
        token_id: Some(TokenId::generate()),
        credential_id: Some(CredentialId::generate()),
        credential_version: Some(3),
        fingerprint: Some("fp_0123456789abcdef".into()),
        provider: Some(ProviderId::Openai),
        model: Some("gpt-4o-mini".into()),
        model_family: Some("gpt-4o-mini".into()),
        capability: Some(Capability::Chat),
        mode: Some(Mode::Stream),
        outcome: Outcome::Allowed,
        reason: None,
        detail: None,
        tier: Some(Tier::KatmanB),
        credential_owner: Some(CredentialOwner::Org),
        attempt: Some(1),
    }
}

/// The loop callgrind counts (`--toggle-collect`): never inlined, so its name survives.
#[inline(never)]
fn measured(iterations: u64, mut step: impl FnMut() -> usize) -> usize {
    let mut total = 0usize;
    for _ in 0..iterations {
        total = total.wrapping_add(black_box(step()));
    }
    total
}

fn run(case: &str, iterations: u64) -> Result<usize, String> {
    Ok(match case {
        "classify-chat" => {
            let body = chat_body();
            let path = normalize_path("/v1/chat/completions").map_err(|e| e.to_string())?;
            measured(iterations, || {
                classify(Api::OpenAi, black_box(&path), None, black_box(&body))
                    .map_or(0, |c| c.model.map_or(1, |m| m.len()))
            })
        }
        "resolve-10" | "resolve-1000" | "resolve-100000" => {
            let n: usize = case.trim_start_matches("resolve-").parse().map_err(|_| format!("bad case {case}"))?;
            let resolution = Resolution::new(n).map_err(|e| e.to_string())?;
            if resolution.run() == 0 {
                return Err(format!("{case}: the call was refused"));
            }
            measured(iterations, || resolution.run())
        }
        "audit-row-encode" => {
            let row = resolution_row();
            let prev = chain::link(chain::RESOLUTION, &chain::GENESIS, &[]);
            measured(iterations, || {
                let fields = chain::resolution_fields("seg_bench", 42, black_box(&row));
                usize::from(chain::link(chain::RESOLUTION, &prev, &fields)[0])
            })
        }
        "redact-stream" => {
            let key = b"sk-proj-bench0123456789abcdefghijklmnopqrstuvwxyzABCDEFGH";
            let chunks = sse_chunks();
            measured(iterations, || benching::redact(key, black_box(&chunks)))
        }
        "usage-stream" => {
            let chunks = sse_chunks();
            measured(iterations, || {
                let mut tap = UsageTap::new(Api::OpenAi, Some("text/event-stream"));
                for chunk in black_box(&chunks) {
                    tap.feed(chunk);
                }
                usize::try_from(tap.finish().output_tokens.unwrap_or(0)).unwrap_or(0)
            })
        }
        "usage-json" => {
            let body = chat_answer();
            measured(iterations, || {
                let mut tap = UsageTap::new(Api::OpenAi, Some("application/json"));
                tap.feed(black_box(&body));
                usize::try_from(tap.finish().output_tokens.unwrap_or(0)).unwrap_or(0)
            })
        }
        _ => return Err(format!("unknown case '{case}'; cases: {}", CASES.join(", "))),
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [list] if list == "list" => {
            let mut out = std::io::stdout().lock();
            for case in CASES {
                let _ = std::io::Write::write_all(&mut out, format!("{case}\n").as_bytes());
            }
            ExitCode::SUCCESS
        }
        [case, iterations] => {
            let Ok(iterations) = iterations.parse::<u64>() else {
                eprintln!("byok-hot: ITERATIONS must be a whole number, not '{iterations}'");
                return ExitCode::from(2);
            };
            match run(case, iterations) {
                Ok(total) => {
                    let _ = black_box(total);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("byok-hot: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        _ => {
            eprintln!("usage: byok-hot CASE ITERATIONS | byok-hot list");
            ExitCode::from(2)
        }
    }
}
