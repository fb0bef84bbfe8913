//! Tests of the SQLite store against real database files in temporary directories: the shared
//! contract (`suite.rs`), then what only a database file has.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use aurora_core::{ProductVars, ProviderKind};

use super::*;
use crate::bootstrap::Bootstrap;
use crate::store::Store;
use crate::store::audit_suite::audit_suite;
use crate::store::suite::{actor, credential_patch, new_key, store_suite};
use crate::store::test_db::TestDb;

store_suite!(TestDb::sqlite());
crate::store::usage_suite::usage_suite!(TestDb::sqlite());
audit_suite!(TestDb::sqlite());

fn url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("nested/dir/aurora.db").display())
}

async fn open(dir: &Path) -> SqliteStore {
    SqliteStore::open(&url(dir), crate::store::test_db::test_keyring()).await.unwrap()
}

#[tokio::test]
async fn migrations_create_the_schema_from_empty() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    assert!(dir.path().join("nested/dir/aurora.db").exists(), "file and parent directories are created");
    assert_eq!(store.head_revision().await.unwrap(), 0);
    assert_eq!(store.oldest_retained_revision().await.unwrap(), 1);
    let applied: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success").fetch_one(&store.pool).await.unwrap();
    // Every migration the binary carries, each applied once.
    assert_eq!(applied as usize, super::MIGRATOR.iter().count());
    assert!(applied >= 5);
    let store_id = store.store_id();
    assert_ne!(store_id, [0; 16], "a random history id is created with the store");
    // Opening again re-runs nothing and keeps the head and the history id.
    store.close().await;
    let reopened = open(dir.path()).await;
    assert_eq!(reopened.head_revision().await.unwrap(), 0);
    assert_eq!(reopened.store_id(), store_id);
    let other = tempfile::tempdir().unwrap();
    assert_ne!(open(other.path()).await.store_id(), store_id, "another database is another history");
}

#[tokio::test]
async fn secrets_are_never_stored_in_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let vars = ProductVars { master_key: Some("master-key-plaintext".into()), ..ProductVars::default() };
    store.bootstrap(&Bootstrap::new(vars), &actor()).await.unwrap();
    let (key, secret) = new_key("needle-name");
    store.create_key(key, &actor()).await.unwrap();
    store.close().await;

    // Every byte SQLite wrote: the database, its WAL and shared-memory files.
    let mut raw = Vec::new();
    for entry in std::fs::read_dir(dir.path().join("nested/dir")).unwrap() {
        raw.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    let contains = |needle: &[u8]| raw.windows(needle.len()).any(|w| w == needle);
    assert!(contains(b"needle-name"), "the test reads the real file");
    assert!(contains(secret.hash().as_bytes()), "the hash is what is stored");
    assert!(!contains(secret.expose().as_bytes()), "the key secret is in the file");
    assert!(!contains(b"master-key-plaintext"), "the master key is in the file");
}

#[tokio::test]
async fn database_files_and_their_new_directories_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    store.upsert_provider(ProviderKind::Anthropic, credential_patch("sk-ant-secret"), &actor()).await.unwrap();
    let db = dir.path().join("nested/dir/aurora.db");
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    for path in [dir.path().join("nested"), dir.path().join("nested/dir")] {
        assert_eq!(mode(&path), 0o700, "{}", path.display());
    }
    for suffix in ["", "-wal", "-shm"] {
        let path = std::path::PathBuf::from(format!("{}{suffix}", db.display()));
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    store.close().await;

    // A file someone made world-readable is tightened on the next open.
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let store = open(dir.path()).await;
    assert_eq!(mode(&db), 0o600);
    store.close().await;
}
