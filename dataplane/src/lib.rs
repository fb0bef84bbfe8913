//! The Aurora data plane: a stateless proxy for provider-native LLM APIs.
//!
//! `/p/{provider}/{endpoint}` is forwarded to the provider untranslated: the gateway's own token
//! is checked, the client's credentials are removed, the provider credential is injected, and
//! bodies stream both ways. The configuration it enforces is one immutable [`Snapshot`], read by
//! the request path without locks and replaced atomically by whatever feeds it: the control
//! plane's config stream ([`subscription`], backed by the last-known-good [`cache`]), a JSON
//! file, or the environment. The request path never waits on anything but the upstream.
//!
//! Code map, in the order a request flows: [`server`] accepts connections, [`proxy`] runs the
//! request path using [`route`], [`auth`] and [`headers`] against the [`state`]'s current
//! [`snapshot`], sends it through the [`upstream`] client, and [`error`] turns every refusal
//! into a provider-shaped response. [`access`] records each request (log line and [`metrics`])
//! when its response ends; [`admin`] serves probes and `/metrics`. At start, [`fdlimit`] raises
//! the open-file limit and fits the connection cap under it.

pub mod access;
pub mod admin;
pub mod auth;
pub mod body;
pub mod cache;
pub mod config;
pub mod credentials;
pub mod deadline;
pub mod egress;
pub mod error;
pub mod fdlimit;
pub mod headers;
pub mod limits;
pub mod metering;
pub mod metrics;
pub mod proxy;
pub mod request_id;
pub mod route;
pub mod server;
pub mod snapshot;
pub mod state;
pub mod subscription;
pub mod upstream;
pub mod usage;
pub mod usage_report;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

pub use config::Config;
pub use snapshot::Snapshot;

use crate::admin::Admin;
use crate::cache::writer::Durability;
use crate::cache::{CacheKey, ConfigCache};
use crate::metering::Metering;
use crate::metrics::{ConfigMetrics, Metrics};
use crate::proxy::Proxy;
use crate::snapshot::{InvalidCredential, SnapshotFile, SnapshotFileError};
use crate::state::ConfigState;

