//! Admission of one request for a limited key: all in memory, atomics only, no allocation.
//!
//! A [`KeyLimiter`] is the key's state on this replica, shared by every snapshot revision
//! (found from the key, see `KeyPolicy::limiter`, or the registry for keys under the default
//! limits). An admitted request holds an [`Admission`]: it travels with the request inside its
//! response body, is charged the response's metered tokens when they are known, and frees the
//! request's concurrency slot when dropped: when the body ends, fails, or the client goes away,
//! so a slot is never leaked.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};

use arc_swap::ArcSwapOption;

use super::config::{Fallback, KeyLimits};
use super::lease::{self, Lease};
use super::refusal::{RateView, Refusal, RefusalReason, ceil_secs};
use super::window::{self, WindowCounter};
use crate::snapshot::KeyId;

/// `retry-after` for a concurrency refusal or a fail-closed one: slots free up and leases
/// arrive within moments.
const RETRY_SOON_SECS: u64 = 1;
/// `retry-after` for a budget that never renews: there is no good time, so not soon.
const RETRY_NEVER_SECS: u64 = 3600;

/// One limited key's counters on this replica.
#[derive(Debug)]
pub struct KeyLimiter {
    pub(super) id: KeyId,
    /// Requests admitted in the current window.
    pub(super) requests: WindowCounter,
    /// Requests refused for want of request or token capacity in the current window.
    pub(super) refused: WindowCounter,
    /// Tokens charged in the current window.
    pub(super) tokens: WindowCounter,
    pub(super) in_flight: AtomicU32,
    /// Tokens charged since the last demand report (the control plane's budget accounting).
    pub(super) tokens_since_report: AtomicU64,
    /// Tokens charged since the newest lease arrived (its budget remainder is net of earlier)
    /// or the budget period began, whichever is later.
    pub(super) budget_charged: AtomicU64,
    /// Unix seconds when the budget period last seen here ends (0: none seen yet).
    budget_period_end: AtomicI64,
    pub(super) lease: ArcSwapOption<Lease>,
    /// What the last demand report said of this key (only the reporter touches it).
    pub(super) last_reported: AtomicU64,
}

impl KeyLimiter {
    pub fn new(id: KeyId) -> Self {
        KeyLimiter {
            id,
            requests: WindowCounter::default(),
            refused: WindowCounter::default(),
            tokens: WindowCounter::default(),
            in_flight: AtomicU32::new(0),
            tokens_since_report: AtomicU64::new(0),
            budget_charged: AtomicU64::new(0),
            budget_period_end: AtomicI64::new(0),
            lease: ArcSwapOption::empty(),
            last_reported: AtomicU64::new(0),
        }
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// A new budget period began since the last request: what was charged belongs to the old
    /// one, so the count starts again (with or without a lease to say so).
    fn roll_budget_period(&self, limits: &KeyLimits, now_ms: i64) {
        let Some(end) = window::budget_period_end(limits.budget_period, now_ms.div_euclid(1000)) else { return };
        let seen = self.budget_period_end.load(Ordering::Relaxed);
        if seen != end
            && self.budget_period_end.compare_exchange(seen, end, Ordering::AcqRel, Ordering::Relaxed).is_ok()
            && seen != 0
        {
            self.budget_charged.store(0, Ordering::Relaxed);
        }
    }

    /// Takes a concurrency slot if fewer than `cap` are taken.
    fn take_slot(&self, cap: u32) -> bool {
        self.in_flight.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < cap).then_some(n + 1)).is_ok()
    }
}

/// The fleet-wide facts admission needs besides the key's own state.
#[derive(Debug, Clone, Copy)]
pub(super) struct Fleet {
    pub newest_generation: u64,
    pub replicas: u32,
    pub fallback: Fallback,
}

/// An admitted request's hold on its key: charges tokens, frees its slot when dropped.
#[derive(Debug)]
pub struct Admission {
    key: Arc<KeyLimiter>,
    view: RateView,
}

impl Admission {
    /// What is left, for the rate-limit headers of the response.
    pub fn view(&self) -> &RateView {
        &self.view
    }

