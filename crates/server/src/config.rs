//! Settings: TOML file, environment, flags — in rising priority.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use byok_domain::{
    Cidr, Currency, FamilyPattern, KmsName, ModelFamilyRegistry, PriceBook, ProviderId, ProviderPrice, RateCard, Tier,
};
use byok_kms_aws::AwsKmsConfig;
use byok_kms_pkcs11::Pkcs11Config;
use byok_proxy::{ConnectionLimits, ProxyConfig, UpstreamBase};
use byok_vault::{HostPattern, RetentionPolicy};
use serde::Deserialize;

/// The default data directory.
pub const DEFAULT_DATA_DIR: &str = "./byok-data";
/// The default admin listener.
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:4748";
/// The default data-plane listener.
pub const DEFAULT_PROXY_ADDR: &str = "127.0.0.1:4747";

/// Flags of `byok serve`; each can also come from the environment (shown) or the
/// config file. Flags win over the environment, which wins over the file.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, env = "BYOK_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Database URL: `postgres://…` for PostgreSQL (several sidecars sharing one store);
    /// default: SQLite in the data directory.
    #[arg(long, env = "BYOK_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
    /// Admin API listener [default: 127.0.0.1:4748].
    #[arg(long, env = "BYOK_ADMIN_ADDR", value_name = "ADDR")]
    pub admin_addr: Option<SocketAddr>,
    /// Data-plane (sidecar) listener that applications' SDKs talk to [default: 127.0.0.1:4747].
    #[arg(long, env = "BYOK_PROXY_ADDR", value_name = "ADDR")]
    pub proxy_addr: Option<SocketAddr>,
    /// PEM certificate chain (leaf first) for the data-plane listener; with
    /// --proxy-tls-key-file the listener speaks TLS only [file: `[proxy] tls_cert_file`].
    #[arg(long, env = "BYOK_PROXY_TLS_CERT_FILE", value_name = "FILE")]
    pub proxy_tls_cert_file: Option<PathBuf>,
    /// PEM private key of --proxy-tls-cert-file's certificate [file: `[proxy] tls_key_file`].
    #[arg(long, env = "BYOK_PROXY_TLS_KEY_FILE", value_name = "FILE")]
    pub proxy_tls_key_file: Option<PathBuf>,
}

/// The data-plane listener's certificate chain and private key (PEM files), read at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyTlsFiles {
    /// `[proxy] tls_cert_file`: the certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// `[proxy] tls_key_file`: the leaf's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// The config file's shape. Unknown keys are refused so a typo cannot silently fall
/// back to a default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    admin_addr: Option<SocketAddr>,
    proxy_addr: Option<SocketAddr>,
    #[serde(default)]
    kms: KmsSection,
    #[serde(default)]
    proxy: ProxySection,
    /// provider id → upstream override, credential hosts, precedence.
    #[serde(default)]
    upstreams: BTreeMap<String, UpstreamSection>,
    #[serde(default)]
    credentials: CredentialsSection,
    #[serde(default)]
    audit: AuditSection,
    /// family name → model-id patterns; adds families or replaces seed ones.
    #[serde(default)]
    model_families: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    billing: BillingSection,
    #[serde(default)]
    limits: LimitsSection,
}

/// `[limits]`: where rate limits are counted. Without `redis_url` each node counts its own
/// calls (one node, or a limit per node); with it the fleet shares one count per limit.
/// `BYOK_LIMITS_REDIS_URL` wins over the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsSection {
    redis_url: Option<String>,
    /// Prefix of every key byok writes in Redis (default `byok:limits:`).
    key_prefix: Option<String>,
    /// Milliseconds a call waits for Redis before the node enforces its share locally.
    redis_timeout_ms: Option<u64>,
}

/// `[billing]`: the currency, a rate card per tier, provider prices by model family.
/// Amounts are decimal strings (TOML floats are refused: they may be inexact).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BillingSection {
    currency: Option<Currency>,
    /// tier → card.
    #[serde(default)]
    rate_cards: BTreeMap<String, RateCard>,
    /// model family → provider price per million tokens.
    #[serde(default)]
    provider_prices: BTreeMap<String, ProviderPrice>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct KmsSection {
    max_concurrency: Option<usize>,
    /// Seconds a KMS call may take before it fails as unavailable.
    timeout_secs: Option<u64>,
    /// `local` (default), `pkcs11` or `aws-kms`.
    backend: Option<String>,
    pkcs11: Option<Pkcs11Config>,
    /// AWS KMS (`backend = "aws-kms"`): region, optional endpoint; credentials come from
    /// the AWS chain, never from this file.
    aws: Option<AwsKmsConfig>,
    /// name → a customer-managed KMS (a katman-c org's own PKCS#11 token or AWS KMS key).
    #[serde(default)]
    customer: BTreeMap<String, CustomerKmsSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CustomerKmsSection {
    /// `pkcs11` (the customer's own token) or `aws-kms` (a key in the customer's AWS
    /// account).
    backend: String,
    /// At most this many calls at once to this KMS (default: `kms.max_concurrency`).
    max_concurrency: Option<usize>,
    /// The orgs (names or ids) this KMS may hold KEKs for; default: any katman-c org.
    orgs: Option<Vec<String>>,
    /// The token, as in `[kms.pkcs11]` (`pkcs11`).
    pkcs11: Option<Pkcs11Config>,
    /// The customer's key, `arn:aws:kms:<region>:<account>:key/<key id>` (`aws-kms`).
    key_arn: Option<String>,
    /// Its region, if not the key's (`aws-kms`).
    region: Option<String>,
    /// Another AWS KMS endpoint than the region's (`aws-kms`).
    endpoint_url: Option<String>,
}

/// A customer-managed KMS from `[kms.customer.<name>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerKms {
    /// Its name (what `byok kek move --kms` names).
    pub name: KmsName,
    /// Its token or key.
    pub backend: CustomerKmsBackend,
    /// At most this many calls at once.
    pub max_concurrency: usize,
    /// The orgs it is reserved for (names or ids), if any.
    pub orgs: Option<Vec<String>>,
}

/// Where a customer-managed KMS keeps its customer's KEKs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CustomerKmsBackend {
    /// The customer's PKCS#11 token.
    Pkcs11(Pkcs11Config),
    /// A key in the customer's AWS account (`key_arn`).
    AwsKms(AwsKmsConfig),
}

