//! The gRPC server: the admin API, the config stream, `grpc.health.v1.Health` and server
//! reflection, all on one port, optionally behind rustls TLS.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aurora_proto::encoded::config_service_server::ConfigServiceServer;
use aurora_proto::v1::admin_service_server::AdminServiceServer;
use aurora_proto::v1::config_service_server::SERVICE_NAME as CONFIG_SERVICE;
use tokio::net::TcpListener;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tonic_health::ServingStatus;

use crate::admin::{AdminApi, AdminAuth};
use crate::config::{Config, TlsConfig};
use crate::config_stream::{ChangeFeed, ConfigStream, NodeAuth, SnapshotSource, UsageIngest};
use crate::fleet::Fleet;
use crate::grpc_limits::{self, GrpcLimits};
use crate::metrics::{AdminCalls, Metrics};
use crate::store::{Store, StoreError};

/// How often the change feed checks the store for commits made by other control-plane
/// processes; commits made by this one are pushed at once.
const FEED_POLL: Duration = Duration::from_secs(1);
/// How often the change log is trimmed to its retention.
const COMPACTION_INTERVAL: Duration = Duration::from_secs(60);
/// Revisions kept in memory for resuming replicas (the store may keep more).
const FEED_CAPACITY: u64 = 10_000;
/// How often usage older than `AURORA_USAGE_RETENTION` is deleted.
const USAGE_PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

/// Why the control plane could not start or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error(
        "AURORA_NODE_TOKEN is not set: the config stream carries upstream credentials, so the control plane \
         will not serve it without a token for data planes to present (set the same AURORA_NODE_TOKEN on every data plane)"
    )]
    NodeTokenMissing,
    #[error("cannot read {path}: {source}")]
    TlsFile { path: String, source: std::io::Error },
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error(transparent)]
    EncryptionKey(#[from] crate::encryption::EncryptionKeyError),
    #[error(
        "the store holds credentials sealed under encryption key {key_id}, but neither AURORA_ENCRYPTION_KEY nor \
         AURORA_ENCRYPTION_KEY_FILE is set and there is no {} beside the database: set AURORA_ENCRYPTION_KEY to the \
         key they were sealed with",
        crate::encryption::KEY_FILE_NAME
    )]
    EncryptionKeyMissing { key_id: crate::store::KeyId },
    #[error(
        "AURORA_MASTER_KEY is {length} characters long; it must have at least {MIN_MASTER_KEY_LEN}: generate one with \
         `openssl rand -base64 32`"
    )]
    MasterKeyTooShort { length: usize },
    #[error(
        "AURORA_LEASE_TTL ({ttl:?}) must be longer than AURORA_LEASE_INTERVAL ({interval:?}): leases would lapse between \
         two grants"
    )]
    LeaseTiming { ttl: Duration, interval: Duration },
}

/// The shortest master key the control plane accepts: it guards every admin call, so it must
/// not be guessable even by an offline search.
pub const MIN_MASTER_KEY_LEN: usize = 32;

/// A control plane whose store is open and bootstrapped and whose port is bound, not yet
/// serving. Tests bind port 0 and read [`ControlPlane::local_addr`].
#[derive(Debug)]
pub struct ControlPlane {
    listener: TcpListener,
    local_addr: SocketAddr,
    store: Arc<dyn Store>,
    admin_auth: AdminAuth,
    node_auth: NodeAuth,
    tls: Option<ServerTlsConfig>,
    feed: Arc<ChangeFeed>,
    fleet: Arc<Fleet>,
    metrics: Arc<Metrics>,
    metrics_listener: Option<TcpListener>,
    heartbeat: Duration,
    retention: u64,
    probe_interval: Duration,
    limits: GrpcLimits,
    usage_retention: Duration,
    /// This process's id in audit records and the presence table.
    replica: Arc<str>,
    audit_retention: Option<Duration>,
    /// Per-key limits' capacity leases (issue 13).
    capacity: Arc<crate::capacity::Capacity>,
}

