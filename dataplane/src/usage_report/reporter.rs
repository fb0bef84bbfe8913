//! Sealing the aggregate into reports and delivering them until acknowledged.
//!
//! Every `AURORA_USAGE_REPORT_INTERVAL` the reporter seals the aggregate into reports with an
//! identity (node id, this process's random incarnation, sequence), spools each one (fsync'd)
//! before it is ever sent, and keeps it pending. Each config-stream session runs a sender that
//! sends every pending report (all of them after a reconnect, to whichever control plane) and
//! sends again one left unacknowledged for [`RESEND_AFTER`]. A report is dropped, from memory
//! and spool, only on its `UsageAck`. At most `AURORA_USAGE_MAX_PENDING` reports are pending:
//! past that, sealing pauses and the aggregate keeps accumulating in memory (bounded by its
//! cardinality cap), so nothing is lost and nothing grows per interval.
//!
//! None of this runs on the request path: requests only touch the aggregate.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use aurora_proto::v1::{SubscribeRequest, UsageAck, UsageReport, subscribe_request};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{Notify, mpsc};

use super::aggregate::Aggregator;
use super::spool::Spool;

/// How long a sent report waits for its ack before it is sent again on the same stream.
pub const RESEND_AFTER: Duration = Duration::from_secs(30);
/// Rows per report: keeps every report far below the config stream's message limit.
pub const MAX_ROWS_PER_REPORT: usize = 2000;

/// The data plane's usage-delivery metrics (see docs/OPERATIONS.md).
#[derive(Debug, Clone, Default)]
pub struct UsageReportMetrics {
    pub pending: Gauge,
    pub sealed: Counter,
    pub acknowledged: Counter,
    pub spool_failures: Counter,
}

/// A report and where it was last sent.
#[derive(Debug)]
struct Entry {
    report: Arc<UsageReport>,
    /// The session it was last sent on, and when.
    sent: Option<(u64, Instant)>,
}

type Identity = (Vec<u8>, u64);

#[derive(Debug, Default)]
struct State {
    pending: BTreeMap<Identity, Entry>,
    next_sequence: u64,
    sessions: u64,
}

/// Seals, spools and delivers usage reports.
#[derive(Debug)]
pub struct UsageReporter {
    node_id: String,
    incarnation: [u8; 16],
    aggregator: Arc<Aggregator>,
    state: Mutex<State>,
    changed: Notify,
    spool: Option<Spool>,
    max_pending: usize,
    metrics: UsageReportMetrics,
}

impl UsageReporter {
    /// A reporter for `node_id` over `aggregator`, with the reports left in `spool` pending
    /// again under their original identity. A fresh random incarnation numbers new reports.
    pub fn new(
        node_id: String,
        aggregator: Arc<Aggregator>,
        spool: Option<Spool>,
        max_pending: usize,
        metrics: UsageReportMetrics,
    ) -> Self {
        let mut state = State { next_sequence: 1, ..State::default() };
        if let Some(spool) = &spool {
            match spool.load() {
                Ok(reports) => {
                    if !reports.is_empty() {
                        tracing::info!(reports = reports.len(), spool = %spool.dir().display(), "usage reports from an earlier run will be delivered");
                    }
                    for report in reports {
                        let identity = (report.incarnation.clone(), report.sequence);
                        state.pending.insert(identity, Entry { report: Arc::new(report), sent: None });
                    }
                }
                Err(err) => tracing::error!(error = %err, "cannot read the usage spool; its reports stay on disk"),
            }
        }
        metrics.pending.set(gauge(state.pending.len()));
        UsageReporter {
            node_id,
            incarnation: rand::random(),
            aggregator,
            state: Mutex::new(state),
            changed: Notify::new(),
            spool,
            max_pending: max_pending.max(1),
            metrics,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reports not yet acknowledged.
    pub fn pending(&self) -> usize {
        self.state().pending.len()
    }

    /// Seals every `interval` until the task is dropped.
    pub async fn run(self: Arc<Self>, interval: Duration) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            self.seal().await;
        }
    }

