//! Usage reporting end to end: exactly-once ingest on the config stream, and reports spooled by
//! a stopped data plane delivered after its restart with their original identity.
//!
//! The tests that drive real traffic through metering (three data planes, SIGTERM during an
//! outage, the official SDKs) need the metering stage; these need only the reporting path.

use std::path::Path;

use aurora_proto::v1::{
    Hello, SubscribeRequest, SubscribeResponse, UsageReport, UsageRow, subscribe_request, subscribe_response,
};
use prost::Message;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::support::config_stream::subscribe;
use crate::support::controlplane::TestControlplane;
use crate::support::dataplane::TestDataplane;
use crate::support::wait;

fn hour_now() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    now - now % 3600
}

fn report(node_id: &str, incarnation: u8, sequence: u64, key_id: &str, input: u64) -> UsageReport {
    UsageReport {
        node_id: node_id.into(),
        incarnation: vec![incarnation; 16],
        sequence,
        rows: vec![UsageRow {
            key_id: key_id.into(),
            provider: "anthropic".into(),
            model: "claude-sonnet-4-5".into(),
            bucket_start: hour_now(),
            requests: 3,
            input_tokens: input,
            output_tokens: 7,
            cache_read_input_tokens: 2,
            cache_creation_input_tokens: 1,
            incomplete_requests: 1,
            ..UsageRow::default()
        }],
    }
}

fn hello(node_id: &str) -> Hello {
    Hello { node_id: node_id.into(), version: "test".into(), last_revision: 0, store_id: Vec::new() }
}

/// Sends `report` and waits for its ack, skipping the snapshot and heartbeats around it.
async fn deliver(
    outbound: &mpsc::Sender<SubscribeRequest>,
    inbound: &mut tonic::Streaming<SubscribeResponse>,
    report: &UsageReport,
) {
    let message = subscribe_request::Message::UsageReport(report.clone());
    outbound.send(SubscribeRequest { message: Some(message) }).await.unwrap();
    let ack = tokio::time::timeout(wait::DEADLINE, async {
        loop {
            match inbound.message().await.unwrap().unwrap().message {
                Some(subscribe_response::Message::UsageAck(ack)) => return ack,
                _ => continue,
            }
        }
    })
    .await
    .expect("no usage ack");
    assert_eq!((ack.incarnation, ack.sequence), (report.incarnation.clone(), report.sequence));
}

/// `aurora usage -o json` rows for `key`.
async fn usage_rows(cp: &TestControlplane, key: &str) -> Vec<Value> {
    let output = cp.cli(&["usage", "--key", key, "--since", "2h", "-o", "json"]).await.json();
    output["rows"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_report_delivered_twice_is_counted_once_even_across_streams_and_restarts() {
    let cp = TestControlplane::start(&[]).await;
    let revision = cp.cli(&["settings", "get", "-o", "json"]).await.json()["revision"].clone();
    let original = report("dp-a", 1, 1, "master", 100);
    let (outbound, mut inbound) = subscribe(&cp, hello("dp-a")).await.unwrap();
    deliver(&outbound, &mut inbound, &original).await;
    // The ack was lost: the replica sends it again on the same stream, and on a new one.
    deliver(&outbound, &mut inbound, &original).await;
    let (outbound_b, mut inbound_b) = subscribe(&cp, hello("dp-a")).await.unwrap();
    deliver(&outbound_b, &mut inbound_b, &original).await;
    // A different report counts.
    deliver(&outbound_b, &mut inbound_b, &report("dp-a", 1, 2, "master", 10)).await;

    let rows = usage_rows(&cp, "master").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!((row["key_id"].as_str(), row["provider"].as_str()), (Some("master"), Some("anthropic")));
    assert_eq!(row["model"], "claude-sonnet-4-5");
    assert_eq!(row["requests"], 6);
    assert_eq!(row["input_tokens"], 110);
    assert_eq!(row["output_tokens"], 14);
    assert_eq!(row["cache_read_input_tokens"], 4);
    assert_eq!(row["cache_creation_input_tokens"], 2);
    assert_eq!(row["incomplete_requests"], 2);
    let metrics = reqwest::get(cp.metrics_url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("aurora_controlplane_usage_reports_ingested_total 2\n"), "{metrics}");
    assert!(metrics.contains("aurora_controlplane_usage_reports_duplicate_total 2\n"), "{metrics}");
    drop((outbound, inbound, outbound_b, inbound_b));

    // A control plane restarted between commit and ack: the resend is still recognised.
    let cp = cp.restart(&[]).await;
    let (outbound, mut inbound) = subscribe(&cp, hello("dp-a")).await.unwrap();
    deliver(&outbound, &mut inbound, &original).await;
    assert_eq!(usage_rows(&cp, "master").await[0]["requests"], 6);
    let settings = cp.cli(&["settings", "get", "-o", "json"]).await.json();
    assert_eq!(settings["revision"], revision, "usage creates no configuration revision");
}

fn spool_file(dir: &Path, report: &UsageReport) {
    let name = format!(
        "{}-{:020}.usage",
        report.incarnation.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        report.sequence
    );
    std::fs::write(dir.join(name), report.encode_to_vec()).unwrap();
}

fn spooled(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "usage"))
        .count()
}