/// Which KMS holds the orgs' KEKs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KmsChoice {
    /// The keyring file in the data directory.
    Local,
    /// A PKCS#11 token (an HSM; SoftHSM2 in tests).
    Pkcs11(Pkcs11Config),
    /// AWS KMS: a KMS key per org and KEK version.
    AwsKms(AwsKmsConfig),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProxySection {
    max_request_body_bytes: Option<usize>,
    connect_timeout_secs: Option<u64>,
    response_timeout_secs: Option<u64>,
    dek_cache_ttl_secs: Option<u64>,
    dek_cache_max_uses: Option<u64>,
    /// Peers (CIDRs) whose `X-Forwarded-For` is believed.
    #[serde(default)]
    trusted_proxies: Vec<Cidr>,
    /// How often an org's month spend is read again from the store (budgets).
    spend_refresh_secs: Option<u64>,
    /// Let any upstream — a credential's `base_url` included — be dialled on a loopback,
    /// private, link-local, unique-local, CGNAT or cloud-metadata address (default
    /// `false`: only the origins of `[upstreams.<id>] base_url` may be).
    allow_private_upstreams: Option<bool>,
    /// Seconds a client has to send a whole request head (both listeners).
    header_read_timeout_secs: Option<u64>,
    /// Seconds a kept-alive connection may wait for its next request (both listeners).
    idle_timeout_secs: Option<u64>,
    /// Most connections each listener serves at once; more wait in the listen backlog.
    max_connections: Option<usize>,
    /// Longest request target (414 `uri_too_long` beyond).
    max_uri_bytes: Option<usize>,
    /// Largest request header block (431 `headers_too_large` beyond).
    max_header_bytes: Option<usize>,
    /// Further attempts with other credentials after a throttled, rejected or failed
    /// upstream answer (default 2; 0 turns failover off).
    failover_attempts: Option<u32>,
    /// PEM certificate chain of the data-plane listener (with `tls_key_file`: TLS only).
    tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`'s certificate.
    tls_key_file: Option<PathBuf>,
}

/// `[upstreams.<id>]`: the operator's say over one provider's upstream (SPEC §3).
///
/// * `base_url`: where the provider's calls go instead of the registry's default (also
///   `BYOK_UPSTREAM_<ID>`, which wins over the file). The operator names it, so it may be
///   plain http and on a private or loopback address: its origin is dialled without the
///   address check.
/// * `override_credentials` (default `false`): whether `base_url` also wins over a
///   credential's admin-set `base_url`. By default a credential's `base_url` wins — it
///   may name the org's own resource (an Azure OpenAI endpoint), and it is held at write
///   time to the provider's hosts; set it to send every call of the provider to
///   `base_url` whatever the credentials say (a gateway every call must pass).
/// * `allowed_hosts`: hosts a credential's `base_url` may name besides the provider's
///   own (`*.openai.azure.com`, `api.openai.com`, …): exact names, `*.` followed by a
///   domain of at least two labels (`*` stands for exactly one label), or IP addresses —
///   the only way a credential's `base_url` can be an IP address. A credential's
///   upstream that resolves to a non-public address is still refused when dialled unless
///   its origin is `base_url`'s or `[proxy] allow_private_upstreams` is set.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamSection {
    base_url: Option<String>,
    #[serde(default)]
    override_credentials: bool,
    #[serde(default)]
    allowed_hosts: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditSection {
    #[serde(rename = "retention_days_katman_a")]
    katman_a: Option<u32>,
    #[serde(rename = "retention_days_katman_b")]
    katman_b: Option<u32>,
    #[serde(rename = "retention_days_katman_c")]
    katman_c: Option<u32>,
    purge_interval_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsSection {
    allow_plain_http_base_url: Option<bool>,
}

/// Everything `byok serve` needs, resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The data directory (SQLite database, keyring, operator token).
    pub data_dir: PathBuf,
    /// PostgreSQL URL, or `None` for SQLite in the data directory.
    pub database_url: Option<String>,
    /// Admin API listener.
    pub admin_addr: SocketAddr,
    /// Data-plane listener.
    pub proxy_addr: SocketAddr,
    /// TLS on the data-plane listener (`None`: plain http).
    pub proxy_tls: Option<ProxyTlsFiles>,
    /// Data-plane tuning and upstream overrides.
    pub proxy: ProxyConfig,
    /// At most this many KMS calls at once.
    pub kms_max_concurrency: usize,
    /// A KMS call that takes longer fails (the call fails closed).
    pub kms_timeout: Duration,
    /// The KMS backend.
    pub kms: KmsChoice,
    /// Customer-managed KMSs (katman-c orgs' own tokens).
    pub customer_kms: Vec<CustomerKms>,
    /// Accept `http://` credential base URLs.
    pub allow_plain_http_base_url: bool,
    /// Hosts credential base URLs may name besides the provider's own
    /// (`[upstreams.<id>] allowed_hosts`).
    pub allowed_hosts: HashMap<ProviderId, Vec<HostPattern>>,
    /// Operator model families (added to or replacing the seed).
    pub model_families: BTreeMap<String, Vec<String>>,
    /// Audit retention by tier.
    pub retention: RetentionPolicy,
    /// How often expired audit entries are purged.
    pub purge_interval: Duration,
    /// Rate cards and provider prices.
    pub prices: PriceBook,
}

impl Settings {
    /// Defaults for `data_dir`, listening on an ephemeral port (for tests).
    pub fn for_tests(data_dir: &Path) -> Self {
        Self {
            data_dir: data_dir.to_owned(),
            database_url: None,
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            proxy_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            proxy_tls: None,
            proxy: ProxyConfig::default(),
            kms_max_concurrency: 8,
            kms_timeout: byok_kms::DEFAULT_KMS_TIMEOUT,
            kms: KmsChoice::Local,
            customer_kms: Vec::new(),
            allow_plain_http_base_url: true,
            allowed_hosts: HashMap::new(),
            model_families: BTreeMap::new(),
            retention: RetentionPolicy::default(),
            purge_interval: Duration::from_secs(3600),
            prices: PriceBook::default(),
        }
    }

