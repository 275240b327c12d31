//! Several credentials for one call (SPEC 3.1) through the admin API: a credential's
//! weight and provider-account paces, verification against the provider (with a stand-in
//! for the data plane's key probe), health, and an org's rate limits. Every refusal names
//! the field and leaves the store as it was. On SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::http::{Method, StatusCode};
use byok_crypto::ProviderSecret;
use byok_domain::{Credential, CredentialHealth, CredentialId, HealthState, Org, ProviderId, Timestamp};
use byok_store::testing::for_each_backend;
use byok_vault::{KeyProbe, ProbeFuture, Verification};
use serde_json::{json, Value};
use support::{harness, harness_with_probe, Harness, CANARY, CANARY_2};

/// The data plane's key probe, played by the test: the provider answers `status` (0: it
/// does not answer), and this node sees the credentials in `cooling` cooling down.
#[derive(Default)]
struct FakeProbe {
    status: AtomicU16,
    probes: AtomicUsize,
    cooling: Mutex<Vec<(CredentialId, Timestamp)>>,
}

impl FakeProbe {
    fn answer(&self) -> Verification {
        self.probes.fetch_add(1, Ordering::SeqCst);
        match self.status.load(Ordering::SeqCst) {
            0 => Verification::unreachable(),
            status => Verification::from_status(status),
        }
    }

    fn answers(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }
}

impl KeyProbe for FakeProbe {
    fn probe_credential<'a>(&'a self, _: &'a Org, _: &'a Credential) -> ProbeFuture<'a> {
        let answer = self.answer();
        Box::pin(async move { Ok(answer) })
    }

    fn probe_secret<'a>(&'a self, _: ProviderId, _: Option<&'a str>, _: &'a ProviderSecret) -> ProbeFuture<'a> {
        let answer = self.answer();
        Box::pin(async move { Ok(answer) })
    }

    fn local_health(&self, credential: &CredentialId) -> Option<CredentialHealth> {
        let cooling = self.cooling.lock().unwrap();
        cooling.iter().find(|(id, _)| id == credential).map(|(_, until)| CredentialHealth {
            state: HealthState::CoolingDown,
            until: Some(*until),
            last_status: Some(429),
        })
    }
}

/// The lifecycle events of a credential (not its calls), as `(kind, details)`.
async fn events(h: &Harness, path: &str) -> Vec<(String, Value)> {
    let life = h.ok(Method::GET, &format!("{path}/lifecycle"), json!({})).await;
    life["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] != "call")
        .map(|e| (e["kind"].as_str().unwrap().to_owned(), e["details"].clone()))
        .collect()
}

fn kinds(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(kind, _)| kind.as_str()).collect()
}

