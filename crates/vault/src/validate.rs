//! Input rules shared by several operations. Each returns a message that names the
//! field and what is wrong with it.

use byok_domain::{ModelFamilyRegistry, Name, Timestamp};

use crate::error::VaultError;

/// A name field.
pub(crate) fn name(field: &str, text: &str) -> Result<Name, VaultError> {
    Name::parse(text).map_err(|e| VaultError::invalid(format!("{field}: {e}")))
}

/// An expiry must lie in the future.
pub(crate) fn expiry(field: &str, at: Option<Timestamp>, now: Timestamp) -> Result<(), VaultError> {
    match at {
        Some(at) if at <= now => Err(VaultError::invalid(format!(
            "{field}: {at} is in the past; give a future time (RFC 3339, e.g. 2030-01-01T00:00:00Z)"
        ))),
        _ => Ok(()),
    }
}

/// Model families must be known to the registry (a typo would otherwise silently deny
/// every call).
pub(crate) fn model_families(registry: &ModelFamilyRegistry, families: &[String]) -> Result<Vec<String>, VaultError> {
    let mut out: Vec<String> = Vec::with_capacity(families.len());
    for family in families {
        if !registry.contains(family) {
            let known: Vec<&str> = registry.family_names().collect();
            return Err(VaultError::invalid(format!(
                "scope.model_families: unknown model family '{family}'; known families: {}",
                known.join(", ")
            )));
        }
        if !out.contains(family) {
            out.push(family.clone());
        }
    }
    out.sort();
    Ok(out)
}

/// A credential's base URL: absolute, https (http only if the operator allows it), a
/// host, no credentials, query or fragment. Returned normalized without a trailing `/`.
pub(crate) fn base_url(text: &str, allow_plain_http: bool) -> Result<String, VaultError> {
    let bad = |why: &str| VaultError::invalid(format!("base_url '{text}': {why}"));
    let url = url::Url::parse(text).map_err(|e| bad(&format!("not an absolute URL ({e})")))?;
    match url.scheme() {
        "https" => {}
        "http" if allow_plain_http => {}
        "http" => {
            return Err(bad("plain http is not allowed; use https (the operator can allow http for local servers)"))
        }
        other => return Err(bad(&format!("scheme '{other}' is not allowed; use https"))),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("it has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("it must not contain user info (put keys in the secret, not the URL)"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("it must not contain a query or fragment"));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// Deduplicate and sort a list.
pub(crate) fn dedup_sorted<T: Ord + Clone>(items: &[T]) -> Vec<T> {
    let mut out = items.to_vec();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let ok = [
            ("https://acme.openai.azure.com", "https://acme.openai.azure.com"),
            ("https://gw.example.com/v1/", "https://gw.example.com/v1"),
        ];
        for (input, expected) in ok {
            assert_eq!(base_url(input, false).unwrap(), expected);
        }
        let bad = [
            ("acme.openai.azure.com", "absolute"),
            ("http://127.0.0.1:9000", "plain http"),
            ("ftp://x.example", "scheme"),
            ("https://user:pw@x.example", "user info"),
            ("https://x.example/?key=1", "query"),
        ];
        for (input, why) in bad {
            let err = base_url(input, false).unwrap_err().to_string();
            assert!(err.contains(why), "{input}: {err}");
        }
        assert_eq!(base_url("http://127.0.0.1:9000", true).unwrap(), "http://127.0.0.1:9000");
    }

    #[test]
    fn families_must_be_known() {
        let registry = ModelFamilyRegistry::seeded();
        let families = ["gpt-4o".to_owned(), "claude-sonnet".to_owned(), "gpt-4o".to_owned()];
        assert_eq!(model_families(&registry, &families).unwrap(), ["claude-sonnet", "gpt-4o"]);
        let err = model_families(&registry, &["gpt4o".to_owned()]).unwrap_err().to_string();
        assert!(err.contains("unknown model family 'gpt4o'"), "{err}");
    }
}
