//! Scope: which calls a credential may serve, and how a call is described.
//!
//! A credential's scope is one provider plus five allow-lists; an empty list means "any".
//! The data plane derives a [`CallScope`] from each request and asks
//! [`Scope::admits`]; when several credentials admit a call, [`Specificity`] orders them.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::{TeamId, WorkflowId};
use crate::provider::ProviderId;

/// What an endpoint does, derived from the request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Capability {
    /// Chat completions / messages / generateContent.
    Chat,
    /// OpenAI Responses API.
    Responses,
    /// Legacy text completions.
    Completions,
    /// Embeddings.
    Embeddings,
    /// Image generation and editing.
    Images,
    /// Speech, transcription, translation.
    Audio,
    /// Moderation.
    Moderations,
    /// File uploads.
    Files,
    /// Batch jobs.
    Batches,
    /// Model listing.
    Models,
    /// Token counting.
    CountTokens,
    /// Realtime sessions.
    Realtime,
    /// An endpoint byok does not classify; only credentials without a capability
    /// restriction admit it.
    Other,
}

impl Capability {
    /// Every capability, in a stable order.
    pub const ALL: [Capability; 13] = [
        Capability::Chat,
        Capability::Responses,
        Capability::Completions,
        Capability::Embeddings,
        Capability::Images,
        Capability::Audio,
        Capability::Moderations,
        Capability::Files,
        Capability::Batches,
        Capability::Models,
        Capability::CountTokens,
        Capability::Realtime,
        Capability::Other,
    ];

    /// The capability as text.
    pub fn as_str(&self) -> &'static str {
        match self {
            Capability::Chat => "chat",
            Capability::Responses => "responses",
            Capability::Completions => "completions",
            Capability::Embeddings => "embeddings",
            Capability::Images => "images",
            Capability::Audio => "audio",
            Capability::Moderations => "moderations",
            Capability::Files => "files",
            Capability::Batches => "batches",
            Capability::Models => "models",
            Capability::CountTokens => "count_tokens",
            Capability::Realtime => "realtime",
            Capability::Other => "other",
        }
    }
}

impl std::str::FromStr for Capability {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Capability::ALL.into_iter().find(|c| c.as_str() == s).ok_or_else(|| {
            let known: Vec<&str> = Capability::ALL.iter().map(Capability::as_str).collect();
            format!("unknown capability '{s}'; known: {}", known.join(", "))
        })
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a call is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// One request, one response.
    Sync,
    /// A streamed response (SSE or chunked).
    Stream,
    /// A batch endpoint.
    Batch,
}

impl Mode {
    /// Every mode.
    pub const ALL: [Mode; 3] = [Mode::Sync, Mode::Stream, Mode::Batch];

    /// The mode as text.
    pub fn as_str(&self) -> &'static str {
        match self {
            Mode::Sync => "sync",
            Mode::Stream => "stream",
            Mode::Batch => "batch",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mode::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| format!("unknown mode '{s}'; known: sync, stream, batch"))
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A credential's allow-lists, as stored (teams and workflows by id).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Scope {
    /// Model families (see the family registry); empty = any model.
    #[serde(default)]
    pub model_families: Vec<String>,
    /// Capabilities; empty = any.
    #[serde(default)]
    pub capabilities: Vec<Capability>,
    /// Modes; empty = any.
    #[serde(default)]
    pub modes: Vec<Mode>,
    /// Teams; empty = every team of the org.
    #[serde(default)]
    pub teams: Vec<TeamId>,
    /// Workflows; empty = any workflow or none.
    #[serde(default)]
    pub workflows: Vec<WorkflowId>,
}

/// A scope as an admin writes it: teams and workflows by id or name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ScopeInput {
    /// Model families; empty = any model.
    #[serde(default)]
    pub model_families: Vec<String>,
    /// Capabilities; empty = any.
    #[serde(default)]
    pub capabilities: Vec<Capability>,
    /// Modes; empty = any.
    #[serde(default)]
    pub modes: Vec<Mode>,
    /// Teams by id or name; empty = every team.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::name::Name>))]
    pub teams: Vec<String>,
    /// Workflows by id or name; empty = any.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::name::Name>))]
    pub workflows: Vec<String>,
}

