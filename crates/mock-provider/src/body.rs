//! Response bodies that stream with a delay, break on request, and report how far they got.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use http_body::{Frame, SizeHint};
use tokio::sync::watch;
use tokio::time::Sleep;

use crate::record::Tracker;
use crate::reply::{ErrorEvent, Events};
use crate::script::StreamBreak;

type Stopped = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Resolves once the mock is shutting down.
pub(crate) async fn stopped(mut stop: watch::Receiver<bool>) {
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Every response body the mock writes. It settles the request's [`Tracker`] as completed
/// when the last byte is handed over; if it is dropped before that (the client went away),
/// the tracker records an unfinished response.
pub(crate) struct MockBody {
    content: Content,
    tracker: Tracker,
}

enum Content {
    Full(Option<Bytes>),
    Events(EventSource),
    Broken,
}

impl MockBody {
    pub(crate) fn full(bytes: Bytes, tracker: Tracker) -> Self {
        Self { content: Content::Full(Some(bytes)), tracker }
    }

    pub(crate) fn events(source: EventSource, tracker: Tracker) -> Self {
        Self { content: Content::Events(source), tracker }
    }

    pub(crate) fn broken(tracker: Tracker) -> Self {
        Self { content: Content::Broken, tracker }
    }
}

impl http_body::Body for MockBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        match &mut this.content {
            Content::Full(data) => {
                // Handing the only frame over is writing the whole body.
                this.tracker.settle(true);
                Poll::Ready(data.take().map(|bytes| Ok(Frame::data(bytes))))
            }
            Content::Broken => {
                this.tracker.settle(false);
                Poll::Ready(Some(Err(std::io::Error::other("byok-mock-provider cut the response"))))
            }
            Content::Events(source) => match ready!(source.poll_step(cx)) {
                Step::Event(bytes) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
                Step::End => {
                    this.tracker.settle(true);
                    Poll::Ready(None)
                }
                Step::Cut => {
                    this.tracker.settle(false);
                    Poll::Ready(Some(Err(std::io::Error::other("byok-mock-provider cut the stream"))))
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        let ended = match &self.content {
            Content::Full(data) => data.is_none(),
            Content::Events(source) => source.ended,
            Content::Broken => false,
        };
        if ended {
            // The connection may not poll a body again once it reports its end.
            self.tracker.settle(true);
        }
        ended
    }

    fn size_hint(&self) -> SizeHint {
        match &self.content {
            Content::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            Content::Full(None) => SizeHint::with_exact(0),
            Content::Events(_) | Content::Broken => SizeHint::default(),
        }
    }
}

/// A planned break in an event stream.
pub(crate) struct Break {
    pub(crate) after_events: usize,
    pub(crate) how: StreamBreak,
    pub(crate) error_event: ErrorEvent,
}

enum Step {
    Event(Bytes),
    End,
    Cut,
}

/// Produces a stream's events one at a time, waiting `delay` between two of them.
pub(crate) struct EventSource {
    events: std::iter::Peekable<Events>,
    delay: Duration,
    pause: Option<Pin<Box<Sleep>>>,
    emitted: usize,
    planned_break: Option<Break>,
    stall: Option<Stopped>,
    stop: watch::Receiver<bool>,
    /// The last step was taken: nothing more will be produced.
    ended: bool,
    /// The last event was produced; the next poll ends the stream.
    exhausted: bool,
    /// An abort is due once the pause (which lets the connection flush) is over.
    cut_due: bool,
}

/// How long an aborting stream waits so that what it wrote before reaches the client: a
/// connection that fails while its buffer is unflushed drops the buffer.
const FLUSH_BEFORE_CUT: Duration = Duration::from_millis(20);

impl EventSource {
    pub(crate) fn new(
        events: Events,
        delay: Duration,
        planned_break: Option<Break>,
        stop: watch::Receiver<bool>,
    ) -> Self {
        Self {
            events: events.peekable(),
            delay,
            pause: None,
            emitted: 0,
            planned_break,
            stall: None,
            stop,
            ended: false,
            exhausted: false,
            cut_due: false,
        }
    }

    fn poll_step(&mut self, cx: &mut Context<'_>) -> Poll<Step> {
        loop {
            if self.ended {
                return Poll::Ready(Step::End);
            }
            if let Some(stall) = self.stall.as_mut() {
                ready!(stall.as_mut().poll(cx));
                // Shutting down: cut the stalled response so the connection can close.
                self.stall = None;
                self.ended = true;
                return Poll::Ready(Step::Cut);
            }
            if let Some(pause) = self.pause.as_mut() {
                ready!(pause.as_mut().poll(cx));
                self.pause = None;
            }
            if self.cut_due {
                self.ended = true;
                return Poll::Ready(Step::Cut);
            }
            if self.exhausted {
                self.ended = true;
                return Poll::Ready(Step::End);
            }
            if let Some(planned) = self.planned_break.take_if(|b| b.after_events <= self.emitted) {
                match planned.how {
                    StreamBreak::Abort => {
                        self.cut_due = true;
                        self.pause = Some(Box::pin(tokio::time::sleep(FLUSH_BEFORE_CUT)));
                        continue;
                    }
                    StreamBreak::ErrorEvent => {
                        self.exhausted = true;
                        return Poll::Ready(Step::Event((planned.error_event)(self.emitted)));
                    }
                    StreamBreak::Stall => {
                        self.stall = Some(Box::pin(stopped(self.stop.clone())));
                        continue;
                    }
                }
            }
            match self.events.next() {
                None => {
                    self.ended = true;
                    return Poll::Ready(Step::End);
                }
                Some(event) => {
                    self.emitted += 1;
                    // No pause after the last event: the stream ends as soon as it is written.
                    if !self.delay.is_zero() && self.events.peek().is_some() {
                        self.pause = Some(Box::pin(tokio::time::sleep(self.delay)));
                    }
                    return Poll::Ready(Step::Event(event));
                }
            }
        }
    }
}
