//! Input rules shared by several operations. Each returns a message that names the
//! field and what is wrong with it.

use byok_domain::{ModelFamilyRegistry, Name, NameError, ProviderId, Timestamp};

use crate::error::VaultError;
use crate::VaultPolicy;

/// A name field.
pub(crate) fn name(field: &str, text: &str) -> Result<Name, VaultError> {
    Name::parse(text).map_err(|e| match e {
        // The only rule the name's pattern cannot state.
        NameError::LooksLikeId(_) => VaultError::unprocessable(format!("{field}: {e}")),
        _ => VaultError::invalid(format!("{field}: {e}")),
    })
}

/// A provider secret whose shape the provider fixes: a Bedrock secret is a JSON object
/// (an AWS access key or a Bedrock API key, and a region). The message names the field,
/// never a value.
pub(crate) fn secret(provider: ProviderId, secret: &byok_crypto::ProviderSecret) -> Result<(), VaultError> {
    if provider == ProviderId::Bedrock {
        byok_crypto::BedrockKey::parse(secret).map_err(|e| VaultError::unprocessable(format!("secret: {e}")))?;
    }
    Ok(())
}

/// The longest description, in characters.
pub(crate) const MAX_DESCRIPTION: usize = 500;

/// A free-text description: at most [`MAX_DESCRIPTION`] characters, no control
/// characters; surrounding whitespace is dropped.
pub(crate) fn description(field: &str, text: &str) -> Result<String, VaultError> {
    let text = text.trim();
    if text.chars().count() > MAX_DESCRIPTION {
        return Err(VaultError::invalid(format!("{field}: longer than {MAX_DESCRIPTION} characters")));
    }
    if let Some(at) = text.chars().position(char::is_control) {
        return Err(VaultError::invalid(format!("{field}: a control character at position {at}")));
    }
    Ok(text.to_owned())
}

