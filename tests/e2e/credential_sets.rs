//! Credential sets (issue 15): several upstream credentials per provider, chosen per request
//! around rate limits, on real control-plane and data-plane processes. The wiremock upstream
//! records every request, so its log proves which credential each one carried (`x-api-key`,
//! Anthropic's header) and through which data plane (`x-test-via`, passed through untouched).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use wiremock::matchers::{any, header};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::controlplane::TestControlplane;
use crate::support::dataplane::TestDataplane;
use crate::support::wait;

struct Fleet {
    upstream: MockServer,
    cp: TestControlplane,
    dataplanes: Vec<TestDataplane>,
    token: String,
}

/// A control plane with anthropic pointed at a fresh mock upstream, `nodes` data planes
/// subscribed and current, and a gateway key.
async fn fleet(nodes: &[&str]) -> Fleet {
    let upstream = MockServer::start().await;
    let base_url = format!("{}/anthropic/v1", upstream.uri());
    let cp = TestControlplane::start(&[("ANTHROPIC_BASE_URL", &base_url)]).await;
    let mut dataplanes = Vec::new();
    for node in nodes {
        dataplanes.push(TestDataplane::subscribed(&cp.url(), node, &[]).await);
    }
    for dp in &dataplanes {
        dp.wait_ready().await;
    }
    let created = cp.cli(&["keys", "create", "--name", "client", "-o", "json", "--wait"]).await.json();
    let token = created["secret"].as_str().unwrap().to_owned();
    Fleet { upstream, cp, dataplanes, token }
}

impl Fleet {
    /// `aurora providers credentials add anthropic NAME`, the secret on stdin.
    async fn add(&self, name: &str, secret: &str, extra: &[&str]) {
        let mut args = vec!["providers", "credentials", "add", "anthropic", name, "--wait"];
        args.extend_from_slice(extra);
        let out =
            self.cp.cli_with(&args, &[("AURORA_MASTER_KEY", crate::support::controlplane::ADMIN_KEY)], Some(secret));
        let out = out.await;
        assert!(!out.ok().contains(secret), "the secret is never printed: {out:?}");
    }

    /// Sends one request through data plane `dp`; returns status, `retry-after` and body.
    async fn call(&self, dp: usize) -> (u16, Option<String>, String) {
        let response = reqwest::Client::new()
            .post(self.dataplanes[dp].url("/p/anthropic/v1/messages"))
            .bearer_auth(&self.token)
            .header("x-test-via", dp.to_string())
            .body("{}")
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
        (status, retry_after, response.text().await.unwrap())
    }

    /// (data plane, credential) of every upstream request after the first `skip`.
    async fn log(&self, skip: usize) -> Vec<(String, String)> {
        let requests = self.upstream.received_requests().await.unwrap();
        requests
            .iter()
            .skip(skip)
            .map(|r| {
                let get = |name: &str| r.headers.get(name).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
                (get("x-test-via"), get("x-api-key"))
            })
            .collect()
    }

    async fn metric(&self, dp: usize, series: &str) -> Option<f64> {
        let text = reqwest::get(self.dataplanes[dp].admin_url("/metrics")).await.ok()?.text().await.ok()?;
        text.lines().find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
    }
}

fn cooling(name: &str) -> String {
    format!("aurora_dataplane_credential_cooling_down{{provider=\"anthropic\",credential=\"{name}\"}}")
}

async fn ok_upstream(upstream: &MockServer) {
    Mock::given(any()).respond_with(ResponseTemplate::new(200).set_body_string("{}")).mount(upstream).await;
}

