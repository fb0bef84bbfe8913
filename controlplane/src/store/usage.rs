//! Usage storage: the reports data planes deliver, committed exactly once, and their totals.
//!
//! A report's identity (node id, process incarnation, sequence) goes into `usage_reports` in the
//! same transaction that adds its rows to `usage_totals`: when the identity is already there the
//! report was committed before (its ack was lost, it was re-sent to another replica, or replayed
//! from a data plane's spool) and its rows are skipped, so each report counts once. Totals are
//! kept per (key, provider, model, hour); a batch of reports is merged in memory first and
//! written with multi-row upserts in key order (the same lock order in every transaction, so
//! replicas writing at once on PostgreSQL never deadlock). Usage writes never touch `head`: they
//! allocate no configuration revision and reach no data plane.
//!
//! Retention: rows whose hour starts before the cutoff are pruned and never added; identities
//! are kept a day longer than rows. A report's rows are never newer than its receipt, so a
//! report whose identity has been pruned can only carry rows older than the cutoff, which
//! ingest drops: exactly-once holds across pruning too.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Row, Type};

use super::StoreError;
use super::sql::{Dialect, SqlStore};
use crate::time;

/// What a set of requests consumed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageCounts {
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_input_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub reasoning_tokens: u64,
    pub incomplete_requests: u64,
    pub unknown_requests: u64,
}

impl UsageCounts {
    pub fn add(&mut self, other: &UsageCounts) {
        self.requests = self.requests.saturating_add(other.requests);
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cache_read_input_tokens = self.cache_read_input_tokens.saturating_add(other.cache_read_input_tokens);
        self.cache_creation_input_tokens =
            self.cache_creation_input_tokens.saturating_add(other.cache_creation_input_tokens);
        self.reasoning_tokens = self.reasoning_tokens.saturating_add(other.reasoning_tokens);
        self.incomplete_requests = self.incomplete_requests.saturating_add(other.incomplete_requests);
        self.unknown_requests = self.unknown_requests.saturating_add(other.unknown_requests);
    }

    fn columns(&self) -> [i64; 8] {
        [
            self.requests,
            self.input_tokens,
            self.output_tokens,
            self.cache_read_input_tokens,
            self.cache_creation_input_tokens,
            self.reasoning_tokens,
            self.incomplete_requests,
            self.unknown_requests,
        ]
        .map(|n| i64::try_from(n).unwrap_or(i64::MAX))
    }
}

/// Where a row's requests belong. `key_id` is a key's UUID or a pseudo id; `model` may be empty.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UsageBucket {
    pub key_id: String,
    pub provider: String,
    pub model: String,
    /// The start of the hour, Unix milliseconds.
    pub hour_start_ms: i64,
}

/// One validated report from a data plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageReportRecord {
    pub node_id: String,
    pub incarnation: Vec<u8>,
    pub sequence: u64,
    pub rows: Vec<(UsageBucket, UsageCounts)>,
}

/// How query results are bucketed in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimeGrouping {
    /// One row over the whole range (its `bucket_start` is the earliest hour in it).
    #[default]
    None,
    Hour,
    Day,
}

/// A usage query: a range of hours, filters, and what to group by.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageQuery {
    /// Hours starting at or after this (Unix ms).
    pub since_ms: i64,
    /// Hours starting before this (Unix ms).
    pub until_ms: i64,
    pub key_id: Option<String>,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub by_key: bool,
    pub by_provider: bool,
    pub by_model: bool,
    pub time: TimeGrouping,
    /// At most this many rows are returned.
    pub limit: u32,
}

/// One result row; dimensions not grouped by are empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageTotal {
    pub key_id: String,
    pub provider: String,
    pub model: String,
    pub bucket_start_ms: i64,
    pub counts: UsageCounts,
}

/// What a batch of reports did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestOutcome {
    /// Reports committed now.
    pub committed: u64,
    /// Reports whose identity was already committed: their rows were skipped.
    pub duplicates: u64,
    /// Rows written (after merging).
    pub rows: u64,
}

/// The usage side of the store (a supertrait of [`super::Store`]).
#[async_trait]
pub trait UsageStore: Send + Sync {
    /// Commits `reports` in one transaction, each one at most once ever (see the module doc).
    /// Rows whose hour starts before `drop_before` are not added. Once this returns `Ok`, every
    /// report in the batch is durably counted and may be acknowledged.
    async fn ingest_usage(
        &self,
        reports: &[UsageReportRecord],
        drop_before: SystemTime,
        now: SystemTime,
    ) -> Result<IngestOutcome, StoreError>;

