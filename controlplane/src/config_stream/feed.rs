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
        let feed = Self::empty(store, capacity).await?;
        feed.catch_up().await?;
        let follower = feed.clone();
        tokio::spawn(async move { follower.follow(poll).await });
        Ok(feed)
    }

    /// A feed whose ring is still empty, starting below the newest `capacity` revisions (or
    /// the oldest the change log retains, if that is newer).
    async fn empty(store: Arc<dyn Store>, capacity: usize) -> Result<Arc<Self>, StoreError> {
        let head = store.head_revision().await?;
        let oldest = store.oldest_retained_revision().await?;
        let floor = head.saturating_sub(capacity as u64).max(oldest.saturating_sub(1));
        let ring = Ring { floor, entries: VecDeque::new(), capacity: capacity.max(1) };
        Ok(Arc::new(ChangeFeed { store, ring: RwLock::new(ring), head: watch::channel(floor).0 }))
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
            let mut upper = covered + u64::from(limit);
            // Another process (another control plane on the same database) may have compacted
            // the change log since `covered` was known to be retained, in which case the batch
            // lacks the revisions below `oldest`. Compaction only ever deletes below a cutoff, so
            // if the cutoff read after the batch does not reach `covered + 1`, nothing was
            // missing while the batch was read. Otherwise the ring must not claim the gap: its
            // floor rises, and replicas below it get a snapshot.
            let oldest = self.store.oldest_retained_revision().await?;
            let mut floor = 0;
            if oldest > covered + 1 {
                floor = oldest - 1;
                tracing::info!(floor, "the change log was compacted past this feed; replicas behind it get a snapshot");
                upper = upper.max(floor);
            }
            self.push(deltas, upper, floor);
            covered = upper;
            self.head.send_replace(covered);
        }
        Ok(())
    }

    /// Appends `deltas` (the change log up to `covered`), raising the ring's floor to `floor`
    /// first if that is higher: entries at or below the floor are never served, so they go.
    fn push(&self, deltas: Vec<Delta>, covered: Revision, floor: Revision) {
        let mut ring = self.ring.write().unwrap_or_else(PoisonError::into_inner);
        if floor > ring.floor {
            ring.floor = floor;
            ring.entries.retain(|(revision, _)| *revision > floor);
        }
        for delta in deltas.into_iter().filter(|delta| delta.revision > floor) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{SettingsPatch, SqliteStore};

    async fn commit(store: &dyn Store, times: usize) {
        for i in 0..times {
            let patch = SettingsPatch { passthrough_enabled: Some(i % 2 == 0), ..SettingsPatch::default() };
            store.update_settings(patch, &crate::store::Actor::for_tests()).await.unwrap();
        }
    }

    fn revisions(deltas: &[(Revision, PreEncoded)]) -> Vec<Revision> {
        deltas.iter().map(|(revision, _)| *revision).collect()
    }

    #[tokio::test]
    async fn serves_every_revision_it_read_and_refuses_older_ones() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("cp.db").display());
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&url, crate::store::test_db::test_keyring()).await.unwrap());
        commit(store.as_ref(), 5).await;
        let feed = ChangeFeed::start(store.clone(), 3, Duration::from_secs(3600)).await.unwrap();
        assert_eq!(feed.head(), 5);
        assert_eq!(feed.deltas_after(1), Err(TooOld));
        assert_eq!(revisions(&feed.deltas_after(2).unwrap()), [3, 4, 5]);
        assert_eq!(revisions(&feed.deltas_after(5).unwrap()), Vec::<Revision>::new());
    }

    /// Another control plane compacts the change log after this feed chose its floor and before
    /// it read the rows: the ring must not claim the revisions it never saw.
    #[tokio::test]
    async fn a_log_compacted_by_another_process_leaves_no_hole() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("cp.db").display());
        let ours: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&url, crate::store::test_db::test_keyring()).await.unwrap());
        let theirs = SqliteStore::open(&url, crate::store::test_db::test_keyring()).await.unwrap();
        commit(ours.as_ref(), 2).await;
        // As `start` does: the floor comes from the log as it is now (nothing compacted)...
        let feed = ChangeFeed::empty(ours.clone(), 100).await.unwrap();
        assert_eq!(feed.head(), 0);

        // ...then the other process commits and keeps only the newest 2 revisions (5 and 6)...
        commit(&theirs, 4).await;
        assert_eq!(theirs.compact_changes(2).await.unwrap(), 4);

        // ...and only then does this feed read the log.
        feed.catch_up().await.unwrap();
        assert_eq!(feed.head(), 6);
        for behind in 0..4 {
            assert_eq!(feed.deltas_after(behind), Err(TooOld), "revision {behind} needs a snapshot");
        }
        assert_eq!(revisions(&feed.deltas_after(4).unwrap()), [5, 6]);

        // Later commits follow on as usual.
        commit(ours.as_ref(), 1).await;
        feed.catch_up().await.unwrap();
        assert_eq!(revisions(&feed.deltas_after(4).unwrap()), [5, 6, 7]);
    }
}