#[tokio::test]
async fn a_throttled_credential_is_stepped_around_on_every_replica_until_its_cooldown_ends() {
    let fleet = fleet(&["dp-a", "dp-b"]).await;
    // The first request with sk-a is throttled; everything else succeeds.
    Mock::given(header("x-api-key", "sk-a"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "2")
                .set_body_string(r#"{"type":"error","error":{"type":"rate_limit_error"}}"#),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&fleet.upstream)
        .await;
    ok_upstream(&fleet.upstream).await;
    fleet.add("a", "sk-a", &[]).await;
    fleet.add("b", "sk-b", &[]).await;

    // Through dp-a until a request carries sk-a: the client gets the provider's 429 as is.
    let throttled = wait::until_async("a request with sk-a through dp-a", || async {
        let (status, retry_after, body) = fleet.call(0).await;
        (status == 429).then_some((retry_after, body))
    })
    .await;
    let throttled_at = Instant::now();
    assert_eq!(throttled, (Some("2".into()), r#"{"type":"error","error":{"type":"rate_limit_error"}}"#.into()));

    // The cooldown reaches dp-b through the control plane, well within a second or so.
    wait::until_async("dp-b learns the cooldown", || async {
        (fleet.metric(1, &cooling("a")).await == Some(1.0)).then_some(())
    })
    .await;
    let fanned_out = throttled_at.elapsed();
    assert!(fanned_out < Duration::from_millis(1500), "cooldown took {fanned_out:?} to reach dp-b");

    // While it lasts, both replicas send everything with sk-b.
    let mark = fleet.upstream.received_requests().await.unwrap().len();
    for _ in 0..5 {
        for dp in 0..2 {
            assert_eq!(fleet.call(dp).await.0, 200);
        }
    }
    if throttled_at.elapsed() < Duration::from_secs(2) {
        let log = fleet.log(mark).await;
        assert!(log.iter().all(|(_, credential)| credential == "sk-b"), "{log:?}");
        assert_eq!(log.len(), 10, "no request was retried: {log:?}");
    }

    // After the cooldown sk-a is used again, on both replicas.
    wait::until_async("the cooldown ends on both replicas", || async {
        let a = fleet.metric(0, &cooling("a")).await;
        let b = fleet.metric(1, &cooling("a")).await;
        (a == Some(0.0) && b == Some(0.0)).then_some(())
    })
    .await;
    let mark = fleet.upstream.received_requests().await.unwrap().len();
    for _ in 0..6 {
        for dp in 0..2 {
            assert_eq!(fleet.call(dp).await.0, 200);
        }
    }
    let log = fleet.log(mark).await;
    for dp in ["0", "1"] {
        assert!(log.iter().any(|(via, c)| via == dp && c == "sk-a"), "dp {dp} uses sk-a again: {log:?}");
    }
}

#[tokio::test]
async fn when_every_credential_is_throttled_the_client_gets_the_providers_429_verbatim() {
    let fleet = fleet(&["dp-a"]).await;
    let body = r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#;
    Mock::given(any())
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "7")
                .insert_header("anthropic-ratelimit-requests-remaining", "0")
                .set_body_raw(body, "application/json"),
        )
        .mount(&fleet.upstream)
        .await;
    fleet.add("a", "sk-a", &[]).await;
    fleet.add("b", "sk-b", &[]).await;

    for _ in 0..4 {
        let response = reqwest::Client::new()
            .post(fleet.dataplanes[0].url("/p/anthropic/v1/messages"))
            .bearer_auth(&fleet.token)
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()["retry-after"], "7");
        assert_eq!(response.headers()["anthropic-ratelimit-requests-remaining"], "0");
        assert_eq!(response.headers()["content-type"], "application/json");
        assert_eq!(response.text().await.unwrap(), body);
    }
    // One upstream request per client request: nothing was retried behind the client's back,
    // and both credentials were tried before the set ran dry.
    let log = fleet.log(0).await;
    assert_eq!(log.len(), 4, "{log:?}");
    let used: std::collections::BTreeSet<_> = log.iter().map(|(_, c)| c.as_str()).collect();
    assert_eq!(used.into_iter().collect::<Vec<_>>(), ["sk-a", "sk-b"]);
}

#[tokio::test]
async fn weights_are_respected_and_a_disabled_credential_is_never_sent() {
    let fleet = fleet(&["dp-a"]).await;
    ok_upstream(&fleet.upstream).await;
    fleet.add("heavy", "sk-heavy", &["--weight", "3"]).await;
    fleet.add("light", "sk-light", &[]).await;
    fleet.add("off", "sk-off", &["--weight", "50", "--disabled"]).await;

    let total = 1000;
    for _ in 0..total {
        assert_eq!(fleet.call(0).await.0, 200);
    }
    let mut counts = BTreeMap::new();
    for (_, credential) in fleet.log(0).await {
        *counts.entry(credential).or_insert(0usize) += 1;
    }
    assert_eq!(counts.get("sk-off"), None, "{counts:?}");
    let heavy = counts.get("sk-heavy").copied().unwrap_or(0);
    let light = counts.get("sk-light").copied().unwrap_or(0);
    assert_eq!(heavy + light, total);
    // 3:1 within two percent of the traffic (the spread is deterministic, see credentials.rs).
    assert!(heavy.abs_diff(750) <= 20, "{counts:?}");

    // Prometheus agrees with the upstream's log, series per credential name.
    let series = "aurora_dataplane_credential_requests_total{provider=\"anthropic\",credential=\"heavy\"}";
    assert_eq!(fleet.metric(0, series).await, Some(heavy as f64));
    let off = "aurora_dataplane_credential_requests_total{provider=\"anthropic\",credential=\"off\"}";
    assert_eq!(fleet.metric(0, off).await, Some(0.0));
}

#[tokio::test]
async fn credentials_added_and_removed_through_the_cli_apply_on_every_replica_without_a_restart() {
    let fleet = fleet(&["dp-a", "dp-b"]).await;
    ok_upstream(&fleet.upstream).await;
    fleet.add("first", "sk-first", &[]).await;
    for dp in 0..2 {
        assert_eq!(fleet.call(dp).await.0, 200);
    }
    assert!(fleet.log(0).await.iter().all(|(_, c)| c == "sk-first"));

    // --wait returns once every replica applied the change: the next request uses the new set.
    fleet.add("second", "sk-second", &[]).await;
    fleet.cp.cli(&["providers", "credentials", "remove", "anthropic", "first", "--wait"]).await.ok();
    let mark = fleet.upstream.received_requests().await.unwrap().len();
    for _ in 0..3 {
        for dp in 0..2 {
            assert_eq!(fleet.call(dp).await.0, 200);
        }
    }
    let log = fleet.log(mark).await;
    assert_eq!(log.len(), 6);
    assert!(log.iter().all(|(_, c)| c == "sk-second"), "{log:?}");

    // `providers get` shows the set with fleet-wide counts from both replicas' reports, never
    // a secret.
    let shown = wait::until_async("both replicas' counts reported", || async {
        let got = fleet.cp.cli(&["providers", "get", "anthropic", "-o", "json"]).await.json();
        let second = got["credentials"].as_array().unwrap().iter().find(|c| c["name"] == "second").cloned()?;
        (second["requests"] == 6 && second["replicas"] == 2).then_some(got)
    })
    .await;
    assert_eq!(shown["credentials"].as_array().unwrap().len(), 1, "{shown}");
    let second = &shown["credentials"][0];
    assert_eq!((second["weight"].as_u64(), second["enabled"].as_bool()), (Some(1), Some(true)));
    assert_eq!(second["cooldown_until"], serde_json::Value::Null);
    let table = fleet.cp.cli(&["providers", "credentials", "list", "anthropic"]).await;
    assert!(table.ok().contains("second") && !table.ok().contains("sk-"), "{table:?}");

    // Disabling the last credential leaves nothing to send: refused before reaching upstream.
    fleet.cp.cli(&["providers", "credentials", "disable", "anthropic", "second", "--wait"]).await.ok();
    let mark = fleet.upstream.received_requests().await.unwrap().len();
    for dp in 0..2 {
        assert_eq!(fleet.call(dp).await.0, 503);
    }
    assert_eq!(fleet.log(mark).await.len(), 0);
}

#[tokio::test]
async fn on_postgresql_a_cooldown_crosses_control_plane_replicas_and_get_sums_the_whole_fleet() {
    let db = crate::support::postgres::TestDatabase::create().await;
    let upstream = MockServer::start().await;
    let url = db.url();
    let base = format!("{}/anthropic/v1", upstream.uri());
    let env = [("AURORA_DATABASE_URL", url.as_str()), ("ANTHROPIC_BASE_URL", base.as_str())];
    let (a, b) = tokio::join!(TestControlplane::start(&env), TestControlplane::start(&env));
    // dp-a streams from replica A, dp-b from replica B.
    let dataplanes = vec![
        TestDataplane::subscribed(&a.url(), "dp-a", &[]).await,
        TestDataplane::subscribed(&b.url(), "dp-b", &[]).await,
    ];
    for dp in &dataplanes {
        dp.wait_ready().await;
    }
    let created = a.cli(&["keys", "create", "--name", "client", "-o", "json", "--wait"]).await.json();
    let token = created["secret"].as_str().unwrap().to_owned();
    let fleet = Fleet { upstream, cp: a, dataplanes, token };
    Mock::given(header("x-api-key", "sk-a"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "3"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&fleet.upstream)
        .await;
    ok_upstream(&fleet.upstream).await;
    fleet.add("a", "sk-a", &[]).await;
    fleet.add("b", "sk-b", &[]).await;
    // The change went through A; B's data plane has it too once B's feed has it.
    wait::until_async("dp-b has both credentials", || async {
        let series = "aurora_dataplane_credential_requests_total{provider=\"anthropic\",credential=\"b\"}";
        fleet.metric(1, series).await.map(|_| ())
    })
    .await;

    wait::until_async("a request with sk-a through dp-a", || async { (fleet.call(0).await.0 == 429).then_some(()) })
        .await;
    let throttled_at = Instant::now();
    wait::until_async("dp-b (on replica B) learns the cooldown", || async {
        (fleet.metric(1, &cooling("a")).await == Some(1.0)).then_some(())
    })
    .await;
    let crossed = throttled_at.elapsed();
    assert!(crossed < Duration::from_millis(2500), "cooldown took {crossed:?} to cross replicas");
    let mark = fleet.upstream.received_requests().await.unwrap().len();
    for _ in 0..4 {
        assert_eq!(fleet.call(1).await.0, 200);
    }
    if throttled_at.elapsed() < Duration::from_secs(3) {
        assert!(fleet.log(mark).await.iter().all(|(_, c)| c == "sk-b"));
    }

    // Either replica's `providers get` sums both replicas' data planes.
    wait::until_async("B shows the 429 dp-a saw through A", || async {
        let got = b.cli(&["providers", "get", "anthropic", "-o", "json"]).await.json();
        let a = got["credentials"].as_array()?.iter().find(|c| c["name"] == "a")?.clone();
        (a["throttled"] == 1 && a["replicas"] == 2).then_some(())
    })
    .await;
}
