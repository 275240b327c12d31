//! The log filter: `BYOK_LOG`, with the AWS SDK kept quiet at trace level.

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::EnvFilter;

/// The AWS SDK's crates, and the two modules that log whole requests at trace level
/// (aws-smithy-runtime's "transmitting request", aws-sigv4's "signing request"): the body
/// of an `Encrypt` holds a DEK, the headers a session token. They log at most at debug,
/// whatever `BYOK_LOG` says (a directive names a module at most as exactly as these).
const AWS_SDK_TARGETS: [&str; 9] = [
    "aws_config",
    "aws_runtime",
    "aws_sdk_kms",
    "aws_sigv4",
    "aws_sigv4::http_request::sign",
    "aws_smithy_http_client",
    "aws_smithy_runtime",
    "aws_smithy_runtime::client::orchestrator",
    "aws_smithy_runtime_api",
];

/// The filter for `spec` (`BYOK_LOG`'s value; `info` when unset or not a filter).
pub(crate) fn filter(spec: Option<&str>) -> EnvFilter {
    let mut filter = spec.and_then(|spec| EnvFilter::try_new(spec).ok()).unwrap_or_else(|| EnvFilter::new("info"));
    // Only a filter that enables trace somewhere can let the SDK log at trace; capping
    // the SDK at debug then (a directive for its crate replaces the operator's own)
    // leaves every other filter as the operator wrote it.
    if filter.max_level_hint().is_none_or(|level| level >= LevelFilter::TRACE) {
        for target in AWS_SDK_TARGETS {
            if let Ok(directive) = format!("{target}=debug").parse() {
                filter = filter.add_directive(directive);
            }
        }
    }
    filter
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged(spec: &str) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(filter(Some(spec)))
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::trace!(target: "aws_smithy_runtime::client::orchestrator", "transmitting DEK-CANARY-1");
            tracing::trace!(target: "aws_sigv4::http_request::sign", "signing DEK-CANARY-2");
            tracing::debug!(target: "aws_smithy_runtime::client::orchestrator", "sdk-debug-line");
            tracing::trace!(target: "byok_vault::kms", "byok-trace-line");
            tracing::info!(target: "byok_server", "byok-info-line");
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        text
    }

    #[test]
    fn the_aws_sdk_never_logs_at_trace() {
        for spec in [
            "trace",
            "aws_smithy_runtime=trace,aws_sigv4=trace,trace",
            "debug,byok_vault=trace",
            "aws_smithy_runtime::client::orchestrator=trace,aws_sigv4::http_request::sign=trace",
        ] {
            let text = logged(spec);
            assert!(!text.contains("DEK-CANARY"), "{spec}: {text}");
        }
        let text = logged("trace");
        assert!(text.contains("sdk-debug-line") && text.contains("byok-trace-line"), "{text}");
    }

    #[test]
    fn quieter_filters_are_left_as_they_are() {
        let text = logged("warn");
        assert!(!text.contains("sdk-debug-line") && !text.contains("byok-info-line"), "{text}");
        let text = logged("info");
        assert!(!text.contains("sdk-debug-line") && text.contains("byok-info-line"), "{text}");
        assert!(logged("not a filter [").contains("byok-info-line"));
    }
}
