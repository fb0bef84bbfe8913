//! The admin listener: liveness and readiness for load balancers and Kubernetes probes, and
//! `/metrics` for Prometheus.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::header::CONTENT_TYPE;
use http::{HeaderValue, Request, Response, StatusCode};

use crate::body::{ProxyBody, full};
use crate::metrics::{self, Metrics};
use crate::server::ClientBody;
use crate::server::Handler;
use crate::state::ConfigState;

#[derive(Debug)]
pub struct Admin {
    state: Arc<ConfigState>,
    metrics: Arc<Metrics>,
    draining: AtomicBool,
}

impl Admin {
    pub fn new(state: Arc<ConfigState>, metrics: Arc<Metrics>) -> Self {
        Admin { state, metrics, draining: AtomicBool::new(false) }
    }

    /// From now on `/readyz` answers 503, so load balancers stop sending new requests.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    fn respond(&self, request: &Request<ClientBody>) -> (StatusCode, &'static str) {
        match request.uri().path() {
            "/healthz" => (StatusCode::OK, "ok\n"),
            "/readyz" if self.draining.load(Ordering::Relaxed) => (StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
            "/readyz" if !self.state.is_ready() => (StatusCode::SERVICE_UNAVAILABLE, "no configuration applied yet\n"),
            "/readyz" => (StatusCode::OK, "ready\n"),
            _ => (StatusCode::NOT_FOUND, "not found\n"),
        }
    }
}

impl Handler for Admin {
    type Body = ProxyBody;

    async fn call(self: Arc<Self>, request: Request<ClientBody>) -> Response<ProxyBody> {
        if request.uri().path() == "/metrics" {
            let mut response = Response::new(full(self.metrics.encode()));
            response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(metrics::CONTENT_TYPE));
            return response;
        }
        let (status, text) = self.respond(&request);
        let mut response = Response::new(full(text));
        *response.status_mut() = status;
        response
    }
}