    /// Seals what the aggregate holds into reports, spools and queues them. Does nothing while
    /// the pending reports are at their bound (the aggregate keeps counting).
    pub async fn seal(&self) {
        if self.pending() >= self.max_pending {
            tracing::warn!(
                pending = self.max_pending,
                "usage reports pending at AURORA_USAGE_MAX_PENDING; aggregating in memory until the control plane acknowledges some"
            );
            return;
        }
        let rows = self.aggregator.seal();
        if rows.is_empty() {
            return;
        }
        let mut reports = Vec::new();
        {
            let mut state = self.state();
            for chunk in rows.chunks(MAX_ROWS_PER_REPORT) {
                let sequence = state.next_sequence;
                state.next_sequence += 1;
                reports.push(UsageReport {
                    node_id: self.node_id.clone(),
                    incarnation: self.incarnation.to_vec(),
                    sequence,
                    rows: chunk.to_vec(),
                });
            }
        }
        for report in reports {
            let report = Arc::new(report);
            if let Some(spool) = &self.spool {
                let (spool, spooled) = (spool.clone(), report.clone());
                match tokio::task::spawn_blocking(move || spool.write(&spooled)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(err)) => {
                        self.metrics.spool_failures.inc();
                        tracing::error!(error = %err, sequence = report.sequence, "cannot spool a usage report; it is kept in memory only");
                    }
                    Err(join) => tracing::error!(error = %join, "usage spool task failed"),
                }
            }
            let mut state = self.state();
            let identity = (report.incarnation.clone(), report.sequence);
            state.pending.insert(identity, Entry { report, sent: None });
            self.metrics.pending.set(gauge(state.pending.len()));
            self.metrics.sealed.inc();
        }
        self.changed.notify_waiters();
    }

    /// The control plane committed this report: forget it.
    pub fn acknowledged(&self, ack: &UsageAck) {
        let removed = {
            let mut state = self.state();
            let removed = state.pending.remove(&(ack.incarnation.clone(), ack.sequence)).is_some();
            self.metrics.pending.set(gauge(state.pending.len()));
            removed
        };
        if !removed {
            // A second ack for a report sent twice.
            return;
        }
        self.metrics.acknowledged.inc();
        self.changed.notify_waiters();
        if let Some(spool) = &self.spool {
            let spool = spool.clone();
            let (incarnation, sequence) = (ack.incarnation.clone(), ack.sequence);
            // Removing a file never blocks a runtime thread; a failure only means the report
            // is offered again after a restart, where its identity makes it count once.
            tokio::task::spawn_blocking(move || {
                if let Err(err) = spool.remove(&incarnation, sequence) {
                    tracing::warn!(error = %err, "cannot remove an acknowledged usage report from the spool");
                }
            });
        }
    }

    /// Sends pending reports on one session's stream until the stream is gone (or the returned
    /// task is aborted when the session ends).
    pub fn attach(self: &Arc<Self>, outbound: mpsc::Sender<SubscribeRequest>) -> tokio::task::JoinHandle<()> {
        let reporter = Arc::clone(self);
        tokio::spawn(async move { reporter.send_loop(outbound).await })
    }

    async fn send_loop(&self, outbound: mpsc::Sender<SubscribeRequest>) {
        let session = {
            let mut state = self.state();
            state.sessions += 1;
            state.sessions
        };
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let due: Vec<Arc<UsageReport>> = {
                let mut state = self.state();
                let now = Instant::now();
                state
                    .pending
                    .values_mut()
                    .filter(|entry| match entry.sent {
                        Some((sent_on, at)) => sent_on != session || now.duration_since(at) >= RESEND_AFTER,
                        None => true,
                    })
                    .map(|entry| {
                        entry.sent = Some((session, now));
                        entry.report.clone()
                    })
                    .collect()
            };
            for report in due {
                let message = subscribe_request::Message::UsageReport((*report).clone());
                if outbound.send(SubscribeRequest { message: Some(message) }).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                () = &mut changed => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// At shutdown, once requests have drained: seals the rest and waits up to `deadline` for
    /// every pending report to be acknowledged. What is left is in the spool (when there is
    /// one) and is delivered after the restart.
    pub async fn flush(&self, deadline: Duration) {
        self.seal().await;
        let waited = tokio::time::timeout(deadline, async {
            loop {
                let changed = self.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if self.pending() == 0 {
                    return;
                }
                changed.await;
            }
        })
        .await;
        let pending = self.pending();
        match (waited, &self.spool) {
            (Ok(()), _) => tracing::info!("usage reports delivered"),
            (Err(_), Some(spool)) => {
                tracing::warn!(pending, spool = %spool.dir().display(), "usage reports not acknowledged before shutdown; spooled, delivered after the restart")
            }
            (Err(_), None) => {
                tracing::error!(
                    pending,
                    "usage reports not acknowledged before shutdown and no spool directory: they are lost (set AURORA_USAGE_SPOOL_DIR or AURORA_CONFIG_CACHE)"
                )
            }
        }
    }
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use aurora_core::ProviderKind;

    use super::*;
    use crate::auth::Principal;
    use crate::usage::{TokenCounts, Usage, UsageOutcome, UsageSink};

    fn record(aggregator: &Aggregator, input: u64) {
        let usage = Usage {
            model: Some("m".into()),
            tokens: TokenCounts { input, ..TokenCounts::default() },
            outcome: UsageOutcome::Complete,
        };
        aggregator.record(Principal::MasterKey, ProviderKind::Anthropic, &usage);
    }

    async fn next_report(receiver: &mut mpsc::Receiver<SubscribeRequest>) -> UsageReport {
        match tokio::time::timeout(Duration::from_secs(5), receiver.recv()).await.unwrap().unwrap().message {
            Some(subscribe_request::Message::UsageReport(report)) => report,
            other => panic!("{other:?}"),
        }
    }

    fn reporter(spool: Option<Spool>, max_pending: usize) -> (Arc<UsageReporter>, Arc<Aggregator>) {
        let aggregator = Arc::new(Aggregator::new(Arc::new(|| 3600)));
        let reporter = UsageReporter::new("dp-1".into(), aggregator.clone(), spool, max_pending, Default::default());
        (Arc::new(reporter), aggregator)
    }

    #[tokio::test]
    async fn a_report_is_sent_again_on_every_new_session_until_acknowledged() {
        let (reporter, aggregator) = reporter(None, 10);
        record(&aggregator, 7);
        reporter.seal().await;
        let (outbound, mut receiver) = mpsc::channel(8);
        let first_session = reporter.attach(outbound);
        let sent = next_report(&mut receiver).await;
        assert_eq!((sent.node_id.as_str(), sent.sequence, sent.rows[0].input_tokens), ("dp-1", 1, 7));
        // The stream broke before the ack: the next session (another control plane) gets it again.
        first_session.abort();
        let (outbound, mut receiver) = mpsc::channel(8);
        let _second = reporter.attach(outbound);
        let again = next_report(&mut receiver).await;
        assert_eq!(again, sent, "same identity, same rows");
        reporter.acknowledged(&UsageAck { incarnation: sent.incarnation.clone(), sequence: 1 });
        assert_eq!(reporter.pending(), 0);
        record(&aggregator, 1);
        reporter.seal().await;
        assert_eq!(next_report(&mut receiver).await.sequence, 2);
    }

    #[tokio::test]
    async fn pending_is_bounded_and_nothing_is_lost_meanwhile() {
        let (reporter, aggregator) = reporter(None, 2);
        for input in [1, 2, 3, 4] {
            record(&aggregator, input);
            reporter.seal().await;
        }
        assert_eq!(reporter.pending(), 2, "sealing pauses at the bound");
        let (outbound, mut receiver) = mpsc::channel(8);
        let _session = reporter.attach(outbound);
        for _ in 0..2 {
            let report = next_report(&mut receiver).await;
            reporter.acknowledged(&UsageAck { incarnation: report.incarnation, sequence: report.sequence });
        }
        reporter.seal().await;
        let rest = next_report(&mut receiver).await;
        assert_eq!(rest.rows[0].input_tokens, 3 + 4, "what waited in the aggregate comes in the next report");
        assert_eq!(rest.rows[0].requests, 2);
    }

    #[tokio::test]
    async fn spooled_reports_come_back_after_a_restart_with_their_identity() {
        let dir = tempfile::tempdir().unwrap();
        let (first, aggregator) = reporter(Some(Spool::open(dir.path()).unwrap()), 10);
        record(&aggregator, 42);
        first.flush(Duration::from_millis(50)).await;
        let (outbound, mut receiver) = mpsc::channel(8);
        let _session = first.attach(outbound);
        let original = next_report(&mut receiver).await;
        drop(first);

        let (second, _) = reporter(Some(Spool::open(dir.path()).unwrap()), 10);
        assert_eq!(second.pending(), 1);
        let (outbound, mut receiver) = mpsc::channel(8);
        let _session = second.attach(outbound);
        let replayed = next_report(&mut receiver).await;
        assert_eq!(replayed, original);
        second.acknowledged(&UsageAck { incarnation: replayed.incarnation.clone(), sequence: replayed.sequence });
        // The file goes on the blocking pool; wait for it.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Spool::open(dir.path()).unwrap().load().unwrap().len() == 1 {
            assert!(Instant::now() < deadline, "spool file not removed after the ack");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (third, _) = reporter(Some(Spool::open(dir.path()).unwrap()), 10);
        assert_eq!(third.pending(), 0);
    }
}
