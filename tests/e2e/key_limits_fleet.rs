//! Per-key limits across replicas (issue 13), end to end: one control plane, three data
//! planes, one key limited to N requests per minute. With demand above the limit the fleet
//! admits N (±10%) in the window, whether the load is spread evenly or lands on one replica;
//! the rest get the provider-shaped 429. With the control plane killed, each replica keeps the
//! documented fallback share (ceil(N / replicas)); when it returns, leases resume.
//!
//! Windows are minute-aligned wall-clock windows, so every phase first waits (on the clock,
//! with a deadline) until it can run entirely inside one window.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::controlplane::{ADMIN_KEY, TestControlplane};
use crate::support::dataplane::TestDataplane;
use crate::support::wait;

/// The key's limit in these tests.
const RPM: u64 = 30;
/// How long a phase sends for; it must fit in what is left of its window.
const PHASE: Duration = Duration::from_secs(15);
/// Room a phase asks of its window: the phase plus margin for a slow machine.
const ROOM: Duration = Duration::from_secs(25);

pub(crate) struct LimitFleet {
    pub upstream: MockServer,
    pub cp: Option<TestControlplane>,
    pub dataplanes: Vec<TestDataplane>,
    cp_env: Vec<(String, String)>,
    cp_dir: tempfile::TempDir,
}

