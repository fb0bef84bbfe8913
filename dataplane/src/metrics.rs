//! The data plane's Prometheus metrics, served on the admin listener's `/metrics`.
//!
//! Built for the request path: every series over the closed label sets in [`labels`] is
//! created at startup ([`family`]), histograms are lock-free ([`histogram`]), so recording a
//! request is array indexing plus atomic adds: no lock a scrape or another request can hold.
//! Those cells are sharded per worker thread ([`shards`]): each worker adds to its own, so the
//! adds never contend for a cache line with another core, and a scrape sums the shards.
//! The configuration gauges are computed at scrape time ([`config`]). Every metric is listed
//! with its meaning in docs/OPERATIONS.md.

pub mod config;
pub mod family;
pub mod gauge;
pub mod histogram;
pub mod labels;
pub mod shards;

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

/// One listener's client connections. Cheap to clone: the metrics are shared. Touched once per
/// connection, not per request, so these are plain shared (unsharded) metrics.
#[derive(Debug, Clone, Default)]
pub struct ConnectionMetrics {
    accepted: Counter,
    refused: Counter,
    open: Gauge,
}

/// The request-path metrics, sharded per worker: every method adds to the calling thread's
/// shard ([`shards::current`]). The fields are handles on the shared families, read by every
/// request and written by none; aligned to a cache line so they never share one with counts
/// another core writes. Requests reach them through their worker's own `Recorder`
/// (`access.rs`), never by cloning this `Arc` per request.
#[derive(Debug, Clone)]
#[repr(align(64))]
pub struct RequestMetrics {
    shards: usize,
    requests: Arc<Family<family::Counter, 4>>,
    duration: Arc<Family<Histogram, 2>>,
    upstream_headers: Arc<Family<Histogram, 1>>,
    overhead: Arc<Family<Histogram, 1>>,
    request_bytes: Arc<Family<family::Counter, 1>>,
    response_bytes: Arc<Family<family::Counter, 1>>,
    auth_failures: Arc<Family<family::Counter, 2>>,
    tokens: Arc<Family<family::Counter, 2>>,
    usage_requests: Arc<Family<family::Counter, 2>>,
    in_flight: gauge::Gauge,
    streams_open: gauge::Gauge,
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
    /// Creates every series, with one shard for the request path (tests, one thread).
    pub fn new(state: Arc<ConfigState>, config: Option<ConfigMetrics>) -> Self {
        Metrics::sharded(state, config, 1)
    }

