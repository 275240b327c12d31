//! The admin API end to end (in-process router, real store on SQLite and PostgreSQL,
//! real local keyring).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::type_complexity)]

mod support;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use byok_crypto::{LocalKeyring, TokenKind, TokenText};
use byok_domain::{ModelFamilyRegistry, Timestamp};
use byok_kms::KmsHandle;
use byok_store::testing::{for_each_backend, TestStore};
use byok_vault::{Vault, VaultPolicy};
use serde_json::{json, Value};
use support::{harness, CANARY, CANARY_2};
use tower::ServiceExt;

#[tokio::test]
async fn credential_lifecycle_through_the_api_never_shows_the_secret() {
    for_each_backend("credential_lifecycle_through_the_api_never_shows_the_secret", |t| async move {
        let h = harness(t).await;
        let org = h.ok(Method::POST, "/v1/orgs", json!({"name": "acme", "tier": "katman-b"})).await;
        assert_eq!(org["tier"], "katman-b");
        assert_eq!(org["kek_version"], 1);
        assert!(org["id"].as_str().unwrap().starts_with("org_"));
        let team = h.ok(Method::POST, "/v1/orgs/acme/teams", json!({"name": "research"})).await;
        let wf = h.ok(Method::POST, "/v1/orgs/acme/workflows", json!({"name": "summarize", "team": "research"})).await;
        assert_eq!(wf["team_id"], team["id"]);

        let body = json!({
            "name": "prod-openai", "provider": "openai", "secret": CANARY,
            "scope": {"model_families": ["gpt-4o"], "capabilities": ["chat"], "modes": ["sync", "stream"], "teams": ["research"], "workflows": []},
            "priority": 5
        });
        let answer = h.op(Method::POST, "/v1/orgs/acme/credentials", body).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.raw);
        let cred = answer.json;
        assert!(cred.get("secret").is_none());
        assert_eq!(cred["version"], 1);
        assert_eq!(cred["state"], "active");
        assert_eq!(cred["scope"]["teams"], json!([team["id"]]));
        let fp1 = cred["fingerprint"].as_str().unwrap().to_owned();
        assert!(fp1.starts_with("fp_"));
        let id = cred["id"].as_str().unwrap().to_owned();

        // By id and by name.
        let shown = h.ok(Method::GET, &format!("/v1/orgs/{}/credentials/{id}", org["id"].as_str().unwrap()), json!({})).await;
        assert_eq!(shown["name"], "prod-openai");
        assert_eq!(shown["versions"].as_array().unwrap().len(), 1);
        let list = h.ok(Method::GET, "/v1/orgs/acme/credentials", json!({})).await;
        assert_eq!(list["credentials"].as_array().unwrap().len(), 1);

        let updated = h
            .ok(Method::PATCH, "/v1/orgs/acme/credentials/prod-openai", json!({"scope": {"workflows": ["summarize"]}, "expires_at": "2099-01-01T00:00:00Z"}))
            .await;
        assert_eq!(updated["scope"]["workflows"], json!([wf["id"]]));
        assert_eq!(updated["scope"]["model_families"], json!([]));
        let cleared = h.ok(Method::PATCH, "/v1/orgs/acme/credentials/prod-openai", json!({"expires_at": null})).await;
        assert_eq!(cleared["expires_at"], Value::Null);

        let rotated = h.ok(Method::POST, "/v1/orgs/acme/credentials/prod-openai/rotate", json!({"secret": CANARY_2})).await;
        assert_eq!(rotated["version"], 2);
        assert_ne!(rotated["fingerprint"], fp1);
        for (action, state, body) in [
            ("disable", "disabled", json!({})),
            ("enable", "active", json!({})),
            ("revoke", "revoked", json!({"confirm": true})),
        ] {
            let answer = h.ok(Method::POST, &format!("/v1/orgs/acme/credentials/prod-openai/{action}"), body).await;
            assert_eq!(answer["state"], state);
        }
        let again = h.op(Method::POST, "/v1/orgs/acme/credentials/prod-openai/enable", json!({})).await;
        assert_eq!(again.status, StatusCode::CONFLICT);
        assert!(again.json["error"]["message"].as_str().unwrap().contains("revoked"));

        let life = h.ok(Method::GET, "/v1/orgs/acme/credentials/prod-openai/lifecycle", json!({})).await;
        let kinds: Vec<&str> = life["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["created", "scope_changed", "scope_changed", "rotated", "disabled", "enabled", "revoked"]);
        let seqs: Vec<i64> = life["events"].as_array().unwrap().iter().map(|e| e["seq"].as_i64().unwrap()).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(life["events"][3]["version"], 2);
        assert_eq!(life["events"][0]["fingerprint"], fp1.as_str());
        assert_eq!(life["events"][0]["actor"]["kind"], "admin_token");

        // Workload tokens: shown once, listed without text, revoked idempotently.
        let issued = h.op(Method::POST, "/v1/orgs/acme/tokens", json!({"team": "research", "workflows": ["summarize"]})).await;
        assert_eq!(issued.status, StatusCode::CREATED, "{}", issued.raw);
        let token_text = issued.json["token"].as_str().unwrap().to_owned();
        assert!(token_text.starts_with("byok_"));
        let tokens = h.op(Method::GET, "/v1/orgs/acme/tokens", json!({})).await;
        assert!(!tokens.raw.contains(&token_text));
        let tok = issued.json["id"].as_str().unwrap();
        for _ in 0..2 {
            let revoked = h.ok(Method::DELETE, &format!("/v1/orgs/acme/tokens/{tok}"), json!({})).await;
            assert!(revoked["revoked_at"].is_string());
        }
        assert_eq!(h.t.query_i64("SELECT COUNT(*) FROM lifecycle_events WHERE kind = 'token_revoked'").await.unwrap(), 1);

        // Named tokens: the name is unique in the org, listed, and names the token for revocation.
        let named = h
            .ok(
                Method::POST,
                "/v1/orgs/acme/tokens",
                json!({"team": "research", "name": "summarizer", "description": "nightly summary job"}),
            )
            .await;
        assert_eq!((named["name"].as_str(), named["description"].as_str()), (Some("summarizer"), Some("nightly summary job")));
        let again = h.op(Method::POST, "/v1/orgs/acme/tokens", json!({"team": "research", "name": "summarizer"})).await;
        assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.raw);
        assert!(again.raw.contains("a workload token named 'summarizer' already exists in org 'acme'"), "{}", again.raw);
        let tokens = h.ok(Method::GET, "/v1/orgs/acme/tokens", json!({})).await;
        let listed = tokens["tokens"].as_array().unwrap().iter().find(|t| t["name"] == "summarizer").unwrap().clone();
        assert_eq!((listed["id"].clone(), listed["description"].clone()), (named["id"].clone(), json!("nightly summary job")));
        let revoked = h.ok(Method::DELETE, "/v1/orgs/acme/tokens/summarizer", json!({})).await;
        assert_eq!(revoked["id"], named["id"]);
        assert!(revoked["revoked_at"].is_string());

        h.assert_no_plaintext_at_rest(&[CANARY, CANARY_2, &token_text]).await;
    })
    .await
    .unwrap();
}

