//! A credential's admin-set `base_url` is held to its provider's own hosts (SPEC §3,
//! upstream safety): https only (http where the operator allows it), no user info, query
//! or fragment, a host the provider's patterns or the operator's `allowed_hosts` admit,
//! and no IP address in any notation unless the operator lists exactly that address.
//! Refusals are 422 (`VaultError::Unprocessable`) and never repeat user info or a query.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use byok_crypto::{Kms, LocalKeyring, ProviderSecret};
use byok_domain::{Actor, ModelFamilyRegistry, OrgId, ProviderId, ScopeInput, Tier};
use byok_kms::KmsHandle;
use byok_store::testing::TestStore;
use byok_vault::{HostPattern, NewCredential, Vault, VaultError, VaultPolicy};

use ProviderId::{Anthropic, AzureOpenai as Azure, Openai};

/// The operator policies the table runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    /// The defaults: https, the providers' own hosts.
    Strict,
    /// `[credentials] allow_plain_http_base_url = true`.
    Http,
    /// Plain http allowed, and `[upstreams.openai] allowed_hosts = [...]`.
    Operator,
}

fn policy(which: Policy) -> VaultPolicy {
    match which {
        Policy::Strict => VaultPolicy::default(),
        Policy::Http => VaultPolicy { allow_plain_http_base_url: true, ..VaultPolicy::default() },
        Policy::Operator => ["llm.internal.example", "*.corp.example", "10.0.0.7", "[fd00::7]", "127.0.0.1"]
            .into_iter()
            .fold(VaultPolicy { allow_plain_http_base_url: true, ..VaultPolicy::default() }, |policy, p| {
                policy.allow_host(Openai, HostPattern::parse(p).unwrap())
            }),
    }
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

struct Env {
    t: TestStore,
    _dir: tempfile::TempDir,
    keyring: Arc<dyn Kms>,
    org: OrgId,
}

impl Env {
    async fn new() -> Self {
        let t = TestStore::sqlite().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let keyring: Arc<dyn Kms> = Arc::new(LocalKeyring::open(dir.path().join("keyring.json")).unwrap());
        let kms = KmsHandle::new(Arc::clone(&keyring), 2);
        let vault = Vault::new(t.store().clone(), kms, ModelFamilyRegistry::seeded(), policy(Policy::Strict));
        let org = vault.create_org(&Actor::System, "acme", Tier::KatmanB).await.unwrap().id;
        Self { t, _dir: dir, keyring, org }
    }

    fn vault(&self, which: Policy) -> Vault {
        let kms = KmsHandle::new(Arc::clone(&self.keyring), 2);
        Vault::new(self.t.store().clone(), kms, ModelFamilyRegistry::seeded(), policy(which))
    }

    async fn create(&self, which: Policy, provider: ProviderId, base_url: &str) -> Result<String, VaultError> {
        let new = NewCredential {
            name: format!("c-{}", NEXT.fetch_add(1, Ordering::Relaxed)),
            provider,
            secret: ProviderSecret::new("sk-canary-base-url-0123456789".to_owned()).unwrap(),
            scope: ScopeInput::default(),
            base_url: Some(base_url.to_owned()),
            expires_at: None,
            priority: None,
            weight: None,
            rpm: None,
            tpm: None,
            verify: false,
        };
        let created = self.vault(which).create_credential(&Actor::System, self.org, new).await?;
        Ok(created.base_url.unwrap())
    }
}

#[tokio::test]
async fn accepted_base_urls_are_stored_normalized() {
    let env = Env::new().await;
    let table: &[(Policy, ProviderId, &str, &str)] = &[
        (Policy::Strict, Azure, "https://acme.openai.azure.com", "https://acme.openai.azure.com"),
        (Policy::Strict, Azure, "https://acme.openai.azure.com/", "https://acme.openai.azure.com"),
        (Policy::Strict, Azure, "https://ACME.OpenAI.Azure.com/openai/", "https://acme.openai.azure.com/openai"),
        // A trailing dot names the same host; it is dropped.
        (Policy::Strict, Azure, "https://acme.openai.azure.com./", "https://acme.openai.azure.com"),
        (Policy::Strict, Azure, "https://acme.openai.azure.com:8443/x", "https://acme.openai.azure.com:8443/x"),
        (Policy::Strict, Azure, "https://acme.cognitiveservices.azure.com", "https://acme.cognitiveservices.azure.com"),
        (Policy::Strict, Azure, "https://acme.services.ai.azure.com", "https://acme.services.ai.azure.com"),
        (Policy::Strict, Openai, "https://api.openai.com/v1", "https://api.openai.com/v1"),
        (Policy::Strict, Openai, "https://api.openai.com:443", "https://api.openai.com"),
        // IDNA maps full-width letters to ASCII: this is api.openai.com itself.
        (Policy::Strict, Openai, "https://ａｐｉ.openai.com", "https://api.openai.com"),
        (Policy::Strict, Anthropic, "https://api.anthropic.com", "https://api.anthropic.com"),
        (Policy::Http, Azure, "http://acme.openai.azure.com", "http://acme.openai.azure.com"),
        // The operator's own hosts for openai.
        (Policy::Operator, Openai, "https://llm.internal.example/v1", "https://llm.internal.example/v1"),
        (Policy::Operator, Openai, "https://gw.corp.example", "https://gw.corp.example"),
        (Policy::Operator, Openai, "http://10.0.0.7:8000", "http://10.0.0.7:8000"),
        (Policy::Operator, Openai, "https://[fd00::7]/v1", "https://[fd00::7]/v1"),
        (Policy::Operator, Openai, "http://127.0.0.1:9000", "http://127.0.0.1:9000"),
        (Policy::Operator, Openai, "https://api.openai.com", "https://api.openai.com"),
    ];
    for (which, provider, input, stored) in table {
        match env.create(*which, *provider, input).await {
            Ok(got) => assert_eq!(&got, stored, "{which:?} {provider} {input}"),
            Err(err) => panic!("{which:?} {provider} {input} was refused: {err}"),
        }
    }
}

#[tokio::test]
async fn refused_base_urls_name_the_problem() {
    let env = Env::new().await;
    let not_ours = "is not one of";
    let ip = "is an IP address";
    let odd_ip = "non-canonical notation";
    let table: &[(Policy, ProviderId, &str, &str)] = &[
        // Scheme, form, user info, query, fragment.
        (Policy::Strict, Azure, "acme.openai.azure.com", "not an absolute URL"),
        (Policy::Strict, Azure, "http://acme.openai.azure.com", "plain http"),
        (Policy::Strict, Openai, "http://10.0.0.1", "plain http"),
        (Policy::Strict, Openai, "ftp://api.openai.com", "scheme 'ftp'"),
        (Policy::Strict, Openai, "https://user:sk-secret-pw@api.openai.com", "user info"),
        (Policy::Strict, Azure, "https://acme.openai.azure.com@evil.example", "user info"),
        (Policy::Strict, Openai, "https://api.openai.com/v1?key=sk-secret-q", "query or fragment"),
        (Policy::Strict, Openai, "https://api.openai.com/v1#sk-secret-f", "query or fragment"),
        // Hosts that are not the provider's.
        (Policy::Strict, Azure, "https://openai.azure.com", not_ours),
        (Policy::Strict, Azure, "https://a.b.openai.azure.com", not_ours),
        (Policy::Strict, Azure, "https://acme.openai.azure.com.evil.example", not_ours),
        (Policy::Strict, Azure, "https://acme-openai.azure.com", not_ours),
        (Policy::Strict, Azure, "https://evil.example/acme.openai.azure.com", not_ours),
        (Policy::Strict, Azure, "https://*.openai.azure.com", "not a valid host name"),
        (Policy::Strict, Openai, "https://api.openai.com.evil.example", not_ours),
        (Policy::Strict, Openai, "https://localhost", not_ours),
        (Policy::Strict, Openai, "https://localhost.", not_ours),
        (Policy::Strict, Openai, "https://metadata.google.internal/computeMetadata/v1", not_ours),
        (Policy::Strict, Openai, "https://api.anthropic.com", not_ours),
        // IDNA homographs: Cyrillic 'а' and 'і' are other hosts.
        (Policy::Strict, Openai, "https://\u{430}pi.openai.com", not_ours),
        (Policy::Strict, Openai, "https://api.opena\u{456}.com", not_ours),
        (Policy::Strict, Azure, "https://acme.open\u{430}i.azure.com", not_ours),
        // IP addresses in every notation.
        (Policy::Strict, Openai, "https://127.0.0.1", ip),
        (Policy::Strict, Openai, "https://127.0.0.1:8443/v1", ip),
        (Policy::Strict, Openai, "https://169.254.169.254/latest/meta-data", ip),
        (Policy::Strict, Openai, "https://10.1.2.3", ip),
        (Policy::Strict, Openai, "https://8.8.8.8", ip),
        (Policy::Strict, Openai, "https://[::1]", ip),
        (Policy::Strict, Openai, "https://[fd00:ec2::254]", ip),
        (Policy::Strict, Openai, "https://[::ffff:7f00:1]", ip),
        (Policy::Strict, Openai, "https://0x7f.1", odd_ip),
        (Policy::Strict, Openai, "https://0x7f000001", odd_ip),
        (Policy::Strict, Openai, "https://2130706433", odd_ip),
        (Policy::Strict, Openai, "https://0177.0.0.1", odd_ip),
        (Policy::Strict, Openai, "https://127.1", odd_ip),
        (Policy::Strict, Openai, "https://[::ffff:127.0.0.1]", odd_ip),
        (Policy::Strict, Openai, "https://[0:0:0:0:0:0:0:1]", odd_ip),
        (Policy::Http, Azure, "http://127.0.0.1:9000", ip),
        (Policy::Http, Azure, "http://localhost:9000", not_ours),
        // The operator's extensions are exactly what they say.
        (Policy::Operator, Openai, "https://a.b.corp.example", not_ours),
        (Policy::Operator, Openai, "https://corp.example", not_ours),
        (Policy::Operator, Openai, "https://llm.internal.example.evil.example", not_ours),
        (Policy::Operator, Openai, "https://10.0.0.8", ip),
        (Policy::Operator, Openai, "https://0x0a.0.0.7", odd_ip),
        (Policy::Operator, Openai, "https://167772167", odd_ip),
        (Policy::Operator, Openai, "https://[::ffff:a00:7]", ip),
        (Policy::Operator, Openai, "https://[::1]", ip),
        (Policy::Operator, Openai, "https://localhost", not_ours),
        (Policy::Operator, Anthropic, "https://llm.internal.example", not_ours),
        (Policy::Operator, Anthropic, "https://10.0.0.7", ip),
        (Policy::Operator, Azure, "http://127.0.0.1:9000", ip),
    ];
    for (which, provider, input, why) in table {
        let err = match env.create(*which, *provider, input).await {
            Ok(stored) => panic!("{which:?} {provider} {input} was accepted as {stored}"),
            Err(err) => err,
        };
        assert!(matches!(err, VaultError::Unprocessable(_)), "{input}: {err:?}");
        let text = err.to_string();
        assert!(text.contains(why), "{which:?} {provider} {input}: {text}");
        assert!(text.starts_with("base_url '"), "{text}");
        for secret in ["sk-secret", "user:", "acme.openai.azure.com@"] {
            assert!(!text.contains(secret), "{input}: the message repeats '{secret}': {text}");
        }
    }
    // Nothing refused was written.
    let org = env.t.store().find_org_by_name("acme").await.unwrap().unwrap();
    assert!(env.t.store().list_credentials(&org.id).await.unwrap().is_empty());
}

#[tokio::test]
async fn messages_list_the_hosts_that_would_do() {
    let env = Env::new().await;
    let text = env.create(Policy::Strict, Azure, "https://evil.example").await.unwrap_err().to_string();
    for needle in ["*.openai.azure.com", "*.cognitiveservices.azure.com", "*.services.ai.azure.com", "allowed_hosts"] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
    let text = env.create(Policy::Operator, Openai, "https://evil.example").await.unwrap_err().to_string();
    for needle in ["api.openai.com", "llm.internal.example", "*.corp.example", "[fd00::7]"] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
    let text = env.create(Policy::Strict, Openai, "https://u:sk-secret@x.example/a?k=sk-secret").await.unwrap_err();
    assert_eq!(
        text.to_string(),
        "base_url 'https://***@x.example/a?***': it must not contain user info (put keys in the secret, not the URL)"
    );
}