/// `weight`, `rpm` and `tpm` on create and PATCH (org and platform credentials): shown on
/// the credential, recorded in the `created` and `scope_changed` events; `null` removes a
/// pace, absence leaves it.
#[tokio::test]
async fn weight_and_paces_are_set_shown_and_recorded() {
    for_each_backend("weight_and_paces_are_set_shown_and_recorded", |t| async move {
        let h = harness(t).await;
        h.ok(Method::POST, "/v1/orgs", json!({"name": "acme", "tier": "katman-a"})).await;
        let plain = h
            .ok(
                Method::POST,
                "/v1/orgs/acme/credentials",
                json!({"name": "plain", "provider": "openai", "secret": CANARY}),
            )
            .await;
        assert_eq!(plain["weight"], 1, "the default weight: {plain}");
        assert!(plain.get("rpm").is_none_or(Value::is_null) && plain.get("tpm").is_none_or(Value::is_null), "{plain}");
        assert_eq!(plain["health"], json!({"state": "ok", "until": null, "last_status": null}));

        let body = json!({"name": "paced", "provider": "openai", "secret": CANARY_2, "weight": 5, "rpm": 100,
                          "tpm": 50000});
        let answer = h.op(Method::POST, "/v1/orgs/acme/credentials", body).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.raw);
        let paced = answer.json;
        assert_eq!(
            (paced["weight"].clone(), paced["rpm"].clone(), paced["tpm"].clone()),
            (json!(5), json!(100), json!(50000))
        );
        let shown = h.ok(Method::GET, "/v1/orgs/acme/credentials/paced", json!({})).await;
        assert_eq!(
            (shown["weight"].clone(), shown["rpm"].clone(), shown["tpm"].clone()),
            (json!(5), json!(100), json!(50000))
        );
        let listed = h.ok(Method::GET, "/v1/orgs/acme/credentials", json!({})).await;
        let row = listed["credentials"].as_array().unwrap().iter().find(|c| c["name"] == "paced").unwrap().clone();
        assert_eq!((row["weight"].clone(), row["health"]["state"].clone()), (json!(5), json!("ok")));

        // PATCH: a new weight and tpm, rpm removed.
        let patched = h
            .ok(Method::PATCH, "/v1/orgs/acme/credentials/paced", json!({"weight": 1000, "rpm": null, "tpm": 9000}))
            .await;
        assert_eq!(patched["weight"], 1000);
        assert!(patched.get("rpm").is_none_or(Value::is_null), "{patched}");
        assert_eq!(patched["tpm"], 9000);
        // Absent leaves it; another field alone changes only that field.
        let again = h.ok(Method::PATCH, "/v1/orgs/acme/credentials/paced", json!({"rpm": 30})).await;
        assert_eq!(
            (again["weight"].clone(), again["rpm"].clone(), again["tpm"].clone()),
            (json!(1000), json!(30), json!(9000))
        );
        let shown = h.ok(Method::GET, "/v1/orgs/acme/credentials/paced", json!({})).await;
        assert_eq!(
            (shown["weight"].clone(), shown["rpm"].clone(), shown["tpm"].clone()),
            (json!(1000), json!(30), json!(9000))
        );

        let recorded = events(&h, "/v1/orgs/acme/credentials/paced").await;
        assert_eq!(kinds(&recorded), ["created", "scope_changed", "scope_changed"]);
        let created = &recorded[0].1;
        assert_eq!(
            (created["weight"].clone(), created["rpm"].clone(), created["tpm"].clone()),
            (json!(5), json!(100), json!(50000))
        );
        let (before, after) = (&recorded[1].1["before"], &recorded[1].1["after"]);
        assert_eq!(
            (before["weight"].clone(), before["rpm"].clone(), before["tpm"].clone()),
            (json!(5), json!(100), json!(50000))
        );
        assert_eq!(
            (after["weight"].clone(), after["rpm"].clone(), after["tpm"].clone()),
            (json!(1000), Value::Null, json!(9000))
        );
        let after = &recorded[2].1["after"];
        assert_eq!(
            (after["weight"].clone(), after["rpm"].clone(), after["tpm"].clone()),
            (json!(1000), json!(30), json!(9000))
        );

        // The platform pool shares the handlers.
        let pooled = h
            .ok(
                Method::POST,
                "/v1/platform/credentials",
                json!({"name": "pool-a", "provider": "openai", "secret": CANARY, "weight": 3, "tpm": 1000000}),
            )
            .await;
        assert_eq!((pooled["weight"].clone(), pooled["tpm"].clone()), (json!(3), json!(1000000)));
        let patched =
            h.ok(Method::PATCH, "/v1/platform/credentials/pool-a", json!({"weight": 2, "tpm": null, "rpm": 60})).await;
        assert_eq!((patched["weight"].clone(), patched["rpm"].clone()), (json!(2), json!(60)));
        assert!(patched.get("tpm").is_none_or(Value::is_null), "{patched}");
        let recorded = events(&h, "/v1/platform/credentials/pool-a").await;
        assert_eq!(kinds(&recorded), ["created", "scope_changed"]);
        assert_eq!(recorded[1].1["after"]["weight"], 2);
    })
    .await
    .unwrap();
}

