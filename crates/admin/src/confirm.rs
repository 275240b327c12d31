//! Explicit confirmation: an operation that destroys something (revoking a credential,
//! rotating a KEK, deleting an org) runs only when the request says `confirm: true`,
//! never on defaults.

use serde::{Deserialize, Deserializer};

/// `true`, written out by the caller: it means the destructive call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Confirm;

impl Confirm {
    /// Read a query parameter's value (`confirm=true`).
    pub(crate) fn from_query(value: Option<&String>, what: &str) -> Result<Self, crate::error::ApiError> {
        match value.map(String::as_str) {
            Some("true") => Ok(Confirm),
            Some(other) => Err(crate::error::ApiError::invalid(format!(
                "confirm: '{}' is not true; {what}, so the request must say confirm=true",
                other.chars().take(40).collect::<String>().escape_debug()
            ))),
            None => Err(crate::error::ApiError::invalid(format!(
                "confirm: missing; {what}, so the request must say confirm=true"
            ))),
        }
    }
}

impl<'de> Deserialize<'de> for Confirm {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if bool::deserialize(deserializer)? {
            Ok(Confirm)
        } else {
            Err(serde::de::Error::custom("must be true: this operation cannot be undone"))
        }
    }
}

impl utoipa::PartialSchema for Confirm {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Boolean)
            .enum_values(Some([true]))
            .description(Some("Must be `true`: the operation cannot be undone."))
            .into()
    }
}

impl utoipa::ToSchema for Confirm {}

/// The body of a destructive operation that needs nothing else: `{"confirm": true}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmBody {
    /// Must be `true`.
    pub confirm: Confirm,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_true_confirms() {
        assert!(serde_json::from_str::<ConfirmBody>(r#"{"confirm":true}"#).is_ok());
        for refused in
            [r#"{"confirm":false}"#, r#"{"confirm":"true"}"#, r#"{"confirm":1}"#, "{}", r#"{"confirm":null}"#]
        {
            assert!(serde_json::from_str::<ConfirmBody>(refused).is_err(), "{refused}");
        }
        assert!(Confirm::from_query(Some(&"true".to_owned()), "x").is_ok());
        for refused in [Some("false"), Some("1"), Some("TRUE"), None] {
            let value = refused.map(str::to_owned);
            assert!(Confirm::from_query(value.as_ref(), "x").is_err(), "{refused:?}");
        }
    }
}