#[tokio::test]
async fn reports_left_in_the_spool_are_delivered_after_a_restart_and_counted_once() {
    let cp = TestControlplane::start(&[]).await;
    let spool = tempfile::tempdir().unwrap();
    let spool_dir = spool.path().to_str().unwrap().to_owned();
    // What a data plane stopped during an outage left behind.
    let left = report("dp-old-name", 9, 41, "anonymous", 500);
    spool_file(spool.path(), &left);
    let env = [("AURORA_USAGE_SPOOL_DIR", spool_dir.as_str()), ("AURORA_USAGE_REPORT_INTERVAL", "200ms")];
    let mut dataplane = TestDataplane::subscribed(&cp.url(), "dp-1", &env).await;
    wait::until_async("the spooled report counted", || async {
        let rows = usage_rows(&cp, "anonymous").await;
        (rows.first().is_some_and(|r| r["input_tokens"] == 500)).then_some(())
    })
    .await;
    wait::until("the acknowledged report removed from the spool", || (spooled(spool.path()) == 0).then_some(())).await;

    // Its ack lost before the file went (a crash in between): the next start sends it again.
    dataplane.process.signal("TERM");
    assert_eq!(dataplane.process.wait_exit().await, Some(0), "{}", dataplane.process.logs());
    spool_file(spool.path(), &left);
    let _dataplane = TestDataplane::subscribed(&cp.url(), "dp-1", &env).await;
    wait::until("the resent report acknowledged", || (spooled(spool.path()) == 0).then_some(())).await;
    let rows = usage_rows(&cp, "anonymous").await;
    assert_eq!(rows[0]["requests"], 3, "counted once: {rows:?}");
    assert_eq!(rows[0]["input_tokens"], 500);
}

/// What the upstream declares for every `POST /v1/messages` in the fleet test.
const DECLARED: &str = r#"{"id":"msg_01","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{"type":"text","text":"ok"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":2095,"cache_creation_input_tokens":2051,"cache_read_input_tokens":100,"output_tokens":503}}"#;

/// An Anthropic upstream that answers every `POST /v1/messages` with [`DECLARED`].
async fn declaring_upstream() -> wiremock::MockServer {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/anthropic/v1/messages"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(DECLARED.as_bytes().to_vec(), "application/json"))
        .mount(&upstream)
        .await;
    upstream
}