/// An expiry must lie in the future.
pub(crate) fn expiry(field: &str, at: Option<Timestamp>, now: Timestamp) -> Result<(), VaultError> {
    match at {
        Some(at) if at <= now => Err(VaultError::unprocessable(format!(
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
            return Err(VaultError::unprocessable(format!(
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

/// A credential's base URL (SPEC §3, upstream safety): absolute, `https` (`http` only
/// where the operator allows it), no user info, query or fragment, and a host the
/// provider's patterns or the operator's `allowed_hosts` for it admit. An IP address —
/// in whatever notation — is refused unless the operator allowed exactly that address,
/// and then only in its canonical notation. Returned normalized (lower case, IDNA
/// `xn--` form, no trailing dot in the host, no trailing `/`). Messages never repeat the
/// URL's user info or query.
pub(crate) fn base_url(text: &str, provider: ProviderId, policy: &VaultPolicy) -> Result<String, VaultError> {
    let parsed = url::Url::parse(text);
    let shown = match &parsed {
        Ok(url) => redacted_url(url),
        Err(_) => redacted_text(text),
    };
    let bad = |why: &str| VaultError::unprocessable(format!("base_url '{shown}': {why}"));
    let mut url = parsed.map_err(|e| bad(&format!("not an absolute URL ({e})")))?;
    match url.scheme() {
        "https" => {}
        "http" if policy.allow_plain_http_base_url => {}
        "http" => {
            return Err(bad("plain http is not allowed; use https (the operator can allow http for local servers)"))
        }
        other => return Err(bad(&format!("scheme '{other}' is not allowed; use https"))),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("it must not contain user info (put keys in the secret, not the URL)"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("it must not contain a query or fragment"));
    }
    let builtin = byok_providers::spec(provider).credential_host_patterns();
    let extra = policy.allowed_hosts.get(&provider).map_or(&[][..], Vec::as_slice);
    let patterns = || builtin.iter().chain(extra);
    let not_allowed = |host: &str| {
        let listed: Vec<String> = patterns().map(ToString::to_string).collect();
        let listed = if listed.is_empty() { "none".to_owned() } else { listed.join(", ") };
        bad(&format!(
            "host '{host}' is not one of {provider}'s hosts ({listed}); the operator can allow more with \
             [upstreams.{provider}] allowed_hosts"
        ))
    };
    let ip = match url.host() {
        None => return Err(bad("it has no host")),
        Some(url::Host::Domain("")) => return Err(bad("it has no host")),
        Some(url::Host::Domain(domain)) => {
            let host = domain.strip_suffix('.').unwrap_or(domain).to_owned();
            byok_providers::check_hostname(&host).map_err(|why| bad(&format!("not a valid host name ({why})")))?;
            if !patterns().any(|p| p.matches_domain(&host)) {
                return Err(not_allowed(&host));
            }
            if host.len() != domain.len() {
                url.set_host(Some(&host)).map_err(|e| bad(&format!("not a valid host ({e})")))?;
            }
            None
        }
        Some(url::Host::Ipv4(ip)) => Some(std::net::IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(std::net::IpAddr::V6(ip)),
    };
    if let Some(ip) = ip {
        let canonical = url.host_str().unwrap_or_default().to_owned();
        let written = written_host(text);
        if !written.eq_ignore_ascii_case(&canonical) {
            return Err(bad(&format!(
                "the host is an IP address in a non-canonical notation ('{}' is {canonical}); IP addresses are refused",
                redacted_text(&written)
            )));
        }
        if !extra.iter().any(|p| p.matches_ip(ip)) {
            return Err(bad(&format!(
                "the host {canonical} is an IP address; only addresses the operator lists in \
                 [upstreams.{provider}] allowed_hosts are accepted"
            )));
        }
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// The host as written in `text`: after the scheme and its slashes, before the port or path.
fn written_host(text: &str) -> String {
    let rest = text.trim().split_once(':').map_or(text, |(_, rest)| rest);
    let rest = rest.trim_start_matches(['/', '\\']);
    let host_port = rest.split(['/', '\\', '?', '#']).next().unwrap_or_default();
    if host_port.starts_with('[') {
        return host_port.split_once(']').map_or(host_port.to_owned(), |(ip, _)| format!("{ip}]"));
    }
    host_port.split(':').next().unwrap_or_default().to_owned()
}

/// `url` for a message: user info, query and fragment replaced by `***`.
fn redacted_url(url: &url::Url) -> String {
    let mut shown = format!("{}://", url.scheme());
    if !url.username().is_empty() || url.password().is_some() {
        shown.push_str("***@");
    }
    shown.push_str(url.host_str().unwrap_or_default());
    if let Some(port) = url.port() {
        shown.push_str(&format!(":{port}"));
    }
    shown.push_str(url.path());
    if url.query().is_some() || url.fragment().is_some() {
        shown.push_str("?***");
    }
    shown
}

/// Text that is not a URL, for a message: everything from the authority (after the first
/// `//`, or from the start) to the last `@`, and anything from a `?` or `#` on, replaced
/// by `***`; control characters dropped; at most 200 characters.
fn redacted_text(text: &str) -> String {
    let (mut head, cut) = match text.find(['?', '#']) {
        Some(at) => (text[..at].to_owned(), true),
        None => (text.to_owned(), false),
    };
    if let Some(at) = head.rfind('@') {
        let start = ["//", "\\\\", "/\\", "\\/"]
            .iter()
            .filter_map(|s| head.find(s).map(|i| i + 2))
            .min()
            .filter(|start| *start <= at)
            .unwrap_or(0);
        head.replace_range(start..at, "***");
    }
    if cut {
        head.push_str("?***");
    }
    head.chars().filter(|c| !c.is_control()).take(200).collect()
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
    fn redaction_never_shows_user_info_or_query() {
        for (text, shown) in [
            ("https://user:pw@x.example/v1?key=sk-1#f", "https://***@x.example/v1?***"),
            ("https://sk-1@[::1", "https://***@[::1"),
            ("ht tp://sk-1@x/a?key=sk-2", "ht tp://***@x/a?***"),
            ("sk-1@x.example", "***@x.example"),
            ("https:\\\\u:sk-1@x y", "https:\\\\***@x y"),
            ("https:/\\u:sk-1@x y/p", "https:/\\***@x y/p"),
            ("https:u:sk-1@x y", "***@x y"),
        ] {
            let rendered = match url::Url::parse(text) {
                Ok(url) => redacted_url(&url),
                Err(_) => redacted_text(text),
            };
            assert_eq!(rendered, shown, "{text}");
        }
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
