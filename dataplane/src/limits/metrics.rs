//! The limiter's Prometheus series, read from its atomics at scrape time: refusals by reason,
//! and how many keys hold a lease now or hold only an expired one (the fallback applies).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::Limiters;
use super::refusal::RefusalReason;

#[derive(Debug)]
pub struct LimitCollector {
    pub limiters: Arc<Limiters>,
}

impl Collector for LimitCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let limiters = &self.limiters;
        let mut family = encoder.encode_descriptor(
            "aurora_dataplane_limit_refusals",
            "Requests refused by a gateway key's limits, by reason (no_lease: fail-closed without a lease)",
            None,
            MetricType::Counter,
        )?;
        for reason in RefusalReason::ALL {
            let count = limiters.refusals[reason as usize].load(Ordering::Relaxed);
            ConstCounter::new(count).encode(family.encode_family(&[("reason", reason.as_str())])?)?;
        }
        let (held, expired) = limiters.lease_counts(limiters.now_ms());
        let mut family = encoder.encode_descriptor(
            "aurora_dataplane_limit_leases",
            "Limited keys whose capacity lease from the control plane holds now (held) or has lapsed, so the fallback applies (expired)",
            None,
            MetricType::Gauge,
        )?;
        for (state, count) in [("held", held), ("expired", expired)] {
            let count = i64::try_from(count).unwrap_or(i64::MAX);
            ConstGauge::new(count).encode(family.encode_family(&[("state", state)])?)?;
        }
        let family = encoder.encode_descriptor(
            "aurora_dataplane_limit_lease_updates",
            "Lease messages received from the control plane",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(limiters.lease_updates.load(Ordering::Relaxed)).encode(family)?;
        Ok(())
    }
}