    /// Creates every series, the request path's with `shards` shards: one per worker thread.
    /// `config` is the subscription's handle, if this data plane follows a control plane.
    pub fn sharded(state: Arc<ConfigState>, config: Option<ConfigMetrics>, shards: usize) -> Self {
        let shards = shards.max(1);
        let provider = ("provider", PROVIDERS);
        let requests = RequestMetrics {
            shards,
            requests: Arc::new(Family::new(
                "aurora_dataplane_requests",
                "Requests answered, by provider, method, status class and who made the response.",
                None,
                [provider, ("method", METHODS), ("status_class", STATUS_CLASSES), ("source", SOURCES)],
                family::Counter,
                shards,
            )),
            duration: Arc::new(Family::new(
                "aurora_dataplane_request_duration",
                "From request arrival to the end of the response body (the whole stream).",
                Some(Unit::Seconds),
                [provider, ("source", SOURCES)],
                Histogram::new(&LATENCY_BUCKETS),
                shards,
            )),
            upstream_headers: Arc::new(Family::new(
                "aurora_dataplane_upstream_response_headers_duration",
                "From sending the request upstream to receiving the provider's response headers.",
                Some(Unit::Seconds),
                [provider],
                Histogram::new(&LATENCY_BUCKETS),
                shards,
            )),
            overhead: Arc::new(Family::new(
                "aurora_dataplane_gateway_overhead",
                "Time spent in Aurora from request arrival until the request is handed to the upstream client.",
                Some(Unit::Seconds),
                [provider],
                Histogram::new(&OVERHEAD_BUCKETS),
                shards,
            )),
            request_bytes: Arc::new(Family::new(
                "aurora_dataplane_request_body",
                "Request body bytes received from clients and forwarded upstream.",
                Some(Unit::Bytes),
                [provider],
                family::Counter,
                shards,
            )),
            response_bytes: Arc::new(Family::new(
                "aurora_dataplane_response_body",
                "Response body bytes sent to clients.",
                Some(Unit::Bytes),
                [provider],
                family::Counter,
                shards,
            )),
            auth_failures: Arc::new(Family::new(
                "aurora_dataplane_auth_failures",
                "Requests refused by gateway authentication, by provider and reason.",
                None,
                [provider, ("reason", AUTH_REASONS)],
                family::Counter,
                shards,
            )),
            tokens: Arc::new(Family::new(
                "aurora_dataplane_usage_tokens",
                "Tokens the providers reported in their responses, by provider and direction.",
                None,
                [provider, ("direction", DIRECTIONS)],
                family::Counter,
                shards,
            )),
            usage_requests: Arc::new(Family::new(
                "aurora_dataplane_usage_requests",
                "Upstream responses metered, by provider and how much of their usage was read.",
                None,
                [provider, ("outcome", USAGE_OUTCOMES)],
                family::Counter,
                shards,
            )),
            in_flight: gauge::Gauge::new(shards),
            streams_open: gauge::Gauge::new(shards),
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
    /// The shard the calling thread adds to.
    fn shard(&self) -> usize {
        shards::current(self.shards)
    }

    pub fn started(&self) {
        self.in_flight.add(self.shard(), 1);
    }

    pub fn stream_opened(&self) {
        self.streams_open.add(self.shard(), 1);
    }

    pub fn stream_closed(&self) {
        self.streams_open.add(self.shard(), -1);
    }

    pub fn overhead(&self, provider: ProviderKind, elapsed: Duration) {
        self.overhead.observe(self.shard(), [labels::provider(Some(provider))], elapsed.as_secs_f64());
    }

    pub fn upstream_headers(&self, provider: ProviderKind, elapsed: Duration) {
        self.upstream_headers.observe(self.shard(), [labels::provider(Some(provider))], elapsed.as_secs_f64());
    }

    pub fn auth_failure(&self, provider: ProviderKind, err: AuthError) {
        self.auth_failures.inc_by(self.shard(), [labels::provider(Some(provider)), labels::auth_reason(err)], 1);
    }

    /// An upstream response's usage was metered.
    pub fn usage(&self, provider: ProviderKind, usage: &Usage) {
        let shard = self.shard();
        let provider = labels::provider(Some(provider));
        self.usage_requests.inc_by(shard, [provider, labels::usage_outcome(usage.outcome)], 1);
        let tokens = &usage.tokens;
        for (direction, count) in
            [tokens.input, tokens.output, tokens.cache_read_input, tokens.cache_creation_input].into_iter().enumerate()
        {
            if count > 0 {
                self.tokens.inc_by(shard, [provider, direction], count);
            }
        }
    }

    /// A request finished (or was abandoned); it is no longer in flight.
    pub fn completed(&self, done: &Completed<'_>) {
        let shard = self.shard();
        let provider = labels::provider(done.provider);
        let source = done.source as usize;
        let class = labels::status_class(done.status);
        self.requests.inc_by(shard, [provider, labels::method(done.method), class, source], 1);
        self.duration.observe(shard, [provider, source], done.duration.as_secs_f64());
        if done.bytes_in > 0 {
            self.request_bytes.inc_by(shard, [provider], done.bytes_in);
        }
        if done.bytes_out > 0 {
            self.response_bytes.inc_by(shard, [provider], done.bytes_out);
        }
        self.in_flight.add(shard, -1);
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

    /// A bit of every request-path metric, recorded as worker `worker`; a request that starts
    /// here ends as worker `worker + 1`, as a stream may in tests.
    fn record(metrics: &Metrics, worker: usize) {
        use crate::server::workers::as_worker;
        use crate::usage::{TokenCounts, UsageOutcome};
        let requests = &metrics.requests;
        // Multiples of 2^-9 s: their sums are exact in f64, whatever order the shards add up in.
        let tick = |n: u64| Duration::from_nanos(1_953_125 * n);
        as_worker(worker, || {
            for (n, (provider, method, status, source)) in [
                (Some(ProviderKind::Anthropic), Method::POST, StatusCode::OK, Source::Upstream),
                (Some(ProviderKind::Anthropic), Method::GET, StatusCode::OK, Source::Upstream),
                (Some(ProviderKind::OpenAi), Method::POST, StatusCode::BAD_GATEWAY, Source::Gateway),
                (None, Method::DELETE, StatusCode::NOT_FOUND, Source::Gateway),
            ]
            .into_iter()
            .enumerate()
            {
                let n = n as u64 + 1;
                requests.started();
                if let Some(provider) = provider {
                    requests.overhead(provider, tick(n));
                    requests.upstream_headers(provider, tick(100 * n));
                }
                let done = Completed {
                    provider,
                    method: &method,
                    status,
                    source,
                    duration: tick(1000 * n),
                    bytes_in: n,
                    bytes_out: 10 * n,
                };
                requests.completed(&done);
            }
            requests.auth_failure(ProviderKind::Zai, AuthError::Expired);
            let tokens = TokenCounts { input: 7, output: 3, cache_creation_input: 2, ..TokenCounts::default() };
            requests.usage(ProviderKind::Anthropic, &Usage { model: None, tokens, outcome: UsageOutcome::Complete });
            requests.started();
            requests.stream_opened();
            requests.stream_opened();
        });
        as_worker(worker + 1, || {
            requests.stream_closed();
            let done = Completed {
                provider: Some(ProviderKind::Vllm),
                method: &Method::POST,
                status: StatusCode::OK,
                source: Source::Upstream,
                duration: tick(7),
                bytes_in: 0,
                bytes_out: 0,
            };
            requests.completed(&done);
        });
    }

    #[test]
    fn shards_written_by_many_workers_scrape_as_one_shard_would() {
        let single = Metrics::new(Arc::new(ConfigState::new()), None);
        for worker in 0..5 {
            record(&single, worker);
        }
        // Five workers over three shards: workers 3 and 4 share shards with 0 and 1.
        let sharded = Metrics::sharded(Arc::new(ConfigState::new()), None, 3);
        std::thread::scope(|scope| {
            for worker in 0..5 {
                let sharded = &sharded;
                scope.spawn(move || record(sharded, worker));
            }
        });
        let text = sharded.encode();
        assert_eq!(text, single.encode());
        for expected in [
            "aurora_dataplane_requests_total{provider=\"anthropic\",method=\"POST\",status_class=\"2xx\",source=\"upstream\"} 5\n",
            "aurora_dataplane_requests_total{provider=\"vllm\",method=\"POST\",status_class=\"2xx\",source=\"upstream\"} 5\n",
            "aurora_dataplane_request_duration_seconds_count{provider=\"openai\",source=\"gateway\"} 5\n",
            "aurora_dataplane_request_duration_seconds_sum{provider=\"openai\",source=\"gateway\"} 29.296875\n",
            "aurora_dataplane_gateway_overhead_seconds_bucket{le=\"0.0032\",provider=\"anthropic\"} 5\n",
            "aurora_dataplane_request_body_bytes_total{provider=\"unknown\"} 20\n",
            "aurora_dataplane_usage_tokens_total{provider=\"anthropic\",direction=\"cache_creation_input\"} 10\n",
            "aurora_dataplane_auth_failures_total{provider=\"zai\",reason=\"expired\"} 5\n",
            "aurora_dataplane_requests_in_flight 0\n",
            "aurora_dataplane_streams_open 5\n",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
    }
}
