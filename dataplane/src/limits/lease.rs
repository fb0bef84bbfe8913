//! A replica's share of one limited key's capacity, granted by the control plane
//! (`SubscribeResponse.leases`), and what the replica may admit when it holds none.
//!
//! Each `Leases` message replaces every earlier one: it gets the next generation, each key it
//! names gets a [`Lease`] of that generation, and a key's lease holds only while its generation
//! is the newest, `now` is before `valid_until_ms`, and its window is this one or the one just
//! before (a lease from the previous minute still holds, its caps counted afresh from zero in
//! this one: the control plane keeps the sum of every replica's caps within the limit).

use super::config::{Fallback, KeyLimits};
use super::window;

/// One key's caps from one `Leases` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub generation: u64,
    /// Unix seconds of the window the caps were granted for.
    pub window_start: i64,
    pub valid_until_ms: i64,
    pub request_cap: u64,
    pub token_cap: u64,
    pub concurrency: u32,
    /// Tokens left fleet-wide in the budget period when the lease was granted.
    pub budget_remaining: i64,
    /// Unix seconds when that period ends (0: never).
    pub budget_period_end: i64,
}

impl Lease {
    /// Whether this lease binds at `now_ms`, given the newest generation received.
    pub fn holds(&self, newest_generation: u64, now_ms: i64) -> bool {
        self.generation >= newest_generation
            && now_ms < self.valid_until_ms
            && self.window_start >= window::window_start(now_ms) - 60
    }
}

/// What the replica may do now for one key: from its lease, or from the fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Caps {
    pub requests: u64,
    pub tokens: u64,
    pub concurrency: u32,
    /// Budget tokens this replica may still charge (`i64::MAX` without a budget).
    pub budget_left: i64,
    /// Unix seconds when the budget renews, if it does.
    pub budget_end: Option<i64>,
    /// Whether these come from a lease (else: the fallback share).
    pub leased: bool,
}