/// A weight outside 1–1000 or a pace outside 1–10⁹ (or not a whole number) is refused
/// with 400 naming the field: nothing is created, nothing changes.
#[tokio::test]
async fn weights_and_paces_out_of_range_are_refused() {
    for_each_backend("weights_and_paces_out_of_range_are_refused", |t| async move {
        let h = harness(t).await;
        h.ok(Method::POST, "/v1/orgs", json!({"name": "acme", "tier": "katman-a"})).await;
        h.ok(
            Method::POST,
            "/v1/orgs/acme/credentials",
            json!({"name": "live", "provider": "openai", "secret": CANARY, "weight": 4, "rpm": 10}),
        )
        .await;
        h.ok(Method::POST, "/v1/platform/credentials", json!({"name": "pool", "provider": "openai", "secret": CANARY}))
            .await;
        let before = h.ok(Method::GET, "/v1/orgs/acme/credentials/live", json!({})).await;
        let platform_before = h.ok(Method::GET, "/v1/platform/credentials/pool", json!({})).await;
        let counts = h.counts().await;
        let keyring = h.keyring_bytes();
        let bad: Vec<(&str, Value, &str)> = vec![
            ("weight", json!(0), "from 1 to 1000"),
            ("weight", json!(1001), "from 1 to 1000"),
            ("weight", json!(70000), "weight"),
            ("weight", json!(-1), "weight"),
            ("weight", json!(1.5), "weight"),
            ("weight", json!("5"), "weight"),
            ("rpm", json!(0), "from 1 to 1000000000"),
            ("rpm", json!(-5), "rpm"),
            ("rpm", json!(2.5), "rpm"),
            ("rpm", json!(1_000_000_001_u64), "from 1 to 1000000000"),
            ("tpm", json!(0), "from 1 to 1000000000"),
            ("tpm", json!(-1), "tpm"),
            ("verify", json!("yes"), "verify"),
        ];
        for (field, value, fragment) in bad {
            for path in ["/v1/orgs/acme/credentials", "/v1/platform/credentials"] {
                let mut body = json!({"name": "new", "provider": "openai", "secret": CANARY_2});
                body[field] = value.clone();
                let answer = h.op(Method::POST, path, body.clone()).await;
                assert_eq!(answer.status, StatusCode::BAD_REQUEST, "POST {path} {body}: {}", answer.raw);
                let message = answer.json["error"]["message"].as_str().unwrap();
                assert!(message.contains(field) && message.contains(fragment), "POST {path} {body}: {message}");
            }
            if field == "verify" {
                continue;
            }
            for path in ["/v1/orgs/acme/credentials/live", "/v1/platform/credentials/pool"] {
                let body = json!({ field: value.clone(), "priority": 9 });
                let answer = h.op(Method::PATCH, path, body.clone()).await;
                assert_eq!(answer.status, StatusCode::BAD_REQUEST, "PATCH {path} {body}: {}", answer.raw);
                let message = answer.json["error"]["message"].as_str().unwrap();
                assert!(message.contains(field) && message.contains(fragment), "PATCH {path} {body}: {message}");
            }
            assert_eq!(h.counts().await, counts, "{field}: {value} wrote something");
            assert_eq!(h.keyring_bytes(), keyring, "{field}: {value} changed the keyring");
        }
        // A weight of null on PATCH is no change; `verify` is create's only.
        let unchanged = h.ok(Method::PATCH, "/v1/orgs/acme/credentials/live", json!({"weight": null})).await;
        assert_eq!(unchanged["weight"], 4);
        let patch = h.op(Method::PATCH, "/v1/orgs/acme/credentials/live", json!({"verify": true})).await;
        assert_eq!(patch.status, StatusCode::BAD_REQUEST, "{}", patch.raw);
        assert!(patch.raw.contains("unknown field `verify`"), "{}", patch.raw);
        assert_eq!(h.ok(Method::GET, "/v1/orgs/acme/credentials/live", json!({})).await, before);
        assert_eq!(h.ok(Method::GET, "/v1/platform/credentials/pool", json!({})).await, platform_before);
        assert_eq!(h.counts().await, counts);
        // The edges are accepted.
        let edge = h
            .ok(
                Method::POST,
                "/v1/orgs/acme/credentials",
                json!({"name": "edge", "provider": "openai", "secret": CANARY_2, "weight": 1000, "rpm": 1,
                       "tpm": 1_000_000_000}),
            )
            .await;
        assert_eq!(
            (edge["weight"].clone(), edge["rpm"].clone(), edge["tpm"].clone()),
            (json!(1000), json!(1), json!(1_000_000_000))
        );
        let edge = h.ok(Method::PATCH, "/v1/orgs/acme/credentials/edge", json!({"weight": 1.0})).await;
        assert_eq!(edge["weight"], 1);
    })
    .await
    .unwrap();
}

