//! The control plane's configuration, parsed once from flags and environment variables.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use aurora_core::ProductVars;
use clap::Args;

/// Everything `aurora controlplane` is configured with. `Debug` shows the database URL without
/// its user info (a PostgreSQL URL may carry a password).
#[derive(Args, Clone)]
pub struct Config {
    /// The address the gRPC server (admin API, config stream, health, reflection) listens on.
    /// Loopback by default: serving other hosts is a decision (with TLS, or on a private network
    /// such as a Kubernetes pod network, where the chart sets `0.0.0.0:50051`).
    #[arg(long, env = "AURORA_GRPC_LISTEN_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_listen_addr: SocketAddr,

    /// The plaintext HTTP listener for Prometheus (`/metrics`) and probes (`/healthz`,
    /// `/readyz`, `/livez`). Loopback by default, like the gRPC port.
    #[arg(long, env = "AURORA_METRICS_LISTEN_ADDR", default_value = "127.0.0.1:9091")]
    pub metrics_listen_addr: Option<SocketAddr>,

    /// Where the store lives. `sqlite://PATH` (created on first start, parent directory too),
    /// or `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE` for a database that several
    /// control-plane replicas share. Never logged: it may carry a password.
    #[arg(long, env = "AURORA_DATABASE_URL", default_value = "sqlite://aurora-data/aurora.db", hide_env_values = true)]
    pub database_url: String,

    /// PostgreSQL only: the most connections each control-plane replica opens to the database
    /// (one more is kept for `LISTEN`).
    #[arg(long, env = "AURORA_DATABASE_MAX_CONNECTIONS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub database_max_connections: u32,

    /// PostgreSQL only: how long an operation waits to connect to the database (or for a free
    /// connection) before it fails; admin writes then fail with UNAVAILABLE.
    #[arg(long, env = "AURORA_DATABASE_CONNECT_TIMEOUT", default_value = "5s", value_parser = aurora_core::parse_positive_duration)]
    pub database_connect_timeout: Duration,

    /// How often the control plane makes a small probe write to the store, so that `/healthz`,
    /// `/readyz` and gRPC health turn unhealthy when the store cannot write (a full disk) even
    /// while nobody writes, and healthy again as soon as it can.
    #[arg(long, env = "AURORA_STORE_PROBE_INTERVAL", default_value = "5s", value_parser = aurora_core::parse_positive_duration)]
    pub store_probe_interval: Duration,

    /// How long usage totals are kept (hour buckets older than this are deleted, hourly);
    /// report identities are kept a day longer, for exactly-once delivery.
    #[arg(long, env = "AURORA_USAGE_RETENTION", default_value = "400d", value_parser = aurora_core::parse_positive_duration)]
    pub usage_retention: Duration,
    /// The key-encryption keys that seal upstream credentials in the store, current first
    /// (`AURORA_ENCRYPTION_KEY` or the file `AURORA_ENCRYPTION_KEY_FILE` names; never a flag).
    /// Required with PostgreSQL; with SQLite, a key file beside the database is generated when
    /// unset (see `encryption.rs`).
    #[arg(skip)]
    pub encryption_key: Option<String>,
    /// How long audit records are kept (e.g. `400d`); older ones are pruned from the start of
    /// the chain, whose new anchor keeps `aurora audit verify` working. Unset: kept forever.
    #[arg(long, env = "AURORA_AUDIT_RETENTION", value_parser = aurora_core::parse_positive_duration)]
    pub audit_retention: Option<Duration>,

    /// The product page's variables, applied to the store at every startup (see bootstrap).
    #[command(flatten)]
    pub product: ProductVars,

    #[command(flatten)]
    pub stream: StreamConfig,

    #[command(flatten)]
    pub tls: TlsConfig,

    #[command(flatten)]
    pub grpc_limits: crate::grpc_limits::GrpcLimits,

    /// Capacity leases for per-key limits (issue 13).
    #[command(flatten)]
    pub capacity: crate::capacity::CapacityConfig,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("grpc_listen_addr", &self.grpc_listen_addr)
            .field("metrics_listen_addr", &self.metrics_listen_addr)
            .field("database_url", &crate::store::redacted_url(&self.database_url))
            .field("database_max_connections", &self.database_max_connections)
            .field("database_connect_timeout", &self.database_connect_timeout)
            .field("store_probe_interval", &self.store_probe_interval)
            .field("usage_retention", &self.usage_retention)
            .field("encryption_key_set", &self.encryption_key.is_some())
            .field("audit_retention", &self.audit_retention)
            .field("product", &self.product)
            .field("stream", &self.stream)
            .field("tls", &self.tls)
            .field("grpc_limits", &self.grpc_limits)
            .field("capacity", &self.capacity)
            .finish()
    }
}

