//! The Aurora data plane: a stateless proxy for provider-native LLM APIs.
//!
//! `/p/{provider}/{endpoint}` is forwarded to the provider untranslated: the gateway's own token
//! is checked, the client's credentials are removed, the provider credential is injected, and
//! bodies stream both ways. The configuration it enforces is one immutable [`Snapshot`], read by
//! the request path without locks and replaced atomically by whatever feeds it (a JSON file or
//! the environment today). The request path never waits on anything but the upstream.
//!
//! Code map, in the order a request flows: [`server`] accepts connections, [`proxy`] runs the
//! request path using [`route`], [`auth`] and [`headers`] against the [`state`]'s current
//! [`snapshot`], sends it through the [`upstream`] client, and [`error`] turns every refusal
//! into a provider-shaped response.

pub mod admin;
pub mod auth;
pub mod body;
pub mod config;
pub mod error;
pub mod headers;
pub mod proxy;
pub mod request_id;
pub mod route;
pub mod server;
pub mod snapshot;
pub mod state;
pub mod upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

pub use config::Config;
pub use snapshot::Snapshot;

use crate::admin::Admin;
use crate::proxy::Proxy;
use crate::snapshot::{InvalidCredential, SnapshotFile, SnapshotFileError};
use crate::state::ConfigState;

/// Why the data plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    ConfigFile(#[from] SnapshotFileError),
    #[error(transparent)]
    Credential(#[from] InvalidCredential),
    #[error(transparent)]
    Tls(#[from] upstream::TlsSetupError),
}

/// Runs a data plane until `shutdown` resolves, then drains and returns.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send) -> Result<(), StartError> {
    let state = Arc::new(ConfigState::new());
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

    let client = upstream::client(&config.upstream)?;
    let proxy = Arc::new(Proxy::new(state.clone(), client, &config.upstream, &config.limits));
    let admin = Arc::new(Admin::new(state));

    let bind =
        |name, addr| async move { server::bind(name, addr).await.map_err(|source| StartError::Bind { addr, source }) };
    let passthrough_listener = bind("passthrough", config.listen_addr).await?;
    let admin_listener = bind("admin", config.admin_listen_addr).await?;

    let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let admin_task = tokio::spawn(server::serve(
        "admin",
        admin_listener,
        admin.clone(),
        config.limits,
        async {
            let _ = admin_stopped.await;
        },
        config.shutdown.grace,
    ));

    let draining_admin = admin.clone();
    let shutdown = async move {
        shutdown.await;
        draining_admin.start_draining();
    };
    server::serve("passthrough", passthrough_listener, proxy, config.limits, shutdown, config.shutdown.grace).await;

    let _ = stop_admin.send(());
    let _ = admin_task.await;
    tracing::info!("data plane stopped");
    Ok(())
}
