//! Secrets at rest, on both backends: no credential ever set (current, replaced or cleared) is
//! in any byte the database keeps; a store never opens without the key its credentials need;
//! rotation and re-encryption; plaintext left by an older version is sealed at open. Credential
//! sets included: a named credential removed or replaced leaves no trace either.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use aurora_core::{KeyHash, ProductVars, ProviderKind};
use aurora_proto::v1::{Change, ProviderConfig, UpstreamCredential, change};
use prost::Message;
use sqlx::Connection;

use super::super::suite::{actor, credential_patch};
use super::super::test_db::{TestDb, test_keyring};
use super::super::{
    ClientIdentity, Credential, Keyring, NewCredential, PgPoolConfig, ProviderPatch, SealError, Store, StoreError,
};
use crate::bootstrap::Bootstrap;

async fn open_with(db: &TestDb, keyring: Keyring) -> Result<Arc<dyn Store>, StoreError> {
    super::super::open(&db.url(), PgPoolConfig::default(), keyring).await
}

/// Runs one SQL statement on the database from outside the store.
async fn execute(db: &TestDb, sql: &str) {
    match db {
        TestDb::Sqlite(_) => {
            let mut conn = sqlx::SqliteConnection::connect(&db.url()).await.unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).execute(&mut conn).await.unwrap();
            conn.close().await.unwrap();
        }
        TestDb::Postgres(pg) => {
            let mut conn = pg.connect().await;
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).execute(&mut conn).await.unwrap();
            conn.close().await.unwrap();
        }
    }
}

/// A bytes literal in the backend's SQL.
fn blob(db: &TestDb, bytes: &[u8]) -> String {
    match db {
        TestDb::Sqlite(_) => format!("X'{}'", hex::encode(bytes)),
        TestDb::Postgres(_) => format!("decode('{}', 'hex')", hex::encode(bytes)),
    }
}

/// Everything the database keeps: SQLite's files (main, `-wal`, `-shm`) byte for byte, or a
/// text dump of every PostgreSQL table (bytes shown as hex, so needles are searched as hex too).
async fn dump(db: &TestDb) -> Vec<u8> {
    match db {
        TestDb::Sqlite(dir) => {
            let mut raw = Vec::new();
            for entry in std::fs::read_dir(dir.path().join("nested/dir")).unwrap() {
                raw.extend(std::fs::read(entry.unwrap().path()).unwrap());
            }
            raw
        }
        TestDb::Postgres(pg) => {
            let mut conn = pg.connect().await;
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
            )
            .fetch_all(&mut conn)
            .await
            .unwrap();
            assert!(tables.len() >= 6, "{tables:?}");
            let mut text = String::new();
            for table in tables {
                let sql = format!("SELECT COALESCE(string_agg(t::text, E'\\n'), '') FROM {table} t");
                let rows: String = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&mut conn).await.unwrap();
                text.push_str(&rows);
            }
            conn.close().await.unwrap();
            text.into_bytes()
        }
    }
}

fn assert_absent(raw: &[u8], needles: &[Vec<u8>]) {
    let contains = |needle: &[u8]| raw.windows(needle.len()).any(|w| w == needle);
    for needle in needles {
        let hex = hex::encode(needle).into_bytes();
        assert!(!contains(needle) && !contains(&hex), "{:?} is stored", String::from_utf8_lossy(needle));
    }
}

fn named(name: &str, secret: &str) -> NewCredential {
    NewCredential { name: name.into(), weight: 1, enabled: true, secret: Credential::new(secret) }
}

fn identity(key: &str) -> ProviderPatch {
    ProviderPatch {
        client_identity: Some(Some(ClientIdentity::new("-----BEGIN CERTIFICATE-----cert", key))),
        ..ProviderPatch::default()
    }
}

