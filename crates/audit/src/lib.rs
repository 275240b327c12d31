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
//! waits for them. When the queue is full, a completion waits for room in a task of its
//! own; at most as many as the queue holds wait so, beyond that a completion is dropped
//! (logged and counted, [`AuditWriter::dropped_completions`]). A completion recorded through [`AuditWriter::bound`] names its own
//! resolution row, so it is paired with that row alone, whichever other calls share its
//! (caller-chosen) call id.
//!
//! A writer started with [`AuditWriter::spawn_with_metrics`] times each commit and counts
//! its entries, its failures and the dropped completions in the process's metrics.
//!
//! Text a caller chooses (call id, model, a denial message quoting the request) is
//! escaped and length-capped ([`ResolutionAudit::with_bounded_text`]) before it is queued.
#![forbid(unsafe_code)]

pub mod checkpoint;
pub mod manual;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use byok_domain::{CallCompletion, ResolutionAudit};
use byok_metrics::AuditMetrics;
use byok_store::{AuditAppender, AuditEntry, Segment, Store};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinHandle;

pub use checkpoint::{verify_with_encoded, AuditSigner, CheckpointBody, PublicKey, SignedCheckpoint};

/// Why a row was not made durable.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The commit failed; every row of its batch shares the store's error.
    #[error("audit store unavailable")]
    Unavailable(#[source] Arc<byok_store::StoreError>),
    /// The writer has stopped (shutdown, or its task ended): nothing more is written.
    #[error("audit store unavailable: the audit writer has stopped")]
    Stopped,
    /// The writer stopped after taking the row and before its commit.
    #[error("audit store unavailable: the audit writer stopped before committing")]
    StoppedBeforeCommit,
}

/// Tuning for the writer.
#[derive(Debug, Clone, Copy)]
pub struct AuditConfig {
    /// Most rows committed in one transaction.
    pub max_batch: usize,
    /// Queue length before callers wait (back-pressure). As many completions again may
    /// wait for room beside a full queue.
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
    /// One permit per completion waiting for room beside the full queue.
    waiting: Arc<Semaphore>,
    /// Completions dropped because too many were waiting already.
    dropped: Arc<AtomicU64>,
    metrics: Option<AuditMetrics>,
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
        Self::start(store, config, None)
    }

    /// The same, timing and counting its commits in `metrics` (the process's).
    pub fn spawn_with_metrics(
        store: Store,
        config: AuditConfig,
        metrics: &byok_metrics::Metrics,
    ) -> (AuditWriter, JoinHandle<()>) {
        Self::start(store, config, Some(metrics.audit()))
    }

    fn start(store: Store, config: AuditConfig, metrics: Option<AuditMetrics>) -> (AuditWriter, JoinHandle<()>) {
        let (jobs, queue) = mpsc::channel(config.queue.max(1));
        // This writer's own chain segment: it is the only appender, so its heads live here.
        let segment = Segment::new();
        let mut writer = AuditWriter::new(jobs, Arc::from(segment.id()), config.queue.max(1));
        writer.metrics = metrics.clone();
        let task = tokio::spawn(run(store.audit_appender(), queue, config.max_batch.max(1), segment, metrics));
        (writer, task)
    }

    /// A handle on the queue `jobs` of the writer of `segment`, with room for `waiting`
    /// completions to wait beside it when it is full.
    fn new(jobs: mpsc::Sender<Job>, segment: Arc<str>, waiting: usize) -> Self {
        AuditWriter {
            jobs,
            segment,
            bound_to: None,
            waiting: Arc::new(Semaphore::new(waiting)),
            dropped: Arc::new(AtomicU64::new(0)),
            metrics: None,
        }
    }

    /// The id of the chain segment this writer appends to (what it wrote carries it).
    pub fn segment_id(&self) -> &str {
        &self.segment
    }

    /// Append `row` and wait until it is durable; returns where it was written.
    pub async fn append(&self, row: ResolutionAudit) -> Result<RowRef, AuditError> {
        let (ack, done) = oneshot::channel();
        self.jobs.send(Job::Resolution(row.with_bounded_text(), ack)).await.map_err(|_| AuditError::Stopped)?;
        done.await.map_err(|_| AuditError::StoppedBeforeCommit)?
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
        AuditWriter { bound_to, ..self.clone() }
    }

    /// Record a call's completion (not waited for), bound to this handle's row if it has one.
    ///
    /// With the queue full, the completion waits for room in a task of its own, unless as
    /// many completions as the queue holds wait already: then it is dropped (logged at
    /// warn and counted in [`dropped_completions`](Self::dropped_completions)).
    pub fn complete(&self, completion: CallCompletion) {
        match self.jobs.try_send(Job::Completion(completion.with_bounded_text(), self.bound_to)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(job)) => match Arc::clone(&self.waiting).try_acquire_owned() {
                Ok(permit) => {
                    let jobs = self.jobs.clone();
                    tokio::spawn(async move {
                        if jobs.send(job).await.is_err() {
                            tracing::warn!("call completion dropped: the audit writer has stopped");
                        }
                        drop(permit);
                    });
                }
                Err(_) => {
                    let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                    if let Some(metrics) = &self.metrics {
                        metrics.completion_dropped();
                    }
                    tracing::warn!(
                        dropped,
                        "call completion dropped: the audit queue is full and too many completions wait for room"
                    );
                }
            },
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::warn!("call completion dropped: the audit writer has stopped");
            }
        }
    }
}

