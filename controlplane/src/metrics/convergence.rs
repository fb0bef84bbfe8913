//! How long a committed revision takes to be applied by every connected replica.
//!
//! A background task notes when the change feed publishes each new head revision and, every
//! time the fleet changes (an ack, a replica joining or leaving), retires the revisions every
//! connected replica has acknowledged, observing the time each took. The oldest revision still
//! waiting gives the fleet's lag in seconds.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use prometheus_client::metrics::histogram::Histogram;

use crate::config_stream::ChangeFeed;
use crate::fleet::Fleet;
use crate::store::Revision;

/// Revisions remembered while waiting for acknowledgements; past this the oldest are
/// forgotten (a fleet that far behind is already visible in the lag gauges).
const MAX_PENDING: usize = 10_000;

/// From commit to acknowledgement by every replica: 1 ms to 1 min.
pub(super) const BUCKETS: [f64; 15] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

#[derive(Debug)]
pub struct Convergence {
    // A std mutex: held for a few pushes and pops, never across an `.await`, and off every
    // request path (this is the control plane).
    pending: Mutex<VecDeque<(Revision, Instant)>>,
    pub(super) histogram: Histogram,
}

impl Convergence {
    pub fn new() -> Self {
        Convergence { pending: Mutex::default(), histogram: Histogram::new(BUCKETS) }
    }

    /// Follows the feed and the fleet until the task is aborted.
    pub async fn track(self: Arc<Self>, feed: Arc<ChangeFeed>, fleet: Arc<Fleet>) {
        let mut head = feed.subscribe();
        let mut changed = fleet.watch();
        loop {
            tokio::select! {
                published = head.changed() => {
                    if published.is_err() {
                        return;
                    }
                    let revision = *head.borrow_and_update();
                    self.published(revision, Instant::now());
                }
                acked = changed.changed() => if acked.is_err() { return },
            }
            self.settle(&fleet.acked_revisions(), Instant::now());
        }
    }

    fn published(&self, revision: Revision, at: Instant) {
        let mut pending = self.lock();
        if pending.back().is_none_or(|(last, _)| *last < revision) {
            pending.push_back((revision, at));
        }
        while pending.len() > MAX_PENDING {
            pending.pop_front();
        }
    }

    /// Retires every revision all of `acked` (the connected replicas) have reached.
    fn settle(&self, acked: &[Revision], now: Instant) {
        let mut pending = self.lock();
        let Some(min) = acked.iter().copied().min() else {
            // Nobody to wait for: nothing converges, nothing lags.
            pending.clear();
            return;
        };
        while let Some((revision, at)) = pending.front().copied() {
            if revision > min {
                break;
            }
            self.histogram.observe(now.duration_since(at).as_secs_f64());
            pending.pop_front();
        }
    }

    /// Seconds since the oldest revision not yet applied everywhere was published; 0 if none.
    pub fn lag_seconds(&self) -> f64 {
        self.lock().front().map_or(0.0, |(_, at)| at.elapsed().as_secs_f64())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(Revision, Instant)>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for Convergence {
    fn default() -> Self {
        Convergence::new()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_revision_converges_when_the_slowest_replica_acks_it() {
        let convergence = Convergence::new();
        let t0 = Instant::now();
        convergence.published(1, t0);
        convergence.published(2, t0 + Duration::from_millis(10));
        convergence.settle(&[2, 1], t0 + Duration::from_millis(20));
        assert_eq!(convergence.lock().len(), 1, "revision 2 still waits for the second replica");
        assert!(convergence.lag_seconds() >= 0.0);
        convergence.settle(&[2, 2], t0 + Duration::from_millis(30));
        assert!(convergence.lock().is_empty());

        convergence.published(3, t0);
        convergence.settle(&[], t0);
        assert!(convergence.lock().is_empty(), "no replicas: nothing to wait for");
        assert_eq!(convergence.lag_seconds(), 0.0);
    }
}
