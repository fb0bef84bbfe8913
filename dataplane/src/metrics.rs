//! The data plane's Prometheus metrics, served on the admin listener's `/metrics`.
//!
//! Built for the request path: every series over the closed label sets in [`labels`] is
//! created at startup ([`family`]), histograms are lock-free ([`histogram`]), so recording a
//! request is array indexing plus atomic adds: no lock a scrape or another request can hold.
//! The configuration gauges are computed at scrape time ([`config`]). Every metric is listed
//! with its meaning in docs/OPERATIONS.md.

pub mod config;
pub mod family;
pub mod histogram;
pub mod labels;

use std::sync::Arc;
use std::time::Duration;

use aurora_core::ProviderKind;
use http::{Method, StatusCode};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

pub use self::config::ConfigMetrics;
use self::family::Family;
use self::histogram::Histogram;
use self::labels::{AUTH_REASONS, DIRECTIONS, METHODS, PROVIDERS, SOURCES, STATUS_CLASSES, Source, USAGE_OUTCOMES};
use crate::auth::AuthError;
use crate::state::ConfigState;
use crate::usage::Usage;

/// The content type of the OpenMetrics text format, which Prometheus negotiates and parses.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Time spent inside Aurora before the upstream request is sent: 50 µs to ~1.6 s, doubling.
static OVERHEAD_BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_2, 0.000_4, 0.000_8, 0.001_6, 0.003_2, 0.006_4, 0.012_8, 0.025_6, 0.051_2, 0.102_4,
    0.204_8, 0.409_6, 0.819_2, 1.638_4,
];

/// Upstream latencies: 1 ms to 10 min (non-streamed LLM calls answer only when done).
static LATENCY_BUCKETS: [f64; 18] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 600.0];

/// Every data-plane metric, and the registry that encodes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub requests: Arc<RequestMetrics>,
    /// The passthrough listener's connections.
    pub connections: ConnectionMetrics,
}

/// One listener's client connections. Cheap to clone: the metrics are shared.
#[derive(Debug, Clone, Default)]
pub struct ConnectionMetrics {
    accepted: Counter,
    refused: Counter,
    open: Gauge,
}

/// The request-path metrics.
#[derive(Debug)]
pub struct RequestMetrics {
    requests: Arc<Family<Counter, 4>>,
    duration: Arc<Family<Histogram, 2>>,
    upstream_headers: Arc<Family<Histogram, 1>>,
    overhead: Arc<Family<Histogram, 1>>,
    request_bytes: Arc<Family<Counter, 1>>,
    response_bytes: Arc<Family<Counter, 1>>,
    auth_failures: Arc<Family<Counter, 2>>,
    tokens: Arc<Family<Counter, 2>>,
    usage_requests: Arc<Family<Counter, 2>>,
    in_flight: Gauge,
    streams_open: Gauge,
}

