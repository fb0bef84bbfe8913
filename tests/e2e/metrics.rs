//! Prometheus metrics and the access log, scraped from real processes after real traffic.

use serde_json::{Value, json};
use wiremock::matchers::{any, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::controlplane::TestControlplane;
use crate::support::dataplane::{MASTER_KEY, TestDataplane, key_entry, snapshot_for};
use crate::support::wait;

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// The scrape text, after checking it is served as OpenMetrics.
async fn scrape(url: &str) -> String {
    let response = client().get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    response.text().await.unwrap()
}

/// The value of the sample `series` (name and labels exactly as exposed), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn data_plane_counts_requests_by_provider_status_class_and_source_and_auth_failures_by_reason() {
    let upstream = MockServer::start().await;
    Mock::given(path_regex("^/openai/"))
        .respond_with(ResponseTemplate::new(429).set_body_string(r#"{"error":"slow down"}"#))
        .mount(&upstream)
        .await;
    Mock::given(any()).respond_with(ResponseTemplate::new(200).set_body_string("{\"ok\":true}")).mount(&upstream).await;
    let mut snapshot = snapshot_for(&upstream.uri());
    snapshot["revision"] = json!(7);
    snapshot["keys"] = json!([
        key_entry("aur_disabled", json!({"enabled": false})),
        key_entry("aur_expired", json!({"expires_at": 1_000_000_000})),
        key_entry("aur_anthropic_only", json!({"allowed_providers": ["anthropic"]})),
    ]);
    let dataplane = TestDataplane::start(&snapshot, &[]).await;
    dataplane.wait_ready().await;

    let calls: &[(&str, Option<&str>, u16)] = &[
        ("/p/anthropic/v1/messages", Some(MASTER_KEY), 200),
        ("/p/anthropic/v1/messages", Some("aur_anthropic_only"), 200),
        ("/p/openai/v1/chat/completions", Some(MASTER_KEY), 429),
        ("/p/anthropic/v1/messages", None, 401),
        ("/p/anthropic/v1/messages", Some("wrong"), 401),
        ("/p/anthropic/v1/messages", Some("aur_disabled"), 401),
        ("/p/anthropic/v1/messages", Some("aur_expired"), 401),
        ("/p/openai/v1/chat/completions", Some("aur_anthropic_only"), 403),
        ("/p/nope/v1/x", Some(MASTER_KEY), 404),
    ];
    for (path, token, status) in calls {
        let mut request = client().post(dataplane.url(path)).body("{\"q\":1}");
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), *status, "{path} {token:?}");
        response.bytes().await.unwrap();
    }

    // A request is recorded when its response body ends, a moment after the client has it.
    let url = dataplane.admin_url("/metrics");
    let text = wait::until_async("every request recorded", || async {
        let text = scrape(&url).await;
        let finished = text.lines().filter(|l| l.starts_with("aurora_dataplane_requests_total{")).count() >= 5
            && sample(&text, "aurora_dataplane_requests_in_flight") == Some(0.0);
        finished.then_some(text)
    })
    .await;

    let requests = |provider: &str, class: &str, source: &str| {
        let series = format!(
            "aurora_dataplane_requests_total{{provider=\"{provider}\",method=\"POST\",status_class=\"{class}\",source=\"{source}\"}}"
        );
        sample(&text, &series)
    };
    assert_eq!(requests("anthropic", "2xx", "upstream"), Some(2.0), "{text}");
    assert_eq!(requests("openai", "4xx", "upstream"), Some(1.0), "an upstream 429 is the upstream's: {text}");
    assert_eq!(requests("anthropic", "4xx", "gateway"), Some(4.0), "{text}");
    assert_eq!(requests("openai", "4xx", "gateway"), Some(1.0), "{text}");
    assert_eq!(requests("unknown", "4xx", "gateway"), Some(1.0), "{text}");
    for (provider, reason) in [
        ("anthropic", "missing"),
        ("anthropic", "unknown"),
        ("anthropic", "disabled"),
        ("anthropic", "expired"),
        ("openai", "provider_not_allowed"),
    ] {
        let series = format!("aurora_dataplane_auth_failures_total{{provider=\"{provider}\",reason=\"{reason}\"}}");
        assert_eq!(sample(&text, &series), Some(1.0), "{series}: {text}");
    }
    assert_eq!(sample(&text, "aurora_dataplane_gateway_overhead_seconds_count{provider=\"anthropic\"}"), Some(2.0));
    assert_eq!(
        sample(&text, "aurora_dataplane_upstream_response_headers_duration_seconds_count{provider=\"openai\"}"),
        Some(1.0)
    );
    assert_eq!(sample(&text, "aurora_dataplane_request_body_bytes_total{provider=\"anthropic\"}"), Some(14.0));
    assert_eq!(sample(&text, "aurora_dataplane_config_revision"), Some(7.0));
    assert!(!text.contains("aurora_dataplane_control_plane_connected"), "no stream without a control plane");
    for forbidden in ["aur_anthropic_only", MASTER_KEY, "/v1/messages", "key_id"] {
        assert!(!text.contains(forbidden), "{forbidden:?} must never be a label: {text}");
    }

    // One access-log event per request, written when it finished. The log reaches the test
    // through a pipe and a reader thread, so the last line may still be on its way when the
    // metrics already count its request: waited for, then counted exactly.
    let access_events =
        || dataplane.process.events().into_iter().filter(|e| e["target"] == "aurora::access").collect::<Vec<Value>>();
    wait::until("every request's access-log event", || (access_events().len() >= calls.len()).then_some(())).await;
    let access = access_events();
    assert_eq!(access.len(), calls.len(), "{access:#?}");
    let ok = access.iter().find(|e| e["status"] == 200).unwrap();
    assert_eq!(ok["source"], "upstream");
    assert_eq!(ok["outcome"], "complete", "{ok}");
    assert_eq!(ok["path"], "/p/anthropic/v1/messages");
    assert_eq!(ok["bytes_in"], 7);
    assert_eq!(ok["bytes_out"], 11);
    assert!(ok["duration_ms"].as_f64().unwrap() > 0.0);
    assert!(ok["request_id"].as_str().is_some_and(|id| !id.is_empty()));
    let refused = access.iter().find(|e| e["status"] == 403).unwrap();
    assert_eq!((refused["source"].as_str(), refused["provider"].as_str()), (Some("gateway"), Some("openai")));
    let managed = access.iter().find(|e| e["status"] == 200 && e["key_id"] != "master").unwrap();
    assert!(managed["key_id"].as_str().is_some_and(|id| id.len() == 36), "keys are named by id: {managed}");
}

