//! Live configuration: data planes subscribed to a control plane over the config stream.

use serde_json::Value;
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::controlplane::{ADMIN_KEY, TestControlplane, run_cli};
use crate::support::dataplane::TestDataplane;
use crate::support::wait;

async fn upstream() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(any()).respond_with(ResponseTemplate::new(200).set_body_string("{}")).mount(&server).await;
    server
}

fn provider_env(upstream: &MockServer) -> Vec<(&'static str, String)> {
    vec![
        ("ANTHROPIC_BASE_URL", format!("{}/anthropic/v1", upstream.uri())),
        ("ANTHROPIC_API_KEY", "sk-ant-first".to_owned()),
    ]
}

fn as_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Waits until the control plane lists `count` data planes, all current.
async fn wait_for_fleet(cp: &TestControlplane, count: usize) {
    wait::until_async(&format!("{count} data planes subscribed and current"), || async {
        let fleet = cp.cli(&["dataplanes", "-o", "json"]).await.json();
        let planes = fleet["data_planes"].as_array().unwrap();
        let head = fleet["head_revision"].as_u64().unwrap();
        (planes.len() == count && planes.iter().all(|p| p["acked_revision"].as_u64() == Some(head))).then_some(())
    })
    .await;
}

async fn create_key(cp: &TestControlplane, name: &str) -> (String, String) {
    let created = cp.cli(&["keys", "create", "--name", name, "-o", "json", "--wait"]).await.json();
    (created["id"].as_str().unwrap().to_owned(), created["secret"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn every_change_reaches_every_replica_before_wait_returns() {
    let upstream = upstream().await;
    let env = provider_env(&upstream);
    let cp = TestControlplane::start(&as_refs(&env)).await;
    let mut dataplanes = Vec::new();
    for node in ["dp-a", "dp-b", "dp-c"] {
        dataplanes.push(TestDataplane::subscribed(&cp.url(), node, &[]).await);
    }
    for dp in &dataplanes {
        dp.wait_ready().await;
    }
    wait_for_fleet(&cp, 3).await;

    // Created with --wait: usable on every replica the moment the command returns.
    let (id, secret) = create_key(&cp, "live").await;
    for dp in &dataplanes {
        assert_eq!(dp.call(&secret).await, 200);
    }

    // Revoked with --wait: refused everywhere at once, no cache to expire.
    let revoked = cp.cli(&["keys", "revoke", &id, "--wait"]).await;
    assert!(revoked.stderr.contains("applied by 3 data planes in"), "{revoked:?}");
    for dp in &dataplanes {
        assert_eq!(dp.call(&secret).await, 401);
    }

    cp.cli(&["providers", "set", "anthropic", "--disable", "--wait"]).await.ok();
    for dp in &dataplanes {
        assert_eq!(dp.call(ADMIN_KEY).await, 404);
    }

    // A new credential is the one the upstream sees next.
    let env = [("AURORA_MASTER_KEY", ADMIN_KEY), ("NEW_ANTHROPIC_KEY", "sk-ant-second")];
    let args = ["providers", "set", "anthropic", "--enable", "--api-key-env", "NEW_ANTHROPIC_KEY", "--wait"];
    cp.cli_with(&args, &env, None).await.ok();
    for dp in &dataplanes {
        upstream.reset().await;
        Mock::given(any()).respond_with(ResponseTemplate::new(200)).mount(&upstream).await;
        assert_eq!(dp.call(ADMIN_KEY).await, 200);
        let requests = upstream.received_requests().await.unwrap();
        assert_eq!(requests[0].headers["x-api-key"], "sk-ant-second");
    }

    let table = cp.cli(&["dataplanes"]).await;
    for node in ["dp-a", "dp-b", "dp-c"] {
        assert!(table.ok().lines().any(|line| line.starts_with(node) && line.contains("current")), "{table:?}");
    }
}

#[tokio::test]
async fn replicas_survive_a_control_plane_crash_and_resume_by_deltas() {
    let upstream = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let mut env = provider_env(&upstream);
    env.push(("AURORA_MASTER_KEY", ADMIN_KEY.to_owned()));
    env.push(("AURORA_GRPC_LISTEN_ADDR", listen.clone()));
    let mut cp = TestControlplane::start_in(dir.path(), &as_refs(&env)).await;
    let a = TestDataplane::subscribed(&cp.url(), "dp-a", &[]).await;
    let b = TestDataplane::subscribed(&cp.url(), "dp-b", &[]).await;
    a.wait_ready().await;
    b.wait_ready().await;
    wait_for_fleet(&cp, 2).await;
    let (_, first) = create_key(&cp, "before-crash").await;

    cp.process.signal("KILL");
    cp.process.wait_exit().await;
    for _ in 0..10 {
        assert_eq!(a.call(&first).await, 200, "no request may fail while the control plane is down");
        assert_eq!(b.call(&first).await, 200, "no request may fail while the control plane is down");
    }

    let cp = TestControlplane::start_in(dir.path(), &as_refs(&env)).await;
    wait_for_fleet(&cp, 2).await;
    let snapshots_sent = cp.process.events().iter().filter(|e| e["message"] == "sending snapshot").count();
    assert_eq!(snapshots_sent, 0, "replicas must resume by deltas:\n{}", cp.process.logs());

    let (_, second) = create_key(&cp, "after-restart").await;
    for dp in [&a, &b] {
        assert_eq!(dp.call(&second).await, 200);
        assert_eq!(dp.call(&first).await, 200);
        let snapshots = dp.process.events().iter().filter(|e| e["message"] == "applied configuration snapshot").count();
        assert_eq!(snapshots, 1, "only the first subscription takes a snapshot");
    }
}

#[tokio::test]
async fn a_replica_starts_from_its_cache_while_the_control_plane_is_down() {
    let upstream = upstream().await;
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = cache_dir.path().join("config.cache");
    let cache_env = [("AURORA_CONFIG_CACHE", cache.to_str().unwrap())];
    let mut cp = TestControlplane::start(&as_refs(&provider_env(&upstream))).await;
    let mut first_dp = TestDataplane::subscribed(&cp.url(), "dp-cache", &cache_env).await;
    first_dp.wait_ready().await;
    wait_for_fleet(&cp, 1).await;
    let created = cp.cli(&["keys", "create", "--name", "older", "-o", "json", "--wait"]).await.json();
    let older = created["secret"].as_str().unwrap().to_owned();
    let created = cp.cli(&["keys", "create", "--name", "newer", "-o", "json", "--wait"]).await.json();
    let newer = created["secret"].as_str().unwrap().to_owned();

    let url = cp.url();
    cp.process.signal("KILL");
    cp.process.wait_exit().await;
    first_dp.process.signal("TERM");
    first_dp.process.wait_exit().await;

    // Control plane unreachable, valid cache: ready and serving every key it knew.
    let dp = TestDataplane::subscribed(&url, "dp-cache", &cache_env).await;
    dp.wait_ready().await;
    assert_eq!(dp.call(&older).await, 200);
    assert_eq!(dp.call(&newer).await, 200);
    drop(dp);

    // The newest journal record is damaged: it is ignored, never applied half-way, and the
    // replica serves the revision before it (never an open gateway).
    let journal = cache_dir.path().join("config.cache.journal");
    let mut bytes = std::fs::read(&journal).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&journal, bytes).unwrap();
    let dp = TestDataplane::subscribed(&url, "dp-cache", &cache_env).await;
    dp.wait_ready().await;
    assert_eq!(dp.call(&older).await, 200);
    assert_eq!(dp.call(&newer).await, 401, "the damaged record created this key");
    assert_eq!(dp.call("not-a-key").await, 401);
    drop(dp);

    // The snapshot generation itself is damaged and there is no older one: not ready.
    let mut bytes = std::fs::read(&cache).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&cache, bytes).unwrap();
    let dp = TestDataplane::subscribed(&url, "dp-cache", &cache_env).await;
    assert_eq!(dp.readiness().await, 503);
}

/// The acknowledgement means "applied and durable": a replica killed right after acking a
/// created and a revoked key restarts, with the control plane down, enforcing both.
#[tokio::test]
async fn an_acknowledged_revision_survives_sigkill() {
    let upstream = upstream().await;
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = cache_dir.path().join("config.cache");
    let cache_env = [("AURORA_CONFIG_CACHE", cache.to_str().unwrap())];
    let mut cp = TestControlplane::start(&as_refs(&provider_env(&upstream))).await;
    let mut dp = TestDataplane::subscribed(&cp.url(), "dp-kill", &cache_env).await;
    dp.wait_ready().await;
    wait_for_fleet(&cp, 1).await;

    let (_, created) = create_key(&cp, "created").await;
    let (revoked_id, revoked) = create_key(&cp, "revoked").await;
    assert_eq!(dp.call(&revoked).await, 200);
    let out = cp.cli(&["keys", "revoke", &revoked_id, "--wait"]).await;
    assert!(out.stderr.contains("applied by 1 data plane"), "{out:?}");
    // At once: no time for any periodic write.
    dp.process.signal("KILL");
    dp.process.wait_exit().await;
    let url = cp.url();
    cp.process.signal("TERM");
    cp.process.wait_exit().await;

    let dp = TestDataplane::subscribed(&url, "dp-kill", &cache_env).await;
    dp.wait_ready().await;
    assert_eq!(dp.call(&created).await, 200, "an acknowledged key is served after a crash");
    assert_eq!(dp.call(&revoked).await, 401, "an acknowledged revocation is never undone by a crash");
}

#[tokio::test]
async fn without_cache_or_control_plane_a_replica_is_not_ready() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let dp = TestDataplane::subscribed(&format!("http://{closed}"), "dp-alone", &[]).await;
    assert_eq!(dp.readiness().await, 503);
    let response = reqwest::Client::new().post(dp.url("/p/anthropic/v1/messages")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(response.headers()["x-aurora-error"], "gateway");
}

#[tokio::test]
async fn a_wrong_node_token_is_refused_and_the_replica_says_why() {
    let cp = TestControlplane::start(&[]).await;
    let mut dp = TestDataplane::subscribed(&cp.url(), "dp-wrong", &[("AURORA_NODE_TOKEN", "not-the-token")]).await;
    let event = dp
        .process
        .wait_for_event("the refusal in the log", |e| e["message"] == "the control plane refused this data plane")
        .await;
    assert!(event["error"].as_str().unwrap().contains("invalid node token"), "{event}");
    assert_eq!(dp.readiness().await, 503);
    assert!(!dp.process.logs().contains("not-the-token"), "the token must never be logged");
    let fleet = cp.cli(&["dataplanes", "-o", "json"]).await.json();
    assert_eq!(fleet["data_planes"], Value::Array(Vec::new()));
}

#[tokio::test]
async fn the_control_plane_refuses_to_start_without_a_node_token() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}/aurora.db", dir.path().display());
    let env = [("AURORA_GRPC_LISTEN_ADDR", "127.0.0.1:0"), ("AURORA_DATABASE_URL", database.as_str())];
    let output = run_cli(&["controlplane"], &env, None).await;
    assert_ne!(output.code, Some(0));
    assert!(output.stderr.contains("AURORA_NODE_TOKEN is not set"), "{output:?}");
}
