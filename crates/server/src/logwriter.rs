//! Log lines written in batches: an event's line (formatted whole by `tracing-subscriber`,
//! one `write_all` per event) is appended to a shared buffer, and the buffer goes to its
//! sink (standard error) when it holds [`FLUSH_AT`] bytes, every [`FLUSH_EVERY`] from a
//! thread of its own, and when the [`LogGuard`] is dropped. Under load a call's access
//! line costs a copy, not a `write` system call, and no thread is woken per line. Lines keep
//! their order; none is dropped: a full buffer is written by the task that filled it,
//! which waits for the sink as a direct write would (back-pressure).
//!
//! Hand-written because `tracing-appender`'s non-blocking writer hands each line to its
//! thread through a channel, waking that thread for nearly every line when it keeps up;
//! this one wakes its thread at most every [`FLUSH_EVERY`].

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// A buffer this full is written at once, by the writer that filled it.
const FLUSH_AT: usize = 64 * 1024;
/// The longest a line waits in the buffer.
const FLUSH_EVERY: Duration = Duration::from_millis(20);

struct Shared<W> {
    /// Lines not yet written, and the sink: one lock, so lines reach the sink in order.
    state: Mutex<State<W>>,
    /// Set when the guard is dropped; the flusher thread waits on it.
    stopped: Mutex<bool>,
    stop: Condvar,
}

struct State<W> {
    pending: Vec<u8>,
    sink: W,
}

impl<W: Write> State<W> {
    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        // A sink that fails (a closed stderr) loses these lines; there is nowhere to say so.
        let _ = self.sink.write_all(&self.pending);
        let _ = self.sink.flush();
        self.pending.clear();
    }
}

impl<W: Write> Shared<W> {
    fn flush(&self) {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).flush();
    }
}

/// The subscriber's writer: see the module documentation.
pub(crate) struct BatchedWriter<W> {
    shared: Arc<Shared<W>>,
}

/// Flushes what is buffered, and stops the flusher thread, when dropped.
pub(crate) struct LogGuard<W: Write> {
    shared: Arc<Shared<W>>,
    flusher: Option<JoinHandle<()>>,
}

/// A batched writer into `sink`, and the guard that writes the rest when dropped. The
/// flusher thread is not started if the system refuses a thread: lines are then written
/// when the buffer fills and when the guard is dropped.
pub(crate) fn batched<W: Write + Send + 'static>(sink: W) -> (BatchedWriter<W>, LogGuard<W>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State { pending: Vec::with_capacity(FLUSH_AT), sink }),
        stopped: Mutex::new(false),
        stop: Condvar::new(),
    });
    let flusher = {
        let shared = Arc::clone(&shared);
        std::thread::Builder::new().name("byok-log".to_owned()).spawn(move || flush_periodically(&shared)).ok()
    };
    (BatchedWriter { shared: Arc::clone(&shared) }, LogGuard { shared, flusher })
}

fn flush_periodically<W: Write>(shared: &Shared<W>) {
    let mut stopped = shared.stopped.lock().unwrap_or_else(PoisonError::into_inner);
    while !*stopped {
        stopped = shared.stop.wait_timeout(stopped, FLUSH_EVERY).unwrap_or_else(PoisonError::into_inner).0;
        shared.flush();
    }
}

impl<W: Write> Drop for LogGuard<W> {
    fn drop(&mut self) {
        *self.shared.stopped.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.shared.stop.notify_all();
        if let Some(flusher) = self.flusher.take() {
            let _ = flusher.join();
        }
        self.shared.flush();
    }
}

/// One event's writer.
pub(crate) struct Line<'a, W> {
    shared: &'a Shared<W>,
}

impl<W: Write> Write for Line<'_, W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let mut state = self.shared.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.pending.extend_from_slice(bytes);
        if state.pending.len() >= FLUSH_AT {
            state.flush();
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a, W: Write + 'a> MakeWriter<'a> for BatchedWriter<W> {
    type Writer = Line<'a, W>;

    fn make_writer(&'a self) -> Self::Writer {
        Line { shared: &self.shared }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[derive(Clone, Default)]
    struct Sink {
        bytes: Arc<Mutex<Vec<u8>>>,
        writes: Arc<Mutex<usize>>,
    }

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.bytes.lock().unwrap().extend_from_slice(bytes);
            *self.writes.lock().unwrap() += 1;
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn text(sink: &Sink) -> String {
        String::from_utf8(sink.bytes.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn lines_are_written_in_order_in_few_writes_and_all_on_drop() {
        let sink = Sink::default();
        let (writer, guard) = batched(sink.clone());
        let mut expected = String::new();
        for n in 0..1000 {
            let line = format!("call {n} ended\n");
            writer.make_writer().write_all(line.as_bytes()).unwrap();
            expected.push_str(&line);
        }
        drop(guard);
        assert_eq!(text(&sink), expected, "every line, in order, none lost");
        assert!(*sink.writes.lock().unwrap() <= 3, "{} writes for 1000 lines", sink.writes.lock().unwrap());
    }

    #[test]
    fn a_full_buffer_is_written_at_once_and_a_quiet_one_within_the_interval() {
        let sink = Sink::default();
        let (writer, guard) = batched(sink.clone());
        let big = vec![b'x'; FLUSH_AT];
        writer.make_writer().write_all(&big).unwrap();
        assert_eq!(sink.bytes.lock().unwrap().len(), FLUSH_AT, "written by the writer that filled the buffer");
        writer.make_writer().write_all(b"one quiet line\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !text(&sink).ends_with("one quiet line\n") {
            assert!(std::time::Instant::now() < deadline, "the flusher never wrote the quiet line");
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(guard);
    }
}
