//! The `local` KMS backend: a keyring file in the data directory.
//!
//! One JSON file, mode 0600, holding each org's versioned 256-bit KEKs. Writes go to a
//! temporary file that is fsynced and renamed over the old one, so a crash leaves
//! either the old keyring or the new one, never a torn file. DEKs are wrapped with
//! AES-256-GCM under the KEK, with associated data binding org and KEK version.
//!
//! This is the embedded default for a single node; the keys are protected only by file
//! permissions. Production deployments use the `pkcs11` backend.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use byok_domain::OrgId;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use super::{Kms, KmsError, WrappedDek};
use crate::secret::Dek;

/// The wrapping algorithm of this backend.
pub const LOCAL_WRAP_ALG: &str = "A256GCM-KW";
const WRAP_LABEL: &[u8] = b"byok/local-kek-wrap/v1\0";
const FORMAT: u32 = 1;

#[derive(Serialize, Deserialize, Default)]
struct KeyringFile {
    format: u32,
    /// Random, made with the file (and added to a file from before ids): which keyring
    /// this is, so that nodes sharing a database can tell they do not share it.
    #[serde(default)]
    id: String,
    orgs: BTreeMap<String, OrgKeys>,
}

/// A new keyring id: 16 random bytes, hex.
fn new_keyring_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    crate::chain::hex(&bytes)
}

#[derive(Serialize, Deserialize, Default, Clone)]
struct OrgKeys {
    current: u32,
    destroyed: bool,
    /// version → base64 key. Retired versions are removed.
    versions: BTreeMap<u32, String>,
}

impl Drop for OrgKeys {
    fn drop(&mut self) {
        for key in self.versions.values_mut() {
            key.zeroize();
        }
    }
}

/// The local keyring.
pub struct LocalKeyring {
    path: PathBuf,
    state: RwLock<KeyringFile>,
}

impl std::fmt::Debug for LocalKeyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalKeyring").field("path", &self.path).finish_non_exhaustive()
    }
}

fn io_error(path: &Path, what: &str, err: std::io::Error) -> KmsError {
    KmsError::unavailable_by(format!("cannot {what} keyring {}", path.display()), err)
}

impl LocalKeyring {
    /// Open the keyring at `path`, creating an empty one (mode 0600) if it does not exist.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, KmsError> {
        let path = path.into();
        let state = if path.exists() {
            check_permissions(&path)?;
            let bytes = Zeroizing::new(fs::read(&path).map_err(|e| io_error(&path, "read", e))?);
            let file: KeyringFile = serde_json::from_slice(&bytes)
                .map_err(|e| KmsError::unavailable_by(format!("keyring {} is not valid", path.display()), e))?;
            let mut file = file;
            if file.format != FORMAT {
                return Err(KmsError::unavailable(format!(
                    "keyring {} has format {}, this build reads format {FORMAT}",
                    path.display(),
                    file.format
                )));
            }
            if file.id.is_empty() {
                file.id = new_keyring_id();
                persist(&path, &file)?;
            }
            file
        } else {
            let file = KeyringFile { format: FORMAT, id: new_keyring_id(), orgs: BTreeMap::new() };
            persist(&path, &file)?;
            file
        };
        Ok(Self { path, state: RwLock::new(state) })
    }

    /// How many orgs still have at least one KEK version here (crypto-shredded orgs and
    /// orgs that moved away have none).
    pub fn orgs_with_keys(&self) -> Result<usize, KmsError> {
        Ok(self.read()?.orgs.values().filter(|keys| !keys.destroyed && !keys.versions.is_empty()).count())
    }

    /// Where the keyring lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self) -> Result<std::sync::RwLockReadGuard<'_, KeyringFile>, KmsError> {
        self.state.read().map_err(|_| KmsError::unavailable("keyring lock poisoned"))
    }

    /// Apply `change` to a copy, persist it, then publish it: a failed write changes nothing.
    fn update<T>(&self, change: impl FnOnce(&mut KeyringFile) -> Result<T, KmsError>) -> Result<T, KmsError> {
        let mut guard = self.state.write().map_err(|_| KmsError::unavailable("keyring lock poisoned"))?;
        let mut next = KeyringFile { format: guard.format, id: guard.id.clone(), orgs: guard.orgs.clone() };
        let out = change(&mut next)?;
        persist(&self.path, &next)?;
        *guard = next;
        Ok(out)
    }

    fn kek(&self, org: &OrgId, version: u32) -> Result<Zeroizing<[u8; 32]>, KmsError> {
        let state = self.read()?;
        let keys = live_keys(&state, org)?;
        let encoded = keys.versions.get(&version).ok_or(KmsError::UnknownVersion { org: *org, version })?;
        decode_key(encoded)
    }
}

