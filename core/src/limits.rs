//! Per-key limits (issue 13): requests and tokens per minute, concurrent requests, and a token
//! budget per UTC calendar period, plus what a data plane does with them while it holds no
//! capacity lease.
//!
//! The control plane validates limits with [`KeyLimits::validate`], the store and the CLI keep
//! these values, and both planes compute budget periods with [`BudgetPeriod::bounds`], so a
//! period ends at the same instant everywhere. Period arithmetic is plain civil-calendar math on
//! Unix seconds (no time-zone database is needed: periods are UTC), which is why no date crate
//! is used.

use std::fmt;
use std::str::FromStr;

/// The highest requests-per-minute or concurrency limit accepted: far above any real key, low
/// enough that sums over replicas never overflow.
pub const MAX_REQUEST_LIMIT: u32 = 1_000_000_000;
/// The highest tokens-per-minute or budget accepted: 10^15 tokens keeps every sum and difference
/// (budget remaining is signed) far from `i64::MAX`.
pub const MAX_TOKEN_LIMIT: u64 = 1_000_000_000_000_000;

/// Seconds in a rate-limit window: windows are minutes aligned to Unix time.
pub const WINDOW_SECS: i64 = 60;

/// The start (Unix seconds) of the minute window holding `unix_secs`.
pub fn window_start(unix_secs: i64) -> i64 {
    unix_secs.div_euclid(WINDOW_SECS) * WINDOW_SECS
}

/// How often a token budget renews. Calendar periods in UTC; a week starts on Monday.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BudgetPeriod {
    /// The budget never renews.
    #[default]
    None,
    Day,
    Week,
    Month,
}

impl BudgetPeriod {
    pub const ALL: [BudgetPeriod; 4] = [BudgetPeriod::None, BudgetPeriod::Day, BudgetPeriod::Week, BudgetPeriod::Month];

    pub fn as_str(self) -> &'static str {
        match self {
            BudgetPeriod::None => "none",
            BudgetPeriod::Day => "day",
            BudgetPeriod::Week => "week",
            BudgetPeriod::Month => "month",
        }
    }

    /// The period holding `unix_secs`, as `[start, end)` in Unix seconds; `None` for a budget
    /// that never renews.
    pub fn bounds(self, unix_secs: i64) -> Option<(i64, i64)> {
        let day = unix_secs.div_euclid(DAY_SECS);
        match self {
            BudgetPeriod::None => None,
            BudgetPeriod::Day => Some((day * DAY_SECS, (day + 1) * DAY_SECS)),
            BudgetPeriod::Week => {
                // 1970-01-01 was a Thursday: three days after a Monday.
                let monday = day - (day + 3).rem_euclid(7);
                Some((monday * DAY_SECS, (monday + 7) * DAY_SECS))
            }
            BudgetPeriod::Month => {
                let (year, month, _) = civil_from_days(day);
                let (next_year, next_month) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
                Some((days_from_civil(year, month, 1) * DAY_SECS, days_from_civil(next_year, next_month, 1) * DAY_SECS))
            }
        }
    }
}

impl fmt::Display for BudgetPeriod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The period names a user may type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown budget period; known periods: day, week, month, none")]
pub struct UnknownBudgetPeriod;

impl FromStr for BudgetPeriod {
    type Err = UnknownBudgetPeriod;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        BudgetPeriod::ALL.into_iter().find(|p| p.as_str() == raw).ok_or(UnknownBudgetPeriod)
    }
}

/// What a data plane does with a limited key while it holds no valid lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LimitFallback {
    /// Each replica keeps `ceil(limit / replicas-last-seen)` of every limit.
    #[default]
    Share,
    /// Limited keys are refused until a lease arrives.
    Closed,
}

impl LimitFallback {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitFallback::Share => "share",
            LimitFallback::Closed => "closed",
        }
    }
}

impl fmt::Display for LimitFallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown limit fallback; known fallbacks: share, closed")]
pub struct UnknownLimitFallback;

impl FromStr for LimitFallback {
    type Err = UnknownLimitFallback;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw {
            "share" => Ok(LimitFallback::Share),
            "closed" => Ok(LimitFallback::Closed),
            _ => Err(UnknownLimitFallback),
        }
    }
}

