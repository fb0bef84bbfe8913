//! How many tokens a key used in its current budget period, without waiting for usage to be
//! committed and without counting any token twice.
//!
//! Two sources see the same tokens at different times: demand reports
//! (`KeyDemand.tokens_since_last_report`, every 250 ms while the key sees traffic) and
//! committed usage (`usage_totals`, written when the data planes' usage reports are committed,
//! seconds later). For each key with a budget this control plane keeps:
//! - `committed`: the key's committed tokens (input + output) since the period began, as last
//!   read from the store (about every second);
//! - `baseline`: what `committed` was at the first read of this period;
//! - `reported`: the tokens its own data planes reported since the period began here.
//!
//! Its data planes' tokens that no committed report holds yet are then at most
//! `uncommitted = max(0, baseline + reported - committed)`: every reported token is committed
//! eventually, and committed tokens past the baseline are (on one control plane) exactly
//! reported ones, so none counts twice. The budget used is `committed + uncommitted`, plus, on
//! PostgreSQL, every other control plane's own `uncommitted` (published in `limit_presence`).
//! Bounds: it never exceeds the tokens really used (no double count) except for tokens
//! reported between a period's start and its first read that were committed in between (at
//! most one usage-report interval's worth, counted twice until the period ends); it falls
//! short of them by at most what the data planes charged since their last demand report
//! (250 ms) — and, with several control planes, by what the others' data planes committed that
//! this one takes for its own (their `uncommitted` is shared, so that part is transient).
//! Tokens of responses still streaming are charged when they end (see the data plane's
//! overshoot bound).

/// One key's budget accounting in its current period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Budget {
    /// The period `[start, end)` in the budget clock's Unix seconds; `None`: never renews.
    pub period: Option<(i64, i64)>,
    committed: Option<u64>,
    baseline: u64,
    reported: u64,
}

impl Budget {
    pub(crate) fn new(period: Option<(i64, i64)>) -> Self {
        Budget { period, committed: None, baseline: 0, reported: 0 }
    }

    /// Moves to `period` if it is a new one: the budget renews, every count starts over.
    pub(crate) fn roll(&mut self, period: Option<(i64, i64)>) -> bool {
        if period == self.period {
            return false;
        }
        *self = Budget::new(period);
        true
    }

    pub(crate) fn report(&mut self, tokens: u64) {
        self.reported = self.reported.saturating_add(tokens);
    }

    /// The store's committed tokens of this period, as just read.
    pub(crate) fn committed(&mut self, committed: u64) {
        if self.committed.is_none() {
            self.baseline = committed;
        }
        self.committed = Some(committed);
    }

    /// Whether the store was read in this period yet (until then only reports count).
    pub(crate) fn has_read(&self) -> bool {
        self.committed.is_some()
    }

    /// This control plane's data planes' tokens not yet in committed usage.
    pub(crate) fn uncommitted(&self) -> u64 {
        let committed = self.committed.unwrap_or(0);
        self.baseline.saturating_add(self.reported).saturating_sub(committed)
    }

    /// Tokens used in the period, with `others` the other control planes' uncommitted tokens.
    pub(crate) fn used(&self, others: u64) -> u64 {
        self.committed.unwrap_or(0).saturating_add(self.uncommitted()).saturating_add(others)
    }

    /// `budget - used` (negative when overspent).
    pub(crate) fn remaining(&self, budget: u64, others: u64) -> i64 {
        let budget = i64::try_from(budget).unwrap_or(i64::MAX);
        budget.saturating_sub(i64::try_from(self.used(others)).unwrap_or(i64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reported_tokens_count_once_whether_committed_or_not() {
        let mut budget = Budget::new(Some((0, 86_400)));
        budget.report(100);
        assert_eq!(budget.used(0), 100, "before any read, reports alone");
        budget.committed(1_000);
        assert_eq!(budget.used(0), 1_100, "the first read is the baseline; the report is not in it");
        budget.report(50);
        assert_eq!(budget.used(0), 1_150);
        // The usage report carrying those 150 tokens is committed: nothing is counted twice.
        budget.committed(1_150);
        assert_eq!((budget.used(0), budget.uncommitted()), (1_150, 0));
        // Usage committed from elsewhere (a data plane that reports no demand) counts too.
        budget.committed(1_400);
        assert_eq!(budget.used(0), 1_400);
        assert_eq!(budget.remaining(1_000, 25), -425);
    }

    #[test]
    fn a_new_period_renews_the_budget() {
        let mut budget = Budget::new(Some((0, 86_400)));
        budget.committed(500);
        budget.report(20);
        assert!(!budget.roll(Some((0, 86_400))));
        assert!(budget.roll(Some((86_400, 172_800))));
        assert_eq!((budget.used(0), budget.has_read()), (0, false));
        assert_eq!(budget.remaining(100, 0), 100);
    }
}