    /// Totals as `query` asks, ordered by bucket, key, provider and model.
    async fn query_usage(&self, query: &UsageQuery) -> Result<Vec<UsageTotal>, StoreError>;

    /// Deletes rows whose hour starts before `cutoff`, and report identities received more than
    /// a day before it. Returns how many rows went.
    async fn prune_usage(&self, cutoff: SystemTime) -> Result<u64, StoreError>;
}

/// How much longer report identities are kept than rows (see the module doc).
const IDENTITY_SLACK: Duration = Duration::from_secs(24 * 3600);
/// Rows per multi-row upsert: 12 parameters each, well under SQLite's 32 766.
const ROWS_PER_STATEMENT: usize = 500;
const ROW_COLUMNS: &str = "key_id, provider, model, bucket_start, requests, input_tokens, output_tokens, \
     cache_read_input_tokens, cache_creation_input_tokens, reasoning_tokens, incomplete_requests, unknown_requests";
const COUNT_COLUMNS: [&str; 8] = [
    "requests",
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "reasoning_tokens",
    "incomplete_requests",
    "unknown_requests",
];

#[async_trait]
impl<DB> UsageStore for SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    usize: ColumnIndex<DB::Row>,
    for<'s> &'s str: ColumnIndex<DB::Row>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Vec<u8>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB>,
    for<'q> Option<String>: Encode<'q, DB>,
    for<'q> Option<Vec<u8>>: Encode<'q, DB>,
{
    async fn ingest_usage(
        &self,
        reports: &[UsageReportRecord],
        drop_before: SystemTime,
        now: SystemTime,
    ) -> Result<IngestOutcome, StoreError> {
        self.track_write(
            async {
                let mut outcome = IngestOutcome::default();
                let cutoff = time::to_millis(drop_before);
                let mut tx = self.begin(DB::BEGIN_WRITE).await?;
                let mut merged: BTreeMap<&UsageBucket, UsageCounts> = BTreeMap::new();
                for report in reports {
                    let inserted = sqlx::query(
                        "INSERT INTO usage_reports (node_id, incarnation, sequence, received_at) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT (node_id, incarnation, sequence) DO NOTHING",
                    )
                    .bind(report.node_id.clone())
                    .bind(report.incarnation.clone())
                    .bind(i64::try_from(report.sequence).unwrap_or(i64::MAX))
                    .bind(time::to_millis(now))
                    .execute(&mut *tx)
                    .await?;
                    if DB::rows_affected(&inserted) == 0 {
                        outcome.duplicates += 1;
                        continue;
                    }
                    outcome.committed += 1;
                    for (bucket, counts) in report.rows.iter().filter(|(b, _)| b.hour_start_ms >= cutoff) {
                        merged.entry(bucket).or_default().add(counts);
                    }
                }
                let merged: Vec<_> = merged.into_iter().collect();
                for chunk in merged.chunks(ROWS_PER_STATEMENT) {
                    let mut query = sqlx::query(sqlx::AssertSqlSafe(upsert_statement(chunk.len())));
                    for (bucket, counts) in chunk {
                        query = query
                            .bind(bucket.key_id.clone())
                            .bind(bucket.provider.clone())
                            .bind(bucket.model.clone())
                            .bind(bucket.hour_start_ms);
                        for value in counts.columns() {
                            query = query.bind(value);
                        }
                    }
                    query.execute(&mut *tx).await?;
                }
                tx.commit().await?;
                outcome.rows = merged.len() as u64;
                Ok(outcome)
            }
            .await,
        )
    }

    async fn query_usage(&self, query: &UsageQuery) -> Result<Vec<UsageTotal>, StoreError> {
        let (sql, filters) = select_statement(query);
        let mut statement = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(query.since_ms).bind(query.until_ms);
        for value in filters {
            statement = statement.bind(value);
        }
        let mut conn = self.conn().await?;
        let rows = statement.bind(i64::from(query.limit)).fetch_all(&mut *conn).await?;
        rows.iter()
            .map(|row| {
                let count = |i: usize| -> Result<u64, StoreError> {
                    let value: i64 = row.try_get(4 + i)?;
                    u64::try_from(value).map_err(|_| StoreError::Corrupt("negative usage total".into()))
                };
                Ok(UsageTotal {
                    key_id: row.try_get(0)?,
                    provider: row.try_get(1)?,
                    model: row.try_get(2)?,
                    bucket_start_ms: row.try_get(3)?,
                    counts: UsageCounts {
                        requests: count(0)?,
                        input_tokens: count(1)?,
                        output_tokens: count(2)?,
                        cache_read_input_tokens: count(3)?,
                        cache_creation_input_tokens: count(4)?,
                        reasoning_tokens: count(5)?,
                        incomplete_requests: count(6)?,
                        unknown_requests: count(7)?,
                    },
                })
            })
            .collect()
    }

    async fn prune_usage(&self, cutoff: SystemTime) -> Result<u64, StoreError> {
        self.track_write(
            async {
                let rows_before = time::to_millis(cutoff);
                let identities_before = time::to_millis(cutoff.checked_sub(IDENTITY_SLACK).unwrap_or(cutoff));
                let mut tx = self.begin(DB::BEGIN_WRITE).await?;
                let deleted = sqlx::query("DELETE FROM usage_totals WHERE bucket_start < $1")
                    .bind(rows_before)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM usage_reports WHERE received_at < $1")
                    .bind(identities_before)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(DB::rows_affected(&deleted))
            }
            .await,
        )
    }
}

