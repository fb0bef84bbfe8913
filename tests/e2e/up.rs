//! `aurora up`, the README's quick start: one command, then an Anthropic SDK call through it.

use wiremock::MockServer;

use crate::sdk;
use crate::support::process::AuroraProcess;
use crate::support::wait;

#[tokio::test]
async fn the_quick_start_serves_an_anthropic_sdk_call() {
    let upstream = MockServer::start().await;
    sdk::provider_mocks(&upstream).await;
    let cwd = tempfile::tempdir().unwrap();
    let base_url = format!("{}/anthropic/v1", upstream.uri());
    let credential = crate::support::dataplane::upstream_credential(aurora_core::ProviderKind::Anthropic);
    let env = [
        ("AURORA_LISTEN_ADDR", "127.0.0.1:0"),
        ("AURORA_ADMIN_LISTEN_ADDR", "127.0.0.1:0"),
        ("AURORA_GRPC_LISTEN_ADDR", "127.0.0.1:0"),
        ("ANTHROPIC_BASE_URL", base_url.as_str()),
        ("ANTHROPIC_API_KEY", credential.as_str()),
    ];
    let mut up = AuroraProcess::spawn_in(Some(cwd.path()), &["up"], &env);
    let gateway = up.listening_addr("passthrough").await;
    let admin = up.listening_addr("admin").await;

    // The banner names the gateway and the master key, which is kept in ./aurora-data.
    let master_key = wait::until("the master key in the banner", || {
        up.logs().lines().find_map(|line| line.trim().strip_prefix("Master key").map(|key| key.trim().to_owned()))
    })
    .await;
    assert!(up.logs().contains(&format!("http://{gateway}/p/{{provider}}")), "{}", up.logs());
    let stored = std::fs::read_to_string(cwd.path().join("aurora-data/master-key")).unwrap();
    assert_eq!(stored.trim(), master_key);

    wait::until_async("the gateway ready", || async {
        let ready = reqwest::get(format!("http://{admin}/readyz")).await.ok()?.status().is_success();
        ready.then_some(())
    })
    .await;
    sdk::run_script_at("anthropic_client.py", &format!("http://{gateway}"), &master_key, &up.logs());
}