    /// Resolve from flags/environment (`data_dir`, `args`) over the config file.
    pub fn load(data_dir: Option<PathBuf>, args: &ServeArgs) -> anyhow::Result<Self> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the config file {}", path.display()))?;
                refuse_credentials(&text).with_context(|| format!("config file {} is not valid", path.display()))?;
                toml::from_str::<ConfigFile>(&text)
                    .with_context(|| format!("config file {} is not valid", path.display()))?
            }
            None => ConfigFile::default(),
        };
        let default_admin: SocketAddr = DEFAULT_ADMIN_ADDR.parse().context("built-in admin address")?;
        let defaults_retention = RetentionPolicy::default();
        let default_proxy: SocketAddr = DEFAULT_PROXY_ADDR.parse().context("built-in proxy address")?;
        let proxy = proxy_config(&file)?;
        let proxy_tls = proxy_tls(
            args.proxy_tls_cert_file.clone().or_else(|| file.proxy.tls_cert_file.clone()),
            args.proxy_tls_key_file.clone().or_else(|| file.proxy.tls_key_file.clone()),
        )?;
        let allowed_hosts = allowed_hosts(&file)?;
        let kms_max_concurrency = file.kms.max_concurrency.unwrap_or(8);
        let kms = match (file.kms.backend.as_deref().unwrap_or("local"), &file.kms.pkcs11) {
            ("local", _) => KmsChoice::Local,
            ("pkcs11", Some(config)) => KmsChoice::Pkcs11(config.clone()),
            ("pkcs11", None) => anyhow::bail!(
                "kms.backend = \"pkcs11\" needs a [kms.pkcs11] section (module, token_label, pin_file or pin_env)"
            ),
            ("aws-kms", _) => KmsChoice::AwsKms(aws_kms_section(file.kms.aws.as_ref())?),
            (other, _) => {
                anyhow::bail!("kms.backend: unknown backend '{other}'; use \"local\", \"pkcs11\" or \"aws-kms\"")
            }
        };
        if kms_max_concurrency == 0 {
            anyhow::bail!("kms.max_concurrency must be at least 1");
        }
        let kms_timeout = match file.kms.timeout_secs {
            Some(0) => anyhow::bail!("kms.timeout_secs must be at least 1"),
            Some(secs) => Duration::from_secs(secs),
            None => byok_kms::DEFAULT_KMS_TIMEOUT,
        };
        let mut customer_kms = Vec::new();
        for (name, section) in &file.kms.customer {
            let kms_name = KmsName::parse(name).map_err(|e| anyhow::anyhow!("[kms.customer.{name}]: {e}"))?;
            if kms_name.is_default() {
                anyhow::bail!(
                    "[kms.customer.default]: 'default' names the installation's own KMS ([kms]); choose another name"
                );
            }
            let max_concurrency = section.max_concurrency.unwrap_or(kms_max_concurrency);
            if max_concurrency == 0 {
                anyhow::bail!("[kms.customer.{name}] max_concurrency must be at least 1");
            }
            let backend = customer_backend(name, section)?;
            if section.orgs.as_ref().is_some_and(Vec::is_empty) {
                anyhow::bail!("[kms.customer.{name}] orgs is empty: name the orgs it serves, or leave it out");
            }
            customer_kms.push(CustomerKms { name: kms_name, backend, max_concurrency, orgs: section.orgs.clone() });
        }
        let mut settings = Self {
            data_dir: data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            database_url: args.database_url.clone().or(file.database_url),
            admin_addr: args.admin_addr.or(file.admin_addr).unwrap_or(default_admin),
            proxy_addr: args.proxy_addr.or(file.proxy_addr).unwrap_or(default_proxy),
            proxy_tls,
            proxy,
            kms_max_concurrency,
            kms_timeout,
            kms,
            customer_kms,
            allow_plain_http_base_url: file.credentials.allow_plain_http_base_url.unwrap_or(false),
            allowed_hosts,
            model_families: file.model_families,
            retention: RetentionPolicy {
                katman_a_days: file.audit.katman_a.unwrap_or(defaults_retention.katman_a_days),
                katman_b_days: file.audit.katman_b.unwrap_or(defaults_retention.katman_b_days),
                katman_c_days: file.audit.katman_c.unwrap_or(defaults_retention.katman_c_days),
            },
            purge_interval: Duration::from_secs(file.audit.purge_interval_secs.unwrap_or(3600).max(1)),
            prices: PriceBook::default(),
        };
        settings.prices = price_book(&file.billing, &settings.model_families())?;
        Ok(settings)
    }

    /// The seed families with the operator's added or replaced.
    pub fn model_families(&self) -> ModelFamilyRegistry {
        let mut registry = ModelFamilyRegistry::seeded();
        for (family, patterns) in &self.model_families {
            registry.set_family(family, patterns.iter().map(|p| FamilyPattern::new(p.as_str())).collect());
        }
        registry
    }
}

/// `[proxy] tls_cert_file` and `tls_key_file` (or their flags): both, or neither.
fn proxy_tls(cert_file: Option<PathBuf>, key_file: Option<PathBuf>) -> anyhow::Result<Option<ProxyTlsFiles>> {
    match (cert_file, key_file) {
        (Some(cert_file), Some(key_file)) => Ok(Some(ProxyTlsFiles { cert_file, key_file })),
        (None, None) => Ok(None),
        (Some(_), None) => anyhow::bail!(
            "[proxy] tls_cert_file (--proxy-tls-cert-file, BYOK_PROXY_TLS_CERT_FILE) is set but tls_key_file \
             (--proxy-tls-key-file, BYOK_PROXY_TLS_KEY_FILE) is not: the data-plane listener needs both for TLS"
        ),
        (None, Some(_)) => anyhow::bail!(
            "[proxy] tls_key_file (--proxy-tls-key-file, BYOK_PROXY_TLS_KEY_FILE) is set but tls_cert_file \
             (--proxy-tls-cert-file, BYOK_PROXY_TLS_CERT_FILE) is not: the data-plane listener needs both for TLS"
        ),
    }
}

impl ProxyTlsFiles {
    /// Read and check both files: an error names the setting and the file at fault.
    pub fn load(&self) -> anyhow::Result<byok_proxy::ListenerTls> {
        byok_proxy::ListenerTls::from_pem_files(&self.cert_file, &self.key_file).map_err(|err| {
            let setting = if err.is_certificate_file() {
                "[proxy] tls_cert_file (--proxy-tls-cert-file, BYOK_PROXY_TLS_CERT_FILE)"
            } else {
                "[proxy] tls_key_file (--proxy-tls-key-file, BYOK_PROXY_TLS_KEY_FILE)"
            };
            anyhow::Error::new(err).context(format!("{setting}: the data-plane listener's TLS cannot be set up"))
        })
    }
}

/// `[kms.aws]`, for `backend = "aws-kms"`: byok's own keys, so no `key_arn`.
fn aws_kms_section(section: Option<&AwsKmsConfig>) -> anyhow::Result<AwsKmsConfig> {
    let config = section.cloned().ok_or_else(|| {
        anyhow::anyhow!(
            "kms.backend = \"aws-kms\" needs a [kms.aws] section (region, optionally endpoint_url; credentials come \
             from the AWS chain, never from this file)"
        )
    })?;
    if config.key_arn.is_some() {
        anyhow::bail!(
            "[kms.aws] key_arn: the installation's own KMS creates a key per org and KEK version; a customer's own \
             key goes in a [kms.customer.<name>] section with backend = \"aws-kms\" (remove key_arn here)"
        );
    }
    config.validate().map_err(|e| anyhow::anyhow!("[kms.aws]: {e}"))?;
    Ok(config)
}

