//! Aurora's own processes, from the release `aurora` binary: control planes and data planes.
//!
//! Data planes always take their keys from a control plane over the config stream (the
//! production path), never from a file, except where a scenario says otherwise. Every listener
//! binds port 0 and is found through its JSON `listening` log event.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use aurora_proto::v1::admin_service_client::AdminServiceClient;
use aurora_proto::v1::{
    AddProviderCredentialRequest, CreateKeyRequest, ListDataPlanesRequest, ListDataPlanesResponse, RevokeKeyRequest,
};
use tonic::transport::Channel;

use crate::load::{Auth, Conn, Target};
use crate::procs::Proc;
use crate::upstream;

pub(crate) const MASTER_KEY: &str = "aurora-bench-master-key-0123456789abcdef";
/// The key that encrypts credentials in the bench's stores (PostgreSQL requires one).
pub(crate) const ENCRYPTION_KEY: &str = "YXVyb3JhLWJlbmNoLWVuY3J5cHRpb24ta2V5LTMyYnk=";
pub(crate) const NODE_TOKEN: &str = "aurora-bench-node-token";
/// Every per-key limit far above any benchmark's load, so a key holding them is never refused.
pub(crate) const EVERY_LIMIT: aurora_core::KeyLimits = aurora_core::KeyLimits {
    requests_per_minute: aurora_core::MAX_REQUEST_LIMIT,
    tokens_per_minute: aurora_core::MAX_TOKEN_LIMIT,
    max_concurrent: aurora_core::MAX_REQUEST_LIMIT,
    budget_tokens: aurora_core::MAX_TOKEN_LIMIT,
    budget_period: aurora_core::BudgetPeriod::Month,
};

/// The environment every `aurora` process gets: JSON logs at info without the per-request
/// access log (nginx runs with `access_log off` too), and no drain delay on shutdown.
fn base_env() -> Vec<(&'static str, String)> {
    vec![
        ("AURORA_LOG_FORMAT", "json".into()),
        ("AURORA_LOG", "info,aurora::access=off".into()),
        ("AURORA_SHUTDOWN_DRAIN_DELAY", "0s".into()),
        ("AURORA_SHUTDOWN_GRACE", "1s".into()),
    ]
}

#[derive(Debug)]
pub(crate) struct ControlPlane {
    pub(crate) proc: Proc,
    pub(crate) addr: SocketAddr,
    pub(crate) database_url: String,
    bin: PathBuf,
    upstream: SocketAddr,
}

impl ControlPlane {
    /// Starts a control plane on the database in `dir`, bootstrapping the Anthropic provider
    /// to point at `upstream`. `listen` is 127.0.0.1:0 unless a restart must reuse a port.
    pub(crate) async fn start(
        bin: &Path,
        dir: &Path,
        upstream: SocketAddr,
        listen: Option<SocketAddr>,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let database_url = format!("sqlite://{}", dir.join("aurora.db").display());
        Self::start_on(bin, &database_url, upstream, listen).await
    }

    /// Like [`Self::start`], on the database at `database_url` (a PostgreSQL one, shared by
    /// several control planes).
    pub(crate) async fn start_on(
        bin: &Path,
        database_url: &str,
        upstream: SocketAddr,
        listen: Option<SocketAddr>,
    ) -> anyhow::Result<Self> {
        Self::start_on_with(bin, database_url, upstream, listen, &[]).await
    }

