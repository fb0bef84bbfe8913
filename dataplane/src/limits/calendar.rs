//! UTC calendar arithmetic for budget periods and the RFC 3339 timestamps of Anthropic's
//! rate-limit headers (no time-zone crate: only UTC is ever needed).

use super::config::BudgetPeriod;

const DAY: i64 = 86_400;

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day since 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// Unix seconds when the budget period holding `now_s` ends; `None` for a budget that never
/// renews.
pub(super) fn period_end(period: BudgetPeriod, now_s: i64) -> Option<i64> {
    let days = now_s.div_euclid(DAY);
    match period {
        BudgetPeriod::None => None,
        BudgetPeriod::Day => Some((days + 1) * DAY),
        BudgetPeriod::Week => {
            // 1970-01-01 was a Thursday: Monday is day 4 of that week, counting from 0.
            let since_monday = (days + 3).rem_euclid(7);
            Some((days - since_monday + 7) * DAY)
        }
        BudgetPeriod::Month => {
            let (year, month, _) = civil_from_days(days);
            let (year, month) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
            Some(days_from_civil(year, month, 1) * DAY)
        }
    }
}

/// `2026-12-01T17:05:00Z` for a Unix time in seconds.
pub(super) fn rfc3339(unix_s: i64) -> String {
    let (year, month, day) = civil_from_days(unix_s.div_euclid(DAY));
    let secs = unix_s.rem_euclid(DAY);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-12-01T16:41:02Z, a Tuesday.
    const NOW: i64 = 1_796_143_262;

    #[test]
    fn periods_end_on_utc_calendar_boundaries() {
        assert_eq!(rfc3339(NOW), "2026-12-01T16:41:02Z");
        assert_eq!(rfc3339(period_end(BudgetPeriod::Day, NOW).unwrap()), "2026-12-02T00:00:00Z");
        assert_eq!(rfc3339(period_end(BudgetPeriod::Week, NOW).unwrap()), "2026-12-07T00:00:00Z");
        assert_eq!(rfc3339(period_end(BudgetPeriod::Month, NOW).unwrap()), "2027-01-01T00:00:00Z");
        assert_eq!(period_end(BudgetPeriod::None, NOW), None);
        // A Monday's own week ends the next Monday; December rolls into the next year.
        let monday = days_from_civil(2026, 11, 30) * DAY;
        assert_eq!(rfc3339(period_end(BudgetPeriod::Week, monday).unwrap()), "2026-12-07T00:00:00Z");
        let feb = days_from_civil(2028, 2, 29) * DAY + 5;
        assert_eq!(rfc3339(period_end(BudgetPeriod::Month, feb).unwrap()), "2028-03-01T00:00:00Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }
}
