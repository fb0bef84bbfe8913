//! The control plane's Prometheus metrics, served with `/healthz` on their own plaintext HTTP
//! listener (`AURORA_METRICS_LISTEN_ADDR`), apart from the gRPC port so they stay scrapeable
//! and probeable when gRPC requires TLS or client certificates.
//!
//! Fleet state (connected replicas, their lag, the head revision, the change-log length) is
//! read when Prometheus scrapes; [`admin_calls`] counts admin RPCs as they finish; and
//! [`convergence`] times each revision from commit to acknowledgement by every replica. Every
//! metric is listed with its meaning in docs/OPERATIONS.md.

pub mod admin_calls;
pub mod convergence;
pub mod server;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};
use tokio::sync::watch;

use self::admin_calls::AdminCallFamily;
pub use self::admin_calls::AdminCalls;
pub use self::convergence::Convergence;
use crate::config_stream::ChangeFeed;
use crate::fleet::Fleet;
use crate::grpc_limits::ConnectionMetrics;
use crate::store::{Revision, WriteStatus};

/// The content type of the OpenMetrics text format, which Prometheus negotiates and parses.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub admin_calls: AdminCallFamily,
    pub convergence: Arc<Convergence>,
    /// The oldest revision still in the store's change log, refreshed by each compaction.
    pub oldest_retained: Arc<AtomicU64>,
    /// Whether the store can write: `/healthz` and `/readyz` answer from it.
    pub write_status: watch::Receiver<WriteStatus>,
    /// Connections to the gRPC port: open now, and refused at the limit.
    pub connections: ConnectionMetrics,
    /// Usage reports ingested from the config stream.
    pub usage: crate::config_stream::UsageIngestMetrics,
}

impl Metrics {
    pub fn new(feed: Arc<ChangeFeed>, fleet: Arc<Fleet>, write_status: watch::Receiver<WriteStatus>) -> Self {
        let admin_calls = AdminCallFamily::default();
        let convergence = Arc::new(Convergence::new());
        let oldest_retained = Arc::new(AtomicU64::new(0));
        // `Registry::register` appends the full stop to help texts itself.
        let mut registry = Registry::default();
        registry.register(
            "aurora_controlplane_admin_calls",
            "Admin API calls, by RPC method and gRPC status code",
            admin_calls.clone(),
        );
        registry.register_with_unit(
            "aurora_controlplane_revision_applied_latency",
            "From a revision's commit to its acknowledgement by every connected data plane",
            Unit::Seconds,
            convergence.histogram.clone(),
        );
        let connections = ConnectionMetrics::default();
        registry.register(
            "aurora_controlplane_grpc_connections",
            "Connections open on the gRPC port",
            connections.open.clone(),
        );
        registry.register(
            "aurora_controlplane_grpc_connections_refused",
            "Connections to the gRPC port closed at once because AURORA_GRPC_MAX_CONNECTIONS were open",
            connections.refused.clone(),
        );
        let usage = crate::config_stream::UsageIngestMetrics::default();
        usage.register(&mut registry);
        registry.register_collector(Box::new(FleetCollector {
            feed,
            fleet,
            convergence: convergence.clone(),
            oldest_retained: oldest_retained.clone(),
            write_status: write_status.clone(),
        }));
        Metrics { registry, admin_calls, convergence, oldest_retained, write_status, connections, usage }
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::with_capacity(8 * 1024);
        // Writing to a String cannot fail; an encoder error would be a bug in a collector.
        if let Err(err) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!(error = %err, "cannot encode the metrics");
        }
        text
    }
}

/// The gauges computed at scrape time from the fleet and the change feed.
#[derive(Debug)]
struct FleetCollector {
    feed: Arc<ChangeFeed>,
    fleet: Arc<Fleet>,
    convergence: Arc<Convergence>,
    oldest_retained: Arc<AtomicU64>,
    write_status: watch::Receiver<WriteStatus>,
}