/// `POST …/verify` asks the data plane's probe, answers what the provider said and records
/// it: `verified` events; a 401/403 makes the credential `failing` (a `provider_rejected`
/// event), a success clears it; throttling and silence change nothing.
#[tokio::test]
async fn verification_answers_and_records_what_the_provider_said() {
    for_each_backend("verification_answers_and_records_what_the_provider_said", |t| async move {
        let probe = Arc::new(FakeProbe::default());
        let h = harness_with_probe(t, probe.clone()).await;
        h.ok(Method::POST, "/v1/orgs", json!({"name": "acme", "tier": "katman-a"})).await;
        h.ok(Method::POST, "/v1/orgs", json!({"name": "other", "tier": "katman-a"})).await;
        h.ok(Method::POST, "/v1/orgs/acme/credentials", json!({"name": "oa", "provider": "openai", "secret": CANARY}))
            .await;
        let path = "/v1/orgs/acme/credentials/oa";

        probe.answers(200);
        // No body, or `{}`.
        let operator = h.operator.clone();
        for body in [None, Some("{}")] {
            let answer = h.call(Method::POST, &format!("{path}/verify"), Some(&operator), body).await;
            assert_eq!(answer.status, StatusCode::OK, "{}", answer.raw);
            assert_eq!(answer.json, json!({"ok": true, "status": 200, "reason": "ok"}));
        }

        probe.answers(401);
        let rejected = h.ok(Method::POST, &format!("{path}/verify"), json!({})).await;
        assert_eq!(rejected, json!({"ok": false, "status": 401, "reason": "invalid_key"}));
        let shown = h.ok(Method::GET, path, json!({})).await;
        assert_eq!(shown["health"]["state"], "failing", "{shown}");
        assert_eq!(shown["health"]["last_status"], 401, "{shown}");
        // A second rejection of a failing key records no second `provider_rejected`.
        probe.answers(403);
        let again = h.ok(Method::POST, &format!("{path}/verify"), json!({})).await;
        assert_eq!(again["reason"], "invalid_key");

        for (status, reason) in [(429, "rate_limited"), (529, "rate_limited"), (503, "unreachable"), (0, "unreachable")]
        {
            probe.answers(status);
            let answer = h.ok(Method::POST, &format!("{path}/verify"), json!({})).await;
            assert_eq!((answer["ok"].clone(), answer["reason"].clone()), (json!(false), json!(reason)), "{status}");
            let expected = if status == 0 { Value::Null } else { json!(status) };
            assert_eq!(answer["status"], expected);
            let shown = h.ok(Method::GET, path, json!({})).await;
            assert_eq!(shown["health"]["state"], "failing", "{status} changes nothing: {shown}");
        }

        probe.answers(204);
        let cleared = h.ok(Method::POST, &format!("{path}/verify"), json!({})).await;
        assert_eq!(cleared, json!({"ok": true, "status": 204, "reason": "ok"}));
        let shown = h.ok(Method::GET, path, json!({})).await;
        assert_eq!(shown["health"]["state"], "ok", "{shown}");

        let recorded = events(&h, path).await;
        assert_eq!(
            kinds(&recorded),
            [
                "created",
                "verified",
                "verified",
                "verified",
                "provider_rejected",
                "verified",
                "verified",
                "verified",
                "verified",
                "verified",
                "verified"
            ]
        );
        assert_eq!(recorded[3].1["reason"], "invalid_key");
        assert_eq!(recorded[4].1["upstream_status"], 401);

        // This node's cooldown shows, with when it ends.
        let id: CredentialId = shown["id"].as_str().unwrap().parse().unwrap();
        let until = Timestamp::from_micros(Timestamp::now().as_micros() + 30_000_000).unwrap();
        probe.cooling.lock().unwrap().push((id, until));
        let cooling = h.ok(Method::GET, path, json!({})).await;
        assert_eq!(cooling["health"], json!({"state": "cooling_down", "until": until, "last_status": 429}));
        let listed = h.ok(Method::GET, "/v1/orgs/acme/credentials", json!({})).await;
        assert_eq!(listed["credentials"][0]["health"]["state"], "cooling_down");

        // The platform pool's.
        h.ok(Method::POST, "/v1/platform/credentials", json!({"name": "pool", "provider": "gemini", "secret": CANARY}))
            .await;
        probe.answers(200);
        let platform = h.ok(Method::POST, "/v1/platform/credentials/pool/verify", json!({})).await;
        assert_eq!(platform["reason"], "ok");
        assert_eq!(kinds(&events(&h, "/v1/platform/credentials/pool").await), ["created", "verified"]);

        // Refusals: an unknown credential, a revoked one, a Bedrock key, another org's admin,
        // an org admin on the platform pool. None asks the provider or records anything.
        // A Bedrock secret is a JSON object: another shape is refused, naming the field and
        // quoting no secret, and nothing is stored.
        let before = h.counts().await;
        for (secret, field) in [
            (CANARY_2.to_owned(), "JSON object"),
            (json!({"api_key": CANARY_2}).to_string(), "region: missing"),
            (json!({"api_key": CANARY_2, "region": "us-east-1.evil.example"}).to_string(), "region:"),
            (json!({"access_key_id": "AKIAIOSFODNN7EXAMPLE", "region": "us-east-1"}).to_string(), "secret_access_key: missing"),
        ] {
            let body = json!({"name": "aws", "provider": "bedrock", "secret": secret}).to_string();
            let answer = h.call(Method::POST, "/v1/orgs/acme/credentials", Some(&operator), Some(&body)).await;
            assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", answer.raw);
            assert!(answer.raw.contains(field), "{} lacks {field:?}", answer.raw);
            assert!(!answer.raw.contains(CANARY_2), "the secret was echoed: {}", answer.raw);
        }
        assert_eq!(h.counts().await, before, "a refused bedrock secret wrote something");
        h.ok(
            Method::POST,
            "/v1/orgs/acme/credentials",
            json!({"name": "aws", "provider": "bedrock", "secret": json!({"api_key": CANARY_2, "region": "us-east-1"}).to_string()}),
        )
        .await;
        h.ok(
            Method::POST,
            "/v1/orgs/acme/credentials",
            json!({"name": "gone", "provider": "openai", "secret": CANARY_2}),
        )
        .await;
        h.ok(Method::POST, "/v1/orgs/acme/credentials/gone/revoke", json!({"confirm": true})).await;
        let stranger =
            h.ok(Method::POST, "/v1/orgs/other/admin-tokens", json!({})).await["token"].as_str().unwrap().to_owned();
        let probes = probe.probes.load(Ordering::SeqCst);
        let counts = h.counts().await;
        let refused: Vec<(&str, &str, StatusCode, &str)> = vec![
            ("/v1/orgs/acme/credentials/ghost/verify", &operator, StatusCode::NOT_FOUND, "no credential 'ghost'"),
            ("/v1/orgs/acme/credentials/gone/verify", &operator, StatusCode::CONFLICT, "revoked"),
            ("/v1/orgs/acme/credentials/aws/verify", &operator, StatusCode::UNPROCESSABLE_ENTITY, "bedrock"),
            ("/v1/orgs/acme/credentials/oa/verify", &stranger, StatusCode::FORBIDDEN, "confined to its own org"),
            ("/v1/platform/credentials/pool/verify", &stranger, StatusCode::FORBIDDEN, "only the operator"),
            ("/v1/platform/credentials/ghost/verify", &operator, StatusCode::NOT_FOUND, "platform pool"),
        ];
        for (target, token, status, fragment) in refused {
            let answer = h.call(Method::POST, target, Some(token), Some("{}")).await;
            assert_eq!(answer.status, status, "{target}: {}", answer.raw);
            assert!(answer.raw.contains(fragment), "{target}: {} lacks {fragment:?}", answer.raw);
        }
        assert_eq!(probe.probes.load(Ordering::SeqCst), probes, "a refused verification asked the provider");
        assert_eq!(h.counts().await, counts, "a refused verification wrote something");
    })
    .await
    .unwrap();
}

