//! The data-plane replicas currently subscribed to this control plane.
//!
//! Each config stream registers its replica here and reports every revision the replica
//! acknowledges (or rejects). The admin API lists the fleet and waits on it: `WaitForRevision`
//! returns once every replica connected when the wait started, and every one that connected
//! since, has acknowledged a revision. A replica that disconnects before acknowledging stays
//! pending: `--wait` must never report success for a data plane that went away unconfirmed.
//!
//! With several control-plane replicas on one PostgreSQL database, the fleet also holds the
//! data planes the other replicas serve ([`Replica::remote`]), mirrored from the shared presence
//! table by `fleet_share`, so listings and waits see the whole fleet whichever replica answers.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::Instant;

use crate::store::Revision;

/// What the control plane knows about one connected replica.
#[derive(Debug, Clone)]
pub struct Replica {
    /// The registration's id, unique in this process: with the node id, the position of the
    /// replica in listings (two streams may share a node id while one reconnects).
    pub id: u64,
    pub node_id: String,
    pub address: Option<SocketAddr>,
    pub version: String,
    pub connected_at: SystemTime,
    pub last_seen_at: SystemTime,
    pub acked_revision: Revision,
    pub rejected: Option<(Revision, String)>,
    /// Connected to another control-plane replica, and known here through the shared presence
    /// table; `last_seen_at` is then the time that replica last refreshed it.
    pub remote: bool,
}

/// The outcome of [`Fleet::wait_for`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitOutcome {
    pub complete: bool,
    pub elapsed: Duration,
    /// Node ids that had not acknowledged when the wait ended; a replica that disconnected
    /// first carries a ` (disconnected)` suffix.
    pub pending: Vec<String>,
    /// How many replicas the wait considered.
    pub replicas: usize,
}

#[derive(Debug)]
pub struct Fleet {
    // A std mutex: it is held only to copy or update a few fields, never across an `.await`,
    // and never on the data plane's request path.
    state: Mutex<State>,
    next_id: AtomicU64,
    /// Bumped after every change, so waiters re-check.
    changed: watch::Sender<u64>,
    /// What the replicas report about their provider credentials (issue 15).
    credential_health: crate::credential_health::CredentialBoard,
}

#[derive(Debug, Default)]
struct State {
    replicas: HashMap<u64, Replica>,
    /// Every [`Fleet::wait_for`] in progress. Each keeps its own record of the replicas it
    /// considers, updated under the same lock as `replicas`, so that an ack followed at once by
    /// a disconnect is never missed between two wake-ups of the waiter.
    waits: HashMap<u64, Wait>,
    /// Set when the control plane shuts down: waits end at once instead of at their timeout.
    closed: bool,
}

#[derive(Debug)]
struct Wait {
    revision: Revision,
    /// By registration id: the replicas connected when the wait started and those that
    /// connected since. Entries stay after a disconnect.
    considered: HashMap<u64, Considered>,
}

#[derive(Debug)]
struct Considered {
    node_id: String,
    /// The replica's latest ack (its last one, once disconnected) is at least the revision.
    applied: bool,
    connected: bool,
}

impl Wait {
    fn consider(&mut self, id: u64, replica: &Replica) {
        let applied = replica.acked_revision >= self.revision;
        self.considered.insert(id, Considered { node_id: replica.node_id.clone(), applied, connected: true });
    }

    /// The pending node ids, sorted, and how many replicas count.
    fn pending(&self) -> (Vec<String>, usize) {
        // A data plane that reconnected (same node id, new stream) is waited for through its
        // new connection: the old one is neither pending nor counted twice.
        let reconnected: HashSet<&str> =
            self.considered.values().filter(|c| c.connected).map(|c| c.node_id.as_str()).collect();
        let mut pending = Vec::new();
        let mut replicas = 0;
        for considered in self.considered.values() {
            if !considered.connected && reconnected.contains(considered.node_id.as_str()) {
                continue;
            }
            replicas += 1;
            match (considered.applied, considered.connected) {
                (true, _) => {}
                (false, true) => pending.push(considered.node_id.clone()),
                (false, false) => pending.push(format!("{} (disconnected)", considered.node_id)),
            }
        }
        pending.sort();
        (pending, replicas)
    }
}

impl Default for Fleet {
    fn default() -> Self {
        Fleet {
            state: Mutex::default(),
            next_id: AtomicU64::new(1),
            changed: watch::channel(0).0,
            credential_health: Default::default(),
        }
    }
}

/// Keeps a replica registered; dropping it (the stream ended) removes the replica.
#[derive(Debug)]
pub struct Registration {
    fleet: Arc<Fleet>,
    id: u64,
}

