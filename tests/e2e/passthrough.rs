//! The passthrough API against wiremock and hand-rolled upstreams.

use std::time::Duration;

use aurora_core::ProviderKind;
use futures_util::StreamExt;
use serde_json::{Value, json};
use wiremock::matchers::{any, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::dataplane::{MASTER_KEY, TestDataplane, base_path, key_entry, snapshot_for, upstream_credential};
use crate::support::raw_http::{self, Behaviour, FIRST_EVENT, HeldUpstream, REST_EVENTS};

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn mock_ok(server: &MockServer) {
    Mock::given(any()).respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": true}))).mount(server).await;
}

async fn json_body(response: reqwest::Response) -> Value {
    response.json().await.unwrap()
}

#[tokio::test]
async fn every_provider_gets_the_exact_path_its_credential_and_the_clients_other_headers() {
    let upstream = MockServer::start().await;
    mock_ok(&upstream).await;
    let dataplane = TestDataplane::start(&snapshot_for(&upstream.uri()), &[]).await;

    for kind in ProviderKind::ALL {
        for endpoint in ["v1/chat/completions", "chat/completions"] {
            upstream.reset().await;
            mock_ok(&upstream).await;
            let response = client()
                .post(dataplane.url(&format!("/p/{kind}/{endpoint}?stream=true&q=a%20b&empty=")))
                .header("authorization", format!("Bearer {MASTER_KEY}"))
                .header("x-api-key", "client-api-key")
                .header("api-key", "azure-style-key")
                .header("cookie", "session=1")
                .header("x-forwarded-for", "10.9.8.7")
                .header("anthropic-beta", "prompt-caching-2024-07-31")
                .header("openai-organization", "org-123")
                .header("idempotency-key", "idem-1")
                .header("x-request-id", "client-request-1")
                .header("host", "client-chosen.example")
                .body(r#"{"model":"m"}"#)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{kind} {endpoint}");
            assert_eq!(response.headers()["x-request-id"], "client-request-1");

            let requests = upstream.received_requests().await.unwrap();
            assert_eq!(requests.len(), 1, "{kind} {endpoint}");
            let request = &requests[0];
            assert_eq!(request.url.path(), format!("{}/chat/completions", base_path(kind)), "{kind} {endpoint}");
            assert_eq!(request.url.query(), Some("stream=true&q=a%20b&empty="));
            assert_eq!(request.body, br#"{"model":"m"}"#);
            let header = |name: &str| request.headers.get(name).map(|v| v.to_str().unwrap().to_owned());
            let credential = upstream_credential(kind);
            if kind == ProviderKind::Anthropic {
                assert_eq!(header("x-api-key"), Some(credential));
                assert_eq!(header("authorization"), None);
                assert_eq!(header("anthropic-version").as_deref(), Some("2023-06-01"));
            } else {
                assert_eq!(header("authorization"), Some(format!("Bearer {credential}")));
                assert_eq!(header("x-api-key"), None);
            }
            for stripped in ["api-key", "cookie", "x-forwarded-for"] {
                assert_eq!(header(stripped), None, "{stripped} reached {kind}");
            }
            // The upstream's own authority, never the one the client addressed the gateway by.
            assert_eq!(header("host"), Some(upstream.address().to_string()), "{kind}");
            assert_eq!(request.headers.get_all("host").iter().count(), 1, "{kind}");
            let all_headers = format!("{:?}", request.headers);
            assert!(!all_headers.contains(MASTER_KEY), "the gateway token reached {kind}");
            assert!(!all_headers.contains("client-api-key"), "the client's x-api-key reached {kind}");
            assert_eq!(header("anthropic-beta").as_deref(), Some("prompt-caching-2024-07-31"));
            assert_eq!(header("openai-organization").as_deref(), Some("org-123"));
            assert_eq!(header("idempotency-key").as_deref(), Some("idem-1"));
            assert_eq!(header("x-request-id").as_deref(), Some("client-request-1"));
        }
    }
}

#[tokio::test]
async fn v1_alias_maps_to_the_base_and_leaves_other_segments_alone() {
    let upstream = MockServer::start().await;
    mock_ok(&upstream).await;
    let dataplane = TestDataplane::start(&snapshot_for(&upstream.uri()), &[]).await;
    let base = base_path(ProviderKind::OpenAi);

    for (endpoint, expected) in [
        ("/p/openai/v1", base.to_owned()),
        ("/p/openai/v1/", base.to_owned()),
        ("/p/openai", base.to_owned()),
        ("/p/openai/v1beta/models", format!("{base}/v1beta/models")),
        ("/p/openai/v1/v1/models", format!("{base}/v1/models")),
    ] {
        upstream.reset().await;
        mock_ok(&upstream).await;
        let response = client().get(dataplane.url(endpoint)).bearer_auth(MASTER_KEY).send().await.unwrap();
        assert_eq!(response.status(), 200, "{endpoint}");
        let requests = upstream.received_requests().await.unwrap();
        assert_eq!(requests[0].url.path(), expected, "{endpoint}");
    }
}

#[tokio::test]
async fn v1_alias_disabled_is_a_clear_400() {
    let upstream = MockServer::start().await;
    mock_ok(&upstream).await;
    let mut snapshot = snapshot_for(&upstream.uri());
    snapshot["settings"] = json!({ "v1_alias_enabled": false });
    let dataplane = TestDataplane::start(&snapshot, &[]).await;

    let response =
        client().post(dataplane.url("/p/anthropic/v1/messages")).bearer_auth(MASTER_KEY).send().await.unwrap();
    assert_eq!(response.status(), 400);
    let body = json_body(response).await;
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(body["error"]["message"].as_str().unwrap().contains("alias is disabled"));

    let response = client().post(dataplane.url("/p/anthropic/messages")).bearer_auth(MASTER_KEY).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(upstream.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn sse_events_reach_the_client_while_the_upstream_still_holds_the_stream() {
    let upstream = HeldUpstream::start(Behaviour::StreamThenHold).await;
    let dataplane = TestDataplane::start(&snapshot_for(&upstream.base_url()), &[]).await;

    let response = client()
        .post(dataplane.url("/p/anthropic/v1/messages"))
        .header("x-api-key", MASTER_KEY)
        .body(r#"{"stream":true}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut stream = response.bytes_stream();

    // The upstream has sent only the first event and is holding the rest: the event must
    // arrive now, not when the stream ends.
    let mut received = Vec::new();
    while received.len() < FIRST_EVENT.len() {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("the first event was buffered by the gateway")
            .unwrap()
            .unwrap();
        received.extend_from_slice(&chunk);
    }
    assert_eq!(received, FIRST_EVENT.as_bytes());

    upstream.release();
    while let Some(chunk) = stream.next().await {
        received.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(String::from_utf8(received).unwrap(), format!("{FIRST_EVENT}{REST_EVENTS}"));
}

#[tokio::test]
async fn client_disconnect_mid_stream_closes_the_upstream_connection() {
    let mut upstream = HeldUpstream::start(Behaviour::StreamThenHold).await;
    let dataplane = TestDataplane::start(&snapshot_for(&upstream.base_url()), &[]).await;

    let response =
        client().post(dataplane.url("/p/openai/v1/chat/completions")).bearer_auth(MASTER_KEY).send().await.unwrap();
    let mut stream = response.bytes_stream();
    stream.next().await.unwrap().unwrap();
    drop(stream);

    upstream.wait_closed().await;
}

#[tokio::test]
async fn upstream_connections_are_reused_and_carry_the_authority_as_host() {
    let mut upstream = HeldUpstream::start(Behaviour::KeepAlive).await;
    // One worker, so every request draws on the same worker's idle connections.
    let env = [("AURORA_WORKER_THREADS", "1")];
    let dataplane = TestDataplane::start(&snapshot_for(&upstream.base_url()), &env).await;

    for _ in 0..3 {
        let response =
            client().get(dataplane.url("/p/openai/v1/models?limit=2")).bearer_auth(MASTER_KEY).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), "{}");
        let head = upstream.next_request().await.to_ascii_lowercase();
        let line = format!("get {}/models?limit=2 http/1.1\r\n", base_path(ProviderKind::OpenAi));
        assert!(head.starts_with(&line), "origin form expected: {head}");
        assert!(head.contains(&format!("\r\nhost: {}\r\n", upstream.addr)), "host expected: {head}");
    }
    assert_eq!(upstream.connections(), 1, "one upstream connection, reused");
}

#[tokio::test]
async fn client_disconnect_before_response_headers_closes_the_upstream_connection() {
    let mut upstream = HeldUpstream::start(Behaviour::NeverAnswer).await;
    let dataplane = TestDataplane::start(&snapshot_for(&upstream.base_url()), &[]).await;

    let request = client().post(dataplane.url("/p/anthropic/v1/messages")).bearer_auth(MASTER_KEY).body("{}").send();
    let pending = tokio::spawn(request);
    upstream.next_request().await;
    pending.abort();

    upstream.wait_closed().await;
}

#[tokio::test]
async fn upstream_errors_pass_through_verbatim() {
    let upstream = MockServer::start().await;
    let body = r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#;
    Mock::given(method("POST"))
        .and(path("/anthropic/v1/messages"))
        .respond_with(
            ResponseTemplate::new(429)
                .set_body_raw(body, "application/json")
                .insert_header("retry-after", "17")
                .insert_header("x-ratelimit-remaining-requests", "0")
                .insert_header("anthropic-ratelimit-tokens-reset", "2026-11-24T00:00:00Z")
                .insert_header("set-cookie", "tracking=1"),
        )
        .mount(&upstream)
        .await;
    let dataplane = TestDataplane::start(&snapshot_for(&upstream.uri()), &[]).await;

    let response =
        client().post(dataplane.url("/p/anthropic/v1/messages")).bearer_auth(MASTER_KEY).send().await.unwrap();
    assert_eq!(response.status(), 429);
    let headers = response.headers().clone();
    assert_eq!(headers["retry-after"], "17");
    assert_eq!(headers["x-ratelimit-remaining-requests"], "0");
    assert_eq!(headers["anthropic-ratelimit-tokens-reset"], "2026-11-24T00:00:00Z");
    assert!(headers.get("set-cookie").is_none());
    assert!(headers.get("x-aurora-error").is_none(), "an upstream error is not a gateway error");
    assert_eq!(response.text().await.unwrap(), body);
}

#[tokio::test]
async fn gateway_errors_have_the_providers_shape_and_status() {
    let upstream = MockServer::start().await;
    mock_ok(&upstream).await;
    let mut snapshot = snapshot_for(&upstream.uri());
    snapshot["providers"]["zai"]["enabled"] = json!(false);
    snapshot["keys"] = json!([
        key_entry("aur_disabled", json!({"enabled": false})),
        key_entry("aur_expired", json!({"expires_at": 1_000_000_000})),
        key_entry("aur_future", json!({"expires_at": 4_000_000_000_i64})),
        key_entry("aur_anthropic_only", json!({"allowed_providers": ["anthropic"]})),
    ]);
    let dataplane = TestDataplane::start(&snapshot, &[]).await;

    let cases: &[(&str, Option<&str>, u16, &str, &str)] = &[
        // (path, token, status, anthropic error type or openai code, message fragment)
        ("/p/anthropic/v1/messages", None, 401, "authentication_error", "missing gateway token"),
        ("/p/anthropic/v1/messages", Some("wrong"), 401, "authentication_error", "invalid gateway token"),
        ("/p/anthropic/v1/messages", Some("aur_disabled"), 401, "authentication_error", "disabled"),
        ("/p/anthropic/v1/messages", Some("aur_expired"), 401, "authentication_error", "expired"),
        (
            "/p/openai/v1/models",
            Some("aur_anthropic_only"),
            403,
            "provider_not_allowed",
            "not allowed to use provider openai",
        ),
        ("/p/openai/v1/models", Some("aur_expired"), 401, "invalid_api_key", "expired"),
        (
            "/p/zai/models",
            Some(MASTER_KEY),
            404,
            "provider_not_enabled",
            "enabled providers: openai, anthropic, openrouter, vllm",
        ),
        (
            "/p/gemini/models",
            Some(MASTER_KEY),
            404,
            "provider_not_enabled",
            "enabled providers: openai, anthropic, openrouter, vllm",
        ),
        ("/v1/chat/completions", Some(MASTER_KEY), 404, "no_route", "/p/{provider}/{endpoint}"),
    ];
    for (path, token, status, kind, fragment) in cases {
        let mut request = client().post(dataplane.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), *status, "{path} {token:?}");
        assert_eq!(response.headers()["x-aurora-error"], "gateway");
        assert!(response.headers().contains_key("x-request-id"));
        let body = json_body(response).await;
        let (actual_kind, message) = if path.starts_with("/p/anthropic") {
            assert_eq!(body["type"], "error");
            (&body["error"]["type"], &body["error"]["message"])
        } else {
            (&body["error"]["code"], &body["error"]["message"])
        };
        assert_eq!(actual_kind, kind, "{path} {token:?}: {body}");
        assert!(message.as_str().unwrap().contains(fragment), "{path} {token:?}: {body}");
    }

    for allowed in ["aur_future", "aur_anthropic_only"] {
        let response =
            client().post(dataplane.url("/p/anthropic/v1/messages")).bearer_auth(allowed).send().await.unwrap();
        assert_eq!(response.status(), 200, "{allowed}");
    }
    assert_eq!(upstream.received_requests().await.unwrap().len(), 2, "refused requests never reach upstream");
}

#[tokio::test]
async fn passthrough_routes_off_is_a_404_naming_no_providers() {
    let upstream = MockServer::start().await;
    let mut snapshot = snapshot_for(&upstream.uri());
    snapshot["settings"] = json!({ "passthrough_enabled": false });
    let dataplane = TestDataplane::start(&snapshot, &[]).await;
    let response = client().get(dataplane.url("/p/openai/v1/models")).bearer_auth(MASTER_KEY).send().await.unwrap();
    assert_eq!(response.status(), 404);
    let body = json_body(response).await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("(ENABLE_PASSTHROUGH_ROUTES=false); enabled providers: (none)")
    );
}

#[tokio::test]
async fn unsafe_paths_are_refused_before_anything_goes_upstream() {
    let upstream = MockServer::start().await;
    mock_ok(&upstream).await;
    let dataplane = TestDataplane::start(&snapshot_for(&upstream.uri()), &[]).await;
    let auth = format!("Bearer {MASTER_KEY}");

    for target in [
        "/p/openai/../admin",
        "/p/openai/v1/../../secrets",
        "/p/openai/./models",
        "/p/openai/%2e%2e/admin",
        "/p/openai/%2E%2E/%2e%2e/x",
        "/p/openai/models/..",
        "/p/openai/a%2F..%2F..%2Fb",
        "/p/openai/a%5c..%5cb",
        "/p/openai/a\\b",
        "/p/openai/a%00b",
        "/p/openai/a%0d%0ainjected:1",
        "/p/openai/..;x/admin",
        "/p/openai/..%20/admin",
        "/p/openai/.../admin",
        "/p/openai/%252e%252e/admin",
        "/p/openai/%EF%BC%8E%EF%BC%8E/admin",
    ] {
        let (status, text) =
            raw_http::send(dataplane.addr, &format!("GET {target} HTTP/1.1"), &[("authorization", &auth)]).await;
        assert_eq!(status, 400, "{target}: {text}");
        assert!(text.contains("x-aurora-error: gateway"), "{target}: {text}");
    }
    assert!(upstream.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn request_bodies_over_the_limit_get_413() {
    let upstream = MockServer::start().await;
    mock_ok(&upstream).await;
    let dataplane =
        TestDataplane::start(&snapshot_for(&upstream.uri()), &[("AURORA_MAX_REQUEST_BODY_BYTES", "1024")]).await;
    let url = dataplane.url("/p/anthropic/v1/messages");

    // Declared length: refused before anything is sent upstream.
    let response = client().post(&url).bearer_auth(MASTER_KEY).body(vec![b'x'; 1025]).send().await.unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(json_body(response).await["error"]["type"], "request_too_large");
    assert!(upstream.received_requests().await.unwrap().is_empty());

    // Streamed (chunked) body: cut off when it crosses the limit.
    let chunks =
        futures_util::stream::iter((0..8).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'y'; 512]))));
    let response =
        client().post(&url).bearer_auth(MASTER_KEY).body(reqwest::Body::wrap_stream(chunks)).send().await.unwrap();
    assert_eq!(response.status(), 413);

    let response = client().post(&url).bearer_auth(MASTER_KEY).body(vec![b'x'; 1024]).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn unreachable_upstream_is_502_and_a_slow_one_is_504() {
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let slow = MockServer::start().await;
    Mock::given(any()).respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(30))).mount(&slow).await;
    let mut snapshot = snapshot_for(&slow.uri());
    snapshot["providers"]["openai"]["base_url"] = json!(format!("http://{closed_port}/v1"));
    let dataplane = TestDataplane::start(&snapshot, &[("AURORA_UPSTREAM_HEADER_TIMEOUT", "300ms")]).await;

    let response = client().get(dataplane.url("/p/openai/v1/models")).bearer_auth(MASTER_KEY).send().await.unwrap();
    assert_eq!(response.status(), 502);
    assert_eq!(json_body(response).await["error"]["code"], "upstream_unreachable");

    let response = client().get(dataplane.url("/p/anthropic/v1/models")).bearer_auth(MASTER_KEY).send().await.unwrap();
    assert_eq!(response.status(), 504);
    assert_eq!(json_body(response).await["error"]["type"], "api_error");
}

