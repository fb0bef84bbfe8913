//! The usage store's contract, on every backend (through [`usage_suite!`], like `suite.rs`):
//! exactly-once ingest, totals, grouping and filters, retention, and no configuration revision.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime};

use super::test_db::TestDb;
use super::{TimeGrouping, UsageBucket, UsageCounts, UsageQuery, UsageReportRecord};
use crate::time;

macro_rules! usage_suite {
    ($db:expr) => {
        $crate::store::usage_suite::usage_suite!(@tests $db;
            a_report_delivered_twice_counts_once,
            replicas_ingesting_the_same_reports_at_once_count_each_once,
            totals_group_and_filter,
            pruning_drops_old_rows_and_ingest_ignores_them,
        );
    };
    (@tests $db:expr; $($name:ident,)*) => {
        mod usage_contract {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    $crate::store::usage_suite::$name($db).await;
                }
            )*
        }
    };
}
pub(crate) use usage_suite;

const HOUR_MS: i64 = 3_600_000;
/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600_000;

fn counts(requests: u64, input: u64, output: u64) -> UsageCounts {
    UsageCounts {
        requests,
        input_tokens: input,
        output_tokens: output,
        cache_read_input_tokens: input / 2,
        cache_creation_input_tokens: 1,
        reasoning_tokens: 0,
        incomplete_requests: 1,
        unknown_requests: 0,
    }
}

fn bucket(key: &str, provider: &str, model: &str, hour: i64) -> UsageBucket {
    UsageBucket {
        key_id: key.into(),
        provider: provider.into(),
        model: model.into(),
        hour_start_ms: T0 + hour * HOUR_MS,
    }
}

fn report(node: &str, sequence: u64, rows: Vec<(UsageBucket, UsageCounts)>) -> UsageReportRecord {
    UsageReportRecord { node_id: node.into(), incarnation: vec![7; 16], sequence, rows }
}

fn everything() -> UsageQuery {
    UsageQuery {
        since_ms: 0,
        until_ms: i64::MAX,
        by_key: true,
        by_provider: true,
        by_model: true,
        limit: 1000,
        ..UsageQuery::default()
    }
}

fn long_ago() -> SystemTime {
    SystemTime::UNIX_EPOCH
}

pub(super) async fn a_report_delivered_twice_counts_once(db: TestDb) {
    let store = db.open().await;
    let head = store.head_revision().await.unwrap();
    let first = report("dp-a", 1, vec![(bucket("k1", "openai", "gpt-4o", 0), counts(2, 100, 10))]);
    let outcome = store.ingest_usage(std::slice::from_ref(&first), long_ago(), time::now()).await.unwrap();
    assert_eq!((outcome.committed, outcome.duplicates, outcome.rows), (1, 0, 1));
    // The ack was lost: the same report comes again, alone and in a batch with a new one.
    let again = store.ingest_usage(std::slice::from_ref(&first), long_ago(), time::now()).await.unwrap();
    assert_eq!((again.committed, again.duplicates), (0, 1));
    let second = report("dp-a", 2, vec![(bucket("k1", "openai", "gpt-4o", 0), counts(1, 5, 5))]);
    let mixed = store.ingest_usage(&[first.clone(), second.clone(), second], long_ago(), time::now()).await.unwrap();
    assert_eq!((mixed.committed, mixed.duplicates), (1, 2));
    // Another incarnation or node with the same sequence is another report.
    let restarted = UsageReportRecord { incarnation: vec![8; 16], ..first.clone() };
    let other_node = UsageReportRecord { node_id: "dp-b".into(), ..first };
    let outcome = store.ingest_usage(&[restarted, other_node], long_ago(), time::now()).await.unwrap();
    assert_eq!(outcome.committed, 2);

    let rows = store.query_usage(&everything()).await.unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let total = &rows[0];
    assert_eq!((total.key_id.as_str(), total.provider.as_str(), total.model.as_str()), ("k1", "openai", "gpt-4o"));
    assert_eq!(total.bucket_start_ms, T0);
    assert_eq!(total.counts.requests, 2 + 1 + 2 + 2);
    assert_eq!(total.counts.input_tokens, 100 + 5 + 100 + 100);
    assert_eq!(total.counts.output_tokens, 10 + 5 + 10 + 10);
    assert_eq!(total.counts.cache_read_input_tokens, 50 + 2 + 50 + 50);
    assert_eq!(total.counts.incomplete_requests, 4);
    assert_eq!(store.head_revision().await.unwrap(), head, "usage writes allocate no configuration revision");
    assert!(store.changes_since(0, 100).await.unwrap().is_empty());
}

pub(super) async fn replicas_ingesting_the_same_reports_at_once_count_each_once(db: TestDb) {
    // Two handles on one database stand for two control-plane replicas; both receive every
    // report (a data plane that re-sent after failing over) at the same moment.
    let a = db.open().await;
    let b = db.open().await;
    let reports: Vec<_> = (1..=20)
        .map(|seq| {
            report(
                "dp",
                seq,
                vec![
                    (bucket("k1", "anthropic", "claude", 0), counts(1, 10, 1)),
                    (bucket("k2", "anthropic", "claude", 1), counts(1, 20, 2)),
                ],
            )
        })
        .collect();
    let mut tasks = Vec::new();
    for (i, report) in reports.iter().enumerate() {
        for store in [&a, &b] {
            let store = store.clone();
            let batch = vec![report.clone(), reports[(i + 7) % reports.len()].clone()];
            tasks.push(tokio::spawn(async move { store.ingest_usage(&batch, long_ago(), time::now()).await }));
        }
    }
    let mut committed = 0;
    for task in tasks {
        committed += task.await.unwrap().unwrap().committed;
    }
    assert_eq!(committed, 20, "each identity committed by exactly one transaction");
    let rows = a.query_usage(&everything()).await.unwrap();
    let by_key: Vec<_> = rows.iter().map(|r| (r.key_id.as_str(), r.counts.requests, r.counts.input_tokens)).collect();
    assert_eq!(by_key, [("k1", 20, 200), ("k2", 20, 400)]);
}