/// Removes its wait from the fleet, however `wait_for` ends (even when the call is cancelled).
struct WaitGuard<'a> {
    fleet: &'a Fleet,
    id: u64,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        self.fleet.lock().waits.remove(&self.id);
    }
}

impl Fleet {
    pub fn new() -> Arc<Self> {
        Arc::new(Fleet::default())
    }

    pub fn credential_health(&self) -> &crate::credential_health::CredentialBoard {
        &self.credential_health
    }

    pub fn register(self: &Arc<Self>, node_id: String, address: Option<SocketAddr>, version: String) -> Registration {
        let now = SystemTime::now();
        self.insert(node_id, address, version, now, false)
    }

    /// Registers a data plane that another control-plane replica serves, as its presence row
    /// says; it is waited for and listed like a local one until the registration is dropped.
    pub fn register_remote(
        self: &Arc<Self>,
        node_id: String,
        address: Option<SocketAddr>,
        version: String,
        connected_at: SystemTime,
    ) -> Registration {
        self.insert(node_id, address, version, connected_at, true)
    }

    fn insert(
        self: &Arc<Self>,
        node_id: String,
        address: Option<SocketAddr>,
        version: String,
        connected_at: SystemTime,
        remote: bool,
    ) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let replica = Replica {
            id,
            node_id,
            address,
            version,
            connected_at,
            last_seen_at: connected_at,
            acked_revision: 0,
            rejected: None,
            remote,
        };
        self.update(|state| {
            // Waits in progress wait for newcomers too: one may have connected before the
            // revision was committed, and the fleet cannot tell it from one that connected after
            // (which gets a snapshot at the head revision and acknowledges it at once).
            for wait in state.waits.values_mut() {
                wait.consider(id, &replica);
            }
            state.replicas.insert(id, replica);
        });
        Registration { fleet: self.clone(), id }
    }

    /// The data planes whose streams this control plane holds, in no particular order.
    pub fn local(&self) -> Vec<Replica> {
        self.lock().replicas.values().filter(|replica| !replica.remote).cloned().collect()
    }

    /// The replicas, ordered by node id, then by when they connected.
    pub fn list(&self) -> Vec<Replica> {
        self.list_after(None, usize::MAX)
    }

    /// At most `limit` replicas that come after `after` (a node id and registration id) in
    /// [`list`](Self::list) order: one page of a listing that stays consistent while replicas
    /// come and go.
    pub fn list_after(&self, after: Option<(&str, u64)>, limit: usize) -> Vec<Replica> {
        let mut list: Vec<Replica> = self
            .lock()
            .replicas
            .values()
            .filter(|r| after.is_none_or(|after| (r.node_id.as_str(), r.id) > after))
            .cloned()
            .collect();
        list.sort_by(|a, b| a.node_id.cmp(&b.node_id).then(a.id.cmp(&b.id)));
        list.truncate(limit);
        list
    }

    /// A receiver that changes whenever a replica connects, acknowledges, rejects or leaves.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The acknowledged revision of every replica connected to this control plane, in no
    /// particular order: the metrics of each control plane describe its own streams.
    pub fn acked_revisions(&self) -> Vec<Revision> {
        self.lock().replicas.values().filter(|replica| !replica.remote).map(|replica| replica.acked_revision).collect()
    }

    /// Waits until every replica connected now, and every one that connects meanwhile, has
    /// acknowledged `revision`; or until `timeout` passes, or the fleet is [closed](Self::close).
    /// A replica that disconnects before acknowledging stays pending (unless it reconnects under
    /// the same node id and acknowledges then). With no replica at all, the wait completes at
    /// once with `replicas == 0`.
    pub async fn wait_for(&self, revision: Revision, timeout: Duration) -> WaitOutcome {
        let started = Instant::now();
        let deadline = started + timeout;
        // Subscribed before the first check, so no change after it goes unnoticed.
        let mut changed = self.changed.subscribe();
        let guard = self.begin_wait(revision);
        tracing::info!(revision, ?timeout, "waiting for the data planes to apply a revision");
        loop {
            let (pending, replicas, closed) = {
                let state = self.lock();
                let (pending, replicas) = state.waits.get(&guard.id).map(Wait::pending).unwrap_or_default();
                (pending, replicas, state.closed)
            };
            if pending.is_empty() || closed || Instant::now() >= deadline {
                return WaitOutcome { complete: pending.is_empty(), elapsed: started.elapsed(), pending, replicas };
            }
            let _ = tokio::time::timeout_at(deadline, changed.changed()).await;
        }
    }

    /// Ends every wait in progress (and any started later) at once, with whatever is still
    /// pending. Called when the control plane shuts down: its config streams are closing, so
    /// nothing more will be acknowledged here, and a wait must not hold up the shutdown.
    pub fn close(&self) {
        self.update(|state| state.closed = true);
    }

    fn begin_wait(&self, revision: Revision) -> WaitGuard<'_> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut state = self.lock();
        let mut wait = Wait { revision, considered: HashMap::new() };
        for (&replica_id, replica) in &state.replicas {
            wait.consider(replica_id, replica);
        }
        state.waits.insert(id, wait);
        WaitGuard { fleet: self, id }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update(&self, change: impl FnOnce(&mut State)) {
        change(&mut self.lock());
        self.changed.send_modify(|generation| *generation += 1);
    }
}

