//! The official Python SDKs against the mock: sync and streaming chat with `openai` and
//! `anthropic` (plus embeddings, responses, models, token counting and a wrong key).
//!
//! The Python is `BYOK_PYTHON` (CI builds a venv with both packages), else `python3`.
//! Skipped (and passing) when it cannot import both packages, unless
//! `BYOK_REQUIRE_SDK_TESTS=1`, which makes a missing SDK a failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Command;

fn python() -> String {
    std::env::var("BYOK_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

fn sdks_importable() -> bool {
    Command::new(python()).args(["-c", "import openai, anthropic"]).output().is_ok_and(|output| output.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_sdks_work_against_the_mock() {
    if !sdks_importable() {
        assert!(
            std::env::var("BYOK_REQUIRE_SDK_TESTS").as_deref() != Ok("1"),
            "BYOK_REQUIRE_SDK_TESTS=1 but {} cannot import openai and anthropic (set BYOK_PYTHON)",
            python()
        );
        println!("skipped official_python_sdks_work_against_the_mock: python openai/anthropic packages not installed");
        return;
    }
    let mock = common::start().await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/official_sdks.py");
    let base_url = mock.base_url();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python())
            .arg(script)
            .args([&base_url, common::OPENAI_KEY, common::ANTHROPIC_KEY])
            // The SDKs would prefer credentials from the environment or a profile.
            .env_remove("OPENAI_API_KEY")
            .env_remove("OPENAI_BASE_URL")
            .env_remove("ANTHROPIC_API_KEY")
            .env_remove("ANTHROPIC_AUTH_TOKEN")
            .env_remove("ANTHROPIC_BASE_URL")
            .env("PYTHONWARNINGS", "ignore::DeprecationWarning")
            .output()
    })
    .await
    .unwrap()
    .expect("the Python of BYOK_PYTHON runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("all sdk checks passed"),
        "SDK script failed ({}):\n{stdout}\n{stderr}",
        output.status
    );

    // The SDKs' requests reached the mock as the providers expect them.
    let requests = mock.requests();
    let anthropic: Vec<_> = requests.iter().filter(|r| r.provider == byok_mock_provider::Provider::Anthropic).collect();
    assert!(!anthropic.is_empty());
    assert!(anthropic.iter().all(|r| r.has_header("anthropic-version")));
    let streamed_to_the_end = requests.iter().filter(|r| r.body_json().is_some_and(|b| b["stream"] == true)).count();
    assert!(streamed_to_the_end >= 3, "{requests:#?}");
    assert!(requests.iter().all(|r| r.finished || r.status.is_some()));
}