pub(super) async fn totals_group_and_filter(db: TestDb) {
    let store = db.open().await;
    let rows = vec![
        (bucket("k1", "openai", "gpt-4o", 0), counts(1, 10, 1)),
        (bucket("k1", "openai", "gpt-4o-mini", 1), counts(2, 20, 2)),
        (bucket("k2", "anthropic", "claude", 25), counts(4, 40, 4)),
        (bucket("master", "openai", "", 26), counts(8, 80, 8)),
    ];
    store.ingest_usage(&[report("dp", 1, rows)], long_ago(), time::now()).await.unwrap();

    let by = |by_key, by_provider, by_model, time| UsageQuery { by_key, by_provider, by_model, time, ..everything() };
    let totals = store.query_usage(&by(true, false, false, TimeGrouping::None)).await.unwrap();
    let keys: Vec<_> = totals.iter().map(|r| (r.key_id.as_str(), r.provider.as_str(), r.counts.requests)).collect();
    assert_eq!(keys, [("k1", "", 3), ("k2", "", 4), ("master", "", 8)], "ordered by earliest bucket");
    assert_eq!(totals[0].bucket_start_ms, T0, "without a time dimension: the earliest hour");

    let days = store.query_usage(&by(false, false, false, TimeGrouping::Day)).await.unwrap();
    let days: Vec<_> = days.iter().map(|r| (r.bucket_start_ms, r.counts.requests, r.counts.output_tokens)).collect();
    assert_eq!(days, [(T0, 3, 3), (T0 + 24 * HOUR_MS, 12, 12)]);

    let hours = store.query_usage(&by(false, true, false, TimeGrouping::Hour)).await.unwrap();
    assert_eq!(hours.len(), 4);
    assert_eq!(hours[1].bucket_start_ms, T0 + HOUR_MS);

    let filtered = UsageQuery { provider: Some("openai".into()), model: Some("gpt-4o".into()), ..everything() };
    let filtered = store.query_usage(&filtered).await.unwrap();
    assert_eq!(filtered.len(), 1);
    assert_eq!(filtered[0].counts.input_tokens, 10);

    // The range is on hour starts: [since, until).
    let range = UsageQuery { since_ms: T0 + HOUR_MS, until_ms: T0 + 26 * HOUR_MS, ..everything() };
    let range: Vec<_> = store.query_usage(&range).await.unwrap().iter().map(|r| r.counts.requests).collect();
    assert_eq!(range, [2, 4]);
    let none = UsageQuery { key_id: Some("nobody".into()), ..by(false, false, false, TimeGrouping::None) };
    assert!(store.query_usage(&none).await.unwrap().is_empty(), "no rows, not one row of zeros");
    let limited = UsageQuery { limit: 2, ..everything() };
    assert_eq!(store.query_usage(&limited).await.unwrap().len(), 2);
}

pub(super) async fn pruning_drops_old_rows_and_ingest_ignores_them(db: TestDb) {
    let store = db.open().await;
    let rows = vec![(bucket("k", "zai", "glm", 0), counts(1, 1, 1)), (bucket("k", "zai", "glm", 5), counts(1, 1, 1))];
    store.ingest_usage(&[report("dp", 1, rows.clone())], long_ago(), time::now()).await.unwrap();
    let cutoff = time::from_millis(T0 + 2 * HOUR_MS);
    assert_eq!(store.prune_usage(cutoff).await.unwrap(), 1);
    let left = store.query_usage(&UsageQuery { time: TimeGrouping::Hour, ..everything() }).await.unwrap();
    assert_eq!(left.iter().map(|r| r.bucket_start_ms).collect::<Vec<_>>(), [T0 + 5 * HOUR_MS]);
    // A late report with a row older than the retention adds only the recent row.
    let outcome = store.ingest_usage(&[report("dp", 2, rows)], cutoff, time::now()).await.unwrap();
    assert_eq!(outcome.rows, 1);
    let totals = store.query_usage(&everything()).await.unwrap();
    assert_eq!(totals[0].counts.requests, 2);
    // Identities outlive rows by a day: pruning at "now" keeps those just received.
    store.prune_usage(time::now()).await.unwrap();
    let again = store.ingest_usage(&[report("dp", 2, vec![])], long_ago(), time::now()).await.unwrap();
    assert_eq!(again.duplicates, 1);
    store.prune_usage(time::now() + Duration::from_secs(2 * 24 * 3600)).await.unwrap();
    let after = store.ingest_usage(&[report("dp", 2, vec![])], long_ago(), time::now()).await.unwrap();
    assert_eq!(after.committed, 1, "identities older than retention plus a day are gone");
}
