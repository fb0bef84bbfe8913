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
