//! The log filter: `BYOK_LOG`, with the AWS SDK kept quiet at trace level; and the log
//! format: `BYOK_LOG_FORMAT`, `text` (the default, for people) or `json` (one JSON
//! object a line, for log pipelines).

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::{Format as FmtFormat, Json, JsonFields};
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// `tracing-subscriber`'s human format.
    Text,
    /// One JSON object a line: `timestamp`, `level`, `target`, the event's fields
    /// (`message` among them) at the top level, and the spans it is in.
    Json,
}

/// The format `spec` (`BYOK_LOG_FORMAT`'s value) names: `text` when unset or empty; the
/// value when it names none, to be warned about (the format is then `text`).
pub(crate) fn format(spec: Option<&str>) -> (Format, Option<String>) {
    match spec.map(str::trim) {
        None | Some("") => (Format::Text, None),
        Some(value) if value.eq_ignore_ascii_case("text") => (Format::Text, None),
        Some(value) if value.eq_ignore_ascii_case("json") => (Format::Json, None),
        Some(value) => (Format::Text, Some(value.to_owned())),
    }
}

/// The JSON subscriber's builder (a filter and a writer still to be set).
pub(crate) fn json() -> tracing_subscriber::fmt::SubscriberBuilder<JsonFields, FmtFormat<Json>> {
    tracing_subscriber::fmt().json().flatten_event(true).with_current_span(true).with_span_list(false)
}

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

    #[test]
    fn the_format_is_text_unless_json_is_asked_for() {
        assert_eq!(format(None), (Format::Text, None));
        assert_eq!(format(Some("")), (Format::Text, None));
        assert_eq!(format(Some("text")), (Format::Text, None));
        assert_eq!(format(Some(" JSON ")), (Format::Json, None));
        assert_eq!(format(Some("yaml")), (Format::Text, Some("yaml".to_owned())));
    }

    #[test]
    fn json_lines_are_objects_with_the_event_fields_at_the_top() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber =
            json().with_env_filter(filter(Some("debug"))).with_writer(move || writer.clone()).with_ansi(false).finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "byok::access", call_id = "c-1", latency_ms = 1.5, upstream_status = 200u16, "call");
            tracing::debug!(error = "a \"quoted\"\nmulti-line error", "something failed");
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["target"], "byok::access");
        assert_eq!(lines[0]["level"], "INFO");
        assert_eq!(lines[0]["message"], "call");
        assert_eq!(lines[0]["call_id"], "c-1");
        assert_eq!(lines[0]["upstream_status"], 200);
        assert_eq!(lines[1]["error"], "a \"quoted\"\nmulti-line error");
    }
}
