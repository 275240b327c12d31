//! Body and query-string extractors whose refusals are [`ApiError`]s naming the problem.

use std::borrow::Cow;
use std::fmt;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::{self, DeserializeOwned, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::error::ApiError;

/// A JSON request body. An empty body reads as `{}`, so optional-only bodies may be
/// omitted; anything but a JSON object (serde would read an array as the fields in
/// order), a key given twice, unknown fields and malformed JSON are refused with a
/// message naming the problem. A number with no fractional part is an integer however it
/// is written (`7.0`, `7e0`), as JSON Schema counts it.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::new(e.status(), "invalid_request", e.body_text()))?;
        // JSON's whitespace only (RFC 8259: space, tab, line feed, carriage return).
        let text: &[u8] = match bytes.iter().find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r')) {
            None => b"{}",
            Some(b'{') => &bytes,
            Some(_) => return Err(ApiError::invalid("invalid request body: expected a JSON object")),
        };
        let mut deserializer = serde_json::Deserializer::from_slice(text);
        let Normalized(tree) = Normalized::deserialize(&mut deserializer)
            .map_err(|e| ApiError::invalid(format!("invalid request body: {e}")))?;
        deserializer.end().map_err(|e| ApiError::invalid(format!("invalid request body: {e}")))?;
        let value = serde_path_to_error::deserialize(Strict(tree)).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path == "." {
                ApiError::invalid(format!("invalid request body: {inner}"))
            } else {
                ApiError::invalid(format!("invalid request body: {path}: {inner}"))
            }
        })?;
        Ok(JsonBody(value))
    }
}

/// A query string read into `T` as axum's `Query` reads it, for a
/// `#[derive(Deserialize, utoipa::IntoParams)]` struct with `#[serde(deny_unknown_fields)]`:
/// the parameters the handler reads are the ones its document lists. A refusal is 400
/// `invalid_request` naming the parameter (`limit: …`, `unknown query parameter …`); a
/// parameter given twice counts with its last value.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let raw = parts.uri.query().unwrap_or_default();
        // serde would refuse a repeated field; the last value wins instead, as it always has.
        let mut pairs: Vec<(Cow<'_, str>, Cow<'_, str>)> = Vec::new();
        for (key, value) in url::form_urlencoded::parse(raw.as_bytes()) {
            pairs.retain(|(seen, _)| *seen != key);
            pairs.push((key, value));
        }
        let query = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish();
        let deserializer = serde_urlencoded::Deserializer::new(url::form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer).map(Query).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            match inner.strip_prefix("unknown field ") {
                Some(rest) => ApiError::invalid(format!("unknown query parameter {rest}")),
                None if path == "." => ApiError::invalid(format!("invalid query string: {inner}")),
                None => ApiError::invalid(format!("{path}: {inner}")),
            }
        })
    }
}

/// A JSON tree read into a type so that a struct is only ever read from a JSON object:
/// serde's derive (and `Value`'s deserializer) would also read an array as the struct's
/// fields in order (`{"teams": {"research": [60, null]}}` as `{"rpm": 60}`), a shape no
/// schema documents. Everything else is `Value`'s own deserializer.
struct Strict(Value);

impl<'de> Deserializer<'de> for Strict {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Array(items) => {
                let len = items.len();
                let mut seq = StrictSeq(items.into_iter());
                let value = visitor.visit_seq(&mut seq)?;
                match seq.0.len() {
                    0 => Ok(value),
                    _ => Err(de::Error::invalid_length(len, &"fewer elements in the array")),
                }
            }
            Value::Object(map) => visitor.visit_map(StrictMap { entries: map.into_iter(), value: None }),
            other => other.deserialize_any(visitor),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Object(map) => visitor.visit_map(StrictMap { entries: map.into_iter(), value: None }),
            other => Err(de::Error::invalid_type(unexpected(&other), &"a JSON object")),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            other => visitor.visit_some(Strict(other)),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_enum(name, variants, visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf unit
        unit_struct seq tuple tuple_struct map identifier ignored_any
    }
}

fn unexpected(value: &Value) -> de::Unexpected<'_> {
    match value {
        Value::Null => de::Unexpected::Unit,
        Value::Bool(b) => de::Unexpected::Bool(*b),
        Value::Number(_) => de::Unexpected::Other("a number"),
        Value::String(s) => de::Unexpected::Str(s),
        Value::Array(_) => de::Unexpected::Seq,
        Value::Object(_) => de::Unexpected::Map,
    }
}

struct StrictSeq(std::vec::IntoIter<Value>);

impl<'de> SeqAccess<'de> for StrictSeq {
    type Error = serde_json::Error;

