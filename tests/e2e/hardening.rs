//! The data plane under hostile clients and upstreams: idle and silent connections, more
//! connections than it may hold, methods it must not forward, and header sections that are
//! large by count or by bytes.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::dataplane::{MASTER_KEY, TestDataplane, snapshot_for};
use crate::support::raw_http::{self, Behaviour, FIRST_EVENT, HeldUpstream, REST_EVENTS};
use crate::support::wait;

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// The HTTP/2 connection preface and an empty SETTINGS frame: all an h2c client must send.
const H2C_HELLO: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// Opens an h2c connection that says hello and then nothing: it answers no ping and opens no
/// stream.
async fn silent_h2c(addr: std::net::SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(H2C_HELLO).await.unwrap();
    stream
}

/// Reads (and discards) whatever the server sends until it closes the connection; returns how
/// long that took. Panics if the connection is still open after the deadline.
async fn until_closed(stream: &mut TcpStream) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(wait::DEADLINE, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    });
    closed.await.expect("the server never closed the connection");
    started.elapsed()
}

async fn scrape(dataplane: &TestDataplane) -> String {
    client().get(dataplane.admin_url("/metrics")).send().await.unwrap().text().await.unwrap()
}

/// The value of the unlabelled sample `series` in a scrape.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn mock_ok() -> MockServer {
    let upstream = MockServer::start().await;
    Mock::given(any()).respond_with(ResponseTemplate::new(200).set_body_string("{}")).mount(&upstream).await;
    upstream
}

#[tokio::test]
async fn idle_connections_are_closed_but_one_with_an_open_stream_is_not() {
    let upstream = HeldUpstream::start(Behaviour::StreamThenHold).await;
    // Keep-alive pings far apart, so that only the idle timeout can close anything here.
    let env = [
        ("AURORA_CONNECTION_IDLE_TIMEOUT", "500ms"),
        ("AURORA_HTTP2_KEEPALIVE_INTERVAL", "1h"),
        ("AURORA_HTTP2_KEEPALIVE_TIMEOUT", "2s"),
    ];
    let dataplane = TestDataplane::start(&snapshot_for(&upstream.base_url()), &env).await;
    dataplane.wait_ready().await;

    // An h2c stream that stays open, and quiet, for longer than the idle timeout.
    let streaming = reqwest::Client::builder().no_proxy().http2_prior_knowledge().build().unwrap();
    let (mut stream, mut received) = dataplane.first_event(&streaming).await;

    let mut idle = silent_h2c(dataplane.addr).await;
    let idle_for = until_closed(&mut idle).await;
    assert!(idle_for >= Duration::from_millis(450), "closed before the idle timeout: {idle_for:?}");

    // HTTP/1.1 keep-alive connections follow the same timeout once their response is sent.
    let mut keep_alive = TcpStream::connect(dataplane.addr).await.unwrap();
    keep_alive.write_all(b"GET /p/openai/v1/models HTTP/1.1\r\nhost: aurora\r\n\r\n").await.unwrap();
    until_closed(&mut keep_alive).await;

    // Both idle connections are gone; the busy one was left alone and completes intact.
    upstream.release();
    while let Some(chunk) = tokio::time::timeout(wait::DEADLINE, stream.next()).await.expect("stream stalled") {
        received.extend_from_slice(&chunk.expect("the stream was cut"));
    }
    assert_eq!(String::from_utf8(received).unwrap(), format!("{FIRST_EVENT}{REST_EVENTS}"));
}

#[tokio::test]
async fn an_h2c_client_that_never_answers_a_ping_is_dropped() {
    let upstream = mock_ok().await;
    let env = [
        ("AURORA_CONNECTION_IDLE_TIMEOUT", "1h"),
        ("AURORA_HTTP2_KEEPALIVE_INTERVAL", "300ms"),
        ("AURORA_HTTP2_KEEPALIVE_TIMEOUT", "300ms"),
    ];
    let dataplane = TestDataplane::start(&snapshot_for(&upstream.uri()), &env).await;
    let mut silent = silent_h2c(dataplane.addr).await;
    until_closed(&mut silent).await;
}

