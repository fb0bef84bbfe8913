//! Usage reports arriving on the config stream: validated, committed in batches, acknowledged.
//!
//! A session hands each `UsageReport` to [`UsageIngest::submit`], which never waits: the report
//! joins a bounded queue that one task drains, committing whatever has gathered (from every
//! session) in one store transaction (`Store::ingest_usage`, which records each report's
//! identity in the same transaction, so a report sent twice counts once). Once that commit
//! returns, each report's `UsageAck` goes back on its own stream. A report is never
//! acknowledged before it is durable, so whatever goes wrong in between (a full queue, a store
//! that cannot write, a stream that closes first) leaves it unacknowledged: the data plane
//! keeps it and sends it again, to this control plane or another, and the identity makes the
//! repeat harmless. A report that fails validation (a newer data plane naming a provider this
//! control plane does not know, a broken one) is not acknowledged either: the data plane keeps
//! it, its backlog metric shows it, and it is delivered once the control plane understands it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aurora_core::{ANONYMOUS_USAGE_ID, MASTER_KEY_USAGE_ID, OTHER_MODEL, ProviderKind, UNREADABLE_MODEL};
use aurora_proto::PreEncoded;
use aurora_proto::v1::{SubscribeResponse, UsageAck, UsageReport, subscribe_response};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;
use tonic::Status;

use crate::store::{Store, UsageBucket, UsageCounts, UsageReportRecord};
use crate::time;

/// Reports waiting for the ingest task; past it a report is left unacknowledged (and re-sent).
const QUEUE: usize = 1024;
/// Most reports committed in one transaction.
const BATCH: usize = 64;
/// Most rows in one report; a data plane seals larger aggregates into several reports.
pub const MAX_REPORT_ROWS: usize = 10_000;
/// Hour buckets more than this far in the future are refused (a data plane's clock gone wrong).
const FUTURE_SLACK: Duration = Duration::from_secs(24 * 3600);
const HOUR_SECS: i64 = 3600;

/// The control plane's usage metrics (see docs/OPERATIONS.md).
#[derive(Debug, Clone, Default)]
pub struct UsageIngestMetrics {
    pub ingested: Counter,
    pub duplicates: Counter,
    pub rows: Counter,
    pub deferred: Counter,
    pub refused: Counter,
}

impl UsageIngestMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "aurora_controlplane_usage_reports_ingested",
            "Usage reports from data planes committed to the store",
            self.ingested.clone(),
        );
        registry.register(
            "aurora_controlplane_usage_reports_duplicate",
            "Usage reports received again after they were committed (lost ack, resend): acknowledged, not counted",
            self.duplicates.clone(),
        );
        registry.register(
            "aurora_controlplane_usage_rows_written",
            "Usage rows (key, provider, model, hour) added to the store",
            self.rows.clone(),
        );
        registry.register(
            "aurora_controlplane_usage_reports_deferred",
            "Usage reports left unacknowledged because the ingest queue was full or the store failed (the data plane re-sends them)",
            self.deferred.clone(),
        );
        registry.register(
            "aurora_controlplane_usage_reports_refused",
            "Usage reports refused as invalid and left unacknowledged (the data plane keeps them)",
            self.refused.clone(),
        );
    }
}

/// Where each session's stream gets its acks.
type Reply = mpsc::Sender<Result<PreEncoded, Status>>;

#[derive(Debug)]
struct Submission {
    report: UsageReportRecord,
    reply: Reply,
}

/// The ingest queue and its task.
#[derive(Debug)]
pub struct UsageIngest {
    queue: mpsc::Sender<Submission>,
    metrics: UsageIngestMetrics,
}

