//! Customer-managed KMSs: a katman-c org moves its KEK into its own KMS (and back) while
//! the sidecar serves its calls; its KMS being down fails only its own calls; deleting
//! it shreds the keys in its own KMS.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use byok_crypto::{Kms, KmsError, ProviderSecret};
use byok_domain::{Actor, KmsName, LifecycleKind, Org, OrgId, ProviderId, ScopeInput, Tier, Timestamp};
use byok_store::testing::{for_each_backend, TestStore};
use byok_vault::{KekStatus, NewCredential, NewWorkloadToken, VaultError};
use support::{openai_chat, Env, CUSTOMER_KMS};

const CREDENTIALS: usize = 40;

async fn call(env: &Env, token: &str) -> reqwest::Response {
    env.http
        .post(env.url("/openai/v1/chat/completions"))
        .bearer_auth(token)
        .json(&openai_chat("gpt-4o", false))
        .send()
        .await
        .unwrap()
}

/// A katman-c org with a team, `CREDENTIALS` team-scoped credentials (expiring, as the
/// tier requires) and a workload token.
async fn katman_c_org(env: &Env, name: &str) -> (Org, String) {
    let vault = &env.vault;
    let org = vault.create_org(&Actor::System, name, Tier::KatmanC).await.unwrap();
    vault.create_team(&Actor::System, org.id, "core").await.unwrap();
    let in_a_year = Timestamp::from_micros(Timestamp::now().as_micros() + 365 * 86_400_000_000).unwrap();
    for i in 0..CREDENTIALS {
        let new = NewCredential {
            name: format!("key-{i}"),
            provider: ProviderId::Openai,
            secret: ProviderSecret::new(env.keys.openai.clone()).unwrap(),
            scope: ScopeInput { teams: vec!["core".into()], ..ScopeInput::default() },
            base_url: None,
            expires_at: Some(in_a_year),
            priority: Some(i as i32),
            weight: None,
            rpm: None,
            tpm: None,
            verify: false,
        };
        vault.create_credential(&Actor::System, org.id, new).await.unwrap();
    }
    let request = NewWorkloadToken { team: "core".into(), workflows: vec![], ..Default::default() };
    let token = vault.issue_workload_token(&Actor::System, org.id, request).await.unwrap();
    (org, token.text.expose().to_owned())
}

