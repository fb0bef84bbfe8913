//! The one shared HTTP client every passthrough request goes out through.
//!
//! A single connection pool for all providers, HTTP/2 where the provider offers it over ALPN,
//! TLS by rustls with the Mozilla root store compiled in (so the container image needs no CA
//! bundle). hyper's client is used directly rather than a higher-level one so that the request
//! URI, headers and body reach the provider exactly as the gateway built them.

use std::sync::Arc;

use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::RequestBody;
use crate::config::UpstreamConfig;
use crate::headers;

pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, RequestBody>;

#[derive(Debug, thiserror::Error)]
#[error("cannot set up TLS for upstream connections: {0}")]
pub struct TlsSetupError(#[from] rustls::Error);

pub fn client(config: &UpstreamConfig) -> Result<UpstreamClient, TlsSetupError> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(config.connect_timeout));
    // LLM streams are many small writes; Nagle's algorithm would delay each token.
    http.set_nodelay(true);
    http.set_keepalive(Some(std::time::Duration::from_secs(60)));

    let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);

    // Response heads are limited by bytes: hyper's HTTP/1.1 default of 100 header fields would
    // refuse ordinary answers from providers that send many rate-limit and tracing headers.
    let max_header_bytes = config.max_header_bytes;
    Ok(Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(config.pool_idle_timeout)
        .http1_max_buf_size(usize::try_from(max_header_bytes).unwrap_or(usize::MAX))
        .http1_max_headers(headers::field_ceiling(max_header_bytes))
        .http2_max_header_list_size(max_header_bytes)
        .build(https))
}