/// `[kms.customer.<name>]`: a PKCS#11 token (`[kms.customer.<name>.pkcs11]`) or a key in
/// the customer's AWS account (`key_arn`, optional `region`, `endpoint_url`).
fn customer_backend(name: &str, section: &CustomerKmsSection) -> anyhow::Result<CustomerKmsBackend> {
    let aws_settings = section.key_arn.is_some() || section.region.is_some() || section.endpoint_url.is_some();
    match section.backend.as_str() {
        "pkcs11" => {
            if aws_settings {
                anyhow::bail!(
                    "[kms.customer.{name}] key_arn, region and endpoint_url are settings of backend = \"aws-kms\"; \
                     a pkcs11 customer KMS takes a [kms.customer.{name}.pkcs11] section"
                );
            }
            let pkcs11 = section.pkcs11.clone().ok_or_else(|| {
                anyhow::anyhow!(
                    "[kms.customer.{name}] needs a [kms.customer.{name}.pkcs11] section (module, token_label, pin_file or pin_env)"
                )
            })?;
            Ok(CustomerKmsBackend::Pkcs11(pkcs11))
        }
        "aws-kms" => {
            if section.pkcs11.is_some() {
                anyhow::bail!(
                    "[kms.customer.{name}.pkcs11] is for backend = \"pkcs11\"; an aws-kms customer KMS takes key_arn \
                     (and optionally region, endpoint_url) in [kms.customer.{name}]"
                );
            }
            let key_arn = section.key_arn.clone().ok_or_else(|| {
                anyhow::anyhow!(
                    "[kms.customer.{name}] backend = \"aws-kms\" needs key_arn = \"arn:aws:kms:<region>:<account>:key/<key id>\": \
                     the customer's key, granted to this installation's AWS role"
                )
            })?;
            let config = AwsKmsConfig {
                region: section.region.clone(),
                endpoint_url: section.endpoint_url.clone(),
                ..AwsKmsConfig::for_customer_key(key_arn)
            };
            config.validate().map_err(|e| anyhow::anyhow!("[kms.customer.{name}]: {e}"))?;
            Ok(CustomerKmsBackend::AwsKms(config))
        }
        other => anyhow::bail!(
            "[kms.customer.{name}] backend = \"{other}\": a customer-managed KMS is a PKCS#11 token or a key in the \
             customer's AWS account; use \"pkcs11\" or \"aws-kms\""
        ),
    }
}

/// AWS credentials never belong in the configuration file. Looked for in the raw
/// `[kms]`, `[kms.aws]` and `[kms.customer.<name>]` tables, before the typed parse, whose
/// error would quote the offending line — the secret included.
fn refuse_credentials(text: &str) -> anyhow::Result<()> {
    // A file that is not TOML is reported by the typed parse.
    let Ok(file) = toml::from_str::<toml::Table>(text) else { return Ok(()) };
    let Some(kms) = file.get("kms").and_then(toml::Value::as_table) else { return Ok(()) };
    let mut sections = vec![("[kms]".to_owned(), kms)];
    if let Some(aws) = kms.get("aws").and_then(toml::Value::as_table) {
        sections.push(("[kms.aws]".to_owned(), aws));
    }
    for (name, section) in kms.get("customer").and_then(toml::Value::as_table).into_iter().flatten() {
        if let Some(section) = section.as_table() {
            sections.push((format!("[kms.customer.{name}]"), section));
        }
    }
    for (section, table) in sections {
        if let Some(setting) = table.keys().find(|key| byok_kms_aws::is_credential_setting(key)) {
            anyhow::bail!(
                "{section} {setting}: credentials do not belong in the configuration file; {}. Remove {setting} \
                 (and rotate those credentials: they have been stored in a file)",
                byok_kms_aws::CREDENTIALS_COME_FROM
            );
        }
    }
    Ok(())
}

/// `[billing]`: the defaults, with the operator's currency, cards and provider prices.
fn price_book(section: &BillingSection, families: &ModelFamilyRegistry) -> anyhow::Result<PriceBook> {
    let mut book = PriceBook::default();
    if let Some(currency) = &section.currency {
        book.currency = currency.clone();
    }
    for (tier, card) in &section.rate_cards {
        let tier: Tier = tier.parse().map_err(|e| anyhow::anyhow!("[billing.rate_cards.{tier}]: {e}"))?;
        book.cards.insert(tier, *card);
    }
    for (family, price) in &section.provider_prices {
        if !families.contains(family) {
            let known: Vec<&str> = families.family_names().collect();
            anyhow::bail!(
                "[billing.provider_prices.{family}]: unknown model family '{family}'; known families: {} \
                 (add it under [model_families] first)",
                known.join(", ")
            );
        }
        book.provider_prices.insert(family.clone(), *price);
    }
    Ok(book)
}

/// `[upstreams.<id>] allowed_hosts`, parsed.
fn allowed_hosts(file: &ConfigFile) -> anyhow::Result<HashMap<ProviderId, Vec<HostPattern>>> {
    let mut hosts = HashMap::new();
    for (id, section) in &file.upstreams {
        let provider: ProviderId = id.parse().map_err(|e| anyhow::anyhow!("[upstreams.{id}]: {e}"))?;
        let patterns = section
            .allowed_hosts
            .iter()
            .map(|text| HostPattern::parse(text))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("[upstreams.{id}] allowed_hosts: {e}"))?;
        if !patterns.is_empty() {
            hosts.insert(provider, patterns);
        }
    }
    Ok(hosts)
}

/// `[upstreams.<id>] base_url` from the file, overridden by `BYOK_UPSTREAM_<ID>` (id
/// upper-cased, `-` → `_`), with the file's `override_credentials`; `[proxy]` tuning.
fn proxy_config(file: &ConfigFile) -> anyhow::Result<ProxyConfig> {
    let mut upstreams = HashMap::new();
    let mut overriding = Vec::new();
    for (id, section) in &file.upstreams {
        let provider: ProviderId = id.parse().map_err(|e| anyhow::anyhow!("[upstreams.{id}]: {e}"))?;
        if section.override_credentials {
            overriding.push(provider);
        }
        if let Some(base_url) = &section.base_url {
            let base = UpstreamBase::parse(base_url).map_err(|e| anyhow::anyhow!("[upstreams.{id}]: {e}"))?;
            upstreams.insert(provider, base);
        }
    }
    for provider in ProviderId::ALL {
        let var = format!("BYOK_UPSTREAM_{}", provider.as_str().to_ascii_uppercase().replace('-', "_"));
        if let Ok(value) = std::env::var(&var) {
            if !value.trim().is_empty() {
                let base = UpstreamBase::parse(value.trim()).map_err(|e| anyhow::anyhow!("{var}: {e}"))?;
                upstreams.insert(provider, base);
            }
        }
    }
    for provider in overriding {
        let Some(base) = upstreams.remove(&provider) else {
            anyhow::bail!(
                "[upstreams.{provider}] override_credentials = true needs a base_url (in the section or \
                 BYOK_UPSTREAM_{})",
                provider.as_str().to_ascii_uppercase().replace('-', "_")
            );
        };
        upstreams.insert(provider, base.with_override_credentials(true));
    }
    let defaults = ProxyConfig::default();
    let section = &file.proxy;
    let limits = defaults.connections;
    let connections = ConnectionLimits {
        header_read_timeout: section.header_read_timeout_secs.map_or(limits.header_read_timeout, Duration::from_secs),
        idle_timeout: section.idle_timeout_secs.map_or(limits.idle_timeout, Duration::from_secs),
        max_connections: section.max_connections.unwrap_or(limits.max_connections),
        max_uri_bytes: section.max_uri_bytes.unwrap_or(limits.max_uri_bytes),
        max_header_bytes: section.max_header_bytes.unwrap_or(limits.max_header_bytes),
    };
    connections.check()?;
    let failover_attempts = section.failover_attempts.unwrap_or(defaults.failover_attempts);
    if failover_attempts > MAX_FAILOVER_ATTEMPTS {
        anyhow::bail!("proxy.failover_attempts must be between 0 and {MAX_FAILOVER_ATTEMPTS}, not {failover_attempts}");
    }
    let mut limits_config = byok_proxy::limits::LimiterConfig {
        redis_url: std::env::var("BYOK_LIMITS_REDIS_URL")
            .ok()
            .filter(|url| !url.is_empty())
            .or_else(|| file.limits.redis_url.clone()),
        ..Default::default()
    };
    if let Some(prefix) = &file.limits.key_prefix {
        limits_config.key_prefix = prefix.clone();
    }
    match file.limits.redis_timeout_ms {
        Some(0) => anyhow::bail!("limits.redis_timeout_ms must be at least 1"),
        Some(ms) => limits_config.op_timeout = Duration::from_millis(ms),
        None => {}
    }
    Ok(ProxyConfig {
        upstreams,
        max_request_body: section.max_request_body_bytes.unwrap_or(defaults.max_request_body),
        connect_timeout: section.connect_timeout_secs.map_or(defaults.connect_timeout, Duration::from_secs),
        response_timeout: section.response_timeout_secs.map_or(defaults.response_timeout, Duration::from_secs),
        dek_cache_ttl: section.dek_cache_ttl_secs.map_or(defaults.dek_cache_ttl, Duration::from_secs),
        dek_cache_max_uses: section.dek_cache_max_uses.unwrap_or(defaults.dek_cache_max_uses),
        trusted_proxies: section.trusted_proxies.clone(),
        allow_private_upstreams: section.allow_private_upstreams.unwrap_or(defaults.allow_private_upstreams),
        spend_refresh: match section.spend_refresh_secs {
            Some(0) => anyhow::bail!("proxy.spend_refresh_secs must be at least 1"),
            Some(secs) => Duration::from_secs(secs),
            None => defaults.spend_refresh,
        },
        connections,
        failover_attempts,
        limits: limits_config,
        ..defaults
    })
}

