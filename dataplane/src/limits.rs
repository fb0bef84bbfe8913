//! Per-key policy enforced on the request path (issue 13): what a key may call, and how much
//! of it, checked in memory before anything goes upstream.
//!
//! A key with nothing to enforce carries no policy at all (`ManagedKey::policy` is `None`), so
//! keys without limits cost nothing extra in a snapshot of millions.
//!
//! Limits hold across every replica through capacity leases (see docs/ARCHITECTURE.md, "Key
//! limits"): [`Limiters`] is this replica's registry of limited keys' state, shared by every
//! snapshot revision. Its layout, by concern:
//! - `config.rs`: the limits as the snapshot carries them (per key, defaults, the fallback);
//! - `window.rs`: minute windows, the compare-and-swap counters that live in one, and budget
//!   periods' ends (cached per thread);
//! - `lease.rs`: leases from the control plane and the caps they (or the fallback) give;
//! - `admission.rs`: one request's admission, and the [`Admission`] guard it holds;
//! - `refusal.rs`: why a request was refused;
//! - `rate_headers.rs`: the providers' rate-limit headers, on every response of a limited key;
//! - `demand.rs`: the demand reports sent to the control plane;
//! - `metrics.rs`: refusals and leases at scrape time.
//!
//! The limits themselves and their budget periods are `aurora_core`'s, shared with the control
//! plane, so a period ends at the same instant on both.
//!
//! **Invariants:** admission reads and writes atomics only (no lock, no allocation beyond the
//! first request a key ever makes here); the registry map is read without locks (a persistent
//! map behind an `ArcSwap`) and written only for a key's first request, for leases and for
//! pruning; an admission's concurrency slot is freed exactly once, when it is dropped.

mod admission;
mod config;
mod demand;
mod lease;
pub mod metrics;
mod policy;
mod rate_headers;
mod refusal;
mod window;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use arc_swap::ArcSwap;
use aurora_proto::v1::Leases;

pub use admission::{Admission, KeyLimiter};
pub use config::{BudgetPeriod, Fallback, KeyLimits, LimitSettings, limits_from_proto, limits_to_proto};
pub use demand::DemandReporter;
pub use lease::Lease;
pub use policy::{EndpointNotAllowed, KeyPolicy};
pub use rate_headers::RateHeaders;
pub use refusal::{RateView, Refusal, RefusalReason};

use crate::snapshot::KeyId;

/// Unix milliseconds now; injected so tests control windows and lease expiry.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

pub fn system_clock() -> Clock {
    Arc::new(|| crate::credentials::unix_ms(std::time::SystemTime::now()))
}

type StateMap = imbl::HashMap<KeyId, Arc<KeyLimiter>>;

/// The limits a key is held to: its own if it has any (all zero: explicitly none, whatever the
/// defaults), else the snapshot's default key limits; `None` when nothing limits it.
pub fn effective<'a>(policy: Option<&'a KeyPolicy>, settings: &'a LimitSettings) -> Option<&'a KeyLimits> {
    policy.and_then(KeyPolicy::limits).or(settings.default_key_limits.as_ref()).filter(|limits| !limits.is_unlimited())
}

/// This replica's limited keys: their state, the newest leases, and the refusal counters.
pub struct Limiters {
    states: ArcSwap<StateMap>,
    /// The generation of the newest `Leases` message (0: none yet).
    generation: AtomicU64,
    /// Replicas as the newest leases counted them (0: never told).
    replicas: AtomicU32,
    /// A request was refused for want of capacity: the next demand report goes out at once.
    urgent: AtomicBool,
    refusals: [AtomicU64; RefusalReason::ALL.len()],
    lease_updates: AtomicU64,
    clock: Clock,
}

impl std::fmt::Debug for Limiters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiters")
            .field("keys", &self.states.load().len())
            .field("generation", &self.generation)
            .field("replicas", &self.replicas)
            .finish_non_exhaustive()
    }
}

impl Default for Limiters {
    fn default() -> Self {
        Limiters::new(system_clock())
    }
}

