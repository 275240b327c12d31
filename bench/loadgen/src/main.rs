//! `byok-loadgen`: the load generator behind `bench/run.sh`.
//!
//! * `throughput`: a closed loop of N keep-alive HTTP/1.1 connections, each sending the
//!   next request as soon as the previous response body has been read in full. After a
//!   warm-up, every request that *completes* inside the measurement window counts towards
//!   requests/s and the latency percentiles (latency = request start to last body byte).
//! * `ttfb`: streaming requests on a few keep-alive connections; time to first byte is
//!   measured from just before the request is written to the arrival of the first
//!   non-empty body chunk (the first SSE event), and the whole stream is drained.
//! * `free-port`: prints a free TCP port on 127.0.0.1.
//!
//! Every mode prints one JSON object on stdout. Only loopback targets are accepted.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// byok's benchmark load generator.
#[derive(Debug, Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Closed-loop throughput and latency over keep-alive connections.
    Throughput(ThroughputArgs),
    /// Time to first body byte of streamed responses.
    Ttfb(TtfbArgs),
    /// Open many streamed calls at once and hold them open: each on its own connection,
    /// read until its first body byte; when every one has answered, the file `--ready`
    /// is written, then the streams are read to their end (memory with open streams).
    Hold(HoldArgs),
    /// Print a free TCP port on 127.0.0.1.
    FreePort,
}

#[derive(Debug, Args)]
struct HoldArgs {
    #[command(flatten)]
    target: Target,
    /// Streams open at once.
    #[arg(long, short = 'n', default_value_t = 1000)]
    streams: usize,
    /// Written (empty) once every stream has sent its first byte.
    #[arg(long)]
    ready: std::path::PathBuf,
}

#[derive(Debug, Clone, Args)]
struct Target {
    /// Full URL, e.g. http://127.0.0.1:4747/openai/v1/chat/completions (loopback only).
    #[arg(long)]
    url: String,
    /// Extra request header `name: value` (repeatable).
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// Request body (sent with content-type: application/json).
    #[arg(long)]
    body: String,
    /// Worker threads of the load generator's runtime.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

#[derive(Debug, Args)]
struct ThroughputArgs {
    #[command(flatten)]
    target: Target,
    /// Concurrent connections (one request in flight on each).
    #[arg(long, short = 'c', default_value_t = 32)]
    connections: usize,
    /// Warm-up seconds (requests sent, not measured).
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
}

#[derive(Debug, Args)]
struct TtfbArgs {
    #[command(flatten)]
    target: Target,
    /// Measured requests.
    #[arg(long, short = 'n', default_value_t = 200)]
    requests: i64,
    /// Unmeasured requests sent first.
    #[arg(long, default_value_t = 10)]
    warmup_requests: i64,
    /// Requests in flight at once (one keep-alive connection each).
    #[arg(long, short = 'c', default_value_t = 4)]
    concurrency: usize,
}

/// What every request carries, parsed once.
struct Prepared {
    addr: SocketAddr,
    authority: HeaderValue,
    path: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
}

impl Prepared {
    fn new(target: &Target) -> Result<Self, String> {
        let uri: Uri = target.url.parse().map_err(|e| format!("bad --url: {e}"))?;
        if uri.scheme_str() != Some("http") {
            return Err("--url must be http://".into());
        }
        let authority = uri.authority().ok_or("--url has no host")?.clone();
        let host = authority.host().trim_start_matches('[').trim_end_matches(']');
        let ip: std::net::IpAddr = host.parse().map_err(|_| "--url host must be an IP address (127.0.0.1)")?;
        if !ip.is_loopback() {
            return Err("only loopback targets are allowed".into());
        }
        let addr = SocketAddr::new(ip, authority.port_u16().unwrap_or(80));
        let path: Uri =
            uri.path_and_query().map_or("/", |p| p.as_str()).parse().map_err(|e| format!("bad path: {e}"))?;
        let mut headers = Vec::new();
        for raw in &target.headers {
            let (name, value) = raw.split_once(':').ok_or_else(|| format!("header '{raw}' is not 'name: value'"))?;
            let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|e| format!("header name: {e}"))?;
            let value = HeaderValue::from_str(value.trim()).map_err(|e| format!("header value: {e}"))?;
            headers.push((name, value));
        }
        Ok(Self {
            addr,
            authority: HeaderValue::from_str(authority.as_str()).map_err(|e| e.to_string())?,
            path,
            headers,
            body: Bytes::from(target.body.clone()),
        })
    }

