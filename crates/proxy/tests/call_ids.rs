//! Call ids are the caller's to choose, so calls share them: two teams, two orgs, an
//! SDK's retry. Each call's replay still shows its own completion; and what a caller
//! writes into the audit (model, headers quoted in a denial) is escaped and bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use byok_domain::audit::{CALL_ID_MAX_LEN, DETAIL_MAX_LEN, MODEL_MAX_LEN};
use byok_domain::{OrgId, Outcome, ProviderId, ResolutionAudit, ScopeInput, TeamId, Tier};
use byok_mock_provider::ScriptedResponse;
use byok_store::testing::for_each_backend;
use byok_store::{AuditFilter, TimelineItem};
use serde_json::Value;
use support::{openai_chat, Env};

const SHARED: &str = "shared-call-1";

/// One chat call with `token` and the shared call id; the mock answers `status`.
async fn call(env: &Env, token: &str, status: u16) {
    if status != 200 {
        env.mock.set_next_response(ScriptedResponse::provider_error(status));
    }
    let response = env
        .http
        .post(env.url("/openai/v1/chat/completions"))
        .bearer_auth(token)
        .header("x-byok-call-id", SHARED)
        .json(&openai_chat("gpt-4o", false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), status);
    // The caller's id is kept as given.
    assert_eq!(response.headers().get("x-byok-call-id").and_then(|v| v.to_str().ok()), Some(SHARED));
    response.bytes().await.unwrap();
}

/// The calls of `credential` in `org`'s replay: team, upstream status of the completion
/// paired with the row, and whether that completion is of the row's own team.
async fn replay(env: &Env, org: OrgId, credential: &str) -> Vec<(TeamId, Option<u16>)> {
    let (_, items, _) = env.vault.credential_timeline(org, credential, None, 1000).await.unwrap();
    items
        .into_iter()
        .filter_map(|item| match item {
            TimelineItem::Call { resolution, completion } => {
                assert_eq!(resolution.call_id, SHARED);
                let team = resolution.team_id.unwrap();
                if let Some(completion) = &completion {
                    assert_eq!(completion.metering.as_ref().map(|m| m.team_id), Some(team), "{completion:?}");
                }
                Some((team, completion.and_then(|c| c.upstream_status)))
            }
            _ => None,
        })
        .collect()
}

