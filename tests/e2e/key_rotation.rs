//! Key rotation with a grace period (issue 13), end to end: `aurora keys rotate` on the control
//! plane, both secrets accepted as the same key by subscribed data planes until the grace ends,
//! then only the new one, on every replica and by the data plane's own clock.

use serde_json::Value;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::controlplane::TestControlplane;
use crate::support::dataplane::TestDataplane;
use crate::support::postgres::TestDatabase;
use crate::support::wait;

/// Long enough for a loaded machine to make its checks inside it, short enough to wait out.
const GRACE: &str = "5s";

const DECLARED: &str = r#"{"id":"msg_01","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":"end_turn","usage":{"input_tokens":11,"output_tokens":7}}"#;

async fn upstream() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/anthropic/v1/messages"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(DECLARED.as_bytes().to_vec(), "application/json"))
        .mount(&server)
        .await;
    server
}

async fn control_plane(upstream: &MockServer, database_url: Option<&str>) -> TestControlplane {
    let base = format!("{}/anthropic/v1", upstream.uri());
    let mut env = vec![
        ("ANTHROPIC_BASE_URL", base.as_str()),
        ("ANTHROPIC_API_KEY", "sk-ant-upstream"),
        ("ENABLED_PASSTHROUGH_PROVIDERS", "anthropic"),
    ];
    if let Some(url) = database_url {
        env.push(("AURORA_DATABASE_URL", url));
    }
    TestControlplane::start(&env).await
}

async fn data_plane(cp: &TestControlplane, node_id: &str) -> TestDataplane {
    let dp = TestDataplane::subscribed(&cp.url(), node_id, &[("AURORA_USAGE_REPORT_INTERVAL", "200ms")]).await;
    dp.wait_ready().await;
    dp
}

/// The status, the `x-aurora-error` marker and the body of a `POST /v1/messages` with `token`.
async fn call(dp: &TestDataplane, token: &str) -> (u16, Option<String>, Value) {
    let response = reqwest::Client::new()
        .post(dp.url("/p/anthropic/v1/messages"))
        .header("x-api-key", token)
        .body(r#"{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[]}"#)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let marker = response.headers().get("x-aurora-error").map(|v| v.to_str().unwrap().to_owned());
    (status, marker, response.json().await.unwrap_or(Value::Null))
}

async fn ok(dp: &TestDataplane, token: &str) {
    let (status, _, body) = call(dp, token).await;
    assert_eq!(status, 200, "{body}");
}

/// Waits until `token` is refused by `dp`, then checks it was refused in Anthropic's shape as
/// an unknown gateway token, marked as the gateway's. Returns how many calls were still
/// accepted (and forwarded) meanwhile.
async fn wait_refused(dp: &TestDataplane, token: &str) -> u64 {
    let accepted = std::cell::Cell::new(0);
    let (marker, body) = wait::until_async("the old secret to stop working", || async {
        let (status, marker, body) = call(dp, token).await;
        if status == 200 {
            accepted.set(accepted.get() + 1);
        }
        (status == 401).then_some((marker, body))
    })
    .await;
    assert_eq!(marker.as_deref(), Some("gateway"));
    assert_eq!(
        body,
        serde_json::json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid gateway token"}})
    );
    accepted.get()
}

fn key_in<'a>(listed: &'a Value, id: &str) -> &'a Value {
    listed["keys"].as_array().unwrap().iter().find(|k| k["id"] == id).unwrap_or_else(|| panic!("{listed}"))
}

