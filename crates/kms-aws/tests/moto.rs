//! The `aws-kms` backend against a real KMS-compatible server: moto's `moto_server`.
//!
//! The server comes from `MOTO_ENDPOINT`, or is started from `BYOK_MOTO_SERVER` or
//! `moto_server` on `PATH` (see `scripts/moto-server.sh`); without one, every test prints
//! why it was skipped and passes, unless `BYOK_REQUIRE_MOTO=1`. The tests share one
//! server and use fresh org ids; those that stop a server start their own.
//!
//! moto does not refuse `Encrypt`/`Decrypt` with a disabled key or one pending deletion
//! (AWS does): the tests check what byok itself decides — aliases, states it reads, the
//! encryption context — and the classification of AWS's refusals against a scripted
//! HTTP server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use byok_crypto::kms::conformance;
use byok_crypto::{Dek, Kms, KmsError, WrappedDek};
use byok_domain::OrgId;
use byok_kms_aws::testing::{self, MotoServer, TestAccount, NOT_AVAILABLE};
use byok_kms_aws::{AwsKms, AwsKmsConfig, KeyState, OpenError, AWS_KMS_ALG, CONTEXT_KEK_VERSION, CONTEXT_ORG};

/// The shared server, or `None` (after printing why) if the test should skip.
fn moto(test: &str) -> Option<&'static MotoServer> {
    static SERVER: OnceLock<Option<MotoServer>> = OnceLock::new();
    let server = SERVER.get_or_init(|| match MotoServer::from_env() {
        Ok(server) => server,
        Err(problem) => panic!("cannot start the moto server: {problem}"),
    });
    if server.is_none() {
        skip(test);
    }
    server.as_ref()
}

/// A server of this test's own (it will be stopped), or `None` after printing why.
fn own_moto(test: &str) -> Option<MotoServer> {
    match MotoServer::start() {
        Ok(Some(server)) => Some(server),
        Ok(None) => {
            skip(test);
            None
        }
        Err(problem) => panic!("{test}: cannot start a moto server: {problem}"),
    }
}

fn skip(test: &str) {
    if testing::moto_required() {
        panic!("{test}: BYOK_REQUIRE_MOTO=1 but {NOT_AVAILABLE}");
    }
    let _ = writeln!(std::io::stderr(), "skipped {test}: {NOT_AVAILABLE}");
}

fn open(config: &AwsKmsConfig) -> AwsKms {
    testing::open_for_tests(config).unwrap_or_else(|e| panic!("open {config:?}: {e}"))
}

fn account(server: &MotoServer) -> TestAccount {
    server.account().unwrap()
}

/// A fresh customer key on `server`, and a backend using it.
fn customer_kms(server: &MotoServer) -> (AwsKms, String) {
    let key = account(server).create_key("acme's key for byok").unwrap();
    (open(&server.customer_config(&key.arn)), key.key_id)
}

fn days_from_now(date: Option<SystemTime>) -> f64 {
    let date = date.expect("a deletion date");
    date.duration_since(SystemTime::now()).unwrap_or_default().as_secs_f64() / 86_400.0
}

#[test]
fn passes_the_kms_conformance_suite_with_its_own_keys() {
    let Some(server) = moto("passes_the_kms_conformance_suite_with_its_own_keys") else { return };
    let kms = open(&server.config());
    assert_eq!(kms.backend_name(), "aws-kms");
    assert_eq!(kms.identity().as_deref(), Some("aws-kms:us-east-1:alias/byok"));
    conformance::run_all(&kms);

    let org = OrgId::generate();
    kms.create_org_kek(&org).unwrap();
    let wrapped = kms.wrap_dek(&org, &Dek::generate()).unwrap();
    assert_eq!(wrapped.alg, AWS_KMS_ALG);
    let account = account(server);
    let current = account.describe(&format!("alias/byok/{org}")).unwrap();
    assert_eq!(account.describe(&format!("alias/byok/{org}/v1")).unwrap().arn, current.arn);
    assert_eq!(current.description, format!("byok KEK v1 of {org}"));
    assert_eq!((current.key_usage.as_str(), current.key_spec.as_str()), ("ENCRYPT_DECRYPT", "SYMMETRIC_DEFAULT"));
    let tags = account.tags(&current.arn).unwrap();
    assert!(tags.contains(&("byok:org".to_owned(), org.to_string())), "{tags:?}");
    assert!(tags.contains(&("byok:kek-version".to_owned(), "1".to_owned())), "{tags:?}");
}