/// Opens the store (migrating it), applies the environment, and binds the listener.
pub async fn start(config: Config) -> Result<ControlPlane, ServerError> {
    let node_token =
        config.stream.node_token.as_deref().filter(|t| !t.is_empty()).ok_or(ServerError::NodeTokenMissing)?;
    let node_auth = NodeAuth::new(node_token);
    let tls = tls_config(&config.tls)?;
    if let Some(key) = config.product.master_key() {
        let length = key.chars().count();
        if length < MIN_MASTER_KEY_LEN {
            return Err(ServerError::MasterKeyTooShort { length });
        }
    }
    let (ttl, interval) = (config.capacity.lease_ttl, config.capacity.lease_interval);
    if ttl <= interval {
        return Err(ServerError::LeaseTiming { ttl, interval });
    }
    let store = open_store(&config).await?;
    let replica = crate::replica::this_process();
    crate::bootstrap::run(store.as_ref(), &config.product, replica.clone()).await?;
    let capacity = usize::try_from(config.stream.change_log_retention.min(FEED_CAPACITY)).unwrap_or(usize::MAX);
    let feed = ChangeFeed::start(store.clone(), capacity, FEED_POLL).await?;
    let addr = config.grpc_listen_addr;
    let listener = TcpListener::bind(addr).await.map_err(|source| ServerError::Bind { addr, source })?;
    let local_addr = listener.local_addr().map_err(|source| ServerError::Bind { addr, source })?;
    let metrics_listener = match config.metrics_listen_addr {
        Some(addr) => {
            let listener = TcpListener::bind(addr).await.map_err(|source| ServerError::Bind { addr, source })?;
            let local = listener.local_addr().map_err(|source| ServerError::Bind { addr, source })?;
            tracing::info!(listener = "metrics", addr = %local, "listening");
            Some(listener)
        }
        None => None,
    };
    let fleet = Fleet::new();
    let capacity = crate::capacity::Capacity::new(config.capacity.clone(), Arc::new(crate::capacity::SystemClock));
    let metrics = Arc::new(Metrics::new(feed.clone(), fleet.clone(), store.write_status()));
    Ok(ControlPlane {
        listener,
        local_addr,
        store,
        admin_auth: AdminAuth::new(config.product.master_key()),
        node_auth,
        tls,
        feed,
        fleet,
        metrics,
        metrics_listener,
        heartbeat: config.stream.heartbeat_interval,
        retention: config.stream.change_log_retention,
        probe_interval: config.store_probe_interval,
        limits: config.grpc_limits,
        usage_retention: config.usage_retention,
        replica,
        audit_retention: config.audit_retention,
        capacity,
    })
}

/// Opens the store with the keyring `config` resolves to (see `encryption.rs`).
async fn open_store(config: &Config) -> Result<Arc<dyn Store>, ServerError> {
    use crate::encryption::KeySource;
    use crate::store::SealError;

    let (keyring, source) = crate::encryption::resolve(config.encryption_key.as_deref(), &config.database_url)?;
    match crate::store::open(&config.database_url, config.pg_pool(), keyring).await {
        Ok(store) => Ok(store),
        Err(err) => {
            if let KeySource::Generated(path) = &source {
                // A key made for a store it cannot open is of no use; the next start must not
                // mistake it for the store's.
                let _ = std::fs::remove_file(path);
                if let StoreError::Sealed { source: SealError::UnknownKey(key_id), .. } = &err {
                    return Err(ServerError::EncryptionKeyMissing { key_id: *key_id });
                }
            }
            Err(err.into())
        }
    }
}

/// `aurora controlplane re-encrypt`: opens the store `config` names, re-wraps every credential's
/// data key under the current `AURORA_ENCRYPTION_KEY`, and closes it. Safe while replicas run.
pub async fn reencrypt(config: &Config) -> Result<crate::store::Reencrypted, ServerError> {
    let store = open_store(config).await?;
    let report = store.reencrypt().await;
    store.close().await;
    Ok(report?)
}

/// [`start`], then [`ControlPlane::serve`] until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send) -> Result<(), ServerError> {
    start(config).await?.serve(shutdown).await
}

impl ControlPlane {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn store(&self) -> Arc<dyn Store> {
        Arc::clone(&self.store)
    }

    pub fn fleet(&self) -> Arc<Fleet> {
        Arc::clone(&self.fleet)
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// The metrics listener's address, if one is configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().and_then(|listener| listener.local_addr().ok())
    }

