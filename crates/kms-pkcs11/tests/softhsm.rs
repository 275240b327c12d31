//! The `pkcs11` backend against a real PKCS#11 module: SoftHSM2.
//!
//! The token comes from `BYOK_TEST_PKCS11_*` (see `scripts/softhsm-token.sh`), or is made
//! here if `softhsm2-util` is installed; without either, every test prints why it was
//! skipped and passes, unless `BYOK_REQUIRE_PKCS11=1`. All tests of this file share one
//! token: SoftHSM2 reads its configuration once per process. Each test uses fresh org ids.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use byok_crypto::kms::conformance;
use byok_crypto::{Dek, Kms, KmsError, WrappedDek};
use byok_domain::OrgId;
use byok_kms_pkcs11::testing::{self, NOT_INSTALLED};
use byok_kms_pkcs11::{OpenError, Pkcs11Config, Pkcs11Kms, ValueAccess, WrapMechanism};

/// The shared test token, or `None` (after printing why) if the test should skip.
fn token(test: &str) -> Option<Pkcs11Config> {
    static TOKEN: OnceLock<Option<Pkcs11Config>> = OnceLock::new();
    let token = TOKEN.get_or_init(|| match testing::test_token(&scratch_dir()) {
        Ok(token) => token,
        Err(problem) => panic!("cannot prepare the PKCS#11 test token: {problem}"),
    });
    if token.is_none() {
        if testing::pkcs11_required() {
            panic!("{test}: BYOK_REQUIRE_PKCS11=1 but {NOT_INSTALLED}");
        }
        let _ = writeln!(std::io::stderr(), "skipped {test}: {NOT_INSTALLED}");
    }
    token.clone()
}

