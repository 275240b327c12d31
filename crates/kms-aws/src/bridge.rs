//! Running the async AWS SDK behind the blocking [`byok_crypto::Kms`] trait.
//!
//! The backend owns a small multi-threaded tokio runtime of its own. A blocking method
//! spawns the SDK future onto it and waits on a standard channel — it never calls
//! `block_on`, so it cannot panic or deadlock whatever thread it is called from: a
//! blocking-pool thread of the server's runtime (how `byok-vault` calls it), a plain
//! thread, or even an async task (which it then blocks, as any blocking call would).
//! The runtime is shut down in the background when the backend is dropped, so dropping
//! it inside an async context is fine too.

use std::future::Future;
use std::sync::mpsc;
use std::time::Duration;

use tokio::runtime::Runtime;

/// Threads of the backend's runtime: the SDK's calls are I/O; two threads keep a TLS
/// handshake from delaying the other calls in flight.
const WORKER_THREADS: usize = 2;

/// Why [`Bridge::run`] returned no result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stalled {
    /// No answer within the limit (the call goes on and ends at the SDK's own timeout).
    TimedOut,
    /// The runtime is gone (the backend is being dropped) or the task panicked.
    Lost,
}

/// The backend's own runtime.
pub(crate) struct Bridge {
    /// Always `Some` until dropped.
    runtime: Option<Runtime>,
}

impl Bridge {
    pub(crate) fn new() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(WORKER_THREADS)
            .thread_name("byok-aws-kms")
            .enable_all()
            .build()?;
        Ok(Self { runtime: Some(runtime) })
    }

    /// Run `future` on the backend's runtime and wait at most `limit` for its output.
    pub(crate) fn run<T: Send + 'static>(
        &self,
        limit: Duration,
        future: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, Stalled> {
        let Some(runtime) = &self.runtime else { return Err(Stalled::Lost) };
        let (sender, receiver) = mpsc::sync_channel(1);
        runtime.spawn(async move {
            // The receiver may have given up waiting; the output is dropped then.
            let _ = sender.send(future.await);
        });
        receiver.recv_timeout(limit).map_err(|error| match error {
            mpsc::RecvTimeoutError::Timeout => Stalled::TimedOut,
            mpsc::RecvTimeoutError::Disconnected => Stalled::Lost,
        })
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        // `Runtime`'s own drop blocks, which panics inside an async context.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn runs_from_a_plain_thread_and_times_out() {
        let bridge = Bridge::new().unwrap();
        assert_eq!(bridge.run(Duration::from_secs(5), async { 7 }), Ok(7));
        let slow = bridge.run(Duration::from_millis(50), async { tokio::time::sleep(Duration::from_secs(5)).await });
        assert_eq!(slow, Err(Stalled::TimedOut));
    }

    #[test]
    fn runs_inside_and_drops_inside_an_async_context() {
        let outer = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        outer.block_on(async {
            let bridge = Bridge::new().unwrap();
            // Directly on the async thread: blocks it, but neither panics nor deadlocks.
            assert_eq!(bridge.run(Duration::from_secs(5), async { 1 }), Ok(1));
            let bridge = tokio::task::spawn_blocking(move || {
                assert_eq!(bridge.run(Duration::from_secs(5), async { 2 }), Ok(2));
                bridge
            })
            .await
            .unwrap();
            drop(bridge);
        });
    }
}
