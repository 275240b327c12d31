//! Audit benchmark (see `bench/audit/README.md`; run it with `bench/audit/run.sh`).
//!
//! 1. Rows appended per second with the sidecar under load: a whole `byok serve`
//!    in-process (`byok_server::start`), the mock provider as OpenAI, N concurrent
//!    clients for a fixed time. Compared in the same run, rounds interleaved, with what
//!    group commit replaces — the same sidecar whose audit writer commits one row per
//!    transaction, and sequential one-row `append_audit` calls — and with the
//!    group-commit writer alone (no HTTP).
//! 2. Replay of a credential with 10^6 resolutions (each with its completion): first page,
//!    the whole timeline page by page, and verify of the chain.
//! 3. Statements of an org with 10^6 metered calls in one month: `Vault::statement` from
//!    the usage rollup (whole hours) against the same from the raw audit rows, for the
//!    month and for a period with ragged edges, checked byte for byte; and what keeping
//!    the rollup costs the append path (the same fill without metering, interleaved).
//!
//! SQLite always; PostgreSQL as well when `BYOK_BENCH_POSTGRES_URL` names a server (a
//! fresh database is created for each run and dropped afterwards).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use byok_audit::{AuditConfig, AuditWriter};
use byok_crypto::{LocalKeyring, ProviderSecret};
use byok_domain::{
    Actor, CallCompletion, Capability, CredentialId, CredentialOwner, Metering, Mode, ModelFamilyRegistry, Money,
    OrgId, Outcome, PriceBook, ProviderId, ProviderPrice, ResolutionAudit, ScopeInput, TeamId, Tier, Timestamp,
    TokenId,
};
use byok_kms::KmsHandle;
use byok_mock_provider::{MockConfig, MockProvider};
use byok_proxy::Sidecar;
use byok_proxy::UpstreamBase;
use byok_store::testing::{TestStore, POSTGRES_URL_VAR};
use byok_store::{AuditEntry, AuditFilter, Backend, Segment, Store, UsageSource};
use byok_vault::{NewCredential, NewWorkloadToken, Owner, Vault, VaultPolicy};
use clap::Parser;
use tokio::sync::watch;
use tokio::task::JoinHandle;

const BENCH_POSTGRES_VAR: &str = "BYOK_BENCH_POSTGRES_URL";
const OPENAI_KEY: &str = "sk-bench-audit-openai-0123456789abcdef";

#[derive(Debug, Clone, Parser)]
#[command(
    about = "byok audit benchmark: append rate under load, replay of 10^6 calls, statements of 10^6 metered calls"
)]
struct Args {
    /// Concurrent clients driving the sidecar (and appenders driving the writer alone).
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Measured seconds of each append-rate run.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Unmeasured seconds of load before the sidecar run.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Calls (resolutions, each with a completion) of the replayed credential, and metered
    /// calls of the org whose statements are measured.
    #[arg(long, default_value_t = 1_000_000)]
    calls: u64,
    /// Entries per `append_audit` transaction while filling the replay and statement stores.
    #[arg(long, default_value_t = 20_000)]
    fill_batch: usize,
    /// Rounds of the append-rate runs (interleaved; medians are reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Give up paging the whole timeline after this many seconds (and project the total).
    #[arg(long, default_value_t = 300.0)]
    timeline_budget: f64,
    /// Fill resolution rows only (no completions), to separate the two lookups.
    #[arg(long)]
    no_completions: bool,
    /// Before replaying, add an index on `call_completions (org_id, call_id)` — an
    /// experiment: the timeline's completion lookup filters on both columns.
    #[arg(long)]
    extra_index: bool,
    /// Before replaying (or measuring statements), run `ANALYZE` (planner statistics;
    /// PostgreSQL's autovacuum does this on its own sooner or later, SQLite never unless
    /// asked) — an experiment.
    #[arg(long)]
    analyze: bool,
    /// How many times each statement is computed (min and median are reported).
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Which parts: `append`, `replay`, `statement` (default: all three).
    #[arg(long, value_delimiter = ',', default_value = "append,replay,statement")]
    parts: Vec<String>,
    /// Backends: `sqlite`, `postgres` (needs BYOK_BENCH_POSTGRES_URL); default both
    /// when the variable is set, else SQLite.
    #[arg(long, value_delimiter = ',')]
    backends: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(part) = args.parts.iter().find(|p| !["append", "replay", "statement"].contains(&p.as_str())) {
        anyhow::bail!("unknown part '{part}': use append, replay or statement");
    }
    anyhow::ensure!(args.repeats >= 1, "--repeats must be at least 1");
    let postgres = std::env::var(BENCH_POSTGRES_VAR).ok().filter(|u| !u.trim().is_empty());
    // The store's test support creates (and drops) fresh PostgreSQL databases through
    // this variable; set before any thread starts.
    match &postgres {
        Some(url) => std::env::set_var(POSTGRES_URL_VAR, url),
        None => std::env::remove_var(POSTGRES_URL_VAR),
    }
    let mut backends = Vec::new();
    let wanted = |name: &str| args.backends.is_empty() || args.backends.iter().any(|b| b == name);
    if wanted("sqlite") {
        backends.push(Backend::Sqlite);
    }
    if wanted("postgres") {
        if postgres.is_some() {
            backends.push(Backend::Postgres);
        } else if !args.backends.is_empty() {
            anyhow::bail!("--backends postgres needs {BENCH_POSTGRES_VAR}");
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        println!(
            "byok audit benchmark — {} cores, release={}, clients={}, seconds={}, calls={}",
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            !cfg!(debug_assertions),
            args.clients,
            args.seconds,
            args.calls
        );
        for backend in backends {
            println!("\n=== {} ===", backend.as_str());
            if args.parts.iter().any(|p| p == "append") {
                append_rate(&args, backend).await?;
            }
            if args.parts.iter().any(|p| p == "replay") {
                replay(&args, backend).await?;
            }
            if args.parts.iter().any(|p| p == "statement") {
                statements(&args, backend).await?;
            }
        }
        Ok(())
    })
}

