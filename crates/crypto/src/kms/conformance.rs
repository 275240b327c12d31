//! The KMS conformance suite: behaviour every backend must show. Backends call
//! [`run_all`] from their own tests with a fresh instance.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use byok_domain::OrgId;

use super::{Kms, KmsError};
use crate::secret::Dek;

/// Run every check against `kms` (which must be empty or at least not know fresh org ids).
pub fn run_all(kms: &dyn Kms) {
    create_wrap_unwrap(kms);
    orgs_are_isolated(kms);
    tampering_is_detected(kms);
    rotation_keeps_old_versions_until_retired(kms);
    destroy_makes_everything_unopenable(kms);
    unknown_orgs_are_named(kms);
    orgs_move_in_and_out(kms);
    kms.check_health().expect("healthy backend");
}

fn create_wrap_unwrap(kms: &dyn Kms) {
    let org = OrgId::generate();
    assert_eq!(kms.create_org_kek(&org).unwrap(), 1);
    assert!(matches!(kms.create_org_kek(&org), Err(KmsError::OrgExists(_))));
    let dek = Dek::generate();
    let wrapped = kms.wrap_dek(&org, &dek).unwrap();
    assert_eq!(wrapped.kek_version, 1);
    assert!(!contains(&wrapped.bytes, dek.expose()), "wrapped bytes must not contain the DEK");
    let back = kms.unwrap_dek(&org, &wrapped).unwrap();
    assert_eq!(back.expose(), dek.expose());
}

fn orgs_are_isolated(kms: &dyn Kms) {
    let (a, b) = (OrgId::generate(), OrgId::generate());
    kms.create_org_kek(&a).unwrap();
    kms.create_org_kek(&b).unwrap();
    let wrapped = kms.wrap_dek(&a, &Dek::generate()).unwrap();
    assert!(kms.unwrap_dek(&b, &wrapped).is_err(), "org b's KEK must not open org a's DEK");
}

fn tampering_is_detected(kms: &dyn Kms) {
    let org = OrgId::generate();
    kms.create_org_kek(&org).unwrap();
    let wrapped = kms.wrap_dek(&org, &Dek::generate()).unwrap();
    for index in [0, wrapped.bytes.len() / 2, wrapped.bytes.len() - 1] {
        let mut bad = wrapped.clone();
        bad.bytes[index] ^= 0x01;
        assert!(kms.unwrap_dek(&org, &bad).is_err(), "flipped bit at {index} must fail");
    }
    let mut truncated = wrapped.clone();
    truncated.bytes.truncate(4);
    assert!(kms.unwrap_dek(&org, &truncated).is_err());
    let mut wrong_alg = wrapped;
    wrong_alg.alg = "ROT13".into();
    assert!(matches!(kms.unwrap_dek(&org, &wrong_alg), Err(KmsError::UnsupportedAlgorithm(_))));
}

fn rotation_keeps_old_versions_until_retired(kms: &dyn Kms) {
    let org = OrgId::generate();
    kms.create_org_kek(&org).unwrap();
    let dek = Dek::generate();
    let old = kms.wrap_dek(&org, &dek).unwrap();
    assert_eq!(kms.rotate_kek(&org).unwrap(), 2);
    assert_eq!(kms.current_kek_version(&org).unwrap(), 2);
    let new = kms.wrap_dek(&org, &dek).unwrap();
    assert_eq!(new.kek_version, 2);
    assert_eq!(kms.unwrap_dek(&org, &old).unwrap().expose(), dek.expose());
    assert!(kms.retire_kek_version(&org, 2).is_err(), "the current version cannot be retired");
    kms.retire_kek_version(&org, 1).unwrap();
    assert!(matches!(kms.unwrap_dek(&org, &old), Err(KmsError::UnknownVersion { version: 1, .. })));
    assert_eq!(kms.unwrap_dek(&org, &new).unwrap().expose(), dek.expose());
}

fn destroy_makes_everything_unopenable(kms: &dyn Kms) {
    let org = OrgId::generate();
    kms.create_org_kek(&org).unwrap();
    let wrapped = kms.wrap_dek(&org, &Dek::generate()).unwrap();
    kms.rotate_kek(&org).unwrap();
    kms.destroy_org_keks(&org).unwrap();
    assert!(matches!(kms.unwrap_dek(&org, &wrapped), Err(KmsError::Destroyed(_))));
    assert!(matches!(kms.wrap_dek(&org, &Dek::generate()), Err(KmsError::Destroyed(_))));
    assert!(kms.destroy_org_keks(&org).is_ok(), "destroy is idempotent");
}

fn unknown_orgs_are_named(kms: &dyn Kms) {
    let org = OrgId::generate();
    let err = kms.wrap_dek(&org, &Dek::generate()).unwrap_err();
    assert!(matches!(err, KmsError::UnknownOrg(o) if o == org));
    assert!(err.to_string().contains(&org.to_string()));
}

/// An org arriving from another KMS gets the version it is given; one leaving is
/// removed without a tombstone, so it can come back later.
fn orgs_move_in_and_out(kms: &dyn Kms) {
    let org = OrgId::generate();
    kms.create_kek_version(&org, 4).unwrap();
    kms.create_kek_version(&org, 4).unwrap();
    assert_eq!(kms.current_kek_version(&org).unwrap(), 4);
    let dek = Dek::generate();
    let wrapped = kms.wrap_dek(&org, &dek).unwrap();
    assert_eq!(wrapped.kek_version, 4);
    assert!(kms.create_kek_version(&org, 3).is_err(), "versions only go up");
    assert_eq!(kms.rotate_kek(&org).unwrap(), 5);
    kms.remove_org(&org).unwrap();
    kms.remove_org(&org).unwrap();
    assert!(matches!(kms.unwrap_dek(&org, &wrapped), Err(KmsError::UnknownOrg(_) | KmsError::UnknownVersion { .. })));
    assert!(matches!(kms.current_kek_version(&org), Err(KmsError::UnknownOrg(_))));
    kms.create_kek_version(&org, 9).unwrap();
    assert_eq!(kms.current_kek_version(&org).unwrap(), 9);
    assert!(matches!(kms.unwrap_dek(&org, &wrapped), Err(KmsError::UnknownVersion { version: 4, .. })));

    let shredded = OrgId::generate();
    kms.create_org_kek(&shredded).unwrap();
    kms.destroy_org_keks(&shredded).unwrap();
    assert!(matches!(kms.create_kek_version(&shredded, 2), Err(KmsError::Destroyed(_))));
    assert!(matches!(kms.remove_org(&shredded), Err(KmsError::Destroyed(_))));
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
