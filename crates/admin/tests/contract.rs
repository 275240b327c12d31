//! The admin API keeps its own contract: the defects an OpenAPI fuzzer found in the field,
//! each pinned (array bodies read as structs, a destructive call running on defaults, a
//! page size past what the document allows), and the destructive operations' explicit
//! confirmation. Every refusal leaves the store as it was.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use axum::http::{Method, StatusCode};
use byok_store::testing::for_each_backend;
use serde_json::json;
use support::{harness, Harness, CANARY};

/// An org `acme` with a team and a credential `oa` (priority 0).
async fn seeded(h: &Harness) {
    h.ok(Method::POST, "/v1/orgs", json!({"name": "acme", "tier": "katman-b"})).await;
    h.ok(Method::POST, "/v1/orgs/acme/teams", json!({"name": "agents"})).await;
    h.ok(Method::POST, "/v1/orgs/acme/credentials", json!({"name": "oa", "provider": "openai", "secret": CANARY}))
        .await;
}

/// serde's derive reads a JSON array as a struct's fields in order: `[null,null,7]` was a
/// priority of 7, `["arr1","katman-b"]` an org. Every body is an object or nothing.
#[tokio::test]
async fn array_bodies_are_refused() {
    for_each_backend("array_bodies_are_refused", |t| async move {
        let h = harness(t).await;
        seeded(&h).await;
        let counts = h.counts().await;
        let operator = h.operator.clone();
        for (method, path, body) in [
            (Method::PATCH, "/v1/orgs/acme/credentials/oa", "[null,null,7]"),
            (Method::POST, "/v1/orgs", r#"["arr1","katman-b"]"#),
            (Method::POST, "/v1/orgs/acme/teams", r#"["t2"]"#),
            (Method::POST, "/v1/orgs/acme/tokens", r#"["agents"]"#),
            (Method::POST, "/v1/orgs/acme/credentials/oa/revoke", "[true]"),
            (Method::POST, "/v1/orgs/acme/audit/purge", r#"["retention"]"#),
            (Method::PUT, "/v1/orgs/acme/budget", r#"["1.00"]"#),
            (Method::PUT, "/v1/orgs/acme/limits", r#"[{"rpm":10}]"#),
        ] {
            let answer = h.call(method.clone(), path, Some(&operator), Some(body)).await;
            assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{method} {path} {body}: {}", answer.raw);
            assert_eq!(answer.json["error"]["code"], "invalid_request", "{}", answer.raw);
            assert!(answer.raw.contains("expected a JSON object"), "{}", answer.raw);
            assert_eq!(h.counts().await, counts, "{method} {path} {body} wrote something");
        }
        let cred = h.ok(Method::GET, "/v1/orgs/acme/credentials/oa", json!({})).await;
        assert_eq!((cred["priority"].clone(), cred["state"].clone()), (json!(0), json!("active")));
        let orgs = h.ok(Method::GET, "/v1/orgs", json!({})).await;
        assert_eq!(orgs["orgs"].as_array().unwrap().len(), 1, "{orgs}");
    })
    .await
    .unwrap();
}

/// Nothing destructive runs on defaults: a purge says where it cuts, a revocation, a KEK
/// rotation and an org deletion say `confirm: true`. Without it: 400, nothing changed.
#[tokio::test]
async fn destructive_operations_need_an_explicit_body() {
    for_each_backend("destructive_operations_need_an_explicit_body", |t| async move {
        let h = harness(t).await;
        seeded(&h).await;
        let counts = h.counts().await;
        let purges = || h.t.query_i64("SELECT COUNT(*) FROM lifecycle_events WHERE kind = 'audit_purged'");
        let operator = h.operator.clone();
        let refused: Vec<(Method, &str, Option<&str>, &str)> = vec![
            (Method::POST, "/v1/orgs/acme/audit/purge", None, "missing field `before`"),
            (Method::POST, "/v1/orgs/acme/audit/purge", Some("{}"), "missing field `before`"),
            (Method::POST, "/v1/orgs/acme/audit/purge", Some(r#"{"before":null}"#), "before"),
            (Method::POST, "/v1/orgs/acme/audit/purge", Some(r#"{"before":"last-week"}"#), "retention"),
            (Method::POST, "/v1/orgs/acme/credentials/oa/revoke", None, "missing field `confirm`"),
            (Method::POST, "/v1/orgs/acme/credentials/oa/revoke", Some("{}"), "missing field `confirm`"),
            (Method::POST, "/v1/orgs/acme/credentials/oa/revoke", Some(r#"{"confirm":false}"#), "must be true"),
            (Method::POST, "/v1/orgs/acme/credentials/oa/revoke", Some(r#"{"confirm":"true"}"#), "confirm"),
            (Method::POST, "/v1/orgs/acme/kek/rotate", None, "missing field `confirm`"),
            (Method::POST, "/v1/orgs/acme/kek/rotate", Some(r#"{"confirm":false}"#), "must be true"),
            (Method::DELETE, "/v1/orgs/acme", None, "confirm=true"),
            (Method::DELETE, "/v1/orgs/acme?confirm=false", None, "confirm=true"),
            (Method::DELETE, "/v1/orgs/acme?confirm=1", None, "confirm=true"),
        ];
        for (method, path, body, fragment) in refused {
            let answer = h.call(method.clone(), path, Some(&operator), body).await;
            assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{method} {path} {body:?}: {}", answer.raw);
            assert!(answer.raw.contains(fragment), "{method} {path} {body:?}: {} lacks {fragment:?}", answer.raw);
            assert_eq!(h.counts().await, counts, "{method} {path} {body:?} wrote something");
        }
        assert_eq!(purges().await.unwrap(), 0);
        let org = h.ok(Method::GET, "/v1/orgs/acme", json!({})).await;
        assert_eq!((org["state"].clone(), org["kek_version"].clone()), (json!("active"), json!(1)));

        // A cut in the future would purge what is not yet past anything: 422, not a purge.
        let future = h.op(Method::POST, "/v1/orgs/acme/audit/purge", json!({"before": "2999-01-01T00:00:00Z"})).await;
        assert_eq!(future.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", future.raw);

        // Said explicitly, each runs.
        let purged = h.ok(Method::POST, "/v1/orgs/acme/audit/purge", json!({"before": "retention"})).await;
        assert_eq!(purged["removed"], 0);
        let purged = h.ok(Method::POST, "/v1/orgs/acme/audit/purge", json!({"before": "2020-01-01T00:00:00Z"})).await;
        assert_eq!(purged["before"], "2020-01-01T00:00:00Z");
        let revoked = h.ok(Method::POST, "/v1/orgs/acme/credentials/oa/revoke", json!({"confirm": true})).await;
        assert_eq!(revoked["state"], "revoked");
        let rotated = h.op(Method::POST, "/v1/orgs/acme/kek/rotate", json!({"confirm": true})).await;
        assert_eq!(rotated.status, StatusCode::ACCEPTED, "{}", rotated.raw);
        let deleted = h.call(Method::DELETE, "/v1/orgs/acme?confirm=true", Some(&operator), None).await;
        assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.raw);
        assert_eq!(deleted.json["state"], "deleted");
    })
    .await
    .unwrap();
}

/// A page size is 1 to 10000 as the document says; beyond it (2³¹ was taken as if it were
/// an int32 and clamped) the request is refused, not quietly shortened.
#[tokio::test]
async fn page_sizes_outside_the_documented_range_are_refused() {
    for_each_backend("page_sizes_outside_the_documented_range_are_refused", |t| async move {
        let h = harness(t).await;
        seeded(&h).await;
        let operator = h.operator.clone();
        for path in ["/v1/orgs/acme/audit", "/v1/orgs/acme/credentials/oa/lifecycle"] {
            for limit in ["2147483648", "4294967296", "10001", "0", "-1", "ten", ""] {
                let target = format!("{path}?limit={limit}");
                let answer = h.call(Method::GET, &target, Some(&operator), None).await;
                assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{target}: {}", answer.raw);
                assert!(answer.raw.contains("from 1 to 10000"), "{target}: {}", answer.raw);
            }
            for limit in ["1", "10000"] {
                let target = format!("{path}?limit={limit}");
                let answer = h.call(Method::GET, &target, Some(&operator), None).await;
                assert_eq!(answer.status, StatusCode::OK, "{target}: {}", answer.raw);
            }
        }
        // The document states the same range.
        let document = byok_admin::openapi_document();
        for path in ["/v1/orgs/{org}/audit", "/v1/orgs/{org}/credentials/{cred}/lifecycle"] {
            let parameters = document["paths"][path]["get"]["parameters"].as_array().unwrap();
            let limit = parameters.iter().find(|p| p["name"] == "limit").unwrap();
            assert_eq!(
                (limit["schema"]["minimum"].clone(), limit["schema"]["maximum"].clone()),
                (json!(1), json!(10000))
            );
        }
    })
    .await
    .unwrap();
}

/// Names that refer to nothing answer 404 (the message names the field); rules no schema
/// can state answer 422; an empty patch changes nothing.
#[tokio::test]
async fn semantic_refusals_say_what_is_wrong() {
    for_each_backend("semantic_refusals_say_what_is_wrong", |t| async move {
        let h = harness(t).await;
        seeded(&h).await;
        let counts = h.counts().await;
        let cases: Vec<(Method, &str, serde_json::Value, StatusCode, &str)> = vec![
            (Method::POST, "/v1/orgs/acme/tokens", json!({"team": "ghosts"}), StatusCode::NOT_FOUND, "team: no team"),
            (
                Method::POST,
                "/v1/orgs/acme/workflows",
                json!({"name": "w", "team": "ghosts"}),
                StatusCode::NOT_FOUND,
                "team: no team",
            ),
            (Method::PUT, "/v1/orgs/acme/budget", json!({"teams": {"ghosts": "1"}}), StatusCode::NOT_FOUND, "teams"),
            (Method::PUT, "/v1/orgs/acme/kms", json!({"kms": "nowhere"}), StatusCode::NOT_FOUND, "no KMS named"),
            (
                Method::POST,
                "/v1/orgs/acme/admin-tokens",
                json!({"expires_at": "2001-01-01T00:00:00Z"}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "in the past",
            ),
            (
                Method::POST,
                "/v1/orgs",
                json!({"name": "org_01JD7X3M5Q8V6N2K4T9R1B0C7E", "tier": "katman-a"}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "looks like an id",
            ),
        ];
        for (method, path, body, status, fragment) in cases {
            let answer = h.op(method.clone(), path, body.clone()).await;
            assert_eq!(answer.status, status, "{method} {path} {body}: {}", answer.raw);
            assert!(answer.raw.contains(fragment), "{method} {path} {body}: {} lacks {fragment:?}", answer.raw);
            let code = if status == StatusCode::NOT_FOUND { "not_found" } else { "unprocessable" };
            assert_eq!(answer.json["error"]["code"], code, "{}", answer.raw);
            assert_eq!(h.counts().await, counts, "{method} {path} {body} wrote something");
        }
        // A cursor of another shape than the documented one breaks the schema: 400.
        for after in ["1.2.3", "x", "1.0.99999999999999999999"] {
            let target = format!("/v1/orgs/acme/credentials/oa/lifecycle?after={after}");
            let cursor = h.op(Method::GET, &target, json!({})).await;
            assert_eq!(cursor.status, StatusCode::BAD_REQUEST, "{target}: {}", cursor.raw);
        }
        let unchanged = h.ok(Method::PATCH, "/v1/orgs/acme/credentials/oa", json!({})).await;
        assert_eq!(unchanged["priority"], 0);
        assert_eq!(h.counts().await, counts, "an empty patch wrote something");
    })
    .await
    .unwrap();
}

/// The admin-API fuzz target covers every operation that reads a JSON body (a new one
/// left out would never be fuzzed; a removed one would fuzz a 405).
#[test]
fn the_fuzz_target_covers_every_body() {
    let target = include_str!("../../../fuzz/fuzz_targets/admin_json.rs");
    let routes = target.split("const ROUTES").nth(1).and_then(|rest| rest.split("];").next()).unwrap();
    let fuzzed: std::collections::BTreeSet<(String, String)> = routes
        .lines()
        .filter_map(|line| {
            let line = line.trim().strip_prefix("(\"")?.strip_suffix("\"),")?;
            let (method, path) = line.split_once("\", \"")?;
            Some((method.to_ascii_lowercase(), path.to_owned()))
        })
        .collect();
    let document = byok_admin::openapi_document();
    let mut bodies = std::collections::BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if operation.get("requestBody").is_some() {
                bodies.insert((method.clone(), path.clone()));
            }
        }
    }
    assert_eq!(fuzzed, bodies, "fuzz/fuzz_targets/admin_json.rs ROUTES and the document's bodies differ");
}
