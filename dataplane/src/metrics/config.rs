//! How current this replica's configuration is: the applied revision, the age of the last
//! message from the control plane, and whether the config stream is connected.
//!
//! The subscription task updates two atomics; the values Prometheus sees are computed when it
//! scrapes, so "seconds since the last message" keeps growing while the stream is silent.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

use crate::state::ConfigState;

/// The subscription's handle for reporting stream state. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ConfigMetrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    origin: Instant,
    connected: AtomicBool,
    /// Milliseconds from `origin` to the last message received; 0 until the first.
    last_message_ms: AtomicU64,
}

impl ConfigMetrics {
    pub fn new() -> Self {
        ConfigMetrics {
            inner: Arc::new(Inner {
                origin: Instant::now(),
                connected: AtomicBool::new(false),
                last_message_ms: AtomicU64::new(0),
            }),
        }
    }

    /// The config stream opened (`true`) or ended (`false`).
    pub fn set_connected(&self, connected: bool) {
        self.inner.connected.store(connected, Ordering::Relaxed);
    }

    /// Any message arrived on the stream, heartbeats included.
    pub fn message_received(&self) {
        let ms = u64::try_from(self.inner.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.inner.last_message_ms.store(ms, Ordering::Relaxed);
    }

    fn seconds_since_last_message(&self) -> f64 {
        let last = self.inner.last_message_ms.load(Ordering::Relaxed);
        let now = u64::try_from(self.inner.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        now.saturating_sub(last) as f64 / 1000.0
    }
}

impl Default for ConfigMetrics {
    fn default() -> Self {
        ConfigMetrics::new()
    }
}

/// Encodes the config gauges at scrape time. The stream gauges exist only on a subscribed data
/// plane; one started from a file or the environment has no stream to report on.
#[derive(Debug)]
pub(super) struct ConfigCollector {
    pub(super) state: Arc<ConfigState>,
    pub(super) metrics: Option<ConfigMetrics>,
}

impl Collector for ConfigCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let revision = ConstGauge::new(i64::try_from(self.state.revision().unwrap_or(0)).unwrap_or(i64::MAX));
        revision.encode(encoder.encode_descriptor(
            "aurora_dataplane_config_revision",
            "The configuration revision this replica enforces (0: none applied yet).",
            None,
            revision.metric_type(),
        )?)?;
        let Some(metrics) = &self.metrics else { return Ok(()) };
        let age = ConstGauge::new(metrics.seconds_since_last_message());
        age.encode(encoder.encode_descriptor(
            "aurora_dataplane_config_last_message_age",
            "Seconds since the last message (heartbeats included) from the control plane, or since start if none.",
            Some(&Unit::Seconds),
            age.metric_type(),
        )?)?;
        let connected = ConstGauge::new(i64::from(metrics.inner.connected.load(Ordering::Relaxed)));
        connected.encode(encoder.encode_descriptor(
            "aurora_dataplane_control_plane_connected",
            "1 while the config stream to a control plane is open, else 0.",
            None,
            connected.metric_type(),
        )?)?;
        Ok(())
    }
}
