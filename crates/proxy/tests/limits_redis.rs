//! The rate limiter against a real Redis at 127.0.0.1:6379 (fleet mode), and its fallback
//! when Redis is unreachable or silent. Without Redis the fleet tests print a skip line,
//! unless `BYOK_REQUIRE_REDIS=1` (then they fail).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use byok_proxy::limits::{Backend, Exceeded, Limit, LimitKey, Limiter, LimiterConfig, Metric};
use redis::aio::MultiplexedConnection;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Barrier;

/// The test Redis (the forwarder below connects to it directly).
const REDIS_ADDR: &str = "127.0.0.1:6379";
const REDIS_URL: &str = "redis://127.0.0.1:6379/";

fn init_logs() {
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("info").try_init();
}

/// A connection to the test Redis, or `None` (after a skip line) when it is not running
/// and not required.
async fn redis_or_skip(test: &str) -> Option<MultiplexedConnection> {
    init_logs();
    let attempt = async {
        let client = redis::Client::open(REDIS_URL)?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await?;
        Ok::<_, redis::RedisError>(conn)
    };
    match tokio::time::timeout(Duration::from_secs(2), attempt).await {
        Ok(Ok(conn)) => Some(conn),
        outcome => {
            let why = match outcome {
                Ok(Err(e)) => e.to_string(),
                _ => "no answer in 2 s".to_owned(),
            };
            if std::env::var("BYOK_REQUIRE_REDIS").as_deref() == Ok("1") {
                panic!("BYOK_REQUIRE_REDIS=1 but Redis at {REDIS_URL} is unreachable: {why}");
            }
            println!(
                "SKIP {test}: Redis at {REDIS_URL} is unreachable ({why}); set BYOK_REQUIRE_REDIS=1 to require it"
            );
            None
        }
    }
}

fn unique_prefix(test: &str) -> String {
    format!("byok:test:{test}:{}:", ulid::Ulid::new())
}

async fn keys_with_prefix(conn: &mut MultiplexedConnection, prefix: &str) -> Vec<String> {
    redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(conn).await.unwrap()
}

async fn cleanup(conn: &mut MultiplexedConnection, prefix: &str) {
    let keys = keys_with_prefix(conn, prefix).await;
    if !keys.is_empty() {
        let _: i64 = redis::cmd("DEL").arg(&keys).query_async(conn).await.unwrap();
    }
    assert!(keys_with_prefix(conn, prefix).await.is_empty());
}

/// Sum of a window hash's values.
async fn hash_sum(conn: &mut MultiplexedConnection, key: &str) -> u64 {
    let values: Vec<u64> = redis::cmd("HVALS").arg(key).query_async(conn).await.unwrap();
    values.iter().sum()
}

async fn ttl(conn: &mut MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("TTL").arg(key).query_async(conn).await.unwrap()
}

fn config(url: &str, prefix: &str, op_timeout: Duration) -> LimiterConfig {
    LimiterConfig { redis_url: Some(url.to_owned()), key_prefix: prefix.to_owned(), op_timeout }
}

fn node(url: &str, prefix: &str, live_nodes: u64) -> Arc<Limiter> {
    Limiter::new(config(url, prefix, Duration::from_millis(200)), Arc::new(AtomicU64::new(live_nodes))).unwrap()
}

fn rpm(n: u64) -> Limit {
    Limit { rpm: Some(n), tpm: None }
}

