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

    /// Address of the admin listener (/healthz, /readyz, /metrics).
    #[arg(long, env = "AURORA_ADMIN_LISTEN_ADDR", default_value = "0.0.0.0:9090")]
    pub admin_listen_addr: SocketAddr,

    /// Load the gateway configuration from this JSON snapshot file instead of the environment.
    #[arg(long, env = "AURORA_CONFIG_FILE", conflicts_with = "control_plane_urls")]
    pub config_file: Option<PathBuf>,

    #[command(flatten)]
    pub control_plane: ControlPlaneConfig,

    #[command(flatten)]
    pub upstream: UpstreamConfig,

    #[command(flatten)]
    pub limits: Limits,

    #[command(flatten)]
    pub connections: ConnectionConfig,

    #[command(flatten)]
    pub shutdown: ShutdownConfig,

    #[command(flatten)]
    pub serving: ServingConfig,

    #[command(flatten)]
    pub usage: crate::usage_report::UsageReportConfig,

    /// Read the token usage each provider reports out of its responses (`on`), or not (`off`:
    /// every upstream response counts with its usage unknown; for comparing the cost).
    #[arg(long = "usage-metering", env = "AURORA_USAGE_METERING", value_enum, default_value_t = Switch::On)]
    pub usage_metering: Switch,

    /// Without a config file, the gateway configuration comes from the product page's
    /// variables (AURORA_MASTER_KEY, ANTHROPIC_API_KEY, ENABLED_PASSTHROUGH_PROVIDERS, ...).
    #[command(flatten)]
    pub static_config: ProductVars,
}

/// A feature switch, spelled `on` or `off`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    On,
    Off,
}

impl Switch {
    pub fn is_on(self) -> bool {
        self == Switch::On
    }
}

#[derive(Args, Debug, Clone)]
pub struct UpstreamConfig {
    /// Time allowed to open a TCP connection (and TLS session) to a provider.
    #[arg(long = "upstream-connect-timeout", env = "AURORA_UPSTREAM_CONNECT_TIMEOUT", default_value = "10s", value_parser = aurora_core::parse_positive_duration)]
    pub connect_timeout: Duration,

    /// Time allowed between sending a request and receiving the provider's response headers.
    /// Non-streamed LLM calls send headers only when the whole answer is ready, so this is long.
    #[arg(long = "upstream-header-timeout", env = "AURORA_UPSTREAM_HEADER_TIMEOUT", default_value = "10m", value_parser = aurora_core::parse_positive_duration)]
    pub response_header_timeout: Duration,

    /// Longest silence allowed between two chunks of a response body. There is deliberately no
    /// total timeout: it would cut long streams.
    #[arg(long = "upstream-idle-timeout", env = "AURORA_UPSTREAM_IDLE_TIMEOUT", default_value = "5m", value_parser = aurora_core::parse_positive_duration)]
    pub idle_timeout: Duration,

    /// How long an idle pooled upstream connection is kept.
    #[arg(long = "upstream-pool-idle-timeout", env = "AURORA_UPSTREAM_POOL_IDLE_TIMEOUT", default_value = "90s", value_parser = aurora_core::parse_positive_duration)]
    pub pool_idle_timeout: Duration,

    /// Largest accepted provider response header section, in bytes; a bigger one is refused
    /// with a 502 `upstream_response_invalid`.
    #[arg(id = "upstream_max_header_bytes", long = "upstream-max-header-bytes", value_name = "MAX_HEADER_BYTES", env = "AURORA_UPSTREAM_MAX_HEADER_BYTES", default_value_t = 64 * 1024, value_parser = clap::value_parser!(u32).range(8192..))]
    pub max_header_bytes: u32,

    /// CA certificates (a PEM bundle) trusted for provider TLS besides the compiled-in public
    /// roots: a self-hosted upstream behind a private CA, or a TLS-intercepting proxy.
    #[arg(long = "upstream-ca-file", env = "AURORA_UPSTREAM_CA_FILE")]
    pub ca_file: Option<PathBuf>,

    #[command(flatten)]
    pub proxy: ProxyVars,
}

/// The egress proxy variables every HTTP client honours, read once here (parsed into rules by
/// [`crate::egress`]). curl's reading: the lower-case name wins over the upper-case one.
#[derive(Args, Clone, Default)]
pub struct ProxyVars {
    /// Proxy for HTTPS upstreams (tunnelled with CONNECT): `http://[user:pass@]host:port`.
    #[arg(long = "https-proxy", env = "HTTPS_PROXY", hide_env_values = true)]
    pub https_proxy: Option<String>,
    #[arg(long = "https-proxy-lc", env = "https_proxy", hide = true, hide_env_values = true)]
    pub https_proxy_lc: Option<String>,

