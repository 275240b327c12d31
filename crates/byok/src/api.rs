//! The admin API as the CLI calls it: one [`ApiRequest`] per call, with typed bodies.
//!
//! A secret stays a [`SecretString`] inside its body struct until serde writes the
//! request body; only [`expose_secret_for_serde`] reads it, and only for that.

use std::collections::BTreeMap;

use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};

/// One call to the admin API.
#[derive(Debug)]
pub struct ApiRequest {
    /// HTTP method.
    pub method: Method,
    /// Path segments below the admin URL (`["v1", "orgs", "acme", "teams"]`); each is
    /// percent-encoded on its own, so a name can never change the path's shape.
    pub path: Vec<String>,
    /// Query parameters, in order; each key and value is form-encoded on its own.
    pub query: Vec<(String, String)>,
    /// JSON body, if any.
    pub body: Option<Body>,
}

impl ApiRequest {
    /// A `GET` of `path`.
    pub fn get(path: &[&str]) -> Self {
        Self::new(Method::GET, path, None)
    }

    /// A `POST` of `body` to `path`.
    pub fn post(path: &[&str], body: Body) -> Self {
        Self::new(Method::POST, path, Some(body))
    }

    /// A request with any method.
    pub fn new(method: Method, path: &[&str], body: Option<Body>) -> Self {
        Self { method, path: path.iter().map(|s| (*s).to_owned()).collect(), query: Vec::new(), body }
    }

    /// This request with the query parameter `key=value` added.
    pub fn with_query(mut self, key: &str, value: impl ToString) -> Self {
        self.query.push((key.to_owned(), value.to_string()));
        self
    }

    /// This request with `key=value` added when `value` is given.
    pub fn with_optional_query(self, key: &str, value: Option<impl ToString>) -> Self {
        match value {
            Some(value) => self.with_query(key, value),
            None => self,
        }
    }

    /// The value of query parameter `key`, if set (the last one wins, as on the server).
    pub fn query_value(&self, key: &str) -> Option<&str> {
        self.query.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// This request with query parameter `key` set to `value`, replacing any earlier value
    /// (how a paged command asks for the next page).
    pub fn replacing_query(mut self, key: &str, value: impl ToString) -> Self {
        self.query.retain(|(k, _)| k != key);
        self.with_query(key, value)
    }

    /// The secret this request carries, if any (so the client can make sure no answer
    /// or error echoes it).
    pub fn secret(&self) -> Option<&SecretString> {
        match &self.body {
            Some(Body::CreateCredential(b)) => Some(&b.secret),
            Some(Body::RotateCredential(b)) => Some(&b.secret),
            _ => None,
        }
    }
}

/// Every request body the CLI sends.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Body {
    /// `POST /v1/orgs`
    CreateOrg(CreateOrg),
    /// `POST /v1/orgs/{org}/admin-tokens`; its default, `{}`, is also the body of
    /// `…/credentials/{cred}/{disable,enable}`.
    Expiry(ExpiryOnly),
    /// `{"confirm": true}`: `…/credentials/{cred}/revoke`, `…/kek/rotate`.
    Confirm(Confirm),
    /// `POST /v1/orgs/{org}/teams`
    CreateTeam(CreateTeam),
    /// `POST /v1/orgs/{org}/workflows`
    CreateWorkflow(CreateWorkflow),
    /// `POST /v1/orgs/{org}/credentials`
    CreateCredential(CreateCredential),
    /// `PATCH /v1/orgs/{org}/credentials/{cred}`
    UpdateCredential(UpdateCredential),
    /// `POST …/credentials/{cred}/rotate`
    RotateCredential(RotateCredential),
    /// `POST /v1/orgs/{org}/tokens`
    CreateToken(CreateToken),
    /// `POST /v1/orgs/{org}/audit/verify`: a signed checkpoint, as `byok audit
    /// checkpoint` wrote it (passed on unchanged, so its signature still matches).
    Checkpoint(serde_json::Value),
    /// `POST /v1/orgs/{org}/audit/purge`
    PurgeAudit(PurgeAudit),
    /// `PUT /v1/orgs/{org}/kms`
    MoveKms(MoveKms),
    /// `PATCH /v1/orgs/{org}`
    PatchOrg(PatchOrg),
    /// `PUT /v1/orgs/{org}/controls`
    Controls(Controls),
    /// `PUT /v1/orgs/{org}/rate-card`
    RateCard(RateCard),
    /// `PUT /v1/orgs/{org}/budget`
    Budget(Budget),
    /// `PUT /v1/orgs/{org}/limits`, from flags.
    Limits(Limits),
    /// `PUT /v1/orgs/{org}/limits`, a document read from a file (passed on unchanged: the
    /// admin API says what is wrong with it).
    LimitsDocument(serde_json::Value),
}

