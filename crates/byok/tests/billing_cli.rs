//! End to end: billing tiers, budgets, rate cards, katman-c controls, statements and the
//! platform credential pool, through the real `byok` CLI binary against a real
//! `byok serve`. Every command's output is kept and searched for the canary secret.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::json;
use support::cli::Cli;
use support::{clean_command, free_port, Server};

#[test]
fn billing_commands_drive_tiers_budgets_rate_cards_and_the_platform_pool() {
    let server = Server::start();
    let cli = Cli::new(&server);
    let canary = format!("sk-canary-billing-{}{}", std::process::id(), free_port());

    // A katman-b org with a team, and a budget for both.
    cli.run("org create acme --tier katman-b").ok();
    cli.run("team create --org acme research").ok();
    let budget = cli.run("billing budget set --org acme --monthly-limit 50.00 --team research=10.00 --json").json();
    assert_eq!(budget["monthly_limit"], "50", "{budget}");
    assert_eq!(budget["teams"], json!({"research": "10"}), "{budget}");
    assert_eq!(budget["spent_this_month"], "0.000000", "{budget}");
    let shown = cli.run("billing budget show --org acme").ok();
    for needle in ["50 USD", "research", "10 USD", "0.000000 USD"] {
        assert!(shown.stdout.contains(needle), "'{needle}' not in:\n{}", shown.stdout);
    }
    cli.run("billing budget set --org acme --team nobody=1").fails(1, &["nobody"]);
    cli.run("billing budget set --org acme").fails(2, &["nothing to set", "budget clear"]);

    // Operator: the org moves to katman-a, which may fall back on the platform pool.
    let moved = cli.run("org set-tier acme --tier katman-a --json").json();
    assert_eq!(moved["tier"], "katman-a", "{moved}");
    let table = cli.run("org set-tier acme --tier katman-a").ok();
    assert!(table.stdout.contains("katman-a") && table.stderr.contains("next call"), "{table:?}");

    // The platform pool: a credential added with the secret on stdin, then listed.
    let added = cli
        .run_with(
            "credential add --platform --name openai-pool --provider openai --model-family gpt-4o --json",
            Some(&format!("{canary}\n")),
            &[],
        )
        .json();
    assert_eq!(added["owner"], "platform", "{added}");
    assert_eq!(added["scope"]["model_families"], json!(["gpt-4o"]), "{added}");
    let listed = cli.run("credential list --platform --json").json();
    let names: Vec<&str> =
        listed["credentials"].as_array().unwrap().iter().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(names, ["openai-pool"], "{listed}");
    let table = cli.run("credential list --platform").ok();
    assert!(table.stdout.contains("openai-pool"), "{table:?}");
    let shown = cli.run("credential show --platform openai-pool").ok();
    assert!(shown.stdout.contains("platform") && shown.stdout.contains("gpt-4o"), "{shown:?}");
    let updated = cli.run("credential update --platform openai-pool --mode stream --json").json();
    assert_eq!(updated["scope"]["modes"], json!(["stream"]), "{updated}");
    assert_eq!(updated["scope"]["model_families"], json!(["gpt-4o"]), "{updated}");
    cli.run_with("credential add --platform --name p2 --provider openai --team research", Some(&canary), &[])
        .fails(2, &["--team", "platform credential"]);
    cli.run("credential list --org acme --platform").fails(2, &["--platform"]);
    let lifecycle = cli.run("credential lifecycle --platform openai-pool --json").json();
    assert_eq!(lifecycle["events"][0]["kind"], "created", "{lifecycle}");
    let verified = cli.run("audit verify --platform").ok();
    assert!(verified.stdout.contains("platform pool verified"), "{verified:?}");

    // Negotiated rate cards are for katman-c only.
    cli.run("billing rate-card set --org acme --per-call 0.0010 --per-million-input-tokens 0.15 --per-million-output-tokens 0.60")
        .fails(1, &["katman-c"]);
    cli.run("billing rate-card set --org acme --per-call 1e-3 --per-million-input-tokens 0.15 --per-million-output-tokens 0.60")
        .fails(2, &["--per-call", "1e-3"]);
    let card = cli.run("billing rate-card show --org acme --json").json();
    assert_eq!(
        (&card["tier"], &card["negotiated"], &card["per_call"]),
        (&json!("katman-a"), &json!(false), &json!("0.002"))
    );
    cli.run("org controls set --org acme --max-credential-age-days 90").fails(1, &["katman-c"]);

    // A katman-c org negotiates a card and sets its controls.
    cli.run("org create globex --tier katman-c").ok();
    let card = cli
        .run("billing rate-card set --org globex --per-call 0.0010 --per-million-input-tokens 0.15 --per-million-output-tokens 0.60 --json")
        .json();
    assert_eq!(card["negotiated"], true, "{card}");
    assert_eq!(
        (&card["per_call"], &card["per_million_input_tokens"], &card["per_million_output_tokens"]),
        (&json!("0.001"), &json!("0.15"), &json!("0.6")),
        "{card}"
    );
    assert!(cli.run("billing rate-card show --org globex").ok().stdout.contains("negotiated"));
    assert_eq!(cli.run("billing rate-card reset --org globex --json").json()["negotiated"], false);
    let controls = cli
        .run("org controls set --org globex --max-credential-age-days 90 --allow-source 10.20.0.0/16,127.0.0.1/32 --json")
        .json();
    assert_eq!(
        controls,
        json!({"max_credential_age_days": 90, "allowed_source_cidrs": ["10.20.0.0/16", "127.0.0.1/32"]})
    );
    let shown = cli.run("org controls show --org globex").ok();
    assert!(shown.stdout.contains("90 days") && shown.stdout.contains("10.20.0.0/16"), "{shown:?}");
    assert_eq!(cli.run("org controls clear --org globex --json").json(), json!({}));

    // Statements: nothing billed yet.
    let statement = cli.run("billing report --org acme --json").json();
    assert_eq!(statement["calls"], 0, "{statement}");
    assert_eq!(statement["lines"], json!([]), "{statement}");
    let november = cli.run("billing report --org acme --period 2026-11 --json").json();
    assert!(november["from"].as_str().unwrap().starts_with("2026-11-01T00:00:00"), "{november}");
    assert!(november["to"].as_str().unwrap().starts_with("2026-12-01T00:00:00"), "{november}");
    let table = cli.run("billing report --org acme --source audit").ok();
    assert!(table.stdout.contains("Statement of org") && table.stdout.contains("Total: 0.000000 USD"), "{table:?}");
    let csv = cli.run("billing report --org acme --csv").ok();
    assert_eq!(
        csv.stdout,
        "tier,provider,model_family,credential_owner,calls,input_tokens,output_tokens,platform_fee,provider_cost,\
         per_call,per_million_input_tokens,per_million_output_tokens\r\n"
    );
    let all = cli.run("billing report --all --csv").ok();
    assert!(
        all.stdout.starts_with(
            "org_id,name,tier,calls,denied,input_tokens,output_tokens,platform_fee,provider_cost,total\r\n"
        ),
        "{all:?}"
    );
    let all = cli.run("billing report --all --period 2026-11 --json").json();
    assert_eq!(all["orgs"], json!([]), "{all}");
    cli.run("billing report --org acme --period 2026-13").fails(2, &["2026-13", "--period"]);
    cli.run("billing report --org acme --csv --json").fails(2, &["--csv", "--json"]);
    cli.run("billing report --org acme --all").fails(2, &["--org", "--all"]);

    // An org-admin token manages its own org's budget, but not tiers or the platform pool.
    let admin_token = cli.run("org admin-token acme").ok().stdout.trim().to_owned();
    assert!(admin_token.starts_with("byokadm_"), "{admin_token}");
    let as_org_admin = [("BYOK_ADMIN_TOKEN", admin_token.as_str())];
    assert_eq!(
        cli.run_with("billing budget show --org acme --json", None, &as_org_admin).json()["monthly_limit"],
        "50"
    );
    cli.run_with("org set-tier acme --tier katman-b", None, &as_org_admin).fails(1, &["operator", "hint:"]);
    cli.run_with("credential list --platform", None, &as_org_admin).fails(1, &["operator"]);
    cli.run_with("billing report --all", None, &as_org_admin).fails(1, &["operator"]);
    cli.run_with("audit verify --platform", None, &as_org_admin).fails(1, &["operator"]);
    let cleared = cli.run_with("billing budget clear --org acme --json", None, &as_org_admin).json();
    assert!(cleared.get("monthly_limit").is_none() && cleared["teams"] == json!({}), "{cleared}");

    // The canary appears in no command's output and not in the server's.
    let server_logs = server.logs();
    for run in cli.runs.borrow().iter() {
        assert!(!run.stdout.contains(&canary), "`byok {}` printed the secret", run.argv);
        assert!(!run.stderr.contains(&canary), "`byok {}` printed the secret", run.argv);
    }
    assert!(!server_logs.contains(&canary), "byok serve logged the secret");
}

#[test]
fn help_shows_billing_and_platform() {
    let help = |args: &[&str]| {
        let output = clean_command().args(args).output().unwrap();
        assert!(output.status.success(), "{args:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let top = help(&["--help"]);
    assert!(top.contains("billing") && top.contains("byok billing report"), "{top}");
    let add = help(&["credential", "add", "--help"]);
    assert!(add.contains("--platform") && add.contains("katman-a") && add.contains("--workflow"), "{add}");
    for command in [
        &["billing", "report", "--help"][..],
        &["billing", "rate-card", "set", "--help"],
        &["billing", "budget", "set", "--help"],
        &["org", "set-tier", "--help"],
        &["org", "controls", "set", "--help"],
    ] {
        let text = help(command);
        assert!(text.contains("Example"), "{command:?}: {text}");
    }
    assert!(help(&["billing", "budget", "set", "--help"]).contains("replaces the whole budget"));
    assert!(help(&["org", "controls", "set", "--help"]).contains("replaces the org's controls whole"));
}
