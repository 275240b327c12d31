//! Error plumbing shared by every crate: a boxed cause, the whole chain as one line, and
//! classification by walking the chain (each layer adds its own context and keeps the
//! error it wraps as its `source`, so the cause is never flattened into a string).

use std::error::Error;

/// A cause of any type, kept as a `source`.
pub type BoxError = Box<dyn Error + Send + Sync + 'static>;

/// `err` and each of its sources, outermost first.
pub fn chain<'a>(err: &'a (dyn Error + 'static)) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    std::iter::successors(Some(err), |&err| err.source())
}

/// The whole chain as one line, `context: cause: cause`. A layer whose text already ends
/// with its source's text (a wrapper that prints its cause itself) is not repeated.
pub fn report(err: &(dyn Error + 'static)) -> String {
    let mut text = String::new();
    for layer in chain(err) {
        let own = layer.to_string();
        if text.ends_with(&own) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&own);
    }
    text
}

/// A cause with what was being done when it happened: `context` is displayed, `source`
/// is kept. For layers that have no error type of their own to add.
#[derive(Debug, thiserror::Error)]
#[error("{context}")]
pub struct Context {
    context: String,
    #[source]
    source: BoxError,
}

/// `source`, with `context` saying what was being done.
pub fn context(context: impl Into<String>, source: impl Into<BoxError>) -> Context {
    Context { context: context.into(), source: source.into() }
}

/// Displays the whole chain of an error, as [`report`] does: for log fields
/// (`error = %Report(&err)`) and messages.
#[derive(Debug, Clone, Copy)]
pub struct Report<'a>(pub &'a (dyn Error + 'static));

impl std::fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&report(self.0))
    }
}

/// The first error of type `E` in the chain of `err`, `err` itself included.
pub fn find<'a, E: Error + 'static>(err: &'a (dyn Error + 'static)) -> Option<&'a E> {
    chain(err).find_map(|layer| layer.downcast_ref::<E>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot open the keyring")]
    struct Outer(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct Echo(String, #[source] std::io::Error);

    #[test]
    fn report_joins_the_chain_and_find_walks_it() {
        let err = Outer(std::io::Error::new(std::io::ErrorKind::PermissionDenied, "permission denied"));
        assert_eq!(report(&err), "cannot open the keyring: permission denied");
        assert_eq!(find::<std::io::Error>(&err).map(|e| e.kind()), Some(std::io::ErrorKind::PermissionDenied));
        assert!(find::<Echo>(&err).is_none());
        assert_eq!(chain(&err).count(), 2);
    }

    #[test]
    fn a_layer_that_already_printed_its_cause_is_not_repeated() {
        let err = Echo("disk full".into(), std::io::Error::other("disk full"));
        assert_eq!(report(&err), "disk full");
    }
}
