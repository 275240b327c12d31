//! The admin-API client: where the admin token comes from, how a request is sent, and
//! how an answer or an error is read back.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::header::{HeaderValue, AUTHORIZATION};
use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use zeroize::Zeroizing;

use crate::api::ApiRequest;
use crate::error::CliError;

/// The data directory `byok serve` uses when none is given.
pub const DEFAULT_DATA_DIR: &str = "./byok-data";

/// The operator token's file name inside the data directory.
pub const OPERATOR_TOKEN_FILE: &str = "operator.token";

/// Where the admin token was found (named in messages; the token itself never is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenOrigin {
    /// `BYOK_ADMIN_TOKEN`.
    Env,
    /// `--token-file` / `BYOK_ADMIN_TOKEN_FILE`.
    TokenFile(PathBuf),
    /// `<data-dir>/operator.token`.
    DataDir(PathBuf),
}

impl std::fmt::Display for TokenOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenOrigin::Env => f.write_str("BYOK_ADMIN_TOKEN"),
            TokenOrigin::TokenFile(path) => write!(f, "--token-file {}", path.display()),
            TokenOrigin::DataDir(path) => write!(f, "{}", path.display()),
        }
    }
}

/// Find the admin token: `env_token` (the value of `BYOK_ADMIN_TOKEN`), else `token_file`,
/// else `<data_dir>/operator.token`.
pub fn resolve_admin_token(
    env_token: Option<String>,
    token_file: Option<&Path>,
    data_dir: Option<&Path>,
) -> Result<(SecretString, TokenOrigin), CliError> {
    if let Some(token) = env_token {
        let token = Zeroizing::new(token);
        let trimmed = token.trim();
        if trimmed.is_empty() {
            return Err(CliError::Usage(
                "BYOK_ADMIN_TOKEN is set but empty; unset it or put an admin token in it".to_owned(),
            ));
        }
        return Ok((SecretString::from(trimmed.to_owned()), TokenOrigin::Env));
    }
    if let Some(path) = token_file {
        let token = read_token_file(path)?;
        return Ok((token, TokenOrigin::TokenFile(path.to_owned())));
    }
    let path = data_dir.unwrap_or_else(|| Path::new(DEFAULT_DATA_DIR)).join(OPERATOR_TOKEN_FILE);
    match std::fs::metadata(&path) {
        Ok(_) => {
            let token = read_token_file(&path)?;
            Ok((token, TokenOrigin::DataDir(path)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(CliError::NoAdminToken { looked_for: path.display().to_string() })
        }
        Err(source) => Err(CliError::ReadFile { what: "the admin token", path, source }),
    }
}

fn read_token_file(path: &Path) -> Result<SecretString, CliError> {
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|source| CliError::ReadFile {
        what: "the admin token",
        path: path.to_owned(),
        source,
    })?);
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(CliError::Usage(format!("the admin token file {} is empty", path.display())));
    }
    Ok(SecretString::from(trimmed.to_owned()))
}

/// The longest a streamed answer (an audit export) may take in all; each of its chunks
/// is waited for at most as long as a whole ordinary answer.
const STREAM_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// How long a whole ordinary answer, or one chunk of a streamed one, may take.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

/// A client of one admin API, holding one admin token.
pub struct AdminClient {
    base: Url,
    token: SecretString,
    http: reqwest::Client,
}