    fn request(&self) -> Result<Request<Full<Bytes>>, String> {
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(self.path.clone())
            .header(hyper::header::HOST, self.authority.clone())
            .header(hyper::header::CONTENT_TYPE, "application/json");
        for (name, value) in &self.headers {
            builder = builder.header(name, value);
        }
        builder.body(Full::new(self.body.clone())).map_err(|e| e.to_string())
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let stream = TcpStream::connect(self.addr).await.map_err(|e| format!("connect {}: {e}", self.addr))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }
}

/// Counters one worker collects.
#[derive(Default)]
struct Tally {
    /// Every request that got a complete answer (warm-up included).
    completed: u64,
    /// Requests that failed at the transport level (warm-up included).
    errors: u64,
    /// Non-2xx answers (warm-up included), by status.
    statuses: BTreeMap<u16, u64>,
    /// Measured latencies, microseconds.
    latencies: Vec<u64>,
    /// Measured secondary times (stream: whole-stream time), microseconds.
    totals: Vec<u64>,
    /// First error seen, for diagnostics.
    first_error: Option<String>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.completed += other.completed;
        self.errors += other.errors;
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        self.latencies.extend(other.latencies);
        self.totals.extend(other.totals);
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    fn error(&mut self, what: String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(what);
        }
    }

    fn non_2xx(&self) -> u64 {
        self.statuses.iter().filter(|(s, _)| !(200..300).contains(*s)).map(|(_, n)| n).sum()
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Percentile (nearest rank) of sorted `values`, in milliseconds.
fn pct_ms(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted.len()) - 1;
    sorted[index] as f64 / 1000.0
}

fn statuses_json(statuses: &BTreeMap<u16, u64>) -> String {
    let parts: Vec<String> = statuses.iter().map(|(s, n)| format!("\"{s}\":{n}")).collect();
    format!("{{{}}}", parts.join(","))
}

fn json_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One request on `sender`: returns (status, time to first non-empty body chunk, total time).
async fn one_request(
    prepared: &Prepared,
    sender: &mut SendRequest<Full<Bytes>>,
) -> Result<(u16, Duration, Duration, Bytes), String> {
    let request = prepared.request()?;
    sender.ready().await.map_err(|e| format!("connection not ready: {e}"))?;
    let start = Instant::now();
    let response = sender.send_request(request).await.map_err(|e| format!("request: {e}"))?;
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut first = None;
    let mut sample = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("body: {e}"))?;
        if let Some(data) = frame.data_ref() {
            if !data.is_empty() && first.is_none() {
                first = Some(start.elapsed());
            }
            if !(200..300).contains(&status) && sample.len() < 300 {
                sample.extend_from_slice(&data[..data.len().min(300 - sample.len())]);
            }
        }
    }
    let total = start.elapsed();
    Ok((status, first.unwrap_or(total), total, Bytes::from(sample)))
}

/// Run `request` on a connection, reconnecting after a transport failure.
async fn step(
    prepared: &Prepared,
    conn: &mut Option<SendRequest<Full<Bytes>>>,
    tally: &mut Tally,
) -> Option<(u16, Duration, Duration)> {
    if conn.as_ref().is_none_or(|c| c.is_closed()) {
        match prepared.connect().await {
            Ok(sender) => *conn = Some(sender),
            Err(e) => {
                tally.error(e);
                tokio::time::sleep(Duration::from_millis(10)).await;
                return None;
            }
        }
    }
    let sender = conn.as_mut()?;
    match one_request(prepared, sender).await {
        Ok((status, first, total, sample)) => {
            tally.completed += 1;
            *tally.statuses.entry(status).or_default() += 1;
            if !(200..300).contains(&status) && tally.first_error.is_none() {
                tally.first_error = Some(format!("HTTP {status}: {}", String::from_utf8_lossy(&sample)));
            }
            Some((status, first, total))
        }
        Err(e) => {
            tally.error(e);
            *conn = None;
            None
        }
    }
}