async fn fresh(backend: Backend) -> anyhow::Result<TestStore> {
    TestStore::new(backend).await?.context("PostgreSQL is not configured")
}

fn rate(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

// ---------------------------------------------------------------------------------------
// 1. Append rate
// ---------------------------------------------------------------------------------------

/// A sidecar under test: the real server, or the same parts wired by hand with a
/// different audit batch size.
enum Target {
    Server(byok_server::Running),
    Wired {
        vault: Vault,
        store: Store,
        proxy: std::net::SocketAddr,
        stop: watch::Sender<bool>,
        proxy_task: JoinHandle<std::io::Result<()>>,
        audit_task: JoinHandle<()>,
    },
}

impl Target {
    fn store(&self) -> &Store {
        match self {
            Target::Server(running) => running.store(),
            Target::Wired { store, .. } => store,
        }
    }

    fn vault(&self) -> &Vault {
        match self {
            Target::Server(running) => running.vault(),
            Target::Wired { vault, .. } => vault,
        }
    }

    fn proxy_addr(&self) -> std::net::SocketAddr {
        match self {
            Target::Server(running) => running.proxy_addr(),
            Target::Wired { proxy, .. } => *proxy,
        }
    }

    async fn shutdown(self) -> anyhow::Result<()> {
        match self {
            Target::Server(running) => running.shutdown().await,
            Target::Wired { store, stop, proxy_task, audit_task, .. } => {
                let _ = stop.send(true);
                proxy_task.await??;
                audit_task.await?;
                store.close().await;
                Ok(())
            }
        }
    }
}

/// What one sidecar run measured.
struct SidecarRun {
    calls_per_s: f64,
    rows_per_s: f64,
    failed: u64,
    sample: ResolutionAudit,
}

/// Start a sidecar on a fresh database (`max_batch = None`: `byok_server::start`, i.e.
/// the product with its default group commit; `Some(n)`: the same parts wired by hand
/// with an audit writer that commits at most `n` rows per transaction), set up an org,
/// a credential and a token, and drive it with `args.clients` closed-loop clients.
async fn sidecar_run(args: &Args, backend: Backend, max_batch: Option<usize>) -> anyhow::Result<SidecarRun> {
    let db = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(fresh(backend).await?),
    };
    let data_dir = tempfile::tempdir()?;
    let mock = MockProvider::start(MockConfig {
        openai_keys: vec![OPENAI_KEY.to_owned()],
        record: false,
        ..MockConfig::default()
    })
    .await?;
    let upstream = UpstreamBase::parse(&mock.base_url())?;
    let mut settings = byok_server::Settings::for_tests(data_dir.path());
    // SQLite: the server's own file in its data dir, as `byok serve` would have it.
    settings.database_url = db.as_ref().map(|db| db.url().to_owned());
    settings.proxy.upstreams.insert(ProviderId::Openai, upstream);
    let target = match max_batch {
        None => Target::Server(byok_server::start(settings).await?),
        Some(max_batch) => {
            let store = match &settings.database_url {
                None => Store::open_sqlite(&data_dir.path().join("byok.db")).await?,
                Some(url) => Store::open(url).await?,
            };
            let keyring = LocalKeyring::open(data_dir.path().join("keyring.json"))?;
            let kms = KmsHandle::new(Arc::new(keyring), settings.kms_max_concurrency);
            let policy = VaultPolicy {
                allow_plain_http_base_url: true,
                retention: settings.retention,
                ..VaultPolicy::default()
            };
            let vault = Vault::new(store.clone(), kms, settings.model_families(), policy);
            let (audit, audit_task) =
                AuditWriter::spawn(store.clone(), AuditConfig { max_batch, ..AuditConfig::default() });
            let sidecar = Sidecar::new(vault.clone(), audit, settings.proxy.clone())?;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let proxy = listener.local_addr()?;
            let (stop, mut stopped) = watch::channel(false);
            let proxy_task = tokio::spawn(byok_proxy::serve(listener, sidecar, async move {
                let _ = stopped.wait_for(|s| *s).await;
            }));
            Target::Wired { vault, store, proxy, stop, proxy_task, audit_task }
        }
    };
    let vault = target.vault().clone();
    let org = vault.create_org(&Actor::System, "bench", Tier::KatmanB).await?;
    vault.create_team(&Actor::System, org.id, "agents").await?;
    let new = NewCredential {
        name: "openai".into(),
        provider: ProviderId::Openai,
        secret: ProviderSecret::new(OPENAI_KEY.into())?,
        scope: ScopeInput::default(),
        base_url: None,
        expires_at: None,
        priority: None,
        weight: None,
        rpm: None,
        tpm: None,
        verify: false,
    };
    vault.create_credential(&Actor::System, org.id, new).await?;
    let token = vault
        .issue_workload_token(
            &Actor::System,
            org.id,
            NewWorkloadToken { team: "agents".into(), workflows: Vec::new(), ..Default::default() },
        )
        .await?;
    let token = token.text.expose().to_owned();
    let url = format!("http://{}/openai/v1/chat/completions", target.proxy_addr());

    // Closed loop: each client sends its next call when the previous one is answered.
    let http = reqwest::Client::builder().pool_max_idle_per_host(args.clients).build()?;
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for client in 0..args.clients {
        let (http, url, token) = (http.clone(), url.clone(), token.clone());
        let (measuring, stop, answered, failed) =
            (Arc::clone(&measuring), Arc::clone(&stop), Arc::clone(&answered), Arc::clone(&failed));
        clients.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let body = serde_json::json!({
                    "model": "gpt-4o-mini",
                    "messages": [{"role": "user", "content": "say something short"}],
                });
                let sent = http
                    .post(&url)
                    .bearer_auth(&token)
                    .header("x-byok-call-id", format!("bench-{client}-{i}"))
                    .json(&body)
                    .send()
                    .await;
                let ok = match sent {
                    Ok(response) => response.status().is_success() && response.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if measuring.load(Ordering::Relaxed) {
                    if ok {
                        answered.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
    let from = Timestamp::now();
    let started = Instant::now();
    measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(args.seconds)).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let until = Timestamp::now();
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await?;
    }
    let store = target.store().clone();
    let rows = count_rows(&store, &org.id, from, until).await?;
    let sample = store
        .list_audit(Some(&org.id), &AuditFilter { limit: Some(1), ..AuditFilter::default() })
        .await?
        .into_iter()
        .next()
        .context("the sidecar wrote no audit row")?;
    let report = store.verify_audit(Some(&org.id)).await?;
    anyhow::ensure!(report.ok, "verify after a sidecar run failed: {report:?}");
    drop(vault);
    target.shutdown().await?;
    mock.shutdown().await;
    drop(db);
    Ok(SidecarRun {
        calls_per_s: rate(answered.load(Ordering::Relaxed), elapsed),
        rows_per_s: rate(rows, elapsed),
        failed: failed.load(Ordering::Relaxed),
        sample,
    })
}

/// A fresh store for the writer-level runs: SQLite in a new data dir, or a new
/// PostgreSQL database.
async fn writer_store(backend: Backend) -> anyhow::Result<(TestStore, Store)> {
    let db = fresh(backend).await?;
    let store = db.store().clone();
    Ok((db, store))
}

/// The group-commit writer alone: `appenders` tasks appending copies of `sample`.
async fn group_commit_run(args: &Args, backend: Backend, sample: &ResolutionAudit) -> anyhow::Result<f64> {
    let (db, store) = writer_store(backend).await?;
    let (writer, task) = AuditWriter::spawn(store.clone(), AuditConfig::default());
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
    let started = Instant::now();
    let mut appenders = Vec::new();
    for a in 0..args.clients {
        let (writer, done, sample) = (writer.clone(), Arc::clone(&done), sample.clone());
        appenders.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let mut row = sample.clone();
                row.call_id = format!("gc-{a}-{n}");
                row.at = Timestamp::now();
                writer.append(row).await.expect("group commit append");
                n += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for appender in appenders {
        appender.await?;
    }
    let elapsed = started.elapsed();
    drop(writer);
    task.await?;
    store.close().await;
    drop(db);
    Ok(rate(done.load(Ordering::Relaxed), elapsed))
}

/// What group commit replaces: one transaction per row, one after the other.
async fn one_per_tx_run(args: &Args, backend: Backend, sample: &ResolutionAudit) -> anyhow::Result<f64> {
    let (db, store) = writer_store(backend).await?;
    let mut segment = Segment::new();
    let mut n = 0u64;
    let seconds = Duration::from_secs_f64(args.seconds);
    let started = Instant::now();
    while started.elapsed() < seconds {
        let mut row = sample.clone();
        row.call_id = format!("tx1-{n}");
        row.at = Timestamp::now();
        store.append_audit(&mut segment, &[AuditEntry::Resolution(row)]).await?;
        n += 1;
    }
    let result = rate(n, started.elapsed());
    store.close().await;
    drop(db);
    Ok(result)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

async fn append_rate(args: &Args, backend: Backend) -> anyhow::Result<()> {
    println!(
        "-- append rate: {} clients/appenders, {:.1} s measured per run ({:.1} s warm-up for the sidecars), {} rounds \
         interleaved, medians",
        args.clients, args.seconds, args.warmup, args.rounds
    );
    let (mut server, mut single, mut group, mut baseline) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        let a = sidecar_run(args, backend, None).await?;
        let b = sidecar_run(args, backend, Some(1)).await?;
        let c = group_commit_run(args, backend, &a.sample).await?;
        let d = one_per_tx_run(args, backend, &a.sample).await?;
        eprintln!(
            "  round {round}: sidecar {:.0} rows/s ({:.0} calls/s, {} failed); sidecar one-tx-per-row {:.0} rows/s \
             ({:.0} calls/s, {} failed); writer alone {c:.0} rows/s; one tx per row {d:.0} rows/s",
            a.rows_per_s, a.calls_per_s, a.failed, b.rows_per_s, b.calls_per_s, b.failed
        );
        anyhow::ensure!(a.failed == 0 && b.failed == 0, "calls failed under load");
        server.push(a.rows_per_s);
        single.push(b.rows_per_s);
        group.push(c);
        baseline.push(d);
    }
    let (server, single, group, baseline) = (median(server), median(single), median(group), median(baseline));
    println!("sidecar, byok_server::start (group commit):       {server:>8.0} allowed rows/s durable (= calls/s)");
    println!("sidecar, same parts, audit max_batch = 1:         {single:>8.0} allowed rows/s durable (= calls/s)");
    println!("group-commit writer alone ({:>2} appenders):         {group:>8.0} rows/s", args.clients);
    println!("one transaction per row, sequential (baseline):  {baseline:>8.0} rows/s");
    println!(
        "ratios: sidecar group commit / sidecar one-tx-per-row = {:.1}x; sidecar / baseline = {:.1}x; writer alone / \
         baseline = {:.1}x",
        server / single.max(1e-9),
        server / baseline.max(1e-9),
        group / baseline.max(1e-9)
    );
    Ok(())
}

/// Allowed rows of `org` written in [`from`, `until`).
async fn count_rows(store: &Store, org: &OrgId, from: Timestamp, until: Timestamp) -> anyhow::Result<u64> {
    let mut count = 0u64;
    let mut after = None;
    loop {
        let filter = AuditFilter {
            outcome: Some(Outcome::Allowed),
            since: Some(from),
            until: Some(until),
            after_seq: after,
            limit: Some(10_000),
            ..AuditFilter::default()
        };
        let page = store.list_audit(Some(org), &filter).await?;
        let Some(last) = page.last() else { return Ok(count) };
        after = Some(last.seq);
        count += page.len() as u64;
    }
}

// ---------------------------------------------------------------------------------------
// 2. Replay of a credential with 10^6 calls
// ---------------------------------------------------------------------------------------

fn resolution(org: OrgId, credential: CredentialId, fingerprint: &str, i: u64, at: Timestamp) -> ResolutionAudit {
    ResolutionAudit {
        seq: 0,
        at,
        call_id: format!("replay-{i:08}"),
        org_id: Some(org),
        team_id: None,
        workflow_id: None,
        token_id: None,
        credential_id: Some(credential),
        credential_version: Some(1),
        fingerprint: Some(fingerprint.to_owned()),
        provider: Some(ProviderId::Openai),
        model: Some("gpt-4o-mini".into()),
        model_family: Some("gpt-4o-mini".into()),
        capability: Some(Capability::Chat),
        mode: Some(Mode::Sync),
        outcome: Outcome::Allowed,
        reason: None,
        detail: None,
        tier: None,
        credential_owner: None,
        attempt: None,
    }
}

async fn replay(args: &Args, backend: Backend) -> anyhow::Result<()> {
    let db = fresh(backend).await?;
    let store = db.store().clone();
    let keys = tempfile::tempdir()?;
    let kms = KmsHandle::new(Arc::new(LocalKeyring::open(keys.path().join("keyring.json"))?), 2);
    let vault = Vault::new(store.clone(), kms, ModelFamilyRegistry::seeded(), VaultPolicy::default());
    let org = vault.create_org(&Actor::System, "replay", Tier::KatmanB).await?;
    let new = NewCredential {
        name: "openai".into(),
        provider: ProviderId::Openai,
        secret: ProviderSecret::new(OPENAI_KEY.into())?,
        scope: ScopeInput::default(),
        base_url: None,
        expires_at: None,
        priority: None,
        weight: None,
        rpm: None,
        tpm: None,
        verify: false,
    };
    let credential = vault.create_credential(&Actor::System, org.id, new).await?;

    // Fill: `calls` resolution rows, each followed by its completion, 1 ms apart, in
    // big transactions of one writer segment (as a long-running sidecar would leave them).
    let per_batch = (args.fill_batch / 2).max(1) as u64;
    let start_us = Timestamp::now().as_micros();
    let mut segment = Segment::new();
    let started = Instant::now();
    let mut i = 0u64;
    let mut next_report = 100_000;
    let mut entries = Vec::with_capacity(args.fill_batch);
    while i < args.calls {
        entries.clear();
        let end = (i + per_batch).min(args.calls);
        for n in i..end {
            let at = Timestamp::from_micros(start_us + n as i64 * 1000).context("timestamp")?;
            let row = resolution(org.id, credential.id, &credential.fingerprint, n, at);
            let done = Timestamp::from_micros(at.as_micros() + 400).context("timestamp")?;
            let completion = CallCompletion {
                call_id: row.call_id.clone(),
                org_id: org.id,
                credential_id: credential.id,
                at: done,
                upstream_status: Some(200),
                latency_us: 400,
                input_tokens: Some(12),
                output_tokens: Some(34),
                status: "completed".into(),
                metering: None,
            };
            entries.push(AuditEntry::Resolution(row));
            if !args.no_completions {
                entries.push(AuditEntry::Completion(completion));
            }
        }
        store.append_audit(&mut segment, &entries).await?;
        i = end;
        if i >= next_report || i == args.calls {
            eprintln!("  filled {i} calls ({:.0} s)", started.elapsed().as_secs_f64());
            next_report += 100_000;
        }
    }
    let fill = started.elapsed();
    let per_call = if args.no_completions { 1 } else { 2 };
    println!(
        "-- replay: credential with {} calls ({} audit entries{}), filled in {:.1} s ({:.0} entries/s in transactions \
         of {} entries)",
        args.calls,
        per_call * args.calls,
        if args.no_completions { ", no completions" } else { "" },
        fill.as_secs_f64(),
        rate(per_call * args.calls, fill),
        args.fill_batch
    );
    if args.extra_index {
        let started = Instant::now();
        db.execute("CREATE INDEX bench_call_completions_org_call_idx ON call_completions (org_id, call_id)").await?;
        println!(
            "experiment: added index call_completions (org_id, call_id) in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    if args.analyze {
        let started = Instant::now();
        db.execute("ANALYZE").await?;
        println!("experiment: ANALYZE in {:.1} s", started.elapsed().as_secs_f64());
    }

    // (a) The first page of 1000 items, five times (the first one is the cold one).
    let mut times = Vec::new();
    let mut first_len = 0;
    for _ in 0..5 {
        let started = Instant::now();
        let (items, next) = store.credential_timeline(&org.id, Some(&org.id), &credential.id, None, 1000).await?;
        times.push(started.elapsed());
        first_len = items.len();
        anyhow::ensure!(next.is_some(), "the first page says nothing follows");
    }
    let first = times[0];
    times.sort();
    println!(
        "(a) first page (1000 items, {first_len} returned): {:.1} ms first, {:.1} ms median of 5",
        ms(first),
        ms(times[2])
    );

    // (b) The whole timeline, pages of 10 000 (within the budget).
    let budget = Duration::from_secs_f64(args.timeline_budget);
    let mut first_page = None;
    let mut last_page: Duration;
    let started = Instant::now();
    let mut cursor = None;
    let mut items = 0u64;
    let mut calls = 0u64;
    let mut completed = 0u64;
    let mut pages = 0u64;
    let mut slowest = Duration::ZERO;
    loop {
        let page_started = Instant::now();
        let (page, next) = store.credential_timeline(&org.id, Some(&org.id), &credential.id, cursor, 10_000).await?;
        last_page = page_started.elapsed();
        first_page.get_or_insert(last_page);
        slowest = slowest.max(last_page);
        pages += 1;
        items += page.len() as u64;
        for item in &page {
            if let byok_store::TimelineItem::Call { completion, .. } = item {
                calls += 1;
                completed += u64::from(completion.is_some());
            }
        }
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
        anyhow::ensure!(pages < 1_000_000, "timeline paging does not end");
        if started.elapsed() > budget {
            break;
        }
    }
    let whole = started.elapsed();
    let first_page = first_page.unwrap_or_default();
    if calls < args.calls {
        // Out of budget: project linearly from the pages read (a lower bound when pages
        // get slower the deeper they are).
        let projected = whole.as_secs_f64() * args.calls as f64 / calls.max(1) as f64;
        println!(
            "(b) whole timeline in pages of 10 000: NOT FINISHED within the {:.0} s budget: {pages} pages ({calls} of \
             {} calls) in {:.1} s, {:.0} items/s; first page {:.0} ms, last {:.0} ms; projected total >= {:.0} s",
            budget.as_secs_f64(),
            args.calls,
            whole.as_secs_f64(),
            rate(items, whole),
            ms(first_page),
            ms(last_page),
            projected
        );
    } else {
        let expected = if args.no_completions { 0 } else { args.calls };
        anyhow::ensure!(completed == expected, "timeline returned {calls} calls, {completed} completed");
        println!(
            "(b) whole timeline in pages of 10 000: {:.2} s ({pages} pages, {items} items, {:.0} items/s; first page \
             {:.0} ms, last {:.0} ms, slowest {:.0} ms)",
            whole.as_secs_f64(),
            rate(items, whole),
            ms(first_page),
            ms(last_page),
            ms(slowest)
        );
    }

    // (c) Verify the org's chains.
    let started = Instant::now();
    let report = store.verify_audit(Some(&org.id)).await?;
    let verify = started.elapsed();
    anyhow::ensure!(report.ok, "verify failed: {report:?}");
    println!(
        "(c) verify_audit: {:.2} s for {} entries ({:.0} entries/s): ok",
        verify.as_secs_f64(),
        report.checked,
        rate(report.checked, verify)
    );
    drop(vault);
    store.close().await;
    drop(db);
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// ---------------------------------------------------------------------------------------
// 3. Statements of an org with 10^6 metered calls in one month
// ---------------------------------------------------------------------------------------

const ANTHROPIC_KEY: &str = "sk-ant-bench-audit-0123456789abcdef";
const PLATFORM_KEY: &str = "sk-ant-bench-platform-0123456789abcdef";
/// The month the calls are spread over.
const MONTH_FROM: &str = "2026-11-01T00:00:00Z";
const MONTH_TO: &str = "2026-12-01T00:00:00Z";
/// The org moves from katman-a to katman-b here: a second rate card, and the end of its
/// platform-served calls.
const TIER_CHANGE: &str = "2026-11-16T00:00:00Z";
/// A period with ragged edges: partial first and last hours.
const RAGGED_FROM: &str = "2026-11-03T10:17:23.5Z";
const RAGGED_TO: &str = "2026-11-20T08:02:00Z";
/// The platform's price of the one platform-served family (per million tokens).
const PLATFORM_FAMILY: &str = "claude-sonnet";

/// A call's dice: a fixed hash of its number (splitmix64), so that the mix is the same in
/// both stores and in every run, and team, model, outcome and tokens are independent.
fn dice(call: u64) -> u64 {
    let mut z = call.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The model mix: 5 in 10 gpt-4o-mini, 3 in 10 gpt-4o, 2 in 10 a Claude Sonnet (served by
/// the platform pool while the org is on katman-a).
fn model_of(dice: u64) -> (&'static str, &'static str, ProviderId) {
    match dice % 10 {
        0..=4 => ("gpt-4o-mini", "gpt-4o-mini", ProviderId::Openai),
        5..=7 => ("gpt-4o-2024-08-06", "gpt-4o", ProviderId::Openai),
        _ => ("claude-sonnet-4-5", PLATFORM_FAMILY, ProviderId::Anthropic),
    }
}

/// What a call is: about 1 % denied (no completion), 0.25 % allowed but never answered by
/// the provider (a completion without status), the rest answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallKind {
    Answered,
    Unanswered,
    Denied,
}

fn kind_of(dice: u64) -> CallKind {
    match (dice >> 16) % 400 {
        0..=3 => CallKind::Denied,
        4 => CallKind::Unanswered,
        _ => CallKind::Answered,
    }
}

/// One org with two teams (a token each), its own OpenAI and Anthropic credentials, and
/// the platform pool's Anthropic credential.
struct StatementFixture {
    vault: Vault,
    org: OrgId,
    teams: [TeamId; 2],
    tokens: [TokenId; 2],
    openai: (CredentialId, String),
    anthropic: (CredentialId, String),
    platform: (CredentialId, String),
    card_a: String,
    card_b: String,
    platform_price: Option<String>,
    tier_change_us: i64,
    _keys: tempfile::TempDir,
}

fn statement_price_book() -> anyhow::Result<PriceBook> {
    let mut book = PriceBook::default();
    book.provider_prices
        .insert(PLATFORM_FAMILY.to_owned(), ProviderPrice { input: Money::parse("3")?, output: Money::parse("15")? });
    Ok(book)
}

async fn statement_fixture(store: Store) -> anyhow::Result<StatementFixture> {
    let keys = tempfile::tempdir()?;
    let kms = KmsHandle::new(Arc::new(LocalKeyring::open(keys.path().join("keyring.json"))?), 2);
    let book = statement_price_book()?;
    let vault =
        Vault::new(store, kms, ModelFamilyRegistry::seeded(), VaultPolicy::default()).with_price_book(book.clone());
    let org = vault.create_org(&Actor::System, "acme", Tier::KatmanA).await?;
    let mut teams = Vec::new();
    let mut tokens = Vec::new();
    for name in ["agents", "research"] {
        teams.push(vault.create_team(&Actor::System, org.id, name).await?.id);
        let token = NewWorkloadToken { team: name.into(), workflows: Vec::new(), ..Default::default() };
        tokens.push(vault.issue_workload_token(&Actor::System, org.id, token).await?.token.id);
    }
    let new = |name: &str, provider: ProviderId, key: &str| -> anyhow::Result<NewCredential> {
        Ok(NewCredential {
            name: name.into(),
            provider,
            secret: ProviderSecret::new(key.into())?,
            scope: ScopeInput::default(),
            base_url: None,
            expires_at: None,
            priority: None,
            weight: None,
            rpm: None,
            tpm: None,
            verify: false,
        })
    };
    let openai =
        vault.create_credential(&Actor::System, org.id, new("openai", ProviderId::Openai, OPENAI_KEY)?).await?;
    let anthropic = vault
        .create_credential(&Actor::System, org.id, new("anthropic", ProviderId::Anthropic, ANTHROPIC_KEY)?)
        .await?;
    let platform = vault
        .create_credential(&Actor::System, Owner::Platform, new("pool-anthropic", ProviderId::Anthropic, PLATFORM_KEY)?)
        .await?;
    Ok(StatementFixture {
        vault,
        org: org.id,
        teams: [teams[0], teams[1]],
        tokens: [tokens[0], tokens[1]],
        openai: (openai.id, openai.fingerprint),
        anthropic: (anthropic.id, anthropic.fingerprint),
        platform: (platform.id, platform.fingerprint),
        card_a: book.card_for(Tier::KatmanA, None).code(),
        card_b: book.card_for(Tier::KatmanB, None).code(),
        platform_price: book.provider_price(Some(PLATFORM_FAMILY)).map(|p| p.code()),
        tier_change_us: Timestamp::parse_rfc3339(TIER_CHANGE)?.as_micros(),
        _keys: keys,
    })
}

/// What one call adds to a statement, and when it counts (completion time for calls,
/// resolution time for denials).
struct CallFacts {
    kind: CallKind,
    counts_at_us: i64,
    input_tokens: u64,
    output_tokens: u64,
}

/// Append call `n` at `at_us` to `entries`: its resolution row and, unless denied, its
/// completion — metered as the data plane meters it, or with `metering: None`.
fn push_call(fx: &StatementFixture, n: u64, at_us: i64, metered: bool, entries: &mut Vec<AuditEntry>) -> CallFacts {
    let d = dice(n);
    let (model, family, provider) = model_of(d);
    let kind = kind_of(d);
    let who = ((d >> 8) % 2) as usize;
    let tier = if at_us < fx.tier_change_us { Tier::KatmanA } else { Tier::KatmanB };
    let owner = if provider == ProviderId::Anthropic && tier == Tier::KatmanA {
        CredentialOwner::Platform
    } else {
        CredentialOwner::Org
    };
    let (credential, fingerprint) = match (provider, owner) {
        (ProviderId::Openai, _) => &fx.openai,
        (_, CredentialOwner::Org) => &fx.anthropic,
        (_, CredentialOwner::Platform) => &fx.platform,
    };
    let at = Timestamp::from_micros(at_us).expect("timestamp");
    let denied = kind == CallKind::Denied;
    let row = ResolutionAudit {
        seq: 0,
        at,
        call_id: format!("stmt-{n:09}"),
        org_id: Some(fx.org),
        team_id: Some(fx.teams[who]),
        workflow_id: None,
        token_id: Some(fx.tokens[who]),
        credential_id: (!denied).then_some(*credential),
        credential_version: (!denied).then_some(1),
        fingerprint: (!denied).then(|| fingerprint.clone()),
        provider: Some(provider),
        model: Some(model.into()),
        model_family: Some(family.into()),
        capability: Some(Capability::Chat),
        mode: Some(Mode::Sync),
        outcome: if denied { Outcome::Denied } else { Outcome::Allowed },
        reason: denied.then(|| "scope_denied".into()),
        detail: denied.then(|| format!("no credential of org {} admits model {model} for this team", fx.org)),
        tier: Some(tier),
        credential_owner: (!denied).then_some(owner),
        attempt: None,
    };
    entries.push(AuditEntry::Resolution(row));
    if denied {
        return CallFacts { kind, counts_at_us: at_us, input_tokens: 0, output_tokens: 0 };
    }
    // 0.3 s to 2 s upstream latency; a few hundred to a few thousand tokens.
    let latency_us = 300_000 + ((d >> 24) % 1_700_000) as i64;
    let answered = kind == CallKind::Answered;
    let (input, output) = (40 + (d >> 32) % 4_000, 5 + (d >> 44) % 900);
    let done_us = at_us + latency_us;
    let card = if tier == Tier::KatmanA { &fx.card_a } else { &fx.card_b };
    let completion = CallCompletion {
        call_id: format!("stmt-{n:09}"),
        org_id: fx.org,
        credential_id: *credential,
        at: Timestamp::from_micros(done_us).expect("timestamp"),
        upstream_status: answered.then_some(200),
        latency_us,
        input_tokens: answered.then_some(input),
        output_tokens: answered.then_some(output),
        status: if answered { "completed".into() } else { "upstream_unreachable".into() },
        metering: metered.then(|| Metering {
            team_id: fx.teams[who],
            tier,
            credential_owner: owner,
            provider,
            model_family: Some(family.into()),
            rate_card: card.clone(),
            provider_price: match owner {
                CredentialOwner::Platform => fx.platform_price.clone(),
                CredentialOwner::Org => None,
            },
        }),
    };
    entries.push(AuditEntry::Completion(completion));
    CallFacts {
        kind,
        counts_at_us: done_us,
        input_tokens: if answered { input } else { 0 },
        output_tokens: if answered { output } else { 0 },
    }
}

/// What a statement for `[from_us, to_us)` must show, counted while filling.
#[derive(Debug, Clone, Copy)]
struct Expected {
    from_us: i64,
    to_us: i64,
    calls: u64,
    unanswered: u64,
    denied: u64,
    input_tokens: u64,
    output_tokens: u64,
}

impl Expected {
    fn new(from: Timestamp, to: Timestamp) -> Self {
        Expected {
            from_us: from.as_micros(),
            to_us: to.as_micros(),
            calls: 0,
            unanswered: 0,
            denied: 0,
            input_tokens: 0,
            output_tokens: 0,
        }
    }

    fn count(&mut self, facts: &CallFacts) {
        if facts.counts_at_us < self.from_us || facts.counts_at_us >= self.to_us {
            return;
        }
        match facts.kind {
            CallKind::Answered => {
                self.calls += 1;
                self.input_tokens += facts.input_tokens;
                self.output_tokens += facts.output_tokens;
            }
            CallKind::Unanswered => self.unanswered += 1,
            CallKind::Denied => self.denied += 1,
        }
    }
}

async fn timed_append(store: &Store, segment: &mut Segment, entries: &[AuditEntry]) -> anyhow::Result<Duration> {
    let started = Instant::now();
    store.append_audit(segment, entries).await?;
    Ok(started.elapsed())
}

/// Rows of `resolution_audit`, `call_completions` and `usage_rollup`.
async fn table_counts(db: &TestStore) -> anyhow::Result<(i64, i64, i64)> {
    let rows = db.query_i64("SELECT COUNT(*) FROM resolution_audit").await?;
    let completions = db.query_i64("SELECT COUNT(*) FROM call_completions").await?;
    let rollup = db.query_i64("SELECT COUNT(*) FROM usage_rollup").await?;
    Ok((rows, completions, rollup))
}

fn min_median(times: &[Duration]) -> (f64, f64) {
    let mut sorted = times.to_vec();
    sorted.sort();
    (ms(sorted[0]), ms(sorted[sorted.len() / 2]))
}

async fn statements(args: &Args, backend: Backend) -> anyhow::Result<()> {
    let (month_from, month_to) = (Timestamp::parse_rfc3339(MONTH_FROM)?, Timestamp::parse_rfc3339(MONTH_TO)?);
    let (ragged_from, ragged_to) = (Timestamp::parse_rfc3339(RAGGED_FROM)?, Timestamp::parse_rfc3339(RAGGED_TO)?);
    anyhow::ensure!(args.calls >= 1, "--calls must be at least 1");
    let step_us = (month_to.as_micros() - month_from.as_micros()) / i64::try_from(args.calls)?;
    anyhow::ensure!(step_us >= 1, "--calls is more than one call per microsecond of the month");

    // Two fresh stores filled with the same calls, batch by batch in turn (so that drift
    // on a shared machine hits both alike): one metered, one with `metering: None` on
    // every completion (the rollup then only counts the denials).
    let metered_db = fresh(backend).await?;
    let plain_db = fresh(backend).await?;
    let metered = statement_fixture(metered_db.store().clone()).await?;
    let plain = statement_fixture(plain_db.store().clone()).await?;
    let (mut metered_segment, mut plain_segment) = (Segment::new(), Segment::new());
    let (mut metered_time, mut plain_time) = (Duration::ZERO, Duration::ZERO);
    let mut month = Expected::new(month_from, month_to);
    let mut ragged = Expected::new(ragged_from, ragged_to);
    let per_batch = (args.fill_batch / 2).max(1) as u64;
    let (mut metered_entries, mut plain_entries) =
        (Vec::with_capacity(args.fill_batch + 1), Vec::with_capacity(args.fill_batch + 1));
    let started = Instant::now();
    let (mut i, mut batch, mut next_report) = (0u64, 0u64, 100_000u64);
    while i < args.calls {
        metered_entries.clear();
        plain_entries.clear();
        let end = (i + per_batch).min(args.calls);
        for n in i..end {
            let at_us = month_from.as_micros() + i64::try_from(n)? * step_us;
            let facts = push_call(&metered, n, at_us, true, &mut metered_entries);
            push_call(&plain, n, at_us, false, &mut plain_entries);
            month.count(&facts);
            ragged.count(&facts);
        }
        if batch % 2 == 0 {
            metered_time += timed_append(metered_db.store(), &mut metered_segment, &metered_entries).await?;
            plain_time += timed_append(plain_db.store(), &mut plain_segment, &plain_entries).await?;
        } else {
            plain_time += timed_append(plain_db.store(), &mut plain_segment, &plain_entries).await?;
            metered_time += timed_append(metered_db.store(), &mut metered_segment, &metered_entries).await?;
        }
        batch += 1;
        i = end;
        if i >= next_report || i == args.calls {
            eprintln!(
                "  filled {i} calls into both stores ({:.0} s; appends: metered {:.1} s, unmetered {:.1} s)",
                started.elapsed().as_secs_f64(),
                metered_time.as_secs_f64(),
                plain_time.as_secs_f64()
            );
            next_report += 100_000;
        }
    }
    let (rows, completions, rollup_rows) = table_counts(&metered_db).await?;
    let (_, _, plain_rollup_rows) = table_counts(&plain_db).await?;
    drop(plain);
    plain_db.store().close().await;
    drop(plain_db);

    let denied = month.denied;
    println!(
        "-- statements: one org, {} calls evenly over November 2026 ({} resolution rows, {} completions; {} denied, \
         {} unanswered); 2 teams; gpt-4o-mini 50 %, gpt-4o 30 % (OpenAI, own credential), claude-sonnet 20 % \
         (Anthropic: platform pool while katman-a, own credential after the move to katman-b on the 16th)",
        args.calls, rows, completions, denied, month.unanswered
    );
    let (metered_rate, plain_rate) = (rate(args.calls, metered_time), rate(args.calls, plain_time));
    println!(
        "fill, transactions of {} entries, the two stores in turn batch by batch (time inside append_audit):",
        args.fill_batch
    );
    println!(
        "  metered (rollup kept):             {:>7.1} s  {metered_rate:>8.0} calls/s  ({rollup_rows} usage_rollup rows)",
        metered_time.as_secs_f64()
    );
    println!(
        "  unmetered (metering: None):        {:>7.1} s  {plain_rate:>8.0} calls/s  ({plain_rollup_rows} usage_rollup rows: \
         the denials)",
        plain_time.as_secs_f64()
    );
    println!(
        "  metered / unmetered append time:   {:.3}x ({:+.1} %)",
        metered_time.as_secs_f64() / plain_time.as_secs_f64().max(1e-9),
        (metered_time.as_secs_f64() / plain_time.as_secs_f64().max(1e-9) - 1.0) * 100.0
    );

    if args.analyze {
        let started = Instant::now();
        metered_db.execute("ANALYZE").await?;
        println!("experiment: ANALYZE in {:.1} s", started.elapsed().as_secs_f64());
    }

    // Each statement `repeats` times, the periods and sources in turn (the source order
    // alternating between rounds); every answer must be the same bytes.
    let vault = &metered.vault;
    let org = metered.org;
    let periods = [("whole month", month_from, month_to, month), ("ragged edges", ragged_from, ragged_to, ragged)];
    let sources = [UsageSource::Rollup, UsageSource::Audit];
    let mut times = [[Vec::new(), Vec::new()], [Vec::new(), Vec::new()]];
    let mut answers: [Option<(Vec<u8>, byok_domain::Statement)>; 2] = [None, None];
    for round in 0..args.repeats {
        for (p, (label, from, to, expected)) in periods.iter().enumerate() {
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for s in order {
                let started = Instant::now();
                let statement = vault.statement(org, Some(*from), Some(*to), sources[s]).await?;
                times[p][s].push(started.elapsed());
                let bytes = serde_json::to_vec(&statement)?;
                match &answers[p] {
                    Some((first, _)) => assert!(
                        *first == bytes,
                        "{label}: the statement from {:?} differs from the first one:\n{}\nvs\n{}",
                        sources[s],
                        String::from_utf8_lossy(first),
                        String::from_utf8_lossy(&bytes)
                    ),
                    None => {
                        assert_eq!(statement.calls, expected.calls, "{label}: calls");
                        assert_eq!(statement.denied, expected.denied, "{label}: denied");
                        assert_eq!(statement.unanswered, expected.unanswered, "{label}: unanswered");
                        assert_eq!(statement.input_tokens, expected.input_tokens, "{label}: input tokens");
                        assert_eq!(statement.output_tokens, expected.output_tokens, "{label}: output tokens");
                        answers[p] = Some((bytes, statement));
                    }
                }
            }
        }
    }
    println!(
        "Vault::statement, {} times each (periods and sources in turn), ms:     first      min   median",
        args.repeats
    );
    for (p, (label, from, to, _)) in periods.iter().enumerate() {
        for (s, name) in ["rollup (whole hours) + raw edges", "raw audit rows (baseline)"].iter().enumerate() {
            let (min, median) = min_median(&times[p][s]);
            println!("  {label:<12} {:<34} {:>8.1} {min:>8.1} {median:>8.1}", name, ms(times[p][s][0]),);
        }
        let (_, rollup) = min_median(&times[p][0]);
        let (_, audit) = min_median(&times[p][1]);
        let (_, statement) = answers[p].as_ref().expect("measured");
        println!(
            "  {label:<12} [{} .. {}): rollup {:.0}x faster (medians); {} calls (= answered calls inserted), {} denied, \
             {} unanswered, {} lines, total {} {}",
            from.to_rfc3339(),
            to.to_rfc3339(),
            audit / rollup.max(1e-9),
            statement.calls,
            statement.denied,
            statement.unanswered,
            statement.lines.len(),
            statement.total,
            statement.currency
        );
    }
    println!("both sources gave byte-identical statements (serde_json), every time");
    drop(metered);
    metered_db.store().close().await;
    drop(metered_db);
    Ok(())
}
