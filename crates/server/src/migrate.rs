//! `byok kms migrate`: move a data directory's keys from its local keyring into the
//! PKCS#11 token the configuration names. Offline: it holds the data directory's lock,
//! so `byok serve` cannot run on it meanwhile.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use byok_crypto::{Kms, LocalKeyring};
use byok_domain::KmsName;
use byok_store::Store;
use byok_vault::migrate::{Migration, MigrationReport, Progress};

use crate::config::{KmsChoice, ServeArgs, Settings};
use crate::datadir::{self, DataDir};

/// What `byok kms migrate` was asked.
#[derive(Debug, Clone, Default)]
pub struct MigrateArgs {
    /// The configuration file (its `[kms]` names the target token).
    pub config: Option<PathBuf>,
    /// The database, when not SQLite in the data directory.
    pub database_url: Option<String>,
    /// Check and report only.
    pub dry_run: bool,
    /// Show a progress bar on a terminal.
    pub progress: bool,
}

/// Run the migration of the data directory (`data_dir`, or the configuration's).
pub async fn migrate_kms(data_dir: Option<PathBuf>, args: MigrateArgs) -> anyhow::Result<MigrationReport> {
    let serve_args =
        ServeArgs { config: args.config.clone(), database_url: args.database_url.clone(), ..ServeArgs::default() };
    let settings = Settings::load(data_dir, &serve_args)?;
    let KmsChoice::Pkcs11(target_config) = &settings.kms else {
        anyhow::bail!(
            "the configuration names no token to migrate into: set [kms] backend = \"pkcs11\" and its [kms.pkcs11] \
             section (module, token_label, pin_file or pin_env) — the same configuration `byok serve` will use afterwards"
        );
    };
    if !settings.data_dir.is_dir() {
        anyhow::bail!("data directory {} does not exist", settings.data_dir.display());
    }
    let data_dir = datadir::prepare(&settings.data_dir)?;
    let _lock = data_dir.lock()?;
    let keyring_path = data_dir.keyring_path();
    if !keyring_path.exists() {
        anyhow::bail!("no local keyring at {}: there is nothing to migrate", keyring_path.display());
    }
    let source = LocalKeyring::open(&keyring_path)
        .with_context(|| format!("cannot open the keyring {}", keyring_path.display()))?;
    let store = match &settings.database_url {
        Some(url) => Store::open(url).await.context("cannot open the database")?,
        None => {
            let path = data_dir.database_path();
            if !path.exists() {
                anyhow::bail!("no database at {}: is this a byok data directory?", path.display());
            }
            Store::open_sqlite(&path).await.with_context(|| format!("cannot open {}", path.display()))?
        }
    };
    let config = target_config.clone();
    let target = tokio::task::spawn_blocking(move || byok_kms_pkcs11::Pkcs11Kms::open(&config))
        .await
        .context("PKCS#11 initialization failed")?
        .context("cannot open the PKCS#11 token to migrate into")?;
    let identity = target.identity();
    let bar = progress_bar(args.progress, args.dry_run);
    let shown = bar.clone();
    let migration = Migration::new(store.clone(), Arc::new(source) as Arc<dyn Kms>, Arc::new(target)).with_progress(
        move |progress| match progress {
            Progress::Total(total) => shown.set_length(total),
            Progress::Done(done) => shown.inc(done),
        },
    );
    let report = migration.run(args.dry_run).await;
    bar.finish_and_clear();
    // Every key is in the token now: the fleet's default KMS is the token.
    let handed_over = match (&report, &identity) {
        (Ok(_), Some(identity)) if !args.dry_run => {
            store.reclaim_kms(KmsName::default_kms().as_str(), identity).await.context("cannot record the new KMS")
        }
        _ => Ok(()),
    };
    store.close().await;
    let report = report?;
    handed_over?;
    if !args.dry_run {
        retire_keyring(&data_dir)?;
    }
    Ok(report)
}

fn progress_bar(wanted: bool, dry_run: bool) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !wanted || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let verb = if dry_run { "checking" } else { "migrating" };
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{verb} {{bar:40}} {{pos}}/{{len}} wrapped keys ({{eta}} left)"
        ))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// Once no org has a key left in it, the keyring is renamed `keyring.json.migrated` (it
/// holds only crypto-shredding markers then), so nothing mistakes it for a live one.
fn retire_keyring(data_dir: &DataDir) -> anyhow::Result<()> {
    let path = data_dir.keyring_path();
    let keyring = LocalKeyring::open(&path).with_context(|| format!("cannot reopen {}", path.display()))?;
    let left = keyring.orgs_with_keys().context("cannot read the keyring")?;
    drop(keyring);
    if left == 0 {
        let retired = path.with_extension("json.migrated");
        std::fs::rename(&path, &retired)
            .with_context(|| format!("cannot rename {} to {}", path.display(), retired.display()))?;
    }
    Ok(())
}

/// `byok serve` with a PKCS#11 default KMS refuses a data directory whose local keyring
/// still holds keys: some wrapped keys would open with neither.
pub(crate) fn refuse_unfinished_migration(data_dir: &DataDir) -> anyhow::Result<()> {
    let path = data_dir.keyring_path();
    if !path.exists() {
        return Ok(());
    }
    let keyring = LocalKeyring::open(&path).with_context(|| format!("cannot open the keyring {}", path.display()))?;
    let left = keyring.orgs_with_keys().context("cannot read the keyring")?;
    if left > 0 {
        anyhow::bail!(
            "the local keyring {} still holds the keys of {left} org(s) while [kms] backend = \"pkcs11\": \
             run `byok kms migrate` with this configuration first (or configure backend = \"local\")",
            path.display()
        );
    }
    Ok(())
}
