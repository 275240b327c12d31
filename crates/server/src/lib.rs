//! `byok serve`: configuration, the data directory, the listeners and shutdown.
//!
//! [`start`] runs a whole server in-process (tests use it on `127.0.0.1:0`);
//! [`serve`] is the command: it loads settings, starts, and waits for a signal.
#![forbid(unsafe_code)]

mod config;
mod datadir;
mod fleet;
mod hardening;
mod logging;
mod logwriter;
mod migrate;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use byok_audit::{AuditConfig, AuditWriter};
use byok_crypto::LocalKeyring;
use byok_kms::KmsHandle;
use byok_proxy::Sidecar;
use byok_store::Store;
use byok_vault::{Vault, VaultPolicy};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{CustomerKms, CustomerKmsBackend, KmsChoice, ProxyTlsFiles, ServeArgs, Settings};
pub use migrate::{migrate_kms, MigrateArgs};

/// A running server.
#[derive(Debug)]
pub struct Running {
    admin_addr: SocketAddr,
    proxy_addr: SocketAddr,
    vault: Vault,
    /// The store (the server wires it: the audit writer appends to it; it is closed last).
    store: Store,
    operator_token_path: PathBuf,
    stop: watch::Sender<bool>,
    admin_task: JoinHandle<std::io::Result<()>>,
    proxy_task: JoinHandle<std::io::Result<()>>,
    watcher_task: JoinHandle<()>,
    purge_task: JoinHandle<()>,
    audit_task: JoinHandle<()>,
    /// Held while the server runs (see `DataDir::lock`).
    _lock: std::fs::File,
}

impl Running {
    /// Where the admin API listens.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Where the data plane listens.
    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy_addr
    }

    /// The store (for tools and tests that read it directly; changes go through the vault).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The vault behind the API.
    pub fn vault(&self) -> &Vault {
        &self.vault
    }

    /// Where the operator token was written.
    pub fn operator_token_path(&self) -> &std::path::Path {
        &self.operator_token_path
    }

    /// Stop accepting, drain in-flight calls (streams included), flush the audit
    /// writer, close the store.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.admin_task.await.context("admin listener task failed")??;
        self.proxy_task.await.context("data-plane listener task failed")??;
        let _ = self.watcher_task.await;
        // A purge under way finishes before the store closes.
        let _ = self.purge_task.await;
        // The last AuditWriter handles went with the listeners: the writer drains and ends.
        let _ = self.audit_task.await;
        self.store.close().await;
        Ok(())
    }
}