    /// Proxy for plain-HTTP upstreams (requests sent to it in absolute form).
    #[arg(long = "http-proxy", env = "HTTP_PROXY", hide_env_values = true)]
    pub http_proxy: Option<String>,
    #[arg(long = "http-proxy-lc", env = "http_proxy", hide = true, hide_env_values = true)]
    pub http_proxy_lc: Option<String>,

    /// Proxy for both schemes when the scheme's own variable is unset.
    #[arg(long = "all-proxy", env = "ALL_PROXY", hide_env_values = true)]
    pub all_proxy: Option<String>,
    #[arg(long = "all-proxy-lc", env = "all_proxy", hide = true, hide_env_values = true)]
    pub all_proxy_lc: Option<String>,

    /// Hosts reached directly: names (and their subdomains), `.domain`, IPs, CIDR ranges, `*`.
    #[arg(long = "no-proxy", env = "NO_PROXY")]
    pub no_proxy: Option<String>,
    #[arg(long = "no-proxy-lc", env = "no_proxy", hide = true)]
    pub no_proxy_lc: Option<String>,
}

impl ProxyVars {
    pub fn https(&self) -> Option<&str> {
        self.https_proxy_lc.as_deref().or(self.https_proxy.as_deref())
    }

    pub fn http(&self) -> Option<&str> {
        self.http_proxy_lc.as_deref().or(self.http_proxy.as_deref())
    }

    pub fn all(&self) -> Option<&str> {
        self.all_proxy_lc.as_deref().or(self.all_proxy.as_deref())
    }

    pub fn no(&self) -> Option<&str> {
        self.no_proxy_lc.as_deref().or(self.no_proxy.as_deref())
    }

    /// The variables as the environment would give them, for tests.
    #[cfg(test)]
    pub fn from_pairs(pairs: &[(&str, &str)]) -> ProxyVars {
        let get = |name: &str| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| (*v).to_owned());
        ProxyVars {
            https_proxy: get("HTTPS_PROXY"),
            https_proxy_lc: get("https_proxy"),
            http_proxy: get("HTTP_PROXY"),
            http_proxy_lc: get("http_proxy"),
            all_proxy: get("ALL_PROXY"),
            all_proxy_lc: get("all_proxy"),
            no_proxy: get("NO_PROXY"),
            no_proxy_lc: get("no_proxy"),
        }
    }
}

/// Hand-written: proxy URLs may carry credentials.
impl std::fmt::Debug for ProxyVars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyVars")
            .field("https_proxy_set", &self.https().is_some())
            .field("http_proxy_set", &self.http().is_some())
            .field("all_proxy_set", &self.all().is_some())
            .field("no_proxy", &self.no())
            .finish()
    }
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

/// How many client connections the passthrough listener holds, and when it closes them.
#[derive(Args, Debug, Clone, Copy)]
pub struct ConnectionConfig {
    /// Most client connections served at once; past it new connections are accepted and closed
    /// at once. Lowered at startup, with a warning, if the open-file limit cannot hold it.
    #[arg(long = "max-connections", env = "AURORA_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// A connection with no request in flight (HTTP/2: no open stream) is closed after this
    /// long. HTTP/1.1 connections also close when a request head takes over 30 s to arrive.
    #[arg(id = "connection_idle_timeout", long = "connection-idle-timeout", value_name = "IDLE_TIMEOUT", env = "AURORA_CONNECTION_IDLE_TIMEOUT", default_value = "30s", value_parser = aurora_core::parse_positive_duration)]
    pub idle_timeout: Duration,

    /// How often an HTTP/2 client is pinged to check that it is still there.
    #[arg(long = "http2-keepalive-interval", env = "AURORA_HTTP2_KEEPALIVE_INTERVAL", default_value = "20s", value_parser = aurora_core::parse_positive_duration)]
    pub keepalive_interval: Duration,

    /// How long an HTTP/2 client may take to answer a ping (a keep-alive one, or the one that
    /// ends a graceful close) before its connection is dropped.
    #[arg(long = "http2-keepalive-timeout", env = "AURORA_HTTP2_KEEPALIVE_TIMEOUT", default_value = "20s", value_parser = aurora_core::parse_positive_duration)]
    pub keepalive_timeout: Duration,
}

/// How the passthrough listener is spread over threads (see `server::workers`).
#[derive(Args, Debug, Clone, Copy)]
pub struct ServingConfig {
    /// Threads serving the passthrough listener, each with its own runtime, listener socket
    /// (`SO_REUSEPORT`) and upstream connection pool [default: one per available core].
    #[arg(long = "worker-threads", env = "AURORA_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub worker_threads: Option<u16>,

