//! A whole data plane in-process: real store (SQLite or PostgreSQL), real local keyring
//! (behind a switch that can make it unavailable), the audit writer, the sidecar on
//! 127.0.0.1:0, and the mock provider standing in for every upstream.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use byok_audit::{AuditConfig, AuditWriter};
use byok_crypto::{Dek, Kms, KmsError, LocalKeyring, ProviderSecret, WrappedDek};
use byok_domain::{
    Actor, Credential, ModelFamilyRegistry, Org, OrgId, PriceBook, ProviderId, ResolutionAudit, ScopeInput, Team, Tier,
    Timestamp,
};
use byok_kms::KmsHandle;
use byok_mock_provider::{MockConfig, MockProvider};
use byok_proxy::{ProxyConfig, Sidecar, UpstreamBase};
use byok_store::testing::TestStore;
use byok_store::AuditFilter;
use byok_vault::{HostPattern, NewCredential, NewWorkloadToken, Owner, Vault, VaultPolicy};
use tokio::sync::watch;

/// Every canary secret starts with this, so one search of the log finds any of them.
pub const CANARY_PREFIX: &str = "sk-canary-";

/// Log lines of every test in this binary, at TRACE.
pub fn log_buffer() -> Arc<Mutex<Vec<u8>>> {
    static BUFFER: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUFFER
        .get_or_init(|| {
            let buffer = Arc::new(Mutex::new(Vec::new()));
            let writer = BufferWriter(Arc::clone(&buffer));
            let filter = tracing_subscriber::EnvFilter::new("trace,byok_mock_provider=off");
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .try_init();
            buffer
        })
        .clone()
}

/// The access lines (target `byok::access`) logged so far for `call_id`.
pub fn access_lines(call_id: &str) -> Vec<String> {
    let logs = String::from_utf8_lossy(&log_buffer().lock().unwrap()).into_owned();
    let id = format!(" call_id=\"{call_id}\" ");
    logs.lines().filter(|l| l.contains(" byok::access: ") && l.contains(&id)).map(str::to_owned).collect()
}

/// The one access line of `call_id` (there must be exactly one).
pub fn access_line(call_id: &str) -> String {
    let mut lines = access_lines(call_id);
    assert_eq!(lines.len(), 1, "one access line for {call_id}: {lines:#?}");
    lines.remove(0)
}

#[derive(Clone)]
struct BufferWriter(Arc<Mutex<Vec<u8>>>);