#[test]
fn passes_the_kms_conformance_suite_with_a_customer_key() {
    let Some(server) = moto("passes_the_kms_conformance_suite_with_a_customer_key") else { return };
    let (kms, key_id) = customer_kms(server);
    let arn = kms.customer_key_arn().unwrap().to_owned();
    assert_eq!(kms.identity(), Some(format!("aws-kms:{arn}")));
    conformance::run_all(&kms);

    // Every version of every org is the customer's one key; the records are its tags.
    let org = OrgId::generate();
    kms.create_kek_version(&org, 3).unwrap();
    kms.rotate_kek(&org).unwrap();
    assert_eq!(kms.kek_key(&org, 4).unwrap().key_id, key_id);
    let tags = account(server).tags(&arn).unwrap();
    assert!(tags.contains(&(format!("byok:org:{org}"), "3 4".to_owned())), "{tags:?}");
    kms.retire_kek_version(&org, 3).unwrap();
    let tags = account(server).tags(&arn).unwrap();
    assert!(tags.contains(&(format!("byok:org:{org}"), "4".to_owned())), "{tags:?}");
}

#[test]
fn rotation_rewraps_inside_kms_and_retires_old_versions() {
    let Some(server) = moto("rotation_rewraps_inside_kms_and_retires_old_versions") else { return };
    let kms = open(&server.config());
    let account = account(server);
    let org = OrgId::generate();
    let dek = Dek::generate();
    kms.create_org_kek(&org).unwrap();
    let old = kms.wrap_dek(&org, &dek).unwrap();
    let v1 = kms.kek_key(&org, 1).unwrap();

    assert_eq!(kms.rotate_kek(&org).unwrap(), 2);
    let v2 = kms.kek_key(&org, 2).unwrap();
    assert_ne!(v1.key_id, v2.key_id, "each version is a key of its own");
    assert_eq!(account.describe(&format!("alias/byok/{org}")).unwrap().key_id, v2.key_id);

    let rewrapped = kms.rewrap_dek(&org, &old).unwrap();
    assert_eq!(rewrapped.kek_version, 2);
    assert_ne!(rewrapped.bytes, old.bytes);
    assert_eq!(kms.unwrap_dek(&org, &rewrapped).unwrap().expose(), dek.expose());
    assert_eq!(kms.unwrap_dek(&org, &old).unwrap().expose(), dek.expose(), "v1 still unwraps until retired");

    // A fresh backend (another node, a restart) sees the same keys: the state is in KMS.
    let reopened = open(&server.config());
    assert_eq!(reopened.current_kek_version(&org).unwrap(), 2);
    reopened.retire_kek_version(&org, 1).unwrap();
    reopened.retire_kek_version(&org, 1).unwrap();
    let retired = account.describe(&v1.key_id).unwrap();
    assert_eq!(retired.state, KeyState::PendingDeletion);
    assert!((6.9..=7.1).contains(&days_from_now(retired.deletion_date)), "{retired:?}");
    assert!(!account.alias_exists(&format!("alias/byok/{org}/v1")).unwrap());
    assert!(matches!(kms.unwrap_dek(&org, &old), Err(KmsError::UnknownVersion { version: 1, .. })));
    assert_eq!(kms.unwrap_dek(&org, &rewrapped).unwrap().expose(), dek.expose());
    assert_eq!(account.describe(&v2.key_id).unwrap().state, KeyState::Enabled);

    // Versions are numbered on: the next rotation gives 3, never reusing a retired number.
    assert_eq!(kms.rotate_kek(&org).unwrap(), 3);
    assert!(kms.retire_kek_version(&org, 3).is_err(), "the current version cannot be retired");
}

