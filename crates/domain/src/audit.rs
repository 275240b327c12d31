//! `CredentialResolutionAudit`: one row per call, allowed or denied, written before the
//! credential is used; and the call's completion, recorded against the same call id.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::{CredentialId, OrgId, TeamId, TokenId, WorkflowId};
use crate::model::Tier;
use crate::provider::ProviderId;
use crate::scope::{Capability, Mode};
use crate::time::Timestamp;

/// Whether a resolution let the call through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A credential was chosen and used.
    Allowed,
    /// The call was refused; nothing was sent upstream.
    Denied,
}

impl Outcome {
    /// The outcome as text.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Denied => "denied",
        }
    }
}

impl std::str::FromStr for Outcome {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "allowed" => Ok(Outcome::Allowed),
            "denied" => Ok(Outcome::Denied),
            other => Err(format!("unknown outcome '{other}'; expected allowed or denied")),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whose credential served a call: the org's own, or one of the platform's (katman-a
/// calls that none of the org's credentials admits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CredentialOwner {
    /// The calling org's own credential.
    #[default]
    Org,
    /// A credential of the operator's platform pool.
    Platform,
}

impl CredentialOwner {
    /// The owner as text.
    pub fn as_str(&self) -> &'static str {
        match self {
            CredentialOwner::Org => "org",
            CredentialOwner::Platform => "platform",
        }
    }
}

impl std::str::FromStr for CredentialOwner {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "org" => Ok(CredentialOwner::Org),
            "platform" => Ok(CredentialOwner::Platform),
            other => Err(format!("unknown credential owner '{other}'; expected org or platform")),
        }
    }
}

impl fmt::Display for CredentialOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One resolution: who asked, for what, which credential answered, and the outcome.
/// Fields the sidecar could not establish (an unknown token has no org) are `None`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ResolutionAudit {
    /// Position in the store's audit order (assigned by the store; 0 before).
    pub seq: i64,
    /// When (UTC, microseconds).
    pub at: Timestamp,
    /// The call id (`x-byok-call-id` or a generated ULID).
    pub call_id: String,
    /// The org of the workload token.
    pub org_id: Option<OrgId>,
    /// The token's team.
    pub team_id: Option<TeamId>,
    /// The workflow named by `x-byok-workflow`.
    pub workflow_id: Option<WorkflowId>,
    /// The workload token.
    pub token_id: Option<TokenId>,
    /// The credential chosen (or pinned and refused).
    pub credential_id: Option<CredentialId>,
    /// Its version in force.
    pub credential_version: Option<u32>,
    /// Its fingerprint in force.
    pub fingerprint: Option<String>,
    /// The route's provider.
    pub provider: Option<ProviderId>,
    /// The model the request named.
    pub model: Option<String>,
    /// The model's family.
    pub model_family: Option<String>,
    /// From the endpoint.
    pub capability: Option<Capability>,
    /// sync / stream / batch.
    pub mode: Option<Mode>,
    /// allowed / denied.
    pub outcome: Outcome,
    /// The denial code (`scope_denied`, …); `None` when allowed.
    pub reason: Option<String>,
    /// The denial message (never a secret).
    pub detail: Option<String>,
    /// The org's billing tier when the call was made.
    #[serde(default)]
    pub tier: Option<Tier>,
    /// Whose credential it was (`org` or `platform`), when there was one.
    #[serde(default)]
    pub credential_owner: Option<CredentialOwner>,
    /// Which attempt of the call this is (1, 2, … when byok failed over to another
    /// credential); `None` on rows written before failover existed and on denials
    /// before a credential was tried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
}

/// Longest call id the audit keeps, in bytes (the sidecar generates one for a longer
/// `x-byok-call-id`).
pub const CALL_ID_MAX_LEN: usize = 128;
/// Longest model name the audit keeps, in bytes (the longest real model ids, Bedrock
/// inference-profile ARNs, are about 100).
pub const MODEL_MAX_LEN: usize = 256;
/// Longest denial message the audit keeps, in bytes (messages may quote what the caller
/// sent: a workflow or credential reference, a path).
pub const DETAIL_MAX_LEN: usize = 1024;

/// `text` as the audit keeps text that came from a caller: control characters (and the
/// bidirectional overrides that reorder what a terminal shows) escaped as `\u{…}`
/// (`\n`, `\t`, `\r` for those), then cut at a character boundary to at most `max`
/// bytes, ending in `…` when cut. Applying it twice changes nothing.
pub fn bounded_text(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max && !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let escaped = escaped_text(text);
    if escaped.len() <= max {
        return escaped;
    }
    const MARK: char = '…';
    let mut end = max.saturating_sub(MARK.len_utf8());
    while !escaped.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = String::with_capacity(end + MARK.len_utf8());
    out.push_str(&escaped[..end]);
    if max >= MARK.len_utf8() {
        out.push(MARK);
    }
    Cow::Owned(out)
}