#[tokio::test]
async fn control_plane_and_subscribed_data_planes_report_the_fleet_and_its_lag() {
    let cp = TestControlplane::start(&[]).await;
    let health = client().get(cp.metrics_url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200, "a plaintext health check for TLS deployments");
    let a = TestDataplane::subscribed(&cp.url(), "dp-a", &[]).await;
    let b = TestDataplane::subscribed(&cp.url(), "dp-b", &[]).await;
    a.wait_ready().await;
    b.wait_ready().await;
    let created = cp.cli(&["keys", "create", "--name", "metrics", "-o", "json", "--wait"]).await.json();
    let revision = created["revision"].as_f64().unwrap();
    cp.cli(&["keys", "get", "00000000-0000-0000-0000-000000000000"]).await;

    let url = cp.metrics_url("/metrics");
    let text = wait::until_async("both replicas current", || async {
        let text = scrape(&url).await;
        (sample(&text, "aurora_controlplane_dataplanes_connected") == Some(2.0)
            && sample(&text, "aurora_controlplane_replicas_lagging") == Some(0.0)
            && sample(&text, "aurora_controlplane_revision_applied_latency_seconds_count").is_some_and(|n| n >= 1.0))
        .then_some(text)
    })
    .await;
    assert_eq!(sample(&text, "aurora_controlplane_head_revision"), Some(revision), "{text}");
    assert_eq!(sample(&text, "aurora_controlplane_replica_max_lag_revisions"), Some(0.0));
    assert_eq!(sample(&text, "aurora_controlplane_replica_max_lag_seconds"), Some(0.0));
    assert!(sample(&text, "aurora_controlplane_change_log_revisions").is_some_and(|n| n >= 1.0), "{text}");
    assert_eq!(sample(&text, "aurora_controlplane_admin_calls_total{method=\"CreateKey\",code=\"OK\"}"), Some(1.0));
    assert_eq!(
        sample(&text, "aurora_controlplane_admin_calls_total{method=\"GetKey\",code=\"NOT_FOUND\"}"),
        Some(1.0),
        "{text}"
    );

    for dp in [&a, &b] {
        let text = scrape(&dp.admin_url("/metrics")).await;
        assert_eq!(sample(&text, "aurora_dataplane_control_plane_connected"), Some(1.0), "{text}");
        assert_eq!(sample(&text, "aurora_dataplane_config_revision"), Some(revision));
        let age = sample(&text, "aurora_dataplane_config_last_message_age_seconds").unwrap();
        assert!((0.0..10.0).contains(&age), "heartbeats every 5 s keep this small: {age}");
    }

    // The stream's end is visible on the data plane at once.
    let mut cp = cp;
    cp.process.signal("TERM");
    assert_eq!(cp.process.wait_exit().await, Some(0));
    wait::until_async("the data plane reports the stream down", || async {
        let text = scrape(&a.admin_url("/metrics")).await;
        (sample(&text, "aurora_dataplane_control_plane_connected") == Some(0.0)).then_some(())
    })
    .await;
}