/// The most further attempts a call may make (each is a request to the provider).
const MAX_FAILOVER_ATTEMPTS: u32 = 10;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_file_which_wins_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("byok.toml");
        std::fs::write(
            &path,
            "data_dir = \"/from/file\"\nadmin_addr = \"127.0.0.1:5000\"\n[model_families]\nllama = [\"llama-*\"]\n",
        )
        .unwrap();
        let args = ServeArgs { config: Some(path.clone()), ..ServeArgs::default() };
        let settings = Settings::load(None, &args).unwrap();
        assert_eq!(settings.data_dir, PathBuf::from("/from/file"));
        assert_eq!(settings.admin_addr.port(), 5000);
        assert_eq!(settings.model_families().family_of("llama-3"), Some("llama"));

        let args = ServeArgs {
            config: Some(path),
            admin_addr: Some("127.0.0.1:6000".parse().unwrap()),
            ..ServeArgs::default()
        };
        let settings = Settings::load(Some(PathBuf::from("/from/flag")), &args).unwrap();
        assert_eq!(settings.data_dir, PathBuf::from("/from/flag"));
        assert_eq!(settings.admin_addr.port(), 6000);

        let settings = Settings::load(None, &ServeArgs::default()).unwrap();
        assert_eq!(settings.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(settings.admin_addr.to_string(), DEFAULT_ADMIN_ADDR);
    }

    #[test]
    fn upstream_overrides_from_file_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("byok.toml");
        std::fs::write(&path, "[upstreams.azure-openai]\nbase_url = \"http://127.0.0.1:9000\"\n").unwrap();
        let args = ServeArgs { config: Some(path.clone()), ..ServeArgs::default() };
        let settings = Settings::load(None, &args).unwrap();
        assert_eq!(settings.proxy.upstreams[&ProviderId::AzureOpenai].as_str(), "http://127.0.0.1:9000");
        std::fs::write(&path, "[upstreams.openia]\nbase_url = \"http://127.0.0.1:9000\"\n").unwrap();
        let err = format!("{:#}", Settings::load(None, &args).unwrap_err());
        assert!(err.contains("openia"), "{err}");
        std::fs::write(&path, "[upstreams.openai]\nbase_url = \"http://user:pw@127.0.0.1:9000\"\n").unwrap();
        let err = format!("{:#}", Settings::load(None, &args).unwrap_err());
        assert!(err.contains("user info"), "{err}");
    }

    #[test]
    fn upstream_sections_set_hosts_precedence_and_private_upstreams() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("byok.toml");
        let args = ServeArgs { config: Some(path.clone()), ..ServeArgs::default() };
        // Nothing configured: no extra hosts, credentials win, private upstreams refused.
        let settings = Settings::load(None, &ServeArgs::default()).unwrap();
        assert!(settings.allowed_hosts.is_empty());
        assert!(!settings.proxy.allow_private_upstreams);
        std::fs::write(
            &path,
            "[proxy]\nallow_private_upstreams = true\n\
             [upstreams.openai]\nallowed_hosts = [\"llm.internal.example\", \"*.corp.example\", \"10.0.0.7\"]\n\
             [upstreams.anthropic]\nbase_url = \"http://127.0.0.1:9000\"\noverride_credentials = true\n\
             [upstreams.azure-openai]\nbase_url = \"http://127.0.0.1:9001\"\n",
        )
        .unwrap();
        let settings = Settings::load(None, &args).unwrap();
        assert!(settings.proxy.allow_private_upstreams);
        let shown: Vec<String> = settings.allowed_hosts[&ProviderId::Openai].iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["llm.internal.example", "*.corp.example", "10.0.0.7"]);
        assert!(!settings.proxy.upstreams.contains_key(&ProviderId::Openai));
        let anthropic = &settings.proxy.upstreams[&ProviderId::Anthropic];
        assert_eq!(anthropic.as_str(), "http://127.0.0.1:9000");
        assert!(anthropic.overrides_credentials());
        assert!(!settings.proxy.upstreams[&ProviderId::AzureOpenai].overrides_credentials());
        assert_eq!(settings.allowed_hosts.len(), 1);

        for (text, needle) in [
            ("[upstreams.openai]\nallowed_hosts = [\"llm*.corp.example\"]\n", "allowed_hosts: 'llm*.corp.example'"),
            ("[upstreams.openai]\nallowed_hosts = [\"llm.*.example\"]\n", "whole first label"),
            ("[upstreams.openai]\nallowed_hosts = [\"*.example\"]\n", "too broad"),
            ("[upstreams.openai]\nallowed_hosts = [\"0x7f.1\"]\n", "non-canonical"),
            ("[upstreams.openai]\nallowed_hosts = [\"2130706433\"]\n", "non-canonical"),
            ("[upstreams.openai]\nallowed_hosts = [\"https://llm.example\"]\n", "[upstreams.openai] allowed_hosts"),
            ("[upstreams.openai]\nallowed_hosts = [\"\"]\n", "must not be empty"),
            ("[upstreams.openai]\nallowed_hosts = \"llm.example\"\n", "invalid type"),
            ("[upstreams.openia]\nallowed_hosts = [\"llm.example\"]\n", "openia"),
            ("[upstreams.groq]\noverride_credentials = true\n", "override_credentials = true needs a base_url"),
            ("[upstreams.groq]\nbase_url = \"http://x\"\noverride_credential = true\n", "override_credential"),
            ("[proxy]\nallow_private_upstreams = \"yes\"\n", "invalid type"),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = format!("{:#}", Settings::load(None, &args).unwrap_err());
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }

    #[test]
    fn customer_kms_sections_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("byok.toml");
        let args = ServeArgs { config: Some(path.clone()), ..ServeArgs::default() };
        let token = "module = \"/lib/p11.so\"\ntoken_label = \"acme\"\npin_env = \"ACME_PIN\"\n";
        let section = |name: &str, backend: &str, token: &str| {
            format!("[kms.customer.{name}]\nbackend = \"{backend}\"\n[kms.customer.{name}.pkcs11]\n{token}")
        };
        std::fs::write(&path, section("acme-hsm", "pkcs11", token)).unwrap();
        let settings = Settings::load(None, &args).unwrap();
        assert_eq!(settings.customer_kms.len(), 1);
        assert_eq!(settings.customer_kms[0].name.as_str(), "acme-hsm");
        assert!(
            matches!(&settings.customer_kms[0].backend, CustomerKmsBackend::Pkcs11(token) if token.token_label == "acme")
        );
        assert_eq!(settings.customer_kms[0].max_concurrency, 8);
        for (text, needle) in [
            (section("default", "pkcs11", token), "'default' names"),
            (section("acme", "local", token), "use \"pkcs11\""),
            (section("\"has space\"", "pkcs11", token), "has space"),
            (section("acme", "pkcs11", "module = \"/lib/p11.so\"\n"), "token_label"),
            (section("acme", "pkcs11", &format!("{token}tokn = 1\n")), "tokn"),
            ("[kms.customer.acme]\nbackend = \"pkcs11\"\n".to_owned(), "[kms.customer.acme.pkcs11]"),
            (section("acme", "pkcs11", token).replace("backend", "orgs = []\nbackend"), "orgs is empty"),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = format!("{:#}", Settings::load(None, &args).unwrap_err());
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }

    #[test]
    fn aws_kms_sections_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("byok.toml");
        let args = ServeArgs { config: Some(path.clone()), ..ServeArgs::default() };
        let arn = "arn:aws:kms:eu-central-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        std::fs::write(
            &path,
            format!(
                "[kms]\nbackend = \"aws-kms\"\n[kms.aws]\nregion = \"eu-central-1\"\nendpoint_url = \"http://127.0.0.1:5000\"\n\
                 [kms.customer.acme-aws]\nbackend = \"aws-kms\"\nkey_arn = \"{arn}\"\norgs = [\"acme\"]\n"
            ),
        )
        .unwrap();
        let settings = Settings::load(None, &args).unwrap();
        let KmsChoice::AwsKms(own) = &settings.kms else { panic!("{:?}", settings.kms) };
        assert_eq!(own.region.as_deref(), Some("eu-central-1"));
        assert_eq!(own.endpoint_url.as_deref(), Some("http://127.0.0.1:5000"));
        let CustomerKmsBackend::AwsKms(customer) = &settings.customer_kms[0].backend else { panic!() };
        assert_eq!(customer.key_arn.as_deref(), Some(arn));
        assert_eq!(settings.customer_kms[0].orgs, Some(vec!["acme".to_owned()]));

        let own = |body: &str| format!("[kms]\nbackend = \"aws-kms\"\n{body}");
        let customer = |body: &str| format!("[kms.customer.acme-aws]\nbackend = \"aws-kms\"\n{body}");
        for (text, needle) in [
            (own(""), "needs a [kms.aws] section"),
            (own("[kms.aws]\n"), "[kms.aws]: aws-kms configuration: `region` is missing"),
            (own("[kms.aws]\nregion = \"eu-central-1\"\nendpoint_url = \"http://kms.example.com\"\n"), "plain http"),
            (own(&format!("[kms.aws]\nregion = \"eu-central-1\"\nkey_arn = \"{arn}\"\n")), "[kms.customer.<name>]"),
            (own("[kms.aws]\nregion = \"eu-central-1\"\nregoin = \"x\"\n"), "regoin"),
            ("[kms]\nbackend = \"aws\"\n".to_owned(), "\"aws-kms\""),
            (customer(""), "needs key_arn"),
            (customer("key_arn = \"alias/acme\"\n"), "[kms.customer.acme-aws]: aws-kms configuration: key_arn"),
            (customer(&format!("key_arn = \"{arn}\"\nregion = \"us-east-1\"\n")), "its own region"),
            (
                customer(&format!(
                    "key_arn = \"{arn}\"\n[kms.customer.acme-aws.pkcs11]\nmodule = \"m.so\"\ntoken_label = \"t\"\n"
                )),
                "is for backend = \"pkcs11\"",
            ),
            (
                format!("[kms.customer.acme]\nbackend = \"pkcs11\"\nkey_arn = \"{arn}\"\n"),
                "settings of backend = \"aws-kms\"",
            ),
            (customer(&format!("key_arn = \"{arn}\"\nkeyarn = \"x\"\n")), "keyarn"),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = format!("{:#}", Settings::load(None, &args).unwrap_err());
            assert!(err.contains(needle), "{needle}: {err}");
        }

        // Credentials are refused by name, wherever they are put, and never repeated.
        let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
        for text in [
            own(&format!("[kms.aws]\nregion = \"eu-central-1\"\nsecret_access_key = \"{secret}\"\n")),
            own(&format!("[kms.aws]\nregion = \"eu-central-1\"\nAWS_SECRET_ACCESS_KEY = \"{secret}\"\n")),
            own(&format!("aws = {{ region = \"eu-central-1\", session_token = \"{secret}\" }}\n")),
            format!("[kms]\naccess_key_id = \"{secret}\"\n"),
            customer(&format!("key_arn = \"{arn}\"\naccess_key_id = \"{secret}\"\n")),
        ] {
            std::fs::write(&path, &text).unwrap();
            let err = format!("{:#}", Settings::load(None, &args).unwrap_err());
            assert!(err.contains("credentials do not belong") && err.contains("AWS_ACCESS_KEY_ID"), "{err}");
            assert!(!err.contains("wJalr"), "the error repeats the secret: {err}");
        }
    }

    #[test]
    fn billing_sections_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("byok.toml");
        let args = ServeArgs { config: Some(path.clone()), ..ServeArgs::default() };
        std::fs::write(
            &path,
            "[billing]\ncurrency = \"EUR\"\n[billing.rate_cards.katman-a]\nper_call = \"0.0030\"\n\
             per_million_input_tokens = \"0.50\"\nper_million_output_tokens = \"2\"\n\
             [billing.provider_prices.gpt-4o]\ninput = \"2.50\"\noutput = \"10.00\"\n\
             [proxy]\ntrusted_proxies = [\"10.0.0.0/8\"]\n",
        )
        .unwrap();
        let settings = Settings::load(None, &args).unwrap();
        assert_eq!(settings.prices.currency.as_str(), "EUR");
        assert_eq!(settings.prices.card_for(Tier::KatmanA, None).code(), "EUR:0.003:0.5:2");
        assert_eq!(settings.prices.card_for(Tier::KatmanB, None).code(), "EUR:0.0005:0.1:0.4");
        assert_eq!(settings.prices.provider_price(Some("gpt-4o")).unwrap().code(), "EUR:2.5:10");
        assert_eq!(settings.proxy.trusted_proxies.len(), 1);
        let card = |body: &str| format!("[billing.rate_cards.katman-a]\n{body}");
        let full = "per_million_input_tokens = \"0.5\"\nper_million_output_tokens = \"2\"\n";
        for (text, needle) in [
            (card(&format!("per_call = \"-1\"\n{full}")), "negative"),
            (card(&format!("per_call = \"abc\"\n{full}")), "not a decimal"),
            (card(&format!("per_call = 0.002\n{full}")), "decimal strings"),
            (card("per_call = \"0.002\"\n"), "per_million_input_tokens"),
            (card(&format!("per_call = \"1\"\npercall = \"1\"\n{full}")), "percall"),
            ("[billing.rate_cards.katman-d]\nper_call = \"1\"\n".to_owned() + full, "katman-d"),
            ("[billing.provider_prices.gpt4o]\ninput = \"1\"\noutput = \"1\"\n".to_owned(), "gpt4o"),
            ("[billing]\ncurrency = \"usd\"\n".to_owned(), "three-letter"),
            ("[proxy]\ntrusted_proxies = [\"10.0.0.1/8\"]\n".to_owned(), "host bits"),
            ("[proxy]\ntrusted_proxies = [\"nope\"]\n".to_owned(), "not a CIDR"),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = format!("{:#}", Settings::load(None, &args).unwrap_err());
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }

    #[test]
    fn failover_and_limits_settings_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("byok.toml");
        let args = ServeArgs { config: Some(path.clone()), ..ServeArgs::default() };
        let defaults = Settings::load(None, &ServeArgs::default()).unwrap().proxy;
        assert_eq!(defaults.failover_attempts, 2);
        assert_eq!(defaults.limits.redis_url, None);
        std::fs::write(
            &path,
            "[proxy]\nfailover_attempts = 0\n[limits]\nredis_url = \"redis://127.0.0.1:6379/3\"\n\
             key_prefix = \"fleet-a:\"\nredis_timeout_ms = 50\n",
        )
        .unwrap();
        let proxy = Settings::load(None, &args).unwrap().proxy;
        assert_eq!(proxy.failover_attempts, 0);
        assert_eq!(proxy.limits.redis_url.as_deref(), Some("redis://127.0.0.1:6379/3"));
        assert_eq!(proxy.limits.key_prefix, "fleet-a:");
        assert_eq!(proxy.limits.op_timeout, Duration::from_millis(50));
        for (text, needle) in [
            ("[proxy]\nfailover_attempts = -1\n", "failover_attempts"),
            ("[proxy]\nfailover_attempts = 1.5\n", "failover_attempts"),
            ("[proxy]\nfailover_attempts = 11\n", "proxy.failover_attempts must be between 0 and 10"),
            ("[limits]\nredis_timeout_ms = 0\n", "limits.redis_timeout_ms"),
            ("[limits]\nredis = \"x\"\n", "redis"),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = format!("{:#}", Settings::load(None, &args).unwrap_err());
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }

    #[test]
    fn connection_limits_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("byok.toml");
        let args = ServeArgs { config: Some(path.clone()), ..ServeArgs::default() };
        let defaults = Settings::load(None, &ServeArgs::default()).unwrap().proxy.connections;
        assert_eq!(defaults, ConnectionLimits::default());
        assert_eq!(defaults.header_read_timeout, Duration::from_secs(10));
        assert_eq!(defaults.idle_timeout, Duration::from_secs(60));
        assert_eq!(defaults.max_connections, 4096);
        assert_eq!((defaults.max_uri_bytes, defaults.max_header_bytes), (8192, 65536));
        std::fs::write(
            &path,
            "[proxy]\nheader_read_timeout_secs = 5\nidle_timeout_secs = 30\nmax_connections = 100\n\
             max_uri_bytes = 4096\nmax_header_bytes = 16384\n",
        )
        .unwrap();
        let limits = Settings::load(None, &args).unwrap().proxy.connections;
        assert_eq!(
            limits,
            ConnectionLimits {
                header_read_timeout: Duration::from_secs(5),
                idle_timeout: Duration::from_secs(30),
                max_connections: 100,
                max_uri_bytes: 4096,
                max_header_bytes: 16384,
            }
        );
        for (text, needle) in [
            ("header_read_timeout_secs = 0", "proxy.header_read_timeout_secs must be between 1 and 3600"),
            ("header_read_timeout_secs = 3601", "proxy.header_read_timeout_secs"),
            ("idle_timeout_secs = 0", "proxy.idle_timeout_secs must be between 1 and 86400"),
            ("max_connections = 0", "proxy.max_connections must be between 1 and 1000000"),
            ("max_connections = 1000001", "proxy.max_connections"),
            ("max_uri_bytes = 100", "proxy.max_uri_bytes must be between 1024 and 65534"),
            ("max_uri_bytes = 70000", "proxy.max_uri_bytes"),
            ("max_header_bytes = 512", "proxy.max_header_bytes must be between 1024 and 1048576"),
            ("max_connections = -1", "max_connections"),
            ("idle_timeout = 5", "idle_timeout"),
        ] {
            std::fs::write(&path, format!("[proxy]\n{text}\n")).unwrap();
            let err = format!("{:#}", Settings::load(None, &args).unwrap_err());
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }

    #[test]
    fn listener_tls_needs_both_files_and_flags_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("byok.toml");
        std::fs::write(&path, "[proxy]\ntls_cert_file = \"file.crt\"\ntls_key_file = \"file.key\"\n").unwrap();
        let args = ServeArgs { config: Some(path.clone()), ..ServeArgs::default() };
        let tls = Settings::load(None, &args).unwrap().proxy_tls.unwrap();
        assert_eq!((tls.cert_file.as_path(), tls.key_file.as_path()), (Path::new("file.crt"), Path::new("file.key")));
        let args = ServeArgs { proxy_tls_cert_file: Some("flag.crt".into()), ..args };
        let tls = Settings::load(None, &args).unwrap().proxy_tls.unwrap();
        assert_eq!((tls.cert_file.as_path(), tls.key_file.as_path()), (Path::new("flag.crt"), Path::new("file.key")));
        std::fs::write(&path, "[proxy]\ntls_cert_file = \"file.crt\"\n").unwrap();
        let args = ServeArgs { config: Some(path), ..ServeArgs::default() };
        let err = format!("{:#}", Settings::load(None, &args).unwrap_err());
        assert!(err.contains("tls_key_file") && err.contains("needs both"), "{err}");
        assert!(Settings::load(None, &ServeArgs::default()).unwrap().proxy_tls.is_none());
    }

    /// `byok.example.toml` at the repository root.
    fn example_config_path() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../byok.example.toml")
    }

    /// The example with its optional settings switched on: `#key = …` and `#[section]`
    /// lines (a `#` directly followed by text) uncommented; prose (`# …`) stays.
    fn example_with_every_setting() -> String {
        let text = std::fs::read_to_string(example_config_path()).unwrap();
        text.lines()
            .map(|line| match line.strip_prefix('#') {
                Some(rest) if rest.starts_with(|c: char| !c.is_whitespace()) => rest,
                _ => line,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn example_config_is_accepted_and_changes_no_default() {
        let args = ServeArgs { config: Some(example_config_path()), ..ServeArgs::default() };
        let example = Settings::load(None, &args).unwrap();
        let defaults = Settings::load(None, &ServeArgs::default()).unwrap();
        // Its active lines are the defaults, written out: loading it changes nothing.
        assert_eq!(format!("{example:?}"), format!("{defaults:?}"));
    }

    #[test]
    fn example_config_names_every_setting_and_each_is_valid() {
        let text = example_with_every_setting();
        // Every optional setting, switched on, is accepted by `byok serve --config`.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("byok.toml");
        std::fs::write(&path, &text).unwrap();
        let args = ServeArgs { config: Some(path), ..ServeArgs::default() };
        let settings = Settings::load(None, &args).unwrap();
        assert_eq!(settings.customer_kms.len(), 2);
        assert!(settings.database_url.is_some() && settings.proxy.limits.redis_url.is_some());

        // Every key of every section appears. The patterns below are exhaustive, so a new
        // field does not compile until it is listed here, and then fails until the example
        // has it.
        let file: ConfigFile = toml::from_str(&text).unwrap();
        let raw: toml::Table = toml::from_str(&text).unwrap();
        let table = |path: &[&str]| -> toml::Table {
            let mut at = &raw;
            for key in path {
                at = at.get(*key).and_then(toml::Value::as_table).unwrap_or_else(|| panic!("no [{}]", path.join(".")));
            }
            at.clone()
        };
        let has_all = |section: &toml::Table, name: &str, keys: &[&str]| {
            for key in keys {
                assert!(section.contains_key(*key), "byok.example.toml: {name} lacks `{key}`");
            }
        };
        macro_rules! keys {
            ($value:expr, $ty:ident { $($field:ident $(as $key:literal)?),* $(,)? }) => {{
                let $ty { $($field: _),* } = $value;
                [$(keys!(@key $field $($key)?)),*]
            }};
            (@key $field:ident $key:literal) => { $key };
            (@key $field:ident) => { stringify!($field) };
        }

        let top = keys!(
            &file,
            ConfigFile {
                data_dir,
                database_url,
                admin_addr,
                proxy_addr,
                kms,
                proxy,
                upstreams,
                credentials,
                audit,
                model_families,
                billing,
                limits,
            }
        );
        has_all(&raw, "the top level", &top);
        let proxy = keys!(
            &file.proxy,
            ProxySection {
                max_request_body_bytes,
                connect_timeout_secs,
                response_timeout_secs,
                dek_cache_ttl_secs,
                dek_cache_max_uses,
                trusted_proxies,
                spend_refresh_secs,
                allow_private_upstreams,
                header_read_timeout_secs,
                idle_timeout_secs,
                max_connections,
                max_uri_bytes,
                max_header_bytes,
                failover_attempts,
                tls_cert_file,
                tls_key_file,
            }
        );
        has_all(&table(&["proxy"]), "[proxy]", &proxy);
        let limits = keys!(&file.limits, LimitsSection { redis_url, key_prefix, redis_timeout_ms });
        has_all(&table(&["limits"]), "[limits]", &limits);
        let credentials = keys!(&file.credentials, CredentialsSection { allow_plain_http_base_url });
        has_all(&table(&["credentials"]), "[credentials]", &credentials);
        let audit = keys!(&file.audit, AuditSection {
            katman_a as "retention_days_katman_a",
            katman_b as "retention_days_katman_b",
            katman_c as "retention_days_katman_c",
            purge_interval_secs,
        });
        has_all(&table(&["audit"]), "[audit]", &audit);
        assert!(!file.model_families.is_empty(), "byok.example.toml: no [model_families] entry");

        let billing = keys!(&file.billing, BillingSection { currency, rate_cards, provider_prices });
        has_all(&table(&["billing"]), "[billing]", &billing);
        for tier in ["katman-a", "katman-b", "katman-c"] {
            let card = keys!(
                &file.billing.rate_cards[tier],
                RateCard { per_call, per_million_input_tokens, per_million_output_tokens }
            );
            has_all(&table(&["billing", "rate_cards", tier]), &format!("[billing.rate_cards.{tier}]"), &card);
        }
        let (family, price) = file.billing.provider_prices.iter().next().unwrap();
        let price = keys!(price, ProviderPrice { input, output });
        has_all(&table(&["billing", "provider_prices", family]), "[billing.provider_prices.<family>]", &price);

        let (id, upstream) = file.upstreams.iter().next().unwrap();
        let upstream = keys!(upstream, UpstreamSection { base_url, override_credentials, allowed_hosts });
        has_all(&table(&["upstreams", id]), "[upstreams.<id>]", &upstream);

        let kms = keys!(&file.kms, KmsSection { max_concurrency, timeout_secs, backend, pkcs11, aws, customer });
        has_all(&table(&["kms"]), "[kms]", &kms);
        let pkcs11 = keys!(
            file.kms.pkcs11.as_ref().unwrap(),
            Pkcs11Config { module, token_label, pin_file, pin_env, mechanism, max_sessions }
        );
        has_all(&table(&["kms", "pkcs11"]), "[kms.pkcs11]", &pkcs11);
        let aws = keys!(
            file.kms.aws.as_ref().unwrap(),
            AwsKmsConfig { region, endpoint_url, key_arn, alias_prefix, pending_window_days, max_attempts }
        );
        // key_arn names a customer's key: refused in [kms.aws], shown in [kms.customer.*].
        let own_aws: Vec<&str> = aws.into_iter().filter(|key| *key != "key_arn").collect();
        has_all(&table(&["kms", "aws"]), "[kms.aws]", &own_aws);
        // The customer KMSs together show every key (each backend takes some of them).
        let mut customers = toml::Table::new();
        for name in file.kms.customer.keys() {
            customers.extend(table(&["kms", "customer", name]));
        }
        let customer = keys!(
            file.kms.customer.values().next().unwrap(),
            CustomerKmsSection { backend, max_concurrency, orgs, pkcs11, key_arn, region, endpoint_url }
        );
        has_all(&customers, "the [kms.customer.<name>] sections", &customer);
    }

    #[test]
    fn unknown_config_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("byok.toml");
        std::fs::write(&path, "admin_adr = \"127.0.0.1:5000\"\n").unwrap();
        let args = ServeArgs { config: Some(path), ..ServeArgs::default() };
        let err = format!("{:#}", Settings::load(None, &args).unwrap_err());
        assert!(err.contains("admin_adr"), "{err}");
    }
}