/// A create with `"verify": true` whose key the provider rejects is refused with 422
/// `credential_invalid` and stores nothing; one the provider accepts (or cannot judge) is
/// created with a `verified` event.
#[tokio::test]
async fn create_with_verify_stores_nothing_the_provider_rejects() {
    for_each_backend("create_with_verify_stores_nothing_the_provider_rejects", |t| async move {
        let probe = Arc::new(FakeProbe::default());
        let h = harness_with_probe(t, probe.clone()).await;
        h.ok(Method::POST, "/v1/orgs", json!({"name": "acme", "tier": "katman-a"})).await;
        // The platform pool exists (its first credential creates it, with its own KEK).
        h.ok(
            Method::POST,
            "/v1/platform/credentials",
            json!({"name": "first", "provider": "openai", "secret": CANARY}),
        )
        .await;
        let counts = h.counts().await;
        let keyring = h.keyring_bytes();
        for status in [401, 403] {
            probe.answers(status);
            for path in ["/v1/orgs/acme/credentials", "/v1/platform/credentials"] {
                let body = json!({"name": "checked", "provider": "openai", "secret": CANARY, "verify": true});
                let answer = h.op(Method::POST, path, body).await;
                assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{path} {status}: {}", answer.raw);
                assert_eq!(answer.json["error"]["code"], "credential_invalid", "{}", answer.raw);
                assert!(answer.raw.contains(&status.to_string()), "{}", answer.raw);
            }
        }
        assert_eq!(h.counts().await, counts, "a rejected key was stored");
        assert_eq!(h.keyring_bytes(), keyring);
        let listed = h.ok(Method::GET, "/v1/orgs/acme/credentials", json!({})).await;
        assert_eq!(listed["credentials"], json!([]));
        // Without verify, the same key is stored without asking.
        let probes = probe.probes.load(Ordering::SeqCst);
        h.ok(
            Method::POST,
            "/v1/orgs/acme/credentials",
            json!({"name": "unchecked", "provider": "openai", "secret": CANARY}),
        )
        .await;
        assert_eq!(probe.probes.load(Ordering::SeqCst), probes);

        for (name, status) in [("accepted", 200), ("throttled", 429), ("silent", 0)] {
            probe.answers(status);
            let body = json!({"name": name, "provider": "openai", "secret": CANARY_2, "verify": true, "weight": 2});
            let answer = h.op(Method::POST, "/v1/orgs/acme/credentials", body).await;
            assert_eq!(answer.status, StatusCode::CREATED, "{name}: {}", answer.raw);
            assert_eq!(answer.json["weight"], 2);
            let recorded = events(&h, &format!("/v1/orgs/acme/credentials/{name}")).await;
            assert_eq!(kinds(&recorded), ["created", "verified"], "{name}");
            assert_eq!(recorded[1].1["ok"], status == 200, "{name}");
        }
        h.assert_no_plaintext_at_rest(&[CANARY, CANARY_2]).await;
    })
    .await
    .unwrap();
}