    /// Like [`Self::start_on`], with `extra` added to its environment.
    pub(crate) async fn start_on_with(
        bin: &Path,
        database_url: &str,
        upstream: SocketAddr,
        listen: Option<SocketAddr>,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let database_url = database_url.to_owned();
        let mut env = base_env();
        env.extend([
            ("AURORA_GRPC_LISTEN_ADDR", listen.map_or_else(|| "127.0.0.1:0".into(), |a| a.to_string())),
            ("AURORA_DATABASE_URL", database_url.clone()),
            // Any free port: several control planes may run at once (cross-replica figure).
            ("AURORA_METRICS_LISTEN_ADDR", "127.0.0.1:0".into()),
            ("AURORA_MASTER_KEY", MASTER_KEY.into()),
            ("AURORA_ENCRYPTION_KEY", ENCRYPTION_KEY.into()),
            ("AURORA_NODE_TOKEN", NODE_TOKEN.into()),
            ("ANTHROPIC_BASE_URL", format!("http://{upstream}/v1")),
            ("ANTHROPIC_API_KEY", upstream::CREDENTIAL.into()),
            ("ENABLED_PASSTHROUGH_PROVIDERS", "anthropic".into()),
        ]);
        let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        env.extend_from_slice(extra);
        let mut proc = Proc::spawn("controlplane", bin, &["controlplane"], &env)?;
        let addr = proc.listening_addr("grpc").await?;
        Ok(ControlPlane { proc, addr, database_url, bin: bin.to_owned(), upstream })
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops this process (SIGTERM) and starts another on the same database and port.
    pub(crate) async fn restart(
        mut self,
        dir: &Path,
        between: impl AsyncFnOnce() -> anyhow::Result<()>,
    ) -> anyhow::Result<Self> {
        self.proc.terminate(Duration::from_secs(10)).await?;
        between().await?;
        ControlPlane::start(&self.bin, dir, self.upstream, Some(self.addr)).await
    }

    pub(crate) async fn admin(&self) -> anyhow::Result<Admin> {
        let channel = Channel::from_shared(self.url())?.connect().await.context("cannot reach the control plane")?;
        Ok(Admin { client: AdminServiceClient::new(channel) })
    }
}

/// The admin API, authenticated with the master key.
#[derive(Debug, Clone)]
pub(crate) struct Admin {
    client: AdminServiceClient<Channel>,
}

fn request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = format!("Bearer {MASTER_KEY}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// A key the admin API created.
#[derive(Debug, Clone)]
pub(crate) struct Key {
    pub(crate) id: String,
    pub(crate) secret: String,
    pub(crate) revision: u64,
}

impl Admin {
    pub(crate) async fn create_key(&mut self, name: &str) -> anyhow::Result<Key> {
        let response = self
            .client
            .create_key(request(CreateKeyRequest { name: name.into(), ..Default::default() }))
            .await?
            .into_inner();
        let id = response.key.map(|key| key.id).context("CreateKey returned no key")?;
        Ok(Key { id, secret: response.secret, revision: response.revision })
    }

    /// Creates a key limited to `rpm` requests per minute (issue 13).
    pub(crate) async fn create_limited_key(&mut self, name: &str, rpm: u32) -> anyhow::Result<Key> {
        let limits = aurora_proto::v1::Limits { requests_per_minute: rpm, ..Default::default() };
        self.create_key_with_limits(name, limits).await
    }

    /// Creates a key with [`EVERY_LIMIT`]: what per-key limits cost on the request path.
    pub(crate) async fn create_key_with_every_limit(&mut self, name: &str) -> anyhow::Result<Key> {
        let limits = aurora_proto::v1::Limits {
            requests_per_minute: EVERY_LIMIT.requests_per_minute,
            tokens_per_minute: EVERY_LIMIT.tokens_per_minute,
            max_concurrent: EVERY_LIMIT.max_concurrent,
            budget_tokens: EVERY_LIMIT.budget_tokens,
            budget_period: EVERY_LIMIT.budget_period.to_string(),
        };
        self.create_key_with_limits(name, limits).await
    }

    async fn create_key_with_limits(&mut self, name: &str, limits: aurora_proto::v1::Limits) -> anyhow::Result<Key> {
        let create = CreateKeyRequest { name: name.into(), limits: Some(limits), ..Default::default() };
        let response = self.client.create_key(request(create)).await?.into_inner();
        let id = response.key.map(|key| key.id).context("CreateKey returned no key")?;
        Ok(Key { id, secret: response.secret, revision: response.revision })
    }

    /// Adds an enabled credential of `weight` to `provider`'s credential set (issue 15);
    /// returns the revision that committed it.
    pub(crate) async fn add_provider_credential(
        &mut self,
        provider: &str,
        name: &str,
        secret: &str,
        weight: u32,
    ) -> anyhow::Result<u64> {
        let add = AddProviderCredentialRequest {
            provider: provider.into(),
            name: name.into(),
            secret: secret.into(),
            weight,
            enabled: Some(true),
        };
        Ok(self.client.add_provider_credential(request(add)).await?.into_inner().revision)
    }

    /// Revokes a key; returns the revision that committed it.
    pub(crate) async fn revoke_key(&mut self, id: &str) -> anyhow::Result<u64> {
        Ok(self.client.revoke_key(request(RevokeKeyRequest { id: id.into() })).await?.into_inner().revision)
    }

    /// The first (largest) page of the fleet: a benchmark runs far fewer than 1000 replicas.
    pub(crate) async fn data_planes(&mut self) -> anyhow::Result<ListDataPlanesResponse> {
        let list = ListDataPlanesRequest { page_size: 1000, page_token: String::new() };
        Ok(self.client.list_data_planes(request(list)).await?.into_inner())
    }

    /// Waits until `count` data planes are connected and have acknowledged the head revision.
    pub(crate) async fn wait_fleet_current(&mut self, count: usize, timeout: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        loop {
            let fleet = self.data_planes().await?;
            let current = fleet.data_planes.iter().filter(|dp| dp.acked_revision >= fleet.head_revision).count();
            if current >= count {
                return Ok(started.elapsed());
            }
            if started.elapsed() > timeout {
                bail!("only {current} of {count} data planes are current after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

#[derive(Debug)]
pub(crate) struct DataPlane {
    pub(crate) proc: Proc,
    pub(crate) addr: SocketAddr,
}

impl DataPlane {
    /// Starts a data plane subscribed to `control_plane` (a URL) as `node_id`.
    pub(crate) async fn start(bin: &Path, control_plane: &str, node_id: &str) -> anyhow::Result<Self> {
        Self::start_with(bin, control_plane, node_id, &[]).await
    }

    /// Like [`Self::start`], with `extra` added to its environment (a feature switched off).
    pub(crate) async fn start_with(
        bin: &Path,
        control_plane: &str,
        node_id: &str,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let mut env = base_env();
        env.extend([
            ("AURORA_LISTEN_ADDR", "127.0.0.1:0".into()),
            ("AURORA_ADMIN_LISTEN_ADDR", "127.0.0.1:0".into()),
            ("AURORA_CONTROL_PLANE_URL", control_plane.into()),
            ("AURORA_NODE_TOKEN", NODE_TOKEN.into()),
            ("AURORA_NODE_ID", node_id.into()),
        ]);
        let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        env.extend_from_slice(extra);
        let mut proc = Proc::spawn(node_id, bin, &["dataplane"], &env)?;
        let addr = proc.listening_addr("passthrough").await?;
        Ok(DataPlane { proc, addr })
    }

    pub(crate) fn target(&self, token: &str) -> Target {
        Target {
            name: "aurora",
            addr: self.addr,
            path: "/p/anthropic/v1/messages".into(),
            auth: Auth::Gateway(token.into()),
        }
    }
}

/// Sends requests with `token` until the answer is a success (`accepted`) or a gateway
/// refusal (`!accepted`); returns how long that took.
pub(crate) async fn wait_until(target: &Target, accepted: bool, timeout: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut conn = Conn::open(target.addr).await?;
    loop {
        if conn.is_closed() {
            conn = Conn::open(target.addr).await?;
        }
        if let Ok((status, gateway)) = conn.send(target.request(&[])?).await {
            let done = if accepted { status.is_success() } else { gateway && status.is_client_error() };
            if done {
                return Ok(started.elapsed());
            }
        }
        if started.elapsed() > timeout {
            bail!(
                "{} at {} did not {} the key within {timeout:?}",
                target.name,
                target.addr,
                if accepted { "accept" } else { "reject" }
            );
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