impl AdminClient {
    /// A client for the admin API at `admin_url`.
    pub fn new(admin_url: &str, token: SecretString) -> Result<Self, CliError> {
        let base = parse_admin_url(admin_url)?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("byok-cli/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .timeout(ANSWER_TIMEOUT)
            // The admin token must go only where the operator pointed it.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| CliError::Local(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Self { base, token, http })
    }

    /// The URL a request goes to.
    pub fn url_for(&self, request: &ApiRequest) -> Result<Url, CliError> {
        let mut url = url_for(&self.base, &request.path)?;
        if !request.query.is_empty() {
            url.query_pairs_mut().extend_pairs(&request.query);
        }
        Ok(url)
    }

    /// Send `request` and return the answer's JSON (`null` for an empty body).
    ///
    /// A 4xx/5xx answer becomes [`CliError::Api`]; a transport failure
    /// [`CliError::Unreachable`]. If the request carries a secret, every answer and error
    /// text is scrubbed of it before it goes anywhere.
    pub async fn send(&self, request: &ApiRequest) -> Result<Value, CliError> {
        let text = self.send_for_text(request).await?;
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        self.parse_answer(&text)
    }

    /// Send `request` and return the successful answer to be read chunk by chunk (a
    /// streamed answer of any length: the client's overall timeout does not apply, the
    /// caller bounds the wait for each chunk). Errors as for [`AdminClient::send`].
    pub async fn open_stream(&self, request: &ApiRequest) -> Result<reqwest::Response, CliError> {
        let builder = self.builder(request)?.timeout(STREAM_TIMEOUT);
        let response = builder.send().await.map_err(|e| self.transport_error(&e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let bytes = response.bytes().await.map_err(|e| self.transport_error(&e))?;
        Err(api_error(status.as_u16(), &String::from_utf8_lossy(&bytes)))
    }

    /// The next chunk of a streamed answer (`None` at its end), waiting at most `idle`.
    pub async fn next_chunk(
        &self,
        response: &mut reqwest::Response,
        idle: Duration,
    ) -> Result<Option<bytes::Bytes>, CliError> {
        match tokio::time::timeout(idle, response.chunk()).await {
            Ok(chunk) => chunk.map_err(|e| self.transport_error(&e)),
            Err(_) => Err(CliError::Unreachable {
                url: self.base.as_str().trim_end_matches('/').to_owned(),
                reason: format!("no data for {} seconds in the middle of an answer", idle.as_secs()),
            }),
        }
    }

    fn builder(&self, request: &ApiRequest) -> Result<reqwest::RequestBuilder, CliError> {
        let url = self.url_for(request)?;
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", self.token.expose_secret())).map_err(|_| {
            CliError::Usage(
                "the admin token contains characters that cannot go in an HTTP header; check where it came from"
                    .to_owned(),
            )
        })?;
        auth.set_sensitive(true);
        let mut builder = self.http.request(request.method.clone(), url).header(AUTHORIZATION, auth);
        if let Some(body) = &request.body {
            builder = builder.json(body);
        }
        Ok(builder)
    }

    /// Send `request` and return the successful answer's body as text, exactly as the
    /// server wrote it (for streaming its rows on without re-encoding them). Errors as
    /// for [`AdminClient::send`].
    pub async fn send_for_text(&self, request: &ApiRequest) -> Result<String, CliError> {
        let response = self.builder(request)?.send().await.map_err(|e| self.transport_error(&e))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| self.transport_error(&e))?;
        let text = String::from_utf8_lossy(&bytes);
        let text = match request.secret() {
            Some(secret) => redact(&text, secret),
            None => text.into_owned(),
        };
        if status.is_success() {
            Ok(text)
        } else {
            Err(api_error(status.as_u16(), &text))
        }
    }

    /// Parse a successful answer as `T`, saying so clearly when it is not what a byok
    /// admin API sends.
    pub fn parse_answer<'a, T: serde::Deserialize<'a>>(&self, text: &'a str) -> Result<T, CliError> {
        serde_json::from_str(text).map_err(|e| {
            CliError::Local(format!(
                "the admin API's answer is not what this CLI expects ({e}); is {} really a byok admin API \
                 of the same version?",
                self.base
            ))
        })
    }

    fn transport_error(&self, error: &reqwest::Error) -> CliError {
        let reason = if error.is_timeout() { "timed out".to_owned() } else { root_cause(error) };
        CliError::Unreachable { url: self.base.as_str().trim_end_matches('/').to_owned(), reason }
    }
}