    /// Threads of the runtime that runs everything but the passthrough listener: the config
    /// stream, the admin listener, usage reporting (`aurora dataplane` only; `aurora up` shares
    /// its runtime with the control plane).
    #[arg(long = "background-threads", env = "AURORA_BACKGROUND_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub background_threads: u16,
}

impl ServingConfig {
    /// The number of workers: as configured, else one per core the process may run on.
    pub fn worker_threads(&self) -> usize {
        match self.worker_threads {
            Some(threads) => usize::from(threads),
            None => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        }
    }

    pub fn background_threads(&self) -> usize {
        usize::from(self.background_threads)
    }
}

#[derive(Args, Debug, Clone, Copy)]
pub struct ShutdownConfig {
    /// On SIGTERM, how long in-flight requests and streams may run before connections close.
    #[arg(long = "shutdown-grace", env = "AURORA_SHUTDOWN_GRACE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub grace: Duration,

    /// On SIGTERM, how long /readyz reports 503 while new connections are still accepted, so
    /// load balancers stop routing here before the listener closes.
    #[arg(long = "shutdown-drain-delay", env = "AURORA_SHUTDOWN_DRAIN_DELAY", default_value = "5s", value_parser = humantime::parse_duration)]
    pub drain_delay: Duration,
}

/// Where the live configuration comes from: the control plane's config stream.
#[derive(Args, Clone)]
pub struct ControlPlaneConfig {
    /// Control-plane gRPC URLs, comma-separated (`http://cp-a:50051,http://cp-b:50051`). The
    /// data plane subscribes to one and fails over to the next.
    #[arg(id = "control_plane_urls", long = "control-plane", env = "AURORA_CONTROL_PLANE_URL", value_delimiter = ',')]
    pub urls: Vec<String>,

    /// Token proving this data plane may receive configuration (and upstream credentials):
    /// `AURORA_NODE_TOKEN` or the file `AURORA_NODE_TOKEN_FILE` names, never a flag.
    #[arg(skip)]
    pub node_token: Option<String>,

    /// This replica's name in the control plane's fleet list [default: the host name].
    #[arg(long, env = "AURORA_NODE_ID")]
    pub node_id: Option<String>,

    /// Keep the last applied configuration in this file and serve from it when started while
    /// the control plane is unreachable.
    #[arg(long, env = "AURORA_CONFIG_CACHE")]
    pub config_cache: Option<PathBuf>,

    /// The secret the cache is encrypted with (HKDF-derived) [default: the node token]:
    /// `AURORA_CACHE_KEY` or `AURORA_CACHE_KEY_FILE`, never a flag. Set it to keep a cache
    /// readable across node-token rotations.
    #[arg(skip)]
    pub cache_key: Option<String>,

    /// CA certificate (PEM) to verify the control plane's TLS certificate with.
    #[arg(long, env = "AURORA_TLS_CA")]
    pub tls_ca: Option<PathBuf>,

    /// Client certificate (PEM) for mutual TLS with the control plane.
    #[arg(long, env = "AURORA_TLS_CLIENT_CERT", requires = "tls_client_key")]
    pub tls_client_cert: Option<PathBuf>,

    /// Private key (PEM) of the client certificate.
    #[arg(long, env = "AURORA_TLS_CLIENT_KEY", requires = "tls_client_cert")]
    pub tls_client_key: Option<PathBuf>,

    /// The name to verify in the control plane's certificate [default: the URL's host].
    #[arg(long, env = "AURORA_TLS_SERVER_NAME")]
    pub tls_server_name: Option<String>,

    /// Reconnect when the control plane sends nothing (not even a heartbeat) for this long.
    #[arg(long, env = "AURORA_CONTROL_PLANE_STALL_TIMEOUT", default_value = "15s", value_parser = aurora_core::parse_positive_duration)]
    pub stall_timeout: Duration,
}

/// Hand-written: the node token must never reach a log line.
impl std::fmt::Debug for ControlPlaneConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlaneConfig")
            .field("urls", &self.urls)
            .field("node_token_set", &self.node_token.is_some())
            .field("node_id", &self.node_id)
            .field("config_cache", &self.config_cache)
            .field("cache_key_set", &self.cache_key.is_some())
            .field("tls_ca", &self.tls_ca)
            .field("tls_client_cert", &self.tls_client_cert)
            .field("tls_server_name", &self.tls_server_name)
            .field("stall_timeout", &self.stall_timeout)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(Parser, Debug)]
    struct Command {
        #[command(flatten)]
        config: Config,
    }

    /// clap checks argument ids (unique across flattened groups) only when the command is built.
    #[test]
    fn the_command_line_is_consistent() {
        Command::command().debug_assert();
    }
}
