//! Settings: TOML file, environment, flags — in rising priority.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use byok_domain::{FamilyPattern, ModelFamilyRegistry};
use serde::Deserialize;

/// The default data directory.
pub const DEFAULT_DATA_DIR: &str = "./byok-data";
/// The default admin listener.
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:4748";

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
}

/// The config file's shape. Unknown keys are refused so a typo cannot silently fall
/// back to a default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    admin_addr: Option<SocketAddr>,
    #[serde(default)]
    kms: KmsSection,
    #[serde(default)]
    credentials: CredentialsSection,
    /// family name → model-id patterns; adds families or replaces seed ones.
    #[serde(default)]
    model_families: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct KmsSection {
    max_concurrency: Option<usize>,
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
    /// At most this many KMS calls at once.
    pub kms_max_concurrency: usize,
    /// Accept `http://` credential base URLs.
    pub allow_plain_http_base_url: bool,
    /// Operator model families (added to or replacing the seed).
    pub model_families: BTreeMap<String, Vec<String>>,
}

impl Settings {
    /// Defaults for `data_dir`, listening on an ephemeral port (for tests).
    pub fn for_tests(data_dir: &Path) -> Self {
        Self {
            data_dir: data_dir.to_owned(),
            database_url: None,
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            kms_max_concurrency: 8,
            allow_plain_http_base_url: true,
            model_families: BTreeMap::new(),
        }
    }

    /// Resolve from flags/environment (`data_dir`, `args`) over the config file.
    pub fn load(data_dir: Option<PathBuf>, args: &ServeArgs) -> anyhow::Result<Self> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the config file {}", path.display()))?;
                toml::from_str::<ConfigFile>(&text)
                    .with_context(|| format!("config file {} is not valid", path.display()))?
            }
            None => ConfigFile::default(),
        };
        let default_admin: SocketAddr = DEFAULT_ADMIN_ADDR.parse().context("built-in admin address")?;
        let kms_max_concurrency = file.kms.max_concurrency.unwrap_or(8);
        if kms_max_concurrency == 0 {
            anyhow::bail!("kms.max_concurrency must be at least 1");
        }
        Ok(Self {
            data_dir: data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            database_url: args.database_url.clone().or(file.database_url),
            admin_addr: args.admin_addr.or(file.admin_addr).unwrap_or(default_admin),
            kms_max_concurrency,
            allow_plain_http_base_url: file.credentials.allow_plain_http_base_url.unwrap_or(false),
            model_families: file.model_families,
        })
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

        let args = ServeArgs { config: Some(path), admin_addr: Some("127.0.0.1:6000".parse().unwrap()), ..ServeArgs::default() };
        let settings = Settings::load(Some(PathBuf::from("/from/flag")), &args).unwrap();
        assert_eq!(settings.data_dir, PathBuf::from("/from/flag"));
        assert_eq!(settings.admin_addr.port(), 6000);

        let settings = Settings::load(None, &ServeArgs::default()).unwrap();
        assert_eq!(settings.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(settings.admin_addr.to_string(), DEFAULT_ADMIN_ADDR);
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