/// The admin API alone (no data plane running beside it) cannot verify: it fails closed,
/// asking nothing and storing nothing.
#[tokio::test]
async fn without_a_data_plane_verification_fails_closed() {
    for_each_backend("without_a_data_plane_verification_fails_closed", |t| async move {
        let h = harness(t).await;
        h.ok(Method::POST, "/v1/orgs", json!({"name": "acme", "tier": "katman-a"})).await;
        h.ok(Method::POST, "/v1/orgs/acme/credentials", json!({"name": "oa", "provider": "openai", "secret": CANARY}))
            .await;
        let counts = h.counts().await;
        let verify = h.op(Method::POST, "/v1/orgs/acme/credentials/oa/verify", json!({})).await;
        assert!(verify.status.is_server_error(), "{}", verify.raw);
        let create = h
            .op(
                Method::POST,
                "/v1/orgs/acme/credentials",
                json!({"name": "new", "provider": "openai", "secret": CANARY_2, "verify": true}),
            )
            .await;
        assert!(create.status.is_server_error(), "{}", create.raw);
        for answer in [&verify, &create] {
            assert!(answer.json["error"]["code"].is_string(), "{}", answer.raw);
        }
        assert_eq!(h.counts().await, counts);
        let shown = h.ok(Method::GET, "/v1/orgs/acme/credentials/oa", json!({})).await;
        assert_eq!(shown["health"]["state"], "ok");
    })
    .await
    .unwrap();
}