async fn every_credential_ever_set_is_in_no_table(db: TestDb) {
    let store = db.open().await;
    let vars =
        ProductVars { master_key: Some("master-key-one-0123456789abcdef-0123".into()), ..ProductVars::default() };
    store.bootstrap(&Bootstrap::new(vars), &actor()).await.unwrap();
    store.upsert_provider(ProviderKind::Anthropic, credential_patch("sk-ant-replaced-one"), &actor()).await.unwrap();
    store.upsert_provider(ProviderKind::Anthropic, credential_patch("sk-ant-current-two"), &actor()).await.unwrap();
    store.upsert_provider(ProviderKind::OpenAi, credential_patch("sk-proj-cleared-three"), &actor()).await.unwrap();
    let clear = ProviderPatch { credential: Some(None), ..ProviderPatch::default() };
    store.upsert_provider(ProviderKind::OpenAi, clear, &actor()).await.unwrap();
    store.upsert_provider(ProviderKind::Vllm, identity("PRIVATE-KEY-replaced-four"), &actor()).await.unwrap();
    store.upsert_provider(ProviderKind::Vllm, identity("PRIVATE-KEY-current-five"), &actor()).await.unwrap();
    // Named credentials of a set: one added then removed, one replaced (removed and added again
    // under its name), one current.
    let anthropic = ProviderKind::Anthropic;
    store.add_credential(anthropic, named("spare", "sk-ant-set-removed-six"), &actor()).await.unwrap();
    store.add_credential(anthropic, named("backup", "sk-ant-set-replaced-seven"), &actor()).await.unwrap();
    store.remove_credential(anthropic, "spare", &actor()).await.unwrap();
    store.remove_credential(anthropic, "backup", &actor()).await.unwrap();
    store.add_credential(anthropic, named("backup", "sk-ant-set-current-eight"), &actor()).await.unwrap();
    let vars =
        ProductVars { master_key: Some("master-key-two-0123456789abcdef-0123".into()), ..ProductVars::default() };
    store.bootstrap(&Bootstrap::new(vars), &actor()).await.unwrap();

    let needles: Vec<Vec<u8>> = [
        "sk-ant-replaced-one",
        "sk-ant-current-two",
        "sk-proj-cleared-three",
        "PRIVATE-KEY-replaced-four",
        "PRIVATE-KEY-current-five",
        "sk-ant-set-removed-six",
        "sk-ant-set-replaced-seven",
        "sk-ant-set-current-eight",
        "master-key-one-0123456789abcdef-0123",
        "master-key-two-0123456789abcdef-0123",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .chain(
        ["master-key-one-0123456789abcdef-0123", "master-key-two-0123456789abcdef-0123"]
            .iter()
            .map(|k| KeyHash::of(k).as_bytes().to_vec()),
    )
    .collect();
    // While the store is open (SQLite: the WAL holds the recent pages), then after it closed.
    assert_absent(&dump(&db).await, &needles);
    assert!(dump(&db).await.windows(9).any(|w| w == b"anthropic"), "the dump reads real data");

    // The delta path still delivers the current secrets, and ends where a snapshot does.
    let deltas = store.changes_since(0, 1000).await.unwrap();
    let mut last = std::collections::BTreeMap::new();
    for change in deltas.iter().flat_map(|d| &d.changes) {
        match change.change.clone().unwrap() {
            change::Change::ProviderUpsert(p) => {
                last.insert(p.name.clone(), p);
            }
            change::Change::MasterKeyHash(hash) => {
                assert_eq!(hash, KeyHash::of("master-key-two-0123456789abcdef-0123").as_bytes().to_vec());
            }
            _ => {}
        }
    }
    let snapshot = store.load_snapshot().await.unwrap();
    let from_snapshot: std::collections::BTreeMap<_, _> =
        snapshot.providers.iter().map(|p| (p.name.clone(), p.clone())).collect();
    assert_eq!(last, from_snapshot);
    assert_eq!(last["anthropic"].credential, "sk-ant-current-two");
    let set: Vec<_> = last["anthropic"].credentials.iter().map(|c| (c.name.as_str(), c.secret.as_str())).collect();
    assert_eq!(set, [("default", "sk-ant-current-two"), ("backup", "sk-ant-set-current-eight")]);
    assert_eq!(last["openai"].credential, "");
    assert_eq!(last["vllm"].client_key_pem, "PRIVATE-KEY-current-five");
    store.close().await;
    assert_absent(&dump(&db).await, &needles);
}

async fn a_store_opens_only_with_the_keys_its_credentials_need(db: TestDb) {
    let (old, new) = (Keyring::generate_key().unwrap(), Keyring::generate_key().unwrap());
    let old_ring = Keyring::parse(&old).unwrap();
    let store = open_with(&db, old_ring.clone()).await.unwrap();
    store.upsert_provider(ProviderKind::Zai, credential_patch("zai-secret"), &actor()).await.unwrap();
    store.upsert_provider(ProviderKind::Vllm, identity("PRIVATE-KEY-vllm"), &actor()).await.unwrap();
    store.add_credential(ProviderKind::Zai, named("second", "zai-second-secret"), &actor()).await.unwrap();
    store.close().await;

    let err = open_with(&db, Keyring::parse(&new).unwrap()).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Sealed { source: SealError::UnknownKey(id), .. } if *id == old_ring.current_id())
    );
    let message = err.to_string();
    assert!(message.contains("AURORA_ENCRYPTION_KEY") && message.contains(&old_ring.current_id().to_string()));
    assert!(!message.contains(&old) && !message.contains(&new) && !message.contains("zai-secret"), "{message}");

    // Rotation: the new key first, the old one still accepted; re-encryption moves everything.
    let rotated = open_with(&db, Keyring::parse(&format!("{new},{old}")).unwrap()).await.unwrap();
    let report = rotated.reencrypt().await.unwrap();
    assert_eq!((report.rewrapped, report.unchanged), (3, 0), "two credentials of a set and a client key");
    assert_eq!(rotated.reencrypt().await.unwrap().rewrapped, 0, "idempotent");
    rotated.close().await;
    let only_new = open_with(&db, Keyring::parse(&new).unwrap()).await.unwrap();
    let providers = only_new.list_providers().await.unwrap();
    let zai = providers.iter().find(|p| p.kind == ProviderKind::Zai).unwrap();
    assert_eq!(zai.credentials.default_credential().unwrap().expose(), "zai-secret");
    assert_eq!(zai.credentials.get("second").unwrap().secret.expose(), "zai-second-secret");
    let vllm = providers.iter().find(|p| p.kind == ProviderKind::Vllm).unwrap();
    assert_eq!(vllm.client_identity.as_ref().unwrap().expose_key(), "PRIVATE-KEY-vllm");
    only_new.close().await;
    assert!(open_with(&db, old_ring).await.is_err(), "the old key alone no longer opens it");
}

