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

/// The SQLite files byok keeps in the data directory (the database and, while it is
/// open or after a crash, its WAL and shared-memory index).
const DATABASE_FILES: [&str; 3] = ["byok.db", "byok.db-wal", "byok.db-shm"];

/// Create the directory with mode 0700 if it is missing; make the database files in it
/// private (0600). An existing directory that group or others may use is
///
/// * tightened to 0700 when it is empty: byok is about to initialize it (a directory
///   made with `mkdir`, a fresh mount point) and nothing in it can have been exposed;
/// * refused when it holds anything: the keyring, the operator token, the audit signing
///   key and the database may have been open to others, and the operator should look
///   before using it. The message names the directory, its mode and the fix.
///
/// Database files are tightened, not refused: byok made them (with SQLite's default
/// 0644 before the store created them 0600 itself), and the directory keeps everyone
/// else out anyway.
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
    check_private_dir(root)?;
    for name in DATABASE_FILES {
        tighten(&root.join(name))?;
    }
    Ok(DataDir { root: root.to_owned() })
}

/// Refuse a directory that group or others may read, write or enter, unless it is empty
/// (then make it 0700).
#[cfg(unix)]
fn check_private_dir(root: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(root)
        .with_context(|| format!("cannot read the data directory {}", root.display()))?
        .permissions()
        .mode();
    if mode & 0o077 == 0 {
        return Ok(());
    }
    if is_empty(root)? {
        fs::set_permissions(root, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot make the data directory {} private (chmod 700)", root.display()))?;
        // Checked again now that nobody else can add anything: an entry that appeared
        // in between means the directory was not ours alone.
        if is_empty(root)? {
            tracing::info!(path = %root.display(), was = %format!("{:o}", mode & 0o777), "made the empty data directory private (mode 700)");
            return Ok(());
        }
    }
    anyhow::bail!(
        "the data directory {} is open to group or others (mode {:o}); it holds the keyring, the operator token and \
         the database, so byok will not use it: check who could read it, then run `chmod 700 {}`",
        root.display(),
        mode & 0o777,
        root.display()
    )
}

#[cfg(unix)]
fn is_empty(root: &Path) -> anyhow::Result<bool> {
    let mut entries =
        fs::read_dir(root).with_context(|| format!("cannot list the data directory {}", root.display()))?;
    Ok(entries.next().is_none())
}

#[cfg(not(unix))]
fn check_private_dir(_root: &Path) -> anyhow::Result<()> {
    Ok(())
}

/// Make an existing file mode 0600 if group or others have any permission on it.
#[cfg(unix)]
fn tighten(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = match fs::metadata(path) {
        Ok(meta) if meta.is_file() => meta.permissions().mode(),
        // Not a file: SQLite will say what is wrong with it.
        Ok(_) => return Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
    };
    if mode & 0o077 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot make {} private (chmod 600)", path.display()))?;
        tracing::warn!(path = %path.display(), was = %format!("{:o}", mode & 0o777), "made a database file private (mode 600)");
    }
    Ok(())
}

#[cfg(not(unix))]
fn tighten(_path: &Path) -> anyhow::Result<()> {
    Ok(())
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
        let mut options = OpenOptions::new();
        options.create(true).truncate(false).write(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(&path).with_context(|| format!("cannot open the lock file {}", path.display()))?;
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

#[cfg(all(test, unix))]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn set_mode(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_missing_directory_is_created_with_mode_0700() {
        let outside = tempfile::tempdir().unwrap();
        let root = outside.path().join("nested").join("byok-data");
        let data_dir = prepare(&root).unwrap();
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&outside.path().join("nested")), 0o700);
        // Prepared again (a restart), it is accepted as it is.
        prepare(&root).unwrap();
        // The lock file is private too.
        let _lock = data_dir.lock().unwrap();
        assert_eq!(mode(&root.join("byok.lock")), 0o600);
    }

    #[test]
    fn an_empty_directory_open_to_others_is_made_private() {
        let outside = tempfile::tempdir().unwrap();
        let root = outside.path().join("byok-data");
        fs::create_dir(&root).unwrap();
        for loose in [0o755, 0o750, 0o711, 0o777] {
            set_mode(&root, loose);
            prepare(&root).unwrap();
            assert_eq!(mode(&root), 0o700, "from {loose:o}");
        }
    }

    #[test]
    fn a_directory_with_contents_open_to_group_or_others_is_refused_with_the_fix() {
        let outside = tempfile::tempdir().unwrap();
        let root = outside.path().join("byok-data");
        fs::create_dir(&root).unwrap();
        fs::write(root.join("keyring.json"), b"{}").unwrap();
        for refused in [0o755, 0o750, 0o740, 0o710, 0o701, 0o704, 0o770, 0o777] {
            set_mode(&root, refused);
            let err = prepare(&root).unwrap_err().to_string();
            let shown = root.display().to_string();
            assert!(err.contains(&shown), "{err}");
            assert!(err.contains(&format!("mode {refused:o}")), "{err}");
            assert!(err.contains(&format!("chmod 700 {shown}")), "{err}");
            // Nothing was changed: the operator decides.
            assert_eq!(mode(&root), refused);
        }
        set_mode(&root, 0o700);
        prepare(&root).unwrap();
    }

    #[test]
    fn a_file_is_not_a_data_directory() {
        let outside = tempfile::tempdir().unwrap();
        let root = outside.path().join("byok-data");
        fs::write(&root, b"").unwrap();
        let err = prepare(&root).unwrap_err().to_string();
        assert!(err.contains("not a directory"), "{err}");
    }

    #[test]
    fn database_files_left_readable_are_made_private() {
        let root = tempfile::tempdir().unwrap();
        set_mode(root.path(), 0o700);
        for name in DATABASE_FILES {
            let path = root.path().join(name);
            fs::write(&path, b"").unwrap();
            set_mode(&path, 0o644);
        }
        let other = root.path().join("notes.txt");
        fs::write(&other, b"").unwrap();
        set_mode(&other, 0o644);
        prepare(root.path()).unwrap();
        for name in DATABASE_FILES {
            assert_eq!(mode(&root.path().join(name)), 0o600, "{name}");
        }
        // Only byok's database files are touched.
        assert_eq!(mode(&other), 0o644);
    }

    /// The files SQLite creates in the data directory are private from the start: the
    /// store creates `byok.db` with mode 0600 and SQLite gives `-wal` and `-shm` the
    /// database file's mode.
    #[tokio::test]
    async fn the_database_byok_creates_is_private() {
        let outside = tempfile::tempdir().unwrap();
        let data_dir = prepare(&outside.path().join("byok-data")).unwrap();
        let store = byok_store::Store::open_sqlite(&data_dir.database_path()).await.unwrap();
        store.check_writable().await.unwrap();
        for name in DATABASE_FILES {
            let path = data_dir.root.join(name);
            assert!(path.exists(), "{name} is missing while the store is open");
            assert_eq!(mode(&path), 0o600, "{name}");
        }
        store.close().await;
    }
}
