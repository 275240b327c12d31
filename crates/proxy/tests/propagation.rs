//! Change propagation: a change makes stale only what it names (one org, one token), and
//! reaches other nodes on one PostgreSQL by notification — or, when notifications are
//! off or missed, by the poll.
//!
//! The `#[ignore]`d tests at the end are the fleet benchmark (`bench/fleet/run.sh`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use byok_audit::{AuditConfig, AuditWriter};
use byok_crypto::Kms;
use byok_domain::{Org, ProviderId, ScopeInput, Tier, WorkloadToken};
use byok_kms::KmsHandle;
use byok_proxy::{ProxyConfig, Sidecar, UpstreamBase};
use byok_store::testing::{for_each_backend, TestStore};
use byok_vault::{NewWorkloadToken, Vault, VaultPolicy};
use support::{actor, openai_chat, Env};
use tokio::sync::watch;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// Directory loads (store reads of a token or an org snapshot) per org id, counted from
/// the directory's debug events. Installed before any env starts, so the support
/// module's log buffer stays off in this binary.
fn loads() -> &'static Mutex<HashMap<String, u64>> {
    static LOADS: OnceLock<Mutex<HashMap<String, u64>>> = OnceLock::new();
    LOADS.get_or_init(|| {
        let filter = tracing_subscriber::filter::Targets::new().with_target("byok_proxy::cache", tracing::Level::DEBUG);
        let _ = tracing_subscriber::registry().with(LoadCounter.with_filter(filter)).try_init();
        Mutex::default()
    })
}

fn loads_of(org: &Org) -> u64 {
    loads().lock().unwrap().get(&org.id.to_string()).copied().unwrap_or(0)
}

struct LoadCounter;

struct OrgField(Option<String>);