/// A control plane that offers only Anthropic, at `base`.
fn control_plane_env(base: &str) -> [(&'static str, &str); 4] {
    [
        ("AURORA_MASTER_KEY", crate::support::controlplane::ADMIN_KEY),
        ("ANTHROPIC_BASE_URL", base),
        ("ANTHROPIC_API_KEY", "sk-ant-upstream"),
        ("ENABLED_PASSTHROUGH_PROVIDERS", "anthropic"),
    ]
}

async fn call(dp: &TestDataplane, secret: &str) {
    let response = reqwest::Client::new()
        .post(dp.url("/p/anthropic/v1/messages"))
        .header("x-api-key", secret)
        .body(r#"{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), DECLARED, "forwarded byte for byte");
}

async fn pending(dp: &TestDataplane) -> Option<u64> {
    let text = reqwest::get(dp.admin_url("/metrics")).await.ok()?.text().await.ok()?;
    text.lines().find_map(|l| l.strip_prefix("aurora_dataplane_usage_reports_pending ")).and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn three_data_planes_one_restarted_during_an_outage_totals_are_exact() {
    let upstream = declaring_upstream().await;
    let base = format!("{}/anthropic/v1", upstream.uri());
    let cp_dir = tempfile::tempdir().unwrap();
    let cp_env = control_plane_env(&base);
    let mut cp = TestControlplane::start_in(cp_dir.path(), &cp_env).await;
    let created = cp.cli(&["keys", "create", "--name", "fleet", "-o", "json"]).await.json();
    let (key_id, secret) = (created["id"].as_str().unwrap().to_owned(), created["secret"].as_str().unwrap().to_owned());

    let caches: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let cache_paths: Vec<String> = caches.iter().map(|d| d.path().join("config.cache").display().to_string()).collect();
    let env =
        |i: usize| [("AURORA_CONFIG_CACHE", cache_paths[i].clone()), ("AURORA_USAGE_REPORT_INTERVAL", "200ms".into())];
    let url = cp.url();
    let start = |i: usize| {
        let env = env(i);
        let url = url.clone();
        async move {
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            TestDataplane::subscribed(&url, &format!("dp-{i}"), &env).await
        }
    };
    let mut dataplanes = vec![start(0).await, start(1).await, start(2).await];
    for dp in &dataplanes {
        dp.wait_ready().await;
        wait::until_async("the key reaches the data plane", || async {
            let status = reqwest::Client::new()
                .post(dp.url("/p/anthropic/v1/messages"))
                .header("x-api-key", &secret)
                .body("{}")
                .send()
                .await
                .ok()?
                .status();
            (status == 200).then_some(())
        })
        .await;
    }
    // One request each above went to make sure the key arrived.
    let mut expected = 3u64;
    for dp in &dataplanes {
        for _ in 0..5 {
            call(dp, &secret).await;
            expected += 1;
        }
    }

    // The control plane goes down; traffic goes on; dp-0 is restarted (SIGTERM) meanwhile.
    let grpc_addr = cp.addr.to_string();
    cp.process.signal("TERM");
    assert_eq!(cp.process.wait_exit().await, Some(0));
    for _ in 0..4 {
        call(&dataplanes[0], &secret).await;
        expected += 1;
    }
    let mut stopped = dataplanes.remove(0);
    stopped.process.signal("TERM");
    assert_eq!(stopped.process.wait_exit().await, Some(0), "{}", stopped.process.logs());
    let spool = caches[0].path();
    assert!(
        std::fs::read_dir(spool).unwrap().any(|e| e.unwrap().path().extension().is_some_and(|x| x == "usage")),
        "the stopped data plane spooled its unacknowledged reports"
    );
    let restarted = start(0).await;
    restarted.wait_ready().await;
    for _ in 0..2 {
        call(&restarted, &secret).await;
        expected += 1;
    }
    dataplanes.insert(0, restarted);

    // The control plane returns on the same address and database.
    let mut back_env = cp_env.to_vec();
    back_env.push(("AURORA_GRPC_LISTEN_ADDR", grpc_addr.as_str()));
    cp = TestControlplane::start_in(cp_dir.path(), &back_env).await;
    for dp in &dataplanes {
        wait::until_async("every report acknowledged", || async { (pending(dp).await == Some(0)).then_some(()) }).await;
    }
    let rows = usage_rows(&cp, &key_id).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!(row["model"], "claude-sonnet-4-5-20250929", "the model the response named");
    assert_eq!(row["requests"], expected);
    assert_eq!(row["input_tokens"], expected * 2095);
    assert_eq!(row["output_tokens"], expected * 503);
    assert_eq!(row["cache_creation_input_tokens"], expected * 2051);
    assert_eq!(row["cache_read_input_tokens"], expected * 100);
    assert_eq!(row["incomplete_requests"], 0);
    assert_eq!(row["unknown_requests"], 0);
    let key = cp.cli(&["keys", "get", &key_id, "-o", "json"]).await.json();
    assert_eq!(key["usage"]["requests"], expected, "{key}");
    assert!(spooled(spool) == 0, "acknowledged reports leave the spool");
}

/// A control plane with every provider pointing at `upstream` (base paths as
/// `support::dataplane::base_path`, credentials as `support::dataplane::upstream_credential`,
/// which the usage upstream's mocks require), a managed key, and one subscribed data plane that
/// accepts it. Returns the control plane, the data plane, the key id and its secret.
async fn fleet_of_one(upstream: &str) -> (TestControlplane, TestDataplane, String, String) {
    use aurora_core::ProviderKind;

    let mut env: Vec<(String, String)> =
        vec![("ENABLED_PASSTHROUGH_PROVIDERS".into(), "openai,anthropic,openrouter,zai,vllm".into())];
    for kind in ProviderKind::ALL {
        env.push((kind.base_url_env().into(), format!("{upstream}{}", crate::support::dataplane::base_path(kind))));
        env.push((kind.credential_env().into(), crate::support::dataplane::upstream_credential(kind)));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let cp = TestControlplane::start(&env).await;
    let created = cp.cli(&["keys", "create", "--name", "sdk", "-o", "json", "--wait"]).await.json();
    let (key_id, secret) = (created["id"].as_str().unwrap().to_owned(), created["secret"].as_str().unwrap().to_owned());
    let dp = TestDataplane::subscribed(&cp.url(), "dp-sdk", &[("AURORA_USAGE_REPORT_INTERVAL", "200ms")]).await;
    dp.wait_ready().await;
    wait::until_async("the key reaches the data plane", || async {
        let fleet = cp.cli(&["dataplanes", "-o", "json"]).await.json();
        let head = fleet["head_revision"].as_u64()?;
        (fleet["data_planes"].as_array()?.first()?["acked_revision"].as_u64() == Some(head)).then_some(())
    })
    .await;
    (cp, dp, key_id, secret)
}

/// `aurora usage --key ID --by provider -o json` once it shows `requests` requests in all.
async fn totals_by_provider(cp: &TestControlplane, key_id: &str, requests: u64) -> Vec<Value> {
    wait::until_async(&format!("{requests} requests in aurora usage"), || async {
        let output = cp.cli(&["usage", "--key", key_id, "--by", "provider", "-o", "json"]).await.json();
        let rows = output["rows"].as_array()?.clone();
        (rows.iter().map(|r| r["requests"].as_u64().unwrap_or(0)).sum::<u64>() == requests).then_some(rows)
    })
    .await
}

/// Asserts one provider's row of `aurora usage --by provider`: requests, input, output, cache
/// read and reasoning tokens, and that every request was read in full.
fn assert_totals(rows: &[Value], provider: &str, expected: [u64; 5]) {
    let row = rows.iter().find(|r| r["provider"] == provider).unwrap_or_else(|| panic!("no {provider} row: {rows:?}"));
    let field = |name: &str| row[name].as_u64().unwrap_or_else(|| panic!("{provider} row without {name}: {row}"));
    let [requests, input, output, cache_read, reasoning] = expected;
    assert_eq!(
        [
            field("requests"),
            field("input_tokens"),
            field("output_tokens"),
            field("cache_read_input_tokens"),
            field("reasoning_tokens")
        ],
        [requests, input, output, cache_read, reasoning],
        "{provider} [requests, input, output, cache read, reasoning]: {row}"
    );
    assert_eq!((field("incomplete_requests"), field("unknown_requests")), (0, 0), "{provider}: {row}");
}

#[tokio::test]
async fn the_official_sdks_totals_in_aurora_usage_equal_what_the_upstream_declared() {
    let upstream = crate::usage_metering::upstream().await;
    let (cp, dp, key_id, secret) = fleet_of_one(&upstream.uri()).await;
    crate::sdk::run_script_at("usage_client.py", &format!("http://{}", dp.addr), &secret, &dp.process.logs());
    let rows = totals_by_provider(&cp, &key_id, 13).await;
    assert_eq!(rows.len(), 5, "one row per provider: {rows:?}");
    // Anthropic: JSON (2095 in, 503 out, cache 100 read / 2051 written) and SSE (25 in, 15 out).
    assert_totals(&rows, "anthropic", [2, 2120, 518, 100, 0]);
    let anthropic = rows.iter().find(|r| r["provider"] == "anthropic").unwrap();
    assert_eq!(anthropic["cache_creation_input_tokens"], 2051);
    // OpenAI: gzip JSON chat (19/10, 3 cached, 4 reasoning), SSE chat (9/12), Responses SSE
    // (37/11), embeddings (8/0).
    assert_totals(&rows, "openai", [4, 73, 33, 3, 4]);
    // OpenRouter, through the OpenAI SDK: JSON chat (1234/345, 1024 cached, 256 reasoning) and
    // SSE chat with its usage chunk (611/77, 512 cached, 40 reasoning).
    assert_totals(&rows, "openrouter", [2, 1845, 422, 1536, 296]);
    // Z.ai: gzip JSON chat (2718/281, 1280 cached) and SSE chat (314/159, 192 cached).
    assert_totals(&rows, "zai", [2, 3032, 440, 1472, 0]);
    // vLLM: JSON chat (42/17), SSE chat with cumulative usage in every chunk (27/5: the last
    // chunk's, not the sum) and a legacy completion (6/16).
    assert_totals(&rows, "vllm", [3, 75, 38, 0, 0]);
    for row in &rows {
        if row["provider"] != "anthropic" {
            assert_eq!(row["cache_creation_input_tokens"], 0, "{row}");
        }
    }
}

#[tokio::test]
async fn a_stream_abandoned_half_way_is_counted_with_the_tokens_seen_so_far() {
    use crate::support::raw_http::{Behaviour, HeldUpstream};

    let mut upstream = HeldUpstream::start(Behaviour::StreamThenHold).await;
    let (cp, dp, key_id, secret) = fleet_of_one(&upstream.base_url()).await;
    let response = reqwest::Client::new()
        .post(dp.url("/p/anthropic/v1/messages"))
        .header("x-api-key", &secret)
        .body(r#"{"stream":true}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let mut received = Vec::new();
    while received.len() < crate::support::raw_http::FIRST_EVENT.len() {
        use futures_util::StreamExt;
        received.extend_from_slice(&stream.next().await.unwrap().unwrap());
    }
    drop(stream);
    upstream.wait_closed().await;
    let rows = totals_by_provider(&cp, &key_id, 1).await;
    let row = &rows[0];
    assert_eq!(row["incomplete_requests"], 1, "{row}");
    assert_eq!((row["input_tokens"].as_u64(), row["output_tokens"].as_u64()), (Some(25), Some(1)), "{row}");
}

/// The one loss the delivery guarantee allows: a data plane killed with SIGKILL loses at most the
/// usage of its last report interval (what it had not yet sealed into a spooled report). Traffic
/// runs at a steady pace while the control plane is down, the data plane is SIGKILLed, started
/// again from the same spool, and the control plane returns: every request older than one
/// interval (plus scheduling slack) before the kill is counted, none twice, and the loss is
/// printed as the measurement.
#[tokio::test]
async fn a_sigkill_loses_at_most_the_last_report_interval() {
    use std::time::{Duration, Instant};

    const INTERVAL: Duration = Duration::from_secs(1);
    const SLACK: Duration = Duration::from_millis(750);

    let upstream = declaring_upstream().await;
    let base = format!("{}/anthropic/v1", upstream.uri());
    let cp_dir = tempfile::tempdir().unwrap();
    let cp_env = control_plane_env(&base);
    let mut cp = TestControlplane::start_in(cp_dir.path(), &cp_env).await;
    let created = cp.cli(&["keys", "create", "--name", "killed", "-o", "json"]).await.json();
    let (key_id, secret) = (created["id"].as_str().unwrap().to_owned(), created["secret"].as_str().unwrap().to_owned());

    let cache = tempfile::tempdir().unwrap();
    let cache_path = cache.path().join("config.cache").display().to_string();
    let env = [("AURORA_CONFIG_CACHE", cache_path.as_str()), ("AURORA_USAGE_REPORT_INTERVAL", "1s")];
    let url = cp.url();
    let mut dp = TestDataplane::subscribed(&url, "dp-killed", &env).await;
    dp.wait_ready().await;
    wait::until_async("the key reaches the data plane", || async {
        let response = reqwest::Client::new()
            .post(dp.url("/p/anthropic/v1/messages"))
            .header("x-api-key", &secret)
            .body("{}")
            .send()
            .await
            .ok()?;
        (response.status() == 200).then_some(())
    })
    .await;
    let mut sent_at = vec![Instant::now()];

    // The control plane goes down, so nothing is acknowledged: every sealed report waits in the
    // spool. Traffic at about 20 requests per second for three intervals, then SIGKILL.
    let grpc_addr = cp.addr.to_string();
    cp.process.signal("TERM");
    assert_eq!(cp.process.wait_exit().await, Some(0));
    let started = Instant::now();
    while started.elapsed() < INTERVAL * 3 {
        call(&dp, &secret).await;
        sent_at.push(Instant::now());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    dp.process.signal("KILL");
    let killed_at = Instant::now();
    dp.process.wait_exit().await;

    // Started again from the same spool; the control plane returns on the same address.
    let restarted = TestDataplane::subscribed(&url, "dp-killed", &env).await;
    restarted.wait_ready().await;
    let mut back_env = cp_env.to_vec();
    back_env.push(("AURORA_GRPC_LISTEN_ADDR", grpc_addr.as_str()));
    cp = TestControlplane::start_in(cp_dir.path(), &back_env).await;
    wait::until_async("the spooled reports are acknowledged", || async {
        (pending(&restarted).await == Some(0) && spooled(cache.path()) == 0).then_some(())
    })
    .await;

    let rows = usage_rows(&cp, &key_id).await;
    let counted = rows.first().map_or(0, |row| row["requests"].as_u64().unwrap());
    let sent = sent_at.len() as u64;
    let must_count = sent_at.iter().filter(|at| killed_at.duration_since(**at) > INTERVAL + SLACK).count() as u64;
    println!(
        "SIGKILL after {sent} requests at ~20/s with a {INTERVAL:?} report interval: {counted} counted, {} lost",
        sent - counted
    );
    assert!(counted <= sent, "never counted twice: {counted} counted of {sent} sent");
    assert!(
        counted >= must_count,
        "everything older than one interval is kept: {counted} counted, {must_count} were older than {:?}",
        INTERVAL + SLACK
    );
    if let Some(row) = rows.first() {
        assert_eq!(row["input_tokens"], counted * 2095, "each counted request's tokens exactly");
    }
}