/// Every bad input gets its 4xx with a message naming the problem, and leaves the
/// store and the keyring exactly as they were.
#[tokio::test]
async fn bad_input_is_refused_and_nothing_is_written() {
    for_each_backend("bad_input_is_refused_and_nothing_is_written", |t| async move {
        let h = harness(t).await;
        h.ok(Method::POST, "/v1/orgs", json!({"name": "acme", "tier": "katman-a"})).await;
        h.ok(Method::POST, "/v1/orgs", json!({"name": "enterprise", "tier": "katman-c"})).await;
        h.ok(Method::POST, "/v1/orgs/acme/teams", json!({"name": "research"})).await;
        let ok_cred = json!({"name": "main", "provider": "openai", "secret": CANARY});
        h.ok(Method::POST, "/v1/orgs/acme/credentials", ok_cred.clone()).await;
        h.ok(Method::POST, "/v1/orgs/acme/credentials/main/revoke", json!({"confirm": true})).await;
        h.ok(
            Method::POST,
            "/v1/orgs/acme/credentials",
            json!({"name": "live", "provider": "openai", "secret": CANARY}),
        )
        .await;

        let cred = |extra: Value| {
            let mut body = json!({"name": "new", "provider": "openai", "secret": CANARY_2});
            for (k, v) in extra.as_object().unwrap() {
                body[k] = v.clone();
            }
            body.to_string()
        };
        let cases: Vec<(Method, &str, String, StatusCode, &str)> = vec![
            (
                Method::POST,
                "/v1/orgs",
                json!({"name": "x", "tier": "katman-d"}).to_string(),
                StatusCode::BAD_REQUEST,
                "katman-d",
            ),
            (
                Method::POST,
                "/v1/orgs",
                json!({"name": "", "tier": "katman-a"}).to_string(),
                StatusCode::BAD_REQUEST,
                "name must not be empty",
            ),
            (
                Method::POST,
                "/v1/orgs",
                json!({"name": "has space", "tier": "katman-a"}).to_string(),
                StatusCode::BAD_REQUEST,
                "may contain only",
            ),
            (
                Method::POST,
                "/v1/orgs",
                json!({"name": "acme", "tier": "katman-a"}).to_string(),
                StatusCode::CONFLICT,
                "already exists",
            ),
            (
                Method::POST,
                "/v1/orgs",
                json!({"name": "x", "tier": "katman-a", "plan": "gold"}).to_string(),
                StatusCode::BAD_REQUEST,
                "unknown field `plan`",
            ),
            (Method::POST, "/v1/orgs", "{\"name\": \"x\", ".to_owned(), StatusCode::BAD_REQUEST, "EOF"),
            (Method::POST, "/v1/orgs", "[1,2]".to_owned(), StatusCode::BAD_REQUEST, "invalid"),
            (
                Method::POST,
                "/v1/orgs",
                json!({"tier": "katman-a"}).to_string(),
                StatusCode::BAD_REQUEST,
                "missing field `name`",
            ),
            (
                Method::POST,
                "/v1/orgs/acme/teams",
                json!({"name": "research"}).to_string(),
                StatusCode::CONFLICT,
                "already exists",
            ),
            (
                Method::POST,
                "/v1/orgs/acme/workflows",
                json!({"name": "w", "team": "nope"}).to_string(),
                StatusCode::NOT_FOUND,
                "no team 'nope'",
            ),
            (
                Method::POST,
                "/v1/orgs/acme/credentials",
                cred(json!({"provider": "openia"})),
                StatusCode::BAD_REQUEST,
                "openia",
            ),
            (
                Method::POST,
                "/v1/orgs/acme/credentials",
                cred(json!({"name": ""})),
                StatusCode::BAD_REQUEST,
                "name must not be empty",
            ),
            (
                Method::POST,
                "/v1/orgs/acme/credentials",
                cred(json!({"name": "live"})),
                StatusCode::CONFLICT,
                "already exists",
            ),
            (
                Method::POST,
                "/v1/orgs/acme/credentials",
                cred(json!({"secret": ""})),
                StatusCode::BAD_REQUEST,
                "secret must not be empty",
            ),
            (
                Method::POST,
                "/v1/orgs/acme/credentials",
                cred(json!({"secret": "sk-abc\ndef"})),
                StatusCode::BAD_REQUEST,
                "control character",
            ),
            (
                Method::POST,
                "/v1/orgs/acme/credentials",
                cred(json!({"secret": "sk-abc\u{7f}"})),
                StatusCode::BAD_REQUEST,
                "control character",
            ),
            (
                Method::POST,
                "/v1/orgs/acme/credentials",
                cred(json!({"expires_at": "2001-01-01T00:00:00Z"})),
                StatusCode::UNPROCESSABLE_ENTITY,
                "in the past",
            ),
            (
                Method::POST,
                "/v1/orgs/acme/credentials",
                cred(json!({"expires_at": "tomorrow"})),
                StatusCode::BAD_REQUEST,
                "expires_at",
            ),
            (
                Method::POST,
                "/v1/orgs/acme/credentials",
                cred(json!({"scope": {"model_families": ["gpt4o"]}})),
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown model family 'gpt4o'",
            ),
            (
                Method::POST,
                "/v1/orgs/acme/credentials",
                cred(json!({"scope": {"capabilities": ["chta"]}})),
                StatusCode::BAD_REQUEST,
                "chta",
            ),
            (
                Method::POST,
                "/v1/orgs/acme/credentials",
                cred(json!({"scope": {"teams": ["ghosts"]}})),
                StatusCode::NOT_FOUND,
                "no team 'ghosts'",
            ),
            (
                Method::POST,
                "/v1/orgs/acme/credentials",
                cred(json!({"scope": {"tems": []}})),
                StatusCode::BAD_REQUEST,
                "unknown field `tems`",
            ),
            (
                Method::POST,
                "/v1/orgs/acme/credentials",
                cred(json!({"provider": "azure-openai"})),
                StatusCode::UNPROCESSABLE_ENTITY,
                "base_url",
            ),
            (
                Method::POST,
                "/v1/orgs/acme/credentials",
                cred(json!({"base_url": "http://10.0.0.1"})),
                StatusCode::UNPROCESSABLE_ENTITY,
                "plain http",
            ),
            (
                Method::POST,
                "/v1/orgs/acme/credentials",
                cred(json!({"secret": 42})),
                StatusCode::BAD_REQUEST,
                "invalid type",
            ),
            (
                Method::POST,
                "/v1/orgs/enterprise/credentials",
                cred(json!({})),
                StatusCode::FORBIDDEN,
                "requires every credential to have expires_at",
            ),
            (
                Method::POST,
                "/v1/orgs/enterprise/credentials",
                cred(json!({"expires_at": "2099-01-01T00:00:00Z"})),
                StatusCode::FORBIDDEN,
                "forbids org-wide",
            ),
            (Method::POST, "/v1/orgs/nowhere/credentials", cred(json!({})), StatusCode::NOT_FOUND, "no org 'nowhere'"),
            (
                Method::PATCH,
                "/v1/orgs/acme/credentials/live",
                json!({"expires_at": "2001-01-01T00:00:00Z"}).to_string(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "in the past",
            ),
            (
                Method::PATCH,
                "/v1/orgs/acme/credentials/live",
                json!({"secret": "x"}).to_string(),
                StatusCode::BAD_REQUEST,
                "unknown field `secret`",
            ),
            (
                Method::PATCH,
                "/v1/orgs/acme/credentials/main",
                json!({"priority": 3}).to_string(),
                StatusCode::CONFLICT,
                "revoked",
            ),
            (
                Method::POST,
                "/v1/orgs/acme/credentials/live/rotate",
                json!({"secret": " "}).to_string(),
                StatusCode::BAD_REQUEST,
                "secret must not be empty",
            ),
            (
                Method::POST,
                "/v1/orgs/acme/credentials/main/rotate",
                json!({"secret": "sk-new-0123456789abcdef"}).to_string(),
                StatusCode::CONFLICT,
                "revoked",
            ),
            (
                Method::POST,
                "/v1/orgs/acme/credentials/ghost/disable",
                "".to_owned(),
                StatusCode::NOT_FOUND,
                "no credential 'ghost'",
            ),
            (
                Method::POST,
                "/v1/orgs/acme/tokens",
                json!({"team": "ghosts"}).to_string(),
                StatusCode::NOT_FOUND,
                "no team 'ghosts'",
            ),
            (
                Method::POST,
                "/v1/orgs/acme/tokens",
                json!({"team": "research", "workflows": ["ghost"]}).to_string(),
                StatusCode::NOT_FOUND,
                "no workflow 'ghost'",
            ),
            (
                Method::POST,
                "/v1/orgs/acme/tokens",
                json!({"team": "research", "expires_at": "2001-01-01T00:00:00Z"}).to_string(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "in the past",
            ),
            (
                Method::POST,
                "/v1/orgs/acme/tokens",
                json!({"team": "research", "name": "no spaces"}).to_string(),
                StatusCode::BAD_REQUEST,
                "name:",
            ),
            (
                Method::POST,
                "/v1/orgs/acme/tokens",
                json!({"team": "research", "description": "x".repeat(501)}).to_string(),
                StatusCode::BAD_REQUEST,
                "description: longer than 500 characters",
            ),
            (
                Method::POST,
                "/v1/orgs/acme/tokens",
                json!({"team": "research", "description": "line\nbreak"}).to_string(),
                StatusCode::BAD_REQUEST,
                "description: a control character",
            ),
            (
                Method::DELETE,
                "/v1/orgs/acme/tokens/no-such-token",
                "".to_owned(),
                StatusCode::NOT_FOUND,
                "no workload token 'no-such-token'",
            ),
            (
                Method::POST,
                "/v1/orgs/acme/admin-tokens",
                json!({"expires_at": "2001-01-01T00:00:00Z"}).to_string(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "in the past",
            ),
            (Method::DELETE, "/v1/orgs/acme/tokens/tok_nope", "".to_owned(), StatusCode::NOT_FOUND, "tok_nope"),
            (Method::GET, "/v1/nothing-here", "".to_owned(), StatusCode::NOT_FOUND, "no such endpoint"),
        ];

        let counts = h.counts().await;
        let keyring = h.keyring_bytes();
        let operator = h.operator.clone();
        for (method, path, body, status, fragment) in cases {
            let answer = h.call(method.clone(), path, Some(&operator), Some(&body)).await;
            assert_eq!(answer.status, status, "{method} {path} {body}: {}", answer.raw);
            let message =
                answer.json["error"]["message"].as_str().unwrap_or_else(|| panic!("no error message: {}", answer.raw));
            assert!(message.contains(fragment), "{method} {path} {body}: message {message:?} lacks {fragment:?}");
            assert!(answer.json["error"]["code"].is_string());
            assert_eq!(h.counts().await, counts, "{method} {path} {body} changed the store");
            assert_eq!(h.keyring_bytes(), keyring, "{method} {path} {body} changed the keyring");
        }
        // An empty patch is not an error: it changes nothing (as a JSON merge patch would).
        let unchanged = h.ok(Method::PATCH, "/v1/orgs/acme/credentials/live", json!({})).await;
        assert_eq!(unchanged["name"], "live");
        assert_eq!(h.counts().await, counts, "PATCH {{}} changed the store");
    })
    .await
    .unwrap();
}

/// Billing input that is wrong is refused with a 4xx naming the problem, and changes
/// nothing: no row, no org setting, no platform pool.
#[tokio::test]
async fn billing_bad_input_is_refused_and_nothing_changes() {
    for_each_backend("billing_bad_input", |t| async move {
        let h = harness(t).await;
        h.ok(Method::POST, "/v1/orgs", json!({"name": "acme", "tier": "katman-a"})).await;
        h.ok(Method::POST, "/v1/orgs", json!({"name": "enterprise", "tier": "katman-c"})).await;
        h.ok(Method::POST, "/v1/orgs/acme/teams", json!({"name": "research"})).await;
        h.ok(
            Method::POST,
            "/v1/orgs/acme/credentials",
            json!({"name": "live", "provider": "openai", "secret": CANARY}),
        )
        .await;
        let card = |per_call: Value| {
            json!({"per_call": per_call, "per_million_input_tokens": "0.1", "per_million_output_tokens": "0.2"})
                .to_string()
        };
        let cases: Vec<(Method, &str, String, StatusCode, &str)> = vec![
            (
                Method::PATCH,
                "/v1/orgs/acme",
                json!({"tier": "katman-d"}).to_string(),
                StatusCode::BAD_REQUEST,
                "katman-d",
            ),
            (Method::PATCH, "/v1/orgs/acme", "{}".to_owned(), StatusCode::BAD_REQUEST, "missing field `tier`"),
            (
                Method::PATCH,
                "/v1/orgs/acme",
                json!({"tier": "katman-b", "name": "x"}).to_string(),
                StatusCode::BAD_REQUEST,
                "unknown field `name`",
            ),
            // Its credential "live" is org-wide and never expires: named in the refusal.
            (
                Method::PATCH,
                "/v1/orgs/acme",
                json!({"tier": "katman-c"}).to_string(),
                StatusCode::FORBIDDEN,
                "(live) has no expires_at",
            ),
            (
                Method::PATCH,
                "/v1/orgs/ghost",
                json!({"tier": "katman-b"}).to_string(),
                StatusCode::NOT_FOUND,
                "no org 'ghost'",
            ),
            (Method::PUT, "/v1/orgs/acme/negotiated-rate-card", card(json!("0.1")), StatusCode::FORBIDDEN, "katman-c"),
            (
                Method::PUT,
                "/v1/orgs/enterprise/negotiated-rate-card",
                card(json!("-1")),
                StatusCode::BAD_REQUEST,
                "negative",
            ),
            (
                Method::PUT,
                "/v1/orgs/enterprise/negotiated-rate-card",
                card(json!("abc")),
                StatusCode::BAD_REQUEST,
                "not a decimal",
            ),
            (
                Method::PUT,
                "/v1/orgs/enterprise/negotiated-rate-card",
                card(json!("1e-3")),
                StatusCode::BAD_REQUEST,
                "not a decimal",
            ),
            (
                Method::PUT,
                "/v1/orgs/enterprise/negotiated-rate-card",
                card(json!(0.002)),
                StatusCode::BAD_REQUEST,
                "decimal strings",
            ),
            (
                Method::PUT,
                "/v1/orgs/enterprise/negotiated-rate-card",
                card(json!("0.0000000000001")),
                StatusCode::BAD_REQUEST,
                "more than 12 digits",
            ),
            (
                Method::PUT,
                "/v1/orgs/enterprise/negotiated-rate-card",
                json!({"per_call": "0.1", "per_million_input_tokens": "0.1"}).to_string(),
                StatusCode::BAD_REQUEST,
                "missing field `per_million_output_tokens`",
            ),
            (
                Method::PUT,
                "/v1/orgs/acme/budget",
                json!({"monthly_limit": "-5"}).to_string(),
                StatusCode::BAD_REQUEST,
                "negative",
            ),
            (
                Method::PUT,
                "/v1/orgs/acme/budget",
                json!({"monthly_limit": 5}).to_string(),
                StatusCode::BAD_REQUEST,
                "decimal strings",
            ),
            (
                Method::PUT,
                "/v1/orgs/acme/budget",
                json!({"teams": {"ghosts": "1"}}).to_string(),
                StatusCode::NOT_FOUND,
                "no team 'ghosts'",
            ),
            (
                Method::PUT,
                "/v1/orgs/acme/controls",
                json!({"max_credential_age_days": 30}).to_string(),
                StatusCode::FORBIDDEN,
                "katman-c",
            ),
            (
                Method::PUT,
                "/v1/orgs/enterprise/controls",
                json!({"allowed_source_cidrs": ["10.0.0.1/8"]}).to_string(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "host bits",
            ),
            (
                Method::PUT,
                "/v1/orgs/enterprise/controls",
                json!({"allowed_source_cidrs": ["10.0.0.0/33"]}).to_string(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "not a CIDR",
            ),
            (
                Method::PUT,
                "/v1/orgs/enterprise/controls",
                json!({"allowed_source_cidrs": ["nope"]}).to_string(),
                StatusCode::BAD_REQUEST,
                "not a CIDR",
            ),
            (
                Method::PUT,
                "/v1/orgs/enterprise/controls",
                json!({"max_credential_age_days": 0}).to_string(),
                StatusCode::BAD_REQUEST,
                "out of range",
            ),
            (
                Method::PUT,
                "/v1/orgs/enterprise/controls",
                json!({"max_credential_age_days": -1}).to_string(),
                StatusCode::BAD_REQUEST,
                "invalid value",
            ),
            (
                Method::PUT,
                "/v1/orgs/enterprise/controls",
                json!({"max_age": 3}).to_string(),
                StatusCode::BAD_REQUEST,
                "unknown field `max_age`",
            ),
            (
                Method::GET,
                "/v1/orgs/acme/usage?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z",
                String::new(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "must be before",
            ),
            (Method::GET, "/v1/orgs/acme/usage?from=yesterday", String::new(), StatusCode::BAD_REQUEST, "RFC 3339"),
            (
                Method::GET,
                "/v1/orgs/acme/usage?source=cache",
                String::new(),
                StatusCode::BAD_REQUEST,
                "rollup or audit",
            ),
            (
                Method::GET,
                "/v1/orgs/acme/usage?month=1",
                String::new(),
                StatusCode::BAD_REQUEST,
                "unknown query parameter",
            ),
            (
                Method::GET,
                "/v1/usage?to=2020-01-01T00:00:00Z&from=2021-01-01T00:00:00Z",
                String::new(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "must be before",
            ),
            (
                Method::POST,
                "/v1/platform/credentials",
                json!({"name": "p", "provider": "openai", "secret": CANARY_2, "scope": {"teams": ["research"]}})
                    .to_string(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "do not apply",
            ),
            (
                Method::POST,
                "/v1/platform/credentials",
                json!({"name": "p", "provider": "openai", "secret": CANARY_2, "scope": {"model_families": ["gpt4o"]}})
                    .to_string(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown model family 'gpt4o'",
            ),
            (
                Method::POST,
                "/v1/platform/credentials",
                json!({"name": "has space", "provider": "openai", "secret": CANARY_2}).to_string(),
                StatusCode::BAD_REQUEST,
                "may contain only",
            ),
            (Method::GET, "/v1/platform/credentials/nope", String::new(), StatusCode::NOT_FOUND, "platform pool"),
            (
                Method::POST,
                "/v1/platform/credentials/nope/revoke",
                json!({"confirm": true}).to_string(),
                StatusCode::NOT_FOUND,
                "platform pool",
            ),
            // The platform pool is not an org: no org path reaches it.
            (Method::GET, "/v1/orgs/_platform", String::new(), StatusCode::NOT_FOUND, "no org"),
        ];
        let before = (h.counts().await, h.op(Method::GET, "/v1/orgs", json!({})).await.json);
        let keyring = h.keyring_bytes();
        let operator = h.operator.clone();
        for (method, path, body, status, fragment) in cases {
            let body = (!body.is_empty()).then_some(body);
            let answer = h.call(method.clone(), path, Some(&operator), body.as_deref()).await;
            assert_eq!(answer.status, status, "{method} {path} {body:?}: {}", answer.raw);
            let message =
                answer.json["error"]["message"].as_str().unwrap_or_else(|| panic!("no error message: {}", answer.raw));
            assert!(message.contains(fragment), "{method} {path} {body:?}: message {message:?} lacks {fragment:?}");
            let after = (h.counts().await, h.op(Method::GET, "/v1/orgs", json!({})).await.json);
            assert_eq!(after, before, "{method} {path} {body:?} changed something");
            assert_eq!(h.keyring_bytes(), keyring, "{method} {path} {body:?} changed the keyring");
        }
        let platform = h.op(Method::GET, "/v1/platform/credentials", json!({})).await;
        assert_eq!(platform.json["credentials"], json!([]), "no platform pool was made by refused requests");

        // What works, to be sure the refusals were about the input.
        let org = h.ok(Method::PATCH, "/v1/orgs/enterprise", json!({"tier": "katman-b"})).await;
        assert_eq!(org["tier"], "katman-b");
        let view = h
            .ok(Method::PUT, "/v1/orgs/acme/budget", json!({"monthly_limit": "50.00", "teams": {"research": "10"}}))
            .await;
        assert_eq!((view["monthly_limit"].clone(), view["teams"]["research"].clone()), (json!("50"), json!("10")));
        assert_eq!(view["spent_this_month"], "0.000000");
        let statement = h.ok(Method::GET, "/v1/orgs/acme/usage", json!({})).await;
        assert_eq!((statement["calls"].clone(), statement["total"].clone()), (json!(0), json!("0.000000")));
    })
    .await
    .unwrap();
}

/// The operator alone changes tiers, negotiates cards, manages the platform pool and
/// sees every org's usage; an org admin manages its own budget and controls.
#[tokio::test]
async fn billing_powers_are_the_operators() {
    for_each_backend("billing_powers", |t| async move {
        let h = harness(t).await;
        h.ok(Method::POST, "/v1/orgs", json!({"name": "corp", "tier": "katman-c"})).await;
        h.ok(Method::POST, "/v1/orgs/corp/teams", json!({"name": "research"})).await;
        let shared = h
            .ok(
                Method::POST,
                "/v1/platform/credentials",
                json!({"name": "shared", "provider": "openai", "secret": CANARY}),
            )
            .await;
        // The pool is stored like an org, but no org route reaches it, not even by its id.
        let pool = shared["org_id"].as_str().unwrap().to_owned();
        for (method, path) in [
            (Method::GET, format!("/v1/orgs/{pool}")),
            (Method::GET, format!("/v1/orgs/{pool}/credentials")),
            (Method::POST, format!("/v1/orgs/{pool}/teams")),
            (Method::POST, format!("/v1/orgs/{pool}/credentials/shared/revoke")),
            (Method::DELETE, format!("/v1/orgs/{pool}?confirm=true")),
        ] {
            let answer = h.op(method.clone(), &path, json!({"name": "x"})).await;
            assert_eq!(answer.status, StatusCode::NOT_FOUND, "{method} {path}: {}", answer.raw);
        }
        let listed = h.op(Method::GET, "/v1/orgs", json!({})).await.json;
        assert!(listed["orgs"].as_array().unwrap().iter().all(|o| o["id"] != pool.as_str()), "{listed}");
        let admin =
            h.ok(Method::POST, "/v1/orgs/corp/admin-tokens", json!({})).await["token"].as_str().unwrap().to_owned();
        let card = r#"{"per_call":"0.1","per_million_input_tokens":"0.1","per_million_output_tokens":"0.1"}"#;
        let counts = h.counts().await;
        let refused: Vec<(Method, &str, Option<&str>)> = vec![
            (Method::PATCH, "/v1/orgs/corp", Some(r#"{"tier":"katman-a"}"#)),
            (Method::PUT, "/v1/orgs/corp/negotiated-rate-card", Some(card)),
            (Method::DELETE, "/v1/orgs/corp/negotiated-rate-card", None),
            (Method::GET, "/v1/usage", None),
            (Method::GET, "/v1/platform/credentials", None),
            (Method::GET, "/v1/platform/credentials/shared", None),
            (
                Method::POST,
                "/v1/platform/credentials",
                Some(r#"{"name":"x","provider":"openai","secret":"sk-x-0123456789abcdef"}"#),
            ),
            (Method::PATCH, "/v1/platform/credentials/shared", Some(r#"{"priority":1}"#)),
            (Method::POST, "/v1/platform/credentials/shared/rotate", Some(r#"{"secret":"sk-y-0123456789abcdef"}"#)),
            (Method::POST, "/v1/platform/credentials/shared/disable", None),
            (Method::POST, "/v1/platform/credentials/shared/revoke", None),
            (Method::GET, "/v1/platform/credentials/shared/lifecycle", None),
            (Method::GET, "/v1/platform/audit/verify", None),
        ];
        for (method, path, body) in refused {
            let answer = h.call(method.clone(), path, Some(&admin), body).await;
            assert_eq!(answer.status, StatusCode::FORBIDDEN, "{method} {path}: {}", answer.raw);
            assert!(answer.raw.contains("only the operator"), "{method} {path}: {}", answer.raw);
        }
        assert_eq!(h.counts().await, counts, "nothing was written by refused requests");
        // Its own budget, controls, card and statement are the org admin's to see and set.
        for (method, path, body) in [
            (Method::PUT, "/v1/orgs/corp/budget", Some(r#"{"monthly_limit":"12.5"}"#)),
            (
                Method::PUT,
                "/v1/orgs/corp/controls",
                Some(r#"{"max_credential_age_days":90,"allowed_source_cidrs":["10.0.0.0/8"]}"#),
            ),
            (Method::GET, "/v1/orgs/corp/controls", None),
            (Method::GET, "/v1/orgs/corp/rate-card", None),
            (Method::GET, "/v1/orgs/corp/usage", None),
        ] {
            let answer = h.call(method.clone(), path, Some(&admin), body).await;
            assert_eq!(answer.status, StatusCode::OK, "{method} {path}: {}", answer.raw);
        }
        // A network listed twice counts once.
        let twice = r#"{"max_credential_age_days":90,"allowed_source_cidrs":["10.0.0.0/8","10.0.0.0/8","fd00::/8"]}"#;
        let controls = h.call(Method::PUT, "/v1/orgs/corp/controls", Some(&admin), Some(twice)).await;
        assert_eq!(controls.json["allowed_source_cidrs"], json!(["10.0.0.0/8", "fd00::/8"]), "{}", controls.raw);
        let org = h.call(Method::GET, "/v1/orgs/corp", Some(&admin), None).await.json;
        assert_eq!(org["controls"]["max_credential_age_days"], 90);
        assert_eq!(org["budget"]["monthly_limit"], "12.5");
        // The operator's changes are lifecycle events of the org.
        h.ok(Method::PUT, "/v1/orgs/corp/negotiated-rate-card", serde_json::from_str(card).unwrap()).await;
        let view = h.ok(Method::GET, "/v1/orgs/corp/rate-card", json!({})).await;
        assert_eq!((view["negotiated"].clone(), view["per_call"].clone()), (json!(true), json!("0.1")));
        let negotiated = h.ok(Method::GET, "/v1/orgs/corp/negotiated-rate-card", json!({})).await;
        assert_eq!(negotiated, view);
        // Removed, the negotiated card is gone (404) and the tier's card is in force.
        let tier_card = h.ok(Method::DELETE, "/v1/orgs/corp/negotiated-rate-card", json!({})).await;
        assert_eq!(tier_card["negotiated"], false);
        let gone = h.op(Method::GET, "/v1/orgs/corp/negotiated-rate-card", json!({})).await;
        assert_eq!(gone.status, StatusCode::NOT_FOUND, "{}", gone.raw);
        assert_eq!(h.ok(Method::GET, "/v1/orgs/corp/rate-card", json!({})).await, tier_card);
        h.ok(Method::PUT, "/v1/orgs/corp/negotiated-rate-card", serde_json::from_str(card).unwrap()).await;
        let changed = h.ok(Method::PATCH, "/v1/orgs/corp", json!({"tier": "katman-b"})).await;
        assert_eq!(changed["tier"], "katman-b");
        assert!(
            changed.get("rate_card").is_none() && changed.get("controls").is_none(),
            "katman-c's own settings go: {changed}"
        );
        let view = h.ok(Method::GET, "/v1/orgs/corp/rate-card", json!({})).await;
        assert_eq!((view["negotiated"].clone(), view["per_call"].clone()), (json!(false), json!("0.0005")));
    })
    .await
    .unwrap();
}

/// Admin tokens have a lifecycle: listed without their text, with their last use;
/// revoked at once (also through another node sharing the store); an org admin's new
/// token expires no later than its own; issue and revoke are lifecycle events.
#[tokio::test]
async fn admin_tokens_are_listed_and_revoked() {
    for_each_backend("admin_tokens_lifecycle", |t| async move {
        let h = harness(t).await;
        h.ok(Method::POST, "/v1/orgs", json!({"name": "alpha", "tier": "katman-a"})).await;
        let tomorrow = Timestamp::from_micros(Timestamp::now().as_micros() + 86_400_000_000).unwrap();
        let a = h.ok(Method::POST, "/v1/orgs/alpha/admin-tokens", json!({"expires_at": tomorrow})).await;
        let (a_id, a_text) = (a["id"].as_str().unwrap().to_owned(), a["token"].as_str().unwrap().to_owned());

        let listed = h.op(Method::GET, "/v1/orgs/alpha/admin-tokens", json!({})).await;
        assert_eq!(listed.status, StatusCode::OK, "{}", listed.raw);
        assert!(!listed.raw.contains(&a_text) && !listed.raw.contains("byokadm_"), "never the text: {}", listed.raw);
        assert_eq!(listed.json["admin_tokens"][0]["id"], a_id.as_str());
        assert_eq!(listed.json["admin_tokens"][0]["last_used_at"], Value::Null);

        // The org admin's own use is recorded; its new tokens expire with it at the latest.
        let b = h.call(Method::POST, "/v1/orgs/alpha/admin-tokens", Some(&a_text), Some("{}")).await;
        assert_eq!(b.status, StatusCode::CREATED, "{}", b.raw);
        assert_eq!(b.json["expires_at"], json!(tomorrow), "defaults to the issuer's expiry");
        let later = Timestamp::from_micros(tomorrow.as_micros() + 1).unwrap();
        let refused = h
            .call(
                Method::POST,
                "/v1/orgs/alpha/admin-tokens",
                Some(&a_text),
                Some(&json!({"expires_at": later}).to_string()),
            )
            .await;
        assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.raw);
        assert!(refused.raw.contains("no later than its own"), "{}", refused.raw);
        let b_text = b.json["token"].as_str().unwrap().to_owned();
        let b_id = b.json["id"].as_str().unwrap().to_owned();
        let listed = h.op(Method::GET, "/v1/orgs/alpha/admin-tokens", json!({})).await.json;
        let a_row =
            listed["admin_tokens"].as_array().unwrap().iter().find(|t| t["id"] == a_id.as_str()).unwrap().clone();
        assert!(a_row["last_used_at"].is_string(), "{a_row}");

        // A second node on the same store: a revocation through one applies on the other at once.
        let keyring = LocalKeyring::open(h.dir.path().join("keyring.json")).unwrap();
        let other = byok_admin::router(Vault::new(
            h.t.store().clone(),
            KmsHandle::new(Arc::new(keyring), 1),
            ModelFamilyRegistry::seeded(),
            VaultPolicy::default(),
        ));
        let on_other = |token: String| {
            let other = other.clone();
            async move {
                let request = Request::builder()
                    .uri("/v1/orgs/alpha")
                    .header("authorization", format!("Bearer {token}"))
                    .body(Body::empty())
                    .unwrap();
                other.oneshot(request).await.unwrap().status()
            }
        };
        assert_eq!(on_other(b_text.clone()).await, StatusCode::OK);
        let revoked = h.call(Method::DELETE, &format!("/v1/orgs/alpha/admin-tokens/{b_id}"), Some(&a_text), None).await;
        assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.raw);
        assert!(revoked.json["revoked_at"].is_string());
        assert_eq!(on_other(b_text.clone()).await, StatusCode::UNAUTHORIZED);
        assert_eq!(h.call(Method::GET, "/v1/orgs/alpha", Some(&b_text), None).await.status, StatusCode::UNAUTHORIZED);
        // Idempotent; an unknown id, the operator's own token or another org's is not found.
        let again = h.op(Method::DELETE, &format!("/v1/orgs/alpha/admin-tokens/{b_id}"), json!({})).await;
        assert_eq!(again.json["revoked_at"], revoked.json["revoked_at"]);
        for id in ["adm_01JD7X3M5Q8V6N2K4T9R1B0C7E", "nope"] {
            let answer = h.op(Method::DELETE, &format!("/v1/orgs/alpha/admin-tokens/{id}"), json!({})).await;
            assert_eq!(answer.status, StatusCode::NOT_FOUND, "{id}: {}", answer.raw);
        }
        let org_id: byok_domain::OrgId =
            h.op(Method::GET, "/v1/orgs/alpha", json!({})).await.json["id"].as_str().unwrap().parse().unwrap();
        let events = h.t.store().list_events(&org_id, &Default::default()).await.unwrap();
        let kinds: Vec<String> =
            events.iter().map(|e| e.kind.to_string()).filter(|k| k.starts_with("admin_token")).collect();
        assert_eq!(kinds, ["admin_token_issued", "admin_token_issued", "admin_token_revoked"]);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn org_admin_tokens_are_confined_to_their_org() {
    for_each_backend("org_admin_tokens_are_confined_to_their_org", |t| async move {
        let h = harness(t).await;
        let a = h.ok(Method::POST, "/v1/orgs", json!({"name": "alpha", "tier": "katman-a"})).await;
        h.ok(Method::POST, "/v1/orgs", json!({"name": "beta", "tier": "katman-b"})).await;
        h.ok(Method::POST, "/v1/orgs/beta/teams", json!({"name": "t"})).await;
        h.ok(
            Method::POST,
            "/v1/orgs/beta/credentials",
            json!({"name": "c", "provider": "anthropic", "secret": CANARY}),
        )
        .await;
        let issued = h.ok(Method::POST, "/v1/orgs/alpha/admin-tokens", json!({})).await;
        let alpha_admin = issued["token"].as_str().unwrap().to_owned();
        assert!(alpha_admin.starts_with("byokadm_"));

        // Its own org works.
        let own = h.call(Method::POST, "/v1/orgs/alpha/teams", Some(&alpha_admin), Some(r#"{"name":"mine"}"#)).await;
        assert_eq!(own.status, StatusCode::CREATED);
        let listed = h.call(Method::GET, "/v1/orgs", Some(&alpha_admin), None).await;
        let names: Vec<&str> =
            listed.json["orgs"].as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["alpha"]);
        let by_id =
            h.call(Method::GET, &format!("/v1/orgs/{}", a["id"].as_str().unwrap()), Some(&alpha_admin), None).await;
        assert_eq!(by_id.status, StatusCode::OK);

        let counts = h.counts().await;
        let refused: Vec<(Method, &str, Option<&str>)> = vec![
            (Method::GET, "/v1/orgs/beta", None),
            (Method::GET, "/v1/orgs/beta/credentials", None),
            (Method::GET, "/v1/orgs/beta/credentials/c", None),
            (Method::GET, "/v1/orgs/beta/credentials/c/lifecycle", None),
            (Method::GET, "/v1/orgs/beta/teams", None),
            (Method::GET, "/v1/orgs/beta/tokens", None),
            (Method::POST, "/v1/orgs/beta/teams", Some(r#"{"name":"x"}"#)),
            (
                Method::POST,
                "/v1/orgs/beta/credentials",
                Some(r#"{"name":"x","provider":"openai","secret":"sk-x-0123456789abcdef"}"#),
            ),
            (Method::POST, "/v1/orgs/beta/credentials/c/revoke", None),
            (Method::POST, "/v1/orgs/beta/credentials/c/rotate", Some(r#"{"secret":"sk-y-0123456789abcdef"}"#)),
            (Method::PATCH, "/v1/orgs/beta/credentials/c", Some(r#"{"priority":1}"#)),
            (Method::POST, "/v1/orgs/beta/tokens", Some(r#"{"team":"t"}"#)),
            (Method::POST, "/v1/orgs/beta/admin-tokens", None),
            (Method::GET, "/v1/orgs/no-such-org", None),
            (Method::POST, "/v1/orgs", Some(r#"{"name":"gamma","tier":"katman-a"}"#)),
            // Choosing a KMS is the operator's: even for the token's own org.
            (Method::PUT, "/v1/orgs/alpha/kms", Some(r#"{"kms":"default"}"#)),
            (Method::PUT, "/v1/orgs/beta/kms", Some(r#"{"kms":"default"}"#)),
            (Method::GET, "/v1/kms", None),
        ];
        for (method, path, body) in refused {
            let answer = h.call(method.clone(), path, Some(&alpha_admin), body).await;
            assert_eq!(answer.status, StatusCode::FORBIDDEN, "{method} {path}: {}", answer.raw);
            assert_eq!(answer.json["error"]["code"], "forbidden");
            assert!(!answer.raw.contains("cred_"), "refusal must not reveal beta's data");
        }
        assert_eq!(h.counts().await, counts);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn requests_without_a_valid_admin_token_are_refused() {
    for_each_backend("requests_without_a_valid_admin_token_are_refused", |t| async move {
        let h = harness(t).await;
        h.ok(Method::POST, "/v1/orgs", json!({"name": "acme", "tier": "katman-a"})).await;
        h.ok(Method::POST, "/v1/orgs/acme/teams", json!({"name": "t"})).await;
        let workload = h.ok(Method::POST, "/v1/orgs/acme/tokens", json!({"team": "t"})).await["token"]
            .as_str()
            .unwrap()
            .to_owned();
        let expired =
            h.ok(Method::POST, "/v1/orgs/acme/admin-tokens", json!({"expires_at": "2099-01-01T00:00:00Z"})).await;
        assert!(expired["token"].is_string());
        let forged = TokenText::generate(TokenKind::Admin);
        for token in [None, Some("nonsense"), Some(workload.as_str()), Some(forged.expose())] {
            let answer = h.call(Method::GET, "/v1/orgs", token, None).await;
            assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
            assert_eq!(answer.json["error"]["code"], "unauthorized");
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn health_readiness_and_openapi() {
    let h = harness(TestStore::sqlite().await.unwrap()).await;
    assert_eq!(h.call(Method::GET, "/healthz", None, None).await.status, StatusCode::OK);
    assert_eq!(h.call(Method::GET, "/readyz", None, None).await.status, StatusCode::OK);
    let doc = h.call(Method::GET, "/v1/openapi.json", None, None).await.json;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/v1/orgs",
        "/v1/orgs/{org}/credentials",
        "/v1/orgs/{org}/credentials/{cred}/rotate",
        "/v1/orgs/{org}/tokens/{id}",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing from the OpenAPI document");
    }
    for path in ["/v1/orgs/{org}/kms", "/v1/kms"] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing from the OpenAPI document");
    }
    let secret = &doc["components"]["schemas"]["CreateCredentialRequest"]["properties"]["secret"];
    assert_eq!(secret["writeOnly"], true, "{secret}");

    // The KMSs, their counters, and the same counters for Prometheus (no token needed:
    // nothing in them is a secret or an org's data).
    h.ok(Method::POST, "/v1/orgs", json!({"name": "acme", "tier": "katman-c"})).await;
    let kms = h.ok(Method::GET, "/v1/kms", Value::Null).await;
    assert_eq!(kms["kms"][0]["name"], "default", "{kms}");
    assert_eq!(kms["kms"][0]["healthy"], true, "{kms}");
    assert!(kms["kms"][0]["wraps"].as_u64().unwrap() >= 1, "{kms}");
    let metrics = h.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(metrics.raw.contains(r#"byok_kms_operations_total{kms="default",op="wrap"}"#), "{}", metrics.raw);
    // Moving to a KMS that is not configured names what is.
    let refused = h.op(Method::PUT, "/v1/orgs/acme/kms", json!({"kms": "acme-hsm"})).await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND, "{}", refused.raw);
    assert!(refused.raw.contains("acme-hsm") && refused.raw.contains("default"), "{}", refused.raw);
    let same = h.op(Method::PUT, "/v1/orgs/acme/kms", json!({"kms": "default"})).await;
    assert_eq!(same.status, StatusCode::ACCEPTED, "{}", same.raw);
    assert_eq!(same.json["kms"], "default");

    // Readiness fails when the store is gone.
    h.t.store().close().await;
    let answer = h.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.json["status"], "unavailable");
}
