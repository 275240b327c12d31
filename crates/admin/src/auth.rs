//! Admin authentication and org confinement.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use byok_domain::{Actor, AdminToken, Org};
use byok_vault::{Vault, VaultError};

use crate::error::ApiError;

/// The authenticated admin token of a request.
#[derive(Debug, Clone)]
pub struct Admin(pub AdminToken);

impl Admin {
    /// The actor recorded in lifecycle events.
    pub fn actor(&self) -> Actor {
        Actor::AdminToken { id: self.0.id }
    }

    /// Refuse unless this is the operator token.
    pub fn require_operator(&self, what: &str) -> Result<(), ApiError> {
        if self.0.is_operator() {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!("only the operator token may {what}")))
        }
    }

    /// Resolve `{org}` and check this token may act on it. An org-admin token gets the
    /// same refusal whether another org exists or not.
    pub async fn org(&self, vault: &Vault, reference: &str) -> Result<Org, ApiError> {
        match vault.org(reference).await {
            Ok(org) if self.0.may_access(&org.id) => Ok(org),
            Ok(_) | Err(VaultError::NotFound(_)) if !self.0.is_operator() => Err(ApiError::forbidden(format!(
                "this admin token is confined to its own org; '{reference}' is not it"
            ))),
            Ok(_) => Err(ApiError::forbidden("this admin token may not act on that org")),
            Err(err) => Err(err.into()),
        }
    }
}

impl FromRequestParts<Vault> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, vault: &Vault) -> Result<Self, Self::Rejection> {
        let presented = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or_else(ApiError::unauthorized)?;
        match vault.authenticate_admin(presented).await? {
            Some(token) => Ok(Admin(token)),
            None => Err(ApiError::unauthorized()),
        }
    }
}
