//! Test support (feature `testing`): a local KMS-compatible server — moto's
//! `moto_server` — to run the backend against, and direct access to it as "the
//! customer's account".
//!
//! The environment decides ([`MotoServer::from_env`]):
//!
//! 1. `MOTO_ENDPOINT` set (`http://127.0.0.1:5000`): use that running server.
//! 2. Otherwise `BYOK_MOTO_SERVER` (the path of `moto_server`), or `moto_server` on
//!    `PATH`: start it on a free loopback port. It stops when dropped, and when the test
//!    process ends (a watchdog shell ends it).
//! 3. Otherwise there is no server: callers skip, unless `BYOK_REQUIRE_MOTO=1`.
//!
//! `scripts/moto-server.sh DIR` installs moto and starts a server, printing the
//! variables of cases 1 and 2. Tests use fixed credentials (`AWS_ACCESS_KEY_ID` and
//! `AWS_SECRET_ACCESS_KEY` if set, else `testing`), never the AWS chain, so nothing ever
//! reaches an instance metadata service.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_kms::config::Credentials;
use byok_crypto::KmsError;
use zeroize::Zeroizing;

use crate::client::{Client, KeyDescription};
use crate::config::{AwsKmsConfig, Resolved};
use crate::{AwsKms, OpenError};

/// The region tests use.
pub const TEST_REGION: &str = "us-east-1";

/// What a skipped test prints after its name.
pub const NOT_AVAILABLE: &str = "no moto server: set MOTO_ENDPOINT, or BYOK_MOTO_SERVER to the path of moto_server \
     (scripts/moto-server.sh DIR prints both), or put moto_server on PATH (pip install 'moto[server]')";

/// How long a started server may take to listen (moto imports a lot of Python).
const START_LIMIT: Duration = Duration::from_secs(60);

/// Whether `BYOK_REQUIRE_MOTO=1` asks for moto tests to fail rather than skip.
pub fn moto_required() -> bool {
    std::env::var("BYOK_REQUIRE_MOTO").is_ok_and(|value| value == "1")
}

/// `moto_server` from `BYOK_MOTO_SERVER`, else from `PATH`.
pub fn moto_server_executable() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("BYOK_MOTO_SERVER").filter(|path| !path.is_empty()) {
        return Some(PathBuf::from(path));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths).map(|dir| dir.join("moto_server")).find(|candidate| candidate.is_file())
    })
}

/// A loopback port nothing listens on (at the moment of asking).
pub fn free_loopback_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port())
}