/// One scope dimension, as named in a denial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    /// The route's provider.
    Provider,
    /// The model family.
    ModelFamily,
    /// The endpoint's capability.
    Capability,
    /// sync / stream / batch.
    Mode,
    /// The workload token's team.
    Team,
    /// The `x-byok-workflow` header.
    Workflow,
}

impl Dimension {
    /// The dimension as text.
    pub fn as_str(&self) -> &'static str {
        match self {
            Dimension::Provider => "provider",
            Dimension::ModelFamily => "model_family",
            Dimension::Capability => "capability",
            Dimension::Mode => "mode",
            Dimension::Team => "team",
            Dimension::Workflow => "workflow",
        }
    }
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything the data plane knows about one call that scope can restrict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallScope {
    /// From the route prefix.
    pub provider: ProviderId,
    /// The model as the request names it, if any.
    pub model: Option<String>,
    /// The model's family, if the registry knows it.
    pub model_family: Option<String>,
    /// From the endpoint.
    pub capability: Capability,
    /// From the request (stream flag, batch endpoint).
    pub mode: Mode,
    /// From the workload token.
    pub team: TeamId,
    /// From `x-byok-workflow`, validated against the token.
    pub workflow: Option<WorkflowId>,
}

/// Why a scope refused a call: the dimension, what the credential allows, what the call was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct ScopeDenied {
    /// The first dimension that did not match (checked in the order of [`Dimension`]).
    pub dimension: Dimension,
    /// What the credential allows, as text (`openai`, `gpt-4o, o-series`).
    pub allowed: String,
    /// What the call was, as text (`anthropic`, `none`).
    pub actual: String,
}

impl ScopeDenied {
    fn describe(&self) -> String {
        let noun = match self.dimension {
            Dimension::Provider => "provider",
            Dimension::ModelFamily => "model families",
            Dimension::Capability => "capabilities",
            Dimension::Mode => "modes",
            Dimension::Team => "teams",
            Dimension::Workflow => "workflows",
        };
        format!("is bound to {noun} {}; this call is {} {}", self.allowed, call_noun(self.dimension), self.actual)
    }
}

fn call_noun(dimension: Dimension) -> &'static str {
    match dimension {
        Dimension::Provider => "to",
        Dimension::ModelFamily => "for model family",
        Dimension::Capability => "for capability",
        Dimension::Mode => "in mode",
        Dimension::Team => "from team",
        Dimension::Workflow => "for workflow",
    }
}

