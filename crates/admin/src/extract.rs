//! A JSON body extractor whose refusals are [`ApiError`]s naming the problem.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON request body. An empty body reads as `{}`, so optional-only bodies may be
/// omitted; anything but a JSON object (serde would read an array as the fields in
/// order), unknown fields and malformed JSON are refused with serde's explanation.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::new(e.status(), "invalid_request", e.body_text()))?;
        let text: &[u8] = match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            None => b"{}",
            Some(b'{') => &bytes,
            Some(_) => return Err(ApiError::invalid("invalid request body: expected a JSON object")),
        };
        let mut deserializer = serde_json::Deserializer::from_slice(text);
        let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path == "." || inner.is_syntax() || inner.is_eof() {
                ApiError::invalid(format!("invalid request body: {inner}"))
            } else {
                ApiError::invalid(format!("invalid request body: {path}: {inner}"))
            }
        })?;
        deserializer.end().map_err(|e| ApiError::invalid(format!("invalid request body: {e}")))?;
        Ok(JsonBody(value))
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Optional {
        #[serde(default)]
        before: Option<String>,
    }

    async fn read(body: &'static str) -> Result<Optional, ApiError> {
        let request = Request::builder().body(Body::from(body)).unwrap();
        JsonBody::<Optional>::from_request(request, &()).await.map(|JsonBody(value)| value)
    }

    /// Only an object (or nothing) is a body: serde would read `[]` or `["x"]` as the
    /// fields in order, past `deny_unknown_fields`.
    #[tokio::test]
    async fn only_objects_are_bodies() {
        assert_eq!(read("").await.unwrap(), Optional::default());
        assert_eq!(read(" \n").await.unwrap(), Optional::default());
        assert_eq!(read(r#" {"before":"x"} "#).await.unwrap(), Optional { before: Some("x".into()) });
        for refused in ["[]", "[null]", r#"["x"]"#, "null", "1", "\"x\"", r#"{"other":1}"#, "{} {}", "{"] {
            let err = read(refused).await.unwrap_err();
            assert_eq!(err.status(), axum::http::StatusCode::BAD_REQUEST, "{refused}");
        }
    }
}
