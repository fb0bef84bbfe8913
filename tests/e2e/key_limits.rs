//! Per-key limits (issue 13), end to end: the `aurora` CLI sets them on the control plane, a
//! subscribed data plane enforces them before anything goes upstream.

use serde_json::Value;
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::controlplane::TestControlplane;
use crate::support::dataplane::TestDataplane;
use crate::support::wait;

async fn upstream() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(any()).respond_with(ResponseTemplate::new(200).set_body_string("{}")).mount(&server).await;
    server
}

async fn control_plane(upstream: &MockServer) -> TestControlplane {
    let anthropic = format!("{}/anthropic/v1", upstream.uri());
    let openai = format!("{}/openai/v1", upstream.uri());
    TestControlplane::start(&[
        ("ANTHROPIC_BASE_URL", anthropic.as_str()),
        ("ANTHROPIC_API_KEY", "sk-ant-upstream"),
        ("OPENAI_BASE_URL", openai.as_str()),
        ("OPENAI_API_KEY", "sk-oa-upstream"),
    ])
    .await
}

async fn send(dp: &TestDataplane, method: reqwest::Method, path: &str, token: &str) -> (u16, Option<String>, Value) {
    let response =
        reqwest::Client::new().request(method, dp.url(path)).bearer_auth(token).body("{}").send().await.unwrap();
    let status = response.status().as_u16();
    let marker = response.headers().get("x-aurora-error").map(|v| v.to_str().unwrap().to_owned());
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, marker, body)
}

#[tokio::test]
async fn an_endpoint_allow_list_refuses_everything_else_before_it_goes_upstream() {
    let upstream = upstream().await;
    let cp = control_plane(&upstream).await;
    let dp = TestDataplane::subscribed(&cp.url(), "dp-limits", &[]).await;
    dp.wait_ready().await;

    let created = cp
        .cli(&[
            "keys",
            "create",
            "--name",
            "messages-only",
            "--allow-endpoint",
            "anthropic POST /v1/messages",
            "--allow-endpoint",
            "openai GET /models/*",
            "-o",
            "json",
            "--wait",
        ])
        .await
        .json();
    assert_eq!(created["allowed_endpoints"], serde_json::json!(["anthropic POST /messages", "openai GET /models/*"]));
    let id = created["id"].as_str().unwrap().to_owned();
    let secret = created["secret"].as_str().unwrap().to_owned();
    let table = cp.cli(&["keys", "get", &id]).await.ok().to_owned();
    assert!(table.contains("endpoints: anthropic POST /messages; openai GET /models/*"), "{table}");

    // Allowed, with and without the /v1 alias.
    assert_eq!(send(&dp, reqwest::Method::POST, "/p/anthropic/v1/messages", &secret).await.0, 200);
    assert_eq!(send(&dp, reqwest::Method::POST, "/p/anthropic/messages", &secret).await.0, 200);
    assert_eq!(send(&dp, reqwest::Method::GET, "/p/openai/v1/models/gpt-4o", &secret).await.0, 200);
    let forwarded = upstream.received_requests().await.unwrap().len();
    assert_eq!(forwarded, 3);

    // Refused in the provider's shape, marked as the gateway's, and never forwarded.
    let (status, marker, body) = send(&dp, reqwest::Method::POST, "/p/anthropic/v1/files", &secret).await;
    assert_eq!((status, marker.as_deref()), (403, Some("gateway")), "{body}");
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "permission_error");
    let (status, _, body) = send(&dp, reqwest::Method::GET, "/p/anthropic/v1/messages", &secret).await;
    assert_eq!(status, 403, "another method: {body}");
    let (status, _, body) = send(&dp, reqwest::Method::POST, "/p/openai/v1/files", &secret).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("endpoint_not_allowed")), "{body}");
    let (status, _, _) = send(&dp, reqwest::Method::GET, "/p/openai/v1/models/a%2Ffiles", &secret).await;
    assert_eq!(status, 403, "a wildcard never stands for an encoded slash");
    let (status, _, _) = send(&dp, reqwest::Method::POST, "/p/anthropic/v1/%6Dessages", &secret).await;
    assert_eq!(status, 403, "an encoded spelling of an allowed path is refused, not let through");
    assert_eq!(upstream.received_requests().await.unwrap().len(), forwarded, "nothing refused went upstream");

    // Replacing the list, then clearing it, reaches the data plane.
    cp.cli(&["keys", "update", &id, "--allow-endpoint", "anthropic * /**", "--wait"]).await.ok();
    assert_eq!(send(&dp, reqwest::Method::POST, "/p/anthropic/v1/files", &secret).await.0, 200);
    assert_eq!(send(&dp, reqwest::Method::GET, "/p/openai/v1/models/gpt-4o", &secret).await.0, 403);
    cp.cli(&["keys", "update", &id, "--all-endpoints", "--wait"]).await.ok();
    wait::until_async("the cleared allow-list applied", || async {
        (send(&dp, reqwest::Method::POST, "/p/openai/v1/files", &secret).await.0 == 200).then_some(())
    })
    .await;

    // A malformed rule stops the command with the field and the reason.
    let bad = cp.cli(&["keys", "create", "--name", "bad", "--allow-endpoint", "anthropic FETCH /x"]).await;
    assert!(bad.error_line().starts_with("error: INVALID_ARGUMENT: allowed_endpoints: "), "{bad:?}");
}
