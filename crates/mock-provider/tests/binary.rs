//! The `byok-mock-provider` binary: prints its address on the first stdout line and serves
//! with the keys from its flags.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[tokio::test]
async fn binary_prints_its_address_then_serves() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_byok-mock-provider"))
        .args(["--listen", "127.0.0.1:0", "--openai-key", "sk-bin-one", "--openai-key", "sk-bin-two", "--no-record"])
        .env_remove("BYOK_MOCK_OPENAI_KEYS")
        .stdout(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("first line {line:?}")).to_owned();

    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut statuses = Vec::new();
    for key in ["sk-bin-one", "sk-bin-two", "sk-bin-three"] {
        let response = client.get(format!("http://{addr}/v1/models")).bearer_auth(key).send().await.unwrap();
        statuses.push(response.status().as_u16());
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(statuses, [200, 200, 401]);
}
