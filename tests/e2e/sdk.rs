//! The official `anthropic` and `openai` Python SDKs against a data plane with a mock upstream.
//!
//! The scripts live in tests/sdk/; the SDKs come from a virtualenv that `scripts/test` creates
//! (`.venv` at the repository root, or `AURORA_TEST_PYTHON` naming an interpreter).

use std::path::PathBuf;
use std::process::Command;

use aurora_core::ProviderKind;
use serde_json::json;
use wiremock::matchers::{body_partial_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::dataplane::{TestDataplane, key_entry, snapshot_for, upstream_credential};

const MANAGED_KEY: &str = "aur_sdkTestKey000000000000000000000000000000";

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("AURORA_TEST_PYTHON") {
        return python.into();
    }
    let venv = repo_root().join(".venv/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: run scripts/test, which creates it with the SDKs from tests/sdk/requirements.txt",
        venv.display()
    );
    venv
}

fn run_script(script: &str, dataplane: &TestDataplane, token: &str) {
    run_script_at(script, &format!("http://{}", dataplane.addr), token, &dataplane.process.logs());
}

/// Runs an SDK script against the gateway at `url`; `logs` are shown if it fails.
pub(crate) fn run_script_at(script: &str, url: &str, token: &str, logs: &str) {
    let output = Command::new(python())
        .arg(repo_root().join("tests/sdk").join(script))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AURORA_URL", url)
        .env("AURORA_TOKEN", token)
        // The SDKs must not pick up a real key or proxy from the environment.
        .env("NO_PROXY", "*")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{script} failed:\n{}\n{}\ngateway logs:\n{logs}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}

const ANTHROPIC_STREAM: &str = concat!(
    "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-3-haiku-20240307\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"ok\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":1}}\n\n",
    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
);

const OPENAI_STREAM: &str = concat!(
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"ok\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
    "data: [DONE]\n\n",
);

/// Mocks that answer only when the gateway injected the right upstream credential.
pub(crate) async fn provider_mocks(server: &MockServer) {
    let anthropic_key = upstream_credential(ProviderKind::Anthropic);
    Mock::given(method("POST"))
        .and(path("/anthropic/v1/messages"))
        .and(header("x-api-key", anthropic_key.as_str()))
        .and(body_partial_json(json!({"stream": true})))
        .respond_with(ResponseTemplate::new(200).set_body_raw(ANTHROPIC_STREAM, "text/event-stream"))
        .mount(server)
        .await;
    Mock::given(method("POST"))
        .and(path("/anthropic/v1/messages"))
        .and(header("x-api-key", anthropic_key.as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-3-haiku-20240307",
            "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 5, "output_tokens": 1}
        })))
        .mount(server)
        .await;

    let openai_auth = format!("Bearer {}", upstream_credential(ProviderKind::OpenAi));
    Mock::given(method("POST"))
        .and(path("/openai/v1/chat/completions"))
        .and(header("authorization", openai_auth.as_str()))
        .and(body_partial_json(json!({"stream": true})))
        .respond_with(ResponseTemplate::new(200).set_body_raw(OPENAI_STREAM, "text/event-stream"))
        .mount(server)
        .await;
    Mock::given(method("POST"))
        .and(path("/openai/v1/chat/completions"))
        .and(header("authorization", openai_auth.as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "c1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}
        })))
        .mount(server)
        .await;
}

async fn setup() -> (MockServer, TestDataplane) {
    let upstream = MockServer::start().await;
    provider_mocks(&upstream).await;
    let mut snapshot = snapshot_for(&upstream.uri());
    snapshot["keys"] = json!([key_entry(MANAGED_KEY, json!({}))]);
    let dataplane = TestDataplane::start(&snapshot, &[]).await;
    (upstream, dataplane)
}

#[tokio::test]
async fn anthropic_sdk_works_unchanged_through_the_gateway() {
    let (_upstream, dataplane) = setup().await;
    run_script("anthropic_client.py", &dataplane, MANAGED_KEY);
}

#[tokio::test]
async fn openai_sdk_works_unchanged_through_the_gateway() {
    let (_upstream, dataplane) = setup().await;
    run_script("openai_client.py", &dataplane, MANAGED_KEY);
}