fn live_keys<'a>(state: &'a KeyringFile, org: &OrgId) -> Result<&'a OrgKeys, KmsError> {
    let keys = state.orgs.get(&org.to_string()).ok_or(KmsError::UnknownOrg(*org))?;
    if keys.destroyed {
        return Err(KmsError::Destroyed(*org));
    }
    Ok(keys)
}

fn live_keys_mut<'a>(state: &'a mut KeyringFile, org: &OrgId) -> Result<&'a mut OrgKeys, KmsError> {
    let keys = state.orgs.get_mut(&org.to_string()).ok_or(KmsError::UnknownOrg(*org))?;
    if keys.destroyed {
        return Err(KmsError::Destroyed(*org));
    }
    Ok(keys)
}

fn new_key() -> String {
    let mut key = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(key.as_mut());
    base64::engine::general_purpose::STANDARD.encode(key.as_ref())
}

fn decode_key(encoded: &str) -> Result<Zeroizing<[u8; 32]>, KmsError> {
    let bytes = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| KmsError::unavailable("keyring holds a malformed key"))?,
    );
    let mut key = Zeroizing::new([0u8; 32]);
    if bytes.len() != 32 {
        return Err(KmsError::unavailable("keyring holds a key of the wrong length"));
    }
    key.copy_from_slice(&bytes);
    Ok(key)
}

fn wrap_aad(org: &OrgId, version: u32) -> Vec<u8> {
    let mut aad = WRAP_LABEL.to_vec();
    aad.extend_from_slice(org.to_string().as_bytes());
    aad.push(0);
    aad.extend_from_slice(&version.to_be_bytes());
    aad
}

#[cfg(unix)]
fn check_permissions(path: &Path) -> Result<(), KmsError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(path).map_err(|e| io_error(path, "inspect", e))?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(KmsError::unavailable(format!(
            "keyring {} is readable by group or others (mode {:o}); run `chmod 600 {}`",
            path.display(),
            mode & 0o777,
            path.display()
        )));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_permissions(_path: &Path) -> Result<(), KmsError> {
    Ok(())
}

fn persist(path: &Path, file: &KeyringFile) -> Result<(), KmsError> {
    let bytes = Zeroizing::new(
        serde_json::to_vec_pretty(file).map_err(|e| KmsError::unavailable_by("cannot encode keyring", e))?,
    );
    let tmp = path.with_extension("tmp");
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut out = options.open(&tmp).map_err(|e| io_error(&tmp, "create", e))?;
    out.write_all(&bytes).map_err(|e| io_error(&tmp, "write", e))?;
    out.sync_all().map_err(|e| io_error(&tmp, "sync", e))?;
    drop(out);
    fs::rename(&tmp, path).map_err(|e| io_error(path, "replace", e))?;
    if let Some(dir) = path.parent() {
        // Make the rename itself durable.
        if let Ok(dir) = File::open(if dir.as_os_str().is_empty() { Path::new(".") } else { dir }) {
            let _ = dir.sync_all();
        }
    }
    Ok(())
}

