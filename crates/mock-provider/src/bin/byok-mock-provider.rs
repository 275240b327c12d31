//! `byok-mock-provider`: runs the mock provider as a standalone server for scripts and
//! benchmarks. Prints `listening on ADDR` as its first stdout line once it accepts
//! connections, and stops on Ctrl-C.
#![forbid(unsafe_code)]

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use byok_mock_provider::{BedrockAccessKey, KeyFault, MockConfig, MockProvider};
use clap::Parser;

/// A mock of the OpenAI, Anthropic, Gemini, Azure OpenAI and AWS Bedrock APIs.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "BYOK_MOCK_LISTEN", default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// An accepted OpenAI(-compatible) key (repeatable; the env var is comma-separated).
    #[arg(long = "openai-key", env = "BYOK_MOCK_OPENAI_KEYS", value_delimiter = ',')]
    openai_keys: Vec<String>,
    /// An accepted Anthropic key (repeatable; the env var is comma-separated).
    #[arg(long = "anthropic-key", env = "BYOK_MOCK_ANTHROPIC_KEYS", value_delimiter = ',')]
    anthropic_keys: Vec<String>,
    /// An accepted Gemini key (repeatable; the env var is comma-separated).
    #[arg(long = "gemini-key", env = "BYOK_MOCK_GEMINI_KEYS", value_delimiter = ',')]
    gemini_keys: Vec<String>,
    /// An accepted Azure OpenAI key (repeatable; the env var is comma-separated).
    #[arg(long = "azure-key", env = "BYOK_MOCK_AZURE_KEYS", value_delimiter = ',')]
    azure_keys: Vec<String>,
    /// An AWS access key whose Bedrock SigV4 signatures are verified, `ACCESS_KEY_ID:SECRET`
    /// (repeatable; the env var is comma-separated).
    #[arg(long = "bedrock-access-key", env = "BYOK_MOCK_BEDROCK_ACCESS_KEYS", value_delimiter = ',', value_parser = access_key)]
    bedrock_access_keys: Vec<BedrockAccessKey>,
    /// An accepted Bedrock API key (repeatable; the env var is comma-separated).
    #[arg(long = "bedrock-api-key", env = "BYOK_MOCK_BEDROCK_API_KEYS", value_delimiter = ',')]
    bedrock_api_keys: Vec<String>,
    /// Don't record requests (for benchmarks).
    #[arg(long)]
    no_record: bool,
    /// Delay between two events of a streamed response, in milliseconds.
    #[arg(long, env = "BYOK_MOCK_STREAM_DELAY_MS", default_value_t = 0)]
    stream_delay_ms: u64,
    /// Quote wrong keys whole in OpenAI-family 401 messages instead of masking them.
    #[arg(long)]
    echo_full_key_in_401: bool,
    /// Give a key the provider's own rate limit, `KEY=N` requests per minute (repeatable):
    /// past it, 429 with the provider's `Retry-After` and reset headers.
    #[arg(long = "key-rpm", value_parser = key_rpm)]
    key_rpm: Vec<(String, u32)>,
    /// Answer every request with this key 401, as a provider does for a revoked key
    /// (repeatable).
    #[arg(long = "revoked-key")]
    revoked_keys: Vec<String>,
}

fn access_key(text: &str) -> Result<BedrockAccessKey, String> {
    let (id, secret) = text.split_once(':').ok_or_else(|| "expected ACCESS_KEY_ID:SECRET".to_owned())?;
    Ok(BedrockAccessKey { access_key_id: id.to_owned(), secret_access_key: secret.to_owned(), session_token: None })
}

fn key_rpm(text: &str) -> Result<(String, u32), String> {
    let (key, rpm) = text.split_once('=').ok_or_else(|| format!("expected KEY=RPM, not '{text}'"))?;
    let rpm = rpm.parse::<u32>().map_err(|e| format!("RPM in '{text}': {e}"))?;
    Ok((key.to_owned(), rpm))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let config = MockConfig {
        openai_keys: args.openai_keys,
        anthropic_keys: args.anthropic_keys,
        gemini_keys: args.gemini_keys,
        azure_keys: args.azure_keys,
        bedrock_access_keys: args.bedrock_access_keys,
        bedrock_api_keys: args.bedrock_api_keys,
        stream_chunk_delay: Duration::from_millis(args.stream_delay_ms),
        echo_full_key_in_401: args.echo_full_key_in_401,
        record: !args.no_record,
    };
    let mock = match MockProvider::start_on(args.listen, config).await {
        Ok(mock) => mock,
        Err(error) => {
            let _ = writeln!(std::io::stderr(), "byok-mock-provider: cannot listen on {}: {error}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    for (key, rpm) in args.key_rpm {
        mock.set_key_fault(&key, KeyFault::RateLimit { requests_per_minute: rpm, tokens_per_minute: None });
    }
    for key in args.revoked_keys {
        mock.set_key_fault(&key, KeyFault::Revoked);
    }
    let mut stdout = std::io::stdout();
    if writeln!(stdout, "listening on {}", mock.addr()).and_then(|()| stdout.flush()).is_err() {
        // Whoever waits for the address line is gone; keep serving regardless.
    }
    let _ = tokio::signal::ctrl_c().await;
    mock.shutdown().await;
    ExitCode::SUCCESS
}
