//! Minute windows aligned to Unix time, and the lock-free counters that live in one.
//!
//! A budget period's end is looked up here too, from a per-thread cache: every request of a
//! period has the same, and a month's takes a calendar conversion.
//!
//! A window counter packs the window (minutes since the epoch) and the count into one
//! `AtomicU64`, so "roll over to a new window" and "count one more" are the same compare and
//! swap: no reset can race an increment, and no lock is needed.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use super::config::BudgetPeriod;

pub(super) const WINDOW_MS: i64 = 60_000;

/// The window `now_ms` falls in, as minutes since the epoch.
pub(super) fn minute(now_ms: i64) -> i64 {
    now_ms.div_euclid(WINDOW_MS)
}

/// Unix seconds of the start of the window `now_ms` falls in (what leases and reports name).
pub(super) fn window_start(now_ms: i64) -> i64 {
    minute(now_ms) * 60
}

/// Unix milliseconds when the window `now_ms` falls in ends.
pub(super) fn window_end_ms(now_ms: i64) -> i64 {
    (minute(now_ms) + 1) * WINDOW_MS
}

thread_local! {
    /// The bounds last computed on this thread, per budget period (`(0, 0)`: none yet).
    static PERIODS: [Cell<(i64, i64)>; BudgetPeriod::ALL.len()] =
        const { [const { Cell::new((0, 0)) }; BudgetPeriod::ALL.len()] };
}

/// Unix seconds when the budget period `now_s` falls in ends (`None`: the period never ends).
pub(super) fn budget_period_end(period: BudgetPeriod, now_s: i64) -> Option<i64> {
    if period == BudgetPeriod::None {
        return None;
    }
    PERIODS.with(|periods| {
        let cached = &periods[period as usize];
        let (start, end) = cached.get();
        if start <= now_s && now_s < end {
            return Some(end);
        }
        let bounds = period.bounds(now_s)?;
        cached.set(bounds);
        Some(bounds.1)
    })
}

/// A count within one minute window (saturating at `u32::MAX`, far beyond any per-minute use).
#[derive(Debug, Default)]
pub(super) struct WindowCounter(AtomicU64);

fn pack(minute: i64, count: u64) -> u64 {
    // Minutes since the epoch fit 32 bits until the year 10136; the cast only wraps beyond.
    ((minute as u32 as u64) << 32) | count.min(u64::from(u32::MAX))
}

fn unpack(value: u64, minute: i64) -> u64 {
    if (value >> 32) as u32 == minute as u32 { value & u64::from(u32::MAX) } else { 0 }
}

impl WindowCounter {
    /// The count in window `minute` (0 if the counter last counted in another one).
    pub(super) fn get(&self, minute: i64) -> u64 {
        unpack(self.0.load(Ordering::Acquire), minute)
    }

    /// Counts one more in `minute` if the count is below `cap`; returns the count after, or
    /// the count that was at the cap.
    pub(super) fn try_increment(&self, minute: i64, cap: u64) -> Result<u64, u64> {
        let mut current = self.0.load(Ordering::Acquire);
        loop {
            let count = unpack(current, minute);
            if count >= cap {
                return Err(count);
            }
            match self.0.compare_exchange_weak(current, pack(minute, count + 1), Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(count + 1),
                Err(actual) => current = actual,
            }
        }
    }

    /// Adds `n` in `minute`; returns the count after.
    pub(super) fn add(&self, minute: i64, n: u64) -> u64 {
        let mut current = self.0.load(Ordering::Acquire);
        loop {
            let count = unpack(current, minute).saturating_add(n);
            match self.0.compare_exchange_weak(current, pack(minute, count), Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return count.min(u64::from(u32::MAX)),
                Err(actual) => current = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_aligned_minutes() {
        assert_eq!(window_start(119_999), 60);
        assert_eq!(window_start(120_000), 120);
        assert_eq!(window_end_ms(61_000), 120_000);
        assert_eq!(minute(-1), -1, "before the epoch still floors");
    }

    #[test]
    fn budget_period_ends_come_from_the_cache_only_within_their_period() {
        let day = 86_400;
        for period in BudgetPeriod::ALL {
            for now_s in [0, day - 1, day, 1_796_143_262, 1_796_143_262 + 40 * day, 1_796_143_262, -1] {
                assert_eq!(
                    budget_period_end(period, now_s),
                    period.bounds(now_s).map(|(_, end)| end),
                    "{period} {now_s}"
                );
            }
        }
    }

    #[test]
    fn a_counter_caps_and_rolls_over_in_one_step() {
        let counter = WindowCounter::default();
        let m = minute(1_700_000_000_000);
        assert_eq!(counter.try_increment(m, 2), Ok(1));
        assert_eq!(counter.try_increment(m, 2), Ok(2));
        assert_eq!(counter.try_increment(m, 2), Err(2));
        assert_eq!(counter.get(m), 2);
        // The next window starts from zero without anyone resetting it.
        assert_eq!(counter.get(m + 1), 0);
        assert_eq!(counter.try_increment(m + 1, 2), Ok(1));
        assert_eq!(counter.get(m), 0, "the old window is gone");
        assert_eq!(counter.add(m + 1, u64::MAX), u64::from(u32::MAX), "saturates");
    }

    #[test]
    fn concurrent_increments_never_pass_the_cap() {
        let counter = std::sync::Arc::new(WindowCounter::default());
        let admitted: u64 = (0..4)
            .map(|_| {
                let counter = counter.clone();
                std::thread::spawn(move || (0..1000).filter(|_| counter.try_increment(7, 1500).is_ok()).count() as u64)
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .sum();
        assert_eq!(admitted, 1500);
        assert_eq!(counter.get(7), 1500);
    }
}
