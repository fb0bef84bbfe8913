//! Starting a data plane from a JSON snapshot file, and the snapshot most tests use.

use std::net::SocketAddr;

use aurora_core::{KeyHash, ProviderKind};
use serde_json::{Value, json};

use super::process::AuroraProcess;

/// The master key of [`snapshot_for`]'s configuration.
pub const MASTER_KEY: &str = "aurora-test-master-key";

/// The upstream credential [`snapshot_for`] configures for `kind`.
pub fn upstream_credential(kind: ProviderKind) -> String {
    format!("sk-{kind}-upstream-secret")
}

/// The path prefix under which a fake upstream serves `kind`, mirroring the real base URLs
/// (each provider gets its own prefix so one mock server can stand in for all five).
pub fn base_path(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::OpenAi => "/openai/v1",
        ProviderKind::Anthropic => "/anthropic/v1",
        ProviderKind::OpenRouter => "/openrouter/api/v1",
        ProviderKind::Zai => "/zai/api/paas/v4",
        ProviderKind::Vllm => "/vllm/v1",
    }
}

/// Every provider enabled, pointing at `upstream` (e.g. a wiremock URI), with a credential each
/// and gateway auth on through [`MASTER_KEY`].
pub fn snapshot_for(upstream: &str) -> Value {
    let providers: serde_json::Map<String, Value> = ProviderKind::ALL
        .into_iter()
        .map(|kind| {
            let provider = json!({
                "base_url": format!("{upstream}{}", base_path(kind)),
                "credential": upstream_credential(kind),
            });
            (kind.to_string(), provider)
        })
        .collect();
    json!({
        "revision": 1,
        "providers": providers,
        "master_key_hash": KeyHash::of(MASTER_KEY).to_hex(),
    })
}

/// A managed key entry for a snapshot file.
pub fn key_entry(secret: &str, extra: Value) -> Value {
    let mut key = json!({ "id": uuid::Uuid::new_v4().to_string(), "hash": KeyHash::of(secret).to_hex() });
    if let (Value::Object(key), Value::Object(extra)) = (&mut key, extra) {
        key.extend(extra);
    }
    key
}

#[derive(Debug)]
pub struct TestDataplane {
    pub process: AuroraProcess,
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl TestDataplane {
    /// Starts `aurora dataplane --config-file` on ephemeral ports and waits until it listens.
    pub async fn start(snapshot: &Value, env: &[(&str, &str)]) -> Self {
        Self::start_wrapped(snapshot, env, &[]).await
    }

    /// Like [`Self::start`], through a wrapper command (see [`AuroraProcess::spawn_wrapped`]).
    pub async fn start_wrapped(snapshot: &Value, env: &[(&str, &str)], wrapper: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshot.json");
        std::fs::write(&path, serde_json::to_vec_pretty(snapshot).unwrap()).unwrap();
        let mut all_env = vec![("AURORA_LISTEN_ADDR", "127.0.0.1:0"), ("AURORA_ADMIN_LISTEN_ADDR", "127.0.0.1:0")];
        all_env.extend_from_slice(env);
        let args = ["dataplane", "--config-file", path.to_str().unwrap()];
        let mut process = AuroraProcess::spawn_wrapped(None, wrapper, &args, &all_env);
        let addr = process.listening_addr("passthrough").await;
        let admin_addr = process.listening_addr("admin").await;
        TestDataplane { process, addr, admin_addr, _dir: dir }
    }

    /// Starts `aurora dataplane` subscribed to `control_plane` (a URL) with the test node
    /// token and `env`, and waits until it listens (not until it is ready).
    pub async fn subscribed(control_plane: &str, node_id: &str, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut all_env = vec![
            ("AURORA_LISTEN_ADDR", "127.0.0.1:0"),
            ("AURORA_ADMIN_LISTEN_ADDR", "127.0.0.1:0"),
            ("AURORA_CONTROL_PLANE_URL", control_plane),
            ("AURORA_NODE_TOKEN", super::controlplane::NODE_TOKEN),
            ("AURORA_NODE_ID", node_id),
        ];
        all_env.extend_from_slice(env);
        let mut process = AuroraProcess::spawn(&["dataplane"], &all_env);
        let addr = process.listening_addr("passthrough").await;
        let admin_addr = process.listening_addr("admin").await;
        TestDataplane { process, addr, admin_addr, _dir: dir }
    }

    /// `/readyz`'s status code.
    pub async fn readiness(&self) -> u16 {
        match reqwest::Client::new().get(self.admin_url("/readyz")).send().await {
            Ok(response) => response.status().as_u16(),
            Err(_) => 0,
        }
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        super::wait::until_async("data plane ready", || async { (self.readiness().await == 200).then_some(()) }).await;
    }

    /// The status of `POST /p/anthropic/v1/messages` with `token` as bearer.
    pub async fn call(&self, token: &str) -> u16 {
        reqwest::Client::new()
            .post(self.url("/p/anthropic/v1/messages"))
            .bearer_auth(token)
            .body("{}")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// Starts a streamed call with `client` through an upstream that sends one event and holds
    /// the rest (`raw_http::Behaviour::StreamThenHold`), and reads that first event; returns the
    /// still-open stream and the bytes read so far.
    pub async fn first_event(
        &self,
        client: &reqwest::Client,
    ) -> (impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin + use<>, Vec<u8>) {
        use futures_util::StreamExt;

        let response = client
            .post(self.url("/p/anthropic/v1/messages"))
            .header("x-api-key", MASTER_KEY)
            .body(r#"{"stream":true}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let mut stream = response.bytes_stream();
        let mut received = Vec::new();
        while received.len() < super::raw_http::FIRST_EVENT.len() {
            received.extend_from_slice(&stream.next().await.unwrap().unwrap());
        }
        (stream, received)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr)
    }
}
