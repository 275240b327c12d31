//! Envelope encryption and the local keyring, through the public interface.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use byok_crypto::kms::conformance;
use byok_crypto::{open, seal, CryptoError, Kms, LocalKeyring, ProviderSecret, SecretContext};
use byok_domain::{CredentialId, OrgId, ProviderId};

fn keyring() -> (tempfile::TempDir, LocalKeyring) {
    let dir = tempfile::tempdir().unwrap();
    let kms = LocalKeyring::open(dir.path().join("keyring.json")).unwrap();
    (dir, kms)
}

fn context(kms: &LocalKeyring) -> SecretContext {
    let org = OrgId::generate();
    kms.create_org_kek(&org).unwrap();
    SecretContext { org, credential: CredentialId::generate(), version: 1, provider: ProviderId::Openai }
}

fn secret(text: &str) -> ProviderSecret {
    ProviderSecret::new(text.to_owned()).unwrap()
}

#[test]
fn local_keyring_passes_the_kms_conformance_suite() {
    let (_dir, kms) = keyring();
    conformance::run_all(&kms);
}

#[test]
fn sealed_secret_opens_with_its_own_context() {
    let (_dir, kms) = keyring();
    let ctx = context(&kms);
    let sealed = seal(&kms, &ctx, &secret("sk-canary-opens-1")).unwrap();
    assert_eq!(sealed.aead, "A256GCM");
    assert_eq!(sealed.wrapped_dek.kek_version, 1);
    assert!(!sealed.ciphertext.windows(17).any(|w| w == b"sk-canary-opens-1"));
    assert_eq!(open(&kms, &ctx, &sealed).unwrap().expose(), "sk-canary-opens-1");
}

#[test]
fn sealed_secret_refuses_any_other_context() {
    let (_dir, kms) = keyring();
    let ctx = context(&kms);
    let sealed = seal(&kms, &ctx, &secret("sk-bound-0123456789abcdef")).unwrap();
    let other_org = context(&kms).org;
    let cases = [
        ("other credential", SecretContext { credential: CredentialId::generate(), ..ctx }),
        ("other version", SecretContext { version: 2, ..ctx }),
        ("other provider", SecretContext { provider: ProviderId::Anthropic, ..ctx }),
        ("other org", SecretContext { org: other_org, ..ctx }),
    ];
    for (what, wrong) in cases {
        let result = open(&kms, &wrong, &sealed);
        assert!(result.is_err(), "{what} must not open");
    }
}

#[test]
fn ciphertexts_swapped_between_credentials_fail() {
    let (_dir, kms) = keyring();
    let a = context(&kms);
    let b = SecretContext { credential: CredentialId::generate(), ..a };
    let sealed_a = seal(&kms, &a, &secret("sk-a-0123456789abcdef")).unwrap();
    let sealed_b = seal(&kms, &b, &secret("sk-b-0123456789abcdef")).unwrap();
    // Whole record swapped.
    assert!(matches!(open(&kms, &b, &sealed_a), Err(CryptoError::Integrity)));
    // Only the ciphertext swapped (the DEK stays).
    let mut mixed = sealed_b.clone();
    mixed.ciphertext = sealed_a.ciphertext.clone();
    mixed.nonce = sealed_a.nonce.clone();
    assert!(matches!(open(&kms, &b, &mixed), Err(CryptoError::Integrity)));
    // Only the wrapped DEK swapped.
    let mut mixed = sealed_b;
    mixed.wrapped_dek = sealed_a.wrapped_dek;
    assert!(matches!(open(&kms, &b, &mixed), Err(CryptoError::Integrity)));
}

#[test]
fn every_flipped_bit_fails() {
    let (_dir, kms) = keyring();
    let ctx = context(&kms);
    let sealed = seal(&kms, &ctx, &secret("sk-flip-0123456789abcdef")).unwrap();
    for byte in 0..sealed.ciphertext.len() {
        for bit in 0..8 {
            let mut bad = sealed.clone();
            bad.ciphertext[byte] ^= 1 << bit;
            assert!(open(&kms, &ctx, &bad).is_err(), "ciphertext byte {byte} bit {bit}");
        }
    }
    for byte in 0..sealed.nonce.len() {
        let mut bad = sealed.clone();
        bad.nonce[byte] ^= 0x80;
        assert!(open(&kms, &ctx, &bad).is_err(), "nonce byte {byte}");
    }
    for byte in 0..sealed.wrapped_dek.bytes.len() {
        let mut bad = sealed.clone();
        bad.wrapped_dek.bytes[byte] ^= 0x01;
        assert!(open(&kms, &ctx, &bad).is_err(), "wrapped DEK byte {byte}");
    }
}

#[test]
fn keyring_persists_with_mode_0600_and_never_holds_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyring.json");
    let kms = LocalKeyring::open(&path).unwrap();
    let ctx = context(&kms);
    let sealed = seal(&kms, &ctx, &secret("sk-canary-keyring-4242")).unwrap();
    kms.rotate_kek(&ctx.org).unwrap();
    drop(kms);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let bytes = std::fs::read(&path).unwrap();
    assert!(!bytes.windows(22).any(|w| w == b"sk-canary-keyring-4242"));
    let reopened = LocalKeyring::open(&path).unwrap();
    assert_eq!(reopened.current_kek_version(&ctx.org).unwrap(), 2);
    assert_eq!(open(&reopened, &ctx, &sealed).unwrap().expose(), "sk-canary-keyring-4242");
}

#[cfg(unix)]
#[test]
fn keyring_readable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyring.json");
    drop(LocalKeyring::open(&path).unwrap());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = LocalKeyring::open(&path).unwrap_err();
    assert!(err.to_string().contains("chmod 600"), "{err}");
}

#[test]
fn crypto_shredded_org_cannot_open_its_ciphertexts() {
    let (_dir, kms) = keyring();
    let ctx = context(&kms);
    let sealed = seal(&kms, &ctx, &secret("sk-shred-0123456789abcdef")).unwrap();
    kms.destroy_org_keks(&ctx.org).unwrap();
    assert!(matches!(open(&kms, &ctx, &sealed), Err(CryptoError::Kms(_))));
}
