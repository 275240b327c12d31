//! The audit writer.
//!
//! Every call's `CredentialResolutionAudit` row must be durable before the credential is
//! used. One transaction per call would cap throughput at the disk's fsync rate, so a
//! single writer task takes every row queued while the previous commit was in flight
//! and commits them together (group commit), then acknowledges each caller. A caller
//! is acknowledged only after its own row's transaction committed; if the commit fails,
//! every caller in the batch gets the error and must fail closed.
//!
//! Call completions (status, latency, usage) ride along in the same batches but nobody
//! waits for them. A completion recorded through [`AuditWriter::bound`] names its own
//! resolution row, so it is paired with that row alone, whichever other calls share its
//! (caller-chosen) call id.
//!
//! Text a caller chooses (call id, model, a denial message quoting the request) is
//! escaped and length-capped ([`ResolutionAudit::with_bounded_text`]) before it is queued.
#![forbid(unsafe_code)]

pub mod checkpoint;

use std::sync::Arc;

use byok_domain::{CallCompletion, ResolutionAudit};
use byok_store::{AuditEntry, Segment, Store};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub use checkpoint::{verify_with_encoded, AuditSigner, CheckpointBody, PublicKey, SignedCheckpoint};

/// Why a row was not made durable.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The commit failed (the message says why) or the writer has stopped.
    #[error("audit store unavailable: {0}")]
    Unavailable(String),
}

/// Tuning for the writer.
#[derive(Debug, Clone, Copy)]
pub struct AuditConfig {
    /// Most rows committed in one transaction.
    pub max_batch: usize,
    /// Queue length before callers wait (back-pressure).
    pub queue: usize,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self { max_batch: 1024, queue: 16 * 1024 }
    }
}

/// How long completions alone wait for a resolution row to share its commit.
const COMPLETION_HOLD: std::time::Duration = std::time::Duration::from_millis(20);
/// While completions wait to be written again after a failed commit: how often the
/// writer tries with no new work.
const RETRY_EVERY: std::time::Duration = std::time::Duration::from_millis(500);
/// Most completions kept for another try; beyond, the oldest are dropped (and said so).
const MAX_RETRY: usize = 100_000;

enum Job {
    Resolution(ResolutionAudit, oneshot::Sender<Result<RowRef, AuditError>>),
    /// A completion, with the position of the row it is bound to.
    Completion(CallCompletion, Option<i64>),
}

/// A durable resolution row: the writer segment it is in and its position in that
/// segment's chain for its org.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowRef {
    segment: Arc<str>,
    position: i64,
}

impl RowRef {
    /// The writer segment holding the row.
    pub fn segment(&self) -> &str {
        &self.segment
    }

    /// The row's position in its segment's chain for its org.
    pub fn position(&self) -> i64 {
        self.position
    }
}

/// A handle on the writer task. Cheap to clone.
#[derive(Clone)]
pub struct AuditWriter {
    jobs: mpsc::Sender<Job>,
    segment: Arc<str>,
    /// The row completions recorded through this handle are bound to (its position).
    bound_to: Option<i64>,
}

impl std::fmt::Debug for AuditWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditWriter").finish_non_exhaustive()
    }
}

impl AuditWriter {
    /// Start the writer over `store`. The task ends when every handle is dropped and the
    /// queue is drained.
    pub fn spawn(store: Store, config: AuditConfig) -> (AuditWriter, JoinHandle<()>) {
        let (jobs, queue) = mpsc::channel(config.queue.max(1));
        // This writer's own chain segment: it is the only appender, so its heads live here.
        let segment = Segment::new();
        let id: Arc<str> = Arc::from(segment.id());
        let task = tokio::spawn(run(store, queue, config.max_batch.max(1), segment));
        (AuditWriter { jobs, segment: id, bound_to: None }, task)
    }

    /// The id of the chain segment this writer appends to (what it wrote carries it).
    pub fn segment_id(&self) -> &str {
        &self.segment
    }

    /// Append `row` and wait until it is durable; returns where it was written.
    pub async fn append(&self, row: ResolutionAudit) -> Result<RowRef, AuditError> {
        let (ack, done) = oneshot::channel();
        self.jobs
            .send(Job::Resolution(row.with_bounded_text(), ack))
            .await
            .map_err(|_| AuditError::Unavailable("the audit writer has stopped".into()))?;
        done.await.map_err(|_| AuditError::Unavailable("the audit writer stopped before committing".into()))?
    }

