//! Graceful shutdown: SIGTERM never cuts a request or a stream, and replicas move on at once.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::controlplane::{ADMIN_KEY, TestControlplane};
use crate::support::dataplane::{MASTER_KEY, TestDataplane, snapshot_for};
use crate::support::raw_http::{Behaviour, FIRST_EVENT, HeldUpstream, REST_EVENTS};
use crate::support::wait;

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

#[tokio::test]
async fn sigterm_drains_a_data_plane_without_cutting_an_open_stream() {
    drain_with_an_open_stream(client()).await;
}

/// HTTP/2 shuts down differently (GOAWAY naming the last stream it will finish): the open
/// stream must survive that too.
#[tokio::test]
async fn sigterm_drains_an_h2c_stream_too() {
    drain_with_an_open_stream(reqwest::Client::builder().no_proxy().http2_prior_knowledge().build().unwrap()).await;
}

async fn drain_with_an_open_stream(streaming: reqwest::Client) {
    let upstream = HeldUpstream::start(Behaviour::StreamThenHold).await;
    let env = [("AURORA_SHUTDOWN_DRAIN_DELAY", "200ms"), ("AURORA_SHUTDOWN_GRACE", "20s")];
    let mut dataplane = TestDataplane::start(&snapshot_for(&upstream.base_url()), &env).await;
    dataplane.wait_ready().await;

    let (mut stream, mut received) = dataplane.first_event(&streaming).await;

    dataplane.process.signal("TERM");
    // Load balancers see the replica leave at once; its admin listener stays up meanwhile.
    wait::until_async("/readyz 503 after SIGTERM", || async { (dataplane.readiness().await == 503).then_some(()) })
        .await;
    let signalled = Instant::now();
    // After the drain delay the listener is gone: new connections are refused.
    wait::until_async("new connections refused", || async {
        tokio::net::TcpStream::connect(dataplane.addr).await.is_err().then_some(())
    })
    .await;
    assert!(signalled.elapsed() < Duration::from_secs(10));
    let healthz = client().get(dataplane.admin_url("/healthz")).send().await.unwrap();
    assert_eq!(healthz.status(), 200, "the admin listener serves until the very end");

    // The stream that was open all along completes intact.
    upstream.release();
    while let Some(chunk) = tokio::time::timeout(wait::DEADLINE, stream.next()).await.expect("stream stalled") {
        received.extend_from_slice(&chunk.expect("the stream was cut"));
    }
    assert_eq!(String::from_utf8(received).unwrap(), format!("{FIRST_EVENT}{REST_EVENTS}"));
    assert_eq!(dataplane.process.wait_exit().await, Some(0), "logs:\n{}", dataplane.process.logs());

    let events = dataplane.process.events();
    let access = events.iter().find(|e| e["target"] == "aurora::access").expect("the stream is logged");
    assert_eq!((access["outcome"].as_str(), access["stream"].as_bool()), (Some("complete"), Some(true)), "{access}");
    assert!(!events.iter().any(|e| e["message"] == "grace period over; closing remaining connections"));
}

#[tokio::test]
async fn a_request_still_waiting_for_upstream_headers_completes_after_sigterm() {
    let upstream = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_string("{}").set_delay(Duration::from_millis(800)))
        .mount(&upstream)
        .await;
    let env = [("AURORA_SHUTDOWN_DRAIN_DELAY", "0s")];
    let mut dataplane = TestDataplane::start(&snapshot_for(&upstream.uri()), &env).await;
    dataplane.wait_ready().await;

    let url = dataplane.url("/p/openai/v1/chat/completions");
    let pending = tokio::spawn(client().post(url).bearer_auth(MASTER_KEY).body("{}").send());
    wait::until_async("the request reached the upstream", || async {
        (!upstream.received_requests().await.unwrap_or_default().is_empty()).then_some(())
    })
    .await;
    dataplane.process.signal("TERM");
    let response = pending.await.unwrap().expect("the in-flight request was cut");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "{}");
    assert_eq!(dataplane.process.wait_exit().await, Some(0));
}

#[tokio::test]
async fn control_plane_sigterm_moves_replicas_to_the_next_control_plane_at_once() {
    let upstream = MockServer::start().await;
    Mock::given(any()).respond_with(ResponseTemplate::new(200)).mount(&upstream).await;
    let base_url = format!("{}/anthropic/v1", upstream.uri());
    let env = [("ANTHROPIC_BASE_URL", base_url.as_str()), ("ANTHROPIC_API_KEY", "sk-ant-e2e")];
    // Two control planes on one database, as in a highly available deployment.
    let dir = tempfile::tempdir().unwrap();
    let mut all_env = vec![("AURORA_MASTER_KEY", ADMIN_KEY)];
    all_env.extend_from_slice(&env);
    let mut first = TestControlplane::start_in(dir.path(), &all_env).await;
    let mut second = TestControlplane::start_in(dir.path(), &all_env).await;
    let urls = format!("{},{}", first.url(), second.url());
    let mut dataplane = TestDataplane::subscribed(&urls, "dp-roll", &[]).await;
    dataplane.wait_ready().await;
    assert_eq!(dataplane.call(ADMIN_KEY).await, 200);
    let subscribed_to = |url: String| {
        move |e: &serde_json::Value| {
            e["message"] == "subscribed to the control plane" && e["control_plane"].as_str() == Some(&format!("{url}/"))
        }
    };
    dataplane.process.wait_for_event("subscribed to the first", subscribed_to(first.url())).await;

    first.process.signal("TERM");
    let signalled = Instant::now();
    dataplane.process.wait_for_event("subscribed to the second", subscribed_to(second.url())).await;
    let moved = signalled.elapsed();
    assert!(moved < Duration::from_secs(3), "replicas must not wait for a stall timeout: {moved:?}");
    assert_eq!(first.process.wait_exit().await, Some(0), "logs:\n{}", first.process.logs());
    let closed = first.process.events().into_iter().any(|e| {
        e["message"] == "closing config stream" && e["error"].as_str().is_some_and(|m| m.contains("shutting down"))
    });
    assert!(closed, "the stream is ended on purpose, not dropped:\n{}", first.process.logs());

    // Still serving throughout, and configured from the second control plane from now on.
    assert_eq!(dataplane.call(ADMIN_KEY).await, 200);
    let created = second.cli(&["keys", "create", "--name", "after-roll", "-o", "json", "--wait"]).await.json();
    assert_eq!(dataplane.call(created["secret"].as_str().unwrap()).await, 200);

    // The database is left consistent: with every connection closed, the write-ahead log has
    // been folded back into the database file.
    second.process.signal("TERM");
    assert_eq!(second.process.wait_exit().await, Some(0));
    let wal = dir.path().join("data/aurora.db-wal");
    let wal_len = std::fs::metadata(&wal).map_or(0, |m| m.len());
    assert_eq!(wal_len, 0, "{} still holds {wal_len} bytes", wal.display());
}
