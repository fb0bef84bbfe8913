//! How limits are kept in the store (issue 13): a key's own limits in `keys.limit_*`, the default
//! limits in `settings.default_limit_*`, five columns each, all NULL for "none" (see
//! migrations 0011 / PostgreSQL 0010), and how they travel on the config stream.

use aurora_core::{BudgetPeriod, KeyLimits, LimitFallback};
use aurora_proto::v1 as pb;

use super::StoreError;

/// The five columns' suffixes, in bind order.
pub(super) const COLUMNS: [&str; 5] = ["rpm", "tpm", "concurrent", "budget_tokens", "budget_period"];

/// The column values of `limits` (all `None` when there are none).
pub(super) fn columns(limits: Option<&KeyLimits>) -> ([Option<i64>; 4], Option<String>) {
    match limits {
        None => ([None; 4], None),
        Some(l) => (
            [
                Some(i64::from(l.requests_per_minute)),
                Some(to_i64(l.tokens_per_minute)),
                Some(i64::from(l.max_concurrent)),
                Some(to_i64(l.budget_tokens)),
            ],
            Some(l.budget_period.as_str().to_owned()),
        ),
    }
}

/// Validated limits are far below `i64::MAX` (see `aurora_core::MAX_TOKEN_LIMIT`).
fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The limits the columns hold. A half-written set, a negative or out-of-range value or an
/// unknown period is corruption (named by its column), never "unlimited".
pub(super) fn from_columns(
    table: &str,
    prefix: &str,
    numbers: [Option<i64>; 4],
    period: Option<String>,
) -> Result<Option<KeyLimits>, StoreError> {
    let corrupt = |column: &str| StoreError::Corrupt(format!("{table}.{prefix}{column}"));
    let (Some(rpm), Some(tpm), Some(concurrent), Some(budget), Some(period)) =
        (numbers[0], numbers[1], numbers[2], numbers[3], period)
    else {
        if numbers.iter().all(Option::is_none) {
            return Ok(None);
        }
        return Err(corrupt("rpm"));
    };
    let limits = KeyLimits {
        requests_per_minute: u32::try_from(rpm).map_err(|_| corrupt("rpm"))?,
        tokens_per_minute: u64::try_from(tpm).map_err(|_| corrupt("tpm"))?,
        max_concurrent: u32::try_from(concurrent).map_err(|_| corrupt("concurrent"))?,
        budget_tokens: u64::try_from(budget).map_err(|_| corrupt("budget_tokens"))?,
        budget_period: period.parse().map_err(|_| corrupt("budget_period"))?,
    };
    limits.validate().map_err(|_| corrupt("rpm"))?;
    Ok(Some(limits))
}

pub(super) fn parse_fallback(text: &str) -> Result<LimitFallback, StoreError> {
    text.parse().map_err(|_| StoreError::Corrupt("settings.limit_fallback".into()))
}

/// The limits as the config stream carries them.
pub(crate) fn to_config(limits: &KeyLimits) -> pb::KeyLimits {
    pb::KeyLimits {
        requests_per_minute: limits.requests_per_minute,
        tokens_per_minute: limits.tokens_per_minute,
        max_concurrent: limits.max_concurrent,
        budget_tokens: limits.budget_tokens,
        budget_period: period_config(limits.budget_period) as i32,
    }
}

pub(crate) fn period_config(period: BudgetPeriod) -> pb::BudgetPeriod {
    match period {
        BudgetPeriod::None => pb::BudgetPeriod::None,
        BudgetPeriod::Day => pb::BudgetPeriod::Day,
        BudgetPeriod::Week => pb::BudgetPeriod::Week,
        BudgetPeriod::Month => pb::BudgetPeriod::Month,
    }
}

pub(crate) fn fallback_config(fallback: LimitFallback) -> pb::LimitFallback {
    match fallback {
        LimitFallback::Share => pb::LimitFallback::Share,
        LimitFallback::Closed => pb::LimitFallback::Closed,
    }
}

/// The config stream's limits as the domain type (the allocator reads them back from
/// snapshots); an unknown period from a newer control plane reads as "never renews".
pub(crate) fn from_config(limits: &pb::KeyLimits) -> KeyLimits {
    let budget_period = match pb::BudgetPeriod::try_from(limits.budget_period) {
        Ok(pb::BudgetPeriod::Day) => BudgetPeriod::Day,
        Ok(pb::BudgetPeriod::Week) => BudgetPeriod::Week,
        Ok(pb::BudgetPeriod::Month) => BudgetPeriod::Month,
        Ok(pb::BudgetPeriod::None) | Err(_) => BudgetPeriod::None,
    };
    KeyLimits {
        requests_per_minute: limits.requests_per_minute,
        tokens_per_minute: limits.tokens_per_minute,
        max_concurrent: limits.max_concurrent,
        budget_tokens: limits.budget_tokens,
        budget_period,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_round_trip_and_refuse_half_sets() {
        let limits = KeyLimits {
            requests_per_minute: 10,
            tokens_per_minute: 1_000,
            max_concurrent: 2,
            budget_tokens: 50_000,
            budget_period: BudgetPeriod::Month,
        };
        let (numbers, period) = columns(Some(&limits));
        assert_eq!(from_columns("keys", "limit_", numbers, period).unwrap(), Some(limits));
        let (numbers, period) = columns(None);
        assert_eq!(from_columns("keys", "limit_", numbers, period).unwrap(), None);
        let half = from_columns("keys", "limit_", [Some(1), None, None, None], None).unwrap_err();
        assert_eq!(half.to_string(), "corrupt record in the store: keys.limit_rpm");
        let negative =
            from_columns("settings", "default_limit_", [Some(1), Some(-1), Some(0), Some(0)], Some("day".into()));
        assert!(negative.unwrap_err().to_string().ends_with("settings.default_limit_tpm"));
        let period = from_columns("keys", "limit_", [Some(1), Some(0), Some(0), Some(0)], Some("hour".into()));
        assert!(period.unwrap_err().to_string().ends_with("keys.limit_budget_period"));
        assert_eq!(from_config(&to_config(&limits)), limits);
    }
}