impl Write for BufferWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The local keyring behind an on/off switch (a KMS outage) and a hang switch (a token
/// that stops answering).
pub struct SwitchableKms {
    inner: LocalKeyring,
    pub down: AtomicBool,
    pub hung: AtomicBool,
}

impl SwitchableKms {
    fn check(&self) -> Result<(), KmsError> {
        let started = std::time::Instant::now();
        while self.hung.load(Ordering::SeqCst) && started.elapsed() < std::time::Duration::from_secs(60) {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        if self.down.load(Ordering::SeqCst) {
            Err(KmsError::unavailable("test switched the KMS off"))
        } else {
            Ok(())
        }
    }
}

impl Kms for SwitchableKms {
    fn backend_name(&self) -> &'static str {
        "local"
    }
    fn create_org_kek(&self, org: &OrgId) -> Result<u32, KmsError> {
        self.check()?;
        self.inner.create_org_kek(org)
    }
    fn current_kek_version(&self, org: &OrgId) -> Result<u32, KmsError> {
        self.check()?;
        self.inner.current_kek_version(org)
    }
    fn rotate_kek(&self, org: &OrgId) -> Result<u32, KmsError> {
        self.check()?;
        self.inner.rotate_kek(org)
    }
    fn wrap_dek(&self, org: &OrgId, dek: &Dek) -> Result<WrappedDek, KmsError> {
        self.check()?;
        self.inner.wrap_dek(org, dek)
    }
    fn unwrap_dek(&self, org: &OrgId, wrapped: &WrappedDek) -> Result<Dek, KmsError> {
        self.check()?;
        self.inner.unwrap_dek(org, wrapped)
    }
    fn create_kek_version(&self, org: &OrgId, version: u32) -> Result<(), KmsError> {
        self.check()?;
        self.inner.create_kek_version(org, version)
    }
    fn remove_org(&self, org: &OrgId) -> Result<(), KmsError> {
        self.check()?;
        self.inner.remove_org(org)
    }
    fn retire_kek_version(&self, org: &OrgId, version: u32) -> Result<(), KmsError> {
        self.check()?;
        self.inner.retire_kek_version(org, version)
    }
    fn destroy_org_keks(&self, org: &OrgId) -> Result<(), KmsError> {
        self.check()?;
        self.inner.destroy_org_keks(org)
    }
    fn check_health(&self) -> Result<(), KmsError> {
        self.check()?;
        self.inner.check_health()
    }
}

/// Keys the mock accepts, one per provider family.
pub struct Keys {
    pub openai: String,
    pub anthropic: String,
    pub gemini: String,
    pub azure: String,
}

impl Keys {
    fn new() -> Self {
        let id = ulid::Ulid::new().to_string().to_ascii_lowercase();
        Self {
            openai: format!("{CANARY_PREFIX}openai-{id}"),
            anthropic: format!("{CANARY_PREFIX}ant-{id}"),
            gemini: format!("{CANARY_PREFIX}gem-{id}"),
            azure: format!("{CANARY_PREFIX}az-{id}"),
        }
    }

    /// The key the mock accepts for `provider`.
    pub fn for_provider(&self, provider: ProviderId) -> &str {
        match provider {
            ProviderId::Anthropic => &self.anthropic,
            ProviderId::Gemini => &self.gemini,
            ProviderId::AzureOpenai => &self.azure,
            _ => &self.openai,
        }
    }
}

/// How long the test env's KMS calls may take.
pub const KMS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The name of the test env's customer-managed KMS.
pub const CUSTOMER_KMS: &str = "acme-hsm";

pub struct Env {
    pub t: TestStore,
    _dir: tempfile::TempDir,
    pub vault: Vault,
    pub kms: Arc<SwitchableKms>,
    /// A customer-managed KMS named [`CUSTOMER_KMS`] (another keyring, with its own switch).
    pub customer: Arc<SwitchableKms>,
    pub mock: MockProvider,
    pub keys: Keys,
    pub proxy: String,
    pub http: reqwest::Client,
    pub org: Org,
    pub team: Team,
    stop: watch::Sender<bool>,
    /// The data plane's configuration (a second node starts from it).
    pub config: ProxyConfig,
}

/// Serve a data plane over `vault` until `stopped`: its URL and sidecar.
async fn serve_node(
    t: &TestStore,
    vault: &Vault,
    config: ProxyConfig,
    stopped: watch::Receiver<bool>,
) -> (String, Sidecar) {
    let (audit, _task) = AuditWriter::spawn(t.store().clone(), AuditConfig::default());
    let sidecar = Sidecar::new(vault.clone(), audit, config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = format!("http://{}", listener.local_addr().unwrap());
    sidecar.spawn_change_watcher(stopped.clone());
    let mut until = stopped;
    tokio::spawn(byok_proxy::serve(listener, sidecar.clone(), async move {
        let _ = until.wait_for(|s| *s).await;
    }));
    (proxy, sidecar)
}

pub fn actor() -> Actor {
    Actor::System
}

impl Env {
    pub async fn start(t: TestStore) -> Env {
        Self::start_with(t, MockConfig::default(), |_| {}).await
    }

    pub async fn start_with(t: TestStore, mock_config: MockConfig, tune: impl FnOnce(&mut ProxyConfig)) -> Env {
        Self::start_priced(t, mock_config, PriceBook::default(), tune).await
    }

    /// An env billing with `prices`.
    pub async fn start_priced(
        t: TestStore,
        mock_config: MockConfig,
        prices: PriceBook,
        tune: impl FnOnce(&mut ProxyConfig),
    ) -> Env {
        log_buffer();
        let keys = Keys::new();
        // The env's keys, plus any the test's config names (more keys for pools).
        let with = |key: &String, more: &[String]| std::iter::once(key.clone()).chain(more.iter().cloned()).collect();
        let mock = MockProvider::start(MockConfig {
            openai_keys: with(&keys.openai, &mock_config.openai_keys),
            anthropic_keys: with(&keys.anthropic, &mock_config.anthropic_keys),
            gemini_keys: with(&keys.gemini, &mock_config.gemini_keys),
            azure_keys: with(&keys.azure, &mock_config.azure_keys),
            ..mock_config
        })
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let kms = Arc::new(SwitchableKms {
            inner: LocalKeyring::open(dir.path().join("keyring.json")).unwrap(),
            down: AtomicBool::new(false),
            hung: AtomicBool::new(false),
        });
        let customer = Arc::new(SwitchableKms {
            inner: LocalKeyring::open(dir.path().join("customer-keyring.json")).unwrap(),
            down: AtomicBool::new(false),
            hung: AtomicBool::new(false),
        });
        let vault = Vault::new(
            t.store().clone(),
            KmsHandle::new(Arc::clone(&kms) as Arc<dyn Kms>, 4)
                .with_kms(byok_domain::KmsName::parse(CUSTOMER_KMS).unwrap(), Arc::clone(&customer) as Arc<dyn Kms>, 2)
                .with_timeout(KMS_TIMEOUT),
            ModelFamilyRegistry::seeded(),
            // Azure OpenAI credentials name their resource: here the mock, on loopback.
            VaultPolicy { allow_plain_http_base_url: true, ..VaultPolicy::default() }
                .allow_host(ProviderId::AzureOpenai, HostPattern::parse("127.0.0.1").unwrap()),
        )
        .with_price_book(prices);
        let mut config = ProxyConfig::default();
        for provider in ProviderId::ALL {
            config.upstreams.insert(provider, UpstreamBase::parse(&mock.base_url()).unwrap());
        }
        tune(&mut config);
        let (stop, stopped) = watch::channel(false);
        let (proxy, _) = serve_node(&t, &vault, config.clone(), stopped).await;
        let org = vault.create_org(&actor(), &format!("org-{}", ulid::Ulid::new()), Tier::KatmanB).await.unwrap();
        let team = vault.create_team(&actor(), org.id, "research").await.unwrap();
        Env {
            t,
            _dir: dir,
            vault,
            kms,
            customer,
            mock,
            keys,
            proxy,
            http: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap(),
            org,
            team,
            stop,
            config,
        }
    }

    /// Another node on the same store and KMS (its own vault, caches, key health and
    /// audit writer), serving the data plane until the env stops: its URL and sidecar.
    pub async fn second_node(&self, tune: impl FnOnce(&mut ProxyConfig)) -> (String, Sidecar) {
        let vault = Vault::new(
            self.t.store().clone(),
            KmsHandle::new(Arc::clone(&self.kms) as Arc<dyn Kms>, 4)
                .with_kms(
                    byok_domain::KmsName::parse(CUSTOMER_KMS).unwrap(),
                    Arc::clone(&self.customer) as Arc<dyn Kms>,
                    2,
                )
                .with_timeout(KMS_TIMEOUT),
            ModelFamilyRegistry::seeded(),
            VaultPolicy { allow_plain_http_base_url: true, ..VaultPolicy::default() }
                .allow_host(ProviderId::AzureOpenai, HostPattern::parse("127.0.0.1").unwrap()),
        );
        let mut config = self.config.clone();
        tune(&mut config);
        serve_node(&self.t, &vault, config, self.stop.subscribe()).await
    }

    /// A credential for `provider` with `scope`, holding the key the mock accepts.
    pub async fn credential(&self, name: &str, provider: ProviderId, scope: ScopeInput) -> Credential {
        let secret = self.keys.for_provider(provider).to_owned();
        self.credential_with_secret(name, provider, scope, &secret).await
    }

    pub async fn credential_with_secret(
        &self,
        name: &str,
        provider: ProviderId,
        scope: ScopeInput,
        secret: &str,
    ) -> Credential {
        let base_url = (provider == ProviderId::AzureOpenai).then(|| self.mock.base_url());
        let new = NewCredential {
            name: name.to_owned(),
            provider,
            secret: ProviderSecret::new(secret.to_owned()).unwrap(),
            scope,
            base_url,
            expires_at: None,
            priority: None,
            weight: None,
            rpm: None,
            tpm: None,
            verify: false,
        };
        self.vault.create_credential(&actor(), self.org.id, new).await.unwrap()
    }

    /// A workload token of the env's team (or `team`), optionally restricted to workflows.
    pub async fn token(&self, workflows: &[&str]) -> String {
        self.token_for(self.team.name.as_str(), workflows).await
    }

    pub async fn token_for(&self, team: &str, workflows: &[&str]) -> String {
        let request = NewWorkloadToken {
            team: team.to_owned(),
            workflows: workflows.iter().map(|w| (*w).to_owned()).collect(),
            ..Default::default()
        };
        let issued = self.vault.issue_workload_token(&actor(), self.org.id, request).await.unwrap();
        issued.text.expose().to_owned()
    }

    /// Another org of `tier` with a team `research`.
    pub async fn other_org(&self, tier: Tier) -> (Org, Team) {
        let org = self.vault.create_org(&actor(), &format!("org-{}", ulid::Ulid::new()), tier).await.unwrap();
        let team = self.vault.create_team(&actor(), org.id, "research").await.unwrap();
        (org, team)
    }

    /// A workload token of `team` in `org`.
    pub async fn token_in(&self, org: &Org, team: &str) -> String {
        let request = NewWorkloadToken { team: team.to_owned(), workflows: Vec::new(), ..Default::default() };
        let issued = self.vault.issue_workload_token(&actor(), org.id, request).await.unwrap();
        issued.text.expose().to_owned()
    }

    /// A credential of `org` (or the platform pool when `None`) holding the key the mock
    /// accepts for `provider`.
    pub async fn credential_of(
        &self,
        org: Option<&Org>,
        name: &str,
        provider: ProviderId,
        scope: ScopeInput,
        expires_at: Option<Timestamp>,
    ) -> Credential {
        let base_url = (provider == ProviderId::AzureOpenai).then(|| self.mock.base_url());
        let new = NewCredential {
            name: name.to_owned(),
            provider,
            secret: ProviderSecret::new(self.keys.for_provider(provider).to_owned()).unwrap(),
            scope,
            base_url,
            expires_at,
            priority: None,
            weight: None,
            rpm: None,
            tpm: None,
            verify: false,
        };
        let owner = match org {
            Some(org) => Owner::Org(org.id),
            None => Owner::Platform,
        };
        self.vault.create_credential(&actor(), owner, new).await.unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.proxy)
    }

    /// Audit rows of the env's org for `call_id`.
    pub async fn audit_rows(&self, call_id: &str) -> Vec<ResolutionAudit> {
        let filter = AuditFilter { call_id: Some(call_id.to_owned()), ..AuditFilter::default() };
        let mut rows = self.t.store().list_audit(Some(&self.org.id), &filter).await.unwrap();
        rows.extend(self.t.store().list_audit(None, &filter).await.unwrap());
        rows
    }

    pub fn now() -> Timestamp {
        Timestamp::now()
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        self.mock.shutdown().await;
    }
}

/// An OpenAI chat body.
pub fn openai_chat(model: &str, stream: bool) -> serde_json::Value {
    serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": "hello there"}],
        "stream": stream,
        "stream_options": if stream { serde_json::json!({"include_usage": true}) } else { serde_json::Value::Null },
    })
}

/// An Anthropic messages body.
pub fn anthropic_messages(model: &str, stream: bool) -> serde_json::Value {
    serde_json::json!({
        "model": model,
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "hello there"}],
        "stream": stream,
    })
}
