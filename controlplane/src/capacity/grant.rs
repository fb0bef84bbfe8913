//! The leases of every replica at one instant: for each limited key, its limits divided among
//! the replicas (and, on PostgreSQL, the other control planes' replicas) by [`split`]. Pure:
//! the clock is a parameter, so tests step through windows and periods at will.

use std::collections::HashMap;

use aurora_core::{KeyLimits, window_start};
use aurora_proto::v1::{KeyLease, Leases};

use super::KeyId;
use super::demand::Demand;
use super::split::{Holder, split};

/// What the other control planes' replicas hold of one key, summed (see `peers.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct PeerSum {
    /// Requests admitted and tokens charged in the current window.
    pub admitted: u64,
    pub tokens: u64,
    pub in_flight: u64,
    /// Their summed demand weight, and how many of their replicas show none.
    pub weight: u64,
    pub idle: u64,
    /// Tokens their data planes reported that no committed usage holds yet.
    pub uncommitted_budget: u64,
}

/// One limited key as the grant sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyGrant {
    pub limits: KeyLimits,
    /// Tokens left fleet-wide in the budget period (negative when overspent) and the period's
    /// end in Unix seconds (0: never); `None` without a budget.
    pub budget: Option<(i64, i64)>,
    pub peers: PeerSum,
}

/// One `Leases` per replica (in `replicas` order) at `now_ms`.
pub(crate) fn grant(
    now_ms: i64,
    keys: &[(KeyId, KeyGrant)],
    replicas: &[&HashMap<KeyId, Demand>],
    valid_for_ms: i64,
    fleet_replicas: u32,
) -> Vec<Leases> {
    let window = window_start(now_ms.div_euclid(1000));
    let mut leases: Vec<Leases> = replicas
        .iter()
        .map(|_| Leases {
            window_start: window,
            valid_until_ms: now_ms + valid_for_ms,
            replicas: fleet_replicas.max(1),
            keys: Vec::with_capacity(keys.len()),
        })
        .collect();
    let none = Demand::default();
    for (id, key) in keys {
        let demands: Vec<&Demand> = replicas.iter().map(|r| r.get(id).unwrap_or(&none)).collect();
        let weights: Vec<u64> = demands.iter().map(|d| d.weight(now_ms)).collect();
        let peer = key.peers;
        let has_peers = peer.weight > 0 || peer.idle > 0 || peer.admitted > 0 || peer.in_flight > 0;
        let holders = |used: &dyn Fn(&Demand) -> u64, peer_used: u64| -> Vec<Holder> {
            let mut holders: Vec<Holder> = demands
                .iter()
                .zip(&weights)
                .map(|(d, &weight)| Holder { used: used(d), weight, idle: u64::from(weight == 0) })
                .collect();
            if has_peers {
                holders.push(Holder { used: peer_used, weight: peer.weight, idle: peer.idle });
            }
            holders
        };
        let limits = &key.limits;
        let requests = cap(u64::from(limits.requests_per_minute), &holders(&|d| d.admitted_in(window), peer.admitted));
        let tokens = cap(limits.tokens_per_minute, &holders(&|d| d.tokens_in(window), peer.tokens));
        let slots = cap(u64::from(limits.max_concurrent), &holders(&|d| u64::from(d.in_flight), peer.in_flight));
        for (index, lease) in leases.iter_mut().enumerate() {
            // The budget is not divided: a burst on one replica may use what the fleet has
            // left (a refusal for a spent budget tells clients to wait for the period's end,
            // so refusing while tokens are left elsewhere would be wrong). The overshoot is
            // bounded by what the fleet charges before its next demand report reaches here
            // and the next leases reach it (about 250 to 500 ms).
            let (budget_remaining, budget_period_end) = key.budget.unwrap_or((0, 0));
            lease.keys.push(KeyLease {
                key_id: id.to_vec(),
                request_cap: requests.get(index).copied().unwrap_or(0),
                token_cap: tokens.get(index).copied().unwrap_or(0),
                concurrency: u32::try_from(slots.get(index).copied().unwrap_or(0)).unwrap_or(u32::MAX),
                budget_remaining,
                budget_period_end,
            });
        }
    }
    leases
}