#[tokio::test]
async fn past_the_connection_cap_new_connections_are_closed_and_open_ones_keep_working() {
    let upstream = mock_ok().await;
    let mut dataplane = TestDataplane::start(&snapshot_for(&upstream.uri()), &[("AURORA_MAX_CONNECTIONS", "3")]).await;
    dataplane.wait_ready().await;
    let call = |client: reqwest::Client, url: String| async move {
        client.post(url).bearer_auth(MASTER_KEY).body("{}").send().await.map(|r| r.status().as_u16())
    };
    let url = dataplane.url("/p/openai/v1/chat/completions");

    // One client with a kept-alive connection, and two connections that just sit there.
    let kept = client();
    assert_eq!(call(kept.clone(), url.clone()).await.unwrap(), 200);
    let fillers =
        [TcpStream::connect(dataplane.addr).await.unwrap(), TcpStream::connect(dataplane.addr).await.unwrap()];
    wait::until_async("three open connections", || async {
        (sample(&scrape(&dataplane).await, "aurora_dataplane_connections_open") == Some(3.0)).then_some(())
    })
    .await;

    // At the cap, new connections are closed at once instead of hanging.
    for _ in 0..2 {
        let mut refused = TcpStream::connect(dataplane.addr).await.unwrap();
        let _ = refused.write_all(b"GET /p/openai/v1/models HTTP/1.1\r\nhost: aurora\r\n\r\n").await;
        until_closed(&mut refused).await;
    }
    // The connection already open is served as before.
    assert_eq!(call(kept.clone(), url.clone()).await.unwrap(), 200);

    let text = scrape(&dataplane).await;
    assert_eq!(sample(&text, "aurora_dataplane_connections_refused_total"), Some(2.0), "{text}");
    assert_eq!(sample(&text, "aurora_dataplane_connections_accepted_total"), Some(3.0), "{text}");
    assert_eq!(sample(&text, "aurora_dataplane_connections_open"), Some(3.0), "{text}");
    let warned = dataplane
        .process
        .wait_for_event("the cap is logged", |e| {
            e["message"].as_str().is_some_and(|m| m.starts_with("connection limit reached"))
        })
        .await;
    assert_eq!((warned["max_connections"].as_u64(), warned["level"].as_str()), (Some(3), Some("WARN")), "{warned}");
    let lines = dataplane.process.events().iter().filter(|e| e["message"] == warned["message"]).count();
    assert_eq!(lines, 1, "one line for a burst of refusals");

    // Below the cap again, new connections are served.
    drop(fillers);
    wait::until_async("one open connection", || async {
        (sample(&scrape(&dataplane).await, "aurora_dataplane_connections_open") == Some(1.0)).then_some(())
    })
    .await;
    assert_eq!(call(client(), url).await.unwrap(), 200);
}

/// The soft and hard "Max open files" of a process, from `/proc/{pid}/limits`.
fn open_file_limits(pid: &str) -> Option<(String, String)> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|line| line.starts_with("Max open files"))?;
    let mut fields = line["Max open files".len()..].split_whitespace();
    Some((fields.next()?.to_owned(), fields.next()?.to_owned()))
}

#[tokio::test]
async fn the_open_file_limit_is_raised_to_the_hard_limit_and_the_cap_fits_under_it() {
    let Some(hard) = open_file_limits("self").and_then(|(_, hard)| hard.parse::<u64>().ok()).filter(|h| *h >= 1024)
    else {
        eprintln!("skipped: needs /proc and a hard open-file limit of at least 1024");
        return;
    };
    let upstream = mock_ok().await;
    // Started the way many service managers start processes: with a low soft limit.
    let wrapper = ["sh", "-c", r#"ulimit -S -n 256 && exec "$0" "$@""#];
    let mut dataplane = TestDataplane::start_wrapped(&snapshot_for(&upstream.uri()), &[], &wrapper).await;

    let (soft, now_hard) = open_file_limits(&dataplane.process.pid().to_string()).unwrap();
    assert_eq!((soft.as_str(), now_hard.as_str()), (hard.to_string().as_str(), hard.to_string().as_str()));
    let limits = dataplane.process.wait_for_event("connection limits", |e| e["message"] == "connection limits").await;
    let expected = 10_000.min((hard - 128) / 2);
    assert_eq!(limits["max_connections"].as_u64(), Some(expected), "{limits}");
    assert_eq!(limits["open_file_limit"].as_u64(), Some(hard), "{limits}");
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

    // Past the byte limit, still 431, also for a head that arrives whole in one write.
    let big = "v".repeat(70 * 1024);
    let response =
        client().post(&url).bearer_auth(MASTER_KEY).header("x-big", big.as_str()).body("{}").send().await.unwrap();
    assert_eq!(response.status(), 431);
    let bearer = format!("Bearer {MASTER_KEY}");
    let request_line = "POST /p/openai/v1/chat/completions HTTP/1.1";
    let (status, _) =
        raw_http::send(dataplane.addr, request_line, &[("authorization", &bearer), ("x-big", &big)]).await;
    assert_eq!(status, 431);
    assert_eq!(upstream.arrived_request(), None, "nothing past the limit reached the upstream");
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