    /// Charges the response's metered tokens (when its usage is known), in the window they
    /// became known in.
    pub fn charge(&self, tokens: u64, now_ms: i64) {
        if tokens == 0 {
            return;
        }
        self.key.tokens.add(window::minute(now_ms), tokens);
        self.key.tokens_since_report.fetch_add(tokens, Ordering::Relaxed);
        self.key.budget_charged.fetch_add(tokens, Ordering::Relaxed);
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.key.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Admits one request for `key` under `limits` at `now_ms`, or says which limit refuses it.
/// Checks, in order: a lease or the fallback, the budget, the token window, a concurrency slot,
/// then counts the request in its window (a compare and swap that also rolls the window over).
pub(super) fn admit(
    key: &Arc<KeyLimiter>,
    limits: &KeyLimits,
    fleet: Fleet,
    now_ms: i64,
) -> Result<Admission, Refusal> {
    let minute = window::minute(now_ms);
    let reset_ms = window::window_end_ms(now_ms);
    let retry_window = ceil_secs(reset_ms - now_ms);
    if limits.budget_tokens > 0 {
        key.roll_budget_period(limits, now_ms);
    }
    let lease = key.lease.load();
    let charged = key.budget_charged.load(Ordering::Relaxed);
    let caps =
        lease::caps(limits, lease.as_deref(), fleet.newest_generation, fleet.fallback, fleet.replicas, charged, now_ms);
    let tokens_used = key.tokens.get(minute);
    let admitted = key.requests.get(minute);
    let view = |requests_left: u64, tokens_left: u64| RateView {
        requests: (limits.requests_per_minute > 0).then_some((u64::from(limits.requests_per_minute), requests_left)),
        tokens: (limits.tokens_per_minute > 0).then_some((limits.tokens_per_minute, tokens_left)),
        reset_ms,
    };
    let refuse = |reason, retry_after_secs, limit, view| Refusal {
        reason,
        retry_after_secs,
        limit,
        budget_period: limits.budget_period,
        view,
        now_ms,
    };
    let Some(caps) = caps else {
        return Err(refuse(RefusalReason::Closed, RETRY_SOON_SECS, 0, view(0, 0)));
    };
    let requests_left = caps.requests.saturating_sub(admitted);
    let tokens_left = caps.tokens.saturating_sub(tokens_used);
    if limits.budget_tokens > 0 && caps.budget_left <= 0 {
        let retry = caps.budget_end.map_or(RETRY_NEVER_SECS, |end| ceil_secs(end.saturating_mul(1000) - now_ms));
        return Err(refuse(RefusalReason::Budget, retry, limits.budget_tokens, view(requests_left, tokens_left)));
    }
    if limits.tokens_per_minute > 0 && tokens_used >= caps.tokens {
        key.refused.add(minute, 1);
        return Err(refuse(RefusalReason::Tokens, retry_window, limits.tokens_per_minute, view(requests_left, 0)));
    }
    // Every admitted request holds a slot (the count is reported as demand); only a key with
    // a concurrency limit is refused for want of one.
    let cap = if limits.max_concurrent > 0 { caps.concurrency } else { u32::MAX };
    if !key.take_slot(cap) {
        let view = view(requests_left, tokens_left);
        return Err(refuse(RefusalReason::Concurrency, RETRY_SOON_SECS, u64::from(limits.max_concurrent), view));
    }
    let mut admission = Admission { key: key.clone(), view: view(requests_left, tokens_left) };
    let cap = if limits.requests_per_minute > 0 { caps.requests } else { u64::MAX };
    match key.requests.try_increment(minute, cap) {
        Ok(count) => {
            admission.view = view(caps.requests.saturating_sub(count), tokens_left);
            Ok(admission)
        }
        Err(_) => {
            // Dropping the admission frees the slot it took.
            drop(admission);
            key.refused.add(minute, 1);
            let limit = u64::from(limits.requests_per_minute);
            Err(refuse(RefusalReason::Requests, retry_window, limit, view(0, tokens_left)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::config::BudgetPeriod;

    const NOW_MS: i64 = 1_796_143_262_000; // 16:41:02 UTC
    const SHARE: Fleet = Fleet { newest_generation: 0, replicas: 0, fallback: Fallback::Share };

    fn key() -> Arc<KeyLimiter> {
        Arc::new(KeyLimiter::new(KeyId([1; 16])))
    }

    fn rpm(n: u32) -> KeyLimits {
        KeyLimits { requests_per_minute: n, ..Default::default() }
    }

    #[test]
    fn requests_are_capped_per_window_and_renew_with_the_next() {
        let key = key();
        let first = admit(&key, &rpm(2), SHARE, NOW_MS).unwrap();
        assert_eq!(first.view().requests, Some((2, 1)));
        assert_eq!(first.view().reset_ms, NOW_MS + 58_000);
        let _second = admit(&key, &rpm(2), SHARE, NOW_MS).unwrap();
        let refused = admit(&key, &rpm(2), SHARE, NOW_MS + 1000).unwrap_err();
        assert_eq!(refused.reason, RefusalReason::Requests);
        assert_eq!(refused.retry_after_secs, 57);
        assert_eq!(refused.view.requests, Some((2, 0)));
        assert_eq!(key.refused.get(window::minute(NOW_MS)), 1);
        assert_eq!(key.in_flight(), 2, "the refused request holds no slot");
        // The next minute starts from zero.
        assert!(admit(&key, &rpm(2), SHARE, NOW_MS + 58_000).is_ok());
    }

    #[test]
    fn concurrency_slots_are_released_when_the_admission_drops() {
        let key = key();
        let limits = KeyLimits { max_concurrent: 2, ..Default::default() };
        let a = admit(&key, &limits, SHARE, NOW_MS).unwrap();
        let _b = admit(&key, &limits, SHARE, NOW_MS).unwrap();
        let refused = admit(&key, &limits, SHARE, NOW_MS).unwrap_err();
        assert_eq!((refused.reason, refused.retry_after_secs, refused.limit), (RefusalReason::Concurrency, 1, 2));
        drop(a);
        assert!(admit(&key, &limits, SHARE, NOW_MS).is_ok());
        assert_eq!(key.in_flight(), 1, "the admission of the last call was dropped at once");
    }

    #[test]
    fn tokens_are_charged_after_the_fact_and_refuse_only_new_requests() {
        let key = key();
        let limits = KeyLimits { tokens_per_minute: 100, ..Default::default() };
        let admission = admit(&key, &limits, SHARE, NOW_MS).unwrap();
        assert_eq!(admission.view().tokens, Some((100, 100)));
        // Overshoot: the request admitted while under is charged in full.
        admission.charge(150, NOW_MS + 10);
        drop(admission);
        let refused = admit(&key, &limits, SHARE, NOW_MS + 20).unwrap_err();
        assert_eq!((refused.reason, refused.view.tokens), (RefusalReason::Tokens, Some((100, 0))));
        assert_eq!(key.tokens_since_report.load(Ordering::Relaxed), 150);
        assert!(admit(&key, &limits, SHARE, NOW_MS + 60_000).is_ok(), "a new window");
    }

    #[test]
    fn a_budget_refuses_once_used_and_says_when_it_renews() {
        let key = key();
        let limits = KeyLimits { budget_tokens: 100, budget_period: BudgetPeriod::Day, ..Default::default() };
        admit(&key, &limits, SHARE, NOW_MS).unwrap().charge(100, NOW_MS);
        let refused = admit(&key, &limits, SHARE, NOW_MS).unwrap_err();
        assert_eq!(refused.reason, RefusalReason::Budget);
        assert_eq!(refused.code(), "insufficient_quota");
        // 16:41:02 to midnight UTC.
        assert_eq!(refused.retry_after_secs, 7 * 3600 + 18 * 60 + 58);
        // The next day the budget is whole again, even with no lease ever received.
        let tomorrow = NOW_MS + (7 * 3600 + 18 * 60 + 58) * 1000;
        let admitted = admit(&key, &limits, SHARE, tomorrow).unwrap();
        admitted.charge(60, tomorrow);
        assert!(admit(&key, &limits, SHARE, tomorrow).is_ok(), "40 left of the new day's 100");
        admitted.charge(40, tomorrow);
        assert_eq!(admit(&key, &limits, SHARE, tomorrow).unwrap_err().reason, RefusalReason::Budget);
    }

    #[test]
    fn without_a_lease_fail_closed_refuses_and_share_divides() {
        let key = key();
        let closed = Fleet { fallback: Fallback::Closed, ..SHARE };
        let refused = admit(&key, &rpm(30), closed, NOW_MS).unwrap_err();
        assert_eq!(refused.reason, RefusalReason::Closed);
        assert_eq!(key.in_flight(), 0);
        let three = Fleet { replicas: 3, ..SHARE };
        let admitted = (0..20).filter(|_| admit(&key, &rpm(30), three, NOW_MS).is_ok()).count();
        assert_eq!(admitted, 10);
    }

    #[test]
    fn a_lease_sets_the_caps_and_its_expiry_falls_back() {
        let key = key();
        key.lease.store(Some(Arc::new(Lease {
            generation: 1,
            window_start: window::window_start(NOW_MS),
            valid_until_ms: NOW_MS + 3000,
            request_cap: 4,
            token_cap: 0,
            concurrency: 0,
            budget_remaining: 0,
            budget_period_end: 0,
        })));
        let fleet = Fleet { newest_generation: 1, replicas: 2, fallback: Fallback::Share };
        let admitted = (0..10).filter(|_| admit(&key, &rpm(30), fleet, NOW_MS).is_ok()).count();
        assert_eq!(admitted, 4);
        // Expired: ceil(30 / 2) = 15 for the window, counting the 4 already admitted.
        let admitted = (0..20).filter(|_| admit(&key, &rpm(30), fleet, NOW_MS + 3000).is_ok()).count();
        assert_eq!(admitted, 11);
    }
}