/// Why the data plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot start the serving workers' runtimes: {0}")]
    Workers(std::io::Error),
    #[error(transparent)]
    ConfigFile(#[from] SnapshotFileError),
    #[error(transparent)]
    Credential(#[from] InvalidCredential),
    #[error(transparent)]
    Upstream(#[from] upstream::UpstreamSetupError),
    #[error(transparent)]
    ControlPlane(#[from] subscription::ConnectError),
    #[error(
        "AURORA_NODE_TOKEN is required with AURORA_CONTROL_PLANE_URL: the config stream carries upstream credentials and is never opened without one"
    )]
    NodeTokenMissing,
    #[error("AURORA_NODE_TOKEN must be printable ASCII without spaces")]
    NodeTokenInvalid,
    #[error("AURORA_CONTROL_PLANE_URL names no control plane")]
    NoControlPlaneUrl,
    #[error(transparent)]
    UsageSpool(#[from] usage_report::spool::SpoolError),
}

/// Runs a data plane until `shutdown` resolves, then drains and returns.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send) -> Result<(), StartError> {
    start(config).await?.serve(shutdown).await;
    Ok(())
}

/// A data plane whose configuration sources are running and whose listeners are bound, not yet
/// serving. Binding first lets callers (tests, `aurora up`) learn the addresses of port-0
/// listeners before traffic starts.
#[derive(Debug)]
pub struct Dataplane {
    proxy: Arc<Proxy>,
    admin: Arc<Admin>,
    /// The passthrough listener's workers, one listener socket and runtime each.
    workers: Vec<server::workers::Worker>,
    admin_listener: tokio::net::TcpListener,
    connection_metrics: metrics::ConnectionMetrics,
    /// Background tasks that feed the state; stopped when the data plane stops.
    feeders: tokio::task::JoinSet<()>,
    limits: config::Limits,
    connections: config::ConnectionConfig,
    shutdown: config::ShutdownConfig,
    /// Flushed at shutdown, once requests have drained.
    usage: Option<Arc<usage_report::UsageReporter>>,
}

/// The admin listener's connection cap: probes and scrapes need a handful, and a fixed bound
/// keeps them from competing with the passthrough listener for file descriptors.
const ADMIN_MAX_CONNECTIONS: u32 = 64;

/// Loads or subscribes to the configuration and binds both listeners.
pub async fn start(mut config: Config) -> Result<Dataplane, StartError> {
    let open_file_limit = fdlimit::raise();
    config.connections.max_connections = fdlimit::fit_connections(config.connections.max_connections, open_file_limit);
    tracing::info!(
        max_connections = config.connections.max_connections,
        open_file_limit,
        idle_timeout = ?config.connections.idle_timeout,
        "connection limits"
    );
    let state = Arc::new(ConfigState::new());
    let mut feeders = tokio::task::JoinSet::new();
    let subscribed = !config.control_plane.urls.is_empty();
    let config_metrics = subscribed.then(ConfigMetrics::new);
    let worker_count = config.serving.worker_threads();
    // The request-path metrics get one shard per worker, so workers never write a shared line.
    let mut metrics = Metrics::sharded(state.clone(), config_metrics.clone(), worker_count);
    let usage_metrics = usage_report::UsageReportMetrics::default();
    metrics.register_usage(&usage_metrics);
    // Per-key limits' state, shared by the request path and the config stream (leases in,
    // demand out); without a control plane no lease ever arrives and the fallback applies.
    let limiters = Arc::new(limits::Limiters::default());
    metrics.register_limits(limiters.clone());
    let metrics = Arc::new(metrics);
    let mut usage_reporter = None;
    let mut usage_sink: Arc<dyn usage::UsageSink> = Arc::new(usage::DiscardUsage);
    if let Some(config_metrics) = config_metrics {
        let (aggregator, reporter) = usage_reporting(&config, usage_metrics)?;
        usage_sink = aggregator;
        feeders.spawn(reporter.clone().run(config.usage.interval));
        subscribe(&config.control_plane, &state, config_metrics, reporter.clone(), limiters.clone(), &mut feeders)?;
        usage_reporter = Some(reporter);
    } else {
        let (snapshot, source) = match &config.config_file {
            Some(path) => (SnapshotFile::load(path)?, "config file"),
            None => (Snapshot::from_product_vars(&config.static_config)?, "environment"),
        };
        tracing::info!(
            revision = snapshot.revision,
            source,
            enabled_providers = %snapshot.enabled_providers(),
            auth_required = snapshot.auth_required(),
            "configuration applied"
        );
        state.publish(Arc::new(snapshot));
    }

    let upstreams = upstream::build(&config.upstream, worker_count)?;
    // Without a control plane usage is logged and counted, not kept.
    let metering = Metering::new(config.usage_metering.is_on());
    let recorder = access::Recorder { metrics: metrics.requests.clone(), usage: usage_sink };
    let proxy =
        Arc::new(Proxy::new(state.clone(), upstreams, recorder, &config.upstream, &config.limits, metering, limiters));
    let connection_metrics = metrics.connections.clone();
    let admin = Arc::new(Admin::new(state, metrics));
    let bind =
        |name, addr| async move { server::bind(name, addr).await.map_err(|source| StartError::Bind { addr, source }) };
    let addr = config.listen_addr;
    let listeners =
        server::bind_shared("passthrough", addr, worker_count).map_err(|source| StartError::Bind { addr, source })?;
    Ok(Dataplane {
        proxy,
        admin,
        workers: server::workers::Worker::build(listeners).map_err(StartError::Workers)?,
        connection_metrics,
        admin_listener: bind("admin", config.admin_listen_addr).await?,
        feeders,
        limits: config.limits,
        connections: config.connections,
        shutdown: config.shutdown,
        usage: usage_reporter,
    })
}

/// The usage aggregate and its reporter, spooling to `AURORA_USAGE_SPOOL_DIR` or next to the
/// configuration cache.
fn usage_reporting(
    config: &Config,
    metrics: usage_report::UsageReportMetrics,
) -> Result<(Arc<usage_report::Aggregator>, Arc<usage_report::UsageReporter>), StartError> {
    let spool_dir = config.usage.spool_dir.clone().or_else(|| {
        let cache = config.control_plane.config_cache.as_deref()?;
        Some(cache.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new(".")).to_owned())
    });
    let spool = spool_dir.as_deref().map(usage_report::Spool::open).transpose()?;
    match &spool {
        Some(spool) => {
            tracing::info!(spool = %spool.dir().display(), interval = ?config.usage.interval, "usage reporting")
        }
        None => tracing::warn!(
            "usage reporting without a spool (set AURORA_USAGE_SPOOL_DIR or AURORA_CONFIG_CACHE): reports not yet acknowledged when the data plane stops are lost"
        ),
    }
    let aggregator = Arc::new(usage_report::Aggregator::new(usage_report::aggregate::system_clock()));
    let node_id = config.control_plane.node_id.clone().unwrap_or_else(default_node_id);
    let max_pending = usize::try_from(config.usage.max_pending).unwrap_or(usize::MAX);
    let reporter = usage_report::UsageReporter::new(node_id, aggregator.clone(), spool, max_pending, metrics);
    Ok((aggregator, Arc::new(reporter)))
}