pub(crate) async fn anthropic_upstream() -> MockServer {
    let upstream = MockServer::start().await;
    let body = r#"{"type":"message","model":"claude-haiku-4-5","usage":{"input_tokens":3,"output_tokens":2}}"#;
    Mock::given(method("POST"))
        .and(path("/anthropic/v1/messages"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(body, "application/json"))
        .mount(&upstream)
        .await;
    let body = r#"{"id":"c","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;
    Mock::given(method("POST"))
        .and(path("/openai/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(body, "application/json"))
        .mount(&upstream)
        .await;
    upstream
}

impl LimitFleet {
    /// A control plane on a fixed port (so it can be killed and brought back where the data
    /// planes look for it) and `nodes` data planes subscribed to it.
    pub(crate) async fn start(nodes: usize) -> Self {
        let upstream = anthropic_upstream().await;
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let cp_env = vec![
            ("AURORA_MASTER_KEY".to_owned(), ADMIN_KEY.to_owned()),
            ("AURORA_GRPC_LISTEN_ADDR".to_owned(), format!("127.0.0.1:{port}")),
            ("ANTHROPIC_BASE_URL".to_owned(), format!("{}/anthropic/v1", upstream.uri())),
            ("ANTHROPIC_API_KEY".to_owned(), "sk-ant-upstream".to_owned()),
            ("OPENAI_BASE_URL".to_owned(), format!("{}/openai/v1", upstream.uri())),
            ("OPENAI_API_KEY".to_owned(), "sk-oa-upstream".to_owned()),
        ];
        let cp_dir = tempfile::tempdir().unwrap();
        let mut fleet = LimitFleet { upstream, cp: None, dataplanes: Vec::new(), cp_env, cp_dir };
        fleet.start_control_plane().await;
        let url = fleet.cp().url();
        for index in 0..nodes {
            fleet.dataplanes.push(TestDataplane::subscribed(&url, &format!("dp-limits-{index}"), &[]).await);
        }
        for dp in &fleet.dataplanes {
            dp.wait_ready().await;
        }
        fleet
    }

    pub(crate) fn cp(&self) -> &TestControlplane {
        self.cp.as_ref().expect("the control plane is running")
    }

    async fn start_control_plane(&mut self) {
        let env: Vec<(&str, &str)> = self.cp_env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        self.cp = Some(TestControlplane::start_in(self.cp_dir.path(), &env).await);
    }

    /// SIGKILL: no goodbye on any stream.
    async fn kill_control_plane(&mut self) {
        let mut cp = self.cp.take().expect("the control plane is running");
        cp.process.signal("KILL");
        cp.process.wait_exit().await;
    }

    /// Creates a key with `limits` (CLI flags) and waits until every data plane has it.
    pub(crate) async fn key(&self, name: &str, limits: &[&str]) -> String {
        let mut args = vec!["keys", "create", "--name", name];
        args.extend_from_slice(limits);
        args.extend_from_slice(&["-o", "json", "--wait"]);
        let created = self.cp().cli(&args).await.json();
        created["secret"].as_str().unwrap().to_owned()
    }
}

/// Unix milliseconds now.
pub(crate) fn unix_ms() -> i64 {
    i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

/// Waits until at least `room` is left of the current minute window and it is later than
/// `after` (a window index, minutes since the epoch); returns the window's index. A condition
/// on the clock with a deadline, never a bare sleep.
pub(crate) async fn window_with_room(room: Duration, after: Option<i64>) -> i64 {
    let room_ms = i64::try_from(room.as_millis()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(130);
    loop {
        let now = unix_ms();
        let window = now.div_euclid(60_000);
        if after.is_none_or(|after| window > after) && 60_000 - now.rem_euclid(60_000) >= room_ms {
            return window;
        }
        assert!(Instant::now() < deadline, "no minute window with {room:?} of room came");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One response as the tests read it.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

pub(crate) async fn call(client: &reqwest::Client, dp: &TestDataplane, token: &str) -> Answer {
    let response = client
        .post(dp.url("/p/anthropic/v1/messages"))
        .bearer_auth(token)
        .body(r#"{"model":"claude-haiku-4-5","max_tokens":1,"messages":[]}"#)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    Answer { status, headers, body }
}

/// Sends `count` requests evenly over [`PHASE`], each to the data plane `pick` names, all
/// inside window `window`; returns every answer with the data plane it went to.
async fn phase(
    fleet: &LimitFleet,
    token: &str,
    window: i64,
    count: usize,
    pick: impl Fn(usize) -> usize,
) -> Vec<(usize, Answer)> {
    let client = reqwest::Client::new();
    let mut pace = tokio::time::interval(PHASE / u32::try_from(count).unwrap());
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut answers = Vec::with_capacity(count);
    for index in 0..count {
        // Load generation at a fixed rate, not a wait for a condition.
        pace.tick().await;
        let dp = pick(index);
        answers.push((dp, call(&client, &fleet.dataplanes[dp], token).await));
    }
    assert_eq!(unix_ms().div_euclid(60_000), window, "the phase overran its window");
    answers
}

fn admitted(answers: &[(usize, Answer)]) -> u64 {
    answers.iter().filter(|(_, a)| a.status == 200).count() as u64
}

/// Every answer is either admitted or the gateway's Anthropic-shaped 429 with `retry-after`
/// and the key's own rate-limit headers.
fn assert_refusals_are_provider_shaped(answers: &[(usize, Answer)]) {
    let mut refused = 0;
    for (dp, answer) in answers {
        match answer.status {
            200 => assert_eq!(answer.headers["anthropic-ratelimit-requests-limit"], RPM.to_string().as_str()),
            429 => {
                refused += 1;
                assert_eq!(answer.headers["x-aurora-error"], "gateway", "dp {dp}: {answer:?}");
                let retry: u64 = answer.headers["retry-after"].to_str().unwrap().parse().unwrap();
                assert!((1..=60).contains(&retry), "retry-after {retry}");
                assert_eq!(answer.headers["anthropic-ratelimit-requests-remaining"], "0");
                assert_eq!(answer.body["type"], "error");
                assert_eq!(answer.body["error"]["type"], "rate_limit_error", "{:?}", answer.body);
            }
            other => panic!("dp {dp}: unexpected status {other}: {answer:?}"),
        }
    }
    assert!(refused > 0, "demand above the limit must see refusals");
}

fn within_ten_percent(admitted: u64) -> bool {
    (RPM * 9 / 10..=RPM * 11 / 10).contains(&admitted)
}

#[tokio::test]
async fn a_fleet_admits_the_limit_spread_evenly_and_all_on_one_replica() {
    let fleet = LimitFleet::start(3).await;
    let rpm = RPM.to_string();
    let token = fleet.key("fleet-limited", &["--rpm", &rpm]).await;

    // Spread evenly: twice the limit, round robin over the three replicas.
    let window = window_with_room(ROOM, None).await;
    let spread = phase(&fleet, &token, window, 2 * RPM as usize, |i| i % 3).await;
    assert_refusals_are_provider_shaped(&spread);
    let per_replica: Vec<u64> =
        (0..3).map(|dp| spread.iter().filter(|(d, a)| *d == dp && a.status == 200).count() as u64).collect();
    assert!(within_ten_percent(admitted(&spread)), "spread evenly: admitted {per_replica:?} of a limit of {RPM}");

    // Concentrated: the next window, every request to one replica. Its share must grow to
    // (nearly) the whole limit, not stay at a third of it.
    let window = window_with_room(ROOM, Some(window)).await;
    let concentrated = phase(&fleet, &token, window, 2 * RPM as usize, |_| 0).await;
    assert_refusals_are_provider_shaped(&concentrated);
    let admitted = admitted(&concentrated);
    assert!(within_ten_percent(admitted), "all on one replica: admitted {admitted} of a limit of {RPM}");
    let forwarded = fleet.upstream.received_requests().await.unwrap().len() as u64;
    assert_eq!(forwarded, admitted + per_replica.iter().sum::<u64>(), "refused requests never go upstream");
}

/// The value of the series `name` (with its labels, as exposed) on `dp`'s `/metrics`.
pub(crate) async fn metric(dp: &TestDataplane, series: &str) -> Option<f64> {
    let text = reqwest::get(dp.admin_url("/metrics")).await.ok()?.text().await.ok()?;
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn wait_leases(dp: &TestDataplane, state: &str) {
    let series = format!("aurora_dataplane_limit_leases{{state=\"{state}\"}}");
    wait::until_async(&format!("a lease {state} on {}", dp.addr), || async {
        (metric(dp, &series).await? >= 1.0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn with_the_control_plane_gone_replicas_keep_their_share_and_leases_resume_when_it_returns() {
    let mut fleet = LimitFleet::start(3).await;
    let rpm = RPM.to_string();
    let token = fleet.key("fallback-limited", &["--rpm", &rpm]).await;
    let client = reqwest::Client::new();

    // Traffic on every replica: each reports demand and holds a lease (for three replicas).
    for dp in &fleet.dataplanes {
        assert_eq!(call(&client, dp, &token).await.status, 200);
    }
    for dp in &fleet.dataplanes {
        wait_leases(dp, "held").await;
    }

    fleet.kill_control_plane().await;
    for dp in &fleet.dataplanes {
        wait_leases(dp, "expired").await;
    }

    // A fresh window without the control plane: each replica admits ceil(30 / 3) = 10, the
    // fallback share, never the whole limit and never nothing.
    let window = window_with_room(ROOM, Some(unix_ms().div_euclid(60_000))).await;
    let mut fallback = Vec::new();
    for dp in 0..2 {
        let mut answers = Vec::new();
        for _ in 0..20 {
            answers.push((dp, call(&client, &fleet.dataplanes[dp], &token).await));
        }
        assert_refusals_are_provider_shaped(&answers);
        assert_eq!(admitted(&answers), RPM.div_ceil(3), "dp {dp} without a lease");
        fallback.extend(answers);
    }

    // The control plane returns: leases resume, and the replica with demand gets a share of
    // what the window has left, within the limit fleet-wide.
    let updates = "aurora_dataplane_limit_lease_updates_total";
    let before = metric(&fleet.dataplanes[0], updates).await.unwrap();
    fleet.start_control_plane().await;
    wait::until_async("leases after the control plane returned", || async {
        (metric(&fleet.dataplanes[0], updates).await? > before).then_some(())
    })
    .await;
    let mut after = Vec::new();
    let deadline = Instant::now() + wait::DEADLINE;
    while admitted(&after) == 0 {
        assert!(Instant::now() < deadline, "no request admitted past the fallback share once leases resumed");
        after.push((0, call(&client, &fleet.dataplanes[0], &token).await));
        // A condition poll: each refusal reports demand, the next lease may grow the share.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And the window's limit still holds fleet-wide.
    for _ in 0..RPM {
        after.push((0, call(&client, &fleet.dataplanes[0], &token).await));
    }
    assert_eq!(unix_ms().div_euclid(60_000), window, "the test overran its window");
    let total = admitted(&fallback) + admitted(&after);
    assert!(admitted(&after) > 0, "leases resumed, so the replica with demand got more of the window: {after:?}");
    assert!(total <= RPM * 11 / 10, "the fleet admitted {total} of {RPM} in the window");
}

#[tokio::test]
async fn with_the_limit_fallback_closed_limited_keys_are_refused_without_a_lease_and_others_served() {
    let mut fleet = LimitFleet::start(1).await;
    fleet.cp().cli(&["settings", "set", "--limit-fallback", "closed", "--wait"]).await.ok();
    let limited = fleet.key("closed-limited", &["--rpm", "1000"]).await;
    let unlimited = fleet.key("closed-unlimited", &[]).await;
    let client = reqwest::Client::new();
    let dp = &fleet.dataplanes[0];
    // Fail-closed refuses until the first lease: demand goes out, and a lease comes back.
    wait::until_async("a lease for the limited key", || async {
        (call(&client, dp, &limited).await.status == 200).then_some(())
    })
    .await;

    fleet.kill_control_plane().await;
    let dp = &fleet.dataplanes[0];
    wait_leases(dp, "expired").await;
    let refused = call(&client, dp, &limited).await;
    assert_eq!(refused.status, 429, "{refused:?}");
    assert_eq!(refused.headers["x-aurora-error"], "gateway");
    assert_eq!(refused.headers["retry-after"], "1");
    assert_eq!(refused.body["error"]["type"], "rate_limit_error");
    let message = refused.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("cannot reach its limit service"), "{message}");
    // A key without limits does not depend on leases.
    assert_eq!(call(&client, dp, &unlimited).await.status, 200);
    let series = "aurora_dataplane_limit_refusals_total{reason=\"no_lease\"}";
    assert!(metric(dp, series).await.unwrap() >= 1.0);
}

#[tokio::test]
async fn default_limits_bind_keys_without_their_own_and_no_limits_opts_out() {
    let fleet = LimitFleet::start(1).await;
    fleet.cp().cli(&["settings", "set", "--default-rpm", "3", "--wait"]).await.ok();
    let defaulted = fleet.key("defaulted", &[]).await;
    let exempt = fleet.key("exempt", &["--no-limits"]).await;
    let client = reqwest::Client::new();
    let dp = &fleet.dataplanes[0];

    // Refused within a few calls (more than 3 only if a window turns meanwhile), with the
    // default's figures in the headers of the admitted ones.
    let mut answers = Vec::new();
    while !answers.iter().any(|a: &Answer| a.status == 429) {
        assert!(answers.len() < 10, "the default limit never refused: {answers:?}");
        answers.push(call(&client, dp, &defaulted).await);
    }
    let first = &answers[0];
    assert_eq!(first.status, 200);
    assert_eq!(first.headers["anthropic-ratelimit-requests-limit"], "3");
    assert_eq!(first.headers["anthropic-ratelimit-requests-remaining"], "2");

    // `--no-limits` keeps the defaults away: no refusal, and no rate-limit headers of ours.
    for _ in 0..10 {
        let answer = call(&client, dp, &exempt).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        assert!(!answer.headers.contains_key("anthropic-ratelimit-requests-limit"));
    }
}

#[tokio::test]
async fn a_limited_keys_headers_replace_the_providers_own_over_http1_and_h2c() {
    let fleet = LimitFleet::start(1).await;
    // The provider's headers describe the upstream credential: 50 requests, 80,000 tokens.
    Mock::given(method("POST"))
        .and(path("/anthropic/v1/complete"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("anthropic-ratelimit-requests-limit", "50")
                .insert_header("anthropic-ratelimit-requests-remaining", "49")
                .insert_header("anthropic-ratelimit-tokens-limit", "80000")
                .set_body_raw(r#"{"type":"completion","completion":"ok"}"#, "application/json"),
        )
        .mount(&fleet.upstream)
        .await;
    let key = fleet.key("replaced", &["--rpm", "1000"]).await;
    let dp = &fleet.dataplanes[0];
    let http1 = reqwest::Client::builder().no_proxy().http1_only().build().unwrap();
    let h2c = reqwest::Client::builder().no_proxy().http2_prior_knowledge().build().unwrap();
    for (client, version) in [(&http1, reqwest::Version::HTTP_11), (&h2c, reqwest::Version::HTTP_2)] {
        let response = client
            .post(dp.url("/p/anthropic/v1/complete"))
            .bearer_auth(&key)
            .body(r#"{"model":"claude-2.1","prompt":"hi","max_tokens_to_sample":1}"#)
            .send()
            .await
            .unwrap();
        assert_eq!((response.status().as_u16(), response.version()), (200, version));
        let headers = response.headers();
        let all = |name: &str| headers.get_all(name).iter().map(|v| v.to_str().unwrap().to_owned()).collect::<Vec<_>>();
        // The key's own limit, once; what is left of it, not the provider's 49.
        assert_eq!(all("anthropic-ratelimit-requests-limit"), ["1000"], "{version:?}: {headers:?}");
        let remaining = all("anthropic-ratelimit-requests-remaining");
        assert!(remaining.len() == 1 && remaining[0].parse::<u64>().unwrap() < 1000, "{version:?}: {headers:?}");
        assert_eq!(all("anthropic-ratelimit-requests-reset").len(), 1, "{version:?}: {headers:?}");
        // The key has no token limit: the provider's passes unchanged.
        assert_eq!(all("anthropic-ratelimit-tokens-limit"), ["80000"], "{version:?}: {headers:?}");
    }
}
