//! What byok knows about each AI provider's wire protocol. No I/O and no secrets:
//! the data plane asks this crate where a provider lives, how its key is injected,
//! which headers may carry a workload token, what a request is (capability, mode,
//! model), how an error must look so the provider's SDK surfaces it, and where a
//! response reports token usage.
#![forbid(unsafe_code)]

mod classify;
mod errors;
mod path;
mod registry;
mod usage;

pub use classify::{classify, Ambiguity, Classification, MAX_MODEL_NAME_LEN};
pub use errors::{error_body, ErrorBody};
pub use path::{normalize_path, normalize_path_for, query_parameter_names, NormalizedPath, PathError};
pub use registry::{
    check_hostname, looks_like_ipv4, spec, Api, HostPattern, Injection, ProviderSpec, CREDENTIAL_HEADERS,
};
pub use usage::{Usage, UsageTap};