    /// Serves until `shutdown` resolves. Config streams are closed at once (so data planes
    /// reconnect elsewhere immediately), then in-flight admin calls finish, and the store is
    /// closed consistently (checkpointed) whether serving ended cleanly or not.
    pub async fn serve(mut self, shutdown: impl Future<Output = ()> + Send) -> Result<(), ServerError> {
        let store = self.store.clone();
        let mut background = tokio::task::JoinSet::new();
        if let Some(listener) = self.metrics_listener.take() {
            background.spawn(crate::metrics::server::serve(listener, self.metrics.clone()));
        }
        background.spawn(self.metrics.convergence.clone().track(self.feed.clone(), self.fleet.clone()));
        let oldest = self.metrics.oldest_retained.clone();
        background.spawn(compact(self.store.clone(), self.retention, self.audit_retention, oldest));
        background.spawn(crate::health::probe_writes(self.store.clone(), self.probe_interval));
        background.spawn(prune_usage(self.store.clone(), self.usage_retention));
        // Several replicas on one database: each sees every replica's data planes.
        let presence = self.store.presence_table();
        let instance = self.replica.to_string();
        background.spawn(self.capacity.clone().run(self.store.clone()));
        if let Some(table) = &presence {
            background.spawn(crate::capacity::share(self.capacity.clone(), table.clone(), instance.clone()));
            let timing = crate::fleet_share::Timing::default();
            background.spawn(crate::fleet_share::share(self.fleet.clone(), table.clone(), instance.clone(), timing));
            background.spawn(crate::credential_share::share(self.fleet.clone(), table.clone(), instance.clone()));
        }
        let result = self.serve_grpc(shutdown).await;
        background.shutdown().await;
        if let Some(table) = presence {
            // Our streams are closed: other replicas drop them now rather than at expiry.
            let _ = table.publish(&instance, &[], crate::fleet_share::Timing::default().ttl).await;
        }
        store.close().await;
        tracing::info!("control plane stopped");
        result
    }

    async fn serve_grpc(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), ServerError> {
        let (health_reporter, health) = tonic_health::server::health_reporter();
        health_reporter.set_service_status(CONFIG_SERVICE, ServingStatus::Serving).await;
        // "" and AdminService follow whether the store can write.
        let write_health = tokio::spawn(crate::health::report_grpc(self.store.write_status(), health_reporter.clone()));

        // Reflection describes our services and health, so grpcurl needs no proto files.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(aurora_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection().build_v1()?.max_decoding_message_size(grpc_limits::PROBE_MAX_MESSAGE);
        let reflection_v1alpha =
            reflection().build_v1alpha()?.max_decoding_message_size(grpc_limits::PROBE_MAX_MESSAGE);
        let health = health.max_decoding_message_size(grpc_limits::PROBE_MAX_MESSAGE);

        // Probes and reflection work without a token; the admin API needs the master key and
        // the config stream the node token.
        let admin = AdminServiceServer::new(
            AdminApi::new(self.store.clone(), self.fleet.clone(), self.replica.clone())
                .with_capacity(self.capacity.clone()),
        )
        .max_decoding_message_size(grpc_limits::ADMIN_MAX_MESSAGE);
        let admin = tonic::service::interceptor::InterceptedService::new(admin, self.admin_auth.clone());
        // Outside the interceptor, so refused calls are counted too.
        let admin = AdminCalls::new(admin, self.metrics.admin_calls.clone());
        let (closing, closed) = tokio::sync::watch::channel(false);
        let snapshots = Arc::new(SnapshotSource::new(self.store.clone()));
        let usage = UsageIngest::start(self.store.clone(), self.usage_retention, self.metrics.usage.clone());
        let stream = ConfigStream::new(self.feed.clone(), snapshots, self.fleet.clone(), self.heartbeat, closed)
            .with_usage(usage)
            .with_capacity(self.capacity.clone());
        let config = ConfigServiceServer::new(stream).max_decoding_message_size(grpc_limits::CONFIG_STREAM_MAX_MESSAGE);
        let config = tonic::service::interceptor::InterceptedService::new(config, self.node_auth);

        let fleet = self.fleet.clone();
        let shutdown = async move {
            shutdown.await;
            write_health.abort();
            health_reporter.set_service_status("", ServingStatus::NotServing).await;
            let _ = closing.send(true);
            // In-flight `WaitForRevision` calls end now, failing with what is still pending,
            // rather than holding up the drain until their timeout.
            fleet.close();
        };

        let tls_enabled = self.tls.is_some();
        let limits = &self.limits;
        let mut builder = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(5)))
            .max_concurrent_streams(limits.max_streams_per_connection)
            .initial_stream_window_size(grpc_limits::STREAM_WINDOW)
            .initial_connection_window_size(grpc_limits::CONNECTION_WINDOW);
        if let Some(tls) = self.tls {
            builder = builder.tls_config(tls)?;
        }
        let incoming =
            grpc_limits::limit_connections(self.listener, limits.max_connections, self.metrics.connections.clone());
        tracing::info!(listener = "grpc", addr = %self.local_addr, tls = tls_enabled, "listening");
        if !tls_enabled && !self.local_addr.ip().is_loopback() {
            tracing::warn!(
                addr = %self.local_addr,
                "the gRPC port serves plaintext beyond loopback: the config stream carries upstream credentials, so \
                 keep this port on a private network or set AURORA_TLS_CERT and AURORA_TLS_KEY"
            );
        }
        builder
            .layer(tower::util::MapRequestLayer::new(grpc_limits::request_deadline(limits.request_timeout)))
            .add_service(health)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(admin)
            .add_service(config)
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await?;
        Ok(())
    }
}