/// Two teams of one org, a retry and another org reuse one call id: every call's replay
/// shows its own completion only, and the audit still verifies.
#[tokio::test]
async fn a_reused_call_id_never_pairs_one_call_with_anothers_completion() {
    for_each_backend("a_reused_call_id_never_pairs_one_call_with_anothers_completion", |t| async move {
        let env = Env::start(t).await;
        let org = env.org.id;
        env.credential("main", ProviderId::Openai, ScopeInput::default()).await;
        let ops = env.vault.create_team(&support::actor(), org, "ops").await.unwrap();
        let research = env.token(&[]).await;
        let operations = env.token_for("ops", &[]).await;
        let (other, other_team) = env.other_org(Tier::KatmanB).await;
        env.credential_of(Some(&other), "main", ProviderId::Openai, ScopeInput::default(), None).await;
        let outsider = env.token_in(&other, "research").await;

        call(&env, &research, 200).await;
        call(&env, &operations, 404).await;
        call(&env, &outsider, 400).await;
        // The first team again (an SDK's retry keeps its headers).
        call(&env, &research, 503).await;

        let mut completions = Vec::new();
        for _ in 0..100 {
            completions = env.t.store().list_completions(SHARED).await.unwrap();
            if completions.len() == 4 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(completions.len(), 4, "{completions:?}");

        let team = env.team.id;
        assert_eq!(replay(&env, org, "main").await, [(team, Some(200)), (ops.id, Some(404)), (team, Some(503))]);
        assert_eq!(replay(&env, other.id, "main").await, [(other_team.id, Some(400))]);
        for org in [&env.org.id, &other.id] {
            let report = env.t.store().verify_audit(Some(org)).await.unwrap();
            assert!(report.ok, "{report:?}");
        }
        env.stop().await;
    })
    .await
    .unwrap();
}

/// Every row the env's org (or no org) holds.
async fn every_row(env: &Env) -> Vec<ResolutionAudit> {
    let mut rows = env.t.store().list_audit(Some(&env.org.id), &AuditFilter::default()).await.unwrap();
    rows.extend(env.t.store().list_audit(None, &AuditFilter::default()).await.unwrap());
    rows
}

fn printable(text: &str) -> bool {
    !text.chars().any(char::is_control)
}

/// A model name, a workflow header or a pin as long or as strange as a caller likes is
/// kept in the audit escaped and capped, whether the call is allowed or refused.
#[tokio::test]
async fn caller_text_reaches_the_audit_escaped_and_bounded() {
    let env = Env::start(byok_store::testing::TestStore::sqlite().await.unwrap()).await;
    env.credential("main", ProviderId::Openai, ScopeInput::default()).await;
    let token = env.token(&[]).await;
    let long = format!("gpt-4o-{}", "x".repeat(5_000));
    let requests: Vec<(&str, Value, Vec<(&str, String)>)> = vec![
        ("long-model", openai_chat(&long, false), vec![]),
        ("escape-model", openai_chat("gpt-4o\u{1b}[2J\u{1b}[31mok\n\u{9b}1m", false), vec![]),
        ("long-workflow", openai_chat("gpt-4o", false), vec![("x-byok-workflow", "w".repeat(8_000))]),
        ("long-pin", openai_chat("gpt-4o", false), vec![("x-byok-credential", "p".repeat(8_000))]),
    ];
    for (call_id, body, headers) in &requests {
        let mut request = env
            .http
            .post(env.url("/openai/v1/chat/completions"))
            .bearer_auth(&token)
            .header("x-byok-call-id", *call_id)
            .json(body);
        for (name, value) in headers {
            request = request.header(*name, value.as_str());
        }
        request.send().await.unwrap().bytes().await.unwrap();
    }
    // An over-long call id is replaced, not cut.
    let response = env
        .http
        .post(env.url("/openai/v1/chat/completions"))
        .bearer_auth(&token)
        .header("x-byok-call-id", "c".repeat(CALL_ID_MAX_LEN + 1))
        .json(&openai_chat("gpt-4o", false))
        .send()
        .await
        .unwrap();
    let echoed = response.headers().get("x-byok-call-id").unwrap().to_str().unwrap().to_owned();
    assert_eq!(echoed.len(), 26, "a generated ULID: {echoed}");

    tokio::time::sleep(Duration::from_millis(300)).await;
    let rows = every_row(&env).await;
    for (call_id, _, _) in &requests {
        let row = rows.iter().find(|r| r.call_id == *call_id).unwrap_or_else(|| panic!("no row for {call_id}"));
        let model = row.model.as_deref().unwrap_or("");
        let detail = row.detail.as_deref().unwrap_or("");
        assert!(model.len() <= MODEL_MAX_LEN, "{call_id}: model of {} bytes", model.len());
        assert!(detail.len() <= DETAIL_MAX_LEN, "{call_id}: detail of {} bytes", detail.len());
        assert!(printable(model) && printable(detail), "{call_id}: {row:?}");
    }
    let long_model = rows.iter().find(|r| r.call_id == "long-model").unwrap();
    if long_model.outcome == Outcome::Allowed {
        assert!(long_model.model.as_deref().unwrap().starts_with("gpt-4o-xxx"), "{long_model:?}");
        assert!(long_model.model.as_deref().unwrap().ends_with('…'), "{long_model:?}");
    }
    let workflow = rows.iter().find(|r| r.call_id == "long-workflow").unwrap();
    assert_eq!(workflow.outcome, Outcome::Denied);
    assert!(workflow.detail.as_deref().unwrap().contains("'www"), "{workflow:?}");
    assert!(workflow.detail.as_deref().unwrap().ends_with('…'), "{workflow:?}");
    let escaped = rows.iter().find(|r| r.call_id == "escape-model").unwrap();
    let text = format!("{} {}", escaped.model.as_deref().unwrap_or(""), escaped.detail.as_deref().unwrap_or(""));
    assert!(!text.contains('\u{1b}'), "{escaped:?}");
    let report = env.t.store().verify_audit(Some(&env.org.id)).await.unwrap();
    assert!(report.ok, "{report:?}");
    env.stop().await;
}