#[tokio::test]
async fn h2c_clients_are_served_and_request_ids_are_generated() {
    let upstream = MockServer::start().await;
    mock_ok(&upstream).await;
    let dataplane = TestDataplane::start(&snapshot_for(&upstream.uri()), &[]).await;
    let h2 = reqwest::Client::builder().no_proxy().http2_prior_knowledge().build().unwrap();

    let response = h2.get(dataplane.url("/p/vllm/v1/models")).bearer_auth(MASTER_KEY).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let generated = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(generated.len(), 36);
    let requests = upstream.received_requests().await.unwrap();
    assert_eq!(requests[0].headers["x-request-id"].to_str().unwrap(), generated);
}

#[tokio::test]
async fn health_and_readiness() {
    let upstream = MockServer::start().await;
    let dataplane = TestDataplane::start(&snapshot_for(&upstream.uri()), &[]).await;
    assert_eq!(client().get(dataplane.admin_url("/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(client().get(dataplane.admin_url("/readyz")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn oversized_request_headers_get_431_on_both_protocols() {
    let upstream = MockServer::start().await;
    mock_ok(&upstream).await;
    let dataplane = TestDataplane::start(&snapshot_for(&upstream.uri()), &[("AURORA_MAX_HEADER_BYTES", "8192")]).await;
    let big = "a".repeat(20_000);
    let h2 = reqwest::Client::builder().no_proxy().http2_prior_knowledge().build().unwrap();
    for client in [client(), h2] {
        let response = client
            .get(dataplane.url("/p/vllm/v1/models"))
            .bearer_auth(MASTER_KEY)
            .header("x-big", &big)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 431);
    }
    assert!(upstream.received_requests().await.unwrap().is_empty());
}