async fn throughput(args: ThroughputArgs) -> Result<String, String> {
    let prepared = Arc::new(Prepared::new(&args.target)?);
    let begin = Instant::now();
    let measure_from = begin + Duration::from_secs_f64(args.warmup.max(0.0));
    let until = measure_from + Duration::from_secs_f64(args.duration.max(0.1));
    let mut tasks = Vec::new();
    for _ in 0..args.connections.max(1) {
        let prepared = Arc::clone(&prepared);
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut conn = None;
            while Instant::now() < until {
                let started = Instant::now();
                if let Some((_, _, total)) = step(&prepared, &mut conn, &mut tally).await {
                    let done = started + total;
                    if started >= measure_from && done <= until {
                        tally.latencies.push(micros(total));
                    }
                }
            }
            tally
        }));
    }
    let mut tally = Tally::default();
    for task in tasks {
        tally.merge(task.await.map_err(|e| format!("worker failed: {e}"))?);
    }
    tally.latencies.sort_unstable();
    let measured = tally.latencies.len();
    let secs = args.duration.max(0.1);
    let ok: u64 = tally.statuses.iter().filter(|(s, _)| (200..300).contains(*s)).map(|(_, n)| n).sum();
    Ok(format!(
        "{{\"mode\":\"throughput\",\"connections\":{},\"warmup_s\":{},\"duration_s\":{},\"requests_total\":{},\"ok_total\":{},\"non_2xx_total\":{},\"errors_total\":{},\"statuses\":{},\"measured\":{},\"rps\":{:.1},\"p50_ms\":{:.3},\"p90_ms\":{:.3},\"p99_ms\":{:.3},\"max_ms\":{:.3},\"first_error\":{}}}",
        args.connections,
        args.warmup,
        secs,
        tally.completed,
        ok,
        tally.non_2xx(),
        tally.errors,
        statuses_json(&tally.statuses),
        measured,
        measured as f64 / secs,
        pct_ms(&tally.latencies, 50.0),
        pct_ms(&tally.latencies, 90.0),
        pct_ms(&tally.latencies, 99.0),
        pct_ms(&tally.latencies, 100.0),
        tally.first_error.as_deref().map_or("null".into(), json_string),
    ))
}

async fn ttfb(args: TtfbArgs) -> Result<String, String> {
    let prepared = Arc::new(Prepared::new(&args.target)?);
    // Tickets: values above `requests` are warm-up, 1..=requests are measured.
    let tickets = Arc::new(AtomicI64::new(args.requests.max(1) + args.warmup_requests.max(0)));
    let measured_limit = args.requests.max(1);
    let shared = Arc::new(Mutex::new(Tally::default()));
    let began = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let prepared = Arc::clone(&prepared);
        let tickets = Arc::clone(&tickets);
        let shared = Arc::clone(&shared);
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut conn = None;
            let mut failures = 0u32;
            loop {
                let ticket = tickets.fetch_sub(1, Ordering::SeqCst);
                if ticket <= 0 {
                    break;
                }
                match step(&prepared, &mut conn, &mut tally).await {
                    Some((_, first, total)) => {
                        failures = 0;
                        if ticket <= measured_limit {
                            tally.latencies.push(micros(first));
                            tally.totals.push(micros(total));
                        }
                    }
                    None => {
                        failures += 1;
                        if failures > 20 {
                            break;
                        }
                    }
                }
            }
            if let Ok(mut all) = shared.lock() {
                all.merge(tally);
            }
        }));
    }
    for task in tasks {
        task.await.map_err(|e| format!("worker failed: {e}"))?;
    }
    let elapsed = began.elapsed().as_secs_f64();
    let mut tally = std::mem::take(&mut *shared.lock().map_err(|_| "poisoned")?);
    tally.latencies.sort_unstable();
    tally.totals.sort_unstable();
    let ok: u64 = tally.statuses.iter().filter(|(s, _)| (200..300).contains(*s)).map(|(_, n)| n).sum();
    Ok(format!(
        "{{\"mode\":\"ttfb\",\"concurrency\":{},\"requests_total\":{},\"ok_total\":{},\"non_2xx_total\":{},\"errors_total\":{},\"statuses\":{},\"measured\":{},\"elapsed_s\":{:.3},\"ttfb_p50_ms\":{:.3},\"ttfb_p90_ms\":{:.3},\"ttfb_p99_ms\":{:.3},\"ttfb_max_ms\":{:.3},\"stream_p50_ms\":{:.3},\"stream_p99_ms\":{:.3},\"first_error\":{}}}",
        args.concurrency,
        tally.completed,
        ok,
        tally.non_2xx(),
        tally.errors,
        statuses_json(&tally.statuses),
        tally.latencies.len(),
        elapsed,
        pct_ms(&tally.latencies, 50.0),
        pct_ms(&tally.latencies, 90.0),
        pct_ms(&tally.latencies, 99.0),
        pct_ms(&tally.latencies, 100.0),
        pct_ms(&tally.totals, 50.0),
        pct_ms(&tally.totals, 99.0),
        tally.first_error.as_deref().map_or("null".into(), json_string),
    ))
}

