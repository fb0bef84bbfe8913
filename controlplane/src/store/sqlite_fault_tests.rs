//! The SQLite store under faults: a real full filesystem, a database that refuses to grow, a
//! cancelled write. After each, the next write must succeed as soon as the cause is gone, and
//! the write status must say what happened.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::*;
use crate::store::suite::{actor, new_key};
use crate::store::{NewKey, StorageFailure, Store, WriteStatus};

/// A small tmpfs mounted for one test, unmounted when dropped (also when the test panics).
struct SmallFilesystem {
    dir: tempfile::TempDir,
}

impl SmallFilesystem {
    /// `None` (with a message) where mounting is not possible: not root, or no mount(8).
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "aurora-test", dir.path().to_str().unwrap()])
            .output();
        match mounted {
            Ok(out) if out.status.success() => Some(SmallFilesystem { dir }),
            Ok(out) => {
                eprintln!(
                    "skipped: cannot mount a tmpfs (needs root): {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                None
            }
            Err(err) => {
                eprintln!("skipped: cannot run mount: {err}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file until the filesystem is full; returns its path.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 64 * 1024];
        loop {
            match file.write(&block) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        // The last partial blocks.
        while file.write(&[0u8; 512]).is_ok_and(|n| n > 0) {}
        let _ = file.sync_all();
        path
    }
}

impl Drop for SmallFilesystem {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

fn described_key(name: &str) -> NewKey {
    let (mut key, _) = new_key(name);
    key.description = "x".repeat(4000);
    key
}

#[tokio::test]
async fn a_full_disk_fails_writes_precisely_and_they_work_again_once_space_is_freed() {
    let Some(fs) = SmallFilesystem::mount("2m") else { return };
    let store = SqliteStore::open(
        &format!("sqlite://{}", fs.path().join("aurora.db").display()),
        crate::store::test_db::test_keyring(),
    )
    .await
    .unwrap();
    let status = store.write_status();
    let (victim, _) = store.create_key(new_key("victim").0, &actor()).await.unwrap();
    let filler = fs.fill();

    // Writes fail once the write-ahead log cannot grow; each failure is a storage failure.
    let mut failures = 0;
    for i in 0..500 {
        match store.create_key(described_key(&format!("k{i}")), &actor()).await {
            Ok(_) => assert_eq!(failures, 0, "a write succeeded between failures on a full disk"),
            Err(err) => {
                assert_eq!(err.storage_failure(), Some(StorageFailure::CannotWrite), "{err}");
                failures += 1;
                if failures == 5 {
                    break;
                }
            }
        }
    }
    assert_eq!(failures, 5, "the disk never filled up");
    assert!(!status.borrow().is_writable(), "{:?}", *status.borrow());
    let reason = match &*status.borrow() {
        WriteStatus::CannotWrite { reason } => reason.clone(),
        WriteStatus::Writable => unreachable!(),
    };
    assert!(reason.contains("full"), "{reason}");

    // Space is back: the very next write (a revocation) works, on whichever pooled connection.
    std::fs::remove_file(filler).unwrap();
    let (revoked, _) = store.revoke_key(victim.id, &actor()).await.unwrap();
    assert!(revoked.revoked_at.is_some());
    for i in 0..8 {
        store.create_key(new_key(&format!("after{i}")).0, &actor()).await.unwrap();
    }
    assert!(status.borrow().is_writable());
    store.close().await;
}

#[tokio::test]
async fn the_probe_finds_a_full_disk_without_any_other_write_and_sees_it_freed() {
    // 2 MB: each write also appends its audit record, which repeats the long description.
    let Some(fs) = SmallFilesystem::mount("2m") else { return };
    let store = SqliteStore::open(
        &format!("sqlite://{}", fs.path().join("aurora.db").display()),
        crate::store::test_db::test_keyring(),
    )
    .await
    .unwrap();
    store.probe_write().await.unwrap();
    // Leave the write-ahead log with no free frames, then fill the disk.
    for i in 0..20 {
        store.create_key(described_key(&format!("k{i}")), &actor()).await.unwrap();
    }
    let filler = fs.fill();
    let mut failed = false;
    for _ in 0..200 {
        if store.probe_write().await.is_err() {
            failed = true;
            break;
        }
    }
    assert!(failed, "the probe never failed on a full disk");
    assert!(!store.write_status().borrow().is_writable());
    std::fs::remove_file(filler).unwrap();
    store.probe_write().await.unwrap();
    assert!(store.write_status().borrow().is_writable());
    store.close().await;
}

/// A database that refuses to grow (`max_page_count`) fails inserts with SQLITE_FULL inside the
/// transaction: the same failure as a full disk, without needing root.
#[tokio::test]
async fn a_database_that_cannot_grow_leaves_no_poisoned_connection_behind() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(
        &format!("sqlite://{}", dir.path().join("aurora.db").display()),
        crate::store::test_db::test_keyring(),
    )
    .await
    .unwrap();
    // Every pooled connection gets the cap, so whichever runs the next write hits it.
    let mut conns = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        let mut conn = store.pool.acquire().await.unwrap();
        let pages: i64 = sqlx::query_scalar("PRAGMA page_count").fetch_one(&mut *conn).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA max_page_count = {pages}"))).execute(&mut *conn).await.unwrap();
        conns.push(conn);
    }
    drop(conns);

    // Each capped connection fails one write and is then discarded, not returned to the pool
    // inside a transaction; its replacement has no cap, so writes recover by themselves.
    let mut failures = 0;
    for i in 0..(4 * MAX_CONNECTIONS) {
        if let Err(err) = store.create_key(described_key(&format!("k{i}")), &actor()).await {
            assert_eq!(err.storage_failure(), Some(StorageFailure::CannotWrite), "{err}");
            failures += 1;
        }
    }
    assert!(
        (1..=MAX_CONNECTIONS).contains(&failures),
        "{failures} failed writes: the cap never applied or a poisoned connection stayed in the pool"
    );
    for i in 0..8 {
        store.create_key(new_key(&format!("later{i}")).0, &actor()).await.unwrap();
    }
    store.close().await;
}

/// A write whose caller goes away (a cancelled request future) while it waits for the lock
/// leaves nothing behind: the next write succeeds at once.
#[tokio::test]
async fn a_cancelled_write_leaves_the_pool_clean() {
    use sqlx::{ConnectOptions, Connection};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("aurora.db");
    let store = SqliteStore::open(&format!("sqlite://{}", path.display()), crate::store::test_db::test_keyring())
        .await
        .unwrap();
    let mut holder = sqlx::sqlite::SqliteConnectOptions::new().filename(&path).connect().await.unwrap();
    sqlx::query("BEGIN IMMEDIATE").execute(&mut holder).await.unwrap();

    for i in 0..MAX_CONNECTIONS {
        let who = actor();
        let write = store.create_key(new_key(&format!("cancelled{i}")).0, &who);
        assert!(tokio::time::timeout(Duration::from_millis(50), write).await.is_err(), "the lock is held");
    }
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    holder.close().await.unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for i in 0..(2 * MAX_CONNECTIONS) {
        tokio::time::timeout_at(deadline, store.create_key(new_key(&format!("after{i}")).0, &actor()))
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(store.list_keys(None, 100).await.unwrap().len() as u32, 2 * MAX_CONNECTIONS);
    store.close().await;
}