/// The rustls server configuration, if TLS is configured: certificate and key, plus a client
/// CA for mutual TLS.
fn tls_config(config: &TlsConfig) -> Result<Option<ServerTlsConfig>, ServerError> {
    let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
        return Ok(None);
    };
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|source| ServerError::TlsFile { path: path.display().to_string(), source })
    };
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?));
    if let Some(ca) = &config.tls_client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(read(ca)?));
    }
    Ok(Some(tls))
}

/// Trims the change log to its retention now and then; replicas further behind get snapshots.
/// Also reports where the log now starts, for the change-log length metric, and prunes the
/// audit trail to `AURORA_AUDIT_RETENTION` when one is set (never otherwise).
async fn compact(
    store: Arc<dyn Store>,
    retention: u64,
    audit_retention: Option<Duration>,
    oldest_retained: Arc<AtomicU64>,
) {
    let mut interval = tokio::time::interval(COMPACTION_INTERVAL);
    loop {
        interval.tick().await;
        if let Some(keep) = audit_retention {
            let before = std::time::SystemTime::now().checked_sub(keep).unwrap_or(std::time::UNIX_EPOCH);
            if let Err(err) = store.prune_audit(before).await {
                tracing::warn!(error = %err, "cannot prune the audit trail");
            }
        }
        match store.compact_changes(retention).await {
            Ok(0) => {}
            Ok(dropped) => tracing::info!(dropped, retention, "compacted the change log"),
            Err(err) => tracing::warn!(error = %err, "cannot compact the change log"),
        }
        if let Ok(oldest) = store.oldest_retained_revision().await {
            oldest_retained.store(oldest, Ordering::Relaxed);
        }
    }
}

/// Deletes usage older than the retention, hourly (each replica on PostgreSQL does too: the
/// deletes are idempotent).
async fn prune_usage(store: Arc<dyn Store>, retention: Duration) {
    let mut interval = tokio::time::interval(USAGE_PRUNE_INTERVAL);
    loop {
        interval.tick().await;
        let cutoff = std::time::SystemTime::now().checked_sub(retention).unwrap_or(std::time::UNIX_EPOCH);
        match store.prune_usage(cutoff).await {
            Ok(0) => {}
            Ok(rows) => tracing::info!(rows, ?retention, "pruned usage older than the retention"),
            Err(err) => tracing::warn!(error = %err, "cannot prune usage"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use aurora_proto::v1::admin_service_server::SERVICE_NAME as ADMIN_SERVICE;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus as Status;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    use super::*;

    async fn serve() -> (SocketAddr, tokio::sync::oneshot::Sender<()>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("cp.db").display());
        let control_plane = start(Config::new("127.0.0.1:0".parse().unwrap(), url, "node-token")).await.unwrap();
        let addr = control_plane.local_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(control_plane.serve(async move {
            let _ = stopped.await;
        }));
        (addr, stop, dir)
    }

    async fn channel(addr: SocketAddr) -> tonic::transport::Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap()
    }

    #[tokio::test]
    async fn health_answers_serving_without_a_token() {
        let (addr, _stop, _dir) = serve().await;
        let mut client = HealthClient::new(channel(addr).await);
        for service in ["", ADMIN_SERVICE] {
            let response = client.check(HealthCheckRequest { service: service.into() }).await.unwrap();
            assert_eq!(response.into_inner().status(), Status::Serving, "{service:?}");
        }
    }

    #[tokio::test]
    async fn reflection_lists_and_describes_every_service() {
        let (addr, _stop, _dir) = serve().await;
        let mut client = ServerReflectionClient::new(channel(addr).await);
        let requests = [
            MessageRequest::ListServices(String::new()),
            MessageRequest::FileContainingSymbol(ADMIN_SERVICE.into()),
            MessageRequest::FileContainingSymbol("grpc.health.v1.Health".into()),
        ];
        let requests =
            requests.map(|message| ServerReflectionRequest { host: String::new(), message_request: Some(message) });
        let mut responses = client.server_reflection_info(tokio_stream::iter(requests)).await.unwrap().into_inner();

        let Some(MessageResponse::ListServicesResponse(list)) =
            responses.message().await.unwrap().unwrap().message_response
        else {
            panic!("expected a service list")
        };
        let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
        for expected in [ADMIN_SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"] {
            assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
        }
        for _ in 0..2 {
            let response = responses.message().await.unwrap().unwrap().message_response;
            assert!(
                matches!(response, Some(MessageResponse::FileDescriptorResponse(ref files)) if !files.file_descriptor_proto.is_empty()),
                "{response:?}"
            );
        }
    }
}
