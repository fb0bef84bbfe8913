//! Per-key limits (issue 13) as clients meet them: a key limited to two concurrent streams
//! refuses a third while two are open and admits it again once one ends or its client goes
//! away; the official SDKs raise their own rate-limit exception for a key over its limit.

use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::key_limits_fleet::{LimitFleet, call};
use crate::support::controlplane::TestControlplane;
use crate::support::dataplane::TestDataplane;
use crate::support::raw_http::{Behaviour, FIRST_EVENT, HeldUpstream};
use crate::support::wait;

/// A streamed call on its own client (its own connection, so dropping it hangs up), read up
/// to the first event; `Err` with the status when it is refused.
async fn open_stream(
    dp: &TestDataplane,
    token: &str,
) -> Result<
    (reqwest::Client, impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin + use<>),
    reqwest::Response,
> {
    let client = reqwest::Client::new();
    let response = client
        .post(dp.url("/p/anthropic/v1/messages"))
        .bearer_auth(token)
        .body(r#"{"model":"claude-haiku-4-5","max_tokens":1,"stream":true,"messages":[]}"#)
        .send()
        .await
        .unwrap();
    if response.status() != 200 {
        return Err(response);
    }
    let mut stream = response.bytes_stream();
    let mut received = Vec::new();
    while received.len() < FIRST_EVENT.len() {
        received.extend_from_slice(&stream.next().await.unwrap().unwrap());
    }
    Ok((client, stream))
}

/// Opens a stream as soon as the key has a free slot again (a condition wait with a deadline).
async fn open_when_free(
    dp: &TestDataplane,
    token: &str,
) -> (reqwest::Client, impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin + use<>) {
    let deadline = Instant::now() + wait::DEADLINE;
    loop {
        match open_stream(dp, token).await {
            Ok(open) => return open,
            Err(refused) if refused.status() == 429 => {}
            Err(other) => panic!("only the concurrency limit may refuse: {} {:?}", other.status(), other.text().await),
        }
        assert!(Instant::now() < deadline, "the slot was never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_key_limited_to_two_streams_refuses_a_third_until_one_ends_or_is_abandoned() {
    let mut upstream = HeldUpstream::start(Behaviour::StreamThenHold).await;
    let base_url = format!("{}/v1", upstream.base_url());
    let cp =
        TestControlplane::start(&[("ANTHROPIC_BASE_URL", &base_url), ("ANTHROPIC_API_KEY", "sk-ant-upstream")]).await;
    // The held upstream answers one request per connection: pooled connections must not be
    // reused (idle for a millisecond is too long), or a later stream would wait on one.
    let env = [("AURORA_UPSTREAM_POOL_IDLE_TIMEOUT", "1ms"), ("AURORA_UPSTREAM_HEADER_TIMEOUT", "20s")];
    let dp = TestDataplane::subscribed(&cp.url(), "dp-streams", &env).await;
    dp.wait_ready().await;
    let created = cp.cli(&["keys", "create", "--name", "two-streams", "--max-concurrent", "2", "-o", "json", "--wait"]);
    let token = created.await.json()["secret"].as_str().unwrap().to_owned();

    let first = open_stream(&dp, &token).await.expect("the first stream is admitted");
    upstream.next_request().await;
    let second = open_stream(&dp, &token).await.expect("the second stream is admitted");
    upstream.next_request().await;

    // The third, while two are open: the gateway's Anthropic-shaped 429, never forwarded.
    let refused = open_stream(&dp, &token).await.err().expect("a third stream must be refused");
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["x-aurora-error"], "gateway");
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("in flight"), "{body}");

    // The first client goes away mid-stream: its slot is freed (the gateway hangs up upstream
    // too), and a new stream is admitted.
    drop(first);
    upstream.wait_closed().await;
    let third = open_when_free(&dp, &token).await;
    upstream.next_request().await;
    assert!(open_stream(&dp, &token).await.is_err(), "two are open again");

    // One stream ends normally (whichever the upstream releases): its slot is freed too.
    upstream.release();
    let (_second_client, mut second_stream) = second;
    let (_third_client, mut third_stream) = third;
    tokio::time::timeout(wait::DEADLINE, async {
        tokio::select! {
            () = async { while second_stream.next().await.is_some() {} } => {},
            () = async { while third_stream.next().await.is_some() {} } => {},
        }
    })
    .await
    .expect("a released stream ends");
    // Its upstream connection is closed once idle (see the environment above), so the next
    // stream gets a connection of its own.
    upstream.wait_closed().await;
    let _fourth = open_when_free(&dp, &token).await;
}

#[tokio::test]
async fn the_official_sdks_raise_their_own_rate_limit_errors() {
    let fleet = LimitFleet::start(1).await;
    let token = fleet.key("sdk-limited", &["--rpm", "3"]).await;
    // The window may turn while the script runs; it calls until refused, so that only costs
    // a few more calls.
    let dp = &fleet.dataplanes[0];
    assert_eq!(call(&reqwest::Client::new(), dp, &token).await.status, 200);
    crate::sdk::run_script_at("limits_client.py", &format!("http://{}", dp.addr), &token, &dp.process.logs());
}