impl Limiters {
    pub fn new(clock: Clock) -> Self {
        Limiters {
            states: ArcSwap::default(),
            generation: AtomicU64::new(0),
            replicas: AtomicU32::new(0),
            urgent: AtomicBool::new(false),
            refusals: Default::default(),
            lease_updates: AtomicU64::new(0),
            clock,
        }
    }

    pub fn now_ms(&self) -> i64 {
        (self.clock)()
    }

    /// The state of key `id`, created on its first use here. Lock-free when it exists.
    pub fn state(&self, id: KeyId) -> Arc<KeyLimiter> {
        if let Some(state) = self.states.load().get(&id) {
            return state.clone();
        }
        let fresh = Arc::new(KeyLimiter::new(id));
        self.states.rcu(|states| {
            if states.contains_key(&id) {
                return Arc::clone(states);
            }
            Arc::new(states.update(id, fresh.clone()))
        });
        self.states.load().get(&id).cloned().unwrap_or(fresh)
    }

    fn states(&self) -> Arc<StateMap> {
        self.states.load_full()
    }

    /// Admits one request of a key whose state is `key` under `limits`, or refuses it.
    pub fn admit(
        &self,
        key: &Arc<KeyLimiter>,
        limits: &KeyLimits,
        fallback: Fallback,
        now_ms: i64,
    ) -> Result<Admission, Refusal> {
        let fleet = admission::Fleet {
            newest_generation: self.generation.load(Ordering::Acquire),
            replicas: self.replicas.load(Ordering::Relaxed),
            fallback,
        };
        admission::admit(key, limits, fleet, now_ms).inspect_err(|refusal| {
            self.refusals[refusal.reason as usize].fetch_add(1, Ordering::Relaxed);
            if matches!(refusal.reason, RefusalReason::Requests | RefusalReason::Tokens | RefusalReason::Concurrency)
                && !self.urgent.load(Ordering::Relaxed)
            {
                self.urgent.store(true, Ordering::Release);
            }
        })
    }

    /// Applies a `Leases` message: it replaces every earlier one, and keys it does not name
    /// hold no lease from now on (they fall back).
    pub fn apply_leases(&self, leases: &Leases) {
        let generation = self.generation.load(Ordering::Acquire) + 1;
        for granted in &leases.keys {
            let Ok(id) = <[u8; 16]>::try_from(granted.key_id.as_slice()) else {
                tracing::warn!(bytes = granted.key_id.len(), "a lease for a malformed key id was ignored");
                continue;
            };
            let state = self.state(KeyId(id));
            state.lease.store(Some(Arc::new(Lease {
                generation,
                window_start: leases.window_start,
                valid_until_ms: leases.valid_until_ms,
                request_cap: granted.request_cap,
                token_cap: granted.token_cap,
                concurrency: granted.concurrency,
                budget_remaining: granted.budget_remaining,
                budget_period_end: granted.budget_period_end,
            })));
            // The remainder the lease carries already counts what was reported before it.
            state.budget_charged.store(0, Ordering::Relaxed);
        }
        if leases.replicas > 0 {
            self.replicas.store(leases.replicas, Ordering::Relaxed);
        }
        // Published last: a key's new lease is never older than the newest generation.
        self.generation.store(generation, Ordering::Release);
        self.lease_updates.fetch_add(1, Ordering::Relaxed);
    }

    /// Keys holding a lease now, and keys whose lease no longer holds.
    pub fn lease_counts(&self, now_ms: i64) -> (usize, usize) {
        let newest = self.generation.load(Ordering::Acquire);
        let states = self.states();
        let leases = states.values().filter_map(|key| key.lease.load_full());
        leases.fold(
            (0, 0),
            |(held, expired), lease| {
                if lease.holds(newest, now_ms) { (held + 1, expired) } else { (held, expired + 1) }
            },
        )
    }

