//! The audit commands end to end: calls go through the real `byok serve` data plane to
//! the mock provider, then `byok audit …` verifies, checkpoints, replays, exports and
//! queries them; an edit made behind byok's back in the database is caught.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::cell::RefCell;
use std::io::Write;
use std::process::Stdio;

use byok_mock_provider::{MockConfig, MockProvider};
use byok_store::testing::sqlx;
use serde_json::{json, Value};
use support::{clean_command, free_port, Server};

/// One CLI run.
#[derive(Debug, Clone)]
struct Run {
    argv: String,
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(self) -> Self {
        assert_eq!(self.code, 0, "`byok {}` failed:\n{}\n{}", self.argv, self.stdout, self.stderr);
        self
    }

    fn json(&self) -> Value {
        assert_eq!(self.code, 0, "{self:?}");
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("{}: stdout is not JSON ({e}): {}", self.argv, self.stdout))
    }
}

/// Runs the CLI against one server and keeps every output, to search for the key.
struct Cli<'a> {
    server: &'a Server,
    runs: RefCell<Vec<Run>>,
}

impl<'a> Cli<'a> {
    fn run(&self, argv: &str) -> Run {
        self.run_with_stdin(argv, None)
    }

    fn run_with_stdin(&self, argv: &str, stdin: Option<&str>) -> Run {
        // The CLI is a blocking child process; let the runtime's other worker carry on.
        tokio::task::block_in_place(|| {
            let mut command = clean_command();
            command
                .args(["--admin-url", &self.server.admin_url])
                .arg("--data-dir")
                .arg(self.server.data_dir.path())
                .args(argv.split_whitespace())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = command.spawn().unwrap();
            let mut pipe = child.stdin.take().unwrap();
            if let Some(text) = stdin {
                pipe.write_all(text.as_bytes()).unwrap();
            }
            drop(pipe);
            let output = child.wait_with_output().unwrap();
            let run = Run {
                argv: argv.to_owned(),
                code: output.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            };
            self.runs.borrow_mut().push(run.clone());
            run
        })
    }
}

/// A chat completion through the data plane; the status it got.
async fn call(http: &reqwest::Client, server: &Server, token: &str, call_id: &str) -> u16 {
    http.post(format!("{}/openai/v1/chat/completions", server.proxy_url))
        .bearer_auth(token)
        .header("x-byok-call-id", call_id)
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": format!("hello from {call_id}")}]}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The `call` lines of an export, in order.
fn call_lines(export: &str) -> Vec<Value> {
    export
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|line| line["kind"] == "call")
        .collect()
}

