//! Several control planes on one PostgreSQL database, data planes spread over them: one store,
//! one change feed, one fleet, whichever replica a data plane or an operator talks to.

use std::time::Duration;

use wiremock::matchers::any;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::controlplane::TestControlplane;
use crate::support::dataplane::TestDataplane;
use crate::support::postgres::TestDatabase;
use crate::support::wait;

async fn upstream() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(any()).respond_with(ResponseTemplate::new(200).set_body_string("{}")).mount(&server).await;
    server
}

/// Two control planes on `db`, serving `upstream` as Anthropic.
async fn two_replicas(db: &TestDatabase, upstream: &MockServer) -> (TestControlplane, TestControlplane) {
    let url = db.url();
    let base = format!("{}/anthropic/v1", upstream.uri());
    let env = [
        ("AURORA_DATABASE_URL", url.as_str()),
        ("ANTHROPIC_BASE_URL", base.as_str()),
        ("ANTHROPIC_API_KEY", "sk-ant-test"),
    ];
    let (a, b) = tokio::join!(TestControlplane::start(&env), TestControlplane::start(&env));
    (a, b)
}

/// Waits until `cp` lists exactly `nodes`, every one at the head revision.
async fn wait_for_fleet(cp: &TestControlplane, nodes: &[&str]) {
    wait::until_async(&format!("{} lists {nodes:?}, all current", cp.url()), || async {
        let fleet = cp.cli(&["dataplanes", "-o", "json"]).await.json();
        let planes = fleet["data_planes"].as_array().unwrap();
        let head = fleet["head_revision"].as_u64().unwrap();
        let mut listed: Vec<&str> = planes.iter().map(|p| p["node_id"].as_str().unwrap()).collect();
        listed.sort_unstable();
        (listed == nodes && planes.iter().all(|p| p["acked_revision"].as_u64() == Some(head))).then_some(())
    })
    .await;
}

async fn create_key(cp: &TestControlplane, name: &str) -> (String, String) {
    let created = cp.cli(&["keys", "create", "--name", name, "-o", "json", "--wait"]).await.json();
    (created["id"].as_str().unwrap().to_owned(), created["secret"].as_str().unwrap().to_owned())
}

/// Creates two dozen keys through `cp`, one after the other; returns their secrets.
async fn create_keys(cp: &TestControlplane, prefix: &str) -> Vec<String> {
    let mut secrets = Vec::new();
    for i in 0..24 {
        let created = cp.cli(&["keys", "create", "--name", &format!("{prefix}-{i}"), "-o", "json"]).await.json();
        secrets.push(created["secret"].as_str().unwrap().to_owned());
    }
    secrets
}

fn snapshots_applied(dp: &TestDataplane) -> usize {
    dp.process.events().iter().filter(|e| e["message"] == "applied configuration snapshot").count()
}

/// The replica a data plane subscribes to first; it fails over to the other.
#[derive(Clone, Copy)]
enum Home {
    A,
    B,
}

/// Data planes `dp-1`, `dp-2`, ... with the given homes, all ready.
async fn spread_data_planes<const N: usize>(
    a: &TestControlplane,
    b: &TestControlplane,
    homes: [Home; N],
) -> [TestDataplane; N] {
    let on_a = format!("{},{}", a.url(), b.url());
    let on_b = format!("{},{}", b.url(), a.url());
    let mut dps = Vec::with_capacity(N);
    for (index, home) in homes.into_iter().enumerate() {
        let urls = match home {
            Home::A => &on_a,
            Home::B => &on_b,
        };
        dps.push(TestDataplane::subscribed(urls, &format!("dp-{}", index + 1), &[]).await);
    }
    for dp in &dps {
        dp.wait_ready().await;
    }
    dps.try_into().unwrap_or_else(|_| unreachable!("N data planes"))
}

#[tokio::test]
async fn a_change_through_either_replica_reaches_every_data_plane_and_either_lists_them_all() {
    let db = TestDatabase::create().await;
    let upstream = upstream().await;
    let (a, b) = two_replicas(&db, &upstream).await;
    let dps = spread_data_planes(&a, &b, [Home::A, Home::B, Home::A]).await;
    wait_for_fleet(&a, &["dp-1", "dp-2", "dp-3"]).await;
    wait_for_fleet(&b, &["dp-1", "dp-2", "dp-3"]).await;

    // Created through A with --wait: the wait covers dp-2, whose stream B holds.
    let (id, secret) = create_key(&a, "shared").await;
    for dp in &dps {
        assert_eq!(dp.call(&secret).await, 200);
    }
    let revoked = b.cli(&["keys", "revoke", &id, "--wait"]).await;
    assert!(revoked.stderr.contains("applied by 3 data planes in"), "{revoked:?}");
    for dp in &dps {
        assert_eq!(dp.call(&secret).await, 401);
    }
}

