//! The PostgreSQL store when the server drops its connections or cannot be reached: writes
//! fail fast as unavailable, say so in the write status, leave no revision behind, and the next
//! write succeeds as soon as the server is back, without reopening the store.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use sqlx::Connection;

use super::tests::terminate_others;
use super::*;
use crate::store::suite::{actor, new_key};
use crate::store::test_db::{PgDatabase, TestDb};
use crate::store::{StorageFailure, Store, StoreError, WriteStatus};

#[tokio::test]
async fn a_write_whose_connection_is_terminated_fails_as_unavailable_and_the_next_one_succeeds() {
    let TestDb::Postgres(db) = TestDb::postgres().await else { unreachable!() };
    let store = PgStore::open(&db.url(), PgPoolConfig::default(), crate::store::test_db::test_keyring()).await.unwrap();
    let (_, first) = store.create_key(new_key("first").0, &actor()).await.unwrap();

    // Another session holds the head row, so the store's next write waits on it, mid-transaction,
    // while the server terminates the store's connections.
    let mut admin = db.connect().await;
    sqlx::raw_sql("BEGIN; SELECT revision FROM head WHERE id = 1 FOR UPDATE").execute(&mut admin).await.unwrap();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move { store.create_key(new_key("cut").0, &actor()).await })
    };
    wait_until_waiting_on_a_lock(&mut admin, &db).await;
    terminate_others(&mut admin, &db).await;
    let err = tokio::time::timeout(Duration::from_secs(5), writer).await.unwrap().unwrap().unwrap_err();
    assert_eq!(err.storage_failure(), Some(StorageFailure::CannotWrite), "{err}");
    let status = store.write_status().borrow().clone();
    assert!(matches!(status, WriteStatus::CannotWrite { .. }), "{status:?}");
    sqlx::raw_sql("ROLLBACK").execute(&mut admin).await.unwrap();

    // The next write gets a fresh connection: it works, and no revision was lost or skipped.
    let (_, next) = store.create_key(new_key("next").0, &actor()).await.unwrap();
    assert_eq!(next, first + 1, "the failed write's revision rolled back");
    assert!(store.write_status().borrow().is_writable());
    admin.close().await.unwrap();
}

#[tokio::test]
async fn writes_fail_fast_while_the_database_refuses_connections_and_work_once_it_accepts_them() {
    let TestDb::Postgres(db) = TestDb::postgres().await else { unreachable!() };
    let config = PgPoolConfig { connect_timeout: Duration::from_secs(1), ..PgPoolConfig::default() };
    let store = PgStore::open(&db.url(), config, crate::store::test_db::test_keyring()).await.unwrap();
    store.create_key(new_key("before").0, &actor()).await.unwrap();

    // As good as down for this store: no new connection is accepted, and the open ones are gone.
    let mut admin = db.connect_server().await;
    set_allow_connections(&mut admin, &db, false).await;
    terminate_others(&mut admin, &db).await;
    let started = Instant::now();
    let err = store.create_key(new_key("during").0, &actor()).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(4), "fails within the connect timeout: {:?}", started.elapsed());
    assert_eq!(err.storage_failure(), Some(StorageFailure::CannotWrite), "{err}");
    let read = store.list_keys(None, 10).await.unwrap_err();
    assert!(matches!(read, StoreError::Unreachable(_)), "reads say so too: {read}");
    let probe = store.probe_write().await.unwrap_err();
    assert_eq!(probe.storage_failure(), Some(StorageFailure::CannotWrite), "{probe}");
    assert!(!store.write_status().borrow().is_writable(), "readiness learns it from the probe");
    assert!(!err.to_string().contains(&db.url()), "no URL in errors: {err}");

    set_allow_connections(&mut admin, &db, true).await;
    store.probe_write().await.unwrap();
    assert!(store.write_status().borrow().is_writable());
    let (_, revision) = store.create_key(new_key("after").0, &actor()).await.unwrap();
    assert_eq!(revision, 2);
    admin.close().await.unwrap();
}

async fn set_allow_connections(admin: &mut sqlx::PgConnection, db: &PgDatabase, allow: bool) {
    let sql = format!("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {allow}", db.name());
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut *admin).await.unwrap();
}

/// Waits until some session on the database waits for a lock (the store's write on the head).
async fn wait_until_waiting_on_a_lock(admin: &mut sqlx::PgConnection, db: &PgDatabase) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'")
                .bind(db.name())
                .fetch_one(&mut *admin)
                .await
                .unwrap();
        if waiting > 0 {
            return;
        }
        assert!(Instant::now() < deadline, "the write never waited on the head row");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