impl UsageIngest {
    /// Starts the ingest task. Rows whose hour is older than `retention` are not added (they
    /// would be pruned at once).
    pub fn start(store: Arc<dyn Store>, retention: Duration, metrics: UsageIngestMetrics) -> Arc<Self> {
        let (queue, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(run(store, retention, receiver, metrics.clone()));
        Arc::new(UsageIngest { queue, metrics })
    }

    /// Queues `report` from the replica `node_id` for commit; its ack goes to `reply`. Never
    /// waits. An invalid report is logged and counted, and stays unacknowledged.
    pub fn submit(&self, node_id: &str, report: UsageReport, reply: &Reply) {
        let sequence = report.sequence;
        let report = match validate(report, time::now()) {
            Ok(report) => report,
            Err(reason) => {
                self.metrics.refused.inc();
                tracing::warn!(node_id, sequence, reason, "refused a usage report; the data plane keeps it");
                return;
            }
        };
        if self.queue.try_send(Submission { report, reply: reply.clone() }).is_err() {
            self.metrics.deferred.inc();
            tracing::warn!(node_id, sequence, "usage ingest queue full; the data plane will send the report again");
        }
    }
}

async fn run(
    store: Arc<dyn Store>,
    retention: Duration,
    mut receiver: mpsc::Receiver<Submission>,
    metrics: UsageIngestMetrics,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while receiver.recv_many(&mut batch, BATCH).await > 0 {
        let reports: Vec<UsageReportRecord> = batch.iter().map(|s| s.report.clone()).collect();
        let now = time::now();
        let drop_before = now.checked_sub(retention).unwrap_or(SystemTime::UNIX_EPOCH);
        match store.ingest_usage(&reports, drop_before, now).await {
            Ok(outcome) => {
                metrics.ingested.inc_by(outcome.committed);
                metrics.duplicates.inc_by(outcome.duplicates);
                metrics.rows.inc_by(outcome.rows);
                for submission in batch.drain(..) {
                    acknowledge(submission);
                }
            }
            Err(err) => {
                metrics.deferred.inc_by(batch.len() as u64);
                tracing::warn!(error = %err, reports = batch.len(), "cannot commit usage reports; data planes will send them again");
                batch.clear();
            }
        }
    }
}

/// Sends the ack on the report's stream without holding up the next batch behind a slow
/// replica; a stream already gone just means the replica re-sends.
fn acknowledge(submission: Submission) {
    let ack = UsageAck { incarnation: submission.report.incarnation, sequence: submission.report.sequence };
    let message = SubscribeResponse { message: Some(subscribe_response::Message::UsageAck(ack)) };
    let bytes = PreEncoded::encode(&message);
    match submission.reply.try_send(Ok(bytes)) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(message)) => {
            let reply = submission.reply;
            tokio::spawn(async move {
                let _ = reply.send(message).await;
            });
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {}
    }
}

/// Checks a report and turns it into the store's record. The reason names what is wrong.
///
/// The report's `node_id` may differ from the stream's: a report spooled before a restart keeps
/// the identity it was sealed with, even if the replica's name changed since. A replica cannot
/// suppress another's reports by sending one with its identity, since it cannot know the other
/// process's random incarnation.
fn validate(report: UsageReport, now: SystemTime) -> Result<UsageReportRecord, &'static str> {
    if report.node_id.is_empty()
        || report.node_id.len() > super::limits::MAX_NODE_ID_BYTES
        || aurora_core::text::first_unsafe_char(&report.node_id).is_some()
    {
        return Err("node_id is empty, too long or not printable");
    }
    if report.incarnation.len() != 16 {
        return Err("incarnation must be 16 bytes");
    }
    if report.sequence == 0 {
        return Err("sequence must start at 1");
    }
    if report.rows.len() > MAX_REPORT_ROWS {
        return Err("too many rows");
    }
    let latest = time::to_unix_secs(now + FUTURE_SLACK);
    let mut rows = Vec::with_capacity(report.rows.len());
    for row in report.rows {
        let provider: ProviderKind = row.provider.parse().map_err(|_| "unknown provider")?;
        if !valid_key_id(&row.key_id) {
            return Err("key_id is neither a UUID nor a pseudo id");
        }
        if !valid_model(&row.model) {
            return Err("model is too long or not printable");
        }
        if row.bucket_start < 0 || row.bucket_start % HOUR_SECS != 0 || row.bucket_start > latest {
            return Err("bucket_start is not the start of an hour up to a day ahead");
        }
        let counts = UsageCounts {
            requests: row.requests,
            input_tokens: row.input_tokens,
            output_tokens: row.output_tokens,
            cache_read_input_tokens: row.cache_read_input_tokens,
            cache_creation_input_tokens: row.cache_creation_input_tokens,
            reasoning_tokens: row.reasoning_tokens,
            incomplete_requests: row.incomplete_requests,
            unknown_requests: row.unknown_requests,
        };
        let bucket = UsageBucket {
            key_id: row.key_id,
            provider: provider.as_str().to_owned(),
            model: row.model,
            hour_start_ms: row.bucket_start * 1000,
        };
        rows.push((bucket, counts));
    }
    Ok(UsageReportRecord { node_id: report.node_id, incarnation: report.incarnation, sequence: report.sequence, rows })
}

