//! Shared by the end-to-end tests: a real `byok serve` on free loopback ports.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod cli;
pub mod pki;

pub const BIN: &str = env!("CARGO_BIN_EXE_byok");

/// Environment variables that would let the developer's own setup leak into the test.
pub const BYOK_ENV: [&str; 10] = [
    "BYOK_DATA_DIR",
    "BYOK_ADMIN_URL",
    "BYOK_ADMIN_TOKEN",
    "BYOK_ADMIN_TOKEN_FILE",
    "BYOK_CONFIG",
    "BYOK_DATABASE_URL",
    "BYOK_ADMIN_ADDR",
    "BYOK_PROXY_ADDR",
    "BYOK_PROXY_TLS_CERT_FILE",
    "BYOK_PROXY_TLS_KEY_FILE",
];

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn clean_command() -> Command {
    let mut command = Command::new(BIN);
    for var in BYOK_ENV {
        command.env_remove(var);
    }
    command
}

/// A running `byok serve`, killed on drop.
pub struct Server {
    pub child: Child,
    pub admin_url: String,
    pub proxy_url: String,
    pub data_dir: tempfile::TempDir,
    stdout_log: PathBuf,
    stderr_log: PathBuf,
    _logs: tempfile::TempDir,
}

impl Server {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Start with extra environment variables (e.g. upstream overrides).
    pub fn start_with(env: &[(&str, &str)]) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), env)
    }

    /// Start with the data plane over TLS (the certificate and key of `pki`) and `env`.
    pub fn start_tls(pki: &pki::Pki, env: &[(&str, &str)]) -> Self {
        let (cert, key) = (pki.path("proxy.crt"), pki.path("proxy.key"));
        let mut all = vec![
            ("BYOK_PROXY_TLS_CERT_FILE", cert.to_str().unwrap()),
            ("BYOK_PROXY_TLS_KEY_FILE", key.to_str().unwrap()),
        ];
        all.extend_from_slice(env);
        Self::start_with(&all)
    }

    /// Start on an existing data directory (a restart).
    pub fn start_in(data_dir: tempfile::TempDir, env: &[(&str, &str)]) -> Self {
        let logs = tempfile::tempdir().unwrap();
        let stdout_log = logs.path().join("serve.stdout");
        let stderr_log = logs.path().join("serve.stderr");
        let admin_port = free_port();
        let proxy_port = free_port();
        let child = clean_command()
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir.path())
            .args(["--admin-addr", &format!("127.0.0.1:{admin_port}")])
            // By environment, so the test runs whether or not this build has a data plane.
            .env("BYOK_PROXY_ADDR", format!("127.0.0.1:{proxy_port}"))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout_log).unwrap())
            .stderr(std::fs::File::create(&stderr_log).unwrap())
            .spawn()
            .unwrap();
        let mut server = Server {
            child,
            admin_url: format!("http://127.0.0.1:{admin_port}"),
            proxy_url: format!("http://127.0.0.1:{proxy_port}"),
            data_dir,
            stdout_log,
            stderr_log,
            _logs: logs,
        };
        server.wait_ready(admin_port);
        server
    }

    fn wait_ready(&mut self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("byok serve exited early ({status}):\n{}", self.logs());
            }
            if readyz(port) {
                return;
            }
            if Instant::now() > deadline {
                panic!("byok serve was not ready within 60 s:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What the server wrote so far: (stdout, stderr).
    pub fn output(&self) -> (String, String) {
        let out = std::fs::read_to_string(&self.stdout_log).unwrap_or_default();
        let err = std::fs::read_to_string(&self.stderr_log).unwrap_or_default();
        (out, err)
    }

    pub fn logs(&self) -> String {
        let out = std::fs::read_to_string(&self.stdout_log).unwrap_or_default();
        let err = std::fs::read_to_string(&self.stderr_log).unwrap_or_default();
        format!("--- stdout\n{out}\n--- stderr\n{err}")
    }
}

impl Server {
    /// Stop the server (SIGKILL: byok is crash-safe) and hand back its data directory.
    pub fn stop(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let placeholder = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.data_dir, placeholder)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET /readyz` answers 200.
pub fn readyz(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /readyz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

/// `byok serve` that must refuse to start: waits for it to exit (failing the test if it
/// serves instead) and returns its stderr.
pub fn serve_refused(data_dir: &std::path::Path, env: &[(&str, &str)]) -> String {
    let mut child = clean_command()
        .arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--admin-addr", &format!("127.0.0.1:{}", free_port())])
        .env("BYOK_PROXY_ADDR", format!("127.0.0.1:{}", free_port()))
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("byok serve started although it should have refused");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success());
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The server's operator token (from its data directory).
pub fn operator_token(server: &Server) -> String {
    std::fs::read_to_string(server.data_dir.path().join("operator.token")).unwrap().trim().to_owned()
}

/// An admin-API call that must succeed; its JSON answer.
pub async fn admin_json(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Option<serde_json::Value>,
) -> serde_json::Value {
    let mut request = http.request(method, &url).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(status.is_success(), "{url}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
}

/// A chat completion for `gpt-4o` through `proxy` with `call_id`: its status and JSON
/// body (`0` and `{"error":{"code":"no_answer",…}}` when no HTTP answer came, e.g. from
/// a node being killed).
pub async fn chat(http: &reqwest::Client, proxy: &str, token: &str, call_id: &str) -> (u16, serde_json::Value) {
    let sent = http
        .post(format!("{proxy}/openai/v1/chat/completions"))
        .bearer_auth(token)
        .header("x-byok-call-id", call_id)
        .timeout(Duration::from_secs(30))
        .json(&serde_json::json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await;
    match sent {
        Ok(response) => {
            let status = response.status().as_u16();
            (status, response.json().await.unwrap_or(serde_json::Value::Null))
        }
        Err(err) => (0, serde_json::json!({"error": {"code": "no_answer", "message": format!("{err:?}")}})),
    }
}

/// The call's completion, once the audit writer has made it durable (waits up to 10 s).
pub async fn completion_of(store: &byok_store::Store, call_id: &str) -> byok_domain::CallCompletion {
    for _ in 0..100 {
        if let Some(completion) = store.list_completions(call_id).await.unwrap().pop() {
            return completion;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{call_id}: no completion recorded within 10 s");
}

/// Environment variables through which the official SDKs would take a key or an endpoint
/// other than the one a test gives them.
pub const SDK_ENV: [&str; 13] = [
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "AZURE_OPENAI_API_KEY",
    "AZURE_OPENAI_ENDPOINT",
    "OPENAI_API_VERSION",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "ANTHROPIC_BASE_URL",
    "GOOGLE_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_GENAI_USE_VERTEXAI",
    "GOOGLE_GENAI_API_VERSION",
    "GOOGLE_GEMINI_BASE_URL",
];

/// `command` without [`SDK_ENV`].
pub fn without_sdk_env(command: &mut Command) -> &mut Command {
    for var in SDK_ENV {
        command.env_remove(var);
    }
    command
}

/// The standard output of an SDK script `what` that must have succeeded, once none of
/// `secrets` is found in its output or in `server`'s log.
pub fn script_stdout(what: &str, output: &std::process::Output, server: &Server, secrets: &[&str]) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let logs = server.logs();
    assert!(output.status.success(), "{what} failed:\n{stdout}\n{stderr}\n{logs}");
    for text in [&stdout, &stderr, &logs] {
        assert!(secrets.iter().all(|secret| !text.contains(secret)), "a key leaked into the output of {what}");
    }
    stdout
}
