//! Durable acknowledgements: a revision is acknowledged to the control plane only once it is on
//! disk (`aurora keys revoke --wait` means "applied and durable on every replica").
//!
//! The subscription publishes each revision to the request path at once, then hands it here.
//! One task owns the cache files: it takes every revision waiting (a group), appends their
//! deltas to the journal with one fsync, and only then sends their acks, in order. A whole
//! snapshot, or a journal grown past [`COMPACT_AFTER_RECORDS`] or [`COMPACT_AFTER_BYTES`], is
//! written as a new snapshot generation instead, which starts an empty journal. File I/O runs
//! on the blocking pool, never on the threads serving requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aurora_proto::v1::{Ack, Delta, SubscribeRequest, subscribe_request};
use tokio::sync::mpsc;

use super::ConfigCache;
use super::journal::Journal;
use crate::snapshot::Snapshot;

/// A journal with this many deltas is folded into a new snapshot generation.
pub const COMPACT_AFTER_RECORDS: u64 = 10_000;
/// A journal this large is folded into a new snapshot generation.
pub const COMPACT_AFTER_BYTES: u64 = 16 * 1024 * 1024;
/// The most revisions one fsync covers.
const MAX_GROUP: usize = 4096;

/// Where the subscription sends applied revisions to become durable before they are acked.
#[derive(Debug, Clone)]
pub struct Durability {
    writer: Option<mpsc::UnboundedSender<Pending>>,
    /// The newest revision that is durable (or, without a cache, applied).
    durable: Arc<AtomicU64>,
}

/// One applied revision on its way to disk.
#[derive(Debug)]
struct Pending {
    snapshot: Arc<Snapshot>,
    /// The delta that produced it, or `None` for a whole snapshot.
    delta: Option<Delta>,
    /// The stream the ack goes out on once the revision is durable.
    outbound: mpsc::Sender<SubscribeRequest>,
}

impl Durability {
    /// Without a cache nothing is written: a revision is acknowledged once applied.
    pub fn none() -> Self {
        Durability { writer: None, durable: Arc::new(AtomicU64::new(0)) }
    }

    /// Starts the task that owns `cache`'s files. `recovered` is what was loaded from it at
    /// startup: the first write after a restart is a fresh generation, so journals never mix
    /// two processes' appends.
    pub fn start(cache: ConfigCache, recovered: Option<u64>) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let durable = Arc::new(AtomicU64::new(recovered.unwrap_or(0)));
        let writer = Writer { cache, journal: None, durable: durable.clone() };
        (Durability { writer: Some(sender), durable }, writer.run(receiver))
    }

    /// The newest revision that is safe to acknowledge (heartbeats answer with it).
    pub fn durable_revision(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    /// Makes `snapshot` durable, then acknowledges its revision on `outbound`.
    pub async fn persist(
        &self,
        snapshot: Arc<Snapshot>,
        delta: Option<Delta>,
        outbound: &mpsc::Sender<SubscribeRequest>,
    ) {
        let revision = snapshot.revision;
        match &self.writer {
            Some(writer) => {
                if writer.send(Pending { snapshot, delta, outbound: outbound.clone() }).is_err() {
                    tracing::error!(revision, "the cache writer is gone; the revision is not acknowledged");
                }
            }
            None => {
                self.durable.store(revision, Ordering::Release);
                let _ = outbound.send(ack(revision)).await;
            }
        }
    }
}

fn ack(revision: u64) -> SubscribeRequest {
    SubscribeRequest { message: Some(subscribe_request::Message::Ack(Ack { revision })) }
}

/// The task's state: the files and the journal being appended to.
struct Writer {
    cache: ConfigCache,
    /// `None` until the first generation this process writes (and after a failed write).
    journal: Option<Journal>,
    durable: Arc<AtomicU64>,
}

impl Writer {
    async fn run(mut self, mut pending: mpsc::UnboundedReceiver<Pending>) {
        while let Some(first) = pending.recv().await {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match pending.try_recv() {
                    Ok(next) => group.push(next),
                    Err(_) => break,
                }
            }
            let (writer, group, outcome) = tokio::task::spawn_blocking(move || {
                let outcome = self.write(&group);
                (self, group, outcome)
            })
            .await
            .unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()));
            self = writer;
            let Some(last) = group.last() else { continue };
            match outcome {
                Ok(()) => {
                    self.durable.fetch_max(last.snapshot.revision, Ordering::AcqRel);
                    for done in group {
                        // A closed stream is gone; its replica re-sends what it has on reconnect.
                        let _ = done.outbound.send(ack(done.snapshot.revision)).await;
                    }
                }
                Err(err) => {
                    // Not acknowledged: the control plane keeps this replica pending, which is
                    // the truth. The next group starts over with a whole generation.
                    self.journal = None;
                    tracing::error!(error = %err, revision = last.snapshot.revision, "cannot make the configuration durable; not acknowledging it");
                }
            }
        }
    }

    /// Appends the group's deltas with one fsync, or writes the newest state as a generation.
    fn write(&mut self, group: &[Pending]) -> Result<(), super::CacheError> {
        let Some(last) = group.last() else { return Ok(()) };
        let journal_full =
            self.journal.as_ref().is_none_or(|j| j.records >= COMPACT_AFTER_RECORDS || j.bytes >= COMPACT_AFTER_BYTES);
        let whole = group.iter().any(|p| p.delta.is_none());
        if let (false, false, Some(journal)) = (journal_full, whole, self.journal.as_mut()) {
            let path = &self.cache.journals.current;
            let io = |source| super::CacheError::Io { path: path.clone(), source };
            for pending in group {
                if let Some(delta) = &pending.delta {
                    journal.append(delta).map_err(io)?;
                }
            }
            return journal.sync().map_err(io);
        }
        // The newest state covers every revision in the group.
        self.journal = Some(self.cache.store_generation(&last.snapshot)?);
        tracing::info!(revision = last.snapshot.revision, "configuration cached");
        Ok(())
    }
}