#[test]
fn a_customer_key_rotates_labels_and_is_never_deleted_by_byok() {
    let Some(server) = moto("a_customer_key_rotates_labels_and_is_never_deleted_by_byok") else { return };
    let (kms, key_id) = customer_kms(server);
    let account = account(server);
    let (org, neighbour) = (OrgId::generate(), OrgId::generate());
    let dek = Dek::generate();
    kms.create_kek_version(&org, 1).unwrap();
    kms.create_kek_version(&neighbour, 1).unwrap();
    let old = kms.wrap_dek(&org, &dek).unwrap();
    let neighbours = kms.wrap_dek(&neighbour, &dek).unwrap();

    assert_eq!(kms.rotate_kek(&org).unwrap(), 2);
    let rewrapped = kms.rewrap_dek(&org, &old).unwrap();
    assert_eq!(rewrapped.kek_version, 2);
    assert_eq!(kms.unwrap_dek(&org, &rewrapped).unwrap().expose(), dek.expose());
    kms.retire_kek_version(&org, 1).unwrap();
    assert!(matches!(kms.unwrap_dek(&org, &old), Err(KmsError::UnknownVersion { version: 1, .. })));
    // What retiring means here: byok refuses the label; the key itself would still
    // decrypt the old record under its old context (it serves version 2 too).
    let arn = kms.customer_key_arn().unwrap().to_owned();
    let org_text = org.to_string();
    let direct =
        account.decrypt(&arn, &old.bytes, &[(CONTEXT_ORG, org_text.as_str()), (CONTEXT_KEK_VERSION, "1")]).unwrap();
    assert_eq!(direct.as_slice(), dek.expose());

    kms.destroy_org_keks(&org).unwrap();
    assert!(matches!(kms.unwrap_dek(&org, &rewrapped), Err(KmsError::Destroyed(_))));
    assert!(matches!(kms.wrap_dek(&org, &Dek::generate()), Err(KmsError::Destroyed(_))));
    assert!(matches!(open(&server.customer_config(&arn)).current_kek_version(&org), Err(KmsError::Destroyed(_))));
    // The customer's key is untouched, and serves its other org as before.
    assert_eq!(account.describe(&key_id).unwrap().state, KeyState::Enabled);
    assert_eq!(kms.unwrap_dek(&neighbour, &neighbours).unwrap().expose(), dek.expose());
    kms.check_health().unwrap();
}

#[test]
fn deleting_an_org_schedules_the_deletion_of_every_key() {
    let Some(server) = moto("deleting_an_org_schedules_the_deletion_of_every_key") else { return };
    let config = AwsKmsConfig { pending_window_days: 30, ..server.config() };
    let kms = open(&config);
    let account = account(server);
    let org = OrgId::generate();
    kms.create_org_kek(&org).unwrap();
    let under_v1 = kms.wrap_dek(&org, &Dek::generate()).unwrap();
    kms.rotate_kek(&org).unwrap();
    let under_v2 = kms.wrap_dek(&org, &Dek::generate()).unwrap();
    let keys = [kms.kek_key(&org, 1).unwrap(), kms.kek_key(&org, 2).unwrap()];

    kms.destroy_org_keks(&org).unwrap();
    for key in &keys {
        let now = account.describe(&key.key_id).unwrap();
        assert_eq!(now.state, KeyState::PendingDeletion, "{now:?}");
        assert!((29.9..=30.1).contains(&days_from_now(now.deletion_date)), "{now:?}");
    }
    for version in [1, 2] {
        assert!(!account.alias_exists(&format!("alias/byok/{org}/v{version}")).unwrap());
    }
    // The org's alias stays, on a key pending deletion: the org reads as destroyed.
    assert_eq!(account.describe(&format!("alias/byok/{org}")).unwrap().key_id, keys[1].key_id);
    for wrapped in [&under_v1, &under_v2] {
        assert!(matches!(kms.unwrap_dek(&org, wrapped), Err(KmsError::Destroyed(o)) if o == org));
        assert!(matches!(kms.rewrap_dek(&org, wrapped), Err(KmsError::Destroyed(_))));
    }
    assert!(matches!(kms.wrap_dek(&org, &Dek::generate()), Err(KmsError::Destroyed(_))));
    assert!(matches!(kms.rotate_kek(&org), Err(KmsError::Destroyed(_))));
    assert!(matches!(kms.create_org_kek(&org), Err(KmsError::Destroyed(_))));
    kms.destroy_org_keks(&org).unwrap();

    let reopened = open(&server.config());
    assert!(matches!(reopened.current_kek_version(&org), Err(KmsError::Destroyed(_))));
    assert!(matches!(reopened.unwrap_dek(&org, &under_v1), Err(KmsError::Destroyed(_))));
    assert!(matches!(reopened.destroy_org_keks(&OrgId::generate()), Err(KmsError::UnknownOrg(_))));
}

