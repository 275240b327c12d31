//! Configuration of the `aws-kms` backend, as the server reads it from TOML.

use std::net::IpAddr;

use serde::Deserialize;

use crate::OpenError;

/// The prefix of the aliases byok gives its keys by default: `alias/byok/<org id>`.
pub const DEFAULT_ALIAS_PREFIX: &str = "alias/byok";
/// Days a KEK byok deletes stays pending deletion by default: AWS KMS's minimum.
pub const DEFAULT_PENDING_WINDOW_DAYS: u32 = 7;
/// Attempts per AWS KMS call by default (the first one included).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// Settings that would hold AWS credentials. They never belong in the configuration:
/// a file that names one is refused (see [`is_credential_setting`]).
pub const CREDENTIAL_SETTINGS: &[&str] = &[
    "access_key_id",
    "secret_access_key",
    "session_token",
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
    "access_key",
    "secret_key",
    "credentials",
];

/// Where AWS credentials come from instead, for error messages.
pub const CREDENTIALS_COME_FROM: &str = "byok reads AWS credentials only from the standard AWS chain: \
     AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN) in the environment, a profile \
     (AWS_PROFILE and ~/.aws/credentials), web identity, or the instance's or task's role";

/// Whether `name` is a setting that would put AWS credentials in the configuration file.
pub fn is_credential_setting(name: &str) -> bool {
    CREDENTIAL_SETTINGS.iter().any(|setting| setting.eq_ignore_ascii_case(name))
}

/// Where the backend finds AWS KMS and which keys it uses.
///
/// The installation's own KMS, where byok creates a key per org and KEK version:
///
/// ```toml
/// [kms]
/// backend = "aws-kms"
///
/// [kms.aws]
/// region = "eu-central-1"
/// # endpoint_url = "https://vpce-0123-abcd.kms.eu-central-1.vpce.amazonaws.com"
/// # alias_prefix = "alias/byok"     # keys are found as alias/byok/<org id>[/v<n>]
/// # pending_window_days = 7         # 7–30: how long a deleted KEK can still be recovered
/// # max_attempts = 3
/// ```
///
/// A customer's own key (`key_arn`), which the customer grants to the platform's role:
///
/// ```toml
/// [kms.customer.acme-aws]
/// backend = "aws-kms"
/// key_arn = "arn:aws:kms:eu-central-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
/// ```
///
/// Credentials are never part of the configuration: they come from the standard AWS
/// chain (environment, profile, web identity, the instance's or task's role).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsKmsConfig {
    /// The AWS region (`eu-central-1`). Required unless `key_arn` is set, whose region
    /// it then defaults to.
    #[serde(default)]
    pub region: Option<String>,
    /// Another endpoint than the region's public one: a VPC endpoint, a FIPS endpoint, or
    /// a local KMS-compatible server in tests. `https://`, or `http://` on a loopback
    /// address only (DEKs travel in these requests).
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// A customer's own key (`arn:aws:kms:<region>:<account>:key/<key id>`): every KEK
    /// version of the orgs this KMS serves is this one key, told apart by the encryption
    /// context. Without it, byok creates one key per org and KEK version itself.
    #[serde(default)]
    pub key_arn: Option<String>,
    /// The prefix of the aliases of byok's own keys (`alias/byok`): the current KEK of an
    /// org is `<prefix>/<org id>`, version n `<prefix>/<org id>/v<n>`. Two installations
    /// sharing an AWS account and region need different prefixes.
    #[serde(default = "default_alias_prefix")]
    pub alias_prefix: String,
    /// Days a KEK that byok deletes (org deletion, retirement) stays pending deletion
    /// before AWS deletes it for good, 7 to 30. The key is unusable from the start.
    #[serde(default = "default_pending_window_days")]
    pub pending_window_days: u32,
    /// Attempts per AWS KMS call, the first included (1 to 10): throttling, server errors
    /// and lost connections are retried with backoff.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
}

fn default_alias_prefix() -> String {
    DEFAULT_ALIAS_PREFIX.to_owned()
}

fn default_pending_window_days() -> u32 {
    DEFAULT_PENDING_WINDOW_DAYS
}

fn default_max_attempts() -> u32 {
    DEFAULT_MAX_ATTEMPTS
}

impl AwsKmsConfig {
    /// byok's own keys in `region`, everything else by default.
    pub fn for_region(region: impl Into<String>) -> Self {
        Self {
            region: Some(region.into()),
            endpoint_url: None,
            key_arn: None,
            alias_prefix: default_alias_prefix(),
            pending_window_days: DEFAULT_PENDING_WINDOW_DAYS,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        }
    }

    /// A customer's key, in the key's region.
    pub fn for_customer_key(key_arn: impl Into<String>) -> Self {
        Self { region: None, key_arn: Some(key_arn.into()), ..Self::for_region(String::new()) }
    }

    /// Check every setting, as [`crate::AwsKms::open`] does, without contacting AWS.
    pub fn validate(&self) -> Result<(), OpenError> {
        self.resolve().map(drop)
    }