async fn plaintext_an_older_version_stored_is_sealed_at_open(db: TestDb) {
    let store = db.open().await;
    store.upsert_provider(ProviderKind::Anthropic, credential_patch("placeholder"), &actor()).await.unwrap();
    store.upsert_provider(ProviderKind::Vllm, identity("placeholder"), &actor()).await.unwrap();
    store.close().await;
    // What a version before secrets at rest wrote: plaintext columns, plaintext log payloads.
    let master = KeyHash::of("old-master-key-0123456789abcdef-0123");
    let old_payload = Change {
        change: Some(change::Change::ProviderUpsert(ProviderConfig {
            name: "anthropic".into(),
            enabled: true,
            base_url: "https://api.anthropic.com".into(),
            credential: "sk-ant-plaintext-legacy".into(),
            ..ProviderConfig::default()
        })),
    }
    .encode_to_vec();
    // A log entry carrying a credential set with its secrets (a build before the set was sealed).
    let set_payload = Change {
        change: Some(change::Change::ProviderUpsert(ProviderConfig {
            name: "anthropic".into(),
            enabled: true,
            base_url: "https://api.anthropic.com".into(),
            credentials: vec![UpstreamCredential {
                name: "default".into(),
                secret: "sk-ant-set-in-log-legacy".into(),
                weight: 1,
                enabled: true,
            }],
            ..ProviderConfig::default()
        })),
    }
    .encode_to_vec();
    let master_payload =
        Change { change: Some(change::Change::MasterKeyHash(master.as_bytes().to_vec())) }.encode_to_vec();
    for sql in [
        // What migration 0007 copies from an older store's providers.credential.
        "UPDATE provider_credentials SET secret = 'sk-ant-plaintext-legacy', secret_sealed = NULL \
         WHERE provider = 'anthropic' AND name = 'default'"
            .to_owned(),
        "UPDATE providers SET client_key = 'PRIVATE-KEY-plaintext-legacy', client_key_sealed = NULL WHERE name = 'vllm'"
            .to_owned(),
        format!("UPDATE settings SET master_key_hash = {}, master_key_sealed = NULL", blob(&db, master.as_bytes())),
        format!(
            "INSERT INTO changes (revision, seq, kind, object_id, op, payload, committed_at) VALUES \
             (1, 1, 'provider', 'anthropic', 'upsert', {}, 0), (2, 1, 'master_key', 'master_key', 'upsert', {}, 0), \
             (2, 2, 'provider', 'anthropic', 'upsert', {}, 0)",
            blob(&db, &old_payload),
            blob(&db, &master_payload),
            blob(&db, &set_payload)
        ),
    ] {
        execute(&db, &sql).await;
    }

    let store = db.open().await;
    let providers = store.list_providers().await.unwrap();
    assert_eq!(providers[0].credentials.default_credential().unwrap().expose(), "sk-ant-plaintext-legacy");
    let vllm = providers.iter().find(|p| p.kind == ProviderKind::Vllm).unwrap();
    assert_eq!(vllm.client_identity.as_ref().unwrap().expose_key(), "PRIVATE-KEY-plaintext-legacy");
    assert_eq!(store.load_snapshot().await.unwrap().master_key_hash, Some(master));
    let needles = [
        b"sk-ant-plaintext-legacy".to_vec(),
        b"sk-ant-set-in-log-legacy".to_vec(),
        b"PRIVATE-KEY-plaintext-legacy".to_vec(),
        master.as_bytes().to_vec(),
    ];
    assert_absent(&dump(&db).await, &needles);
    store.close().await;
    assert_absent(&dump(&db).await, &needles);
    // Sealed under the test key: a store opened with another key refuses.
    let other = Keyring::parse(&Keyring::generate_key().unwrap()).unwrap();
    assert_ne!(other.ids(), test_keyring().ids());
    assert!(open_with(&db, other).await.is_err());
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::TestDb::sqlite()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::TestDb::postgres().await).await;
                }
            )*
        }
    };
}

on_both_backends!(
    every_credential_ever_set_is_in_no_table,
    a_store_opens_only_with_the_keys_its_credentials_need,
    plaintext_an_older_version_stored_is_sealed_at_open,
);
