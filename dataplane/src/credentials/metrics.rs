//! Per-credential Prometheus series, computed at scrape time from the current snapshot.
//!
//! The counters live in each credential's [`CredentialHealth`](super::CredentialHealth)
//! atomics, which the request path bumps; this collector only reads them when Prometheus
//! scrapes, so a series exists exactly while its credential is in the snapshot and recording
//! takes no lock. The `credential` label is the operator-given name: a small, closed set.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::unix_ms;
use crate::state::ConfigState;

#[derive(Debug)]
pub struct CredentialCollector {
    pub state: Arc<ConfigState>,
}

type Read = fn(&super::CredentialHealth, i64) -> u64;

const COUNTERS: [(&str, &str, Read); 3] = [
    ("aurora_dataplane_credential_requests", "Requests sent upstream with this credential", |h, _| {
        h.requests.load(Ordering::Relaxed)
    }),
    ("aurora_dataplane_credential_throttled", "Upstream 429 responses to requests with this credential", |h, _| {
        h.throttled.load(Ordering::Relaxed)
    }),
    (
        "aurora_dataplane_credential_auth_failures",
        "Upstream 401 and 403 responses to requests with this credential",
        |h, _| h.auth_failures.load(Ordering::Relaxed),
    ),
];

const GAUGES: [(&str, &str, Read); 2] = [
    (
        "aurora_dataplane_credential_cooling_down",
        "1 while this credential is skipped after a 429 (here or on another replica), else 0",
        |h, now_ms| u64::from(h.cooling_down(now_ms)),
    ),
    (
        "aurora_dataplane_credential_failing",
        "1 if the last upstream answer for this credential was 401 or 403",
        |h, _| u64::from(h.is_failing()),
    ),
];

impl Collector for CredentialCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(snapshot) = self.state.load_full() else { return Ok(()) };
        let now_ms = unix_ms(SystemTime::now());
        let series: Vec<_> =
            snapshot.providers().flat_map(|u| u.credentials().iter().map(move |c| (u.kind.as_str(), c))).collect();
        if series.is_empty() {
            return Ok(());
        }
        for (name, help, read) in COUNTERS {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (provider, credential) in &series {
                let labels = [("provider", *provider), ("credential", &*credential.name)];
                ConstCounter::new(read(&credential.health, now_ms)).encode(family.encode_family(&labels)?)?;
            }
        }
        for (name, help, read) in GAUGES {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (provider, credential) in &series {
                let labels = [("provider", *provider), ("credential", &*credential.name)];
                let value = i64::try_from(read(&credential.health, now_ms)).unwrap_or(0);
                ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