/// The caps for `limits` at `now_ms`. `lease` is the key's newest lease if any (held or not:
/// an expired one still tells the budget left); `replicas` the count the last leases gave (0
/// if none ever arrived: the whole limit); `charged` the budget tokens charged since `lease`
/// arrived or the budget period began, whichever is later. `None` means refuse: no lease holds and the fallback is CLOSED.
pub(super) fn caps(
    limits: &KeyLimits,
    lease: Option<&Lease>,
    newest_generation: u64,
    fallback: Fallback,
    replicas: u32,
    charged: u64,
    now_ms: i64,
) -> Option<Caps> {
    let now_s = now_ms.div_euclid(1000);
    let charged = i64::try_from(charged).unwrap_or(i64::MAX);
    let held = lease.filter(|lease| lease.holds(newest_generation, now_ms));
    let share = match (held, fallback) {
        (Some(_), _) => 1,
        (None, Fallback::Closed) => return None,
        (None, Fallback::Share) => u64::from(replicas.max(1)),
    };
    // The budget: what the newest lease said was left (shared out when it no longer holds),
    // minus what was charged here since; the full budget once its period has ended.
    let (budget_left, budget_end) = if limits.budget_tokens == 0 {
        (i64::MAX, None)
    } else {
        let local_end = window::budget_period_end(limits.budget_period, now_s);
        let budget = i64::try_from(limits.budget_tokens).unwrap_or(i64::MAX);
        let share = i64::try_from(share).unwrap_or(1);
        match lease {
            Some(lease) if lease.budget_period_end == 0 || now_s < lease.budget_period_end => (
                lease.budget_remaining.div_euclid(share).saturating_sub(charged),
                (lease.budget_period_end != 0).then_some(lease.budget_period_end).or(local_end),
            ),
            // Renewed since the lease: only what was charged here in the new period is known.
            Some(_) => ((budget / share).saturating_sub(charged), local_end),
            None => ((budget / share).saturating_sub(charged), local_end),
        }
    };
    Some(match held {
        Some(lease) => Caps {
            requests: lease.request_cap,
            tokens: lease.token_cap,
            concurrency: lease.concurrency,
            budget_left,
            budget_end,
            leased: true,
        },
        None => Caps {
            requests: u64::from(limits.requests_per_minute).div_ceil(share),
            tokens: limits.tokens_per_minute.div_ceil(share),
            concurrency: u32::try_from(u64::from(limits.max_concurrent).div_ceil(share)).unwrap_or(u32::MAX),
            budget_left,
            budget_end,
            leased: false,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_MS: i64 = 1_796_143_262_000; // 16:41:02 UTC
    const WINDOW: i64 = 1_796_143_260; // 16:41:00

    fn limits() -> KeyLimits {
        KeyLimits { requests_per_minute: 30, tokens_per_minute: 1000, max_concurrent: 2, ..Default::default() }
    }

    fn lease(generation: u64) -> Lease {
        Lease {
            generation,
            window_start: WINDOW,
            valid_until_ms: NOW_MS + 3000,
            request_cap: 12,
            token_cap: 400,
            concurrency: 1,
            budget_remaining: 0,
            budget_period_end: 0,
        }
    }

    #[test]
    fn a_lease_holds_until_it_expires_or_is_replaced() {
        let held = caps(&limits(), Some(&lease(3)), 3, Fallback::Share, 3, 0, NOW_MS).unwrap();
        assert_eq!((held.requests, held.tokens, held.concurrency, held.leased), (12, 400, 1, true));
        // Expired: the fallback share, ceil(limit / replicas).
        let expired = caps(&limits(), Some(&lease(3)), 3, Fallback::Share, 3, 0, NOW_MS + 3000).unwrap();
        assert_eq!((expired.requests, expired.tokens, expired.concurrency, expired.leased), (10, 334, 1, false));
        // A newer Leases message that did not name this key replaced its lease.
        assert!(!caps(&limits(), Some(&lease(3)), 4, Fallback::Share, 3, 0, NOW_MS).unwrap().leased);
        // Fail-closed: no caps at all.
        assert_eq!(caps(&limits(), Some(&lease(3)), 4, Fallback::Closed, 3, 0, NOW_MS), None);
        // Never a lease: the whole limit (one replica as far as this one knows).
        assert_eq!(caps(&limits(), None, 0, Fallback::Share, 0, 0, NOW_MS).unwrap().requests, 30);
    }

    #[test]
    fn a_lease_from_the_previous_window_still_holds_but_not_older() {
        let previous = Lease { window_start: WINDOW - 60, ..lease(1) };
        assert!(previous.holds(1, NOW_MS));
        let older = Lease { window_start: WINDOW - 120, ..lease(1) };
        assert!(!older.holds(1, NOW_MS));
    }

    #[test]
    fn the_budget_is_the_lease_minus_what_was_charged_since_and_renews_at_period_end() {
        let limits =
            KeyLimits { budget_tokens: 10_000, budget_period: super::super::config::BudgetPeriod::Day, ..limits() };
        let period_end = WINDOW + 3600;
        let leased = Lease { budget_remaining: 900, budget_period_end: period_end, ..lease(1) };
        let now = caps(&limits, Some(&leased), 1, Fallback::Share, 3, 300, NOW_MS).unwrap();
        assert_eq!((now.budget_left, now.budget_end), (600, Some(period_end)));
        // Without a valid lease the last known remainder is shared out.
        let shared = caps(&limits, Some(&leased), 2, Fallback::Share, 3, 0, NOW_MS).unwrap();
        assert_eq!(shared.budget_left, 300);
        // Past the period's end the budget is whole again, before any new lease says so, less
        // what was charged here since the period began.
        let renewed = caps(&limits, Some(&leased), 1, Fallback::Share, 1, 0, (period_end + 1) * 1000).unwrap();
        assert_eq!(renewed.budget_left, 10_000);
        let renewed = caps(&limits, Some(&leased), 1, Fallback::Share, 1, 300, (period_end + 1) * 1000).unwrap();
        assert_eq!(renewed.budget_left, 9_700);
        // Overspent fleet-wide: nothing left.
        let overspent = Lease { budget_remaining: -50, ..leased };
        assert!(caps(&limits, Some(&overspent), 1, Fallback::Share, 1, 0, NOW_MS).unwrap().budget_left < 0);
        // No budget: unbounded.
        assert_eq!(
            caps(&super::tests::limits(), None, 0, Fallback::Share, 0, 0, NOW_MS).unwrap().budget_left,
            i64::MAX
        );
    }
}