/// What one finished request adds to the metrics.
#[derive(Debug, Clone, Copy)]
pub struct Completed<'a> {
    pub provider: Option<ProviderKind>,
    pub method: &'a Method,
    pub status: StatusCode,
    pub source: Source,
    pub duration: Duration,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl Metrics {
    /// Creates every series. `config` is the subscription's handle, if this data plane follows
    /// a control plane.
    pub fn new(state: Arc<ConfigState>, config: Option<ConfigMetrics>) -> Self {
        let provider = ("provider", PROVIDERS);
        let requests = RequestMetrics {
            requests: Arc::new(Family::new(
                "aurora_dataplane_requests",
                "Requests answered, by provider, method, status class and who made the response.",
                None,
                [provider, ("method", METHODS), ("status_class", STATUS_CLASSES), ("source", SOURCES)],
                Counter::default,
            )),
            duration: Arc::new(Family::new(
                "aurora_dataplane_request_duration",
                "From request arrival to the end of the response body (the whole stream).",
                Some(Unit::Seconds),
                [provider, ("source", SOURCES)],
                || Histogram::new(&LATENCY_BUCKETS),
            )),
            upstream_headers: Arc::new(Family::new(
                "aurora_dataplane_upstream_response_headers_duration",
                "From sending the request upstream to receiving the provider's response headers.",
                Some(Unit::Seconds),
                [provider],
                || Histogram::new(&LATENCY_BUCKETS),
            )),
            overhead: Arc::new(Family::new(
                "aurora_dataplane_gateway_overhead",
                "Time spent in Aurora from request arrival until the request is handed to the upstream client.",
                Some(Unit::Seconds),
                [provider],
                || Histogram::new(&OVERHEAD_BUCKETS),
            )),
            request_bytes: Arc::new(Family::new(
                "aurora_dataplane_request_body",
                "Request body bytes received from clients and forwarded upstream.",
                Some(Unit::Bytes),
                [provider],
                Counter::default,
            )),
            response_bytes: Arc::new(Family::new(
                "aurora_dataplane_response_body",
                "Response body bytes sent to clients.",
                Some(Unit::Bytes),
                [provider],
                Counter::default,
            )),
            auth_failures: Arc::new(Family::new(
                "aurora_dataplane_auth_failures",
                "Requests refused by gateway authentication, by provider and reason.",
                None,
                [provider, ("reason", AUTH_REASONS)],
                Counter::default,
            )),
            tokens: Arc::new(Family::new(
                "aurora_dataplane_usage_tokens",
                "Tokens the providers reported in their responses, by provider and direction.",
                None,
                [provider, ("direction", DIRECTIONS)],
                Counter::default,
            )),
            usage_requests: Arc::new(Family::new(
                "aurora_dataplane_usage_requests",
                "Upstream responses metered, by provider and how much of their usage was read.",
                None,
                [provider, ("outcome", USAGE_OUTCOMES)],
                Counter::default,
            )),
            in_flight: Gauge::default(),
            streams_open: Gauge::default(),
        };

        // `Registry::register` appends the full stop to help texts itself.
        let mut registry = Registry::default();
        registry.register_collector(Box::new(requests.requests.clone()));
        registry.register_collector(Box::new(requests.duration.clone()));
        registry.register_collector(Box::new(requests.upstream_headers.clone()));
        registry.register_collector(Box::new(requests.overhead.clone()));
        registry.register_collector(Box::new(requests.request_bytes.clone()));
        registry.register_collector(Box::new(requests.response_bytes.clone()));
        registry.register_collector(Box::new(requests.auth_failures.clone()));
        registry.register_collector(Box::new(requests.tokens.clone()));
        registry.register_collector(Box::new(requests.usage_requests.clone()));
        registry.register(
            "aurora_dataplane_requests_in_flight",
            "Requests received whose response has not finished yet (streams included)",
            requests.in_flight.clone(),
        );
        registry.register(
            "aurora_dataplane_streams_open",
            "Server-sent-event responses currently streaming to clients",
            requests.streams_open.clone(),
        );
        let connections = ConnectionMetrics::default();
        registry.register(
            "aurora_dataplane_connections_accepted",
            "Client connections accepted and served by the passthrough listener",
            connections.accepted.clone(),
        );
        registry.register(
            "aurora_dataplane_connections_refused",
            "Client connections closed unserved because AURORA_MAX_CONNECTIONS were open",
            connections.refused.clone(),
        );
        registry.register(
            "aurora_dataplane_connections_open",
            "Client connections the passthrough listener is serving now",
            connections.open.clone(),
        );
        registry
            .register_collector(Box::new(crate::credentials::metrics::CredentialCollector { state: state.clone() }));
        registry.register_collector(Box::new(config::ConfigCollector { state, metrics: config }));
        Metrics { registry, requests: Arc::new(requests), connections }
    }

    /// Adds the per-key limits' metrics (see `limits`), read from `limiters` at scrape time.
    pub fn register_limits(&mut self, limiters: Arc<crate::limits::Limiters>) {
        self.registry.register_collector(Box::new(crate::limits::metrics::LimitCollector { limiters }));
    }

    /// Adds the usage-delivery metrics (see `usage_report`).
    pub fn register_usage(&mut self, usage: &crate::usage_report::UsageReportMetrics) {
        usage.register(&mut self.registry);
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::with_capacity(16 * 1024);
        // Writing to a String cannot fail; an encoder error would be a bug in a collector.
        if let Err(err) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!(error = %err, "cannot encode the metrics");
        }
        text
    }
}

impl ConnectionMetrics {
    /// A connection was accepted; it counts as open until the returned guard is dropped.
    pub fn accepted(&self) -> OpenConnection {
        self.accepted.inc();
        self.open.inc();
        OpenConnection(self.open.clone())
    }

    /// A connection was closed unserved: the cap was reached.
    pub fn refused(&self) {
        self.refused.inc();
    }
}