    /// Drops the state of keys idle for two windows that nothing else refers to (a deleted
    /// key, or one under the default limits that stopped sending).
    fn prune(&self, now_ms: i64) {
        let minute = window::minute(now_ms);
        let idle = |key: &Arc<KeyLimiter>| {
            Arc::strong_count(key) == 1
                && key.in_flight() == 0
                && key.tokens_since_report.load(Ordering::Relaxed) == 0
                && (minute - 1..=minute).all(|m| key.requests.get(m) == 0 && key.refused.get(m) == 0)
        };
        // Decided on the current map, removed from the next: a request that picked a state up
        // in between keeps using it for that one request, its counts lost with the key's.
        let idle: Vec<KeyId> = self.states.load().iter().filter(|(_, key)| idle(key)).map(|(id, _)| *id).collect();
        if idle.is_empty() {
            return;
        }
        self.states.rcu(|states| {
            let mut kept = StateMap::clone(states);
            for id in &idle {
                kept.remove(id);
            }
            kept
        });
    }
}

#[cfg(test)]
mod tests {
    use aurora_proto::v1::KeyLease;

    use super::*;

    const NOW_MS: i64 = 1_796_143_262_000;

    #[test]
    fn leases_replace_each_other_and_unnamed_keys_fall_back() {
        let limiters = Limiters::new(Arc::new(|| NOW_MS));
        let limits = KeyLimits { requests_per_minute: 30, ..Default::default() };
        let (a, b) = (KeyId([1; 16]), KeyId([2; 16]));
        let lease = |id: KeyId, cap| KeyLease { key_id: id.0.to_vec(), request_cap: cap, ..Default::default() };
        let leases = |keys| Leases {
            window_start: window::window_start(NOW_MS),
            valid_until_ms: NOW_MS + 3000,
            replicas: 3,
            keys,
        };
        limiters.apply_leases(&leases(vec![
            lease(a, 2),
            lease(b, 5),
            KeyLease { key_id: vec![1], ..Default::default() },
        ]));
        let admitted = |id| {
            let state = limiters.state(id);
            (0..40).filter(|_| limiters.admit(&state, &limits, Fallback::Share, NOW_MS).is_ok()).count()
        };
        assert_eq!(admitted(a), 2);
        assert_eq!(limiters.lease_counts(NOW_MS), (2, 0));
        // The next message names only `b`: `a` now has the fallback share, ceil(30 / 3) = 10,
        // of which it used 2 in this window.
        limiters.apply_leases(&leases(vec![lease(b, 6)]));
        assert_eq!(admitted(a), 8);
        assert_eq!(admitted(b), 6);
        assert_eq!(limiters.lease_counts(NOW_MS), (1, 1));
        assert_eq!(limiters.lease_counts(NOW_MS + 3000), (0, 2));
        assert_eq!(limiters.refusals[RefusalReason::Requests as usize].load(Ordering::Relaxed), 38 + 32 + 34);
        assert!(limiters.urgent.load(Ordering::Relaxed));
        assert_eq!(limiters.states().len(), 2, "the malformed id made no state");
    }

    #[test]
    fn a_keys_own_limits_win_over_the_defaults_and_all_zero_means_none() {
        let rpm = |n| KeyLimits { requests_per_minute: n, ..Default::default() };
        let defaults = LimitSettings { default_key_limits: Some(rpm(5)), fallback: Fallback::Share };
        let none = LimitSettings::default();
        let own = KeyPolicy::new(std::iter::empty(), Some(rpm(9))).unwrap();
        let explicitly_none = KeyPolicy::new(std::iter::empty(), Some(KeyLimits::default())).unwrap();
        let rules_only = KeyPolicy::new(["anthropic POST /messages"].into_iter(), None).unwrap();
        assert_eq!(effective(Some(&own), &defaults), Some(&rpm(9)));
        assert_eq!(effective(Some(&explicitly_none), &defaults), None);
        assert_eq!(effective(Some(&rules_only), &defaults), Some(&rpm(5)));
        assert_eq!(effective(None, &defaults), Some(&rpm(5)));
        assert_eq!(effective(None, &none), None);
        assert_eq!(effective(Some(&rules_only), &none), None);
    }

    #[test]
    fn state_is_shared_by_every_lookup() {
        let limiters = Limiters::default();
        let id = KeyId([3; 16]);
        assert!(Arc::ptr_eq(&limiters.state(id), &limiters.state(id)));
    }
}