/// Parse and check the admin URL.
fn parse_admin_url(admin_url: &str) -> Result<Url, CliError> {
    let url = Url::parse(admin_url).map_err(|e| {
        CliError::Usage(format!("--admin-url '{admin_url}' is not a URL ({e}); example: http://127.0.0.1:4748"))
    })?;
    match url.scheme() {
        "http" => {}
        "https" => {
            return Err(CliError::Usage(format!(
                "--admin-url '{admin_url}': this build of byok speaks plain HTTP to the admin API, \
                 which listens on loopback by default; reach a remote sidecar through an SSH tunnel \
                 (ssh -L 4748:127.0.0.1:4748 HOST) and use http://127.0.0.1:4748"
            )))
        }
        other => {
            return Err(CliError::Usage(format!(
                "--admin-url '{admin_url}' has scheme '{other}'; use http://HOST:PORT"
            )))
        }
    }
    if url.cannot_be_a_base() || url.host().is_none() {
        return Err(CliError::Usage(format!("--admin-url '{admin_url}' has no host; example: http://127.0.0.1:4748")));
    }
    if !url.username().is_empty() || url.password().is_some() || url.query().is_some() {
        return Err(CliError::Usage(format!(
            "--admin-url must be a plain base URL without credentials or query (got '{}')",
            url.origin().ascii_serialization()
        )));
    }
    Ok(url)
}

/// `base` plus `segments`, each percent-encoded as one path segment.
fn url_for(base: &Url, segments: &[String]) -> Result<Url, CliError> {
    let mut url = base.clone();
    {
        let mut path = url
            .path_segments_mut()
            .map_err(|()| CliError::Usage(format!("--admin-url '{base}' cannot take a path")))?;
        path.pop_if_empty();
        path.extend(segments);
    }
    Ok(url)
}

/// Turn an error answer into [`CliError::Api`], reading the API's
/// `{"error":{"code","message"}}` when it is there.
fn api_error(status: u16, text: &str) -> CliError {
    #[derive(serde::Deserialize)]
    struct Envelope {
        error: ErrorBody,
    }
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        code: Option<String>,
        message: Option<String>,
    }
    match serde_json::from_str::<Envelope>(text) {
        Ok(Envelope { error }) => CliError::Api {
            status,
            code: error.code.unwrap_or_else(|| "unknown".to_owned()),
            message: error.message.unwrap_or_else(|| format!("the admin API refused the request (HTTP {status})")),
        },
        Err(_) => {
            let snippet: String = text.trim().chars().take(200).collect();
            let message = if snippet.is_empty() {
                format!("the admin API answered HTTP {status} with no explanation")
            } else {
                format!("the admin API answered HTTP {status}: {snippet}")
            };
            CliError::Api { status, code: "http_error".to_owned(), message }
        }
    }
}

/// Replace every occurrence of `secret` (raw or JSON-escaped) in `text`.
fn redact(text: &str, secret: &SecretString) -> String {
    let raw = secret.expose_secret();
    if raw.is_empty() {
        return text.to_owned();
    }
    let mut out = text.replace(raw, "[REDACTED]");
    if let Ok(quoted) = serde_json::to_string(raw) {
        let quoted = Zeroizing::new(quoted);
        let escaped = quoted.trim_matches('"');
        if !escaped.is_empty() && escaped != raw {
            out = out.replace(escaped, "[REDACTED]");
        }
    }
    out
}

