//! What the control plane's health checks report, and the probe that keeps it true.
//!
//! The store's [`WriteStatus`] is the one fact behind every check: `/healthz` and `/readyz` on the
//! metrics listener answer 503 with the reason while the store cannot write, and so does the
//! gRPC health service for the server as a whole (`""`) and for `AdminService`. `ConfigService`
//! stays `SERVING`: streams keep serving the state replicas already have. `/livez` only says the
//! process answers, for liveness probes: restarting does not free a disk.

use std::sync::Arc;
use std::time::Duration;

use aurora_proto::v1::admin_service_server::SERVICE_NAME as ADMIN_SERVICE;
use tokio::sync::watch;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::store::{Store, WriteStatus};

/// Writes the store's probe row every `interval`, so a disk that fills while nobody writes is
/// noticed, and one that is freed again is noticed without waiting for an operator's write.
pub(crate) async fn probe_writes(store: Arc<dyn Store>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        // The outcome lands in the store's write status (and the log, when it changes).
        let _ = store.probe_write().await;
    }
}

/// Mirrors the write status into the gRPC health service until the status sender is gone.
pub(crate) async fn report_grpc(mut status: watch::Receiver<WriteStatus>, reporter: HealthReporter) {
    loop {
        let serving =
            if status.borrow_and_update().is_writable() { ServingStatus::Serving } else { ServingStatus::NotServing };
        for service in ["", ADMIN_SERVICE] {
            reporter.set_service_status(service, serving).await;
        }
        if status.changed().await.is_err() {
            return;
        }
    }
}
