//! `aurora up`: a complete gateway on one machine, in one process.
//!
//! Runs a control plane (SQLite in the data directory) and one data plane subscribed to it over
//! real gRPC on loopback, exactly as separate processes would be. The master key and node token
//! are generated on first run and kept in the data directory (mode 0600), so restarts keep the
//! same credentials; `AURORA_MASTER_KEY` overrides the stored master key. So is the key that
//! encrypts the credentials in the database (`encryption.key`), unless `AURORA_ENCRYPTION_KEY`
//! is set.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use aurora_core::{KeySecret, ProductVars, ProviderKind};
use clap::{Args, Parser};

#[derive(Args)]
pub(crate) struct UpArgs {
    /// Where the database, generated credentials and config cache live.
    #[arg(long, env = "AURORA_DATA_DIR", default_value = "aurora-data")]
    data_dir: PathBuf,

    /// The gateway's (data plane's) listen address.
    #[arg(long, env = "AURORA_LISTEN_ADDR", default_value = "127.0.0.1:8080")]
    listen_addr: SocketAddr,

    /// The data plane's admin listener (/healthz, /readyz).
    #[arg(long, env = "AURORA_ADMIN_LISTEN_ADDR", default_value = "127.0.0.1:9090")]
    admin_listen_addr: SocketAddr,

    /// The control plane's gRPC listener (admin API for the `aurora` CLI).
    #[arg(long, env = "AURORA_GRPC_LISTEN_ADDR", default_value = "127.0.0.1:50051")]
    grpc_listen_addr: SocketAddr,

    /// Provider credentials, base URLs and settings, as for `aurora controlplane`.
    #[command(flatten)]
    pub(crate) product: ProductVars,

    /// `AURORA_ENCRYPTION_KEY` (or its file), read by the secrets module; without it the store's
    /// key is generated in the data directory (`encryption.key`, mode 0600).
    #[arg(skip)]
    pub(crate) encryption_key: Option<String>,
}

/// Parses the data plane's configuration with its own defaults, as `aurora dataplane` would.
#[derive(Parser)]
struct DataplaneCli {
    #[command(flatten)]
    config: aurora_dataplane::Config,
}

pub(crate) async fn run(args: UpArgs) -> anyhow::Result<()> {
    // The directory holds the database (with upstream credentials) and the master key.
    let mut dir = std::fs::DirBuilder::new();
    dir.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut dir, 0o700);
    dir.create(&args.data_dir)
        .with_context(|| format!("cannot create the data directory {}", args.data_dir.display()))?;
    let master_key = match args.product.master_key() {
        Some(key) => key.to_owned(),
        None => stored_secret(&args.data_dir.join("master-key"))?,
    };
    let node_token = stored_secret(&args.data_dir.join("node-token"))?;

    let database_url = format!("sqlite://{}", args.data_dir.join("aurora.db").display());
    let mut control_plane_config =
        aurora_controlplane::Config::new(args.grpc_listen_addr, database_url, node_token.clone());
    control_plane_config.product = ProductVars { master_key: Some(master_key.clone()), ..args.product.clone() };
    control_plane_config.encryption_key = args.encryption_key.clone();
    let control_plane = aurora_controlplane::start(control_plane_config).await?;
    let grpc_addr = control_plane.local_addr();

    let cache = args.data_dir.join("dataplane.cache");
    let mut dataplane_config = DataplaneCli::try_parse_from([
        "aurora-dataplane".to_owned(),
        format!("--listen-addr={}", args.listen_addr),
        format!("--admin-listen-addr={}", args.admin_listen_addr),
        format!("--control-plane=http://{grpc_addr}"),
        "--node-id=local".to_owned(),
        format!("--config-cache={}", cache.display()),
    ])
    .context("invalid data-plane settings")?
    .config;
    dataplane_config.control_plane.node_token = Some(node_token);
    let dataplane = aurora_dataplane::start(dataplane_config).await?;
    let gateway_addr = dataplane.local_addr()?;

    print_welcome(&args, gateway_addr, grpc_addr, &master_key)?;

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let shutdown = crate::telemetry::shutdown_signal();
    let signal = tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await.map(|_| ());
    };
    let control_plane = tokio::spawn(control_plane.serve(until_stopped(stopped.clone())));
    dataplane.serve(until_stopped(stopped)).await;
    signal.abort();
    control_plane.await.context("the control plane task failed")??;
    Ok(())
}

/// Reads the secret stored at `path`, or generates one and stores it (readable only by the
/// owner) on first run.
fn stored_secret(path: &Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(secret) if !secret.trim().is_empty() => return Ok(secret.trim().to_owned()),
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
    }
    let secret = KeySecret::generate().into_exposed();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(secret.as_bytes())?;
    file.sync_all()?;
    Ok(secret)
}

fn print_welcome(
    args: &UpArgs,
    gateway_addr: SocketAddr,
    grpc_addr: SocketAddr,
    master_key: &str,
) -> anyhow::Result<()> {
    let gateway = format!("http://{gateway_addr}");
    let with_credentials: Vec<&str> = ProviderKind::ALL
        .into_iter()
        .filter(|kind| args.product.credential(*kind).is_some())
        .map(ProviderKind::as_str)
        .collect();
    let providers = if with_credentials.is_empty() {
        "none yet: set ANTHROPIC_API_KEY, OPENAI_API_KEY, ... and restart, or use `aurora providers set`".to_owned()
    } else {
        with_credentials.join(", ")
    };
    let text = format!(
        "\
Aurora is up.

  Gateway (data plane)   {gateway}/p/{{provider}}/...
  Admin API (gRPC)       http://{grpc_addr}
  Master key             {master_key}
  Data directory         {data_dir}
  Provider credentials   {providers}

Call Anthropic through the gateway with the official SDK:

  from anthropic import Anthropic
  client = Anthropic(base_url=\"{gateway}/p/anthropic\", auth_token=\"{master_key}\")
  message = client.messages.create(
      model=\"claude-3-haiku-20240307\", max_tokens=16,
      messages=[{{\"role\": \"user\", \"content\": \"Reply with exactly ok\"}}],
  )
  print(message.content[0].text)

Create a key for an application:

  AURORA_MASTER_KEY={master_key} aurora keys create --name my-app --control-plane http://{grpc_addr}

",
        data_dir = args.data_dir.display(),
    );
    super::output::print(&text)
}
