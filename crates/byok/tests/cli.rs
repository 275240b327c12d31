//! End to end: the real `byok serve` on free loopback ports, driven by the real `byok`
//! CLI binary. Every command's output (and the server's) is kept and searched for the
//! canary secrets at the end.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::{Path, PathBuf};

use support::cli::Cli;
use support::{clean_command, free_port, Server};

fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            hits.extend(files_containing(&path, needle));
        } else if let Ok(bytes) = std::fs::read(&path) {
            if bytes.windows(needle.len()).any(|w| w == needle) {
                hits.push(path);
            }
        }
    }
    hits
}

#[test]
fn cli_drives_the_admin_api_without_ever_showing_a_secret() {
    let server = Server::start();
    let cli = Cli::new(&server);
    let nonce = format!("{}{}", std::process::id(), free_port());
    let canary = format!("sk-canary-cli-{nonce}-first");
    let canary_rotated = format!("sk-canary-cli-{nonce}-rotated");
    let canary_env = format!("sk-canary-cli-{nonce}-env");

    // Orgs.
    let created = cli.run("org create acme --tier katman-b").ok();
    assert!(created.stdout.contains("acme") && created.stdout.contains("katman-b"), "{created:?}");
    cli.run("org create bad --tier katman-z").fails(2, &["katman-z", "katman-a"]);
    let orgs = cli.run("org list --json").json();
    let acme = orgs["orgs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "acme")
        .cloned()
        .unwrap_or_else(|| panic!("acme not listed: {orgs}"));
    let org_id = acme["id"].as_str().unwrap().to_owned();
    assert!(org_id.starts_with("org_"), "{org_id}");
    assert_eq!(acme["tier"], "katman-b");
    assert_eq!(cli.run(&format!("org show {org_id} --json")).json()["name"], "acme");
    assert!(cli.run("org list").ok().stdout.contains(&org_id));

    // Teams and workflows.
    let team = cli.run("team create --org acme agents --json").json();
    let team_id = team["id"].as_str().unwrap().to_owned();
    assert!(team_id.starts_with("team_"), "{team}");
    cli.run("team create --org acme research").ok();
    assert!(cli.run("team list --org acme").ok().stdout.contains("research"));
    let workflow = cli.run("workflow create --org acme nightly --team agents --json").json();
    assert_eq!(workflow["team_id"], team_id.as_str());
    let workflows = cli.run("workflow list --org acme --json").json();
    assert_eq!(workflows["workflows"].as_array().unwrap().len(), 1, "{workflows}");

    // Credentials: the secret from piped stdin.
    let added = cli
        .run_with(
            "credential add --org acme --name openai-prod --provider openai --team agents --capability chat --json",
            Some(&format!("{canary}\n")),
            &[],
        )
        .json();
    assert_eq!(added["state"], "active", "{added}");
    assert_eq!(added["version"], 1);
    assert!(added["fingerprint"].as_str().unwrap().starts_with("fp_"), "{added}");
    assert_eq!(added["scope"]["teams"], serde_json::json!([team_id]));
    let cred_id = added["id"].as_str().unwrap().to_owned();

    // …and from an environment variable, with a table as output.
    let env_added = cli
        .run_with(
            "credential add --org acme --name anthropic-env --provider anthropic --secret-env BYOK_TEST_KEY",
            None,
            &[("BYOK_TEST_KEY", &canary_env)],
        )
        .ok();
    assert!(env_added.stdout.contains("anthropic-env"), "{env_added:?}");

    // Bad input is refused, naming the problem.
    cli.run_with("credential add --org acme --name x --provider openia", Some("sk-canary-cli-bad"), &[])
        .fails(2, &["openia"]);
    cli.run_with("credential add --org acme --name x --provider openai", Some("\n"), &[]).fails(2, &["empty"]);
    cli.run_with("credential add --org acme --name x --provider openai", None, &[]).fails(2, &["empty"]);
    cli.run_with("credential add --org nope-org --name x --provider openai", Some(&canary), &[])
        .fails(1, &["error:", "nope-org"]);
    cli.run("credential show --org acme no-such-cred").fails(1, &["error:", "no-such-cred"]);

    let list = cli.run("credential list --org acme --json").json();
    assert_eq!(list["credentials"].as_array().unwrap().len(), 2, "{list}");
    let table = cli.run("credential list --org acme").ok();
    assert!(table.stdout.contains("openai-prod") && table.stdout.contains("anthropic-env"), "{table:?}");
    let shown = cli.run("credential show --org acme openai-prod --json").json();
    assert_eq!(shown["id"], cred_id.as_str());
    assert_eq!(shown["versions"].as_array().unwrap().len(), 1, "{shown}");
    assert!(cli.run("credential show --org acme openai-prod").ok().stdout.contains(&cred_id));

    // Update: only the given dimensions change.
    let updated = cli.run("credential update --org acme openai-prod --mode stream --json").json();
    assert_eq!(updated["scope"]["modes"], serde_json::json!(["stream"]), "{updated}");
    assert_eq!(updated["scope"]["capabilities"], serde_json::json!(["chat"]), "{updated}");
    assert_eq!(updated["scope"]["teams"], serde_json::json!([team_id]), "{updated}");
    let updated = cli.run("credential update --org acme openai-prod --clear-scope=teams --json").json();
    assert_eq!(updated["scope"]["teams"], serde_json::json!([]), "{updated}");
    assert_eq!(updated["scope"]["modes"], serde_json::json!(["stream"]), "{updated}");
    let updated = cli
        .run("credential update --org acme openai-prod --priority 7 --expires-at 2099-01-01T00:00:00Z --json")
        .json();
    assert_eq!(updated["priority"], 7, "{updated}");
    assert!(updated["expires_at"].as_str().unwrap().starts_with("2099-01-01"), "{updated}");
    let updated = cli.run("credential update --org acme openai-prod --no-expiry --json").json();
    assert!(updated["expires_at"].is_null(), "{updated}");
    cli.run("credential update --org acme openai-prod").fails(2, &["nothing to update"]);

    // Rotate, disable, enable, revoke.
    let rotated = cli
        .run_with("credential rotate --org acme openai-prod --secret-file - --json", Some(&canary_rotated), &[])
        .json();
    assert_eq!(rotated["version"], 2, "{rotated}");
    assert_ne!(rotated["fingerprint"], added["fingerprint"]);
    let disabled = cli.run("credential disable --org acme openai-prod").ok();
    assert!(disabled.stdout.contains("is now disabled"), "{disabled:?}");
    assert_eq!(cli.run("credential enable --org acme openai-prod --json").json()["state"], "active");
    assert_eq!(cli.run(&format!("credential revoke --org acme {cred_id} --yes --json")).json()["state"], "revoked");

    let lifecycle = cli.run("credential lifecycle --org acme openai-prod --json").json();
    let kinds: Vec<&str> = lifecycle["events"].as_array().unwrap().iter().filter_map(|e| e["kind"].as_str()).collect();
    let expected = ["created", "scope_changed", "rotated", "disabled", "enabled", "revoked"];
    let mut at = 0;
    for kind in expected {
        let found = kinds[at..].iter().position(|k| *k == kind);
        at += found.unwrap_or_else(|| panic!("{kind} missing or out of order in {kinds:?}")) + 1;
    }
    let timeline = cli.run("credential lifecycle --org acme openai-prod").ok();
    assert!(timeline.stdout.contains("rotated"), "{timeline:?}");

    // Workload tokens: printed once, alone on stdout.
    let token = cli.run("token create --org acme --team agents --workflow nightly").ok();
    let token_text = token.stdout.trim();
    assert!(token_text.starts_with("byok_") && !token_text.contains('\n'), "{token:?}");
    assert!(token.stderr.contains("not show this token again"), "{token:?}");
    let tokens = cli.run("token list --org acme --json").json();
    let listed = tokens["tokens"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{tokens}");
    assert!(!tokens.to_string().contains(token_text), "token list shows the token text");
    let token_id = listed[0]["id"].as_str().unwrap().to_owned();
    let revoked = cli.run(&format!("token revoke --org acme {token_id} --json")).json();
    assert!(!revoked["revoked_at"].is_null(), "{revoked}");
    assert!(cli.run("token list --org acme").ok().stdout.contains("revoked"));

    // An org-admin token works through BYOK_ADMIN_TOKEN.
    let admin = cli.run("org admin-token acme").ok();
    let admin_token = admin.stdout.trim().to_owned();
    assert!(admin_token.starts_with("byokadm_"), "{admin:?}");
    let as_org_admin = cli.run_bare(
        &["--admin-url", &server.admin_url, "credential", "list", "--org", "acme"],
        &[("BYOK_ADMIN_TOKEN", &admin_token)],
    );
    assert!(as_org_admin.ok().stdout.contains("anthropic-env"));
    cli.run_bare(
        &["--admin-url", &server.admin_url, "org", "list"],
        &[("BYOK_ADMIN_TOKEN", "byokadm_not_a_real_token")],
    )
    .fails(1, &["error:", "BYOK_ADMIN_TOKEN"]);

    // No token anywhere, and no server at all.
    let empty = tempfile::tempdir().unwrap();
    let data_dir = empty.path().to_str().unwrap();
    cli.run_bare(&["--admin-url", &server.admin_url, "--data-dir", data_dir, "org", "list"], &[])
        .fails(1, &["no admin token", "BYOK_ADMIN_TOKEN", "--token-file", "operator.token"]);
    let closed = format!("http://127.0.0.1:{}", free_port());
    let token_file = server.data_dir.path().join("operator.token");
    cli.run_bare(&["--admin-url", &closed, "--token-file", token_file.to_str().unwrap(), "org", "list"], &[])
        .fails(3, &["cannot reach", "is `byok serve` running?", &closed]);

    // The canaries appear nowhere: not in any command's output, not in the server's
    // output, not in plaintext in the data directory.
    let server_logs = server.logs();
    for secret in [&canary, &canary_rotated, &canary_env] {
        for run in cli.runs.borrow().iter() {
            assert!(!run.stdout.contains(secret.as_str()), "`byok {}` printed the secret", run.argv);
            assert!(!run.stderr.contains(secret.as_str()), "`byok {}` printed the secret", run.argv);
        }
        assert!(!server_logs.contains(secret.as_str()), "byok serve logged the secret");
        let hits = files_containing(server.data_dir.path(), secret.as_bytes());
        assert!(hits.is_empty(), "plaintext secret in the data directory: {hits:?}");
    }
}

#[test]
fn help_names_every_command_and_there_is_no_secret_flag() {
    let cli_help = |args: &[&str]| {
        let output = clean_command().args(args).output().unwrap();
        assert!(output.status.success(), "{args:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let top = cli_help(&["--help"]);
    for command in ["serve", "org", "team", "workflow", "credential", "token", "audit"] {
        assert!(top.contains(command), "{command} missing from --help");
    }
    let add = cli_help(&["credential", "add", "--help"]);
    assert!(add.contains("--secret-file") && add.contains("--secret-env"), "{add}");
    assert!(!add.contains("--secret "), "{add}");
    assert!(add.contains("Examples:"), "{add}");
    let serve = cli_help(&["serve", "--help"]);
    assert!(serve.contains("--admin-addr") && serve.contains("--data-dir"), "{serve}");
}

#[test]
fn completions_and_manual_pages_come_from_the_command_line() {
    let run = |args: &[&str]| {
        let output = clean_command().args(args).output().unwrap();
        assert!(output.status.success(), "byok {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    };
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = run(&["completions", shell]);
        for word in ["credential", "rotate", "token", "serve"] {
            assert!(script.contains(word), "the {shell} completions do not mention {word}");
        }
    }
    let bash = run(&["completions", "bash"]);
    assert!(bash.contains("complete -F _byok"), "{}", &bash[..bash.len().min(400)]);
    if let Ok(status) = std::process::Command::new("bash").args(["-n", "-c", &bash]).status() {
        assert!(status.success(), "the bash completion script does not parse");
    }
    let refused = clean_command().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("bash"), "{refused:?}");

    // One page on stdout, linking the subcommands' pages.
    let page = run(&["man"]);
    assert!(page.contains(".TH byok 1"), "{}", &page[..page.len().min(400)]);
    for command in ["serve", "credential", "token", "audit", "completions"] {
        assert!(page.contains(&format!("byok\\-{command}(1)")), "byok.1 does not link byok-{command}(1)");
    }
    if let Ok(output) = std::process::Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut groff| {
            use std::io::Write;
            groff.stdin.take().unwrap().write_all(page.as_bytes())?;
            groff.wait_with_output()
        })
    {
        assert!(
            output.status.success() && output.stderr.is_empty(),
            "groff: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    // With --out, a page per command, named as the pages link them.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man1");
    let written = clean_command().args(["man", "--out"]).arg(&out).output().unwrap();
    assert!(written.status.success(), "{written:?}");
    assert!(String::from_utf8_lossy(&written.stderr).contains("manual pages"), "{written:?}");
    for name in ["byok.1", "byok-serve.1", "byok-credential-add.1", "byok-credential-rotate.1", "byok-token-create.1"] {
        let text = std::fs::read_to_string(out.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(text.contains(".TH"), "{name} is not a manual page");
    }
    assert!(!out.join("byok-help.1").exists(), "clap's help subcommand has a page");
    let serve = std::fs::read_to_string(out.join("byok-serve.1")).unwrap();
    assert!(serve.contains("BYOK_ADMIN_ADDR") && serve.contains("\\-\\-config"), "{serve}");
}