impl Registration {
    /// This stream's id, unique within the fleet.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The replica has applied `revision` and nothing newer. Acks arrive in stream order and a
    /// heartbeat's ack carries the replica's current revision, so the latest ack is the truth,
    /// even when it is lower than an earlier one: a replica re-snapshotted to an older store
    /// revision (a restored backup) must show, and be waited for at, that revision.
    pub fn ack(&self, revision: Revision) {
        let id = self.id;
        self.fleet.update(|state| {
            if let Some(replica) = state.replicas.get_mut(&id) {
                replica.acked_revision = revision;
                replica.last_seen_at = SystemTime::now();
            }
            for wait in state.waits.values_mut() {
                if let Some(considered) = wait.considered.get_mut(&id) {
                    considered.applied = revision >= wait.revision;
                }
            }
        });
    }

    /// A remote replica's presence row was refreshed: its latest ack, rejection and time.
    pub fn refresh(&self, acked: Revision, rejected: Option<(Revision, String)>, last_seen_at: SystemTime) {
        self.ack(acked);
        self.fleet.update(|state| {
            if let Some(replica) = state.replicas.get_mut(&self.id) {
                replica.rejected = rejected;
                replica.last_seen_at = last_seen_at;
            }
        });
    }

    /// The replica could not apply `revision` and kept its previous state.
    pub fn reject(&self, revision: Revision, reason: String) {
        self.fleet.update(|state| {
            if let Some(replica) = state.replicas.get_mut(&self.id) {
                replica.rejected = Some((revision, reason));
                replica.last_seen_at = SystemTime::now();
            }
        });
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let id = self.id;
        self.fleet.credential_health.forget(id);
        self.fleet.update(|state| {
            state.replicas.remove(&id);
            // Waits keep the replica, with its last ack: one that left before acknowledging
            // stays pending.
            for wait in state.waits.values_mut() {
                if let Some(considered) = wait.considered.get_mut(&id) {
                    considered.connected = false;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Paused time: a wait that runs to its timeout ends as soon as nothing else can happen,
    // and `elapsed` is exact.
    const LONG: Duration = Duration::from_secs(20);

    /// Starts `wait_for(revision, timeout)` and returns once it has taken its view of the fleet.
    async fn start_wait(
        fleet: &Arc<Fleet>,
        revision: Revision,
        timeout: Duration,
    ) -> tokio::task::JoinHandle<WaitOutcome> {
        let waits = fleet.lock().waits.len();
        let waiter = {
            let fleet = fleet.clone();
            tokio::spawn(async move { fleet.wait_for(revision, timeout).await })
        };
        while fleet.lock().waits.len() == waits {
            tokio::task::yield_now().await;
        }
        waiter
    }

    /// Pages follow each other without gaps or repeats, even when a node id appears twice
    /// (a reconnect) and replicas leave between pages.
    #[test]
    fn listings_page_by_node_id_then_connection() {
        let fleet = Fleet::new();
        let _b = fleet.register("b".into(), None, "v".into());
        let a1 = fleet.register("a".into(), None, "v".into());
        let _c = fleet.register("c".into(), None, "v".into());
        let _a2 = fleet.register("a".into(), None, "v".into());
        let first = fleet.list_after(None, 2);
        assert_eq!(first.iter().map(|r| r.node_id.as_str()).collect::<Vec<_>>(), ["a", "a"]);
        assert!(first[0].id < first[1].id);
        drop(a1);
        let last = &first[1];
        let rest = fleet.list_after(Some((&last.node_id, last.id)), 10);
        assert_eq!(rest.iter().map(|r| r.node_id.as_str()).collect::<Vec<_>>(), ["b", "c"]);
        assert_eq!(fleet.list().len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn waits_for_every_replica_and_names_the_laggards() {
        let fleet = Fleet::new();
        let outcome = fleet.wait_for(5, LONG).await;
        assert!(outcome.complete && outcome.replicas == 0, "no replicas: nothing to wait for");

        let a = fleet.register("a".into(), None, "1".into());
        let b = fleet.register("b".into(), None, "1".into());
        a.ack(5);
        let outcome = fleet.wait_for(5, Duration::from_millis(50)).await;
        assert!(!outcome.complete);
        assert_eq!(outcome.pending, ["b"]);
        assert_eq!(outcome.elapsed, Duration::from_millis(50));

        let waiter = start_wait(&fleet, 5, LONG).await;
        b.ack(6);
        let outcome = waiter.await.unwrap();
        assert!(outcome.complete && outcome.replicas == 2);
        assert_eq!(outcome.elapsed, Duration::ZERO);

        b.reject(7, "bad".into());
        drop(a);
        let listed = fleet.list();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].acked_revision, 6);
        assert_eq!(listed[0].rejected, Some((7, "bad".into())));
        assert!(fleet.lock().waits.is_empty(), "finished waits leave nothing behind");
    }

    #[tokio::test(start_paused = true)]
    async fn a_replica_that_leaves_before_acknowledging_fails_the_wait() {
        let fleet = Fleet::new();
        let a = fleet.register("a".into(), None, "1".into());
        let b = fleet.register("b".into(), None, "1".into());
        let waiter = start_wait(&fleet, 5, LONG).await;
        a.ack(5);
        drop(b);
        let outcome = waiter.await.unwrap();
        assert!(!outcome.complete);
        assert_eq!(outcome.pending, ["b (disconnected)"]);
        assert_eq!(outcome.replicas, 2);
        assert_eq!(outcome.elapsed, LONG);
    }

    #[tokio::test(start_paused = true)]
    async fn a_replica_that_acknowledged_and_then_left_counts_as_applied() {
        let fleet = Fleet::new();
        let a = fleet.register("a".into(), None, "1".into());
        let b = fleet.register("b".into(), None, "1".into());
        let waiter = start_wait(&fleet, 5, LONG).await;
        // Both before the waiter runs again: it must not need to see the ack while connected.
        a.ack(5);
        drop(a);
        b.ack(5);
        let outcome = waiter.await.unwrap();
        assert!(outcome.complete, "{outcome:?}");
        assert_eq!(outcome.replicas, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn replicas_that_connect_during_the_wait_are_waited_for() {
        let fleet = Fleet::new();
        let a = fleet.register("a".into(), None, "1".into());
        let waiter = start_wait(&fleet, 5, LONG).await;
        let b = fleet.register("b".into(), None, "1".into());
        a.ack(5);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "b has not acknowledged yet");
        b.ack(5);
        let outcome = waiter.await.unwrap();
        assert!(outcome.complete && outcome.replicas == 2, "{outcome:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_replica_that_reconnects_is_waited_for_through_its_new_stream() {
        let fleet = Fleet::new();
        let a = fleet.register("a".into(), None, "1".into());
        let waiter = start_wait(&fleet, 5, LONG).await;
        drop(a);
        let again = fleet.register("a".into(), None, "1".into());
        again.ack(5);
        let outcome = waiter.await.unwrap();
        assert!(outcome.complete && outcome.replicas == 1, "{outcome:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn closing_the_fleet_ends_waits_at_once_and_unsuccessfully() {
        let fleet = Fleet::new();
        let a = fleet.register("a".into(), None, "1".into());
        let b = fleet.register("b".into(), None, "1".into());
        b.ack(5);
        let waiter = start_wait(&fleet, 5, LONG).await;
        // Shutdown: every stream ends, then the fleet is closed.
        drop(a);
        drop(b);
        fleet.close();
        let outcome = waiter.await.unwrap();
        assert!(!outcome.complete);
        assert_eq!(outcome.pending, ["a (disconnected)"]);
        assert_eq!(outcome.replicas, 2);
        assert_eq!(outcome.elapsed, Duration::ZERO, "a shutdown must not wait for the timeout");
    }

    #[tokio::test]
    async fn the_latest_ack_is_the_replica_s_revision() {
        let fleet = Fleet::new();
        let a = fleet.register("a".into(), None, "1".into());
        a.ack(6);
        // Re-snapshotted to an older store revision, say a restored backup.
        a.ack(4);
        assert_eq!(fleet.list()[0].acked_revision, 4);
        assert_eq!(fleet.acked_revisions(), [4]);
    }
}
