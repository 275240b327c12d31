//! byok's domain: the nouns of the product contract and the rules that relate them.
//!
//! This crate does no I/O and never holds a secret. Everything here is plain data
//! plus pure functions (validation, scope admission, model-family matching), so the
//! rules can be tested exhaustively and reused by the admin API, the store and the
//! data plane alike.
#![forbid(unsafe_code)]

pub mod audit;
pub mod billing;
pub mod chain;
pub mod error;
pub mod export;
pub mod family;
pub mod ids;
pub mod lifecycle;
pub mod limits;
pub mod model;
pub mod name;
pub mod provider;
pub mod scope;
pub mod time;

pub use audit::{CallCompletion, CredentialOwner, Metering, Outcome, ResolutionAudit};
pub use billing::{
    Budget, CallPricing, Currency, Money, MoneyError, PriceBook, PricedCard, PricedProviderPrice, ProviderPrice,
    RateCard, Statement, UsageCounts, UsageKey, UsageLine,
};
pub use error::BoxError;
pub use family::{FamilyPattern, ModelFamilyRegistry};
pub use ids::{AdminTokenId, CredentialId, EventId, IdError, OrgId, TeamId, TokenId, WorkflowId};
pub use lifecycle::{Actor, LifecycleEvent, LifecycleKind};
pub use limits::{OrgLimits, RateLimit};
pub use model::{
    AdminToken, AdminTokenScope, Cidr, Credential, CredentialHealth, CredentialState, CredentialVersion, HealthState,
    Org, OrgControls, OrgState, Team, Tier, Workflow, WorkloadToken,
};
pub use name::{KmsName, Name, NameError};
pub use provider::{ProviderId, UnknownProvider};
pub use scope::{CallScope, Capability, Dimension, Mode, Scope, ScopeDenied, ScopeInput, Specificity};
pub use time::Timestamp;
