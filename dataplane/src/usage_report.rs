//! Usage reporting: from each metered request to a report the control plane has committed.
//!
//! Metering (in `metering`) hands every request's [`Usage`](crate::usage::Usage) to the
//! [`aggregate::Aggregator`], a sharded in-memory aggregate per key, provider, model and hour
//! that never makes a request wait. The [`reporter::UsageReporter`] seals it every few seconds
//! into reports with an identity (node id, process incarnation, sequence), writes each to the
//! [`spool`] before sending it, and sends it on the config stream until the control plane
//! acknowledges it; the control plane commits the report and its identity in one transaction,
//! so a report sent twice counts once.
//!
//! Delivery guarantee: every request counts exactly once, across lost acks, reconnects to any
//! control plane, control-plane outages and graceful restarts (SIGTERM flushes and spools). A
//! SIGKILL loses what was recorded since the last seal: at most one report interval.

pub mod aggregate;
pub mod reporter;
pub mod spool;

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

pub use aggregate::Aggregator;
pub use reporter::{UsageReportMetrics, UsageReporter};
pub use spool::Spool;

/// How long graceful shutdown waits for the last reports' acks before leaving them spooled.
pub const FLUSH_DEADLINE: Duration = Duration::from_secs(5);

/// Usage reporting settings (a data plane subscribed to a control plane).
#[derive(Args, Debug, Clone)]
pub struct UsageReportConfig {
    /// How often the aggregated usage is sealed into a report and sent; also the most a SIGKILL
    /// can lose.
    #[arg(long = "usage-report-interval", env = "AURORA_USAGE_REPORT_INTERVAL", default_value = "5s", value_parser = aurora_core::parse_positive_duration)]
    pub interval: Duration,

    /// Where reports wait, fsync'd, until acknowledged, so a restart delivers them [default:
    /// the directory of AURORA_CONFIG_CACHE, when that is set; otherwise memory only].
    #[arg(long = "usage-spool-dir", env = "AURORA_USAGE_SPOOL_DIR")]
    pub spool_dir: Option<PathBuf>,

    /// Most reports waiting for acknowledgement; past it usage keeps aggregating in memory.
    #[arg(long = "usage-max-pending", env = "AURORA_USAGE_MAX_PENDING", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_pending: u32,
}

impl Default for UsageReportConfig {
    fn default() -> Self {
        UsageReportConfig { interval: Duration::from_secs(5), spool_dir: None, max_pending: 1000 }
    }
}

impl UsageReportMetrics {
    /// Adds these metrics to the data plane's registry.
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "aurora_dataplane_usage_reports_pending",
            "Usage reports sealed but not yet acknowledged by the control plane",
            self.pending.clone(),
        );
        registry.register(
            "aurora_dataplane_usage_reports_sealed",
            "Usage reports sealed from the aggregate",
            self.sealed.clone(),
        );
        registry.register(
            "aurora_dataplane_usage_reports_acknowledged",
            "Usage reports the control plane acknowledged as committed",
            self.acknowledged.clone(),
        );
        registry.register(
            "aurora_dataplane_usage_spool_failures",
            "Usage reports that could not be written to the spool (kept in memory only)",
            self.spool_failures.clone(),
        );
    }
}