/// A canonical UUID (as the data plane formats key ids) or a pseudo id.
fn valid_key_id(key_id: &str) -> bool {
    key_id == MASTER_KEY_USAGE_ID
        || key_id == ANONYMOUS_USAGE_ID
        || uuid::Uuid::parse_str(key_id).is_ok_and(|id| id.to_string() == key_id)
}

/// What the data plane's `aurora_core::usage_model` can produce.
fn valid_model(model: &str) -> bool {
    aurora_core::usage_model(Some(model)) == model || model == UNREADABLE_MODEL || model == OTHER_MODEL
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use aurora_proto::v1::UsageRow;

    use super::*;

    fn report() -> UsageReport {
        UsageReport {
            node_id: "dp-1".into(),
            incarnation: vec![1; 16],
            sequence: 1,
            rows: vec![UsageRow {
                key_id: "0190a8e2-3c4d-7e5f-8a9b-0c1d2e3f4a5b".into(),
                provider: "anthropic".into(),
                model: "claude-sonnet-4-5".into(),
                bucket_start: 1_767_225_600,
                requests: 3,
                input_tokens: 30,
                ..UsageRow::default()
            }],
        }
    }

    #[test]
    fn a_valid_report_becomes_a_record() {
        let record = validate(report(), time::now()).unwrap();
        assert_eq!(record.rows[0].0.hour_start_ms, 1_767_225_600_000);
        assert_eq!(record.rows[0].1.input_tokens, 30);
    }

    #[test]
    fn invalid_reports_name_the_reason() {
        let now = time::now();
        let refuse = |edit: fn(&mut UsageReport)| {
            let mut report = report();
            edit(&mut report);
            validate(report, now).unwrap_err()
        };
        assert!(refuse(|r| r.node_id = "dp\n2".into()).starts_with("node_id"));
        assert_eq!(refuse(|r| r.incarnation.pop().map(drop).unwrap_or(())), "incarnation must be 16 bytes");
        assert_eq!(refuse(|r| r.sequence = 0), "sequence must start at 1");
        assert_eq!(refuse(|r| r.rows[0].provider = "bedrock".into()), "unknown provider");
        assert!(refuse(|r| r.rows[0].key_id = "0190A8E2-3C4D-7E5F-8A9B-0C1D2E3F4A5B".into()).starts_with("key_id"));
        assert!(refuse(|r| r.rows[0].model = "a\u{1b}[2J".into()).starts_with("model"));
        assert!(refuse(|r| r.rows[0].bucket_start += 1).starts_with("bucket_start"));
        assert!(refuse(|r| r.rows[0].bucket_start = 40_000_000_000 / 3600 * 3600).starts_with("bucket_start"));
    }

    #[tokio::test]
    async fn reports_are_acknowledged_once_committed_and_counted_once() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("cp.db").display());
        let store: Arc<dyn Store> =
            Arc::new(crate::store::SqliteStore::open(&url, crate::store::test_db::test_keyring()).await.unwrap());
        let metrics = UsageIngestMetrics::default();
        let ingest = UsageIngest::start(store.clone(), Duration::from_secs(365 * 24 * 3600), metrics.clone());
        let (reply, mut acks) = mpsc::channel(16);
        let mut recent = report();
        recent.rows[0].bucket_start = time::to_unix_secs(time::now()) / 3600 * 3600;
        for _ in 0..2 {
            ingest.submit("dp-1", recent.clone(), &reply);
            let ack = tokio::time::timeout(Duration::from_secs(10), acks.recv()).await.unwrap().unwrap().unwrap();
            let decoded = <SubscribeResponse as prost::Message>::decode(ack.0).unwrap();
            let Some(subscribe_response::Message::UsageAck(ack)) = decoded.message else { panic!("{decoded:?}") };
            assert_eq!((ack.incarnation, ack.sequence), (vec![1; 16], 1));
        }
        assert_eq!((metrics.ingested.get(), metrics.duplicates.get(), metrics.rows.get()), (1, 1, 1));
        let query = crate::store::UsageQuery { until_ms: i64::MAX, by_key: true, limit: 10, ..Default::default() };
        assert_eq!(store.query_usage(&query).await.unwrap()[0].counts.requests, 3);
        // Refused: counted, never acknowledged.
        recent.rows[0].provider = "bedrock".into();
        ingest.submit("dp-1", recent, &reply);
        assert_eq!(metrics.refused.get(), 1);
        assert!(acks.try_recv().is_err());
    }
}