fn list<T: fmt::Display>(items: &[T]) -> String {
    items.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

fn allows<T: PartialEq>(allow_list: &[T], value: Option<&T>) -> bool {
    allow_list.is_empty() || value.is_some_and(|v| allow_list.contains(v))
}

impl Scope {
    /// Whether a credential for `provider` with this scope admits `call`; on refusal, the
    /// first dimension that did not match.
    pub fn admits(&self, provider: ProviderId, call: &CallScope) -> Result<(), ScopeDenied> {
        let deny = |dimension, allowed: String, actual: String| ScopeDenied { dimension, allowed, actual };
        if provider != call.provider {
            return Err(deny(Dimension::Provider, provider.to_string(), call.provider.to_string()));
        }
        if !allows(&self.model_families, call.model_family.as_ref()) {
            let actual = match (&call.model_family, &call.model) {
                (Some(family), _) => family.clone(),
                (None, Some(model)) => format!("none (model '{model}' is in no known family)"),
                (None, None) => "none (the request names no model)".to_owned(),
            };
            return Err(deny(Dimension::ModelFamily, self.model_families.join(", "), actual));
        }
        if !allows(&self.capabilities, Some(&call.capability)) {
            return Err(deny(Dimension::Capability, list(&self.capabilities), call.capability.to_string()));
        }
        if !allows(&self.modes, Some(&call.mode)) {
            return Err(deny(Dimension::Mode, list(&self.modes), call.mode.to_string()));
        }
        if !allows(&self.teams, Some(&call.team)) {
            return Err(deny(Dimension::Team, list(&self.teams), call.team.to_string()));
        }
        if !allows(&self.workflows, call.workflow.as_ref()) {
            let actual = call.workflow.map_or_else(|| "none (no x-byok-workflow header)".to_owned(), |w| w.to_string());
            return Err(deny(Dimension::Workflow, list(&self.workflows), actual));
        }
        Ok(())
    }

    /// Whether a credential for `provider` with this scope admits `call`: [`Scope::admits`]
    /// without building the refusal (resolution tries many credentials per call).
    pub fn admits_call(&self, provider: ProviderId, call: &CallScope) -> bool {
        provider == call.provider
            && allows(&self.model_families, call.model_family.as_ref())
            && allows(&self.capabilities, Some(&call.capability))
            && allows(&self.modes, Some(&call.mode))
            && allows(&self.teams, Some(&call.team))
            && allows(&self.workflows, call.workflow.as_ref())
    }

    /// How specific this scope is; larger is more specific.
    pub fn specificity(&self) -> Specificity {
        let restricted = [!self.model_families.is_empty(), !self.capabilities.is_empty(), !self.modes.is_empty()]
            .into_iter()
            .filter(|r| *r)
            .count();
        Specificity {
            workflow_bound: !self.workflows.is_empty(),
            team_bound: !self.teams.is_empty(),
            restricted_dimensions: u8::try_from(restricted).unwrap_or(u8::MAX),
        }
    }
}

/// The first part of the resolution order: workflow-bound over team-bound over org-wide,
/// then more restricted dimensions. (Priority, then newest, break remaining ties.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Specificity {
    /// The scope names workflows.
    pub workflow_bound: bool,
    /// The scope names teams.
    pub team_bound: bool,
    /// How many of model family, capability and mode are restricted.
    pub restricted_dimensions: u8,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call() -> CallScope {
        CallScope {
            provider: ProviderId::Openai,
            model: Some("gpt-4o-mini".into()),
            model_family: Some("gpt-4o-mini".into()),
            capability: Capability::Chat,
            mode: Mode::Stream,
            team: TeamId::generate(),
            workflow: None,
        }
    }

    #[test]
    fn empty_scope_admits_any_call_of_its_provider() {
        assert_eq!(Scope::default().admits(ProviderId::Openai, &call()), Ok(()));
    }

    #[test]
    fn each_dimension_denies_a_mismatch_and_names_itself() {
        let c = call();
        let wf = WorkflowId::generate();
        let table: Vec<(ProviderId, Scope, Dimension)> = vec![
            (ProviderId::Anthropic, Scope::default(), Dimension::Provider),
            (
                ProviderId::Openai,
                Scope { model_families: vec!["gpt-4o".into()], ..Scope::default() },
                Dimension::ModelFamily,
            ),
            (
                ProviderId::Openai,
                Scope { capabilities: vec![Capability::Embeddings], ..Scope::default() },
                Dimension::Capability,
            ),
            (ProviderId::Openai, Scope { modes: vec![Mode::Sync], ..Scope::default() }, Dimension::Mode),
            (ProviderId::Openai, Scope { teams: vec![TeamId::generate()], ..Scope::default() }, Dimension::Team),
            (ProviderId::Openai, Scope { workflows: vec![wf], ..Scope::default() }, Dimension::Workflow),
        ];
        for (provider, scope, dimension) in table {
            let denied = scope.admits(provider, &c).unwrap_err();
            assert_eq!(denied.dimension, dimension);
        }
    }

    #[test]
    fn provider_denial_reads_like_the_spec() {
        let mut c = call();
        c.provider = ProviderId::Anthropic;
        let denied = Scope::default().admits(ProviderId::Openai, &c).unwrap_err();
        assert_eq!(denied.to_string(), "is bound to provider openai; this call is to anthropic");
    }

    #[test]
    fn unknown_model_matches_only_unrestricted_families() {
        let mut c = call();
        c.model = Some("my-finetune".into());
        c.model_family = None;
        assert!(Scope::default().admits(ProviderId::Openai, &c).is_ok());
        let restricted = Scope { model_families: vec!["gpt-4o".into()], ..Scope::default() };
        let denied = restricted.admits(ProviderId::Openai, &c).unwrap_err();
        assert!(denied.actual.contains("my-finetune"));
    }

    #[test]
    fn matching_lists_admit() {
        let c = call();
        let wf = WorkflowId::generate();
        let mut with_wf = c.clone();
        with_wf.workflow = Some(wf);
        let scope = Scope {
            model_families: vec!["gpt-4o-mini".into()],
            capabilities: vec![Capability::Chat, Capability::Embeddings],
            modes: vec![Mode::Stream],
            teams: vec![c.team],
            workflows: vec![wf],
        };
        assert_eq!(scope.admits(ProviderId::Openai, &with_wf), Ok(()));
    }

    #[test]
    fn admits_call_agrees_with_admits_on_every_combination() {
        let team = TeamId::generate();
        let wf = WorkflowId::generate();
        let scopes: Vec<Scope> = (0u32..64)
            .map(|bits| Scope {
                model_families: if bits & 1 != 0 { vec!["gpt-4o-mini".into()] } else { vec![] },
                capabilities: if bits & 2 != 0 { vec![Capability::Embeddings] } else { vec![] },
                modes: if bits & 4 != 0 { vec![Mode::Stream] } else { vec![] },
                teams: if bits & 8 != 0 { vec![team] } else { vec![] },
                workflows: if bits & 16 != 0 { vec![wf] } else { vec![] },
            })
            .collect();
        let mut calls = Vec::new();
        for (family, team, workflow) in [
            (Some("gpt-4o-mini"), team, Some(wf)),
            (Some("gpt-4o"), team, None),
            (None, TeamId::generate(), Some(WorkflowId::generate())),
        ] {
            let mut c = call();
            c.model_family = family.map(str::to_owned);
            c.team = team;
            c.workflow = workflow;
            calls.push(c);
        }
        for (i, scope) in scopes.iter().enumerate() {
            for c in &calls {
                for provider in [ProviderId::Openai, ProviderId::Anthropic] {
                    let bits = u32::try_from(i).unwrap_or_default();
                    let provider = if bits & 32 != 0 { provider } else { ProviderId::Openai };
                    assert_eq!(scope.admits_call(provider, c), scope.admits(provider, c).is_ok(), "{scope:?} {c:?}");
                }
            }
        }
    }

    #[test]
    fn specificity_orders_workflow_over_team_over_org() {
        let org_wide = Scope {
            model_families: vec!["a".into()],
            capabilities: vec![Capability::Chat],
            modes: vec![Mode::Sync],
            ..Scope::default()
        };
        let team = Scope { teams: vec![TeamId::generate()], ..Scope::default() };
        let workflow = Scope { workflows: vec![WorkflowId::generate()], ..Scope::default() };
        assert!(workflow.specificity() > team.specificity());
        assert!(team.specificity() > org_wide.specificity());
        assert!(org_wide.specificity() > Scope::default().specificity());
    }

    #[test]
    fn scope_json_refuses_unknown_fields_and_values() {
        assert!(serde_json::from_str::<Scope>(r#"{"model_family":["x"]}"#).is_err());
        assert!(serde_json::from_str::<ScopeInput>(r#"{"capabilities":["chta"]}"#).is_err());
        assert!(serde_json::from_str::<ScopeInput>(r#"{"modes":["stream"]}"#).is_ok());
    }
}