/// The innermost error of a chain ("Connection refused (os error 111)"): the outer
/// layers only repeat the URL and the library's plumbing.
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut innermost = error;
    while let Some(source) = innermost.source() {
        innermost = source;
    }
    innermost.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comes_from_env_then_file_then_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("admin.token");
        std::fs::write(&file, "byokadm_from_file\n").unwrap();
        std::fs::write(dir.path().join(OPERATOR_TOKEN_FILE), "byokadm_operator\n").unwrap();

        let (token, origin) = resolve_admin_token(Some("byokadm_env".into()), Some(&file), Some(dir.path())).unwrap();
        assert_eq!((token.expose_secret(), origin), ("byokadm_env", TokenOrigin::Env));

        let (token, origin) = resolve_admin_token(None, Some(&file), Some(dir.path())).unwrap();
        assert_eq!(token.expose_secret(), "byokadm_from_file");
        assert_eq!(origin, TokenOrigin::TokenFile(file.clone()));

        let (token, origin) = resolve_admin_token(None, None, Some(dir.path())).unwrap();
        assert_eq!(token.expose_secret(), "byokadm_operator");
        assert_eq!(origin, TokenOrigin::DataDir(dir.path().join(OPERATOR_TOKEN_FILE)));
    }

    #[test]
    fn missing_token_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let err = resolve_admin_token(None, None, Some(dir.path())).unwrap_err();
        let text = err.to_string();
        for needle in ["BYOK_ADMIN_TOKEN", "--token-file", "--data-dir", "operator.token"] {
            assert!(text.contains(needle), "{needle} missing from: {text}");
        }
        let err = resolve_admin_token(None, Some(&dir.path().join("nope")), None).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        let err = resolve_admin_token(Some("  ".into()), None, None).unwrap_err();
        assert!(err.to_string().contains("BYOK_ADMIN_TOKEN"), "{err}");
    }

    #[test]
    fn path_segments_are_encoded_one_by_one() {
        let base = parse_admin_url("http://127.0.0.1:4748").unwrap();
        let segs: Vec<String> = ["v1", "orgs", "a/../b c", "teams"].map(String::from).to_vec();
        assert_eq!(url_for(&base, &segs).unwrap().as_str(), "http://127.0.0.1:4748/v1/orgs/a%2F..%2Fb%20c/teams");
        let prefixed = parse_admin_url("http://proxy.local/byok/").unwrap();
        assert_eq!(url_for(&prefixed, &segs[..2]).unwrap().as_str(), "http://proxy.local/byok/v1/orgs");
    }

    #[test]
    fn query_values_are_encoded() {
        let client = AdminClient::new("http://127.0.0.1:4748", SecretString::from("t".to_owned())).unwrap();
        let request = ApiRequest::get(&["v1", "orgs", "acme", "audit"])
            .with_query("since", "2030-01-01T00:00:00+02:00")
            .with_query("call_id", "a&b=c");
        assert_eq!(
            client.url_for(&request).unwrap().as_str(),
            "http://127.0.0.1:4748/v1/orgs/acme/audit?since=2030-01-01T00%3A00%3A00%2B02%3A00&call_id=a%26b%3Dc"
        );
        let plain = ApiRequest::get(&["v1", "orgs"]);
        assert_eq!(client.url_for(&plain).unwrap().as_str(), "http://127.0.0.1:4748/v1/orgs");
    }

    #[test]
    fn bad_admin_urls_are_usage_errors() {
        for (url, needle) in [
            ("127.0.0.1:4748", "example: http://"),
            ("ftp://127.0.0.1:4748", "scheme"),
            ("not a url", "not a URL"),
            ("https://byok.example", "plain HTTP"),
            ("http://u:p@127.0.0.1:4748", "without credentials"),
        ] {
            let err = parse_admin_url(url).unwrap_err();
            assert!(matches!(err, CliError::Usage(_)), "{url}");
            assert!(err.to_string().contains(needle), "{url}: {err}");
            assert!(!err.to_string().contains("u:p"), "{err}");
        }
    }

    #[test]
    fn api_errors_are_read_from_the_envelope() {
        let err = api_error(404, r#"{"error":{"code":"not_found","message":"no org named 'acme'"}}"#);
        assert_eq!(err.to_string(), "no org named 'acme' (code: not_found, HTTP 404)");
        let err = api_error(502, "Bad Gateway");
        assert!(err.to_string().contains("HTTP 502: Bad Gateway"), "{err}");
    }

    #[test]
    fn answers_are_scrubbed_of_the_secret() {
        let secret = SecretString::from("sk-\"canary\"".to_owned());
        let text = r#"{"message":"bad key sk-\"canary\"","raw":"sk-"canary""}"#;
        let out = redact(text, &secret);
        assert!(!out.contains("canary"), "{out}");
    }
}