    /// A handle on the same writer whose completions are bound to `row` (which this
    /// writer appended): replay pairs them with that row alone. A row of another writer
    /// cannot be named from this one's segment; its completions stay unbound.
    pub fn bound(&self, row: &RowRef) -> AuditWriter {
        let bound_to = if row.segment == self.segment {
            Some(row.position)
        } else {
            tracing::warn!(segment = row.segment(), "a completion cannot be bound to another writer's row");
            None
        };
        AuditWriter { jobs: self.jobs.clone(), segment: Arc::clone(&self.segment), bound_to }
    }

    /// Record a call's completion (not waited for), bound to this handle's row if it has one.
    pub fn complete(&self, completion: CallCompletion) {
        match self.jobs.try_send(Job::Completion(completion.with_bounded_text(), self.bound_to)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(job)) => {
                let jobs = self.jobs.clone();
                tokio::spawn(async move {
                    let _ = jobs.send(job).await;
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::warn!("call completion dropped: the audit writer has stopped");
            }
        }
    }
}

async fn run(store: Store, mut queue: mpsc::Receiver<Job>, max_batch: usize, mut segment: Segment) {
    tracing::info!(segment = segment.id(), "audit writer started a chain segment");
    let mut entries = Vec::with_capacity(max_batch);
    // Each waiting caller, with the index of its row in `entries`.
    let mut acks: Vec<(usize, oneshot::Sender<Result<RowRef, AuditError>>)> = Vec::with_capacity(max_batch);
    let segment_id: Arc<str> = Arc::from(segment.id());
    // Completions of calls that were answered while a commit failed (the store away):
    // nobody waits for them, so they are written with a later batch instead of lost.
    let mut retry: Vec<AuditEntry> = Vec::new();
    let mut open = true;
    while open || !retry.is_empty() {
        let first = if retry.is_empty() {
            queue.recv().await
        } else if open {
            // With completions to retry: the next job, or a try without one.
            tokio::time::timeout(RETRY_EVERY, queue.recv()).await.unwrap_or(None)
        } else {
            None
        };
        if first.is_none() && retry.is_empty() {
            break;
        }
        open = open && (first.is_some() || !queue.is_closed());
        entries.append(&mut retry);
        let mut next = first;
        loop {
            while let Some(job) = next.take() {
                match job {
                    Job::Resolution(row, ack) => {
                        acks.push((entries.len(), ack));
                        entries.push(AuditEntry::Resolution(row));
                    }
                    Job::Completion(completion, None) => entries.push(AuditEntry::Completion(completion)),
                    Job::Completion(completion, Some(resolution)) => {
                        entries.push(AuditEntry::BoundCompletion { completion, resolution })
                    }
                }
                if entries.len() < max_batch {
                    next = queue.try_recv().ok();
                }
            }
            // Nobody waits for completions: rather than spend a commit (an fsync) on them
            // alone, hold them briefly for the next resolution row to carry them.
            if !acks.is_empty() || entries.len() >= max_batch {
                break;
            }
            if !open {
                break;
            }
            match tokio::time::timeout(COMPLETION_HOLD, queue.recv()).await {
                Ok(Some(job)) => next = Some(job),
                Ok(None) | Err(_) => break,
            }
        }
        // Where each entry lands, known before the commit (the segment moves only after it).
        let positions = segment.positions(&entries);
        let result = store.append_audit(&mut segment, &entries).await;
        if let Err(err) = &result {
            tracing::error!(error = %err, entries = entries.len(), "audit commit failed");
        }
        let outcome = result.map_err(|e| AuditError::Unavailable(e.to_string()));
        for (index, ack) in acks.drain(..) {
            let answer = outcome.clone().map(|()| RowRef {
                segment: Arc::clone(&segment_id),
                position: positions.get(index).copied().unwrap_or_default(),
            });
            let _ = ack.send(answer);
        }
        if outcome.is_err() {
            // Its resolution rows' callers failed closed (nothing was sent); the
            // completions belong to calls whose rows committed earlier: keep them.
            retry.extend(entries.drain(..).filter(|entry| !matches!(entry, AuditEntry::Resolution(_))));
            if retry.len() > MAX_RETRY {
                let dropped = retry.len() - MAX_RETRY;
                retry.drain(..dropped);
                tracing::error!(dropped, "call completions dropped: the store has been unavailable too long");
            }
            if !open {
                // Stopping with the store away: one try is all there is.
                if !retry.is_empty() {
                    tracing::error!(
                        completions = retry.len(),
                        "call completions not written: the store is unavailable"
                    );
                }
                break;
            }
        }
        entries.clear();
    }
}
