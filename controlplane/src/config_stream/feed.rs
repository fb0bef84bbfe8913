//! The change feed: every committed revision, encoded once, shared by every stream.
//!
//! One task follows the store: woken by the store's head watch the moment a commit lands (and
//! by a slow poll as a backstop for commits made by another control-plane process), it reads
//! the new change-log entries, encodes each revision's `SubscribeResponse` once, and appends it
//! to a bounded in-memory ring. Streams copy `Bytes` handles out of the ring, so memory does not
//! grow with replicas × changes. A replica whose revision fell out of the ring gets a snapshot.

use std::collections::VecDeque;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use aurora_proto::PreEncoded;
use aurora_proto::v1::{Delta, SubscribeResponse, subscribe_response};
use tokio::sync::watch;

use crate::store::{Revision, Store, StoreError};

#[derive(Debug)]
pub struct ChangeFeed {
    store: Arc<dyn Store>,
    // A std lock: held only to push or clone `Bytes` handles, never across an `.await`.
    ring: RwLock<Ring>,
    /// The newest revision the ring covers; streams wait on it.
    head: watch::Sender<Revision>,
}

#[derive(Debug, Default)]
struct Ring {
    /// Every revision in `(floor, head]` that changed something is in `entries`.
    floor: Revision,
    entries: VecDeque<(Revision, PreEncoded)>,
    capacity: usize,
}

/// A replica at this revision cannot be caught up from the ring; it needs a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooOld;

impl ChangeFeed {
    /// Loads the newest `capacity` revisions from the store's change log and starts following it.
    pub async fn start(store: Arc<dyn Store>, capacity: usize, poll: Duration) -> Result<Arc<Self>, StoreError> {
        let head = store.head_revision().await?;
        let oldest = store.oldest_retained_revision().await?;
        let floor = head.saturating_sub(capacity as u64).max(oldest.saturating_sub(1));
        let ring = Ring { floor, entries: VecDeque::new(), capacity: capacity.max(1) };
        let feed = Arc::new(ChangeFeed { store, ring: RwLock::new(ring), head: watch::channel(floor).0 });
        feed.catch_up().await?;
        let follower = feed.clone();
        tokio::spawn(async move { follower.follow(poll).await });
        Ok(feed)
    }

    /// The id of the store history this feed follows.
    pub fn store_id(&self) -> crate::store::StoreId {
        self.store.store_id()
    }

    pub fn head(&self) -> Revision {
        *self.head.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<Revision> {
        self.head.subscribe()
    }

    /// The encoded deltas after `after`, in order, or [`TooOld`] if the ring no longer reaches
    /// back that far.
    pub fn deltas_after(&self, after: Revision) -> Result<Vec<(Revision, PreEncoded)>, TooOld> {
        let ring = self.ring.read().unwrap_or_else(PoisonError::into_inner);
        if after < ring.floor {
            return Err(TooOld);
        }
        let start = ring.entries.partition_point(|(revision, _)| *revision <= after);
        Ok(ring.entries.range(start..).cloned().collect())
    }

    async fn follow(self: Arc<Self>, poll: Duration) {
        let mut store_head = self.store.watch_head();
        let mut backstop = tokio::time::interval(poll);
        backstop.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                changed = store_head.changed() => if changed.is_err() { return },
                _ = backstop.tick() => {}
            }
            if let Err(err) = self.catch_up().await {
                tracing::warn!(error = %err, "cannot read the change log; retrying");
            }
        }
    }

    /// Reads every revision committed after the ring's head and publishes them.
    async fn catch_up(&self) -> Result<(), StoreError> {
        // Read the head first: everything at or below it is committed, so the change log read
        // next is complete for (covered, target].
        let target = self.store.head_revision().await?;
        let mut covered = self.head();
        while covered < target {
            let limit = u32::try_from(target - covered).unwrap_or(u32::MAX).min(1024);
            let deltas = self.store.changes_since(covered, limit).await?;
            let upper = covered + u64::from(limit);
            self.push(deltas, upper);
            covered = upper;
            self.head.send_replace(covered);
        }
        Ok(())
    }

    fn push(&self, deltas: Vec<Delta>, covered: Revision) {
        let mut ring = self.ring.write().unwrap_or_else(PoisonError::into_inner);
        for delta in deltas {
            let revision = delta.revision;
            let message = SubscribeResponse { message: Some(subscribe_response::Message::Delta(delta)) };
            ring.entries.push_back((revision, PreEncoded::encode(&message)));
        }
        while ring.entries.len() > ring.capacity {
            if let Some((revision, _)) = ring.entries.pop_front() {
                ring.floor = revision;
            }
        }
        debug_assert!(ring.entries.back().is_none_or(|(revision, _)| *revision <= covered));
    }
}