#[test]
fn an_org_moving_out_leaves_no_alias_and_its_keys_pending_deletion() {
    let Some(server) = moto("an_org_moving_out_leaves_no_alias_and_its_keys_pending_deletion") else { return };
    let kms = open(&server.config());
    let account = account(server);
    let org = OrgId::generate();
    kms.create_kek_version(&org, 5).unwrap();
    kms.rotate_kek(&org).unwrap();
    let keys = [kms.kek_key(&org, 5).unwrap(), kms.kek_key(&org, 6).unwrap()];
    kms.remove_org(&org).unwrap();
    for alias in [format!("alias/byok/{org}"), format!("alias/byok/{org}/v5"), format!("alias/byok/{org}/v6")] {
        assert!(!account.alias_exists(&alias).unwrap(), "{alias}");
    }
    for key in &keys {
        assert_eq!(account.describe(&key.key_id).unwrap().state, KeyState::PendingDeletion);
    }
    assert!(matches!(kms.current_kek_version(&org), Err(KmsError::UnknownOrg(_))));
    // Not destroyed: it may come back.
    kms.create_kek_version(&org, 8).unwrap();
    assert_eq!(kms.current_kek_version(&org).unwrap(), 8);
}

#[test]
fn the_encryption_context_binds_org_and_version() {
    let Some(server) = moto("the_encryption_context_binds_org_and_version") else { return };
    // One customer key for both orgs and every version: only the context tells them apart.
    let (kms, _) = customer_kms(server);
    let (a, b) = (OrgId::generate(), OrgId::generate());
    kms.create_kek_version(&a, 1).unwrap();
    kms.create_kek_version(&b, 1).unwrap();
    let dek = Dek::generate();
    let wrapped = kms.wrap_dek(&a, &dek).unwrap();
    kms.rotate_kek(&a).unwrap();
    kms.rotate_kek(&b).unwrap();

    assert_eq!(kms.unwrap_dek(&a, &wrapped).unwrap().expose(), dek.expose());
    assert!(matches!(kms.unwrap_dek(&b, &wrapped), Err(KmsError::Integrity)), "org B must not open org A's DEK");
    let relabelled = WrappedDek { kek_version: 2, ..wrapped.clone() };
    assert!(matches!(kms.unwrap_dek(&a, &relabelled), Err(KmsError::Integrity)), "v1's DEK must not open as v2");
    assert!(matches!(kms.rewrap_dek(&b, &wrapped), Err(KmsError::Integrity)));

    // The same, asked of KMS directly: only the exact context decrypts.
    let account = account(server);
    let arn = kms.customer_key_arn().unwrap();
    let (a_text, b_text) = (a.to_string(), b.to_string());
    let exact = [(CONTEXT_ORG, a_text.as_str()), (CONTEXT_KEK_VERSION, "1")];
    assert_eq!(account.decrypt(arn, &wrapped.bytes, &exact).unwrap().as_slice(), dek.expose());
    for context in [
        vec![],
        vec![(CONTEXT_ORG, a_text.as_str())],
        vec![(CONTEXT_ORG, b_text.as_str()), (CONTEXT_KEK_VERSION, "1")],
        vec![(CONTEXT_ORG, a_text.as_str()), (CONTEXT_KEK_VERSION, "2")],
        vec![(CONTEXT_ORG, a_text.as_str()), (CONTEXT_KEK_VERSION, "1"), ("extra", "x")],
    ] {
        assert!(matches!(account.decrypt(arn, &wrapped.bytes, &context), Err(KmsError::Integrity)), "{context:?}");
    }

    // With byok's own keys the org and version also pick different keys.
    let own = open(&server.config());
    own.create_org_kek(&a).unwrap();
    own.create_org_kek(&b).unwrap();
    let wrapped = own.wrap_dek(&a, &dek).unwrap();
    own.rotate_kek(&a).unwrap();
    assert!(own.unwrap_dek(&b, &wrapped).is_err());
    assert!(own.unwrap_dek(&a, &WrappedDek { kek_version: 2, ..wrapped.clone() }).is_err());
    assert_eq!(own.unwrap_dek(&a, &wrapped).unwrap().expose(), dek.expose());
}

