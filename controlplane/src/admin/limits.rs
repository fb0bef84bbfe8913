//! Per-key limits as the admin API receives and shows them (issue 13): validation of
//! `KeyLimits` and `LimitsUpdate` into domain values, with errors that name the field
//! (`limits: budget_period: ...`).

use aurora_core::text::excerpt;
use aurora_core::{BudgetPeriod, KeyLimits, KeyLimitsPatch, LimitFallback, LimitsUpdate};
use aurora_proto::v1 as pb;

use super::validate::FieldError;
use crate::store::{KeyRecord, Settings};

/// `""` is accepted for "none" (proto3's default).
fn period(field: &'static str, raw: &str) -> Result<BudgetPeriod, FieldError> {
    if raw.is_empty() {
        return Ok(BudgetPeriod::None);
    }
    raw.parse().map_err(|err| FieldError { field, message: format!("budget_period: {}: {err}", excerpt(raw)) })
}

pub(crate) fn limits(field: &'static str, raw: &pb::Limits) -> Result<KeyLimits, FieldError> {
    let limits = KeyLimits {
        requests_per_minute: raw.requests_per_minute,
        tokens_per_minute: raw.tokens_per_minute,
        max_concurrent: raw.max_concurrent,
        budget_tokens: raw.budget_tokens,
        budget_period: period(field, &raw.budget_period)?,
    };
    limits.validate().map_err(|err| FieldError { field, message: err.to_string() })?;
    Ok(limits)
}

/// The update's own consistency (`clear` alone, known period, bounds); whether the patched
/// limits as a whole are consistent is checked against the current ones in the store.
pub(crate) fn update(field: &'static str, raw: &pb::LimitsUpdate) -> Result<LimitsUpdate, FieldError> {
    let patch = KeyLimitsPatch {
        requests_per_minute: raw.requests_per_minute,
        tokens_per_minute: raw.tokens_per_minute,
        max_concurrent: raw.max_concurrent,
        budget_tokens: raw.budget_tokens,
        budget_period: raw.budget_period.as_deref().map(|p| period(field, p)).transpose()?,
    };
    if raw.clear {
        if patch != KeyLimitsPatch::default() {
            let message = "clear removes the limits; set no other field with it".to_owned();
            return Err(FieldError { field, message });
        }
        return Ok(LimitsUpdate::Clear);
    }
    if patch == KeyLimitsPatch::default() {
        let message = "set `clear` or at least one limit".to_owned();
        return Err(FieldError { field, message });
    }
    // The bounds of each field set; a period without a budget is judged against the current
    // limits in the store.
    let check = KeyLimits {
        requests_per_minute: patch.requests_per_minute.unwrap_or(0),
        tokens_per_minute: patch.tokens_per_minute.unwrap_or(0),
        max_concurrent: patch.max_concurrent.unwrap_or(0),
        budget_tokens: patch.budget_tokens.unwrap_or(0),
        budget_period: BudgetPeriod::None,
    };
    check.validate().map_err(|err| FieldError { field, message: err.to_string() })?;
    Ok(LimitsUpdate::Patch(patch))
}

pub(crate) fn fallback(raw: &str) -> Result<LimitFallback, FieldError> {
    raw.parse().map_err(|err| FieldError { field: "limit_fallback", message: format!("{}: {err}", excerpt(raw)) })
}