async fn wait_idle(env: &Env, org: OrgId) -> KekStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = env.vault.kek_status(org).await.unwrap();
        if status.state != "running" && status.moving_from.is_none() && status.remaining == 0 {
            return status;
        }
        assert!(status.state != "failed", "move failed: {status:?}");
        assert!(Instant::now() < deadline, "move did not finish: {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn events_of(env: &Env, org: &Org, kind: LifecycleKind) -> Vec<serde_json::Value> {
    let events = env.t.store().list_events(&org.id, &byok_store::EventFilter::default()).await.unwrap();
    events.into_iter().filter(|e| e.kind == kind).map(|e| e.details).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_katman_c_org_moves_to_its_own_kms_and_back_while_its_calls_continue() {
    for_each_backend("customer_kms_move", |t: TestStore| async move {
        let env = Env::start_with(t, Default::default(), |c| c.dek_cache_ttl = Duration::ZERO).await;
        let customer = KmsName::parse(CUSTOMER_KMS).unwrap();
        let (org, token) = katman_c_org(&env, &format!("acme-{}", ulid::Ulid::new())).await;

        // Who may move where.
        let err = env.vault.move_kms(&Actor::System, env.org.id, CUSTOMER_KMS).await.unwrap_err();
        assert!(matches!(&err, VaultError::TierForbids(m) if m.contains("katman-c")), "{err}");
        let err = env.vault.move_kms(&Actor::System, org.id, "nope").await.unwrap_err();
        assert!(matches!(&err, VaultError::NotFound(m) if m.contains("'nope'") && m.contains(CUSTOMER_KMS)), "{err}");
        assert_eq!(events_of(&env, &org, LifecycleKind::KmsMoved).await.len(), 0);

        // Calls keep flowing while the org moves (the DEK cache is off: every call
        // unwraps in whichever KMS holds its key at that moment).
        let stop = Arc::new(AtomicBool::new(false));
        let (served, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let env = Arc::new(env);
        let mut clients = Vec::new();
        for _ in 0..3 {
            let (env, token, stop, served, failed) =
                (Arc::clone(&env), token.clone(), Arc::clone(&stop), Arc::clone(&served), Arc::clone(&failed));
            clients.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let status = call(&env, &token).await.status().as_u16();
                    let counter = if status == 200 { &served } else { &failed };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = env.vault.move_kms(&Actor::System, org.id, CUSTOMER_KMS).await.unwrap();
        assert_eq!((started.kek_version, &started.kms), (2, &customer));
        let err = env.vault.move_kms(&Actor::System, org.id, "default").await;
        if let Err(err) = err {
            assert!(matches!(&err, VaultError::Conflict(m) if m.contains("still moving")), "{err}");
        }
        let done = wait_idle(&env, org.id).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, Ordering::Relaxed);
        for client in clients {
            client.await.unwrap();
        }
        assert_eq!(failed.load(Ordering::Relaxed), 0, "calls failed during the move");
        assert!(served.load(Ordering::Relaxed) > 0);
        assert_eq!((done.kms, done.kek_version, done.versions_in_use), (customer.clone(), 2, vec![2]));

        // Every wrapped key now names the customer's KMS, which alone holds the org's KEK.
        let in_use = env.t.store().keks_in_use(&org.id).await.unwrap();
        assert_eq!(in_use, vec![(customer.clone(), 2)]);
        assert_eq!(env.customer.current_kek_version(&org.id).unwrap(), 2);
        assert!(matches!(env.kms.current_kek_version(&org.id), Err(KmsError::UnknownOrg(_))));
        let moved = events_of(&env, &org, LifecycleKind::KmsMoved).await;
        assert_eq!(moved.len(), 1);
        assert_eq!(moved[0]["from_kms"], "default");
        assert_eq!(moved[0]["to_kms"], CUSTOMER_KMS);
        let rewrapped = events_of(&env, &org, LifecycleKind::Rewrapped).await;
        assert_eq!(rewrapped.len(), CREDENTIALS);
        assert!(rewrapped.iter().all(|d| d["from_kms"] == "default" && d["to_kms"] == CUSTOMER_KMS));

        // The customer's KMS down: its org's calls fail closed with nothing sent, and
        // every other org keeps working.
        let other_token = {
            env.credential("platform", ProviderId::Openai, ScopeInput::default()).await;
            env.token(&[]).await
        };
        env.customer.down.store(true, Ordering::SeqCst);
        env.mock.clear();
        let refused = call(&env, &token).await;
        assert_eq!(refused.status().as_u16(), 503);
        let body: serde_json::Value = refused.json().await.unwrap();
        assert_eq!(body["error"]["code"], "kms_unavailable", "{body}");
        assert_eq!(env.mock.request_count(), 0, "nothing may be sent when the KMS is down");
        assert_eq!(call(&env, &other_token).await.status().as_u16(), 200);
        let ready = env.vault.check_ready().await;
        assert!(ready.is_ok(), "a customer's KMS being down must not make the node unready: {ready:?}");
        env.customer.down.store(false, Ordering::SeqCst);
        assert_eq!(call(&env, &token).await.status().as_u16(), 200);

        // A token that stops answering: its org's calls fail closed within the KMS
        // timeout (not when the client gives up), others are served meanwhile.
        env.customer.hung.store(true, Ordering::SeqCst);
        env.mock.clear();
        let started = Instant::now();
        let hung = call(&env, &token).await;
        assert_eq!(hung.status().as_u16(), 503);
        assert!(started.elapsed() < support::KMS_TIMEOUT * 3, "took {:?}", started.elapsed());
        assert_eq!(hung.json::<serde_json::Value>().await.unwrap()["error"]["code"], "kms_unavailable");
        assert_eq!(env.mock.request_count(), 0, "nothing may be sent when the KMS hangs");
        assert_eq!(call(&env, &other_token).await.status().as_u16(), 200);
        env.customer.hung.store(false, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(10);
        while call(&env, &token).await.status().as_u16() != 200 {
            assert!(Instant::now() < deadline, "the org's calls did not recover after its KMS answered again");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // And back to the installation's KMS.
        env.vault.move_kms(&Actor::System, org.id, "default").await.unwrap();
        let back = wait_idle(&env, org.id).await;
        assert_eq!((back.kms, back.kek_version), (KmsName::default(), 3));
        assert!(matches!(env.customer.current_kek_version(&org.id), Err(KmsError::UnknownOrg(_))));
        assert_eq!(env.kms.current_kek_version(&org.id).unwrap(), 3);
        assert_eq!(call(&env, &token).await.status().as_u16(), 200);
        let env = Arc::try_unwrap(env).ok().unwrap();
        env.stop().await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_org_on_its_own_kms_shreds_the_keys_there() {
    let env = Env::start(TestStore::sqlite().await.unwrap()).await;
    let (org, token) = katman_c_org(&env, "shred-me").await;
    env.vault.move_kms(&Actor::System, org.id, CUSTOMER_KMS).await.unwrap();
    wait_idle(&env, org.id).await;
    let sealed = env.t.store().list_wrapped_deks(&org.id).await.unwrap();
    env.vault.delete_org(&Actor::System, org.id).await.unwrap();
    assert!(matches!(env.customer.current_kek_version(&org.id), Err(KmsError::Destroyed(_))));
    for record in sealed {
        assert!(matches!(env.customer.unwrap_dek(&org.id, &record.wrapped_dek), Err(KmsError::Destroyed(_))));
    }
    let response = call(&env, &token).await;
    assert_eq!(response.status().as_u16(), 401, "a shredded org's token no longer authenticates");
    env.stop().await;
}