/// One subject's rate limits: `{"rpm"?, "tpm"?}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RateLimit {
    /// Calls per minute.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    /// Tokens (input + output) per minute.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
}

impl RateLimit {
    fn is_empty(&self) -> bool {
        self.rpm.is_none() && self.tpm.is_none()
    }
}

/// `{"org"?, "teams"?, "tokens"?}`: an org's rate limits, whole (a limit left out is
/// removed).
#[derive(Debug, Default, Serialize)]
pub struct Limits {
    /// The whole org's.
    #[serde(skip_serializing_if = "RateLimit::is_empty")]
    pub org: RateLimit,
    /// Per team, by id or name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub teams: BTreeMap<String, RateLimit>,
    /// Per workload token, by id.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tokens: BTreeMap<String, RateLimit>,
}

/// `{"tier"}`
#[derive(Debug, Serialize)]
pub struct PatchOrg {
    /// The new billing tier.
    pub tier: String,
}

/// `{"max_credential_age_days"?, "allowed_source_cidrs"?}`: an org's katman-c controls,
/// whole (a control left out is removed).
#[derive(Debug, Default, Serialize)]
pub struct Controls {
    /// Maximum age of a credential's current version, in days.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_credential_age_days: Option<u32>,
    /// Networks data-plane calls are accepted from (CIDR).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_source_cidrs: Vec<String>,
}

/// `{"per_call","per_million_input_tokens","per_million_output_tokens"}`: amounts as
/// decimal strings (never JSON numbers, which may be inexact).
#[derive(Debug, Serialize)]
pub struct RateCard {
    /// Platform fee per allowed call.
    pub per_call: String,
    /// Platform fee per million input tokens.
    pub per_million_input_tokens: String,
    /// Platform fee per million output tokens.
    pub per_million_output_tokens: String,
}

/// `{"monthly_limit"?, "teams"?}`: an org's budget, whole (a limit left out is removed).
#[derive(Debug, Default, Serialize)]
pub struct Budget {
    /// The org's limit per UTC calendar month (decimal string).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monthly_limit: Option<String>,
    /// Team limits per UTC calendar month, by team id or name (decimal strings).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub teams: BTreeMap<String, String>,
}

/// `{"kms"}`
#[derive(Debug, Serialize)]
pub struct MoveKms {
    /// `default` or a customer-managed KMS's name.
    pub kms: String,
}

/// `{"name","tier"}`
#[derive(Debug, Serialize)]
pub struct CreateOrg {
    /// Org name.
    pub name: String,
    /// Billing tier.
    pub tier: String,
}

/// `{"expires_at"?}`; an empty object when there is no expiry.
#[derive(Debug, Default, Serialize)]
pub struct ExpiryOnly {
    /// RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// `{"confirm": true}`: the body of an operation that cannot be undone (the CLI's own
/// confirmation, where it asks one, comes before).
#[derive(Debug, Serialize)]
pub struct Confirm {
    confirm: bool,
}

impl Confirm {
    /// The caller means it.
    pub const YES: Confirm = Confirm { confirm: true };
}

/// `{"name"}`
#[derive(Debug, Serialize)]
pub struct CreateTeam {
    /// Team name.
    pub name: String,
}

/// `{"name","team"?}`
#[derive(Debug, Serialize)]
pub struct CreateWorkflow {
    /// Workflow name.
    pub name: String,
    /// Owning team, id or name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
}

/// A credential's allow-lists as written: teams and workflows by id or name.
/// Reading one back (`deny_unknown_fields`) refuses a scope with a dimension this CLI
/// does not know, rather than silently dropping it on update.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeLists {
    /// Model families.
    #[serde(default)]
    pub model_families: Vec<String>,
    /// Capabilities.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Modes.
    #[serde(default)]
    pub modes: Vec<String>,
    /// Teams (id or name).
    #[serde(default)]
    pub teams: Vec<String>,
    /// Workflows (id or name).
    #[serde(default)]
    pub workflows: Vec<String>,
}

