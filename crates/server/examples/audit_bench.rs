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
    Actor, CallCompletion, Capability, CredentialId, Mode, ModelFamilyRegistry, OrgId, Outcome, ProviderId,
    ResolutionAudit, ScopeInput, Tier, Timestamp,
};
use byok_mock_provider::{MockConfig, MockProvider};
use byok_proxy::Sidecar;
use byok_proxy::UpstreamBase;
use byok_store::testing::{TestStore, POSTGRES_URL_VAR};
use byok_store::{AuditEntry, AuditFilter, Backend, Segment, Store};
use byok_vault::{KmsHandle, NewCredential, NewWorkloadToken, Vault, VaultPolicy};
use clap::Parser;
use tokio::sync::watch;
use tokio::task::JoinHandle;

const BENCH_POSTGRES_VAR: &str = "BYOK_BENCH_POSTGRES_URL";
const OPENAI_KEY: &str = "sk-bench-audit-openai-0123456789abcdef";

#[derive(Debug, Clone, Parser)]
#[command(about = "byok audit benchmark: append rate under load, and replay of 10^6 calls")]
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
    /// Calls (resolutions, each with a completion) of the replayed credential.
    #[arg(long, default_value_t = 1_000_000)]
    calls: u64,
    /// Entries per `append_audit` transaction while filling the replay store.
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
    /// Before replaying, run `ANALYZE` (planner statistics; PostgreSQL's autovacuum does
    /// this on its own sooner or later, SQLite never unless asked) — an experiment.
    #[arg(long)]
    analyze: bool,
    /// Which parts: `append`, `replay`, or both (default).
    #[arg(long, value_delimiter = ',', default_value = "append,replay")]
    parts: Vec<String>,
    /// Backends: `sqlite`, `postgres` (needs BYOK_BENCH_POSTGRES_URL); default both
    /// when the variable is set, else SQLite.
    #[arg(long, value_delimiter = ',')]
    backends: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
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
        proxy: std::net::SocketAddr,
        stop: watch::Sender<bool>,
        proxy_task: JoinHandle<std::io::Result<()>>,
        audit_task: JoinHandle<()>,
    },
}

impl Target {
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
            Target::Wired { vault, stop, proxy_task, audit_task, .. } => {
                let _ = stop.send(true);
                proxy_task.await??;
                audit_task.await?;
                vault.store().close().await;
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
    let upstream = UpstreamBase::parse(&mock.base_url()).map_err(anyhow::Error::msg)?;
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
            let policy = VaultPolicy { allow_plain_http_base_url: true, retention: settings.retention };
            let vault = Vault::new(store.clone(), kms, settings.model_families(), policy);
            let (audit, audit_task) = AuditWriter::spawn(store, AuditConfig { max_batch, ..AuditConfig::default() });
            let sidecar = Sidecar::new(vault.clone(), audit, settings.proxy.clone()).map_err(anyhow::Error::msg)?;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let proxy = listener.local_addr()?;
            let (stop, mut stopped) = watch::channel(false);
            let proxy_task = tokio::spawn(byok_proxy::serve(listener, sidecar, async move {
                let _ = stopped.wait_for(|s| *s).await;
            }));
            Target::Wired { vault, proxy, stop, proxy_task, audit_task }
        }
    };
    let vault = target.vault().clone();
    let org = vault.create_org(&Actor::System, "bench", Tier::KatmanB).await?;
    vault.create_team(&Actor::System, "bench", "agents").await?;
    let new = NewCredential {
        name: "openai".into(),
        provider: ProviderId::Openai,
        secret: ProviderSecret::new(OPENAI_KEY.into())?,
        scope: ScopeInput::default(),
        base_url: None,
        expires_at: None,
        priority: None,
    };
    vault.create_credential(&Actor::System, "bench", new).await?;
    let token = vault
        .issue_workload_token(
            &Actor::System,
            "bench",
            NewWorkloadToken { team: "agents".into(), workflows: Vec::new(), expires_at: None },
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
    let store = vault.store().clone();
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
    };
    let credential = vault.create_credential(&Actor::System, "replay", new).await?;

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