/// A key's limits. Zero in a field means "no such limit"; all zero is a key with no limits at
/// all (which, set on a key, also keeps the default limits away from it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct KeyLimits {
    pub requests_per_minute: u32,
    /// Input plus output tokens, charged from metered usage.
    pub tokens_per_minute: u64,
    /// Requests (streams included) in flight at once.
    pub max_concurrent: u32,
    /// Tokens per budget period (per key, fleet-wide).
    pub budget_tokens: u64,
    pub budget_period: BudgetPeriod,
}

/// Which limit is out of range or inconsistent, said precisely enough to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyLimitsError {
    #[error("requests_per_minute: at most {MAX_REQUEST_LIMIT}, got {0}")]
    RequestsPerMinute(u32),
    #[error("tokens_per_minute: at most {MAX_TOKEN_LIMIT}, got {0}")]
    TokensPerMinute(u64),
    #[error("max_concurrent: at most {MAX_REQUEST_LIMIT}, got {0}")]
    MaxConcurrent(u32),
    #[error("budget_tokens: at most {MAX_TOKEN_LIMIT}, got {0}")]
    BudgetTokens(u64),
    #[error("budget_period: {0} needs budget_tokens above 0")]
    PeriodWithoutBudget(BudgetPeriod),
}

impl KeyLimits {
    /// Whether no limit is set (the key costs nothing on the request path).
    pub fn is_unlimited(&self) -> bool {
        self.requests_per_minute == 0
            && self.tokens_per_minute == 0
            && self.max_concurrent == 0
            && self.budget_tokens == 0
    }

    pub fn validate(&self) -> Result<(), KeyLimitsError> {
        if self.requests_per_minute > MAX_REQUEST_LIMIT {
            return Err(KeyLimitsError::RequestsPerMinute(self.requests_per_minute));
        }
        if self.tokens_per_minute > MAX_TOKEN_LIMIT {
            return Err(KeyLimitsError::TokensPerMinute(self.tokens_per_minute));
        }
        if self.max_concurrent > MAX_REQUEST_LIMIT {
            return Err(KeyLimitsError::MaxConcurrent(self.max_concurrent));
        }
        if self.budget_tokens > MAX_TOKEN_LIMIT {
            return Err(KeyLimitsError::BudgetTokens(self.budget_tokens));
        }
        if self.budget_tokens == 0 && self.budget_period != BudgetPeriod::None {
            return Err(KeyLimitsError::PeriodWithoutBudget(self.budget_period));
        }
        Ok(())
    }
}

/// A change to a set of limits: each field set replaces that limit (0 removes it), the others
/// keep their value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyLimitsPatch {
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u64>,
    pub max_concurrent: Option<u32>,
    pub budget_tokens: Option<u64>,
    pub budget_period: Option<BudgetPeriod>,
}

impl KeyLimitsPatch {
    /// `base` with this patch applied, validated as a whole (a period needs a budget).
    pub fn apply(&self, base: KeyLimits) -> Result<KeyLimits, KeyLimitsError> {
        let limits = KeyLimits {
            requests_per_minute: self.requests_per_minute.unwrap_or(base.requests_per_minute),
            tokens_per_minute: self.tokens_per_minute.unwrap_or(base.tokens_per_minute),
            max_concurrent: self.max_concurrent.unwrap_or(base.max_concurrent),
            budget_tokens: self.budget_tokens.unwrap_or(base.budget_tokens),
            budget_period: self.budget_period.unwrap_or(base.budget_period),
        };
        limits.validate()?;
        Ok(limits)
    }
}

/// How an update changes an optional set of limits (a key's own, or the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitsUpdate {
    /// Removes them: a key then follows the default limits; the default then is "none".
    Clear,
    /// Patches them; limits not set before start from all zero.
    Patch(KeyLimitsPatch),
}

impl LimitsUpdate {
    pub fn apply(&self, current: Option<KeyLimits>) -> Result<Option<KeyLimits>, KeyLimitsError> {
        match self {
            LimitsUpdate::Clear => Ok(None),
            LimitsUpdate::Patch(patch) => patch.apply(current.unwrap_or_default()).map(Some),
        }
    }
}