impl AuditWriter {
    /// Completions dropped so far because the queue was full and too many completions
    /// waited for room already (shared by every handle on the writer).
    pub fn dropped_completions(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

async fn run(
    store: AuditAppender,
    mut queue: mpsc::Receiver<Job>,
    max_batch: usize,
    mut segment: Segment,
    metrics: Option<AuditMetrics>,
) {
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
        let started = std::time::Instant::now();
        let result = store.append_audit(&mut segment, &entries).await;
        if let Some(metrics) = &metrics {
            metrics.committed(entries.len(), started.elapsed(), result.is_ok());
        }
        if let Err(err) = &result {
            tracing::error!(error = %byok_domain::error::Report(err), entries = entries.len(), "audit commit failed");
        }
        let outcome = result.map_err(|e| AuditError::Unavailable(Arc::new(e)));
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use byok_domain::{CredentialId, OrgId, Timestamp};

    use super::*;

    fn completion(n: usize) -> CallCompletion {
        CallCompletion {
            call_id: format!("call-{n}"),
            org_id: OrgId::generate(),
            credential_id: CredentialId::generate(),
            at: Timestamp::now(),
            upstream_status: Some(200),
            latency_us: 1,
            input_tokens: None,
            output_tokens: None,
            status: "completed".into(),
            metering: None,
        }
    }

    async fn received(queue: &mut mpsc::Receiver<Job>, count: usize) -> Vec<String> {
        let mut calls = Vec::new();
        for _ in 0..count {
            let job = tokio::time::timeout(Duration::from_secs(5), queue.recv()).await.unwrap().unwrap();
            let Job::Completion(completion, None) = job else { panic!("not an unbound completion") };
            calls.push(completion.call_id);
        }
        calls.sort();
        calls
    }

    async fn all_room_back(writer: &AuditWriter, permits: usize) {
        tokio::time::timeout(Duration::from_secs(5), async {
            while writer.waiting.available_permits() < permits {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn completions_beside_a_full_queue_wait_in_bounded_numbers() {
        // Nothing drains the queue (one slot) until the test reads it.
        let (jobs, mut queue) = mpsc::channel(1);
        let writer = AuditWriter::new(jobs, Arc::from("segment"), 2);
        let other = writer.bound(&RowRef { segment: Arc::from("another"), position: 1 });
        for n in 0..3 {
            writer.complete(completion(n));
        }
        // One in the queue, two waiting for room: the bound is reached, over it they drop.
        writer.complete(completion(3));
        other.complete(completion(4));
        assert_eq!(writer.dropped_completions(), 2);
        assert_eq!(other.dropped_completions(), 2);

        // Every one that waited got into the queue; then their room is free again.
        assert_eq!(received(&mut queue, 3).await, ["call-0", "call-1", "call-2"]);
        all_room_back(&writer, 2).await;
        for n in 5..8 {
            writer.complete(completion(n));
        }
        assert_eq!(writer.dropped_completions(), 2);
        assert_eq!(received(&mut queue, 3).await, ["call-5", "call-6", "call-7"]);
        all_room_back(&writer, 2).await;
        assert!(queue.try_recv().is_err());
    }

    #[tokio::test]
    async fn commits_are_timed_and_counted_in_the_metrics() {
        let t = byok_store::testing::TestStore::sqlite().await.unwrap();
        let metrics = byok_metrics::Metrics::default();
        let (writer, task) = AuditWriter::spawn_with_metrics(t.store().clone(), AuditConfig::default(), &metrics);
        for n in 0..3 {
            writer.append(ResolutionAudit::denied(format!("call-{n}"))).await.unwrap();
        }
        drop(writer);
        task.await.unwrap();
        let text = metrics.render().unwrap();
        let value = |series: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("no {series}: {text}"))
        };
        assert!(value("byok_audit_commit_seconds_count") >= 1.0, "{text}");
        assert_eq!(value("byok_audit_batch_entries_sum"), 3.0, "{text}");
        assert_eq!(value("byok_audit_commit_failures_total"), 0.0, "{text}");
    }
}