impl tracing::field::Visit for OrgField {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "org" {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for LoadCounter {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let mut org = OrgField(None);
        event.record(&mut org);
        if let Some(org) = org.0 {
            *loads().lock().unwrap().entry(org).or_default() += 1;
        }
    }
}

async fn start(t: TestStore, poll: Duration) -> Env {
    loads();
    Env::start_with(t, Default::default(), |config| config.change_poll_interval = poll).await
}

/// Another sidecar on the env's database (its own pool and vault, the same KMS).
struct Node {
    proxy: String,
    vault: Vault,
    stop: watch::Sender<bool>,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn node(env: &Env, poll: Duration, listening: bool) -> Node {
    let store = env.t.reopen().await.unwrap();
    store.set_change_listening(listening);
    let vault = Vault::new(
        store.clone(),
        KmsHandle::new(Arc::clone(&env.kms) as Arc<dyn Kms>, 4),
        byok_domain::ModelFamilyRegistry::seeded(),
        VaultPolicy { allow_plain_http_base_url: true, ..VaultPolicy::default() },
    );
    let mut config = ProxyConfig::default();
    for provider in ProviderId::ALL {
        config.upstreams.insert(provider, UpstreamBase::parse(&env.mock.base_url()).unwrap());
    }
    config.change_poll_interval = poll;
    let (audit, _task) = AuditWriter::spawn(store, AuditConfig::default());
    let sidecar = Sidecar::new(vault.clone(), audit, config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = watch::channel(false);
    sidecar.spawn_change_watcher(stopped.clone());
    let mut until = stopped;
    tokio::spawn(byok_proxy::serve(listener, sidecar, async move {
        let _ = until.wait_for(|s| *s).await;
    }));
    Node { proxy, vault, stop }
}

/// A chat call through the sidecar at `proxy`; its status.
async fn call(env: &Env, proxy: &str, token: &str) -> u16 {
    let response = env
        .http
        .post(format!("{proxy}/openai/v1/chat/completions"))
        .bearer_auth(token)
        .json(&openai_chat("gpt-4o-mini", false))
        .send()
        .await
        .unwrap();
    response.status().as_u16()
}

async fn issue(vault: &Vault, org: &Org) -> (WorkloadToken, String) {
    let request = NewWorkloadToken { team: "research".to_owned(), workflows: Vec::new(), ..Default::default() };
    let issued = vault.issue_workload_token(&actor(), org.id, request).await.unwrap();
    (issued.token, issued.text.expose().to_owned())
}

/// Calls through `proxy` with `token` until one gets `status`; how long that took.
async fn until_status(env: &Env, proxy: &str, token: &str, status: u16, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if call(env, proxy, token).await == status {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    None
}

/// A change in org B leaves org A's cached token and snapshot alone (A's rows are edited
/// behind the store's back, without an event, so only a reload could see the edit); a
/// token revocation drops just that token; any other change in A is seen by the very
/// next call.
#[tokio::test]
async fn a_change_in_one_org_leaves_another_orgs_cache_warm() {
    for_each_backend("per_org_invalidation", |t| async move {
        let env = start(t, Duration::from_millis(50)).await;
        let a = env.org.clone();
        env.credential("a-openai", ProviderId::Openai, ScopeInput::default()).await;
        let (b, _) = env.other_org(Tier::KatmanB).await;
        env.credential_of(Some(&b), "b-openai", ProviderId::Openai, ScopeInput::default(), None).await;
        let (a1, a1_text) = issue(&env.vault, &a).await;
        let (a2, a2_text) = issue(&env.vault, &a).await;
        let (_, a3_text) = issue(&env.vault, &a).await;
        let (b1, b1_text) = issue(&env.vault, &b).await;
        for token in [&a1_text, &a2_text, &a3_text, &b1_text] {
            assert_eq!(call(&env, &env.proxy, token).await, 200);
        }
        // Let the poll settle (it reads the events at its first tick).
        tokio::time::sleep(Duration::from_millis(200)).await;
        for token in [&a1_text, &a2_text, &a3_text] {
            assert_eq!(call(&env, &env.proxy, token).await, 200);
        }
        let warm = loads_of(&a);

        // Behind the store's back: A's credential disabled, token a1 revoked.
        env.t.execute(&format!("UPDATE credentials SET state = 'disabled' WHERE org_id = '{}'", a.id)).await.unwrap();
        let now = byok_domain::Timestamp::now().as_micros();
        env.t.execute(&format!("UPDATE workload_tokens SET revoked_at = {now} WHERE id = '{}'", a1.id)).await.unwrap();

        // Changes in B, through this node's vault: B's revocation applies at once…
        env.vault.create_workflow(&actor(), b.id, "nightly", None).await.unwrap();
        env.vault.revoke_workload_token(&actor(), b.id, b1.id).await.unwrap();
        assert_eq!(call(&env, &env.proxy, &b1_text).await, 401, "B's revocation is enforced at once");
        // … and A's cache is untouched: the edits behind the store's back stay unseen.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(call(&env, &env.proxy, &a1_text).await, 200, "A's token stays cached");
        assert_eq!(call(&env, &env.proxy, &a3_text).await, 200, "A's snapshot stays cached");
        assert_eq!(loads_of(&a), warm, "no store read for A after changes in B");

        // A token revocation in A drops that token only.
        env.vault.revoke_workload_token(&actor(), a.id, a2.id).await.unwrap();
        assert_eq!(call(&env, &env.proxy, &a2_text).await, 401, "A's revocation is enforced at once");
        assert_eq!(call(&env, &env.proxy, &a1_text).await, 200, "other tokens of A stay cached");

        // Any other change in A: everything about A is read again, at the very next call.
        env.vault.create_workflow(&actor(), a.id, "nightly", None).await.unwrap();
        assert_eq!(call(&env, &env.proxy, &a1_text).await, 401, "a1's revocation is now seen");
        assert_ne!(call(&env, &env.proxy, &a3_text).await, 200, "A's disabled credential is now seen");
        env.stop().await;
    })
    .await
    .unwrap();
}

/// Two sidecars on one PostgreSQL, both polling only once a minute: a revocation through
/// one is enforced by the other within 100 ms — only the notification can explain it.
#[tokio::test]
async fn a_revocation_through_one_node_reaches_another_by_notification() {
    let Some(t) = TestStore::postgres().await.unwrap() else { return };
    let minute = Duration::from_secs(60);
    let env = start(t, minute).await;
    let other = node(&env, minute, true).await;
    env.credential("openai", ProviderId::Openai, ScopeInput::default()).await;
    let (token, text) = issue(&env.vault, &env.org).await;
    let (_, bystander) = issue(&env.vault, &env.org).await;
    // The listener connects in the background; then both tokens are cached on the other node.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(call(&env, &other.proxy, &text).await, 200);
    assert_eq!(call(&env, &other.proxy, &bystander).await, 200);

    env.vault.revoke_workload_token(&actor(), env.org.id, token.id).await.unwrap();
    let took = until_status(&env, &other.proxy, &text, 401, Duration::from_secs(2)).await;
    let took = took.expect("the revocation never reached the other node");
    assert!(took <= Duration::from_millis(100), "the revocation took {took:?} to reach the other node");
    assert_eq!(call(&env, &other.proxy, &bystander).await, 200);

    // And the other way round: a change through the other node reaches the first.
    let (back, back_text) = issue(&other.vault, &env.org).await;
    assert_eq!(call(&env, &env.proxy, &back_text).await, 200);
    other.vault.revoke_workload_token(&actor(), env.org.id, back.id).await.unwrap();
    let took = until_status(&env, &env.proxy, &back_text, 401, Duration::from_secs(2)).await;
    assert!(took.is_some_and(|t| t <= Duration::from_millis(100)), "took {took:?}");
    env.stop().await;
}

/// With notifications off, the poll alone carries the change (within its interval); with
/// the listener's connection killed, what commits while it reconnects is caught up on
/// reconnection, though the poll runs only once a minute.
#[tokio::test]
async fn the_poll_and_reconnection_catch_what_notifications_miss() {
    let Some(t) = TestStore::postgres().await.unwrap() else { return };
    let minute = Duration::from_secs(60);
    let env = start(t, minute).await;
    env.credential("openai", ProviderId::Openai, ScopeInput::default()).await;

    // Notifications off on the deaf node; it polls every 200 ms.
    let deaf = node(&env, Duration::from_millis(200), false).await;
    let (token, text) = issue(&env.vault, &env.org).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(call(&env, &deaf.proxy, &text).await, 200);
    env.vault.revoke_workload_token(&actor(), env.org.id, token.id).await.unwrap();
    let took = until_status(&env, &deaf.proxy, &text, 401, Duration::from_secs(3)).await;
    assert!(took.is_some_and(|t| t <= Duration::from_secs(1)), "the poll took {took:?}");

    // A listening node whose connection is killed, polling once a minute.
    let listening = node(&env, minute, true).await;
    let (token, text) = issue(&env.vault, &env.org).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(call(&env, &listening.proxy, &text).await, 200);
    let killed = env
        .t
        .query_i64(
            "SELECT COUNT(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND query LIKE 'LISTEN%') AS killed",
        )
        .await
        .unwrap();
    assert!(killed >= 1, "no listener connection found");
    env.vault.revoke_workload_token(&actor(), env.org.id, token.id).await.unwrap();
    let took = until_status(&env, &listening.proxy, &text, 401, Duration::from_secs(5)).await;
    assert!(took.is_some_and(|t| t <= Duration::from_secs(3)), "reconnection took {took:?}");
    env.stop().await;
}

// ---------------------------------------------------------------------------------------
// The fleet benchmark (bench/fleet/run.sh): ignored in normal runs.

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Figures {
    calls: usize,
    p50: Duration,
    p99: Duration,
    loads_per_1000: f64,
    changes: u64,
}

/// Org A's calls through `proxy` for `duration` (sequential, one connection), while
/// `changer` (if any) makes changes in other orgs at `rate` per second.
async fn measure(
    env: &Env,
    proxy: &str,
    token: &str,
    duration: Duration,
    changer: Option<(&Vault, &[Org], u64)>,
) -> Figures {
    let a = env.org.clone();
    // Unmeasured: the previous scenario's last change is applied here.
    for _ in 0..50 {
        assert_eq!(call(env, proxy, token).await, 200);
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let made = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let task = changer.map(|(vault, orgs, rate)| {
        let (vault, orgs, stop, made) = (vault.clone(), orgs.to_vec(), Arc::clone(&stop), Arc::clone(&made));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
            let mut i = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tick.tick().await;
                let org = &orgs[i % orgs.len()];
                // Alternate an org-wide change (a workflow) and a token change.
                if i.is_multiple_of(2) {
                    vault
                        .create_workflow(
                            &actor(),
                            org.id,
                            &format!("wf-{}", ulid::Ulid::new().to_string().to_ascii_lowercase()),
                            None,
                        )
                        .await
                        .unwrap();
                } else {
                    let (token, _) = issue(&vault, org).await;
                    vault.revoke_workload_token(&actor(), org.id, token.id).await.unwrap();
                }
                i += 1;
                made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        })
    });
    let before = loads_of(&a);
    let mut latencies = Vec::new();
    let start = Instant::now();
    while start.elapsed() < duration {
        let t0 = Instant::now();
        assert_eq!(call(env, proxy, token).await, 200);
        latencies.push(t0.elapsed());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(task) = task {
        task.await.unwrap();
    }
    let loads = loads_of(&a) - before;
    latencies.sort();
    Figures {
        calls: latencies.len(),
        p50: percentile(&latencies, 50.0),
        p99: percentile(&latencies, 99.0),
        loads_per_1000: loads as f64 * 1000.0 / latencies.len().max(1) as f64,
        changes: made.load(std::sync::atomic::Ordering::Relaxed),
    }
}

/// One org's call latency and directory loads, with and without a steady stream of
/// changes in other orgs (through the same node and through another node).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark: bench/fleet/run.sh"]
async fn bench_fleet_isolation() {
    let t = match TestStore::postgres().await.unwrap() {
        Some(t) => t,
        None => TestStore::sqlite().await.unwrap(),
    };
    let backend = t.backend();
    let duration = Duration::from_secs(env_number("BENCH_DURATION", 5));
    let rate = env_number("BENCH_CHANGE_RATE", 20);
    let others = env_number("BENCH_OTHER_ORGS", 100);
    let env = start(t, Duration::from_millis(250)).await;
    let remote = (backend == byok_store::Backend::Postgres).then_some(());
    let other_node = match remote {
        Some(()) => Some(node(&env, Duration::from_millis(250), true).await),
        None => None,
    };
    env.credential("openai", ProviderId::Openai, ScopeInput::default()).await;
    let token = env.token(&[]).await;
    let mut orgs = Vec::new();
    for _ in 0..others {
        orgs.push(env.other_org(Tier::KatmanB).await.0);
    }
    // Warm up.
    measure(&env, &env.proxy, &token, Duration::from_secs(1), None).await;

    let baseline = measure(&env, &env.proxy, &token, duration, None).await;
    let local = measure(&env, &env.proxy, &token, duration, Some((&env.vault, &orgs, rate))).await;
    let remote = match &other_node {
        Some(n) => Some(measure(&env, &env.proxy, &token, duration, Some((&n.vault, &orgs, rate))).await),
        None => None,
    };
    // For contrast: the same stream of changes in A itself — what every org paid for any
    // change anywhere while invalidation was global.
    let own =
        measure(&env, &env.proxy, &token, duration, Some((&env.vault, std::slice::from_ref(&env.org), rate))).await;
    let again = measure(&env, &env.proxy, &token, duration, None).await;
    println!();
    println!(
        "fleet isolation ({backend}): org A's calls, sequential, {}s each; changes in {others} other orgs",
        duration.as_secs()
    );
    println!("{:<34} {:>8} {:>9} {:>9} {:>13} {:>8}", "scenario", "calls", "p50 ms", "p99 ms", "loads/1000", "changes");
    let mut rows = vec![("baseline: no changes", &baseline), ("changes through this node", &local)];
    if let Some(remote) = &remote {
        rows.push(("changes through another node", remote));
    }
    rows.push(("contrast: changes in org A itself", &own));
    rows.push(("baseline again: no changes", &again));
    for (name, f) in rows {
        println!(
            "{:<34} {:>8} {:>9.3} {:>9.3} {:>13.3} {:>8}",
            name,
            f.calls,
            ms(f.p50),
            ms(f.p99),
            f.loads_per_1000,
            f.changes
        );
    }
    println!("(loads/1000: store reads of org A's token or snapshot per 1000 calls of A)");
    drop(other_node);
    env.stop().await;
}

/// Propagation with 3 nodes on one PostgreSQL: for each of N token revocations through
/// one node, how long until both other nodes refuse the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark: bench/fleet/run.sh"]
async fn bench_fleet_propagation() {
    let Some(t) = TestStore::postgres().await.unwrap() else {
        println!("fleet propagation: BYOK_TEST_POSTGRES_URL is not set; skipped");
        return;
    };
    let changes = env_number("BENCH_PROPAGATION_CHANGES", 100) as usize;
    let poll = Duration::from_millis(env_number("BENCH_POLL_MS", 250));
    let env = start(t, poll).await;
    let second = node(&env, poll, true).await;
    let third = node(&env, poll, true).await;
    env.credential("openai", ProviderId::Openai, ScopeInput::default()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut times = Vec::with_capacity(changes * 2);
    for _ in 0..changes {
        let (token, text) = issue(&env.vault, &env.org).await;
        for n in [&second, &third] {
            assert_eq!(call(&env, &n.proxy, &text).await, 200);
        }
        env.vault.revoke_workload_token(&actor(), env.org.id, token.id).await.unwrap();
        let committed = Instant::now();
        let (s, th) = tokio::join!(
            async {
                while call(&env, &second.proxy, &text).await != 401 {}
                committed.elapsed()
            },
            async {
                while call(&env, &third.proxy, &text).await != 401 {}
                committed.elapsed()
            }
        );
        times.push(s);
        times.push(th);
    }
    times.sort();
    println!();
    println!(
        "fleet propagation (3 nodes, PostgreSQL, poll {} ms): {} revocations, {} node observations",
        poll.as_millis(),
        changes,
        times.len()
    );
    println!(
        "revocation → refused on the other node: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(percentile(&times, 50.0)),
        ms(percentile(&times, 99.0)),
        ms(*times.last().unwrap_or(&Duration::ZERO))
    );
    drop((second, third));
    env.stop().await;
}
