//! Tests of the PostgreSQL store against the test server, one fresh database per test: the
//! shared contract (`suite.rs`), then what only a database shared by several replicas has.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use sqlx::Connection;

use super::*;
use crate::store::Store;
use crate::store::audit_suite::audit_suite;
use crate::store::suite::{actor, new_key, store_suite};
use crate::store::test_db::{PgDatabase, TestDb};

store_suite!(TestDb::postgres().await);
crate::store::usage_suite::usage_suite!(TestDb::postgres().await);
audit_suite!(TestDb::postgres().await);

async fn database() -> (TestDb, PgStore) {
    let db = TestDb::postgres().await;
    let store = PgStore::open(&db.url(), PgPoolConfig::default(), crate::store::test_db::test_keyring()).await.unwrap();
    (db, store)
}

fn pg(db: &TestDb) -> &PgDatabase {
    match db {
        TestDb::Postgres(pg) => pg,
        TestDb::Sqlite(_) => unreachable!(),
    }
}

#[tokio::test]
async fn migrations_create_the_schema_once_even_when_replicas_start_together() {
    let db = TestDb::postgres().await;
    // Four replicas starting at once on an empty database: sqlx's migrator serializes them on
    // an advisory lock, so each migration is applied once and every replica opens.
    let url = db.url();
    let opens = (0..4).map(|_| PgStore::open(&url, PgPoolConfig::default(), crate::store::test_db::test_keyring()));
    let stores: Vec<PgStore> = futures_util::future::join_all(opens).await.into_iter().map(Result::unwrap).collect();
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&stores[0].pool)
        .await
        .unwrap();
    // Every migration the binary carries, each applied once.
    assert_eq!(applied as usize, super::MIGRATOR.iter().count());
    assert!(applied >= 5);
    assert_eq!(stores[0].head_revision().await.unwrap(), 0);
    assert_eq!(stores[0].oldest_retained_revision().await.unwrap(), 1);
    let store_id = stores[0].store_id();
    assert_ne!(store_id, [0; 16], "a random history id is created with the store");
    assert!(stores.iter().all(|s| s.store_id() == store_id), "one database, one history");
    let (_other, other) = database().await;
    assert_ne!(other.store_id(), store_id, "another database is another history");
}

#[tokio::test]
async fn a_commit_on_one_replica_reaches_the_head_watch_of_another_at_once() {
    let (db, a) = database().await;
    let b = PgStore::open(&db.url(), PgPoolConfig::default(), crate::store::test_db::test_keyring()).await.unwrap();
    let mut head = b.watch_head();
    assert_eq!(*head.borrow_and_update(), 0);
    for _ in 0..3 {
        let (key, _) = new_key(&format!("k{}", uuid::Uuid::now_v7()));
        let (_, revision) = a.create_key(key, &actor()).await.unwrap();
        // No read on B: only the notification can advance its watch, well within the feed's
        // one-second poll.
        tokio::time::timeout(Duration::from_millis(500), head.wait_for(|h| *h >= revision)).await.unwrap().unwrap();
    }
    // A rolled-back write announces nothing.
    assert!(a.delete_key(uuid::Uuid::now_v7(), &actor()).await.is_err());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!head.has_changed().unwrap());
}

#[tokio::test]
async fn a_lost_listen_connection_comes_back_and_re_reads_the_head() {
    let (db, a) = database().await;
    let b = PgStore::open(&db.url(), PgPoolConfig::default(), crate::store::test_db::test_keyring()).await.unwrap();
    let mut head = b.watch_head();
    // Every connection but the test's own goes: B's LISTEN connection with them.
    let mut admin = pg(&db).connect().await;
    terminate_others(&mut admin, pg(&db)).await;
    let (key, _) = new_key("after-the-cut");
    let (_, revision) = a.create_key(key, &actor()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), head.wait_for(|h| *h >= revision)).await.unwrap().unwrap();
    // And it listens again: the next commit arrives by notification.
    let (key, _) = new_key("next");
    let (_, revision) = a.create_key(key, &actor()).await.unwrap();
    tokio::time::timeout(Duration::from_millis(500), head.wait_for(|h| *h >= revision)).await.unwrap().unwrap();
    admin.close().await.unwrap();
}

#[tokio::test]
async fn only_one_replica_compacts_at_a_time() {
    let (db, a) = database().await;
    for i in 0..5 {
        a.create_key(new_key(&format!("k{i}")).0, &actor()).await.unwrap();
    }
    // Another replica in the middle of compacting holds the lock in its transaction.
    let mut other = pg(&db).connect().await;
    sqlx::raw_sql("BEGIN; SELECT pg_advisory_xact_lock(7022645016940052481)").execute(&mut other).await.unwrap();
    assert_eq!(a.compact_changes(1).await.unwrap(), 0, "skipped while the other replica compacts");
    assert_eq!(a.oldest_retained_revision().await.unwrap(), 1);
    sqlx::raw_sql("COMMIT").execute(&mut other).await.unwrap();
    assert_eq!(a.compact_changes(1).await.unwrap(), 4);
    assert_eq!(a.oldest_retained_revision().await.unwrap(), 5);
    other.close().await.unwrap();
}

/// Ends every session on the test's database but `admin`'s.
pub(super) async fn terminate_others(admin: &mut sqlx::PgConnection, db: &PgDatabase) {
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(db.name())
    .execute(&mut *admin)
    .await
    .unwrap();
}

/// Issue 13: each control plane's limit demand replaces its own rows, is read by the others,
/// and disappears once it stops refreshing it.
#[tokio::test]
async fn limit_demand_is_shared_between_control_planes() {
    let (_db, store) = database().await;
    let table = store.presence_table().unwrap();
    let row = |instance: &str, key: &str, admitted| crate::store::LimitRow {
        instance: instance.into(),
        key_id: key.into(),
        window_start: 60,
        admitted,
        replicas: 2,
        busy: 1,
        weight: 500,
        ..crate::store::LimitRow::default()
    };
    let key = uuid::Uuid::now_v7().to_string();
    table.publish_limits("a", &[row("a", "", 0), row("a", &key, 7)], Duration::from_secs(5)).await.unwrap();
    table.publish_limits("b", &[row("b", "", 0), row("b", &key, 3)], Duration::from_secs(5)).await.unwrap();
    let seen_by_a = table.other_limits("a").await.unwrap();
    assert_eq!(seen_by_a.len(), 2);
    assert!(seen_by_a.iter().all(|r| r.instance == "b"));
    assert_eq!(seen_by_a.iter().find(|r| r.key_id == key).map(|r| (r.admitted, r.weight)), Some((3, 500)));

    // A new write replaces the old rows; rows that expired are gone for everyone.
    table.publish_limits("b", &[row("b", "", 0)], Duration::from_millis(1)).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !table.other_limits("a").await.unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "b's expired rows are still read");
        tokio::task::yield_now().await;
    }
    assert_eq!(table.other_limits("b").await.unwrap().len(), 2, "a's rows are still fresh");
}