#[tokio::test]
async fn concurrent_writes_through_both_replicas_are_gap_free_and_every_data_plane_converges() {
    let db = TestDatabase::create().await;
    let upstream = upstream().await;
    let (a, b) = two_replicas(&db, &upstream).await;
    let dp_a = TestDataplane::subscribed(&a.url(), "dp-a", &[]).await;
    let dp_b = TestDataplane::subscribed(&b.url(), "dp-b", &[]).await;
    dp_a.wait_ready().await;
    dp_b.wait_ready().await;

    let (through_a, through_b) = tokio::join!(create_keys(&a, "a"), create_keys(&b, "b"));

    let mut conn = db.connect().await;
    let head: i64 = sqlx::query_scalar("SELECT revision FROM head").fetch_one(&mut conn).await.unwrap();
    let revisions: Vec<i64> = sqlx::query_scalar("SELECT DISTINCT revision FROM changes ORDER BY revision")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(revisions, (1..=head).collect::<Vec<_>>(), "gap-free, one change-log entry set per revision");

    wait_for_fleet(&a, &["dp-a", "dp-b"]).await;
    wait_for_fleet(&b, &["dp-a", "dp-b"]).await;
    // A data plane that subscribes now gets a fresh snapshot; the two that followed deltas
    // must enforce exactly what it does.
    let fresh = TestDataplane::subscribed(&a.url(), "dp-fresh", &[]).await;
    fresh.wait_ready().await;
    for secret in through_a.iter().chain(&through_b) {
        for dp in [&dp_a, &dp_b, &fresh] {
            assert_eq!(dp.call(secret).await, 200);
        }
    }
    assert_eq!(dp_a.call("aurora-not-a-key").await, 401);
}

#[tokio::test]
async fn a_killed_replica_s_data_planes_fail_over_without_a_failed_request_and_resume_by_deltas() {
    let db = TestDatabase::create().await;
    let upstream = upstream().await;
    let (mut a, b) = two_replicas(&db, &upstream).await;
    let dps = spread_data_planes(&a, &b, [Home::A, Home::A, Home::B]).await;
    wait_for_fleet(&b, &["dp-1", "dp-2", "dp-3"]).await;
    let (_, before) = create_key(&b, "before").await;

    a.process.signal("KILL");
    a.process.wait_exit().await;
    // Traffic all along: the data planes serve what they have while their streams move to B.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        for dp in &dps {
            assert_eq!(dp.call(&before).await, 200, "no request may fail during the failover");
        }
        let fleet = b.cli(&["dataplanes", "-o", "json"]).await.json();
        let local = fleet["data_planes"].as_array().unwrap().len();
        let moved = dps[..2].iter().all(|dp| {
            dp.process.events().iter().filter(|e| e["message"] == "subscribed to the control plane").count() >= 2
        });
        if moved && local == 3 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "dp-1 and dp-2 never reconnected to B");
    }

    let (_, after) = create_key(&b, "after").await;
    for dp in &dps {
        assert_eq!(dp.call(&after).await, 200);
        assert_eq!(dp.call(&before).await, 200);
        assert_eq!(snapshots_applied(dp), 1, "resumed by deltas, not a second snapshot:\n{}", dp.process.logs());
    }
}

async fn http_status(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn while_the_database_is_gone_writes_fail_fast_traffic_flows_and_everything_resumes_by_itself() {
    let db = TestDatabase::create().await;
    let upstream = upstream().await;
    let url = db.url();
    let base = format!("{}/anthropic/v1", upstream.uri());
    let env = [
        ("AURORA_DATABASE_URL", url.as_str()),
        ("ANTHROPIC_BASE_URL", base.as_str()),
        ("ANTHROPIC_API_KEY", "sk-ant-test"),
        ("AURORA_DATABASE_CONNECT_TIMEOUT", "1s"),
        ("AURORA_STORE_PROBE_INTERVAL", "1s"),
    ];
    let cp = TestControlplane::start(&env).await;
    let dp = TestDataplane::subscribed(&cp.url(), "dp-1", &[]).await;
    dp.wait_ready().await;
    let (id, secret) = create_key(&cp, "kept").await;

    db.set_available(false).await;
    let failed = cp.cli(&["keys", "create", "--name", "during"]).await;
    let line = failed.error_line();
    assert!(line.starts_with("error: UNAVAILABLE: the store cannot write (cannot reach the database"), "{line}");
    assert!(!line.contains(&url) && !cp.process.logs().contains(&url), "the database URL is never shown");
    wait::until_async("readiness says the database is gone", || async {
        let (status, body) = http_status(&cp.metrics_url("/readyz")).await;
        (status == 503 && body.contains("cannot reach the database")).then_some(())
    })
    .await;
    for _ in 0..5 {
        assert_eq!(dp.call(&secret).await, 200, "data planes keep serving");
    }

    db.set_available(true).await;
    // The very next write works, without a restart, and reaches the data plane by a delta.
    let revoked = cp.cli(&["keys", "revoke", &id, "--wait"]).await;
    assert!(revoked.stderr.contains("applied by 1 data plane"), "{revoked:?}");
    assert_eq!(dp.call(&secret).await, 401);
    wait::until_async("readiness recovers", || async {
        (http_status(&cp.metrics_url("/readyz")).await.0 == 200).then_some(())
    })
    .await;
    assert_eq!(snapshots_applied(&dp), 1, "no snapshot the data plane did not need:\n{}", dp.process.logs());
}
