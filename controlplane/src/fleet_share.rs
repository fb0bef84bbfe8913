//! One fleet across control-plane replicas: each replica publishes the data planes whose
//! streams it holds to the store's shared presence table, and mirrors every other replica's
//! into its own [`Fleet`] as remote replicas, so `ListDataPlanes` and `WaitForRevision` answer
//! for the whole fleet whichever replica serves them.
//!
//! A replica rewrites its rows every [`Timing::interval`] (1 s) and at once (at most every
//! [`MIN_GAP`]) when one of its data planes connects, acknowledges or leaves. Rows expire
//! [`Timing::ttl`] (10 s) after their last refresh, so the data planes of a replica that was killed
//! drop out of every listing by then. A data plane that reconnected to this replica is known
//! by its local stream only: a remote row with the same node id is ignored meanwhile. When the
//! database is unreachable, the mirror keeps what it last read and publishing is retried.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crate::fleet::{Fleet, Registration};
use crate::store::{Presence, PresenceTable};

/// How often presence is shared, and how long it lasts.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How often a replica refreshes its presence rows and reads the others'.
    pub interval: Duration,
    /// How long a presence row stays valid without a refresh.
    pub ttl: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing { interval: Duration::from_secs(1), ttl: Duration::from_secs(10) }
    }
}

/// The least time between two refreshes triggered by local changes.
const MIN_GAP: Duration = Duration::from_millis(100);

/// Publishes and mirrors until the task is aborted. `instance` names this replica in the table.
pub async fn share(fleet: Arc<Fleet>, table: Arc<dyn PresenceTable>, instance: String, timing: Timing) {
    let mut mirror = Mirror::default();
    let mut changed = fleet.watch();
    let mut tick = tokio::time::interval(timing.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut again = false;
    let mut failing = false;
    loop {
        if !again {
            tokio::select! {
                _ = tick.tick() => {}
                result = changed.changed() => if result.is_err() { return },
            }
        }
        changed.mark_unchanged();
        let local = fleet.local();
        let rows: Vec<Presence> = local
            .iter()
            .map(|replica| Presence {
                instance: instance.clone(),
                registration: replica.id,
                node_id: replica.node_id.clone(),
                address: replica.address,
                version: replica.version.clone(),
                connected_at: replica.connected_at,
                last_seen_at: replica.last_seen_at,
                acked_revision: replica.acked_revision,
                rejected: replica.rejected.clone(),
            })
            .collect();
        let published = table.publish(&instance, &rows, timing.ttl).await;
        let others = table.others(&instance).await;
        // A local change while the table was busy needs another round; the mirror's own
        // changes, made next, do not.
        again = changed.has_changed().unwrap_or(false);
        let failure = published.as_ref().err().or(others.as_ref().err()).map(ToString::to_string);
        match (&failure, failing) {
            // Once per outage, not once a second: the database's own health is reported elsewhere.
            (Some(error), false) => {
                tracing::warn!(%error, "cannot share the fleet with the other control planes; retrying");
            }
            (None, true) => tracing::info!("sharing the fleet with the other control planes again"),
            _ => {}
        }
        failing = failure.is_some();
        // While the table cannot be read, the mirror keeps its last view.
        if let Ok(others) = others {
            let local_nodes: HashSet<&str> = local.iter().map(|r| r.node_id.as_str()).collect();
            mirror.reconcile(&fleet, others.into_iter().filter(|p| !local_nodes.contains(p.node_id.as_str())));
        }
        changed.mark_unchanged();
        tokio::time::sleep(MIN_GAP).await;
    }
}

/// The remote replicas registered in the local fleet, by (instance, registration).
#[derive(Debug, Default)]
struct Mirror {
    remote: HashMap<(String, u64), Registration>,
}

impl Mirror {
    fn reconcile(&mut self, fleet: &Arc<Fleet>, rows: impl Iterator<Item = Presence>) {
        let mut seen = HashSet::new();
        for row in rows {
            let key = (row.instance.clone(), row.registration);
            let registration = self.remote.entry(key.clone()).or_insert_with(|| {
                fleet.register_remote(row.node_id.clone(), row.address, row.version.clone(), row.connected_at)
            });
            registration.refresh(row.acked_revision, row.rejected.clone(), row.last_seen_at);
            seen.insert(key);
        }
        // Dropping a registration removes the replica (waits keep it, disconnected).
        self.remote.retain(|key, _| seen.contains(key));
    }
}

#[cfg(test)]
#[path = "fleet_share_tests.rs"]
mod tests;