/// The shares of a limit (none when the key has no such limit).
fn cap(limit: u64, holders: &[Holder]) -> Vec<u64> {
    if limit == 0 { Vec::new() } else { split(limit, holders) }
}

#[cfg(test)]
mod tests {
    use aurora_proto::v1::KeyDemand;

    use super::*;

    const ID: KeyId = [7; 16];
    const NOW: i64 = 1_796_169_600_000 + 10_000; // 10 s into a minute.

    fn key(rpm: u32, concurrent: u32) -> KeyGrant {
        let limits = KeyLimits { requests_per_minute: rpm, max_concurrent: concurrent, ..Default::default() };
        KeyGrant { limits, budget: None, peers: PeerSum::default() }
    }

    fn demand(admitted: u64, refused: u64, in_flight: u32, at: i64) -> HashMap<KeyId, Demand> {
        let mut d = Demand::default();
        let report =
            KeyDemand { admitted_requests: admitted, refused_requests: refused, in_flight, ..Default::default() };
        d.update(window_start(at / 1000), &report, at);
        HashMap::from([(ID, d)])
    }

    fn caps(leases: &[Leases]) -> Vec<(u64, u32)> {
        leases.iter().map(|l| (l.keys[0].request_cap, l.keys[0].concurrency)).collect()
    }

    #[test]
    fn idle_keys_get_even_leases_at_once() {
        let idle = HashMap::new();
        let leases = grant(NOW, &[(ID, key(10, 3))], &[&idle, &idle, &idle], 3_000, 3);
        assert_eq!(caps(&leases), [(4, 1), (3, 1), (3, 1)]);
        assert_eq!(leases[0].window_start, window_start(NOW / 1000));
        assert_eq!((leases[0].valid_until_ms, leases[0].replicas), (NOW + 3_000, 3));
    }

    #[test]
    fn busy_replicas_get_what_is_left_and_never_less_than_they_admitted() {
        let busy = demand(40, 20, 2, NOW);
        let quiet = demand(5, 0, 0, NOW - 5_000);
        let idle = HashMap::new();
        let leases = grant(NOW, &[(ID, key(60, 4))], &[&busy, &quiet, &idle], 3_000, 3);
        let caps = caps(&leases);
        // 15 left: 10 % reserve (1 each for the two idle ones), the rest to the busy replica.
        assert_eq!(caps.iter().map(|c| c.0).collect::<Vec<_>>(), [40 + 13, 5 + 1, 1]);
        assert!(caps.iter().map(|c| u64::from(c.1)).sum::<u64>() <= 4 && caps[0].1 >= 2);
    }

    #[test]
    fn a_new_window_starts_over_and_an_exhausted_budget_refuses_everywhere() {
        let busy = demand(60, 30, 0, NOW);
        let next_minute = NOW + 60_000;
        let mut over = key(60, 0);
        over.budget = Some((-5, 1_796_256_000));
        let leases = grant(next_minute, &[(ID, over)], &[&busy, &HashMap::new()], 3_000, 2);
        assert_eq!(
            leases.iter().map(|l| l.keys[0].request_cap).sum::<u64>(),
            60,
            "last window's counts are not this one's"
        );
        assert!(
            leases.iter().all(|l| l.keys[0].budget_remaining == -5 && l.keys[0].budget_period_end == 1_796_256_000)
        );

        let mut left = key(0, 0);
        left.budget = Some((100, 0));
        let leases = grant(NOW, &[(ID, left)], &[&demand(1, 0, 0, NOW), &HashMap::new()], 3_000, 2);
        let shares: Vec<i64> = leases.iter().map(|l| l.keys[0].budget_remaining).collect();
        assert_eq!(shares, [100, 100], "each replica may use what the fleet has left");
        assert!(leases.iter().all(|l| l.keys[0].request_cap == 0), "no request limit, no cap");
    }

    #[test]
    fn other_control_planes_keep_their_part() {
        let mut shared = key(100, 0);
        shared.peers = PeerSum { admitted: 30, weight: 4_000, ..PeerSum::default() };
        let mine = demand(20, 0, 0, NOW);
        let leases = grant(NOW, &[(ID, shared)], &[&mine], 3_000, 2);
        let cap = leases[0].keys[0].request_cap;
        // 50 left, split by equal weight (20 in 5 s here, the same there): 25 each.
        assert_eq!(cap, 20 + 25);
    }
}