    fn next_element_seed<T: de::DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Self::Error> {
        self.0.next().map(|value| seed.deserialize(Strict(value))).transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

struct StrictMap {
    entries: serde_json::map::IntoIter,
    value: Option<Value>,
}

impl<'de> MapAccess<'de> for StrictMap {
    type Error = serde_json::Error;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Self::Error> {
        match self.entries.next() {
            Some((key, value)) => {
                self.value = Some(value);
                seed.deserialize(de::value::StringDeserializer::<serde_json::Error>::new(key)).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Self::Error> {
        match self.value.take() {
            Some(value) => seed.deserialize(Strict(value)),
            None => Err(de::Error::custom("a map value was asked for before its key")),
        }
    }
}

/// A JSON tree read with two rules serde_json's own `Value` does not keep: a key given
/// twice is an error (not the last one winning), and an integral number is an integer.
struct Normalized(Value);

impl<'de> Deserialize<'de> for Normalized {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NormalizedVisitor).map(Normalized)
    }
}

struct NormalizedVisitor;

impl<'de> Visitor<'de> for NormalizedVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        // Exactly representable integers only (|v| < 2^53): 7.0 is 7, 1e300 stays a float.
        const EXACT: f64 = 9_007_199_254_740_992.0;
        if v.fract() == 0.0 && v.abs() < EXACT {
            #[allow(clippy::cast_possible_truncation)]
            return Ok(Value::from(v as i64));
        }
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Normalized(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Normalized(value) = map.next_value()?;
            if object.contains_key(&key) {
                let shown: String = key.chars().take(64).collect();
                return Err(de::Error::custom(format!("the key '{}' is given twice", shown.escape_debug())));
            }
            object.insert(key, value);
        }
        Ok(Value::Object(object))
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
        for refused in
            ["[]", "[null]", r#"["x"]"#, "null", "1", "\"x\"", r#"{"other":1}"#, "{} {}", "{", "\x0c", " \x0b "]
        {
            let err = read(refused).await.unwrap_err();
            assert_eq!(err.status(), axum::http::StatusCode::BAD_REQUEST, "{refused}");
        }
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Counted {
        n: u32,
        #[serde(default)]
        inner: Option<Box<Counted>>,
    }

    async fn counted(body: &'static str) -> Result<Counted, ApiError> {
        let request = Request::builder().body(Body::from(body)).unwrap();
        JsonBody::<Counted>::from_request(request, &()).await.map(|JsonBody(value)| value)
    }

    /// JSON Schema's integer is any number without a fraction: `7.0` and `7e0` are 7.
    #[tokio::test]
    async fn integral_numbers_are_integers() {
        for seven in [r#"{"n":7}"#, r#"{"n":7.0}"#, r#"{"n":7e0}"#, r#"{"n":0.7e1}"#] {
            assert_eq!(counted(seven).await.unwrap().n, 7, "{seven}");
        }
        for refused in [r#"{"n":7.5}"#, r#"{"n":-1.0}"#, r#"{"n":1e300}"#, r#"{"n":4294967296.0}"#] {
            assert!(counted(refused).await.is_err(), "{refused}");
        }
    }

    /// A struct inside a body is read only from a JSON object, at any depth: an array is
    /// not its fields in order (what serde's derive would make of it).
    #[tokio::test]
    async fn nested_structs_are_objects_only() {
        async fn limits(body: &'static str) -> Result<byok_vault::LimitsInput, ApiError> {
            let request = Request::builder().method("PUT").uri("/").body(axum::body::Body::from(body)).unwrap();
            JsonBody::<byok_vault::LimitsInput>::from_request(request, &()).await.map(|JsonBody(value)| value)
        }
        let read = limits(r#"{"org": {"rpm": 1}, "teams": {"research": {"rpm": 60, "tpm": null}}}"#).await.unwrap();
        assert_eq!(read.teams["research"].rpm, Some(60));
        for refused in [
            r#"{"teams": {"0": [null, null]}}"#,
            r#"{"org": [1, 2]}"#,
            r#"{"org": []}"#,
            r#"{"tokens": {"tok_x": [5]}}"#,
        ] {
            let err = limits(refused).await.unwrap_err();
            assert_eq!(err.status(), axum::http::StatusCode::BAD_REQUEST, "{refused}");
        }
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Page {
        after: Option<String>,
        limit: Option<u32>,
    }

    async fn page(uri: &'static str) -> Result<Page, ApiError> {
        let (mut parts, ()) = Request::builder().uri(uri).body(()).unwrap().into_parts();
        Query::<Page>::from_request_parts(&mut parts, &()).await.map(|Query(value)| value)
    }

    /// A query string is read as the struct says; a refusal names the parameter.
    #[tokio::test]
    async fn query_strings_are_read_or_refused_by_name() {
        assert_eq!(page("/x").await.unwrap(), Page { after: None, limit: None });
        assert_eq!(page("/x?").await.unwrap(), Page { after: None, limit: None });
        assert_eq!(
            page("/x?after=a+b%2Fc&limit=7").await.unwrap(),
            Page { after: Some("a b/c".into()), limit: Some(7) }
        );
        // Given twice, the last value counts.
        assert_eq!(page("/x?limit=1&after=z&limit=2").await.unwrap().limit, Some(2));
        for (uri, fragment) in [
            ("/x?month=1", "unknown query parameter `month`, expected `after` or `limit`"),
            ("/x?limit=ten", "limit: "),
            ("/x?limit=", "limit: "),
        ] {
            let err = page(uri).await.unwrap_err();
            assert_eq!(err.status(), axum::http::StatusCode::BAD_REQUEST, "{uri}");
            let message = format!("{err:?}");
            assert!(message.contains(fragment), "{uri}: {message}");
        }
    }

    /// A key given twice is ambiguous (which one did the caller mean?): refused at any depth.
    #[tokio::test]
    async fn a_key_given_twice_is_refused() {
        for refused in [r#"{"n":1,"n":2}"#, r#"{"n":1,"inner":{"n":2,"n":3}}"#] {
            let err = counted(refused).await.unwrap_err();
            assert_eq!(err.status(), axum::http::StatusCode::BAD_REQUEST, "{refused}");
        }
        assert_eq!(counted(r#"{"n":1,"inner":{"n":2}}"#).await.unwrap().inner.unwrap().n, 2);
    }
}