/// Held by a connection's task; closing the connection (or aborting the task) drops it.
#[derive(Debug)]
pub struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl RequestMetrics {
    pub fn started(&self) {
        self.in_flight.inc();
    }

    pub fn stream_opened(&self) {
        self.streams_open.inc();
    }

    pub fn stream_closed(&self) {
        self.streams_open.dec();
    }

    pub fn overhead(&self, provider: ProviderKind, elapsed: Duration) {
        self.overhead.get([labels::provider(Some(provider))]).observe(elapsed.as_secs_f64());
    }

    pub fn upstream_headers(&self, provider: ProviderKind, elapsed: Duration) {
        self.upstream_headers.get([labels::provider(Some(provider))]).observe(elapsed.as_secs_f64());
    }

    pub fn auth_failure(&self, provider: ProviderKind, err: AuthError) {
        self.auth_failures.get([labels::provider(Some(provider)), labels::auth_reason(err)]).inc();
    }

    /// An upstream response's usage was metered.
    pub fn usage(&self, provider: ProviderKind, usage: &Usage) {
        let provider = labels::provider(Some(provider));
        self.usage_requests.get([provider, labels::usage_outcome(usage.outcome)]).inc();
        let tokens = &usage.tokens;
        for (direction, count) in
            [tokens.input, tokens.output, tokens.cache_read_input, tokens.cache_creation_input].into_iter().enumerate()
        {
            if count > 0 {
                self.tokens.get([provider, direction]).inc_by(count);
            }
        }
    }

    /// A request finished (or was abandoned); it is no longer in flight.
    pub fn completed(&self, done: &Completed<'_>) {
        let provider = labels::provider(done.provider);
        let source = done.source as usize;
        let class = labels::status_class(done.status);
        self.requests.get([provider, labels::method(done.method), class, source]).inc();
        self.duration.get([provider, source]).observe(done.duration.as_secs_f64());
        if done.bytes_in > 0 {
            self.request_bytes.get([provider]).inc_by(done.bytes_in);
        }
        if done.bytes_out > 0 {
            self.response_bytes.get([provider]).inc_by(done.bytes_out);
        }
        self.in_flight.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scrape_lists_what_happened_with_bounded_labels() {
        let metrics = Metrics::new(Arc::new(ConfigState::new()), Some(ConfigMetrics::new()));
        let requests = &metrics.requests;
        for (provider, status, source) in [
            (Some(ProviderKind::Anthropic), StatusCode::OK, Source::Upstream),
            (Some(ProviderKind::Anthropic), StatusCode::OK, Source::Upstream),
            (Some(ProviderKind::OpenAi), StatusCode::BAD_GATEWAY, Source::Gateway),
            (None, StatusCode::NOT_FOUND, Source::Gateway),
        ] {
            requests.started();
            requests.completed(&Completed {
                provider,
                method: &Method::POST,
                status,
                source,
                duration: Duration::from_millis(20),
                bytes_in: 2,
                bytes_out: 10,
            });
        }
        requests.auth_failure(ProviderKind::Zai, AuthError::Expired);
        requests.overhead(ProviderKind::Anthropic, Duration::from_micros(70));

        let text = metrics.encode();
        for expected in [
            "aurora_dataplane_requests_total{provider=\"anthropic\",method=\"POST\",status_class=\"2xx\",source=\"upstream\"} 2\n",
            "aurora_dataplane_requests_total{provider=\"openai\",method=\"POST\",status_class=\"5xx\",source=\"gateway\"} 1\n",
            "aurora_dataplane_requests_total{provider=\"unknown\",method=\"POST\",status_class=\"4xx\",source=\"gateway\"} 1\n",
            "aurora_dataplane_auth_failures_total{provider=\"zai\",reason=\"expired\"} 1\n",
            "aurora_dataplane_gateway_overhead_seconds_bucket{le=\"0.0001\",provider=\"anthropic\"} 1\n",
            "aurora_dataplane_response_body_bytes_total{provider=\"anthropic\"} 20\n",
            "aurora_dataplane_requests_in_flight 0\n",
            "aurora_dataplane_config_revision 0\n",
            "aurora_dataplane_control_plane_connected 0\n",
            "# TYPE aurora_dataplane_request_duration_seconds histogram\n",
            "# EOF\n",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
        // Usage: tokens by direction, responses by outcome; zero counts add no series.
        use crate::usage::{TokenCounts, UsageOutcome};
        let tokens = TokenCounts { input: 7, output: 3, cache_read_input: 2, ..TokenCounts::default() };
        requests.usage(ProviderKind::Anthropic, &Usage { model: None, tokens, outcome: UsageOutcome::Incomplete });
        let unknown = Usage { model: None, tokens: TokenCounts::default(), outcome: UsageOutcome::Unknown };
        requests.usage(ProviderKind::Vllm, &unknown);
        let text = metrics.encode();
        for expected in [
            "aurora_dataplane_usage_tokens_total{provider=\"anthropic\",direction=\"input\"} 7\n",
            "aurora_dataplane_usage_tokens_total{provider=\"anthropic\",direction=\"output\"} 3\n",
            "aurora_dataplane_usage_tokens_total{provider=\"anthropic\",direction=\"cache_read_input\"} 2\n",
            "aurora_dataplane_usage_requests_total{provider=\"anthropic\",outcome=\"incomplete\"} 1\n",
            "aurora_dataplane_usage_requests_total{provider=\"vllm\",outcome=\"unknown\"} 1\n",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
        assert_eq!(text.lines().filter(|l| l.starts_with("aurora_dataplane_usage_tokens_total{")).count(), 3);
        // Bounded: only the label sets above exist, whatever the traffic.
        let request_series = text.lines().filter(|l| l.starts_with("aurora_dataplane_requests_total{")).count();
        assert_eq!(request_series, 3);
    }
}