    /// Check every setting; what the backend runs with.
    pub(crate) fn resolve(&self) -> Result<Resolved, OpenError> {
        let key = self.key_arn.as_deref().map(KeyArn::parse).transpose()?;
        let region = match (&self.region, &key) {
            (Some(region), Some(key)) if region != &key.region => {
                return Err(config(format!(
                    "region '{region}' differs from the region of key_arn ({}); a KMS key is used in its own \
                     region: leave region out",
                    key.region
                )));
            }
            (Some(region), _) => region.clone(),
            (None, Some(key)) => key.region.clone(),
            (None, None) => return Err(config("`region` is missing (e.g. region = \"eu-central-1\")")),
        };
        check_region(&region)?;
        let endpoint_url = self.endpoint_url.as_deref().map(check_endpoint_url).transpose()?;
        check_alias_prefix(&self.alias_prefix)?;
        if !(7..=30).contains(&self.pending_window_days) {
            return Err(config(format!(
                "`pending_window_days` must be between 7 and 30 (AWS KMS's limits), not {}",
                self.pending_window_days
            )));
        }
        if !(1..=10).contains(&self.max_attempts) {
            return Err(config(format!("`max_attempts` must be between 1 and 10, not {}", self.max_attempts)));
        }
        Ok(Resolved {
            region,
            endpoint_url,
            customer_key: key.map(|key| key.arn),
            alias_prefix: self.alias_prefix.clone(),
            pending_window_days: self.pending_window_days,
            max_attempts: self.max_attempts,
        })
    }
}

/// A checked configuration.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub(crate) region: String,
    pub(crate) endpoint_url: Option<String>,
    pub(crate) customer_key: Option<String>,
    pub(crate) alias_prefix: String,
    pub(crate) pending_window_days: u32,
    pub(crate) max_attempts: u32,
}

fn config(message: impl Into<String>) -> OpenError {
    OpenError::Config(message.into())
}

/// The parts of a key ARN byok needs.
struct KeyArn {
    arn: String,
    region: String,
}

impl KeyArn {
    /// `arn:<partition>:kms:<region>:<12-digit account>:key/<key id>`.
    fn parse(text: &str) -> Result<Self, OpenError> {
        let refuse = |why: &str| {
            config(format!(
                "key_arn '{text}' {why}; it must be a key ARN: arn:aws:kms:<region>:<account>:key/<key id> \
                 (not an alias, not a bare key id)"
            ))
        };
        let parts: Vec<&str> = text.splitn(6, ':').collect();
        let [arn, partition, service, region, account, resource] = parts.as_slice() else {
            return Err(refuse("is not an ARN"));
        };
        if *arn != "arn" || partition.is_empty() || *service != "kms" {
            return Err(refuse("is not an AWS KMS ARN"));
        }
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(refuse("has no 12-digit account id"));
        }
        let Some(key_id) = resource.strip_prefix("key/") else {
            return Err(refuse("does not name a key"));
        };
        if key_id.is_empty() || !key_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(refuse("has no valid key id"));
        }
        check_region(region)?;
        Ok(Self { arn: text.to_owned(), region: (*region).to_owned() })
    }
}

fn check_region(region: &str) -> Result<(), OpenError> {
    let valid = !region.is_empty()
        && region.len() <= 32
        && region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !valid {
        return Err(config(format!("'{region}' is not an AWS region (e.g. eu-central-1)")));
    }
    Ok(())
}