fn tpm(n: u64) -> Limit {
    Limit { rpm: None, tpm: Some(n) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_share_one_rpm_limit_exactly() {
    let Some(mut conn) = redis_or_skip("two_nodes_share_one_rpm_limit_exactly").await else { return };
    let prefix = unique_prefix("rpm");
    let nodes = [node(REDIS_URL, &prefix, 2), node(REDIS_URL, &prefix, 2)];
    const LIMIT: u64 = 50;
    const CALLS: usize = 400;
    let key = LimitKey::from("org:shared");
    let barrier = Arc::new(Barrier::new(CALLS));
    let mut tasks = Vec::new();
    for i in 0..CALLS {
        let limiter = Arc::clone(&nodes[i % 2]);
        let subjects = [(key.clone(), rpm(LIMIT)), (LimitKey::from(format!("tok:{}", i % 7)), Limit::default())];
        let barrier = Arc::clone(&barrier);
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let started = Instant::now();
            let outcome = limiter.admit(&subjects).await;
            (i % 2, outcome, started.elapsed())
        }));
    }
    let mut admitted = [0u64; 2];
    let mut slowest = [Duration::ZERO; 2];
    for task in tasks {
        let (node, outcome, took) = task.await.unwrap();
        slowest[node] = slowest[node].max(took);
        match outcome {
            Ok(()) => admitted[node] += 1,
            Err(Exceeded { key: refused, metric, limit, retry_after_secs }) => {
                assert_eq!((refused, metric, limit), (key.clone(), Metric::Rpm, LIMIT));
                assert!((1..=60).contains(&retry_after_secs), "retry {retry_after_secs}");
            }
        }
    }
    let total = admitted[0] + admitted[1];
    println!(
        "rpm: limit {LIMIT}, {CALLS} concurrent calls over 2 nodes: admitted {total} ({} + {}), overshoot {}, slowest call per node {slowest:?}",
        admitted[0],
        admitted[1],
        total as i64 - LIMIT as i64
    );
    assert_eq!(total, LIMIT, "rpm must not overshoot");
    for n in &nodes {
        assert_eq!(n.backend(), Backend::Redis);
    }
    let rpm_key = format!("{prefix}org:shared:rpm");
    assert_eq!(hash_sum(&mut conn, &rpm_key).await, LIMIT);
    let t = ttl(&mut conn, &rpm_key).await;
    assert!((1..=61).contains(&t), "ttl {t}");
    // Unlimited subjects leave nothing in Redis.
    assert_eq!(keys_with_prefix(&mut conn, &prefix).await, vec![rpm_key]);
    cleanup(&mut conn, &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusal_counts_nothing_in_redis() {
    let Some(mut conn) = redis_or_skip("refusal_counts_nothing_in_redis").await else { return };
    let prefix = unique_prefix("aon");
    let limiter = node(REDIS_URL, &prefix, 1);
    let org = (LimitKey::from("org:o"), rpm(100));
    let team = (LimitKey::from("team:t"), Limit { rpm: Some(2), tpm: Some(1_000_000) });
    limiter.admit(&[org.clone(), team.clone()]).await.unwrap();
    limiter.admit(&[org.clone(), team.clone()]).await.unwrap();
    for _ in 0..10 {
        let refused = limiter.admit(&[org.clone(), team.clone()]).await.unwrap_err();
        assert_eq!((refused.key, refused.metric, refused.limit), (team.0.clone(), Metric::Rpm, 2));
        assert!((1..=60).contains(&refused.retry_after_secs));
    }
    assert_eq!(hash_sum(&mut conn, &format!("{prefix}org:o:rpm")).await, 2);
    assert_eq!(hash_sum(&mut conn, &format!("{prefix}team:t:rpm")).await, 2);
    cleanup(&mut conn, &prefix).await;
}

/// Polls `admit` until it is refused (token writes are fire-and-forget).
async fn refused_within(limiter: &Limiter, subjects: &[(LimitKey, Limit)], within: Duration) -> Option<Exceeded> {
    let deadline = Instant::now() + within;
    loop {
        if let Err(refused) = limiter.admit(subjects).await {
            return Some(refused);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_one_tpm_limit() {
    let Some(mut conn) = redis_or_skip("two_nodes_share_one_tpm_limit").await else { return };
    let prefix = unique_prefix("tpm");
    let (a, b) = (node(REDIS_URL, &prefix, 2), node(REDIS_URL, &prefix, 2));
    let key = LimitKey::from("org:t");
    let subjects = [(key.clone(), tpm(1_000))];
    a.admit(&subjects).await.unwrap();
    a.add_tokens(std::slice::from_ref(&key), 600);
    b.admit(&subjects).await.unwrap();
    b.add_tokens(std::slice::from_ref(&key), 300);
    // 900 counted fleet-wide: still room on either node.
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.admit(&subjects).await.unwrap();
    b.add_tokens(std::slice::from_ref(&key), 200);
    // 1,100: node A, which saw only 600 of them itself, refuses.
    let refused = refused_within(&a, &subjects, Duration::from_secs(2)).await.expect("node A refuses past tpm");
    assert_eq!((refused.key, refused.metric, refused.limit), (key.clone(), Metric::Tpm, 1_000));
    assert!((1..=60).contains(&refused.retry_after_secs), "{}", refused.retry_after_secs);
    assert!(b.admit(&subjects).await.is_err());
    let tpm_key = format!("{prefix}org:t:tpm");
    assert_eq!(hash_sum(&mut conn, &tpm_key).await, 1_100);
    let t = ttl(&mut conn, &tpm_key).await;
    assert!((1..=61).contains(&t), "ttl {t}");
    // A tpm-only subject counts no call.
    assert!(!keys_with_prefix(&mut conn, &prefix).await.iter().any(|k| k.ends_with(":rpm")));
    cleanup(&mut conn, &prefix).await;
}

/// How far tpm overshoots when calls are admitted while others are in flight: 16 workers
/// (8 per node) each loop admit → 50 ms "call" → add 100 tokens, until refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tpm_overshoot_with_concurrent_calls() {
    let Some(mut conn) = redis_or_skip("tpm_overshoot_with_concurrent_calls").await else { return };
    let prefix = unique_prefix("tpm-over");
    let nodes = [node(REDIS_URL, &prefix, 2), node(REDIS_URL, &prefix, 2)];
    const LIMIT: u64 = 1_000;
    const WORKERS: usize = 16;
    const TOKENS: u64 = 100;
    let key = LimitKey::from("org:over");
    let calls = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let limiter = Arc::clone(&nodes[w % 2]);
        let key = key.clone();
        let calls = Arc::clone(&calls);
        tasks.push(tokio::spawn(async move {
            let subjects = [(key.clone(), tpm(LIMIT))];
            while limiter.admit(&subjects).await.is_ok() {
                calls.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
                limiter.add_tokens(std::slice::from_ref(&key), TOKENS);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // let the last token writes land
    let counted = hash_sum(&mut conn, &format!("{prefix}org:over:tpm")).await;
    let calls = calls.load(Ordering::Relaxed);
    assert_eq!(counted, calls * TOKENS);
    println!(
        "tpm: limit {LIMIT}, {WORKERS} concurrent calls of {TOKENS} tokens (50 ms each) over 2 nodes: \
         {calls} admitted, {counted} tokens counted, overshoot {} ({:.1}x the limit; bound: tokens of calls in flight + writes pending = {})",
        counted.saturating_sub(LIMIT),
        counted as f64 / LIMIT as f64,
        2 * WORKERS as u64 * TOKENS
    );
    assert!(counted >= LIMIT);
    // Below the limit at each admission; not yet counted then: at most one call per worker
    // in flight and one fire-and-forget token write per worker on its way to Redis.
    assert!(counted < LIMIT + 2 * WORKERS as u64 * TOKENS, "overshoot beyond the in-flight bound: {counted}");
    cleanup(&mut conn, &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_redis_falls_back_to_the_local_share() {
    init_logs();
    let op_timeout = Duration::from_millis(200);
    let live_nodes = Arc::new(AtomicU64::new(2));
    let limiter =
        Limiter::new(config("redis://127.0.0.1:1/", &unique_prefix("down"), op_timeout), Arc::clone(&live_nodes))
            .unwrap();
    let subjects = [(LimitKey::from("org:d"), Limit { rpm: Some(10), tpm: Some(1_000) })];
    let mut slowest = Duration::ZERO;
    let mut admitted = 0;
    let mut refusal = None;
    for _ in 0..20 {
        let started = Instant::now();
        let outcome = limiter.admit(&subjects).await;
        slowest = slowest.max(started.elapsed());
        match outcome {
            Ok(()) => admitted += 1,
            Err(e) => refusal = Some(e),
        }
    }
    println!("unreachable Redis: admitted {admitted} of limit 10 with 2 live nodes, slowest call {slowest:?}");
    assert_eq!(admitted, 5, "share = max(1, 10 / 2)");
    let refusal = refusal.unwrap();
    assert_eq!((refusal.metric, refusal.limit), (Metric::Rpm, 5));
    assert!((1..=60).contains(&refusal.retry_after_secs));
    assert!(slowest <= op_timeout + Duration::from_millis(50), "a call waited {slowest:?}");
    assert_eq!(limiter.backend(), Backend::RedisUnreachable { live_nodes: 2 });
    // tpm share too: 1,000 / 2.
    let tpm_only = [(LimitKey::from("org:e"), tpm(1_000))];
    limiter.add_tokens(&[LimitKey::from("org:e")], 499);
    limiter.admit(&tpm_only).await.unwrap();
    limiter.add_tokens(&[LimitKey::from("org:e")], 1);
    let refused = limiter.admit(&tpm_only).await.unwrap_err();
    assert_eq!((refused.metric, refused.limit), (Metric::Tpm, 500));
    // The caller's live-node count is read on every call; 0 counts as 1.
    live_nodes.store(0, Ordering::Relaxed);
    assert_eq!(limiter.backend(), Backend::RedisUnreachable { live_nodes: 1 });
    for _ in 0..5 {
        limiter.admit(&subjects).await.unwrap();
    }
    assert_eq!(limiter.admit(&subjects).await.unwrap_err().limit, 10);
}

/// A server that accepts connections and never answers: every Redis operation would hang.
struct Silent {
    addr: std::net::SocketAddr,
    connections: Arc<AtomicUsize>,
    commands: Arc<AtomicUsize>,
}

async fn silent_server() -> Silent {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let commands = Arc::new(AtomicUsize::new(0));
    let (c, m) = (Arc::clone(&connections), Arc::clone(&commands));
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            let m = Arc::clone(&m);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = socket.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    // Each RESP command starts with `*<argc>\r\n`; count the script calls.
                    let text = String::from_utf8_lossy(&buf[..n]).to_ascii_uppercase();
                    m.fetch_add(text.matches("EVALSHA").count(), Ordering::SeqCst);
                }
            });
        }
    });
    Silent { addr, connections, commands }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_redis_costs_a_call_at_most_op_timeout_and_is_probed_once_a_second() {
    init_logs();
    let silent = silent_server().await;
    let op_timeout = Duration::from_millis(100);
    let url = format!("redis://{}/", silent.addr);
    let limiter =
        Limiter::new(config(&url, &unique_prefix("silent"), op_timeout), Arc::new(AtomicU64::new(4))).unwrap();
    let subjects = [(LimitKey::from("org:s"), rpm(1_000_000))];
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut slow_calls = 0;
    let mut calls = 0u64;
    while started.elapsed() < Duration::from_millis(3_500) {
        let t = Instant::now();
        limiter.admit(&subjects).await.unwrap();
        limiter.add_tokens(&[LimitKey::from("org:s")], 10);
        let took = t.elapsed();
        slowest = slowest.max(took);
        if took >= op_timeout / 2 {
            slow_calls += 1;
        }
        calls += 1;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let (connections, commands) = (silent.connections.load(Ordering::SeqCst), silent.commands.load(Ordering::SeqCst));
    println!(
        "silent Redis (op_timeout {op_timeout:?}): {calls} calls in 3.5 s, slowest {slowest:?}, {slow_calls} of at least op_timeout / 2; \
         the server saw {connections} connections and {commands} EVALSHA"
    );
    assert!(slowest <= op_timeout + Duration::from_millis(50), "a call waited {slowest:?}");
    assert!(slow_calls <= 1, "only the call that found Redis silent should wait");
    assert_eq!(limiter.backend(), Backend::RedisUnreachable { live_nodes: 4 });
    // Warm-up probe + first call + at most one probe a second over 3.5 s (each a connection
    // attempt or a script call, with at most one retry).
    assert!(connections + commands <= 2 + 2 * 4, "{connections} connections, {commands} script calls");
}

/// A TCP forwarder to the real Redis that can be cut (dropping every connection and
/// refusing new ones) and restored.
struct Switch {
    addr: std::net::SocketAddr,
    up: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Switch {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let links = Arc::new(Mutex::new(Vec::new()));
        let (u, l) = (Arc::clone(&up), Arc::clone(&links));
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !u.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection closed
                }
                let link = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(REDIS_ADDR).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                l.lock().unwrap().push(link);
            }
        });
        Self { addr, up, links }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goes_back_to_redis_when_it_answers_again() {
    let Some(mut conn) = redis_or_skip("goes_back_to_redis_when_it_answers_again").await else { return };
    let switch = Switch::start().await;
    let prefix = unique_prefix("switch");
    let limiter = node(&format!("redis://{}/", switch.addr), &prefix, 2);
    let subjects = [(LimitKey::from("org:w"), rpm(1_000))];
    limiter.admit(&subjects).await.unwrap();
    assert_eq!(limiter.backend(), Backend::Redis);
    let rpm_key = format!("{prefix}org:w:rpm");
    assert_eq!(hash_sum(&mut conn, &rpm_key).await, 1);

    switch.cut();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    for _ in 0..10 {
        limiter.admit(&subjects).await.unwrap();
    }
    let took = started.elapsed();
    assert_eq!(limiter.backend(), Backend::RedisUnreachable { live_nodes: 2 });
    assert!(took < Duration::from_millis(250 + 50), "10 calls while cut took {took:?}");
    assert_eq!(hash_sum(&mut conn, &rpm_key).await, 1, "nothing reached Redis while cut");

    switch.restore();
    let deadline = Instant::now() + Duration::from_secs(5);
    while limiter.backend() != Backend::Redis {
        assert!(Instant::now() < deadline, "still {:?} 5 s after Redis came back", limiter.backend());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let recovered_after = deadline - Duration::from_secs(5);
    println!("back on Redis {:?} after it was restored", recovered_after.elapsed());
    limiter.admit(&subjects).await.unwrap();
    assert_eq!(hash_sum(&mut conn, &rpm_key).await, 2);
    cleanup(&mut conn, &prefix).await;
}
