//! A test CA and a leaf it signed for `localhost` and `127.0.0.1`, written as PEM files:
//! what the data-plane listener's TLS is tested with.

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

pub struct Pki {
    dir: tempfile::TempDir,
    pub ca_pem: String,
}

impl Pki {
    /// `proxy.crt` (the chain: leaf, then CA), `proxy.key`, `ca.pem`, and two unusable
    /// files: `other.key` (a key of another certificate) and `not-pem.txt`.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "byok test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let mut leaf_params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        leaf_params.distinguished_name.push(DnType::CommonName, "byok data plane");
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
        std::fs::write(dir.path().join("proxy.crt"), format!("{}{}", leaf.pem(), ca_cert.pem())).unwrap();
        std::fs::write(dir.path().join("proxy.key"), leaf_key.serialize_pem()).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
        std::fs::write(dir.path().join("other.key"), KeyPair::generate().unwrap().serialize_pem()).unwrap();
        std::fs::write(dir.path().join("not-pem.txt"), "this is not a certificate\n").unwrap();
        Self { dir, ca_pem: ca_cert.pem() }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}
