//! Two control-plane replicas' fleets shared through one PostgreSQL database.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use super::*;
use crate::store::test_db::TestDb;

const FAST: Timing = Timing { interval: Duration::from_millis(100), ttl: Duration::from_millis(600) };

async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn each_replica_lists_and_waits_for_the_data_planes_of_the_other() {
    let db = TestDb::postgres().await;
    let store = db.open().await;
    let (a, b) = (Fleet::new(), Fleet::new());
    let share_a = tokio::spawn(share(a.clone(), store.presence_table().unwrap(), "a".into(), FAST));
    let share_b = tokio::spawn(share(b.clone(), store.presence_table().unwrap(), "b".into(), FAST));

    let on_a = a.register("dp-1".into(), None, "v1".into());
    let _on_b = b.register("dp-2".into(), None, "v1".into());
    until("both replicas list both data planes", || a.list().len() == 2 && b.list().len() == 2).await;
    let listed: Vec<(String, bool)> = b.list().into_iter().map(|r| (r.node_id, r.remote)).collect();
    assert_eq!(listed, [("dp-1".to_owned(), true), ("dp-2".to_owned(), false)]);
    assert_eq!(b.acked_revisions().len(), 1, "metrics count this replica's own streams");

    // A wait through B completes only once the data plane on A has acknowledged too.
    _on_b.ack(7);
    let wait = {
        let b = b.clone();
        tokio::spawn(async move { b.wait_for(7, Duration::from_secs(10)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!wait.is_finished(), "dp-1 has not acknowledged");
    on_a.ack(7);
    let outcome = wait.await.unwrap();
    assert!(outcome.complete, "{outcome:?}");
    assert_eq!(outcome.replicas, 2);

    // Replica A dies without a word: its data plane's presence expires from B's fleet.
    share_a.abort();
    until("dp-1 expires from B", || b.list().len() == 1).await;
    drop(on_a);
    share_b.abort();
}

#[tokio::test]
async fn a_data_plane_that_moved_here_is_known_by_its_local_stream_only() {
    let db = TestDb::postgres().await;
    let store = db.open().await;
    let table = store.presence_table().unwrap();
    // A row that a killed replica left behind, still unexpired.
    let stale = Presence {
        instance: "dead".into(),
        registration: 1,
        node_id: "dp-1".into(),
        address: None,
        version: "v1".into(),
        connected_at: std::time::SystemTime::now(),
        last_seen_at: std::time::SystemTime::now(),
        acked_revision: 3,
        rejected: None,
    };
    table.publish("dead", &[stale], Duration::from_secs(60)).await.unwrap();
    let b = Fleet::new();
    let moved = b.register("dp-1".into(), None, "v1".into());
    moved.ack(5);
    let task = tokio::spawn(share(b.clone(), table, "b".into(), FAST));
    tokio::time::sleep(Duration::from_millis(400)).await;
    let listed: Vec<(String, bool, u64)> =
        b.list().into_iter().map(|r| (r.node_id, r.remote, r.acked_revision)).collect();
    assert_eq!(listed, [("dp-1".to_owned(), false, 5)]);
    assert!(b.wait_for(5, Duration::from_secs(1)).await.complete, "the stale row holds no wait up");
    task.abort();
}