impl Collector for FleetCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let head = self.feed.head();
        let acked = self.fleet.acked_revisions();
        let lag = |revision: &Revision| head.saturating_sub(*revision);
        let oldest = self.oldest_retained.load(Ordering::Relaxed);
        let change_log = if oldest == 0 { 0 } else { (head + 1).saturating_sub(oldest) };
        let writable = i64::from(self.write_status.borrow().is_writable());
        let gauges: [(&str, &str, Option<Unit>, i64); 6] = [
            (
                "aurora_controlplane_dataplanes_connected",
                "Data-plane replicas with an open config stream to this control plane.",
                None,
                to_i64(acked.len() as u64),
            ),
            (
                "aurora_controlplane_head_revision",
                "The newest committed revision, as the config stream serves it.",
                None,
                to_i64(head),
            ),
            (
                "aurora_controlplane_replica_max_lag_revisions",
                "Revisions the furthest-behind connected replica has yet to acknowledge (0: all current).",
                None,
                to_i64(acked.iter().map(lag).max().unwrap_or(0)),
            ),
            (
                "aurora_controlplane_replicas_lagging",
                "Connected replicas that have not acknowledged the head revision.",
                None,
                to_i64(acked.iter().filter(|revision| lag(revision) > 0).count() as u64),
            ),
            (
                "aurora_controlplane_change_log_revisions",
                "Revisions kept in the store's change log (replicas further behind get a snapshot).",
                None,
                to_i64(change_log),
            ),
            (
                "aurora_controlplane_store_writable",
                "1 while the store's latest write or probe succeeded, 0 while it cannot write (full disk, I/O error).",
                None,
                writable,
            ),
        ];
        for (name, help, unit, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, unit.as_ref(), gauge.metric_type())?)?;
        }
        let lag_seconds = ConstGauge::new(self.convergence.lag_seconds());
        lag_seconds.encode(encoder.encode_descriptor(
            "aurora_controlplane_replica_max_lag",
            "Seconds since the oldest revision not yet acknowledged by every connected replica was committed (0: all current).",
            Some(&Unit::Seconds),
            lag_seconds.metric_type(),
        )?)?;
        Ok(())
    }
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::*;
    use crate::store::{SettingsPatch, SqliteStore, Store};

    #[tokio::test]
    async fn a_scrape_shows_the_fleet_its_lag_and_admin_calls() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("cp.db").display());
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&url, crate::store::test_db::test_keyring()).await.unwrap());
        for enabled in [false, true] {
            let patch = SettingsPatch { passthrough_enabled: Some(enabled), ..SettingsPatch::default() };
            store.update_settings(patch, &crate::store::Actor::for_tests()).await.unwrap();
        }
        let feed = ChangeFeed::start(store.clone(), 100, Duration::from_secs(1)).await.unwrap();
        let fleet = Fleet::new();
        let metrics = Metrics::new(feed.clone(), fleet.clone(), store.write_status());
        metrics.oldest_retained.store(1, Ordering::Relaxed);

        let current = fleet.register("a".into(), None, "1".into());
        current.ack(feed.head());
        let behind = fleet.register("b".into(), None, "1".into());
        behind.ack(feed.head() - 1);
        metrics.admin_calls.get_or_create(&[("method", "CreateKey"), ("code", "OK")]).inc();

        let text = metrics.encode();
        for expected in [
            "aurora_controlplane_dataplanes_connected 2\n",
            "aurora_controlplane_head_revision 2\n",
            "aurora_controlplane_replica_max_lag_revisions 1\n",
            "aurora_controlplane_replicas_lagging 1\n",
            "aurora_controlplane_change_log_revisions 2\n",
            "aurora_controlplane_store_writable 1\n",
            "aurora_controlplane_admin_calls_total{method=\"CreateKey\",code=\"OK\"} 1\n",
            "# TYPE aurora_controlplane_revision_applied_latency_seconds histogram\n",
            "# TYPE aurora_controlplane_replica_max_lag_seconds gauge\n",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
    }

    /// Every metric a scrape shows is documented, so operators can read what it means.
    #[tokio::test]
    async fn every_metric_is_documented_in_operations_md() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("cp.db").display());
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&url, crate::store::test_db::test_keyring()).await.unwrap());
        let feed = ChangeFeed::start(store.clone(), 100, Duration::from_secs(1)).await.unwrap();
        let text = Metrics::new(feed, Fleet::new(), store.write_status()).encode();
        let docs = include_str!("../../docs/OPERATIONS.md");
        for line in text.lines().filter_map(|line| line.strip_prefix("# TYPE ")) {
            let (name, kind) = line.split_once(' ').unwrap();
            let documented = if kind == "counter" { format!("`{name}_total`") } else { format!("`{name}`") };
            assert!(docs.contains(&documented), "{documented} is missing from docs/OPERATIONS.md");
        }
    }
}