/// The credentials tests give the SDK: any are accepted by moto.
pub fn test_credentials() -> Credentials {
    let read = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
    Credentials::new(
        read("AWS_ACCESS_KEY_ID").unwrap_or_else(|| "testing".to_owned()),
        read("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|| "testing".to_owned()),
        None,
        None,
        "byok-tests",
    )
}

/// [`AwsKms::open`] with [`test_credentials`] instead of the AWS chain.
pub fn open_for_tests(config: &AwsKmsConfig) -> Result<AwsKms, OpenError> {
    AwsKms::open_with(config, Some(test_credentials()))
}

/// A moto server: one this process started (stopped on drop), or one named by
/// `MOTO_ENDPOINT`.
#[derive(Debug)]
pub struct MotoServer {
    endpoint: String,
    /// The watchdog shell of a server this process started.
    watchdog: Option<Child>,
}

impl MotoServer {
    /// The server the environment names, or a fresh one; `Ok(None)` if there is none.
    pub fn from_env() -> Result<Option<Self>, String> {
        if let Some(endpoint) = std::env::var("MOTO_ENDPOINT").ok().filter(|value| !value.trim().is_empty()) {
            return Ok(Some(Self { endpoint: endpoint.trim().trim_end_matches('/').to_owned(), watchdog: None }));
        }
        Self::start()
    }

    /// Start a server of this process's own (`BYOK_MOTO_SERVER` or `PATH`); `Ok(None)` if
    /// there is no `moto_server`.
    pub fn start() -> Result<Option<Self>, String> {
        let Some(executable) = moto_server_executable() else { return Ok(None) };
        Self::start_executable(&executable).map(Some)
    }

    fn start_executable(executable: &Path) -> Result<Self, String> {
        let port = free_loopback_port().map_err(|e| format!("cannot find a free loopback port: {e}"))?;
        // The shell starts moto and ends it when told to (TERM), when this process is
        // gone (a panicking test binary leaves no server behind), or when moto ends.
        let script = r#""$0" -H 127.0.0.1 -p "$1" >/dev/null 2>&1 &
moto=$!
trap 'kill "$moto" 2>/dev/null; exit 0' TERM INT HUP
while kill -0 "$2" 2>/dev/null && kill -0 "$moto" 2>/dev/null; do sleep 0.2; done
kill "$moto" 2>/dev/null"#;
        let mut watchdog = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(executable)
            .arg(port.to_string())
            .arg(std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", executable.display()))?;
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let started = Instant::now();
        loop {
            if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
                return Ok(Self { endpoint: format!("http://{address}"), watchdog: Some(watchdog) });
            }
            if let Ok(Some(status)) = watchdog.try_wait() {
                return Err(format!("{} exited ({status}) before listening on {address}", executable.display()));
            }
            if started.elapsed() > START_LIMIT {
                stop_watchdog(&mut watchdog);
                return Err(format!(
                    "{} did not listen on {address} within {} s",
                    executable.display(),
                    START_LIMIT.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Whether this process started the server (and can stop it).
    pub fn is_owned(&self) -> bool {
        self.watchdog.is_some()
    }

    /// A configuration for byok's own keys on this server.
    pub fn config(&self) -> AwsKmsConfig {
        AwsKmsConfig { endpoint_url: Some(self.endpoint.clone()), ..AwsKmsConfig::for_region(TEST_REGION) }
    }

    /// A configuration for a customer's key on this server.
    pub fn customer_config(&self, key_arn: &str) -> AwsKmsConfig {
        AwsKmsConfig { endpoint_url: Some(self.endpoint.clone()), ..AwsKmsConfig::for_customer_key(key_arn) }
    }

    /// Direct access to the server's account.
    pub fn account(&self) -> Result<TestAccount, KmsError> {
        TestAccount::new(&self.endpoint)
    }

    /// Stop a server this process started, and wait until it has stopped listening.
    pub fn stop(&mut self) {
        if let Some(mut watchdog) = self.watchdog.take() {
            stop_watchdog(&mut watchdog);
            let address = self.endpoint.trim_start_matches("http://").parse::<SocketAddr>().ok();
            let started = Instant::now();
            while let Some(address) = address {
                let listening = TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok();
                if !listening || started.elapsed() > Duration::from_secs(10) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// TERM the watchdog (which ends moto), then reap it.
fn stop_watchdog(watchdog: &mut Child) {
    let _ = Command::new("kill").arg("-TERM").arg(watchdog.id().to_string()).status();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        if let Ok(Some(_)) = watchdog.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = watchdog.kill();
    let _ = watchdog.wait();
}

/// Direct KMS operations on the test server, as a key's owner would do them (create a
/// customer's key, disable it, inspect states and tags).
pub struct TestAccount {
    client: Client,
}

impl std::fmt::Debug for TestAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestAccount").field("place", &self.client.place()).finish()
    }
}

impl TestAccount {
    /// An account on the server at `endpoint`, in [`TEST_REGION`].
    pub fn new(endpoint: &str) -> Result<Self, KmsError> {
        let resolved = Resolved {
            region: TEST_REGION.to_owned(),
            endpoint_url: Some(endpoint.to_owned()),
            customer_key: None,
            alias_prefix: crate::DEFAULT_ALIAS_PREFIX.to_owned(),
            pending_window_days: crate::DEFAULT_PENDING_WINDOW_DAYS,
            max_attempts: 1,
        };
        Ok(Self { client: Client::new(&resolved, Some(test_credentials()))? })
    }

    /// Create a symmetric encryption key (a customer's key).
    pub fn create_key(&self, description: &str) -> Result<KeyDescription, KmsError> {
        Ok(self.client.create_key(description, &[])?)
    }

    /// `DescribeKey` of a key id, ARN or alias.
    pub fn describe(&self, key: &str) -> Result<KeyDescription, KmsError> {
        Ok(self.client.describe_key(key)?)
    }

    /// Whether `alias` exists.
    pub fn alias_exists(&self, alias: &str) -> Result<bool, KmsError> {
        match self.client.describe_key(alias) {
            Ok(_) => Ok(true),
            Err(failure) if failure.is(crate::errors::FailureKind::NotFound) => Ok(false),
            Err(failure) => Err(failure.into()),
        }
    }

    /// `DisableKey`.
    pub fn disable(&self, key: &str) -> Result<(), KmsError> {
        Ok(self.client.disable_key(key)?)
    }

    /// `EnableKey`.
    pub fn enable(&self, key: &str) -> Result<(), KmsError> {
        Ok(self.client.enable_key(key)?)
    }

    /// `ScheduleKeyDeletion` after `days`.
    pub fn schedule_deletion(&self, key: &str, days: u32) -> Result<(), KmsError> {
        Ok(self.client.schedule_key_deletion(key, days)?)
    }

    /// The key's tags.
    pub fn tags(&self, key: &str) -> Result<Vec<(String, String)>, KmsError> {
        Ok(self.client.list_tags(key)?)
    }

    /// `Decrypt` with an explicit encryption context.
    pub fn decrypt(
        &self,
        key: &str,
        ciphertext: &[u8],
        context: &[(&str, &str)],
    ) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        let context = context.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Ok(self.client.decrypt(key, ciphertext, context)?)
    }
}
