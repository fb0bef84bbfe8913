//! The data-plane replicas currently subscribed to this control plane.
//!
//! Each config stream registers its replica here and reports every revision the replica
//! acknowledges (or rejects). The admin API lists the fleet and waits on it: `WaitForRevision`
//! returns once every connected replica has acknowledged a revision.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use crate::store::Revision;

/// What the control plane knows about one connected replica.
#[derive(Debug, Clone)]
pub struct Replica {
    pub node_id: String,
    pub address: Option<SocketAddr>,
    pub version: String,
    pub connected_at: SystemTime,
    pub last_seen_at: SystemTime,
    pub acked_revision: Revision,
    pub rejected: Option<(Revision, String)>,
}

/// The outcome of [`Fleet::wait_for`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitOutcome {
    pub complete: bool,
    pub elapsed: Duration,
    /// Node ids that had not acknowledged when the wait ended.
    pub pending: Vec<String>,
    pub replicas: usize,
}

#[derive(Debug)]
pub struct Fleet {
    // A std mutex: it is held only to copy or update a few fields, never across an `.await`,
    // and never on the data plane's request path.
    replicas: Mutex<HashMap<u64, Replica>>,
    next_id: AtomicU64,
    /// Bumped after every change, so waiters re-check.
    changed: watch::Sender<u64>,
}

impl Default for Fleet {
    fn default() -> Self {
        Fleet { replicas: Mutex::default(), next_id: AtomicU64::new(1), changed: watch::channel(0).0 }
    }
}

/// Keeps a replica registered; dropping it (the stream ended) removes the replica.
#[derive(Debug)]
pub struct Registration {
    fleet: Arc<Fleet>,
    id: u64,
}

impl Fleet {
    pub fn new() -> Arc<Self> {
        Arc::new(Fleet::default())
    }

    pub fn register(self: &Arc<Self>, node_id: String, address: Option<SocketAddr>, version: String) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let now = SystemTime::now();
        let replica = Replica {
            node_id,
            address,
            version,
            connected_at: now,
            last_seen_at: now,
            acked_revision: 0,
            rejected: None,
        };
        self.update(|replicas| {
            replicas.insert(id, replica);
        });
        Registration { fleet: self.clone(), id }
    }

    /// The replicas, ordered by node id.
    pub fn list(&self) -> Vec<Replica> {
        let mut list: Vec<Replica> = self.lock().values().cloned().collect();
        list.sort_by(|a, b| a.node_id.cmp(&b.node_id).then(a.connected_at.cmp(&b.connected_at)));
        list
    }

    /// A receiver that changes whenever a replica connects, acknowledges, rejects or leaves.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The acknowledged revision of every connected replica, in no particular order.
    pub fn acked_revisions(&self) -> Vec<Revision> {
        self.lock().values().map(|replica| replica.acked_revision).collect()
    }

    /// Waits until every connected replica has acknowledged `revision`, or `timeout` passes.
    /// Replicas that disconnect stop counting; with none connected the wait completes at once.
    pub async fn wait_for(&self, revision: Revision, timeout: Duration) -> WaitOutcome {
        let started = Instant::now();
        let mut changed = self.changed.subscribe();
        loop {
            let (pending, replicas) = self.pending(revision);
            let timed_out = started.elapsed() >= timeout;
            if pending.is_empty() || timed_out {
                return WaitOutcome { complete: pending.is_empty(), elapsed: started.elapsed(), pending, replicas };
            }
            let remaining = timeout.saturating_sub(started.elapsed());
            let _ = tokio::time::timeout(remaining, changed.changed()).await;
        }
    }

    fn pending(&self, revision: Revision) -> (Vec<String>, usize) {
        let replicas = self.lock();
        let mut pending: Vec<String> =
            replicas.values().filter(|r| r.acked_revision < revision).map(|r| r.node_id.clone()).collect();
        pending.sort();
        (pending, replicas.len())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Replica>> {
        self.replicas.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update(&self, change: impl FnOnce(&mut HashMap<u64, Replica>)) {
        change(&mut self.lock());
        self.changed.send_modify(|generation| *generation += 1);
    }
}

impl Registration {
    /// The replica applied `revision` (acks of older revisions only refresh `last_seen_at`).
    pub fn ack(&self, revision: Revision) {
        self.fleet.update(|replicas| {
            if let Some(replica) = replicas.get_mut(&self.id) {
                replica.acked_revision = replica.acked_revision.max(revision);
                replica.last_seen_at = SystemTime::now();
            }
        });
    }

    /// The replica could not apply `revision` and kept its previous state.
    pub fn reject(&self, revision: Revision, reason: String) {
        self.fleet.update(|replicas| {
            if let Some(replica) = replicas.get_mut(&self.id) {
                replica.rejected = Some((revision, reason));
                replica.last_seen_at = SystemTime::now();
            }
        });
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.fleet.update(|replicas| {
            replicas.remove(&self.id);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_for_every_replica_and_names_the_laggards() {
        let fleet = Fleet::new();
        let outcome = fleet.wait_for(5, Duration::from_secs(5)).await;
        assert!(outcome.complete && outcome.replicas == 0, "no replicas: nothing to wait for");

        let a = fleet.register("a".into(), None, "1".into());
        let b = fleet.register("b".into(), None, "1".into());
        a.ack(5);
        let outcome = fleet.wait_for(5, Duration::from_millis(50)).await;
        assert!(!outcome.complete);
        assert_eq!(outcome.pending, ["b"]);

        let waiter = {
            let fleet = fleet.clone();
            tokio::spawn(async move { fleet.wait_for(5, Duration::from_secs(20)).await })
        };
        b.ack(6);
        let outcome = waiter.await.unwrap();
        assert!(outcome.complete && outcome.replicas == 2);

        b.reject(7, "bad".into());
        drop(a);
        let listed = fleet.list();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].acked_revision, 6);
        assert_eq!(listed[0].rejected, Some((7, "bad".into())));
    }
}
