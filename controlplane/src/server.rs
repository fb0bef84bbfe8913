//! The gRPC server: the admin API, `grpc.health.v1.Health` and server reflection on one port.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use aurora_proto::v1::admin_service_server::{AdminServiceServer, SERVICE_NAME as ADMIN_SERVICE};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic_health::ServingStatus;

use crate::admin::{AdminApi, AdminAuth};
use crate::config::Config;
use crate::store::{SqliteStore, Store, StoreError};

/// Why the control plane could not start or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// A control plane whose store is open and bootstrapped and whose port is bound, not yet
/// serving. Tests bind port 0 and read [`ControlPlane::local_addr`].
#[derive(Debug)]
pub struct ControlPlane {
    listener: TcpListener,
    local_addr: SocketAddr,
    store: Arc<dyn Store>,
    master_key: Option<aurora_core::KeyHash>,
}

/// Opens the store (migrating it), applies the environment, and binds the listener.
pub async fn start(config: Config) -> Result<ControlPlane, ServerError> {
    let store = SqliteStore::open(&config.database_url).await?;
    crate::bootstrap::run(&store, &config.product).await?;
    let addr = config.grpc_listen_addr;
    let listener = TcpListener::bind(addr).await.map_err(|source| ServerError::Bind { addr, source })?;
    let local_addr = listener.local_addr().map_err(|source| ServerError::Bind { addr, source })?;
    Ok(ControlPlane { listener, local_addr, store: Arc::new(store), master_key: config.product.master_key_hash() })
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

    /// Serves until `shutdown` resolves, then lets in-flight calls finish.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), ServerError> {
        let (health_reporter, health) = tonic_health::server::health_reporter();
        health_reporter.set_service_status(ADMIN_SERVICE, ServingStatus::Serving).await;

        // Reflection describes our services and health, so grpcurl needs no proto files.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(aurora_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;

        // Only the admin API is authenticated: probes and reflection must work without a token.
        let admin = AdminServiceServer::with_interceptor(AdminApi::new(self.store), AdminAuth::new(self.master_key));

        // The same event shape as the data plane's listeners: tests read `addr` from it.
        tracing::info!(listener = "grpc", addr = %self.local_addr, "listening");
        tonic::transport::Server::builder()
            .add_service(health)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(admin)
            .serve_with_incoming_shutdown(TcpListenerStream::new(self.listener), shutdown)
            .await?;
        tracing::info!("control plane stopped");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

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
        let control_plane = start(Config::new("127.0.0.1:0".parse().unwrap(), url)).await.unwrap();
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