#[test]
fn tampered_and_foreign_records_are_refused() {
    let Some(server) = moto("tampered_and_foreign_records_are_refused") else { return };
    let kms = open(&server.config());
    let org = OrgId::generate();
    kms.create_org_kek(&org).unwrap();
    let good = kms.wrap_dek(&org, &Dek::generate()).unwrap();
    let with_bytes = |bytes: Vec<u8>| WrappedDek { bytes, ..good.clone() };
    let mut flipped = good.bytes.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x01;
    for (case, wrapped) in [
        ("a flipped bit in the tag", with_bytes(flipped)),
        ("truncated", with_bytes(good.bytes[..good.bytes.len() - 8].to_vec())),
        ("empty", with_bytes(Vec::new())),
        ("longer than KMS accepts", with_bytes(vec![0; 6145])),
    ] {
        let result = kms.unwrap_dek(&org, &wrapped);
        assert!(matches!(result, Err(KmsError::Integrity)), "{case}: {result:?}");
    }
    for alg in ["A256KWP", "A256GCM-KW", ""] {
        let foreign = WrappedDek { alg: alg.into(), ..good.clone() };
        assert!(matches!(kms.unwrap_dek(&org, &foreign), Err(KmsError::UnsupportedAlgorithm(a)) if a == alg));
    }
    assert!(kms.unwrap_dek(&org, &good).is_ok());
}

#[test]
fn a_disabled_key_is_refused_not_unavailable() {
    let Some(server) = moto("a_disabled_key_is_refused_not_unavailable") else { return };
    let kms = open(&server.config());
    let account = account(server);
    let org = OrgId::generate();
    kms.create_org_kek(&org).unwrap();
    let current = kms.kek_key(&org, 1).unwrap();
    account.disable(&current.key_id).unwrap();
    for result in [kms.wrap_dek(&org, &Dek::generate()).map(drop), kms.current_kek_version(&org).map(drop)] {
        let Err(KmsError::Refused { reason: message, .. }) = result else { panic!("expected a refusal: {result:?}") };
        assert!(message.contains("disabled") && message.contains("EnableKey"), "{message}");
        assert!(message.contains(&current.arn) && message.contains("AWS KMS (region us-east-1"), "{message}");
    }
    account.enable(&current.key_id).unwrap();
    kms.wrap_dek(&org, &Dek::generate()).unwrap();

    // A customer disabling or deleting its key: the health check tells at once.
    let (customer, key_id) = customer_kms(server);
    customer.check_health().unwrap();
    account.disable(&key_id).unwrap();
    let health = customer.check_health();
    assert!(matches!(&health, Err(KmsError::Refused { reason: m, .. }) if m.contains("disabled")), "{health:?}");
    account.enable(&key_id).unwrap();
    customer.check_health().unwrap();
    account.schedule_deletion(&key_id, 7).unwrap();
    let health = customer.check_health();
    assert!(
        matches!(&health, Err(KmsError::Refused { reason: m, .. }) if m.contains("pending deletion")),
        "{health:?}"
    );
}