/// `INSERT ... VALUES (...), (...) ON CONFLICT ... DO UPDATE` adding to existing totals.
fn upsert_statement(rows: usize) -> String {
    let mut sql = format!("INSERT INTO usage_totals ({ROW_COLUMNS}) VALUES ");
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for column in 0..12 {
            if column > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${}", row * 12 + column + 1));
        }
        sql.push(')');
    }
    sql.push_str(" ON CONFLICT (key_id, provider, model, bucket_start) DO UPDATE SET ");
    let sets: Vec<String> = COUNT_COLUMNS.iter().map(|c| format!("{c} = usage_totals.{c} + excluded.{c}")).collect();
    sql.push_str(&sets.join(", "));
    sql
}

/// The grouped `SELECT` for `query` and the filter values to bind after `$1` (since) and `$2`
/// (until); the limit is bound last. Only fixed fragments go into the text; every value is a
/// parameter.
fn select_statement(query: &UsageQuery) -> (String, Vec<String>) {
    let dimension = |grouped: bool, column: &'static str| if grouped { column } else { "''" };
    let bucket = match query.time {
        TimeGrouping::None => "MIN(bucket_start)",
        TimeGrouping::Hour => "bucket_start",
        TimeGrouping::Day => "(bucket_start / 86400000) * 86400000",
    };
    let sums: Vec<String> = COUNT_COLUMNS.iter().map(|c| format!("CAST(SUM({c}) AS BIGINT)")).collect();
    let mut sql = format!(
        "SELECT {} AS key_id, {} AS provider, {} AS model, {bucket} AS bucket, {} FROM usage_totals \
         WHERE bucket_start >= $1 AND bucket_start < $2",
        dimension(query.by_key, "key_id"),
        dimension(query.by_provider, "provider"),
        dimension(query.by_model, "model"),
        sums.join(", "),
    );
    let mut filters = Vec::new();
    for (column, value) in [("key_id", &query.key_id), ("provider", &query.provider), ("model", &query.model)] {
        if let Some(value) = value {
            filters.push(value.clone());
            sql.push_str(&format!(" AND {column} = ${}", filters.len() + 2));
        }
    }
    let mut groups: Vec<&str> = Vec::new();
    if query.by_key {
        groups.push("key_id");
    }
    if query.by_provider {
        groups.push("provider");
    }
    if query.by_model {
        groups.push("model");
    }
    match query.time {
        TimeGrouping::None => {}
        TimeGrouping::Hour => groups.push("bucket_start"),
        TimeGrouping::Day => groups.push("(bucket_start / 86400000) * 86400000"),
    }
    if !groups.is_empty() {
        sql.push_str(" GROUP BY ");
        sql.push_str(&groups.join(", "));
    }
    // Without GROUP BY an empty range still yields one row of NULLs; none is wanted.
    sql.push_str(&format!(" HAVING COUNT(*) > 0 ORDER BY 4, 1, 2, 3 LIMIT ${}", filters.len() + 3));
    (sql, filters)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upsert_numbers_every_parameter_once() {
        let sql = upsert_statement(2);
        assert!(sql.contains("($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12), ($13,"));
        assert!(sql.contains("$24)"));
        assert!(!sql.contains("$25"));
    }

    #[test]
    fn select_binds_filters_in_order_and_the_limit_last() {
        let query = UsageQuery {
            key_id: Some("k".into()),
            model: Some("m".into()),
            by_model: true,
            time: TimeGrouping::Day,
            ..UsageQuery::default()
        };
        let (sql, filters) = select_statement(&query);
        assert_eq!(filters, ["k", "m"]);
        assert!(sql.contains("key_id = $3 AND model = $4"), "{sql}");
        assert!(sql.ends_with("LIMIT $5"), "{sql}");
        assert!(sql.contains("GROUP BY model, (bucket_start / 86400000) * 86400000"), "{sql}");
    }
}