/// A directory for this process's token under the target dir, after removing those of
/// test processes that have exited.
fn scratch_dir() -> PathBuf {
    let parent = Path::new(env!("CARGO_TARGET_TMPDIR")).join("softhsm");
    if let Ok(entries) = std::fs::read_dir(&parent) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let exited = name.parse::<u32>().is_ok_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
            if exited {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    parent.join(std::process::id().to_string())
}

fn open(config: &Pkcs11Config) -> Pkcs11Kms {
    Pkcs11Kms::open(config).unwrap_or_else(|e| panic!("open {}: {e}", config.token_label))
}

fn with_mechanism(config: &Pkcs11Config, mechanism: WrapMechanism) -> Pkcs11Config {
    Pkcs11Config { mechanism, ..config.clone() }
}

#[test]
fn passes_the_kms_conformance_suite_with_each_mechanism() {
    let Some(config) = token("passes_the_kms_conformance_suite_with_each_mechanism") else { return };
    for mechanism in WrapMechanism::ALL {
        let kms = open(&with_mechanism(&config, mechanism));
        assert_eq!(kms.backend_name(), "pkcs11");
        conformance::run_all(&kms);

        let org = OrgId::generate();
        kms.create_org_kek(&org).unwrap();
        let wrapped = kms.wrap_dek(&org, &Dek::generate()).unwrap();
        assert_eq!(wrapped.alg, mechanism.alg());
        assert_eq!(wrapped.bytes.len(), 40, "a 256-bit DEK wraps to 40 bytes with {mechanism}");
    }
}

#[test]
fn records_are_unwrapped_by_their_own_algorithm_whatever_the_configuration() {
    let Some(config) = token("records_are_unwrapped_by_their_own_algorithm_whatever_the_configuration") else {
        return;
    };
    let padded = open(&with_mechanism(&config, WrapMechanism::AesKeyWrapPad));
    let plain = open(&with_mechanism(&config, WrapMechanism::AesKeyWrap));
    let org = OrgId::generate();
    padded.create_org_kek(&org).unwrap();
    let dek = Dek::generate();
    let a256kwp = padded.wrap_dek(&org, &dek).unwrap();
    let a256kw = plain.wrap_dek(&org, &dek).unwrap();
    assert_ne!(a256kwp.bytes, a256kw.bytes);
    for kms in [&padded, &plain] {
        assert_eq!(kms.unwrap_dek(&org, &a256kwp).unwrap().expose(), dek.expose());
        assert_eq!(kms.unwrap_dek(&org, &a256kw).unwrap().expose(), dek.expose());
    }
    // An RFC 3394 wrapping presented as RFC 5649 (and vice versa) fails its integrity check.
    let relabelled = WrappedDek { alg: "A256KWP".into(), ..a256kw.clone() };
    assert!(matches!(padded.unwrap_dek(&org, &relabelled), Err(KmsError::Integrity)));
    let relabelled = WrappedDek { alg: "A256KW".into(), ..a256kwp };
    assert!(matches!(padded.unwrap_dek(&org, &relabelled), Err(KmsError::Integrity)));
    for alg in ["A256GCM-KW", "a256kw", ""] {
        let foreign = WrappedDek { alg: alg.into(), ..a256kw.clone() };
        assert!(matches!(plain.unwrap_dek(&org, &foreign), Err(KmsError::UnsupportedAlgorithm(a)) if a == alg));
    }
}

#[test]
fn keks_cannot_be_read_or_exported() {
    let Some(config) = token("keks_cannot_be_read_or_exported") else { return };
    let kms = open(&config);
    let org = OrgId::generate();
    kms.create_org_kek(&org).unwrap();
    kms.rotate_kek(&org).unwrap();
    for version in [1, 2] {
        let protection = kms.inspect_kek(&org, version).unwrap();
        assert_eq!(protection.value, ValueAccess::Sensitive, "CKA_VALUE of v{version} must be CKR_ATTRIBUTE_SENSITIVE");
        assert!(protection.sensitive, "v{version}: CKA_SENSITIVE");
        assert!(!protection.extractable, "v{version}: CKA_EXTRACTABLE");
        assert!(protection.always_sensitive, "v{version}: CKA_ALWAYS_SENSITIVE");
        assert!(protection.never_extractable, "v{version}: CKA_NEVER_EXTRACTABLE");
        assert!(!protection.wrappable_by_another_key, "v{version}: C_WrapKey must refuse to export the KEK");
    }
    assert!(matches!(kms.inspect_kek(&org, 3), Err(KmsError::UnknownVersion { version: 3, .. })));
}

#[test]
fn keys_rotation_and_destruction_survive_a_reopen() {
    let Some(config) = token("keys_rotation_and_destruction_survive_a_reopen") else { return };
    let (live, shredded) = (OrgId::generate(), OrgId::generate());
    let dek = Dek::generate();
    let (old, new) = {
        let kms = open(&config);
        kms.create_org_kek(&live).unwrap();
        let old = kms.wrap_dek(&live, &dek).unwrap();
        assert_eq!(kms.rotate_kek(&live).unwrap(), 2);
        let new = kms.wrap_dek(&live, &dek).unwrap();
        kms.create_org_kek(&shredded).unwrap();
        kms.destroy_org_keks(&shredded).unwrap();
        (old, new)
    };

    let kms = open(&config);
    assert_eq!(kms.current_kek_version(&live).unwrap(), 2);
    assert_eq!(kms.kek_versions(&live).unwrap(), vec![1, 2]);
    assert_eq!(kms.unwrap_dek(&live, &old).unwrap().expose(), dek.expose());
    assert_eq!(kms.unwrap_dek(&live, &new).unwrap().expose(), dek.expose());
    assert!(matches!(kms.create_org_kek(&live), Err(KmsError::OrgExists(_))));
    assert_eq!(kms.rotate_kek(&live).unwrap(), 3);
    kms.retire_kek_version(&live, 1).unwrap();
    assert_eq!(kms.kek_versions(&live).unwrap(), vec![2, 3]);
    assert!(matches!(kms.unwrap_dek(&live, &old), Err(KmsError::UnknownVersion { version: 1, .. })));
    assert!(matches!(kms.current_kek_version(&shredded), Err(KmsError::Destroyed(o)) if o == shredded));
    assert!(matches!(kms.create_org_kek(&shredded), Err(KmsError::Destroyed(_))));
    kms.destroy_org_keks(&shredded).unwrap();
    assert!(matches!(kms.destroy_org_keks(&OrgId::generate()), Err(KmsError::UnknownOrg(_))));
}

/// What the parent process leaves for [`child_process_sees_the_same_token`].
const CHILD_STATE: &str = "BYOK_PKCS11_CHILD_STATE";

#[test]
fn keys_survive_a_process_restart() {
    let Some(config) = token("keys_survive_a_process_restart") else { return };
    let kms = open(&config);
    let (live, shredded) = (OrgId::generate(), OrgId::generate());
    let dek = Dek::generate();
    kms.create_org_kek(&live).unwrap();
    let old = kms.wrap_dek(&live, &dek).unwrap();
    kms.rotate_kek(&live).unwrap();
    kms.create_org_kek(&shredded).unwrap();
    kms.destroy_org_keks(&shredded).unwrap();

    let state = tempfile::NamedTempFile::new().unwrap();
    let json = serde_json::json!({
        "live": live.to_string(),
        "shredded": shredded.to_string(),
        "dek": dek.expose().to_vec(),
        "old": old,
    });
    std::fs::write(state.path(), json.to_string()).unwrap();
    // The test binary itself, running only the ignored child test; it inherits the
    // token's environment (SOFTHSM2_CONF, BYOK_TEST_PKCS11_*).
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["child_process_sees_the_same_token", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_STATE, state.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "child process failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs only as the child of [`keys_survive_a_process_restart`].
#[test]
#[ignore = "run by keys_survive_a_process_restart in a fresh process"]
fn child_process_sees_the_same_token() {
    let Some(path) = std::env::var_os(CHILD_STATE) else { return };
    let config = testing::config_from_env().unwrap().expect("the parent's token");
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let live: OrgId = state["live"].as_str().unwrap().parse().unwrap();
    let shredded: OrgId = state["shredded"].as_str().unwrap().parse().unwrap();
    let dek: Vec<u8> = serde_json::from_value(state["dek"].clone()).unwrap();
    let old: WrappedDek = serde_json::from_value(state["old"].clone()).unwrap();

    // First in this process, so nothing is logged in yet: a wrong PIN must be refused,
    // and the error must not repeat it.
    let canary = "wrong-pin-canary-7731";
    std::env::set_var("BYOK_TEST_WRONG_PIN", canary);
    let wrong = Pkcs11Config { pin_file: None, pin_env: Some("BYOK_TEST_WRONG_PIN".into()), ..config.clone() };
    let err = Pkcs11Kms::open(&wrong).unwrap_err();
    assert!(matches!(err, OpenError::Kms(KmsError::Unavailable { .. })), "{err}");
    assert!(err.to_string().contains("PIN"), "{err}");
    assert!(!err.to_string().contains(canary) && !format!("{err:?}").contains(canary));

    let kms = open(&config);
    assert_eq!(kms.current_kek_version(&live).unwrap(), 2);
    assert_eq!(kms.unwrap_dek(&live, &old).unwrap().expose().as_slice(), dek.as_slice());
    assert!(matches!(kms.wrap_dek(&shredded, &Dek::generate()), Err(KmsError::Destroyed(_))));
    assert!(matches!(kms.unwrap_dek(&shredded, &old), Err(KmsError::Destroyed(_))));
}

#[test]
fn eight_threads_share_two_sessions() {
    let Some(config) = token("eight_threads_share_two_sessions") else { return };
    let kms = Arc::new(open(&Pkcs11Config { max_sessions: 2, ..config }));
    let org = OrgId::generate();
    kms.create_org_kek(&org).unwrap();
    let most_sessions = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (kms, most_sessions) = (Arc::clone(&kms), Arc::clone(&most_sessions));
            std::thread::spawn(move || {
                for _ in 0..200 {
                    let dek = Dek::generate();
                    let wrapped = kms.wrap_dek(&org, &dek).unwrap();
                    assert_eq!(kms.unwrap_dek(&org, &wrapped).unwrap().expose(), dek.expose());
                    most_sessions.fetch_max(kms.open_sessions(), Ordering::Relaxed);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let most = most_sessions.load(Ordering::Relaxed);
    assert!((1..=2).contains(&most), "{most} sessions were open at once");
    kms.check_health().unwrap();
}

#[test]
fn bad_wrapped_bytes_fail_the_integrity_check() {
    let Some(config) = token("bad_wrapped_bytes_fail_the_integrity_check") else { return };
    for mechanism in WrapMechanism::ALL {
        let kms = open(&with_mechanism(&config, mechanism));
        let (org, other) = (OrgId::generate(), OrgId::generate());
        kms.create_org_kek(&org).unwrap();
        kms.create_org_kek(&other).unwrap();
        let good = kms.wrap_dek(&org, &Dek::generate()).unwrap();
        let with_bytes = |bytes: Vec<u8>| WrappedDek { bytes, ..good.clone() };
        let mut flipped = good.bytes.clone();
        flipped[17] ^= 0x80;
        let cases = [
            ("a flipped bit", org, with_bytes(flipped)),
            ("truncated to 32 bytes", org, with_bytes(good.bytes[..32].to_vec())),
            ("truncated to 4 bytes", org, with_bytes(good.bytes[..4].to_vec())),
            ("an extra block", org, with_bytes([good.bytes.as_slice(), &[0; 8]].concat())),
            ("empty", org, with_bytes(Vec::new())),
            ("another org's KEK", other, good.clone()),
        ];
        for (case, org, wrapped) in cases {
            let result = kms.unwrap_dek(&org, &wrapped);
            assert!(matches!(result, Err(KmsError::Integrity)), "{mechanism}, {case}: {result:?}");
        }
        // Integrity failures do not cost the pool its sessions, and the token still works.
        assert_eq!(kms.unwrap_dek(&org, &good).map(|_| ()).ok(), Some(()));
        kms.check_health().unwrap();
    }
}

/// SoftHSM2 loses objects and fails `C_GenerateKey` when token objects are written while
/// other threads search; the backend must keep the two apart.
#[test]
fn changes_and_lookups_run_concurrently() {
    let Some(config) = token("changes_and_lookups_run_concurrently") else { return };
    let kms = Arc::new(open(&config));
    let org = OrgId::generate();
    kms.create_org_kek(&org).unwrap();
    let changer = {
        let kms = Arc::clone(&kms);
        std::thread::spawn(move || {
            for _ in 0..8 {
                let fresh = OrgId::generate();
                kms.create_org_kek(&fresh).unwrap();
                kms.rotate_kek(&fresh).unwrap();
                kms.retire_kek_version(&fresh, 1).unwrap();
                kms.destroy_org_keks(&fresh).unwrap();
            }
        })
    };
    let mut round_trips = 0;
    while !changer.is_finished() || round_trips < 20 {
        let dek = Dek::generate();
        let wrapped = kms.wrap_dek(&org, &dek).unwrap();
        assert_eq!(kms.unwrap_dek(&org, &wrapped).unwrap().expose(), dek.expose());
        round_trips += 1;
    }
    changer.join().unwrap();
}

#[test]
fn configuration_mistakes_are_named() {
    let Some(config) = token("configuration_mistakes_are_named") else { return };
    let missing = Pkcs11Config { token_label: "no-such-token".into(), ..config.clone() };
    let err = Pkcs11Kms::open(&missing).unwrap_err();
    assert!(
        matches!(&err, OpenError::Config(m) if m.contains("no-such-token") && m.contains(&config.token_label)),
        "{err}"
    );

    let module = Pkcs11Config { module: "/nonexistent/libpkcs11.so".into(), ..config.clone() };
    assert!(matches!(Pkcs11Kms::open(&module), Err(OpenError::Kms(KmsError::Unavailable { .. }))));

    let kms = open(&config);
    let pin = std::fs::read_to_string(config.pin_file.as_ref().unwrap()).unwrap();
    let debug = format!("{kms:?}");
    assert!(debug.contains(&config.token_label) && !debug.contains(pin.trim()), "{debug}");
}