impl Dataplane {
    /// The passthrough listener's address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self.workers.first() {
            Some(worker) => worker.local_addr(),
            None => Err(std::io::Error::from(std::io::ErrorKind::NotConnected)),
        }
    }

    /// The admin listener's address.
    pub fn admin_addr(&self) -> std::io::Result<SocketAddr> {
        self.admin_listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then shuts down gracefully: `/readyz` turns 503 at
    /// once, the listener keeps accepting for the drain delay (so load balancers notice and
    /// stop sending), then stops, and in-flight requests and streams get the grace period.
    pub async fn serve(mut self, shutdown: impl Future<Output = ()> + Send) {
        let settings =
            server::Settings { limits: self.limits, connections: self.connections, grace: self.shutdown.grace };
        let admin_listener = server::Listener {
            name: "admin",
            tcp: self.admin_listener,
            cap: server::ConnectionCap::new(ADMIN_MAX_CONNECTIONS),
            // Not exported: the connection metrics describe the passthrough listener.
            metrics: metrics::ConnectionMetrics::default(),
        };
        let passthrough = server::workers::Serving {
            name: "passthrough",
            handler: self.proxy,
            settings,
            cap: server::ConnectionCap::new(self.connections.max_connections),
            metrics: self.connection_metrics,
        };
        let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
        let admin_task = tokio::spawn(server::serve(admin_listener, self.admin.clone(), settings, async {
            let _ = admin_stopped.await;
        }));

        let admin = self.admin.clone();
        let drain_delay = self.shutdown.drain_delay;
        let stop_accepting = async move {
            shutdown.await;
            admin.start_draining();
            tracing::info!(drain_delay = ?drain_delay, "shutting down: /readyz is now 503");
            tokio::time::sleep(drain_delay).await;
        };
        server::workers::serve(self.workers, passthrough, stop_accepting).await;

        // Every request has ended, so its usage is in the aggregate: deliver it (or spool it)
        // while the config stream is still up.
        if let Some(usage) = &self.usage {
            usage.flush(usage_report::FLUSH_DEADLINE).await;
        }
        let _ = stop_admin.send(());
        let _ = admin_task.await;
        self.feeders.shutdown().await;
        tracing::info!("data plane stopped");
    }
}

/// Starts the config-stream subscription (and the cache writer), after publishing the cached
/// configuration if there is a valid one.
fn subscribe(
    config: &config::ControlPlaneConfig,
    state: &Arc<ConfigState>,
    metrics: ConfigMetrics,
    usage: Arc<usage_report::UsageReporter>,
    limiters: Arc<limits::Limiters>,
    feeders: &mut tokio::task::JoinSet<()>,
) -> Result<(), StartError> {
    let node_token = config.node_token.as_deref().filter(|t| !t.is_empty()).ok_or(StartError::NodeTokenMissing)?;
    if !node_token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(StartError::NodeTokenInvalid);
    }
    let endpoints = subscription::Endpoints::new(config)?;
    if endpoints.is_empty() {
        return Err(StartError::NoControlPlaneUrl);
    }
    let cache_secret = config.cache_key.as_deref().filter(|k| !k.is_empty()).unwrap_or(node_token);
    let cache =
        config.config_cache.as_deref().map(|path| ConfigCache::new(path, CacheKey::derive(cache_secret.as_bytes())));
    let recovered = cache.as_ref().and_then(ConfigCache::recover);
    let recovered_revision = recovered.as_ref().map(|r| r.snapshot.revision);
    if let Some(recovered) = recovered {
        state.publish(recovered.snapshot);
    }
    let (applied, _) = tokio::sync::watch::channel(None);
    let durability = match cache {
        Some(cache) => {
            let (durability, writer) = Durability::start(cache, recovered_revision);
            feeders.spawn(writer);
            durability
        }
        None => Durability::none(),
    };
    let subscriber = subscription::Subscriber {
        node_id: config.node_id.clone().unwrap_or_else(default_node_id),
        node_token: node_token.into(),
        stall_timeout: config.stall_timeout,
        state: state.clone(),
        applied,
        durability,
        metrics,
        usage: Some(usage),
        limiters,
    };
    tracing::info!(node_id = %subscriber.node_id, control_planes = ?config.urls, "subscribing to the control plane");
    feeders.spawn(subscriber.run(endpoints));
    Ok(())
}

/// The host name (the pod name on Kubernetes), or a random id.
fn default_node_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| format!("dataplane-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]))
}