/// The limits in force for a key: its own, else the default, else none.
pub fn effective_limits(own: Option<&KeyLimits>, default: Option<&KeyLimits>) -> Option<KeyLimits> {
    own.or(default).copied().filter(|limits| !limits.is_unlimited())
}

impl fmt::Display for KeyLimits {
    /// `rpm=10 tpm=0 concurrent=2 budget=1000/day`, the form audit records and logs use.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rpm={} tpm={} concurrent={} budget={}/{}",
            self.requests_per_minute,
            self.tokens_per_minute,
            self.max_concurrent,
            self.budget_tokens,
            self.budget_period
        )
    }
}

const DAY_SECS: i64 = 86_400;

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day count since 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix seconds of a UTC date and time, computed independently of the code under test by
    /// counting days month by month.
    fn utc(year: i64, month: u32, day: u32, hour: i64, min: i64, sec: i64) -> i64 {
        let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let mut days = 0;
        for y in 1970..year {
            days += if leap(y) { 366 } else { 365 };
        }
        let lengths = [31, if leap(year) { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        days += lengths[..(month - 1) as usize].iter().sum::<i64>();
        days += i64::from(day) - 1;
        days * DAY_SECS + hour * 3600 + min * 60 + sec
    }

    #[test]
    fn calendar_round_trips_over_centuries() {
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2000, 3, 1) * DAY_SECS, utc(2000, 3, 1, 0, 0, 0));
    }

    #[test]
    fn days_are_utc_midnights() {
        let t = utc(2026, 12, 1, 16, 41, 2);
        assert_eq!(BudgetPeriod::Day.bounds(t), Some((utc(2026, 12, 1, 0, 0, 0), utc(2026, 12, 2, 0, 0, 0))));
        let midnight = utc(2026, 12, 2, 0, 0, 0);
        assert_eq!(BudgetPeriod::Day.bounds(midnight).unwrap().0, midnight, "a period starts at its first second");
        assert_eq!(BudgetPeriod::Day.bounds(midnight - 1).unwrap().1, midnight, "and ends before the next");
        assert_eq!(BudgetPeriod::None.bounds(t), None);
        // Before 1970 too (negative seconds round down, not toward zero).
        assert_eq!(BudgetPeriod::Day.bounds(-1), Some((-DAY_SECS, 0)));
    }

    #[test]
    fn weeks_start_on_monday() {
        // 2026-12-01 is a Tuesday; 2026-11-30 a Monday.
        let t = utc(2026, 12, 1, 12, 0, 0);
        assert_eq!(BudgetPeriod::Week.bounds(t), Some((utc(2026, 11, 30, 0, 0, 0), utc(2026, 12, 7, 0, 0, 0))));
        // Sunday late evening still belongs to the week that began the Monday before.
        let sunday = utc(2026, 12, 6, 23, 59, 59);
        assert_eq!(BudgetPeriod::Week.bounds(sunday).unwrap().0, utc(2026, 11, 30, 0, 0, 0));
        // The epoch (a Thursday) is in the week of Monday 1969-12-29.
        assert_eq!(BudgetPeriod::Week.bounds(0), Some((-3 * DAY_SECS, 4 * DAY_SECS)));
        // Across a year end.
        let new_year = utc(2027, 1, 1, 0, 0, 0);
        assert_eq!(BudgetPeriod::Week.bounds(new_year), Some((utc(2026, 12, 28, 0, 0, 0), utc(2027, 1, 4, 0, 0, 0))));
    }

    #[test]
    fn months_handle_their_lengths_and_leap_years() {
        let month = |t| BudgetPeriod::Month.bounds(t).unwrap();
        assert_eq!(month(utc(2026, 12, 31, 23, 59, 59)), (utc(2026, 12, 1, 0, 0, 0), utc(2027, 1, 1, 0, 0, 0)));
        assert_eq!(month(utc(2027, 1, 1, 0, 0, 0)), (utc(2027, 1, 1, 0, 0, 0), utc(2027, 2, 1, 0, 0, 0)));
        // February: 29 days in 2024 and 2000 (divisible by 400), 28 in 2026 and 2100.
        for (year, days) in [(2024, 29), (2000, 29), (2026, 28), (2100, 28)] {
            let (start, end) = month(utc(year, 2, 15, 8, 0, 0));
            assert_eq!((start, end), (utc(year, 2, 1, 0, 0, 0), utc(year, 3, 1, 0, 0, 0)));
            assert_eq!((end - start) / DAY_SECS, days, "{year}");
        }
        assert_eq!(month(utc(2024, 2, 29, 23, 59, 59)).1, utc(2024, 3, 1, 0, 0, 0));
        for (m, days) in [(4, 30), (7, 31), (11, 30)] {
            let (start, end) = month(utc(2026, m, 30, 0, 0, 0));
            assert_eq!((end - start) / DAY_SECS, days);
        }
    }

    #[test]
    fn windows_are_aligned_minutes() {
        assert_eq!(window_start(utc(2026, 12, 1, 16, 41, 59)), utc(2026, 12, 1, 16, 41, 0));
        assert_eq!(window_start(120), 120);
        assert_eq!(window_start(-1), -60);
    }

    #[test]
    fn validation_names_the_field() {
        let ok = KeyLimits {
            requests_per_minute: 10,
            budget_tokens: 100,
            budget_period: BudgetPeriod::Month,
            ..Default::default()
        };
        assert_eq!(ok.validate(), Ok(()));
        assert!(!ok.is_unlimited() && KeyLimits::default().is_unlimited());
        let period_only = KeyLimits { budget_period: BudgetPeriod::Day, ..Default::default() };
        assert_eq!(period_only.validate().unwrap_err().to_string(), "budget_period: day needs budget_tokens above 0");
        let huge = KeyLimits { tokens_per_minute: MAX_TOKEN_LIMIT + 1, ..Default::default() };
        assert!(huge.validate().unwrap_err().to_string().starts_with("tokens_per_minute: at most"));
        let many = KeyLimits { requests_per_minute: u32::MAX, ..Default::default() };
        assert!(matches!(many.validate(), Err(KeyLimitsError::RequestsPerMinute(_))));
        assert_eq!(ok.to_string(), "rpm=10 tpm=0 concurrent=0 budget=100/month");
    }

    #[test]
    fn own_limits_win_over_the_default_even_when_empty() {
        let default = KeyLimits { requests_per_minute: 5, ..Default::default() };
        let own = KeyLimits { max_concurrent: 2, ..Default::default() };
        assert_eq!(effective_limits(Some(&own), Some(&default)), Some(own));
        assert_eq!(effective_limits(None, Some(&default)), Some(default));
        assert_eq!(effective_limits(Some(&KeyLimits::default()), Some(&default)), None, "explicitly unlimited");
        assert_eq!(effective_limits(None, None), None);
    }

    #[test]
    fn patches_keep_what_they_do_not_name() {
        let base = KeyLimits { requests_per_minute: 10, tokens_per_minute: 500, ..Default::default() };
        let patch = KeyLimitsPatch { requests_per_minute: Some(0), max_concurrent: Some(3), ..Default::default() };
        let patched = patch.apply(base).unwrap();
        assert_eq!(patched, KeyLimits { tokens_per_minute: 500, max_concurrent: 3, ..Default::default() });
        let period = KeyLimitsPatch { budget_period: Some(BudgetPeriod::Week), ..Default::default() };
        assert_eq!(period.apply(base), Err(KeyLimitsError::PeriodWithoutBudget(BudgetPeriod::Week)));
        assert_eq!(LimitsUpdate::Clear.apply(Some(base)), Ok(None));
        assert_eq!(LimitsUpdate::Patch(patch).apply(None).unwrap().unwrap().max_concurrent, 3);
    }

    #[test]
    fn names_parse() {
        assert_eq!("week".parse(), Ok(BudgetPeriod::Week));
        assert!("weekly".parse::<BudgetPeriod>().is_err());
        assert_eq!("closed".parse(), Ok(LimitFallback::Closed));
        assert_eq!(
            "open".parse::<LimitFallback>().unwrap_err().to_string(),
            "unknown limit fallback; known fallbacks: share, closed"
        );
    }
}
