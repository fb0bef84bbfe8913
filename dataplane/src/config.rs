//! The data plane's configuration, parsed once at startup from flags and environment variables.
//!
//! This is process configuration (where to listen, timeouts, limits), not the gateway
//! configuration (keys, providers, settings), which arrives as a [`crate::snapshot::Snapshot`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use aurora_core::ProductVars;
use clap::Args;

#[derive(Args, Debug, Clone)]
pub struct Config {
    /// Address of the passthrough listener (HTTP/1.1 and h2c).
    #[arg(long, env = "AURORA_LISTEN_ADDR", default_value = "0.0.0.0:8080")]
    pub listen_addr: SocketAddr,

    /// Address of the admin listener (/healthz, /readyz).
    #[arg(long, env = "AURORA_ADMIN_LISTEN_ADDR", default_value = "0.0.0.0:9090")]
    pub admin_listen_addr: SocketAddr,

    /// Load the gateway configuration from this JSON snapshot file instead of the environment.
    #[arg(long, env = "AURORA_CONFIG_FILE")]
    pub config_file: Option<PathBuf>,

    #[command(flatten)]
    pub upstream: UpstreamConfig,

    #[command(flatten)]
    pub limits: Limits,

    #[command(flatten)]
    pub shutdown: ShutdownConfig,

    /// Without a config file, the gateway configuration comes from the product page's
    /// variables (AURORA_MASTER_KEY, ANTHROPIC_API_KEY, ENABLED_PASSTHROUGH_PROVIDERS, ...).
    #[command(flatten)]
    pub static_config: ProductVars,
}

#[derive(Args, Debug, Clone)]
pub struct UpstreamConfig {
    /// Time allowed to open a TCP connection (and TLS session) to a provider.
    #[arg(long = "upstream-connect-timeout", env = "AURORA_UPSTREAM_CONNECT_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,

    /// Time allowed between sending a request and receiving the provider's response headers.
    /// Non-streamed LLM calls send headers only when the whole answer is ready, so this is long.
    #[arg(long = "upstream-header-timeout", env = "AURORA_UPSTREAM_HEADER_TIMEOUT", default_value = "10m", value_parser = humantime::parse_duration)]
    pub response_header_timeout: Duration,

    /// Longest silence allowed between two chunks of a response body. There is deliberately no
    /// total timeout: it would cut long streams.
    #[arg(long = "upstream-idle-timeout", env = "AURORA_UPSTREAM_IDLE_TIMEOUT", default_value = "5m", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,

    /// How long an idle pooled upstream connection is kept.
    #[arg(long = "upstream-pool-idle-timeout", env = "AURORA_UPSTREAM_POOL_IDLE_TIMEOUT", default_value = "90s", value_parser = humantime::parse_duration)]
    pub pool_idle_timeout: Duration,
}

#[derive(Args, Debug, Clone, Copy)]
pub struct Limits {
    /// Largest accepted request body, in bytes (413 past it).
    #[arg(long = "max-request-body-bytes", env = "AURORA_MAX_REQUEST_BODY_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub max_request_body_bytes: u64,

    /// Largest accepted request header section, in bytes (431 past it).
    #[arg(long = "max-header-bytes", env = "AURORA_MAX_HEADER_BYTES", default_value_t = 64 * 1024, value_parser = clap::value_parser!(u32).range(8192..))]
    pub max_header_bytes: u32,
}

#[derive(Args, Debug, Clone, Copy)]
pub struct ShutdownConfig {
    /// On SIGTERM, how long in-flight requests and streams may run before connections close.
    #[arg(long = "shutdown-grace", env = "AURORA_SHUTDOWN_GRACE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub grace: Duration,
}
