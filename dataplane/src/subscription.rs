//! The data plane's subscription to the control plane's config stream.
//!
//! A background task, never on the request path: it keeps one stream open to one control
//! plane, applies each snapshot or delta by building a new [`Snapshot`] off to the side and
//! publishing it atomically, acknowledges every revision, and on any failure reconnects with
//! exponential backoff and full jitter, moving on to the next control-plane URL. While it is
//! disconnected the data plane keeps serving its last applied configuration.

mod backoff;
mod connect;
mod session;

use std::sync::Arc;
use std::time::{Duration, Instant};

pub use connect::{ConnectError, Endpoints, client_tls};
use tokio::sync::watch;

use crate::cache::writer::Durability;
use crate::metrics::ConfigMetrics;
use crate::snapshot::Snapshot;
use crate::state::ConfigState;

/// What a subscription needs besides the endpoints.
#[derive(Clone)]
pub struct Subscriber {
    pub node_id: String,
    pub node_token: Arc<str>,
    pub stall_timeout: Duration,
    pub state: Arc<ConfigState>,
    /// Every applied snapshot is also sent here.
    pub applied: watch::Sender<Option<Arc<Snapshot>>>,
    /// Makes each applied revision durable (in the cache, if there is one) before its ack.
    pub durability: Durability,
    /// Stream state for `/metrics`: connected, and when the last message arrived.
    pub metrics: ConfigMetrics,
    /// Delivers usage reports on each session's stream; `None`: usage is not reported.
    pub usage: Option<Arc<crate::usage_report::UsageReporter>>,
    /// Per-key limits: leases from the stream are applied here, demand reported from here.
    pub limiters: Arc<crate::limits::Limiters>,
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber").field("node_id", &self.node_id).finish_non_exhaustive()
    }
}

/// A session that lasted this long counts as healthy: the next failure starts backing off
/// from the minimum again.
const HEALTHY_SESSION: Duration = Duration::from_secs(10);

impl Subscriber {
    /// The `authorization` metadata carrying the node token, marked sensitive.
    fn authorization(&self) -> Result<tonic::metadata::AsciiMetadataValue, session::SessionError> {
        let mut value: tonic::metadata::AsciiMetadataValue =
            format!("Bearer {}", self.node_token).parse().map_err(|_| {
                session::SessionError::Protocol("AURORA_NODE_TOKEN contains characters not allowed in a header")
            })?;
        value.set_sensitive(true);
        Ok(value)
    }

    /// Runs until the task is dropped.
    pub async fn run(self, endpoints: Endpoints) {
        let mut attempt: u32 = 0;
        for index in 0.. {
            let endpoint = endpoints.get(index);
            let started = Instant::now();
            let outcome = session::run(&self, endpoint).await;
            self.metrics.set_connected(false);
            let healthy = started.elapsed() >= HEALTHY_SESSION;
            attempt = if healthy { 0 } else { attempt.saturating_add(1) };
            let delay = backoff::full_jitter(attempt);
            match outcome {
                Err(session::SessionError::Rejected(status)) => tracing::error!(
                    control_plane = %connect::shown(endpoint),
                    code = ?status.code(),
                    error = %status.message(),
                    retry_in_ms = delay.as_millis(),
                    "the control plane refused this data plane"
                ),
                Err(err) => tracing::warn!(
                    control_plane = %connect::shown(endpoint),
                    error = %err,
                    retry_in_ms = delay.as_millis(),
                    "config stream lost; serving the last applied configuration"
                ),
                Ok(()) => {}
            }
            tokio::time::sleep(delay).await;
        }
    }
}
