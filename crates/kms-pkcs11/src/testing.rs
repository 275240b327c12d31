//! Test support (feature `testing`): find a PKCS#11 test token, or make a throwaway
//! SoftHSM2 one with `scripts/softhsm-token.sh`.
//!
//! The environment decides:
//!
//! 1. `BYOK_TEST_PKCS11_MODULE` set: use it, with `BYOK_TEST_PKCS11_TOKEN` (default
//!    `byok-test`) and `BYOK_TEST_PKCS11_PIN_FILE` (and `SOFTHSM2_CONF` for SoftHSM2).
//! 2. Otherwise, `softhsm2-util` on `PATH`: run the script in a scratch directory and
//!    export its variables into this process, so that child processes reuse the token.
//! 3. Otherwise there is no token: callers skip, unless `BYOK_REQUIRE_PKCS11=1`.
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` once, when the module is initialized, and the module is
//! initialized once per process: decide once per process, before opening any backend.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::config::{Pkcs11Config, WrapMechanism, DEFAULT_MAX_SESSIONS};

/// The token label the script initializes.
pub const TEST_TOKEN_LABEL: &str = "byok-test";

/// What a skipped test prints after its name.
pub const NOT_INSTALLED: &str = "SoftHSM2 is not installed (apt-get install softhsm2)";

/// Whether `BYOK_REQUIRE_PKCS11=1` asks for PKCS#11 tests to fail rather than skip.
pub fn pkcs11_required() -> bool {
    std::env::var("BYOK_REQUIRE_PKCS11").is_ok_and(|value| value == "1")
}

/// Whether `softhsm2-util` is on `PATH`.
pub fn softhsm_installed() -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join("softhsm2-util").is_file()))
}

/// The path of `scripts/softhsm-token.sh` in this workspace.
pub fn token_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/softhsm-token.sh")
}

/// A configuration for the test token named by `BYOK_TEST_PKCS11_*`, if
/// `BYOK_TEST_PKCS11_MODULE` is set.
pub fn config_from_env() -> Result<Option<Pkcs11Config>, String> {
    let Some(module) = std::env::var_os("BYOK_TEST_PKCS11_MODULE") else { return Ok(None) };
    let pin_file = std::env::var_os("BYOK_TEST_PKCS11_PIN_FILE")
        .ok_or("BYOK_TEST_PKCS11_MODULE is set but BYOK_TEST_PKCS11_PIN_FILE is not")?;
    Ok(Some(Pkcs11Config {
        module: module.into(),
        token_label: std::env::var("BYOK_TEST_PKCS11_TOKEN").unwrap_or_else(|_| TEST_TOKEN_LABEL.to_owned()),
        pin_file: Some(pin_file.into()),
        pin_env: None,
        mechanism: WrapMechanism::default(),
        max_sessions: DEFAULT_MAX_SESSIONS,
    }))
}

/// Run `scripts/softhsm-token.sh <dir>` and return the variables it exports.
pub fn create_softhsm_token(dir: &Path) -> Result<Vec<(String, String)>, String> {
    let script = token_script();
    let output = Command::new("bash")
        .arg(&script)
        .arg(dir)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !output.status.success() {
        return Err(format!(
            "{} failed ({}): {}",
            script.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let stdout = String::from_utf8(output.stdout).map_err(|_| "the script printed non-UTF-8 output".to_owned())?;
    stdout.lines().filter(|line| !line.trim().is_empty()).map(parse_export).collect()
}

/// Find the test token (see the module docs); `Ok(None)` if there is none.
///
/// A token made here lives in `scratch`, and its variables are exported into this
/// process's environment (before any module is loaded, as SoftHSM2 needs).
pub fn test_token(scratch: &Path) -> Result<Option<Pkcs11Config>, String> {
    if let Some(config) = config_from_env()? {
        return Ok(Some(config));
    }
    if !softhsm_installed() {
        return Ok(None);
    }
    for (name, value) in create_softhsm_token(scratch)? {
        std::env::set_var(name, value);
    }
    config_from_env()
}

/// `export NAME='value'` → (`NAME`, `value`), undoing the script's single quoting.
fn parse_export(line: &str) -> Result<(String, String), String> {
    let unexpected = || format!("unexpected line from the token script: {line}");
    let assignment = line.trim().strip_prefix("export ").ok_or_else(unexpected)?;
    let (name, quoted) = assignment.split_once('=').ok_or_else(unexpected)?;
    let inner = quoted.strip_prefix('\'').and_then(|rest| rest.strip_suffix('\'')).ok_or_else(unexpected)?;
    Ok((name.to_owned(), inner.replace("'\\''", "'")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn export_lines_are_unquoted() {
        assert_eq!(
            parse_export("export SOFTHSM2_CONF='/tmp/a b/softhsm2.conf'").unwrap(),
            ("SOFTHSM2_CONF".to_owned(), "/tmp/a b/softhsm2.conf".to_owned())
        );
        assert_eq!(parse_export("export X='it'\\''s'").unwrap().1, "it's");
        assert!(parse_export("echo hi").is_err());
        assert!(parse_export("export X=unquoted").is_err());
    }
}