#[test]
fn kms_down_is_kms_unavailable() {
    // An endpoint where nothing listens: fails fast, as unavailable, naming the KMS.
    let port = testing::free_loopback_port().unwrap();
    let endpoint = format!("http://127.0.0.1:{port}");
    let config = AwsKmsConfig { endpoint_url: Some(endpoint.clone()), ..AwsKmsConfig::for_region("eu-west-1") };
    let kms = open(&config);
    let org = OrgId::generate();
    let started = Instant::now();
    let results = [
        kms.check_health(),
        kms.create_org_kek(&org).map(drop),
        kms.wrap_dek(&org, &Dek::generate()).map(drop),
        kms.current_kek_version(&org).map(drop),
    ];
    for result in results {
        let Err(KmsError::Unavailable { reason: message, .. }) = &result else {
            panic!("expected unavailable: {result:?}")
        };
        assert!(message.contains(&format!("AWS KMS (region eu-west-1, endpoint {endpoint})")), "{message}");
    }
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());

    // A server that goes away while in use.
    let Some(mut server) = own_moto("kms_down_is_kms_unavailable") else { return };
    let kms = open(&server.config());
    let org = OrgId::generate();
    kms.create_org_kek(&org).unwrap();
    let wrapped = kms.wrap_dek(&org, &Dek::generate()).unwrap();
    kms.check_health().unwrap();
    server.stop();
    let unwrap = kms.unwrap_dek(&org, &wrapped);
    assert!(
        matches!(&unwrap, Err(KmsError::Unavailable { reason: m, .. }) if m.contains("unwrap a DEK")),
        "{unwrap:?}"
    );
    assert!(matches!(kms.check_health(), Err(KmsError::Unavailable { .. })));
    assert!(matches!(kms.rotate_kek(&org), Err(KmsError::Unavailable { .. })));
}

