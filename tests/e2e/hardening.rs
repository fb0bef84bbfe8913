//! The data plane under hostile clients and upstreams: methods it must not forward, and header
//! sections that are large by count or by bytes.

use serde_json::{Value, json};
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::dataplane::{MASTER_KEY, TestDataplane, snapshot_for};
use crate::support::raw_http::{self, Behaviour, HeldUpstream};

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn mock_ok() -> MockServer {
    let upstream = MockServer::start().await;
    Mock::given(any()).respond_with(ResponseTemplate::new(200).set_body_string("{}")).mount(&upstream).await;
    upstream
}

/// Status, headers (lower-cased names) and JSON body of a raw response.
fn parse_raw(text: &str) -> (Vec<(String, String)>, Value) {
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    (headers, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn trace_connect_and_other_methods_are_refused_before_anything_goes_upstream() {
    let upstream = mock_ok().await;
    let dataplane = TestDataplane::start(&snapshot_for(&upstream.uri()), &[]).await;
    let bearer = format!("Bearer {MASTER_KEY}");
    let auth = [("authorization", bearer.as_str()), ("x-api-key", MASTER_KEY)];

    for (request_line, anthropic) in [
        ("TRACE /p/openai/v1/chat/completions HTTP/1.1", false),
        ("TRACE /p/anthropic/v1/messages HTTP/1.1", true),
        ("CONNECT /p/zai/x HTTP/1.1", false),
        ("PROPFIND /p/openrouter/api/v1/models HTTP/1.1", false),
    ] {
        let (status, text) = raw_http::send(dataplane.addr, request_line, &auth).await;
        assert_eq!(status, 405, "{request_line}: {text}");
        let (headers, body) = parse_raw(&text);
        let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        assert_eq!(header("allow"), Some("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"), "{request_line}");
        assert_eq!(header("x-aurora-error"), Some("gateway"), "{request_line}");
        let method = request_line.split(' ').next().unwrap();
        let message = format!(
            "method {method} is not forwarded; passthrough routes accept GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
        );
        let expected = if anthropic {
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": message}})
        } else {
            json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": "method_not_allowed"}})
        };
        assert_eq!(body, expected, "{request_line}");
    }
    assert!(upstream.received_requests().await.unwrap().is_empty(), "a refused method reached the upstream");

    // The methods that are forwarded still are.
    for method in [reqwest::Method::OPTIONS, reqwest::Method::DELETE, reqwest::Method::HEAD] {
        let response =
            client().request(method.clone(), dataplane.url("/p/openai/v1/files/f1")).bearer_auth(MASTER_KEY).send();
        assert_eq!(response.await.unwrap().status(), 200, "{method}");
    }
    let forwarded: Vec<String> =
        upstream.received_requests().await.unwrap().iter().map(|r| r.method.to_string()).collect();
    assert_eq!(forwarded, ["OPTIONS", "DELETE", "HEAD"]);
}

#[tokio::test]
async fn request_headers_are_limited_by_bytes_not_by_count() {
    let mut upstream = HeldUpstream::start(Behaviour::AnswerWithHeaders { count: 0, value_len: 0 }).await;
    let dataplane = TestDataplane::start(&snapshot_for(&upstream.base_url()), &[]).await;
    let url = dataplane.url("/p/openai/v1/chat/completions");
    let many = |count: usize| {
        let mut headers = reqwest::header::HeaderMap::new();
        for i in 0..count {
            headers.insert(reqwest::header::HeaderName::try_from(format!("x-h-{i}")).unwrap(), "v".parse().unwrap());
        }
        headers
    };
    let h2c = reqwest::Client::builder().no_proxy().http2_prior_knowledge().build().unwrap();

    // 104 small headers (about 1 KB) and 1,000 (about 10 KB), far below the 64 KiB limit.
    for (client, count) in [(client(), 104), (client(), 1000), (h2c, 1000)] {
        let response = client.post(&url).bearer_auth(MASTER_KEY).headers(many(count)).body("{}").send().await.unwrap();
        assert_eq!(response.status(), 200, "{count} headers");
        let head = upstream.next_request().await;
        assert_eq!(head.lines().filter(|l| l.starts_with("x-h-")).count(), count, "every header is forwarded");
    }

    // Past the byte limit, still 431.
    let big = "v".repeat(70 * 1024);
    let response = client().post(&url).bearer_auth(MASTER_KEY).header("x-big", big).body("{}").send().await.unwrap();
    assert_eq!(response.status(), 431);
}

#[tokio::test]
async fn upstream_answers_are_limited_by_header_bytes_and_refused_precisely() {
    let many = HeldUpstream::start(Behaviour::AnswerWithHeaders { count: 150, value_len: 20 }).await;
    let dataplane = TestDataplane::start(&snapshot_for(&many.base_url()), &[]).await;
    // Read raw: common HTTP clients (hyper's included) refuse more than 100 headers themselves.
    let bearer = format!("Bearer {MASTER_KEY}");
    let request_line = "GET /p/openai/v1/models HTTP/1.1";
    let (status, text) = raw_http::send(dataplane.addr, request_line, &[("authorization", &bearer)]).await;
    assert_eq!(status, 200, "{text}");
    let (headers, _) = parse_raw(&text);
    let passed = headers.iter().filter(|(name, _)| name.starts_with("x-upstream-")).count();
    assert_eq!(passed, 150, "every upstream header reaches the client");

    // Over AURORA_UPSTREAM_MAX_HEADER_BYTES (64 KiB by default): a 502 that says why.
    let huge = HeldUpstream::start(Behaviour::AnswerWithHeaders { count: 10, value_len: 10 * 1024 }).await;
    let dataplane = TestDataplane::start(&snapshot_for(&huge.base_url()), &[]).await;
    for (path, anthropic) in [("/p/openai/v1/chat/completions", false), ("/p/anthropic/v1/messages", true)] {
        let response =
            client().post(dataplane.url(path)).bearer_auth(MASTER_KEY).header("x-api-key", MASTER_KEY).body("{}");
        let response = response.send().await.unwrap();
        assert_eq!(response.status(), 502, "{path}");
        assert_eq!(response.headers()["x-aurora-error"], "gateway");
        let body: Value = response.json().await.unwrap();
        let message = "the upstream response headers exceed the gateway's limit of 65536 bytes (AURORA_UPSTREAM_MAX_HEADER_BYTES)";
        if anthropic {
            assert_eq!(body, json!({"type": "error", "error": {"type": "api_error", "message": message}}));
        } else {
            assert_eq!(body["error"]["code"], "upstream_response_invalid", "{body}");
            assert_eq!(body["error"]["message"], message, "{body}");
        }
    }
}