/// Start byok with `settings`: prepare the data directory, open the store and the KMS,
/// register the operator token, bind the listeners.
pub async fn start(settings: Settings) -> anyhow::Result<Running> {
    // Bad certificate or key files stop the start before anything is touched, naming the
    // setting and the file.
    let proxy_tls = settings.proxy_tls.as_ref().map(ProxyTlsFiles::load).transpose()?;
    let data_dir = datadir::prepare(&settings.data_dir)?;
    let lock = data_dir.lock()?;
    let store = match &settings.database_url {
        Some(url) => Store::open(url).await.with_context(|| "cannot open the database given by --database-url")?,
        None => Store::open_sqlite(&data_dir.database_path())
            .await
            .with_context(|| format!("cannot open the SQLite database {}", data_dir.database_path().display()))?,
    };
    let backend: Arc<dyn byok_crypto::Kms> = match &settings.kms {
        KmsChoice::Local => Arc::new(
            LocalKeyring::open(data_dir.keyring_path())
                .with_context(|| format!("cannot open the keyring {}", data_dir.keyring_path().display()))?,
        ),
        KmsChoice::Pkcs11(config) => {
            migrate::refuse_unfinished_migration(&data_dir)?;
            let config = config.clone();
            let kms = tokio::task::spawn_blocking(move || byok_kms_pkcs11::Pkcs11Kms::open(&config))
                .await
                .context("PKCS#11 initialization failed")?
                .context("cannot open the PKCS#11 KMS")?;
            Arc::new(kms)
        }
        KmsChoice::AwsKms(config) => {
            let config = config.clone();
            // As a token's login does at open: a wrong region or endpoint, or missing
            // credentials, stop the start here rather than fail every call.
            let kms = tokio::task::spawn_blocking(move || -> anyhow::Result<byok_kms_aws::AwsKms> {
                let kms = byok_kms_aws::AwsKms::open(&config)?;
                byok_crypto::Kms::check_health(&kms)?;
                Ok(kms)
            })
            .await
            .context("AWS KMS initialization failed")?
            .context("cannot use the AWS KMS of [kms.aws]")?;
            Arc::new(kms)
        }
    };
    // More calls at once than the token has sessions would only queue inside the backend
    // while holding blocking threads.
    let default_concurrency = match &settings.kms {
        KmsChoice::Pkcs11(config) => settings.kms_max_concurrency.min(config.max_sessions),
        KmsChoice::Local | KmsChoice::AwsKms(_) => settings.kms_max_concurrency,
    };
    let mut kms = KmsHandle::new(backend, default_concurrency).with_timeout(settings.kms_timeout);
    for customer in &settings.customer_kms {
        let (opened, concurrency) = open_customer_kms(customer).await?;
        kms = kms.with_reserved_kms(customer.name.clone(), opened, concurrency, customer.orgs.clone());
    }
    let signer = byok_audit::AuditSigner::load_or_create(&data_dir.audit_key_path())?;
    let vault = Vault::new(
        store.clone(),
        kms,
        settings.model_families(),
        VaultPolicy {
            allow_plain_http_base_url: settings.allow_plain_http_base_url,
            allowed_hosts: settings.allowed_hosts.clone(),
            retention: settings.retention,
        },
    )
    .with_audit_signer(Arc::new(signer))
    .with_price_book(settings.prices.clone());
    fleet::check(&vault, &store).await?;
    check_org_keys(&vault, &store).await?;
    fleet::join(&vault, &store).await?;
    let operator_token_path = data_dir.ensure_operator_token(&vault).await?;
    let resumed = vault.resume_rewraps().await.context("cannot check for unfinished KEK rewraps")?;
    if !resumed.is_empty() {
        tracing::info!(orgs = resumed.len(), "resuming KEK rewraps left unfinished");
    }
    tracing::info!(path = %operator_token_path.display(), "operator token file (mode 0600)");

    let admin_listener = tokio::net::TcpListener::bind(settings.admin_addr)
        .await
        .with_context(|| format!("cannot listen on {} for the admin API (--admin-addr)", settings.admin_addr))?;
    let proxy_listener = tokio::net::TcpListener::bind(settings.proxy_addr)
        .await
        .with_context(|| format!("cannot listen on {} for the data plane (--proxy-addr)", settings.proxy_addr))?;
    let admin_addr = admin_listener.local_addr()?;
    let proxy_addr = proxy_listener.local_addr()?;

    let (audit, audit_task) =
        AuditWriter::spawn_with_metrics(store.clone(), AuditConfig::default(), vault.kms().metrics());
    let sidecar = Sidecar::new(vault.clone(), audit, settings.proxy.clone())?;
    let (stop, stopped) = watch::channel(false);
    let until_stopped = |mut stopped: watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let watcher_task = sidecar.spawn_change_watcher(stopped.clone());
    sidecar.spawn_fleet_heartbeat(stopped.clone());
    let purge_task = tokio::spawn(purge_periodically(vault.clone(), settings.purge_interval, stopped.clone()));
    // The admin API gets the data plane's connection limits too (`[proxy]`).
    let admin_task = tokio::spawn(byok_proxy::serve_router(
        admin_listener,
        byok_admin::router(vault.clone()),
        settings.proxy.connections,
        until_stopped(stopped.clone()),
    ));
    let tls = proxy_tls.is_some();
    let proxy_task =
        tokio::spawn(byok_proxy::serve_with_tls(proxy_listener, sidecar, proxy_tls, until_stopped(stopped)));
    tracing::info!(%admin_addr, store = store.backend().as_str(), kms = vault.kms().backend_name(), "admin API listening");
    tracing::info!(%proxy_addr, tls, "data plane listening");
    Ok(Running {
        admin_addr,
        proxy_addr,
        vault,
        store,
        operator_token_path,
        stop,
        admin_task,
        proxy_task,
        watcher_task,
        purge_task,
        audit_task,
        _lock: lock,
    })
}

/// Open a customer-managed KMS; also how many calls it may take at once.
///
/// A customer's AWS key that does not answer or refuses now is only logged: one
/// customer's outage must not keep the node from serving every other org (its orgs' calls
/// fail as `kms_unavailable` until it is back).
async fn open_customer_kms(customer: &CustomerKms) -> anyhow::Result<(Arc<dyn byok_crypto::Kms>, usize)> {
    match &customer.backend {
        CustomerKmsBackend::Pkcs11(config) => {
            let token = config.clone();
            let opened = tokio::task::spawn_blocking(move || byok_kms_pkcs11::Pkcs11Kms::open(&token))
                .await
                .context("PKCS#11 initialization failed")?
                .with_context(|| format!("cannot open the customer-managed KMS '{}'", customer.name))?;
            tracing::info!(kms = %customer.name, token = %config.token_label, "customer-managed KMS ready");
            Ok((Arc::new(opened), customer.max_concurrency.min(config.max_sessions)))
        }
        CustomerKmsBackend::AwsKms(config) => {
            let key = config.clone();
            let (opened, health) = tokio::task::spawn_blocking(move || {
                byok_kms_aws::AwsKms::open(&key).map(|kms| {
                    let health = byok_crypto::Kms::check_health(&kms);
                    (kms, health)
                })
            })
            .await
            .context("AWS KMS initialization failed")?
            .with_context(|| format!("cannot open the customer-managed KMS '{}'", customer.name))?;
            let key_arn = opened.customer_key_arn().unwrap_or_default().to_owned();
            match health {
                Ok(()) => tracing::info!(kms = %customer.name, key = %key_arn, "customer-managed KMS ready"),
                Err(err) => tracing::warn!(
                    kms = %customer.name, key = %key_arn, error = %byok_domain::error::Report(&err),
                    "customer-managed KMS not usable now; its orgs' calls fail until it is"
                ),
            }
            Ok((Arc::new(opened), customer.max_concurrency))
        }
    }
}

