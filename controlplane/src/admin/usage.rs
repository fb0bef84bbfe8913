//! `QueryUsage`: the request validated into a [`UsageQuery`], the totals back as API rows.
//!
//! The range is on hour buckets: `since` is rounded down to the start of its hour (so
//! "the last 24 hours" includes the hour it began in) and a bucket counts when its start is
//! before `until` (default: now). At most [`MAX_ROWS`] rows are returned; a query that would
//! return more is refused, naming what to narrow, rather than cut short silently.

use std::time::SystemTime;

use aurora_core::text::{excerpt, first_unsafe_char};
use aurora_core::{ANONYMOUS_USAGE_ID, MASTER_KEY_USAGE_ID, MODEL_MAX_BYTES};
use aurora_proto::v1 as pb;
use uuid::Uuid;

use super::error::AdminError;
use super::validate::FieldError;
use crate::store::{Store, TimeGrouping, UsageQuery, UsageTotal};
use crate::time;

/// Most rows one query returns.
pub(crate) const MAX_ROWS: u32 = 10_000;
const HOUR_MS: i64 = 3_600_000;

fn invalid(field: &'static str, message: impl Into<String>) -> FieldError {
    FieldError { field, message: message.into() }
}

pub(super) async fn query(store: &dyn Store, req: pb::QueryUsageRequest) -> Result<pb::QueryUsageResponse, AdminError> {
    let mut query = validate(&req, SystemTime::now())?;
    query.limit = MAX_ROWS + 1;
    let rows = store.query_usage(&query).await?;
    if rows.len() > MAX_ROWS as usize {
        return Err(invalid(
            "group_by",
            format!("more than {MAX_ROWS} rows: narrow the range or the filters, or group by fewer dimensions"),
        )
        .into());
    }
    Ok(pb::QueryUsageResponse { rows: rows.iter().map(total).collect() })
}

pub(crate) fn validate(req: &pb::QueryUsageRequest, now: SystemTime) -> Result<UsageQuery, FieldError> {
    let timestamp_ms = |field, t: &prost_types::Timestamp| -> Result<i64, FieldError> {
        if !(0..1_000_000_000).contains(&t.nanos) || t.seconds < 0 || t.seconds > i64::MAX / 1000 - 1 {
            return Err(invalid(field, "must be a valid timestamp after 1970"));
        }
        Ok(t.seconds * 1000 + i64::from(t.nanos / 1_000_000))
    };
    let since = req.since.as_ref().map(|t| timestamp_ms("since", t)).transpose()?.unwrap_or(0);
    let until = req.until.as_ref().map(|t| timestamp_ms("until", t)).transpose()?.unwrap_or(time::to_millis(now));
    let since = since - since.rem_euclid(HOUR_MS);
    if since >= until {
        return Err(invalid("until", "must be later than since"));
    }
    let mut query = UsageQuery {
        since_ms: since,
        until_ms: until,
        key_id: non_empty(&req.key_id).map(key_id).transpose()?,
        provider: non_empty(&req.provider)
            .map(|p| super::validate::provider("provider", p).map(|k| k.as_str().to_owned()))
            .transpose()?,
        model: non_empty(&req.model).map(model).transpose()?,
        ..UsageQuery::default()
    };
    for raw in &req.group_by {
        match pb::UsageDimension::try_from(*raw) {
            Ok(pb::UsageDimension::Key) => query.by_key = true,
            Ok(pb::UsageDimension::Provider) => query.by_provider = true,
            Ok(pb::UsageDimension::Model) => query.by_model = true,
            Ok(dimension @ (pb::UsageDimension::Hour | pb::UsageDimension::Day)) => {
                let time = if dimension == pb::UsageDimension::Hour { TimeGrouping::Hour } else { TimeGrouping::Day };
                if query.time != TimeGrouping::None && query.time != time {
                    return Err(invalid("group_by", "hour and day exclude each other"));
                }
                query.time = time;
            }
            Ok(pb::UsageDimension::Unspecified) | Err(_) => {
                return Err(invalid("group_by", format!("{raw} is not a usage dimension")));
            }
        }
    }
    if !(query.by_key || query.by_provider || query.by_model) && query.time == TimeGrouping::None {
        (query.by_key, query.by_provider, query.by_model) = (true, true, true);
    }
    Ok(query)
}

fn non_empty(raw: &str) -> Option<&str> {
    Some(raw.trim()).filter(|s| !s.is_empty())
}

