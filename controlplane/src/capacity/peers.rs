//! Limit demand across control-plane replicas on one PostgreSQL store.
//!
//! Each control plane sees only its own data planes' demand reports. Every [`INTERVAL`] it
//! writes its sums per limited key to the shared `limit_presence` table and reads the others'
//! rows into its [`Capacity`] board, which counts them as one more holder per key when it
//! divides a limit (`grant.rs`). What holds across several control planes: every control plane
//! divides the same limit among all holders it knows of, its own replicas one by one and each
//! other control plane's replicas as one sum, so with fresh rows the caps granted fleet-wide sum
//! to at most the limit (up to one unit per other control plane from rounding). Rows are up to
//! [`INTERVAL`] plus a database round trip old, so a control plane may grant against a peer's
//! slightly stale admitted count: the fleet-wide sum can then exceed the limit by what the
//! peers admitted in that interval beyond their reported shares, never by more than their caps.
//! Without the database (it is down), each control plane keeps the peers' last rows until they
//! expire ([`TTL`]), then divides as if alone: up to one full share per control plane.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::grant::PeerSum;
use super::{Capacity, KeyId};
use crate::store::{LimitRow, PresenceTable};

/// How often a control plane shares and reads limit demand.
pub(crate) const INTERVAL: Duration = Duration::from_millis(250);
/// How long a control plane's rows last without a refresh.
pub(crate) const TTL: Duration = Duration::from_secs(5);

/// Shares and mirrors until the task is aborted.
pub(crate) async fn share(capacity: Arc<Capacity>, table: Arc<dyn PresenceTable>, instance: String) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        let (replicas, sums) = capacity.local_sums();
        let mut rows = vec![LimitRow { instance: instance.clone(), replicas, ..LimitRow::default() }];
        rows.extend(sums.into_iter().map(|(id, sum, window)| LimitRow {
            instance: instance.clone(),
            key_id: uuid::Uuid::from_bytes(id).to_string(),
            window_start: window,
            admitted: sum.admitted,
            tokens: sum.tokens,
            in_flight: sum.in_flight,
            weight: sum.weight,
            busy: replicas - sum.idle,
            replicas,
            budget_uncommitted: sum.uncommitted_budget,
        }));
        let result = match table.publish_limits(&instance, &rows, TTL).await {
            Ok(()) => table.other_limits(&instance).await,
            Err(err) => Err(err),
        };
        match result {
            Ok(others) => {
                let now_window = aurora_core::window_start(crate::time::to_unix_secs(crate::time::now()));
                let (replicas, peers) = sum_peers(&others, now_window);
                capacity.set_peers(replicas, peers);
                failing = false;
            }
            Err(err) if !failing => {
                tracing::warn!(error = %err, "cannot share limit demand with the other control planes");
                failing = true;
            }
            Err(_) => {}
        }
    }
}

/// The other control planes' rows summed per key: `(their data planes, sums)`. A control
/// plane with no row for a key holds all its replicas idle for it.
fn sum_peers(rows: &[LimitRow], window: i64) -> (u32, HashMap<KeyId, PeerSum>) {
    let mut replicas_of: HashMap<&str, u64> = HashMap::new();
    for row in rows.iter().filter(|r| r.key_id.is_empty()) {
        replicas_of.insert(&row.instance, row.replicas);
    }
    let total: u64 = replicas_of.values().sum();
    let mut sums: HashMap<KeyId, PeerSum> = HashMap::new();
    let mut busy_of: HashMap<KeyId, u64> = HashMap::new();
    for row in rows.iter().filter(|r| !r.key_id.is_empty()) {
        let Ok(id) = uuid::Uuid::parse_str(&row.key_id) else { continue };
        let sum = sums.entry(*id.as_bytes()).or_default();
        if row.window_start == window {
            sum.admitted += row.admitted;
            sum.tokens += row.tokens;
        }
        sum.in_flight += row.in_flight;
        sum.weight += row.weight;
        sum.uncommitted_budget += row.budget_uncommitted;
        *busy_of.entry(*id.as_bytes()).or_default() += row.busy.min(row.replicas);
    }
    for (id, sum) in &mut sums {
        sum.idle = total.saturating_sub(busy_of.get(id).copied().unwrap_or(0));
    }
    (u32::try_from(total).unwrap_or(u32::MAX), sums)
}

/// Keys with no row from any peer still owe the peers' idle replicas a reserve: the board
/// asks for it with [`idle_only`].
pub(crate) fn idle_only(replicas: u32) -> PeerSum {
    PeerSum { idle: u64::from(replicas), ..PeerSum::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_sum_per_key_and_count_idle_replicas() {
        let id = uuid::Uuid::now_v7();
        let row = |instance: &str, key: &str, window, admitted, busy, replicas| LimitRow {
            instance: instance.into(),
            key_id: key.into(),
            window_start: window,
            admitted,
            weight: busy * 1_000,
            busy,
            replicas,
            ..LimitRow::default()
        };
        let key = id.to_string();
        let rows = [
            row("a", "", 0, 0, 0, 2),
            row("b", "", 0, 0, 0, 3),
            row("a", &key, 60, 10, 1, 2),
            row("b", &key, 0, 99, 2, 3), // the previous window's counts
        ];
        let (replicas, sums) = sum_peers(&rows, 60);
        assert_eq!(replicas, 5);
        let sum = sums[id.as_bytes()];
        assert_eq!((sum.admitted, sum.weight, sum.idle), (10, 3_000, 2));
        assert_eq!(idle_only(4).idle, 4);
    }
}