/// `POST /v1/orgs/{org}/credentials`
#[derive(Debug, Serialize)]
pub struct CreateCredential {
    /// Credential name.
    pub name: String,
    /// Provider id.
    pub provider: String,
    /// The provider key.
    #[serde(serialize_with = "expose_secret_for_serde")]
    pub secret: SecretString,
    /// Scope allow-lists.
    pub scope: ScopeLists,
    /// Upstream base URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Priority.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    /// Share of the calls within its pool.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<u16>,
    /// The provider account's calls per minute.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    /// The provider account's tokens per minute.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    /// Verify the key with the provider before storing it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub verify: bool,
}

/// `PATCH /v1/orgs/{org}/credentials/{cred}`
#[derive(Debug, Default, PartialEq, Eq, Serialize)]
pub struct UpdateCredential {
    /// A full replacement scope.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<ScopeLists>,
    /// Absent: unchanged; `Some(None)` (JSON `null`): clear; `Some(Some(t))`: set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Option<String>>,
    /// New priority.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    /// New weight.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<u16>,
    /// Absent: unchanged; `Some(None)` (JSON `null`): remove; `Some(Some(n))`: set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpm: Option<Option<u64>>,
    /// As `rpm`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tpm: Option<Option<u64>>,
}

/// `{"secret"}`
#[derive(Debug, Serialize)]
pub struct RotateCredential {
    /// The new provider key.
    #[serde(serialize_with = "expose_secret_for_serde")]
    pub secret: SecretString,
}

/// `{"team","workflows"?,"expires_at"?,"name"?,"description"?}`
#[derive(Debug, Serialize)]
pub struct CreateToken {
    /// Team id or name.
    pub team: String,
    /// Workflows the token is restricted to.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub workflows: Vec<String>,
    /// RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// The token's name, unique in the org.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What it is for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// `{"before"?}`: remove audit entries older than this; absent: the org's retention.
#[derive(Debug, Default, Serialize)]
pub struct PurgeAudit {
    /// RFC 3339, or `retention`.
    pub before: String,
}

/// The one place a secret is read out of its wrapper: while serde writes the body.
fn expose_secret_for_serde<S: Serializer>(secret: &SecretString, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(secret.expose_secret())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_a_body_hides_the_secret() {
        let body =
            Body::RotateCredential(RotateCredential { secret: SecretString::from("sk-canary-debug".to_owned()) });
        assert!(!format!("{body:?}").contains("sk-canary-debug"));
        let request = ApiRequest::post(&["v1"], body);
        assert!(!format!("{request:?}").contains("sk-canary-debug"));
    }

    #[test]
    fn update_body_distinguishes_absent_from_null_expiry() {
        let unchanged = serde_json::to_value(UpdateCredential::default()).unwrap();
        assert_eq!(unchanged, serde_json::json!({}));
        let cleared = serde_json::to_value(UpdateCredential { expires_at: Some(None), ..Default::default() }).unwrap();
        assert_eq!(cleared, serde_json::json!({"expires_at": null}));
        let paces = UpdateCredential { rpm: Some(None), tpm: Some(Some(5)), weight: Some(2), ..Default::default() };
        assert_eq!(serde_json::to_value(paces).unwrap(), serde_json::json!({"rpm": null, "tpm": 5, "weight": 2}));
    }

    #[test]
    fn limits_leave_out_what_is_not_limited() {
        assert_eq!(serde_json::to_value(Limits::default()).unwrap(), serde_json::json!({}));
        let mut limits = Limits { org: RateLimit { rpm: Some(600), tpm: None }, ..Limits::default() };
        limits.teams.insert("research".into(), RateLimit { rpm: None, tpm: Some(5) });
        assert_eq!(
            serde_json::to_value(limits).unwrap(),
            serde_json::json!({"org": {"rpm": 600}, "teams": {"research": {"tpm": 5}}})
        );
    }
}