/// A key's UUID (in its canonical form, as usage stores it) or a pseudo id.
pub(crate) fn key_id(raw: &str) -> Result<String, FieldError> {
    if raw == MASTER_KEY_USAGE_ID || raw == ANONYMOUS_USAGE_ID {
        return Ok(raw.to_owned());
    }
    Uuid::parse_str(raw).map(|id| id.to_string()).map_err(|_| {
        invalid(
            "key_id",
            format!("{} is not a key id (a UUID, or {MASTER_KEY_USAGE_ID:?} or {ANONYMOUS_USAGE_ID:?})", excerpt(raw)),
        )
    })
}

fn model(raw: &str) -> Result<String, FieldError> {
    if raw.len() > MODEL_MAX_BYTES || first_unsafe_char(raw).is_some() {
        return Err(invalid("model", format!("must be at most {MODEL_MAX_BYTES} bytes of printable text")));
    }
    Ok(raw.to_owned())
}

fn total(row: &UsageTotal) -> pb::UsageTotal {
    pb::UsageTotal {
        key_id: row.key_id.clone(),
        provider: row.provider.clone(),
        model: row.model.clone(),
        bucket_start: Some(time::from_millis(row.bucket_start_ms).into()),
        requests: row.counts.requests,
        input_tokens: row.counts.input_tokens,
        output_tokens: row.counts.output_tokens,
        cache_read_input_tokens: row.counts.cache_read_input_tokens,
        cache_creation_input_tokens: row.counts.cache_creation_input_tokens,
        incomplete_requests: row.counts.incomplete_requests,
        unknown_requests: row.counts.unknown_requests,
        reasoning_tokens: row.counts.reasoning_tokens,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::*;

    fn at(secs: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds: secs, nanos: 0 })
    }

    #[test]
    fn defaults_group_by_key_provider_and_model_up_to_now() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000);
        let query = validate(&pb::QueryUsageRequest::default(), now).unwrap();
        assert_eq!((query.since_ms, query.until_ms), (0, 10_000_000));
        assert!(query.by_key && query.by_provider && query.by_model);
        assert_eq!(query.time, TimeGrouping::None);
    }

    #[test]
    fn since_is_rounded_down_to_its_hour() {
        let req = pb::QueryUsageRequest { since: at(3600 * 5 + 59), until: at(3600 * 9), ..Default::default() };
        let query = validate(&req, SystemTime::now()).unwrap();
        assert_eq!(query.since_ms, 3600 * 5 * 1000);
    }

    #[test]
    fn bad_fields_are_named() {
        let now = SystemTime::now();
        let err = |req: pb::QueryUsageRequest| validate(&req, now).unwrap_err().to_string();
        assert!(err(pb::QueryUsageRequest { key_id: "nope".into(), ..Default::default() }).starts_with("key_id:"));
        assert!(
            err(pb::QueryUsageRequest { provider: "bedrock".into(), ..Default::default() }).starts_with("provider:")
        );
        assert!(err(pb::QueryUsageRequest { model: "a\u{202e}b".into(), ..Default::default() }).starts_with("model:"));
        assert!(
            err(pb::QueryUsageRequest { since: at(7200), until: at(3600), ..Default::default() }).starts_with("until:")
        );
        let both = vec![pb::UsageDimension::Hour as i32, pb::UsageDimension::Day as i32];
        assert!(err(pb::QueryUsageRequest { group_by: both, ..Default::default() }).starts_with("group_by:"));
        assert!(err(pb::QueryUsageRequest { group_by: vec![42], ..Default::default() }).starts_with("group_by:"));
    }

    #[test]
    fn key_ids_are_canonical_or_pseudo() {
        assert_eq!(key_id("master").unwrap(), "master");
        let upper = "0190A8E2-3C4D-7E5F-8A9B-0C1D2E3F4A5B";
        assert_eq!(key_id(upper).unwrap(), upper.to_lowercase());
    }

    #[test]
    fn a_time_only_grouping_sums_everything_per_bucket() {
        let req = pb::QueryUsageRequest { group_by: vec![pb::UsageDimension::Day as i32], ..Default::default() };
        let query = validate(&req, SystemTime::now()).unwrap();
        assert!(!(query.by_key || query.by_provider || query.by_model));
        assert_eq!(query.time, TimeGrouping::Day);
    }
}
