//! The HTTP clients every passthrough request goes out through.
//!
//! One client, with its connection pool for all providers, per serving worker
//! ([`crate::server::workers`]): a request is forwarded on connections that belong to the
//! thread serving it, so neither the pool's lock nor the connection's task is ever shared
//! with another core. HTTP/2 where the provider offers it over ALPN,
//! TLS by rustls with the Mozilla root store compiled in (so the container image needs no CA
//! bundle) plus the operator's `AURORA_UPSTREAM_CA_FILE`, and egress proxies applied per
//! connection by [`crate::egress`]. hyper's client is used directly rather than a higher-level
//! one so that the request URI, headers and body reach the provider exactly as the gateway
//! built them.

pub mod dedicated;
pub mod http1;
pub mod target;
pub mod tls;

use std::sync::Arc;

use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::RequestBody;
use crate::config::UpstreamConfig;
use crate::egress::connector::EgressConnector;
use crate::egress::{ProxyConfigError, ProxyRules};
use crate::headers;
use crate::upstream::dedicated::DedicatedClients;
use crate::upstream::http1::Http1Client;

pub type UpstreamClient = Client<HttpsConnector<EgressConnector>, RequestBody>;

/// One [`UpstreamClient`] per serving worker, each with its own pool.
#[derive(Debug)]
pub struct WorkerClients {
    clients: Box<[UpstreamClient]>,
}

impl WorkerClients {
    /// Sends `request` on the calling worker's pool.
    pub fn request(&self, request: http::Request<RequestBody>) -> ResponseFuture {
        self.clients[crate::server::workers::current() % self.clients.len()].request(request)
    }
}

/// What [`WorkerClients::request`] returns.
pub type ResponseFuture = hyper_util::client::legacy::ResponseFuture;

/// Why the upstream client could not be built at startup.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamSetupError {
    #[error("cannot set up TLS for upstream connections: {0}")]
    Tls(#[from] rustls::Error),
    #[error(transparent)]
    CaFile(#[from] tls::CaFileError),
    #[error(transparent)]
    Proxy(#[from] ProxyConfigError),
}

/// The upstream client and the egress rules it connects by.
#[derive(Debug)]
pub struct Upstreams {
    pub client: WorkerClients,
    /// Consulted on the request path only for plain-HTTP upstreams behind a proxy, whose
    /// requests carry the proxy's credentials themselves.
    pub proxy: Option<Arc<ProxyRules>>,
    /// Clients for providers with their own TLS material (mutual TLS, a provider CA).
    pub dedicated: DedicatedClients,
    /// Plain-HTTP/1.1 upstreams' per-worker connections; `None` behind an egress proxy, whose
    /// per-destination rules only the general client applies.
    pub http1: Option<Http1Client>,
}

/// The clients for `workers` serving workers (at least one).
pub fn build(config: &UpstreamConfig, workers: usize) -> Result<Upstreams, UpstreamSetupError> {
    let proxy = ProxyRules::from_vars(&config.proxy)?.map(Arc::new);
    if proxy.is_some() {
        tracing::info!(no_proxy = ?config.proxy.no(), "upstream connections go through an egress proxy");
    }
    let roots = tls::roots(config.ca_file.as_deref())?;
    let tls = tls_builder()?.with_root_certificates(roots.clone()).with_no_client_auth();
    let clients = (0..workers.max(1)).map(|_| client(config, tls.clone(), proxy.clone())).collect();
    let dedicated = DedicatedClients::new(config.clone(), Arc::new(roots), proxy.clone(), workers);
    let http1 = proxy.is_none().then(|| {
        let max_header_bytes = usize::try_from(config.max_header_bytes).unwrap_or(usize::MAX);
        let max_header_fields = headers::field_ceiling(config.max_header_bytes);
        Http1Client::new(max_header_bytes, max_header_fields, config.connect_timeout, config.pool_idle_timeout)
    });
    Ok(Upstreams { client: WorkerClients { clients }, proxy, dedicated, http1 })
}

fn tls_builder() -> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>, rustls::Error> {
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
}

fn client(config: &UpstreamConfig, tls: rustls::ClientConfig, proxy: Option<Arc<ProxyRules>>) -> UpstreamClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(config.connect_timeout));
    // LLM streams are many small writes; Nagle's algorithm would delay each token.
    http.set_nodelay(true);
    http.set_keepalive(Some(std::time::Duration::from_secs(60)));

    let https = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(EgressConnector::new(http, proxy));

    // Response heads are limited by bytes: hyper's HTTP/1.1 default of 100 header fields would
    // refuse ordinary answers from providers that send many rate-limit and tracing headers.
    let max_header_bytes = config.max_header_bytes;
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(config.pool_idle_timeout)
        .http1_max_buf_size(usize::try_from(max_header_bytes).unwrap_or(usize::MAX))
        .http1_max_headers(headers::field_ceiling(max_header_bytes))
        .http2_max_header_list_size(max_header_bytes)
        .build(https)
}