/// The limits in force for `record` and what is left of each now, fleet-wide.
pub(crate) fn status(
    record: &KeyRecord,
    settings: &Settings,
    capacity: Option<&crate::capacity::Capacity>,
) -> pb::KeyLimitStatus {
    let (source, limits) = match (&record.limits, &settings.default_key_limits) {
        (Some(own), _) => ("key", *own),
        (None, Some(default)) => ("default", *default),
        (None, None) => ("none", KeyLimits::default()),
    };
    let source = if limits.is_unlimited() { "none" } else { source };
    let mut status =
        pb::KeyLimitStatus { source: source.to_owned(), limits: Some(to_pb(&limits)), ..Default::default() };
    let Some(capacity) = capacity.filter(|_| source != "none") else { return status };
    let counts = capacity.counts(*record.id.as_bytes(), &limits);
    status.window_start = counts.window_start;
    status.requests_admitted = counts.requests_admitted;
    status.requests_remaining = u64::from(limits.requests_per_minute).saturating_sub(counts.requests_admitted);
    status.tokens_charged = counts.tokens_charged;
    status.tokens_remaining = limits.tokens_per_minute.saturating_sub(counts.tokens_charged);
    status.in_flight = u32::try_from(counts.in_flight).unwrap_or(u32::MAX);
    status.budget_used = counts.budget_used;
    let budget = i64::try_from(limits.budget_tokens).unwrap_or(i64::MAX);
    status.budget_remaining = budget.saturating_sub(i64::try_from(counts.budget_used).unwrap_or(i64::MAX));
    status.budget_period_end = (counts.budget_period_end > 0)
        .then_some(prost_types::Timestamp { seconds: counts.budget_period_end, nanos: 0 });
    status.replicas = counts.replicas;
    status
}

pub(crate) fn to_pb(limits: &KeyLimits) -> pb::Limits {
    pb::Limits {
        requests_per_minute: limits.requests_per_minute,
        tokens_per_minute: limits.tokens_per_minute,
        max_concurrent: limits.max_concurrent,
        budget_tokens: limits.budget_tokens,
        budget_period: limits.budget_period.as_str().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_validated_with_their_field() {
        let raw = pb::Limits {
            requests_per_minute: 10,
            budget_tokens: 5,
            budget_period: "week".into(),
            ..Default::default()
        };
        let parsed = limits("limits", &raw).unwrap();
        assert_eq!((parsed.requests_per_minute, parsed.budget_period), (10, BudgetPeriod::Week));
        assert_eq!(to_pb(&parsed), raw);
        let bad = pb::Limits { budget_period: "fortnight".into(), budget_tokens: 1, ..Default::default() };
        assert_eq!(
            limits("limits", &bad).unwrap_err().to_string(),
            "limits: budget_period: \"fortnight\": unknown budget period; known periods: day, week, month, none"
        );
        let lonely = pb::Limits { budget_period: "day".into(), ..Default::default() };
        assert_eq!(
            limits("limits", &lonely).unwrap_err().to_string(),
            "limits: budget_period: day needs budget_tokens above 0"
        );
    }

    #[test]
    fn updates_are_clear_or_a_patch() {
        let clear = pb::LimitsUpdate { clear: true, ..Default::default() };
        assert_eq!(update("limits", &clear), Ok(LimitsUpdate::Clear));
        let both = pb::LimitsUpdate { clear: true, requests_per_minute: Some(3), ..Default::default() };
        assert!(update("limits", &both).unwrap_err().to_string().contains("set no other field"));
        let empty = pb::LimitsUpdate::default();
        assert_eq!(update("limits", &empty).unwrap_err().to_string(), "limits: set `clear` or at least one limit");
        let rpm = pb::LimitsUpdate { requests_per_minute: Some(0), ..Default::default() };
        let LimitsUpdate::Patch(patch) = update("limits", &rpm).unwrap() else { panic!("a patch") };
        assert_eq!(patch.requests_per_minute, Some(0));
        let huge = pb::LimitsUpdate { tokens_per_minute: Some(u64::MAX), ..Default::default() };
        assert!(
            update("default_key_limits", &huge)
                .unwrap_err()
                .to_string()
                .starts_with("default_key_limits: tokens_per_minute: at most")
        );
        assert_eq!(fallback("share"), Ok(LimitFallback::Share));
        assert!(fallback("open").unwrap_err().to_string().starts_with("limit_fallback: \"open\": unknown"));
    }
}