/// The config stream to data planes.
#[derive(Args, Clone)]
pub struct StreamConfig {
    /// The token data planes must present to subscribe (`AURORA_NODE_TOKEN` or the file
    /// `AURORA_NODE_TOKEN_FILE` names; never a flag). Required: the stream carries upstream
    /// credentials, so the control plane does not start without one.
    #[arg(skip)]
    pub node_token: Option<String>,

    /// How often an idle stream carries a heartbeat with the head revision.
    #[arg(long, env = "AURORA_HEARTBEAT_INTERVAL", default_value = "5s", value_parser = aurora_core::parse_positive_duration)]
    pub heartbeat_interval: Duration,

    /// How many revisions the change log keeps; a replica further behind gets a full snapshot.
    #[arg(long, env = "AURORA_CHANGE_LOG_RETENTION", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub change_log_retention: u64,
}

/// Hand-written: the node token must never reach a log line.
impl std::fmt::Debug for StreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamConfig")
            .field("node_token_set", &self.node_token.is_some())
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("change_log_retention", &self.change_log_retention)
            .finish()
    }
}

/// TLS for the gRPC listener (rustls).
#[derive(Args, Debug, Clone, Default)]
pub struct TlsConfig {
    /// Server certificate chain (PEM). With --tls-key, the listener speaks only TLS.
    #[arg(long, env = "AURORA_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// Private key (PEM) of the server certificate.
    #[arg(long, env = "AURORA_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// CA (PEM) that client certificates must chain to: enables mutual TLS.
    #[arg(long, env = "AURORA_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
}

impl Config {
    /// How a PostgreSQL store connects.
    pub fn pg_pool(&self) -> crate::store::PgPoolConfig {
        crate::store::PgPoolConfig {
            max_connections: self.database_max_connections,
            connect_timeout: self.database_connect_timeout,
        }
    }

    /// A configuration for tests and embedding: listen on `addr`, store in `database_url`,
    /// data planes authenticate with `node_token`, no product variables set, no TLS, no
    /// metrics listener.
    pub fn new(grpc_listen_addr: SocketAddr, database_url: impl Into<String>, node_token: impl Into<String>) -> Self {
        Config {
            grpc_listen_addr,
            metrics_listen_addr: None,
            database_url: database_url.into(),
            database_max_connections: 10,
            database_connect_timeout: Duration::from_secs(5),
            store_probe_interval: Duration::from_secs(5),
            usage_retention: Duration::from_secs(400 * 24 * 3600),
            encryption_key: None,
            audit_retention: None,
            product: ProductVars::default(),
            stream: StreamConfig {
                node_token: Some(node_token.into()),
                heartbeat_interval: Duration::from_secs(5),
                change_log_retention: 10_000,
            },
            tls: TlsConfig::default(),
            grpc_limits: crate::grpc_limits::GrpcLimits::default(),
            capacity: crate::capacity::CapacityConfig::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    #[test]
    fn defaults_match_the_documentation() {
        let config = Cli::try_parse_from(["x"]).expect("defaults parse").config;
        assert_eq!(config.grpc_listen_addr.to_string(), "127.0.0.1:50051", "loopback unless told otherwise");
        assert_eq!(config.metrics_listen_addr.map(|a| a.to_string()).as_deref(), Some("127.0.0.1:9091"));
        assert_eq!(config.database_url, "sqlite://aurora-data/aurora.db");
        assert_eq!(config.pg_pool(), crate::store::PgPoolConfig::default());
        assert_eq!(config.usage_retention, Duration::from_secs(400 * 24 * 3600));
        assert!(Cli::try_parse_from(["x", "--grpc-listen-addr", "nowhere"]).is_err());
    }

    #[test]
    fn debug_output_never_shows_the_database_password() {
        let url = "postgres://aurora:S3cret-pw@db:5432/aurora?password=S3cret-pw";
        let config = Cli::try_parse_from(["x", "--database-url", url]).unwrap().config;
        let shown = format!("{config:?}");
        assert!(!shown.contains("S3cret-pw"), "{shown}");
        assert!(shown.contains("postgres://***@db:5432/aurora"), "{shown}");
    }
}