async fn hold(args: HoldArgs) -> Result<String, String> {
    let prepared = Arc::new(Prepared::new(&args.target)?);
    let began = Instant::now();
    let open = Arc::new(tokio::sync::Barrier::new(args.streams.max(1) + 1));
    let mut tasks = Vec::new();
    for _ in 0..args.streams.max(1) {
        let prepared = Arc::clone(&prepared);
        let open = Arc::clone(&open);
        tasks.push(tokio::spawn(async move {
            // The barrier is passed whatever happens, so that a failed stream cannot hang the run.
            let result = async {
                let mut sender = prepared.connect().await?;
                let request = prepared.request()?;
                sender.ready().await.map_err(|e| format!("connection not ready: {e}"))?;
                let response = sender.send_request(request).await.map_err(|e| format!("request: {e}"))?;
                let status = response.status().as_u16();
                let mut body = response.into_body();
                while let Some(frame) = body.frame().await {
                    let frame = frame.map_err(|e| format!("body: {e}"))?;
                    if frame.data_ref().is_some_and(|d| !d.is_empty()) {
                        break;
                    }
                }
                Ok::<_, String>((status, body))
            }
            .await;
            open.wait().await;
            let (status, mut body) = result?;
            while let Some(frame) = body.frame().await {
                frame.map_err(|e| format!("body: {e}"))?;
            }
            Ok::<u16, String>(status)
        }));
    }
    open.wait().await;
    let all_open_s = began.elapsed().as_secs_f64();
    std::fs::write(&args.ready, b"").map_err(|e| format!("cannot write {}: {e}", args.ready.display()))?;
    let mut tally = Tally::default();
    for task in tasks {
        match task.await.map_err(|e| format!("stream task failed: {e}"))? {
            Ok(status) => {
                tally.completed += 1;
                *tally.statuses.entry(status).or_default() += 1;
            }
            Err(e) => tally.error(e),
        }
    }
    let ok: u64 = tally.statuses.iter().filter(|(s, _)| (200..300).contains(*s)).map(|(_, n)| n).sum();
    Ok(format!(
        "{{\"mode\":\"hold\",\"streams\":{},\"ok_total\":{},\"non_2xx_total\":{},\"errors_total\":{},\"statuses\":{},\"all_open_s\":{:.3},\"elapsed_s\":{:.3},\"first_error\":{}}}",
        args.streams,
        ok,
        tally.non_2xx(),
        tally.errors,
        statuses_json(&tally.statuses),
        all_open_s,
        began.elapsed().as_secs_f64(),
        tally.first_error.as_deref().map_or("null".into(), json_string),
    ))
}

/// CPU seconds (user + system) this process has used so far, from /proc/self/stat
/// (Linux; clock ticks are USER_HZ = 100). `None` elsewhere.
fn own_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after_comm = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

fn runtime(threads: usize) -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::FreePort => std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port().to_string())
            .map_err(|e| format!("cannot bind: {e}")),
        Command::Throughput(args) => runtime(args.target.threads).and_then(|rt| rt.block_on(throughput(args))),
        Command::Ttfb(args) => runtime(args.target.threads).and_then(|rt| rt.block_on(ttfb(args))),
        Command::Hold(args) => runtime(args.target.threads).and_then(|rt| rt.block_on(hold(args))),
    };
    match result {
        Ok(mut line) => {
            if line.ends_with('}') {
                line.pop();
                let cpu = own_cpu_seconds().map_or("null".into(), |s| format!("{s:.2}"));
                line.push_str(&format!(",\"loadgen_cpu_s\":{cpu}}}"));
            }
            let mut stdout = std::io::stdout();
            if writeln!(stdout, "{line}").is_err() {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(message) => {
            let _ = writeln!(std::io::stderr(), "byok-loadgen: {message}");
            ExitCode::FAILURE
        }
    }
}