/// `https://host[:port][/]`, or `http://` on a loopback address.
fn check_endpoint_url(text: &str) -> Result<String, OpenError> {
    let url = url::Url::parse(text).map_err(|e| config(format!("endpoint_url '{text}' is not a URL ({e})")))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(config("endpoint_url must not contain user info (credentials come from the AWS chain)"));
    }
    if url.query().is_some() || url.fragment().is_some() || !matches!(url.path(), "" | "/") {
        return Err(config(format!("endpoint_url '{text}' must be only a scheme, a host and a port")));
    }
    let loopback = match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => return Err(config(format!("endpoint_url '{text}' has no host"))),
    };
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => {
            return Err(config(format!(
                "endpoint_url '{text}' is plain http on a non-loopback address: DEKs travel in these requests; \
                 use https"
            )));
        }
        other => return Err(config(format!("endpoint_url '{text}' has scheme '{other}'; use https"))),
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// `alias/…` with the characters AWS allows in alias names, not in the reserved
/// `alias/aws/` namespace, leaving room for `/<org id>/v<n>`.
fn check_alias_prefix(prefix: &str) -> Result<(), OpenError> {
    let refuse = |why: &str| config(format!("alias_prefix '{prefix}' {why} (e.g. \"alias/byok\")"));
    let Some(rest) = prefix.strip_prefix("alias/") else { return Err(refuse("must start with 'alias/'")) };
    if rest.is_empty() || rest.starts_with('/') || rest.ends_with('/') || rest.contains("//") {
        return Err(refuse("needs a name after 'alias/' without empty parts"));
    }
    if rest == "aws" || rest.starts_with("aws/") {
        return Err(refuse("is in the namespace AWS reserves for its own keys"));
    }
    if !rest.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-')) {
        return Err(refuse("may contain only letters, digits, '/', '_' and '-'"));
    }
    if prefix.len() > 200 {
        return Err(refuse("is longer than 200 characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn parse(text: &str) -> Result<AwsKmsConfig, toml::de::Error> {
        toml::from_str(text)
    }

    const ARN: &str = "arn:aws:kms:eu-central-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

    #[test]
    fn parses_with_defaults() {
        let config = parse("region = \"eu-central-1\"\n").unwrap();
        assert_eq!(config, AwsKmsConfig::for_region("eu-central-1"));
        let resolved = config.resolve().unwrap();
        assert_eq!(resolved.region, "eu-central-1");
        assert_eq!(resolved.alias_prefix, DEFAULT_ALIAS_PREFIX);
        assert_eq!((resolved.pending_window_days, resolved.max_attempts), (7, 3));
        assert!(resolved.endpoint_url.is_none() && resolved.customer_key.is_none());
    }

    #[test]
    fn a_customer_key_gives_its_region() {
        let config = parse(&format!("key_arn = \"{ARN}\"\n")).unwrap();
        assert_eq!(config, AwsKmsConfig::for_customer_key(ARN));
        let resolved = config.resolve().unwrap();
        assert_eq!((resolved.region.as_str(), resolved.customer_key.as_deref()), ("eu-central-1", Some(ARN)));
        let same = parse(&format!("key_arn = \"{ARN}\"\nregion = \"eu-central-1\"\n")).unwrap();
        assert!(same.resolve().is_ok());
        let other = parse(&format!("key_arn = \"{ARN}\"\nregion = \"us-east-1\"\n")).unwrap();
        assert!(matches!(other.resolve(), Err(OpenError::Config(m)) if m.contains("its own region")));
    }

    #[test]
    fn mistakes_are_named() {
        let table = [
            ("", "`region` is missing"),
            ("region = \"EU central\"", "not an AWS region"),
            ("key_arn = \"alias/acme\"", "is not an ARN"),
            ("key_arn = \"arn:aws:kms:eu-central-1:111122223333:alias/acme\"", "does not name a key"),
            ("key_arn = \"arn:aws:s3:eu-central-1:111122223333:key/abc\"", "not an AWS KMS ARN"),
            ("key_arn = \"arn:aws:kms:eu-central-1:1111:key/abc\"", "12-digit account"),
            ("key_arn = \"arn:aws:kms:eu-central-1:111122223333:key/\"", "no valid key id"),
            ("region = \"us-east-1\"\nendpoint_url = \"kms.example\"", "is not a URL"),
            ("region = \"us-east-1\"\nendpoint_url = \"http://kms.example.com\"", "plain http"),
            ("region = \"us-east-1\"\nendpoint_url = \"http://10.0.0.8:4566\"", "plain http"),
            ("region = \"us-east-1\"\nendpoint_url = \"ftp://127.0.0.1\"", "scheme 'ftp'"),
            ("region = \"us-east-1\"\nendpoint_url = \"https://u:p@kms.example.com\"", "user info"),
            ("region = \"us-east-1\"\nendpoint_url = \"https://kms.example.com/x?y\"", "only a scheme"),
            ("region = \"us-east-1\"\nalias_prefix = \"byok\"", "must start with 'alias/'"),
            ("region = \"us-east-1\"\nalias_prefix = \"alias/aws/byok\"", "reserves"),
            ("region = \"us-east-1\"\nalias_prefix = \"alias/byok/\"", "empty parts"),
            ("region = \"us-east-1\"\nalias_prefix = \"alias/by ok\"", "only letters"),
            ("region = \"us-east-1\"\npending_window_days = 6", "between 7 and 30"),
            ("region = \"us-east-1\"\npending_window_days = 31", "between 7 and 30"),
            ("region = \"us-east-1\"\nmax_attempts = 0", "between 1 and 10"),
        ];
        for (text, needle) in table {
            let err = parse(text).unwrap().resolve().unwrap_err();
            assert!(err.to_string().contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn endpoints_are_normalized_and_loopback_http_is_allowed() {
        for (text, expected) in [
            ("http://127.0.0.1:5000/", "http://127.0.0.1:5000"),
            ("http://localhost:5000", "http://localhost:5000"),
            ("http://[::1]:5000", "http://[::1]:5000"),
            ("https://kms.eu-central-1.amazonaws.com", "https://kms.eu-central-1.amazonaws.com"),
        ] {
            assert_eq!(check_endpoint_url(text).unwrap(), expected);
        }
    }

    #[test]
    fn credentials_are_not_config_fields() {
        for name in CREDENTIAL_SETTINGS {
            assert!(is_credential_setting(name));
            assert!(is_credential_setting(&name.to_ascii_uppercase()));
            let err = parse(&format!("region = \"us-east-1\"\n{name} = \"x\"\n")).unwrap_err();
            assert!(err.to_string().contains("unknown field"), "{err}");
        }
        assert!(!is_credential_setting("region"));
        assert!(CREDENTIALS_COME_FROM.contains("AWS_ACCESS_KEY_ID"));
    }
}