impl Kms for LocalKeyring {
    fn backend_name(&self) -> &'static str {
        "local"
    }

    fn identity(&self) -> Option<String> {
        self.read().ok().map(|file| format!("local:{}", file.id))
    }

    fn create_org_kek(&self, org: &OrgId) -> Result<u32, KmsError> {
        self.update(|state| {
            if state.orgs.contains_key(&org.to_string()) {
                return Err(KmsError::OrgExists(*org));
            }
            let mut keys = OrgKeys { current: 1, destroyed: false, versions: BTreeMap::new() };
            keys.versions.insert(1, new_key());
            state.orgs.insert(org.to_string(), keys);
            Ok(1)
        })
    }

    fn current_kek_version(&self, org: &OrgId) -> Result<u32, KmsError> {
        let state = self.read()?;
        Ok(live_keys(&state, org)?.current)
    }

    fn rotate_kek(&self, org: &OrgId) -> Result<u32, KmsError> {
        self.update(|state| {
            let keys = live_keys_mut(state, org)?;
            let next = keys.current.saturating_add(1);
            keys.versions.insert(next, new_key());
            keys.current = next;
            Ok(next)
        })
    }

    fn wrap_dek(&self, org: &OrgId, dek: &Dek) -> Result<WrappedDek, KmsError> {
        let version = self.current_kek_version(org)?;
        let kek = self.kek(org, version)?;
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let cipher = Aes256Gcm::new(kek.as_ref().into());
        let aad = wrap_aad(org, version);
        let sealed = cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: dek.expose(), aad: &aad })
            .map_err(|_| KmsError::Integrity)?;
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        Ok(WrappedDek { kek_version: version, alg: LOCAL_WRAP_ALG.to_owned(), bytes, kms: Default::default() })
    }

    fn unwrap_dek(&self, org: &OrgId, wrapped: &WrappedDek) -> Result<Dek, KmsError> {
        if wrapped.alg != LOCAL_WRAP_ALG {
            return Err(KmsError::UnsupportedAlgorithm(wrapped.alg.clone()));
        }
        if wrapped.bytes.len() < 12 {
            return Err(KmsError::Integrity);
        }
        let kek = self.kek(org, wrapped.kek_version)?;
        let (nonce, sealed) = wrapped.bytes.split_at(12);
        let cipher = Aes256Gcm::new(kek.as_ref().into());
        let aad = wrap_aad(org, wrapped.kek_version);
        let plain = Zeroizing::new(
            cipher
                .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad: &aad })
                .map_err(|_| KmsError::Integrity)?,
        );
        Dek::from_bytes(&plain).ok_or(KmsError::Integrity)
    }

    fn create_kek_version(&self, org: &OrgId, version: u32) -> Result<(), KmsError> {
        self.update(|state| {
            let keys = state.orgs.entry(org.to_string()).or_default();
            if keys.destroyed {
                return Err(KmsError::Destroyed(*org));
            }
            if keys.current == version && keys.versions.contains_key(&version) {
                return Ok(());
            }
            if keys.versions.keys().any(|v| *v >= version) || keys.current > version {
                return Err(KmsError::unavailable(format!(
                    "{org} already has KEK version {} here; cannot create version {version}",
                    keys.current
                )));
            }
            keys.versions.insert(version, new_key());
            keys.current = version;
            Ok(())
        })
    }

    fn remove_org(&self, org: &OrgId) -> Result<(), KmsError> {
        if !self.read()?.orgs.contains_key(&org.to_string()) {
            return Ok(());
        }
        self.update(|state| {
            if let Some(keys) = state.orgs.get(&org.to_string()) {
                if keys.destroyed {
                    return Err(KmsError::Destroyed(*org));
                }
            }
            // Dropping the entry zeroizes its keys.
            state.orgs.remove(&org.to_string());
            Ok(())
        })
    }

    fn retire_kek_version(&self, org: &OrgId, version: u32) -> Result<(), KmsError> {
        self.update(|state| {
            let keys = live_keys_mut(state, org)?;
            if version == keys.current {
                return Err(KmsError::unavailable(format!(
                    "KEK version {version} of {org} is current and cannot be retired"
                )));
            }
            if let Some(mut key) = keys.versions.remove(&version) {
                key.zeroize();
            }
            Ok(())
        })
    }

    fn destroy_org_keks(&self, org: &OrgId) -> Result<(), KmsError> {
        self.update(|state| {
            let keys = state.orgs.get_mut(&org.to_string()).ok_or(KmsError::UnknownOrg(*org))?;
            for key in keys.versions.values_mut() {
                key.zeroize();
            }
            keys.versions.clear();
            keys.destroyed = true;
            Ok(())
        })
    }

    fn check_health(&self) -> Result<(), KmsError> {
        let _state = self.read()?;
        fs::metadata(&self.path).map_err(|e| io_error(&self.path, "inspect", e))?;
        Ok(())
    }
}