/// Refuse to start when an org's current KEK is not in the KMS the store says holds it:
/// every call of that org would fail. The usual cause is a configuration that does not
/// match the data directory (a migrated one started with the local keyring, a missing
/// `[kms.customer.<name>]`).
async fn check_org_keys(vault: &Vault, store: &Store) -> anyhow::Result<()> {
    let mut orgs = store.list_orgs().await.context("cannot list orgs")?;
    // The platform credential pool keeps its KEK in the default KMS like an org.
    orgs.extend(store.platform_org().await.context("cannot read the platform pool")?);
    for org in orgs {
        if org.state != byok_domain::OrgState::Active {
            continue;
        }
        let hint = if org.kms.is_default() {
            match vault.kms().backend_name() {
                "local" => " If this data directory was migrated with `byok kms migrate`, configure [kms] backend = \"pkcs11\" and its [kms.pkcs11] token.",
                "aws-kms" => " If this data directory uses the local keyring, configure [kms] backend = \"local\" (`byok kms migrate` moves a keyring into a PKCS#11 token, not into AWS KMS); otherwise check [kms.aws] region and alias_prefix.",
                _ => " If this data directory still uses the local keyring, run `byok kms migrate` first, or configure [kms] backend = \"local\".",
            }
        } else {
            ""
        };
        if !vault.kms().contains(&org.kms) {
            anyhow::bail!(
                "org {} ({}) keeps its KEK in the customer-managed KMS '{}', which is not configured; add [kms.customer.{}]",
                org.id, org.name, org.kms, org.kms
            );
        }
        if org.kms.is_default() {
            let current = vault.kms().current_kek_version(&org.kms, org.id).await;
            match current {
                Ok(version) if version >= org.kek_version => {}
                Ok(version) => anyhow::bail!(
                    "org {} ({}) is at KEK version {} but the {} KMS holds version {version}.{hint}",
                    org.id,
                    org.name,
                    org.kek_version,
                    vault.kms().backend_name()
                ),
                Err(err) => anyhow::bail!(
                    "org {} ({}): its KEK is not in the configured {} KMS ({err}).{hint}",
                    org.id,
                    org.name,
                    vault.kms().backend_name()
                ),
            }
        }
    }
    Ok(())
}

/// Run `byok serve` until SIGINT or SIGTERM. `data_dir` is the global `--data-dir`.
pub async fn serve(data_dir: Option<PathBuf>, args: ServeArgs) -> anyhow::Result<()> {
    // Held to the end: dropping it writes the log lines still queued.
    let _log = init_logging();
    hardening::refuse_core_dumps();
    let settings = Settings::load(data_dir, &args)?;
    let running = start(settings).await?;
    wait_for_signal().await;
    tracing::info!("shutting down");
    running.shutdown().await
}

/// Remove audit entries past their retention, now and then every `every`.
async fn purge_periodically(vault: Vault, every: std::time::Duration, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            // Stop first: shutdown waits for this task, so no purge starts once asked to stop.
            biased;
            _ = stop.wait_for(|s| *s) => return,
            _ = tick.tick() => {}
        }
        match vault.purge_all_by_retention().await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "purged audit entries past retention"),
            Err(err) => tracing::warn!(error = %byok_domain::error::Report(&err), "audit retention purge failed"),
        }
    }
}

/// Log to standard error in batches ([`logwriter`]): a call's access line is formatted on
/// the task that ends it and appended to a buffer that is written when full, every few
/// milliseconds and at exit, so no request task makes a write system call per line. The
/// returned guard writes the rest when dropped.
fn init_logging() -> logwriter::LogGuard<std::io::Stderr> {
    let filter = logging::filter(std::env::var("BYOK_LOG").ok().as_deref());
    let format = std::env::var("BYOK_LOG_FORMAT").ok();
    let (format, unknown) = logging::format(format.as_deref());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, guard) = logwriter::batched(std::io::stderr());
    let _ = match format {
        logging::Format::Text => {
            tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(writer).try_init()
        }
        logging::Format::Json => logging::json().with_env_filter(filter).with_writer(writer).try_init(),
    };
    if let Some(unknown) = unknown {
        tracing::warn!(
            value = %byok_domain::audit::escaped_text(&unknown),
            "BYOK_LOG_FORMAT is neither `text` nor `json`; logging as text"
        );
    }
    guard
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