/// The `key_id` of every access-log line `dp` wrote for a request that reached the upstream.
fn forwarded_key_ids(dp: &TestDataplane) -> Vec<String> {
    dp.process
        .events()
        .into_iter()
        .filter(|e| e["target"] == "aurora::access" && e["status"] == 200)
        .map(|e| e["key_id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The scenario both backends run: traffic, rotation, both secrets during the grace, only the
/// new one after it, and every request's usage under the one key id.
async fn rotation_with_grace(database_url: Option<&str>) {
    let upstream = upstream().await;
    let cp = control_plane(&upstream, database_url).await;
    let dp = data_plane(&cp, "dp-rotation").await;

    let created = cp.cli(&["keys", "create", "--name", "rotating", "-o", "json", "--wait"]).await.json();
    let id = created["id"].as_str().unwrap().to_owned();
    let old = created["secret"].as_str().unwrap().to_owned();
    assert_eq!(created["current_secret"]["state"], "active");
    assert!(created["previous_secret"].is_null());
    ok(&dp, &old).await;

    let rotated = cp.cli(&["keys", "rotate", &id, "--grace", GRACE, "-o", "json", "--wait"]).await.json();
    let new = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert_eq!(rotated["id"], id.as_str(), "the same key");
    assert_eq!(rotated["revision"].as_u64(), Some(created["revision"].as_u64().unwrap() + 1));
    assert_eq!(rotated["previous_secret"]["redacted"], created["redacted"]);
    assert_eq!(rotated["previous_secret"]["state"], "grace");

    // In the grace period both secrets work, as the same key.
    ok(&dp, &old).await;
    ok(&dp, &new).await;
    let listed = cp.cli(&["keys", "list", "-o", "json"]).await.json();
    let key = key_in(&listed, &id);
    assert_eq!(
        (key["current_secret"]["state"].as_str(), key["previous_secret"]["state"].as_str()),
        (Some("active"), Some("grace"))
    );
    let table = cp.cli(&["keys", "list"]).await.ok().to_owned();
    let previous_cell = format!("{} grace until ", created["redacted"].as_str().unwrap());
    assert!(table.contains("PREVIOUS KEY") && table.contains(&previous_cell), "{table}");
    assert!(!table.contains(&old) && !table.contains(&new), "{table}");

    // After it, the old secret gets the provider-shaped 401; the new one keeps working.
    let accepted_while_waiting = wait_refused(&dp, &old).await;
    ok(&dp, &new).await;
    let forwarded = 4 + accepted_while_waiting;
    let key = cp.cli(&["keys", "get", &id, "-o", "json"]).await.json();
    assert_eq!(key["previous_secret"]["state"], "expired");
    assert_eq!(key["current_secret"]["state"], "active");
    let table = cp.cli(&["keys", "list"]).await.ok().to_owned();
    assert!(table.contains(&format!("{} expired", created["redacted"].as_str().unwrap())), "{table}");

    // Every forwarded request, with either secret, is this key's in the access log and usage.
    let logged = wait::until("an access-log line per forwarded request", || {
        Some(forwarded_key_ids(&dp)).filter(|ids| ids.len() as u64 >= forwarded)
    })
    .await;
    assert_eq!(logged.len() as u64, forwarded);
    assert!(logged.iter().all(|logged| *logged == id), "every line names key {id}");
    let rows = wait::until_async("every request in aurora usage", || async {
        let output = cp.cli(&["usage", "--key", &id, "-o", "json"]).await.json();
        let rows = output["rows"].as_array()?.clone();
        (rows.iter().map(|r| r["requests"].as_u64().unwrap_or(0)).sum::<u64>() == forwarded).then_some(rows)
    })
    .await;
    assert!(rows.iter().all(|r| r["key_id"] == id.as_str()), "{rows:?}");
    assert_eq!(rows.iter().map(|r| r["input_tokens"].as_u64().unwrap()).sum::<u64>(), 11 * forwarded, "{rows:?}");

    // The audit trail records the rotation without either secret.
    let audit = cp.cli(&["audit", "--action", "key.rotate", "-o", "json"]).await.ok().to_owned();
    assert!(audit.contains(&id) && !audit.contains(&old) && !audit.contains(&new), "{audit}");
}

#[tokio::test]
async fn key_rotation_with_grace_end_to_end() {
    rotation_with_grace(None).await;
}

#[tokio::test]
async fn key_rotation_with_grace_end_to_end_on_postgres() {
    let db = TestDatabase::create().await;
    rotation_with_grace(Some(&db.url())).await;
}

/// The grace ends by each data plane's own clock: with the control plane stopped inside the
/// grace period, both replicas still stop the old secret when it ends; a second rotation
/// during a grace stops the older secret at once, and deleting a rotated key stops both.
#[tokio::test]
async fn the_grace_ends_on_every_replica_even_with_the_control_plane_down() {
    let upstream = upstream().await;
    let mut cp = control_plane(&upstream, None).await;
    let (a, b) = tokio::join!(data_plane(&cp, "dp-a"), data_plane(&cp, "dp-b"));
    let created = cp.cli(&["keys", "create", "--name", "replicas", "-o", "json", "--wait"]).await.json();
    let id = created["id"].as_str().unwrap().to_owned();
    let first = created["secret"].as_str().unwrap().to_owned();

    // A second rotation inside the first one's grace replaces the previous secret.
    let second = cp.cli(&["keys", "rotate", &id, "--grace", "1h", "-o", "json", "--wait"]).await.json();
    let second = second["secret"].as_str().unwrap().to_owned();
    let third = cp.cli(&["keys", "rotate", &id, "--grace", GRACE, "-o", "json", "--wait"]).await.json();
    let third = third["secret"].as_str().unwrap().to_owned();
    for dp in [&a, &b] {
        wait_refused(dp, &first).await;
        ok(dp, &second).await;
        ok(dp, &third).await;
    }

    cp.process.signal("TERM");
    assert_eq!(cp.process.wait_exit().await, Some(0));
    for dp in [&a, &b] {
        wait_refused(dp, &second).await;
        ok(dp, &third).await;
    }
    drop(cp);

    // Deleting a rotated key removes both of its hashes (on a fresh fleet: the old one is down).
    let cp = control_plane(&upstream, None).await;
    let dp = data_plane(&cp, "dp-c").await;
    let created = cp.cli(&["keys", "create", "--name", "deleted", "-o", "json", "--wait"]).await.json();
    let id = created["id"].as_str().unwrap().to_owned();
    let old = created["secret"].as_str().unwrap().to_owned();
    let new = cp.cli(&["keys", "rotate", &id, "--grace", "1h", "-o", "json", "--wait"]).await.json();
    let new = new["secret"].as_str().unwrap().to_owned();
    ok(&dp, &old).await;
    // The master key keeps gateway auth on, so the deleted key's secrets are refused.
    cp.cli(&["keys", "delete", &id, "--wait"]).await.ok();
    wait_refused(&dp, &old).await;
    wait_refused(&dp, &new).await;
}