/// `PUT /v1/orgs/{org}/limits` replaces the org's limits whole (teams by name or id,
/// shown by name; tokens by id), `GET` shows them, `DELETE` and `{}` remove them; each
/// change is a `limits_changed` event. An org admin manages its own org's.
#[tokio::test]
async fn limits_round_trip() {
    for_each_backend("limits_round_trip", |t| async move {
        let h = harness(t).await;
        h.ok(Method::POST, "/v1/orgs", json!({"name": "acme", "tier": "katman-a"})).await;
        h.ok(Method::POST, "/v1/orgs", json!({"name": "other", "tier": "katman-b"})).await;
        let research = h.ok(Method::POST, "/v1/orgs/acme/teams", json!({"name": "research"})).await;
        h.ok(Method::POST, "/v1/orgs/acme/teams", json!({"name": "agents"})).await;
        let token = h.ok(Method::POST, "/v1/orgs/acme/tokens", json!({"team": "agents"})).await;
        let tok = token["id"].as_str().unwrap().to_owned();

        assert_eq!(h.ok(Method::GET, "/v1/orgs/acme/limits", json!({})).await, json!({}));
        let limits = json!({
            "org": {"rpm": 600, "tpm": 200000},
            // One team by id, one by name: both shown by name.
            "teams": {research["id"].as_str().unwrap(): {"rpm": 60, "tpm": 50000}, "agents": {"tpm": 1000}},
            "tokens": {tok.as_str(): {"rpm": 10}},
        });
        let expected = json!({
            "org": {"rpm": 600, "tpm": 200000},
            "teams": {"research": {"rpm": 60, "tpm": 50000}, "agents": {"tpm": 1000}},
            "tokens": {tok.as_str(): {"rpm": 10}},
        });
        let set = h.ok(Method::PUT, "/v1/orgs/acme/limits", limits).await;
        assert_eq!(set, expected);
        assert_eq!(h.ok(Method::GET, "/v1/orgs/acme/limits", json!({})).await, expected);
        let org = h.ok(Method::GET, "/v1/orgs/acme", json!({})).await;
        let org_id: byok_domain::OrgId = org["id"].as_str().unwrap().parse().unwrap();
        assert_eq!(h.ok(Method::GET, &format!("/v1/orgs/{org_id}/limits"), json!({})).await, expected);

        // Whole replacement: what is not given goes.
        let smaller = h.ok(Method::PUT, "/v1/orgs/acme/limits", json!({"teams": {"agents": {"rpm": 5}}})).await;
        assert_eq!(smaller, json!({"teams": {"agents": {"rpm": 5}}}));
        // The same again changes nothing (and records nothing).
        h.ok(Method::PUT, "/v1/orgs/acme/limits", json!({"teams": {"agents": {"rpm": 5}}})).await;
        assert_eq!(h.ok(Method::PUT, "/v1/orgs/acme/limits", json!({})).await, json!({}));
        assert_eq!(h.ok(Method::GET, "/v1/orgs/acme/limits", json!({})).await, json!({}));

        // DELETE removes them all and answers what is left: nothing. Idempotent.
        h.ok(Method::PUT, "/v1/orgs/acme/limits", json!({"org": {"rpm": 1}})).await;
        for _ in 0..2 {
            let deleted = h.op(Method::DELETE, "/v1/orgs/acme/limits", json!({})).await;
            assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.raw);
            assert_eq!(deleted.json, json!({}));
        }
        assert_eq!(h.ok(Method::GET, "/v1/orgs/acme/limits", json!({})).await, json!({}));

        let changes = h.t.store().list_events(&org_id, &Default::default()).await.unwrap();
        let changes: Vec<_> = changes.iter().filter(|e| e.kind.to_string() == "limits_changed").collect();
        assert_eq!(changes.len(), 5, "{changes:?}");
        assert_eq!(changes[0].details["after"]["org"], json!({"rpm": 600, "tpm": 200000}));

        // An org admin: its own org's limits, not another org's (even with a bad body).
        let admin =
            h.ok(Method::POST, "/v1/orgs/acme/admin-tokens", json!({})).await["token"].as_str().unwrap().to_owned();
        let own = h.call(Method::PUT, "/v1/orgs/acme/limits", Some(&admin), Some(r#"{"org":{"tpm":7}}"#)).await;
        assert_eq!((own.status, own.json.clone()), (StatusCode::OK, json!({"org": {"tpm": 7}})), "{}", own.raw);
        assert_eq!(
            h.call(Method::GET, "/v1/orgs/acme/limits", Some(&admin), None).await.json,
            json!({"org": {"tpm": 7}})
        );
        let counts = h.counts().await;
        for (method, body) in [
            (Method::GET, None),
            (Method::PUT, Some(r#"{"org":{"rpm":1}}"#)),
            (Method::PUT, Some(r#"{"org":{"rpm":-1}}"#)),
            (Method::PUT, Some("[1]")),
            (Method::DELETE, None),
        ] {
            for org in ["other", "no-such-org"] {
                let answer = h.call(method.clone(), &format!("/v1/orgs/{org}/limits"), Some(&admin), body).await;
                assert_eq!(answer.status, StatusCode::FORBIDDEN, "{method} {org} {body:?}: {}", answer.raw);
            }
        }
        assert_eq!(h.counts().await, counts);
        let deleted = h.call(Method::DELETE, "/v1/orgs/acme/limits", Some(&admin), None).await;
        assert_eq!((deleted.status, deleted.json), (StatusCode::OK, json!({})));
        let missing = h.op(Method::GET, "/v1/orgs/no-such-org/limits", json!({})).await;
        assert_eq!(missing.status, StatusCode::NOT_FOUND, "{}", missing.raw);
    })
    .await
    .unwrap();
}

/// Bad limits are refused with a 4xx naming the field (400 for what breaks the schema,
/// 404 for a team or token that does not exist) and the org keeps the limits it had.
#[tokio::test]
async fn bad_limits_are_refused_and_nothing_changes() {
    for_each_backend("bad_limits_are_refused_and_nothing_changes", |t| async move {
        let h = harness(t).await;
        h.ok(Method::POST, "/v1/orgs", json!({"name": "acme", "tier": "katman-a"})).await;
        h.ok(Method::POST, "/v1/orgs", json!({"name": "other", "tier": "katman-a"})).await;
        h.ok(Method::POST, "/v1/orgs/acme/teams", json!({"name": "research"})).await;
        h.ok(Method::POST, "/v1/orgs/other/teams", json!({"name": "elsewhere"})).await;
        let foreign = h.ok(Method::POST, "/v1/orgs/other/tokens", json!({"team": "elsewhere"})).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let kept = json!({"org": {"rpm": 100}, "teams": {"research": {"tpm": 5000}}});
        h.ok(Method::PUT, "/v1/orgs/acme/limits", kept.clone()).await;
        let counts = h.counts().await;

        let cases: Vec<(String, StatusCode, &str)> = vec![
            (json!({"org": {"rpm": 0}}).to_string(), StatusCode::BAD_REQUEST, "org.rpm"),
            (json!({"org": {"rpm": -1}}).to_string(), StatusCode::BAD_REQUEST, "org.rpm"),
            (json!({"org": {"rpm": 1.5}}).to_string(), StatusCode::BAD_REQUEST, "org.rpm"),
            (json!({"org": {"tpm": 1_000_000_001_u64}}).to_string(), StatusCode::BAD_REQUEST, "org.tpm"),
            (json!({"org": {"rpm": "10"}}).to_string(), StatusCode::BAD_REQUEST, "org.rpm"),
            (json!({"org": {"rps": 10}}).to_string(), StatusCode::BAD_REQUEST, "unknown field `rps`"),
            (json!({"org": null}).to_string(), StatusCode::BAD_REQUEST, "org"),
            (json!({"budget": {}}).to_string(), StatusCode::BAD_REQUEST, "unknown field `budget`"),
            (json!({"teams": {"research": {"rpm": 0}}}).to_string(), StatusCode::BAD_REQUEST, "teams.research.rpm"),
            (json!({"teams": {"research": {"rpm": -3}}}).to_string(), StatusCode::BAD_REQUEST, "teams.research.rpm"),
            (json!({"teams": ["research"]}).to_string(), StatusCode::BAD_REQUEST, "teams"),
            (json!({"teams": {"ghosts": {"rpm": 1}}}).to_string(), StatusCode::NOT_FOUND, "teams: no team 'ghosts'"),
            (json!({"teams": {"elsewhere": {"rpm": 1}}}).to_string(), StatusCode::NOT_FOUND, "teams: no team"),
            (json!({"tokens": {"tok_nope": {"rpm": 1}}}).to_string(), StatusCode::BAD_REQUEST, "tokens"),
            (
                json!({"tokens": {"tok_01JD7X3M5Q8V6N2K4T9R1B0C7E": {"rpm": 1}}}).to_string(),
                StatusCode::NOT_FOUND,
                "tokens: no workload token",
            ),
            // Another org's token is no token of this org.
            (json!({"tokens": {foreign.as_str(): {"rpm": 1}}}).to_string(), StatusCode::NOT_FOUND, "tokens"),
            (json!({"org": {"rpm": 1}, "org ": {}}).to_string(), StatusCode::BAD_REQUEST, "unknown field"),
            (r#"{"org":{"rpm":1},"org":{"rpm":2}}"#.to_owned(), StatusCode::BAD_REQUEST, "given twice"),
            ("[]".to_owned(), StatusCode::BAD_REQUEST, "expected a JSON object"),
            ("{".to_owned(), StatusCode::BAD_REQUEST, "invalid request body"),
        ];
        let operator = h.operator.clone();
        for (body, status, fragment) in cases {
            let answer = h.call(Method::PUT, "/v1/orgs/acme/limits", Some(&operator), Some(&body)).await;
            assert_eq!(answer.status, status, "{body}: {}", answer.raw);
            let message = answer.json["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains(fragment), "{body}: {message:?} lacks {fragment:?}");
            let code = if status == StatusCode::NOT_FOUND { "not_found" } else { "invalid_request" };
            assert_eq!(answer.json["error"]["code"], code, "{}", answer.raw);
            assert_eq!(h.ok(Method::GET, "/v1/orgs/acme/limits", json!({})).await, kept, "{body} changed the limits");
            assert_eq!(h.counts().await, counts, "{body} wrote something");
        }
    })
    .await
    .unwrap();
}

/// The document states the new operations and the ranges the handlers enforce.
#[test]
fn the_document_states_pools_limits_and_verification() {
    let document = byok_admin::openapi_document();
    let operation = |path: &str, method: &str| document["paths"][path][method].clone();
    for (path, method, id) in [
        ("/v1/orgs/{org}/credentials/{cred}/verify", "post", "verify_credential"),
        ("/v1/platform/credentials/{cred}/verify", "post", "verify_platform_credential"),
        ("/v1/orgs/{org}/limits", "get", "get_limits"),
        ("/v1/orgs/{org}/limits", "put", "put_limits"),
        ("/v1/orgs/{org}/limits", "delete", "delete_limits"),
    ] {
        assert_eq!(operation(path, method)["operationId"], id, "{method} {path}");
    }
    let verify = operation("/v1/orgs/{org}/credentials/{cred}/verify", "post");
    assert!(verify.get("requestBody").is_none(), "verify takes no body");
    assert_eq!(
        verify["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Verification"
    );
    assert!(verify["responses"].get("422").is_some());
    let put = operation("/v1/orgs/{org}/limits", "put");
    assert_eq!(put["requestBody"]["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/LimitsInput");
    assert_eq!(put["requestBody"]["required"], false, "`{{}}` (or nothing) clears the limits");
    assert!(put["responses"].get("422").is_none(), "nothing in a limit is a 422");

    let schemas = &document["components"]["schemas"];
    let range = |schema: &str, field: &str| {
        let property = &schemas[schema]["properties"][field];
        (property["minimum"].clone(), property["maximum"].clone())
    };
    for schema in ["CreateCredentialRequest", "PatchCredentialRequest", "Credential"] {
        assert_eq!(range(schema, "weight"), (json!(1), json!(1000)), "{schema}");
        for field in ["rpm", "tpm"] {
            assert_eq!(range(schema, field), (json!(1), json!(1_000_000_000)), "{schema}.{field}");
        }
    }
    assert_eq!(range("RateLimit", "rpm"), (json!(1), json!(1_000_000_000)));
    assert_eq!(schemas["CreateCredentialRequest"]["properties"]["verify"]["type"], "boolean");
    assert!(schemas["PatchCredentialRequest"]["properties"].get("verify").is_none());
    for field in ["rpm", "tpm"] {
        let types = &schemas["PatchCredentialRequest"]["properties"][field]["type"];
        assert!(
            types.as_array().is_some_and(|t| t.contains(&json!("null"))),
            "PATCH {field}: null removes it: {types}"
        );
    }
    assert_eq!(schemas["VerifyReason"]["enum"], json!(["ok", "invalid_key", "rate_limited", "unreachable"]));
    let tags: Vec<&str> = document["tags"].as_array().unwrap().iter().filter_map(|t| t["name"].as_str()).collect();
    assert!(tags.contains(&"limits"), "{tags:?}");
}
