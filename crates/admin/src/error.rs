//! Error answers: `{"error":{"code","message"}}` with a status that says whose fault it was.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use byok_vault::VaultError;
use serde::Serialize;

/// The JSON error body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable code: `invalid_request` (400: the body or a parameter breaks the
    /// schema), `unauthorized` (401), `forbidden` or `tier_forbids` (403), `not_found`
    /// (404: the path, or a name in the body, refers to nothing), `conflict` (409),
    /// `unprocessable` (422: well-formed, but breaks a rule the schema cannot state),
    /// `credential_invalid` (422: the provider rejected the key of a credential created
    /// with `"verify": true`; nothing was stored),
    /// `store_unavailable` or `kms_unavailable` (503), `internal` (500).
    pub code: &'static str,
    /// What is wrong, for a person.
    pub message: String,
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// An answer with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    /// 400 invalid_request.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// 422 unprocessable: well-formed, but breaks a rule the schema cannot state.
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable", message)
    }

    /// 401 unauthorized.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing, unknown, expired or revoked admin token; send `Authorization: Bearer <admin token>`",
        )
    }

    /// 403 forbidden.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404 not_found.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<VaultError> for ApiError {
    fn from(err: VaultError) -> Self {
        let message = byok_domain::error::report(&err);
        match err {
            VaultError::Invalid(_) => Self::invalid(message),
            VaultError::Unprocessable(_) => Self::unprocessable(message),
            VaultError::CredentialInvalid(_) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "credential_invalid", message)
            }
            VaultError::NotFound(_) => Self::not_found(message),
            VaultError::Forbidden(_) => Self::forbidden(message),
            VaultError::Conflict(_) => Self::new(StatusCode::CONFLICT, "conflict", message),
            VaultError::TierForbids(_) => Self::new(StatusCode::FORBIDDEN, "tier_forbids", message),
            VaultError::StoreUnavailable(_) => Self::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", message),
            VaultError::KmsUnavailable(_) => Self::new(StatusCode::SERVICE_UNAVAILABLE, "kms_unavailable", message),
            _ => {
                tracing::error!(error = %message, "internal error in the admin API");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; see the server log")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: ErrorDetail { code: self.code, message: self.message } };
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        response
    }
}