/// `text` with its control characters (and the bidirectional overrides that reorder
/// what a terminal shows) escaped as `\u{…}` (`\n`, `\t`, `\r` for those): safe to put
/// in front of a person, in a log line or a table cell. Applying it twice changes nothing.
pub fn escaped_text(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if needs_escape(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Control characters, and the formatting characters that reorder displayed text
/// (bidirectional embeddings, overrides and isolates).
fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn bound_in_place(text: &mut String, max: usize) {
    if let Cow::Owned(bounded) = bounded_text(text, max) {
        *text = bounded;
    }
}

impl ResolutionAudit {
    /// A denied row for `call_id`, stamped now, with nothing else established yet: what
    /// the sidecar fills in as the call goes through its phases.
    pub fn denied(call_id: String) -> Self {
        Self {
            seq: 0,
            at: Timestamp::now(),
            call_id,
            org_id: None,
            team_id: None,
            workflow_id: None,
            token_id: None,
            credential_id: None,
            credential_version: None,
            fingerprint: None,
            provider: None,
            model: None,
            model_family: None,
            capability: None,
            mode: None,
            outcome: Outcome::Denied,
            reason: None,
            detail: None,
            tier: None,
            credential_owner: None,
            attempt: None,
        }
    }

    /// The row with the text a caller could choose made safe to keep (see
    /// [`bounded_text`]): the call id to [`CALL_ID_MAX_LEN`], the model to
    /// [`MODEL_MAX_LEN`], the denial message (which may quote the request) to
    /// [`DETAIL_MAX_LEN`]. The other text fields are byok's own (ids, codes, the
    /// registry's family names).
    pub fn with_bounded_text(mut self) -> Self {
        bound_in_place(&mut self.call_id, CALL_ID_MAX_LEN);
        if let Some(model) = &mut self.model {
            bound_in_place(model, MODEL_MAX_LEN);
        }
        if let Some(detail) = &mut self.detail {
            bound_in_place(detail, DETAIL_MAX_LEN);
        }
        self
    }
}

/// How a call ended, recorded against its call id when it completes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CallCompletion {
    /// The call id of the resolution row.
    pub call_id: String,
    /// The org (for per-org queries).
    pub org_id: OrgId,
    /// The credential used.
    pub credential_id: CredentialId,
    /// When the call ended.
    pub at: Timestamp,
    /// The upstream's HTTP status, if it answered.
    pub upstream_status: Option<u16>,
    /// From receiving the request to the end of the response body, in microseconds.
    pub latency_us: i64,
    /// Input tokens reported by the provider.
    pub input_tokens: Option<u64>,
    /// Output tokens reported by the provider.
    pub output_tokens: Option<u64>,
    /// `completed`, `client_cancelled`, `upstream_error`, `upstream_unreachable`,
    /// `upstream_timeout`, `kms_unavailable`, `store_unavailable`.
    pub status: String,
    /// How the call is billed, fixed when it was made (absent on calls recorded before
    /// metering existed).
    #[serde(default)]
    pub metering: Option<Metering>,
}

impl CallCompletion {
    /// The completion with its call id bounded exactly as its resolution row's is (see
    /// [`ResolutionAudit::with_bounded_text`]).
    pub fn with_bounded_text(mut self) -> Self {
        bound_in_place(&mut self.call_id, CALL_ID_MAX_LEN);
        self
    }

    /// Whether the provider answered (only such calls are billed).
    pub fn answered(&self) -> bool {
        self.upstream_status.is_some_and(|s| s >= 100)
    }
}

/// What a completion records so that its call can be priced — and re-priced by anyone
/// holding the audit — exactly as it was when the call was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Metering {
    /// The calling token's team.
    pub team_id: TeamId,
    /// The org's tier when the call was made.
    pub tier: Tier,
    /// Whose credential served it.
    pub credential_owner: CredentialOwner,
    /// The route's provider.
    pub provider: ProviderId,
    /// The model family (`None`: the model is in no family).
    pub model_family: Option<String>,
    /// The rate card in force: `CUR:per_call:per_million_in:per_million_out`.
    pub rate_card: String,
    /// The provider price in force for platform-served calls: `CUR:per_million_in:per_million_out`.
    pub provider_price: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_text_is_escaped_and_capped_once_and_for_all() {
        let cases: [(&str, usize, &str); 7] = [
            ("gpt-4o", 256, "gpt-4o"),
            ("gpt\u{1b}[31m-4o\n", 256, "gpt\\u{1b}[31m-4o\\n"),
            ("a\tb\u{7f}\u{9b}", 256, "a\\tb\\u{7f}\\u{9b}"),
            ("abc\u{202e}def", 256, "abc\\u{202e}def"),
            ("abcdefghij", 8, "abcde…"),
            // Never cut inside a character.
            ("ééééé", 7, "éé…"),
            ("\u{1b}\u{1b}", 12, "\\u{1b}\\u{1b}"),
        ];
        for (text, max, expected) in cases {
            let once = bounded_text(text, max);
            assert_eq!(once, expected, "{text:?}");
            assert!(once.len() <= max, "{text:?}");
            assert_eq!(bounded_text(&once, max), once, "{text:?}: a second pass changes nothing");
        }
        assert!(matches!(bounded_text("plain", 10), Cow::Borrowed(_)));
    }

    #[test]
    fn a_row_keeps_bounded_caller_text_only() {
        let row = ResolutionAudit {
            model: Some(format!("m\u{1b}{}", "x".repeat(1000))),
            reason: Some("scope_denied".into()),
            detail: Some(format!("workflow: unknown workflow '{}'", "w".repeat(70_000))),
            ..ResolutionAudit::denied("c".repeat(500))
        }
        .with_bounded_text();
        assert!(row.call_id.len() <= CALL_ID_MAX_LEN);
        let model = row.model.unwrap_or_default();
        assert!(model.starts_with("m\\u{1b}x") && model.len() <= MODEL_MAX_LEN, "{model}");
        let detail = row.detail.unwrap_or_default();
        assert!(detail.starts_with("workflow: unknown workflow 'www") && detail.len() <= DETAIL_MAX_LEN);
        assert_eq!(row.reason.as_deref(), Some("scope_denied"));
    }
}
