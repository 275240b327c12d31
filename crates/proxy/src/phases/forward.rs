//! Phase 8: forward. One attempt, bounded in time; redirects are returned to the
//! client, never followed.

use std::time::Duration;

use axum::http::{Request, Response};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;

use super::{Code, Refusal};

/// The upstream HTTP client (HTTP/1.1 over TLS or, where the operator configured it,
/// plain TCP). It has no redirect logic at all.
pub(crate) type UpstreamClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Build the client: TLS (ring, webpki roots), connect timeout, pooled connections.
pub(crate) fn upstream_client(connect_timeout: Duration) -> Result<UpstreamClient, String> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
        .map_err(|e| format!("TLS configuration failed: {e}"))?
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(hyper_util::rt::TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(90)).build(https))
}

/// Send `request`; map failures to `upstream_unreachable` (502) or `upstream_timeout` (504).
pub(crate) async fn forward(
    client: &UpstreamClient,
    request: Request<Full<Bytes>>,
    timeout: Duration,
) -> Result<Response<Incoming>, Refusal> {
    let host = request.uri().host().unwrap_or("upstream").to_owned();
    match tokio::time::timeout(timeout, client.request(request)).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(err)) => {
            Err(Refusal::new(Code::UpstreamUnreachable, format!("cannot reach {host}: {}", error_chain(&err))))
        }
        Err(_) => Err(Refusal::new(
            Code::UpstreamTimeout,
            format!("{host} did not answer within {} s", timeout.as_secs_f64()),
        )),
    }
}

fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