/// The call ids of a replayed timeline's calls, in order.
fn replayed_call_ids(timeline: &Value) -> Vec<String> {
    timeline["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "call")
        .map(|e| e["resolution"]["call_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_commands_verify_replay_export_and_catch_tampering() {
    let key = format!("sk-canary-audit-e2e-{}{}", std::process::id(), free_port());
    let mock =
        MockProvider::start(MockConfig { openai_keys: vec![key.clone()], ..MockConfig::default() }).await.unwrap();
    let upstream = mock.base_url();
    let server = Server::start_with(&[("BYOK_UPSTREAM_OPENAI", &upstream)]);
    let cli = Cli { server: &server, runs: RefCell::new(Vec::new()) };

    cli.run("org create acme --tier katman-b").ok();
    cli.run("team create --org acme agents").ok();
    cli.run("team create --org acme outsiders").ok();
    let cred = cli
        .run_with_stdin(
            "credential add --org acme --name openai-prod --provider openai --team agents --json",
            Some(&key),
        )
        .json();
    let cred_id = cred["id"].as_str().unwrap().to_owned();
    let token = cli.run("token create --org acme --team agents").ok().stdout.trim().to_owned();
    let outsider = cli.run("token create --org acme --team outsiders").ok().stdout.trim().to_owned();

    // Three allowed calls and one refused (the outsiders' team is not in scope).
    let http = reqwest::Client::new();
    let sent = ["audit-e2e-1", "audit-e2e-2", "audit-e2e-3"];
    for call_id in sent {
        assert_eq!(call(&http, &server, &token, call_id).await, 200, "{call_id}:\n{}", server.logs());
    }
    assert_eq!(call(&http, &server, &outsider, "audit-e2e-denied").await, 403, "{}", server.logs());

    // The completions are recorded as each call ends; wait until all three are there.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let timeline = loop {
        let timeline = cli.run("audit replay --org acme openai-prod --json").json();
        let completed = timeline["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "call" && e["completion"].is_object())
            .count();
        if completed >= sent.len() || std::time::Instant::now() > deadline {
            break timeline;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };

    // Replay: the lifecycle first, then every call in the order it was sent, the refused
    // one included (it was refused this credential).
    assert_eq!(timeline["credential"]["id"], cred_id.as_str());
    let events = timeline["events"].as_array().unwrap();
    assert_eq!(events[0]["type"], "lifecycle", "{timeline}");
    assert_eq!(events[0]["kind"], "created", "{timeline}");
    assert_eq!(replayed_call_ids(&timeline), ["audit-e2e-1", "audit-e2e-2", "audit-e2e-3", "audit-e2e-denied"]);
    for event in &events[1..4] {
        assert_eq!(event["resolution"]["outcome"], "allowed", "{event}");
        assert_eq!(event["completion"]["upstream_status"], 200, "{event}");
    }
    assert_eq!(events[4]["resolution"]["outcome"], "denied", "{timeline}");
    assert_eq!(events[4]["resolution"]["reason"], "scope_denied", "{timeline}");
    assert!(events[4]["completion"].is_null(), "{timeline}");
    // Paging one event at a time gives the same document; `credential lifecycle` is the same view.
    let paged = cli.run("audit replay --org acme openai-prod --json --limit 1").json();
    assert_eq!(paged, timeline);
    assert_eq!(cli.run(&format!("credential lifecycle --org acme {cred_id} --json --limit 2")).json(), timeline);
    let text = cli.run("audit replay --org acme openai-prod").ok().stdout;
    let positions: Vec<usize> = [
        "Credential openai-prod",
        "created",
        "call audit-e2e-1  allowed",
        "call audit-e2e-2",
        "call audit-e2e-3",
        "call audit-e2e-denied  denied (scope_denied)",
    ]
    .iter()
    .map(|needle| text.find(needle).unwrap_or_else(|| panic!("'{needle}' missing from:\n{text}")))
    .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "out of order:\n{text}");
    for needle in ["model gpt-4o-mini", "upstream 200", "tokens", "completed", "fingerprint fp_"] {
        assert!(text.contains(needle), "'{needle}' missing from:\n{text}");
    }

    // Verify: everything intact.
    let verified = cli.run("audit verify --org acme").ok();
    assert!(
        verified.stdout.contains("audit of org acme verified") && verified.stdout.contains("all links intact"),
        "{verified:?}"
    );
    let report = cli.run("audit verify --org acme --json").json();
    assert_eq!(report["ok"], true, "{report}");
    assert!(report["checked"].as_u64().unwrap() >= 8, "{report}");

    // A checkpoint, kept outside byok, verifies.
    let outside = tempfile::tempdir().unwrap();
    let checkpoint = outside.path().join("acme.checkpoint.json");
    let taken = cli.run(&format!("audit checkpoint --org acme --out {}", checkpoint.display())).ok();
    assert!(taken.stdout.is_empty(), "{taken:?}");
    let how_to_verify = format!("--checkpoint {}", checkpoint.display());
    assert!(taken.stderr.contains("byok audit verify --org") && taken.stderr.contains(&how_to_verify), "{taken:?}");
    let signed: Value = serde_json::from_str(&std::fs::read_to_string(&checkpoint).unwrap()).unwrap();
    assert!(!signed["signature"].as_str().unwrap().is_empty(), "{signed}");
    cli.run(&format!("audit checkpoint --org acme --out {}", checkpoint.display()));
    assert_eq!(cli.runs.borrow().last().unwrap().code, 2, "a checkpoint file was overwritten");
    let checked = cli.run(&format!("audit verify --org acme --checkpoint {}", checkpoint.display())).ok();
    assert!(checked.stdout.contains("checkpoint verified"), "{checked:?}");
    let from_stdin = cli
        .run_with_stdin("audit verify --org acme --checkpoint -", Some(&std::fs::read_to_string(&checkpoint).unwrap()))
        .ok();
    assert!(from_stdin.stdout.contains("checkpoint verified"), "{from_stdin:?}");

    // Export: JSON Lines only on stdout — a header, the lifecycle events, one line per
    // call (with its completion), an end line — and it verifies offline.
    let export = cli.run("audit export --org acme").ok();
    let lines: Vec<Value> = export.stdout.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(lines[0]["kind"], "header", "{}", export.stdout);
    assert_eq!(lines.last().unwrap()["kind"], "end", "{}", export.stdout);
    assert!(lines.iter().any(|l| l["kind"] == "lifecycle" && l["event"] == "created"), "{}", export.stdout);
    assert!(!export.stdout.contains(&key), "the export holds the key");
    let rows = call_lines(&export.stdout);
    let exported: Vec<&str> = rows.iter().map(|r| r["call_id"].as_str().unwrap()).collect();
    assert_eq!(exported, ["audit-e2e-1", "audit-e2e-2", "audit-e2e-3", "audit-e2e-denied"], "{}", export.stdout);
    assert_eq!(rows[3]["outcome"], "denied");
    assert_eq!(rows[0]["completion"]["upstream_status"], 200, "{}", export.stdout);
    let offline = cli.run_with_stdin("audit verify --export -", Some(&export.stdout)).ok();
    assert!(offline.stdout.contains("verified") && offline.stdout.contains("4 calls"), "{offline:?}");
    // Selected rows (--credential, --call-id, --outcome): one row per line, as before.
    let denied = cli.run("audit export --org acme --outcome denied --page-size 1000").ok();
    assert_eq!(denied.stdout.lines().count(), 1, "{denied:?}");
    let since_last = cli.run(&format!("audit export --org acme --since {}", rows[2]["at"].as_str().unwrap())).ok();
    assert_eq!(call_lines(&since_last.stdout).len(), 2, "{since_last:?}");
    cli.run_with_stdin("audit verify --export -", Some(&since_last.stdout)).ok();
    let by_cred = cli.run("audit export --org acme --credential openai-prod --outcome allowed").ok();
    assert_eq!(by_cred.stdout.lines().count(), 3, "{by_cred:?}");

    // Query: a table, and a page at a time.
    let table = cli.run("audit query --org acme").ok();
    for call_id in exported.iter().copied() {
        assert!(table.stdout.contains(call_id), "{call_id} missing from:\n{}", table.stdout);
    }
    assert!(table.stdout.contains("scope_denied"), "{}", table.stdout);
    let first = cli.run("audit query --org acme --limit 1 --json").json();
    assert_eq!(first["rows"][0]["call_id"], "audit-e2e-1");
    let next = first["next_after_seq"].as_i64().unwrap();
    let page = cli.run(&format!("audit query --org acme --limit 1 --json --after-seq {next}")).json();
    assert_eq!(page["rows"][0]["call_id"], "audit-e2e-2", "{page}");
    let one = cli.run("audit query --org acme --limit 1").ok();
    assert!(one.stderr.contains(&format!("--after-seq {next}")), "{one:?}");

    // The public key and a purge inside retention (nothing to remove).
    let public_key = cli.run("audit public-key --json").json();
    assert_eq!(public_key["algorithm"], "ed25519", "{public_key}");
    assert_eq!(public_key["key_id"], signed["checkpoint"]["key_id"]);
    assert!(cli.run("audit public-key").ok().stdout.contains(public_key["key_id"].as_str().unwrap()));
    let purged = cli.run("audit purge --org acme").ok();
    assert!(purged.stdout.contains("Removed 0 audit entries"), "{purged:?}");
    assert_eq!(cli.run("audit purge --org acme --before 2999-01-01T00:00:00Z").code, 2, "--before needs --yes");
    assert_eq!(call_lines(&cli.run("audit export --org acme").ok().stdout).len(), 4, "nothing was purged");

    // Tamper: change one row's model behind byok's back.
    let tampered_seq = rows[1]["seq"].as_i64().unwrap();
    {
        use sqlx::ConnectOptions as _;
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(server.data_dir.path().join("byok.db"))
            .busy_timeout(std::time::Duration::from_secs(10));
        let mut db = options.connect().await.unwrap();
        let changed =
            sqlx::query("UPDATE resolution_audit SET model = 'gpt-4o-tampered' WHERE call_id = 'audit-e2e-2'")
                .execute(&mut db)
                .await
                .unwrap()
                .rows_affected();
        assert_eq!(changed, 1);
        sqlx::Connection::close(db).await.unwrap();
    }

    let broken = cli.run("audit verify --org acme");
    assert_eq!(broken.code, 1, "{broken:?}");
    let row = format!("resolution_audit.seq = {tampered_seq}");
    for needle in ["audit of org acme NOT verified", "changed", &row] {
        assert!(broken.stdout.contains(needle), "'{needle}' missing from:\n{}", broken.stdout);
    }
    assert!(broken.stderr.contains("error: the audit of org acme did not verify"), "{broken:?}");
    let broken_json = cli.run("audit verify --org acme --json");
    assert_eq!(broken_json.code, 1, "{broken_json:?}");
    let report: Value = serde_json::from_str(&broken_json.stdout).unwrap();
    assert_eq!((report["ok"].as_bool(), report["first_bad"]["row"].as_str()), (Some(false), Some(row.as_str())));
    let stale = cli.run(&format!("audit verify --org acme --checkpoint {}", checkpoint.display()));
    assert_eq!(stale.code, 1, "{stale:?}");
    assert!(stale.stdout.contains("checkpoint NOT verified") && stale.stdout.contains(&row), "{stale:?}");

    // The provider key appears in no output, the server's included.
    let logs = server.logs();
    assert!(!logs.contains(&key), "byok serve logged the provider key");
    for run in cli.runs.borrow().iter() {
        assert!(
            !run.stdout.contains(&key) && !run.stderr.contains(&key),
            "`byok {}` printed the provider key",
            run.argv
        );
    }
    drop(cli);
    drop(server);
    mock.shutdown().await;
}

/// The lines of `text` with one changed by `change` (its JSON value).
fn edited(lines: &[String], index: usize, change: impl FnOnce(&mut Value)) -> Vec<String> {
    let mut lines = lines.to_vec();
    let mut value: Value = serde_json::from_str(&lines[index]).unwrap();
    change(&mut value);
    lines[index] = value.to_string();
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_verifies_offline_and_each_edit_is_named_by_its_line() {
    let key = format!("sk-canary-export-e2e-{}{}", std::process::id(), free_port());
    let rotated = format!("{key}-rotated");
    let mock =
        MockProvider::start(MockConfig { openai_keys: vec![key.clone(), rotated.clone()], ..MockConfig::default() })
            .await
            .unwrap();
    let upstream = mock.base_url();
    let server = Server::start_with(&[("BYOK_UPSTREAM_OPENAI", &upstream)]);
    let cli = Cli { server: &server, runs: RefCell::new(Vec::new()) };
    cli.run("org create acme --tier katman-b").ok();
    cli.run("team create --org acme agents").ok();
    cli.run_with_stdin("credential add --org acme --name openai-prod --provider openai --team agents", Some(&key)).ok();
    let token = cli.run("token create --org acme --team agents").ok().stdout.trim().to_owned();

    // Two calls, a rotation (a lifecycle event), a third call on the new version.
    let http = reqwest::Client::new();
    for call_id in ["export-1", "export-2"] {
        assert_eq!(call(&http, &server, &token, call_id).await, 200, "{call_id}:\n{}", server.logs());
    }
    cli.run_with_stdin("credential rotate --org acme openai-prod", Some(&rotated)).ok();
    assert_eq!(call(&http, &server, &token, "export-3").await, 200, "{}", server.logs());

    // Completions are written as calls end: export once all three are in.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let export = loop {
        let export = cli.run("audit export --org acme").ok().stdout;
        let completed = call_lines(&export).iter().filter(|c| c["completion"].is_object()).count();
        if completed >= 3 || std::time::Instant::now() > deadline {
            break export;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let calls = call_lines(&export);
    assert_eq!(calls.len(), 3, "{export}");
    assert_eq!((calls[0]["credential_version"].as_i64(), calls[2]["credential_version"].as_i64()), (Some(1), Some(2)));
    for call in &calls {
        let completion = &call["completion"];
        assert_eq!(completion["upstream_status"], 200, "{call}");
        assert!(completion["latency_us"].as_i64().unwrap() > 0, "{call}");
        assert!(completion["input_tokens"].is_u64() && completion["metering"]["rate_card"].is_string(), "{call}");
        assert_eq!(completion["resolution_seq"], call["segment_seq"], "{call}");
        for field in ["segment", "segment_seq", "prev_hash", "hash"] {
            assert!(!call[field].is_null() && !completion[field].is_null(), "{field}: {call}");
        }
    }
    let header: Value = serde_json::from_str(export.lines().next().unwrap()).unwrap();
    assert_eq!((header["format"].as_str(), header["version"].as_u64()), (Some("byok-audit-export"), Some(1)));
    assert!(header["org_id"].as_str().unwrap().starts_with("org_"), "{header}");
    let lifecycle: Vec<Value> = export
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["kind"] == "lifecycle")
        .collect();
    assert!(lifecycle.iter().any(|e| e["event"] == "rotated" && e["version"] == 2), "{export}");
    assert!(lifecycle.iter().all(|e| e["chain_seq"].is_i64() && e["hash"].is_string()), "{export}");

    // Offline: a file, with no server and no admin token anywhere.
    let outside = tempfile::tempdir().unwrap();
    let file = outside.path().join("acme.jsonl");
    std::fs::write(&file, &export).unwrap();
    let offline = tokio::task::block_in_place(|| {
        clean_command()
            .args(["--admin-url", "http://127.0.0.1:9", "audit", "verify", "--export"])
            .arg(&file)
            .output()
            .unwrap()
    });
    let stdout = String::from_utf8_lossy(&offline.stdout);
    assert_eq!(offline.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&offline.stderr));
    for needle in ["verified", "3 calls", "3 completions", &format!("{} lifecycle events", lifecycle.len())] {
        assert!(stdout.contains(needle), "'{needle}' missing from:\n{stdout}");
    }
    let report = cli.run(&format!("audit verify --export {} --json", file.display())).json();
    assert_eq!((report["ok"].as_bool(), report["calls"].as_u64()), (Some(true), Some(3)), "{report}");
    assert_eq!(report["lines"].as_u64(), Some(export.lines().count() as u64), "{report}");

    // Every kind of edit fails with exit 1 and names its line.
    let lines: Vec<String> = export.lines().map(str::to_owned).collect();
    let first_call = lines.iter().position(|l| l.starts_with("{\"kind\":\"call\"")).unwrap();
    let rotation = lines.iter().position(|l| l.contains("\"event\":\"rotated\"")).unwrap();
    let mut deleted = lines.clone();
    deleted.remove(first_call + 1);
    let mut swapped = lines.clone();
    swapped.swap(first_call, first_call + 1);
    let mut cut = lines.clone();
    cut.pop();
    let mut inserted = lines.clone();
    inserted.insert(first_call + 1, lines[first_call].clone());
    let bump =
        |v: &mut Value| v["completion"]["input_tokens"] = json!(v["completion"]["input_tokens"].as_u64().unwrap() + 1);
    let cases: Vec<(&str, Vec<String>, usize, &str)> = vec![
        ("a token count", edited(&lines, first_call, bump), first_call + 1, "changed"),
        (
            "an upstream status",
            edited(&lines, first_call + 2, |v| v["completion"]["upstream_status"] = json!(500)),
            first_call + 3,
            "changed",
        ),
        ("a lifecycle event", edited(&lines, rotation, |v| v["version"] = json!(3)), rotation + 1, "changed"),
        ("a deleted line", deleted, first_call + 2, "missing"),
        ("two lines swapped", swapped, first_call + 1, "missing"),
        ("a repeated line", inserted, first_call + 2, "reordered"),
        ("the end line cut", cut, lines.len(), "truncated"),
    ];
    for (what, lines, line, problem) in cases {
        let path = outside.path().join("tampered.jsonl");
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let run = cli.run(&format!("audit verify --export {}", path.display()));
        assert_eq!(run.code, 1, "{what}: {run:?}");
        assert!(run.stdout.contains("NOT verified"), "{what}: {run:?}");
        let named = format!("line {line}: {problem}");
        assert!(run.stderr.contains(&named), "{what}: '{named}' missing from: {run:?}");
    }
    let not_json = cli.run_with_stdin("audit verify --export -", Some(&format!("{}\nnot json\n", lines[0])));
    assert_eq!(not_json.code, 1, "{not_json:?}");
    assert!(not_json.stderr.contains("line 2: malformed"), "{not_json:?}");

    // A range: each chain from its first entry at or after --since, starting mid-chain.
    let since = calls[1]["at"].as_str().unwrap();
    let ranged = cli.run(&format!("audit export --org acme --since {since}")).ok().stdout;
    let ranged_header: Value = serde_json::from_str(ranged.lines().next().unwrap()).unwrap();
    let starts: Vec<&str> =
        ranged_header["chains"].as_array().unwrap().iter().map(|c| c["after"]["from"].as_str().unwrap()).collect();
    assert!(starts.contains(&"range"), "{ranged_header}");
    assert_eq!(call_lines(&ranged).len(), 2, "{ranged}");
    cli.run_with_stdin("audit verify --export -", Some(&ranged)).ok();

    // After a purge the rest starts from the anchor the purge left, and still verifies.
    let before = calls[2]["at"].as_str().unwrap();
    let purged = cli.run(&format!("audit purge --org acme --before {before} --yes")).ok();
    assert!(!purged.stdout.contains("Removed 0 "), "{purged:?}");
    let after_purge = cli.run("audit export --org acme").ok().stdout;
    let purged_header: Value = serde_json::from_str(after_purge.lines().next().unwrap()).unwrap();
    let anchored = purged_header["chains"].as_array().unwrap().iter().find(|c| c["after"]["from"] == "anchor");
    assert!(anchored.is_some_and(|c| c["after"]["position"].as_i64().unwrap() > 0), "{purged_header}");
    assert_eq!(call_lines(&after_purge).len(), 1, "{after_purge}");
    let verified = cli.run_with_stdin("audit verify --export -", Some(&after_purge)).ok();
    assert!(verified.stdout.contains("retention purge"), "{verified:?}");
    cli.run("audit verify --org acme").ok();

    for run in cli.runs.borrow().iter() {
        assert!(!run.stdout.contains(&key) && !run.stderr.contains(&key), "`byok {}` printed the key", run.argv);
    }
    drop(cli);
    drop(server);
    mock.shutdown().await;
}
