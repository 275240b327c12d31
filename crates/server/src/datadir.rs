//! The data directory: SQLite database, keyring, operator token.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use byok_crypto::{TokenKind, TokenText};
use byok_vault::Vault;

/// A prepared data directory.
#[derive(Debug)]
pub(crate) struct DataDir {
    root: PathBuf,
}

/// Create the directory (mode 0700) if needed.
pub(crate) fn prepare(root: &Path) -> anyhow::Result<DataDir> {
    if !root.exists() {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.create(root).with_context(|| format!("cannot create the data directory {}", root.display()))?;
        tracing::info!(path = %root.display(), "created data directory");
    } else if !root.is_dir() {
        anyhow::bail!("data directory {} exists but is not a directory", root.display());
    }
    Ok(DataDir { root: root.to_owned() })
}

impl DataDir {
    pub(crate) fn database_path(&self) -> PathBuf {
        self.root.join("byok.db")
    }

    pub(crate) fn keyring_path(&self) -> PathBuf {
        self.root.join("keyring.json")
    }

    /// Hold the data directory for this process: `byok serve` and `byok kms migrate`
    /// never run on one data directory at once. The lock goes with the returned file
    /// (and with the process, however it ends).
    pub(crate) fn lock(&self) -> anyhow::Result<fs::File> {
        let path = self.root.join("byok.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open the lock file {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(fs::TryLockError::WouldBlock) => anyhow::bail!(
                "another byok process (`byok serve` or `byok kms migrate`) is using the data directory {}; stop it first",
                self.root.display()
            ),
            Err(fs::TryLockError::Error(err)) => {
                Err(err).with_context(|| format!("cannot lock the data directory {}", self.root.display()))
            }
        }
    }

    pub(crate) fn audit_key_path(&self) -> PathBuf {
        self.root.join("audit-signing.key")
    }

    pub(crate) fn operator_token_path(&self) -> PathBuf {
        self.root.join("operator.token")
    }

    /// Make sure `operator.token` exists (mode 0600) and is registered in the store.
    /// Its value is never logged.
    pub(crate) async fn ensure_operator_token(&self, vault: &Vault) -> anyhow::Result<PathBuf> {
        let path = self.operator_token_path();
        if path.exists() {
            check_private(&path)?;
            let text = fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
            let token = TokenText::from_text(text.trim().to_owned());
            vault
                .register_operator_token(&token)
                .await
                .with_context(|| format!("cannot use the operator token in {}", path.display()))?;
            return Ok(path);
        }
        let token = TokenText::generate(TokenKind::Admin);
        vault.register_operator_token(&token).await.context("cannot register a new operator token")?;
        write_private(&path, token.expose()).with_context(|| format!("cannot write {}", path.display()))?;
        tracing::info!(path = %path.display(), "created operator token");
        Ok(path)
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

#[cfg(unix)]
fn check_private(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        anyhow::bail!(
            "{} is readable by group or others (mode {:o}); run `chmod 600 {}`",
            path.display(),
            mode & 0o777,
            path.display()
        );
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path) -> anyhow::Result<()> {
    Ok(())
}
