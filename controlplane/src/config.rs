//! The control plane's configuration, parsed once from flags and environment variables.

use std::net::SocketAddr;

use aurora_core::ProductVars;
use clap::Args;

/// Everything `aurora controlplane` is configured with.
#[derive(Args, Debug, Clone)]
pub struct Config {
    /// The address the gRPC server (admin API, health, reflection) listens on.
    #[arg(long, env = "AURORA_GRPC_LISTEN_ADDR", default_value = "0.0.0.0:50051")]
    pub grpc_listen_addr: SocketAddr,

    /// Where the store lives. `sqlite://PATH` (created on first start, parent directory too).
    #[arg(long, env = "AURORA_DATABASE_URL", default_value = "sqlite://aurora-data/aurora.db")]
    pub database_url: String,

    /// The product page's variables, applied to the store at every startup (see bootstrap).
    #[command(flatten)]
    pub product: ProductVars,
}

impl Config {
    /// A configuration for tests and embedding: listen on `addr`, store in `database_url`,
    /// no product variables set.
    pub fn new(grpc_listen_addr: SocketAddr, database_url: impl Into<String>) -> Self {
        Config { grpc_listen_addr, database_url: database_url.into(), product: ProductVars::default() }
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
        assert_eq!(config.grpc_listen_addr.to_string(), "0.0.0.0:50051");
        assert_eq!(config.database_url, "sqlite://aurora-data/aurora.db");
        assert!(Cli::try_parse_from(["x", "--grpc-listen-addr", "nowhere"]).is_err());
    }
}