/// An HTTP server that answers every request with `status` and a KMS-style JSON error
/// `code`, counting requests.
fn scripted_kms(status: u16, code: &str) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&requests);
    let body = if code.is_empty() {
        "<html>Service Unavailable</html>".to_owned()
    } else {
        format!(r#"{{"__type":"{code}","message":"scripted {code}"}}"#)
    };
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut request_body = vec![0; length];
            let _ = reader.read_exact(&mut request_body);
            counted.fetch_add(1, Ordering::SeqCst);
            let answer = format!(
                "HTTP/1.1 {status} Scripted\r\nContent-Type: application/x-amz-json-1.1\r\n\
                 x-amzn-RequestId: scripted-request\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    (endpoint, requests)
}

#[test]
fn throttling_and_server_errors_are_unavailable_and_refusals_are_not() {
    let org = OrgId::generate();
    let record = WrappedDek { kek_version: 1, alg: AWS_KMS_ALG.into(), bytes: vec![1; 64], kms: Default::default() };
    let table: [(u16, &str, fn(&KmsError) -> bool); 9] = [
        (
            400,
            "ThrottlingException",
            |e| matches!(e, KmsError::Unavailable { reason: m, .. } if m.contains("ThrottlingException")),
        ),
        (429, "TooManyRequestsException", |e| matches!(e, KmsError::Unavailable { .. })),
        (
            500,
            "KMSInternalException",
            |e| matches!(e, KmsError::Unavailable { reason: m, .. } if m.contains("HTTP 500")),
        ),
        (503, "", |e| matches!(e, KmsError::Unavailable { reason: m, .. } if m.contains("HTTP 503"))),
        (
            400,
            "AccessDeniedException",
            |e| matches!(e, KmsError::Refused { reason: m, .. } if m.contains("AccessDeniedException")),
        ),
        (
            400,
            "DisabledException",
            |e| matches!(e, KmsError::Refused { reason: m, .. } if m.contains("DisabledException")),
        ),
        (400, "KMSInvalidStateException", |e| matches!(e, KmsError::Refused { .. })),
        (400, "InvalidCiphertextException", |e| matches!(e, KmsError::Integrity)),
        (400, "IncorrectKeyException", |e| matches!(e, KmsError::Integrity)),
    ];
    for (status, code, expected) in table {
        let (endpoint, _) = scripted_kms(status, code);
        let config = AwsKmsConfig {
            endpoint_url: Some(endpoint.clone()),
            max_attempts: 1,
            ..AwsKmsConfig::for_region("us-east-1")
        };
        let kms = open(&config);
        let result = kms.unwrap_dek(&org, &record);
        let error = result.err().unwrap_or_else(|| panic!("{status} {code}: unwrapped"));
        assert!(expected(&error), "{status} {code}: {error:?}");
        if matches!(error, KmsError::Unavailable { .. } | KmsError::Refused { .. }) {
            assert!(error.to_string().contains(&format!("endpoint {endpoint}")), "{error}");
            assert!(error.to_string().contains("scripted-request"), "the request id is named: {error}");
        }
    }

    // Throttling and server errors are retried with backoff, refusals are not.
    for (status, code, attempts) in [(400, "ThrottlingException", 3), (503, "", 3), (400, "AccessDeniedException", 1)] {
        let (endpoint, requests) = scripted_kms(status, code);
        let kms = open(&AwsKmsConfig { endpoint_url: Some(endpoint), ..AwsKmsConfig::for_region("us-east-1") });
        assert!(kms.check_health().is_err());
        assert_eq!(requests.load(Ordering::SeqCst), attempts, "{status} {code}");
    }
}

#[test]
fn calls_work_from_blocking_threads_plain_threads_and_async_tasks() {
    let Some(server) = moto("calls_work_from_blocking_threads_plain_threads_and_async_tasks") else { return };
    let config = server.config();
    let kms = Arc::new(open(&config));
    let org = OrgId::generate();
    kms.create_org_kek(&org).unwrap();
    fn round_trip(kms: &AwsKms, org: OrgId) {
        let dek = Dek::generate();
        let wrapped = kms.wrap_dek(&org, &dek).unwrap();
        assert_eq!(kms.unwrap_dek(&org, &wrapped).unwrap().expose(), dek.expose());
    }

    // Plain threads, eight at once.
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let kms = Arc::clone(&kms);
            std::thread::spawn(move || {
                for _ in 0..5 {
                    round_trip(&kms, org);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }

    // The blocking pool of a multi-threaded and of a current-thread runtime (how the
    // vault calls a KMS), and directly on an async task (which it blocks, but neither
    // panics nor deadlocks).
    let multi = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let current = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    for runtime in [&multi, &current] {
        runtime.block_on(async {
            let tasks: Vec<_> = (0..4)
                .map(|_| {
                    let kms = Arc::clone(&kms);
                    tokio::task::spawn_blocking(move || round_trip(&kms, org))
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
            round_trip(&kms, org);
            tokio::spawn({
                let kms = Arc::clone(&kms);
                async move { round_trip(&kms, org) }
            })
            .await
            .unwrap();
        });
    }

    // Opened and dropped inside async contexts: no "cannot drop a runtime" panic.
    current.block_on(async {
        let inner = open(&config);
        round_trip(&inner, org);
        drop(inner);
        let inner = tokio::task::spawn_blocking(move || open(&config)).await.unwrap();
        tokio::spawn(async move { drop(inner) }).await.unwrap();
    });
    multi.block_on(async move {
        let last = Arc::try_unwrap(kms).unwrap();
        tokio::spawn(async move { drop(last) }).await.unwrap();
    });
}

#[test]
fn check_health_tells_reachable_from_refused() {
    let Some(server) = moto("check_health_tells_reachable_from_refused") else { return };
    open(&server.config()).check_health().unwrap();
    let (customer, _) = customer_kms(server);
    customer.check_health().unwrap();
    let missing = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000";
    let health = open(&server.customer_config(missing)).check_health();
    assert!(
        matches!(&health, Err(KmsError::Refused { reason: m, .. }) if m.contains("NotFoundException")),
        "{health:?}"
    );
}

#[test]
fn configuration_mistakes_are_named() {
    let bad = [
        (AwsKmsConfig { region: None, ..AwsKmsConfig::for_region("x") }, "`region` is missing"),
        (AwsKmsConfig::for_customer_key("alias/acme"), "key_arn"),
        (
            AwsKmsConfig {
                endpoint_url: Some("http://kms.example.com".into()),
                ..AwsKmsConfig::for_region("us-east-1")
            },
            "plain http",
        ),
    ];
    for (config, needle) in bad {
        let err = AwsKms::open(&config).unwrap_err();
        assert!(matches!(&err, OpenError::Config(m) if m.contains(needle)), "{err}");
        assert!(err.to_string().starts_with("aws-kms configuration: "), "{err}");
    }
    let kms = open(&AwsKmsConfig {
        endpoint_url: Some("http://127.0.0.1:9".into()),
        ..AwsKmsConfig::for_region("us-east-1")
    });
    let debug = format!("{kms:?}");
    assert!(
        debug.contains("us-east-1") && debug.contains("http://127.0.0.1:9") && debug.contains("alias/byok"),
        "{debug}"
    );
    assert!(!debug.contains("testing"), "no credentials in Debug: {debug}");
}
