//! The audit trail's contract, on every backend (`sqlite_tests.rs`, `postgres_tests.rs` run
//! these through [`audit_suite!`]): one record per revision with the right revision, no secret
//! in any record, tampering with the stored rows found by verify, compaction and pruning.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aurora_core::{KeyHash, ProductVars, ProviderKind};
use sqlx::Connection;

use super::audit::{AuditQuery, AuditRecord, ChainBreak};
use super::suite::{actor, credential_patch, new_key};
use super::test_db::TestDb;
use super::{Actor, Credential, KeyPatch, ProviderPatch, SettingsPatch, Store, StoreError};
use crate::bootstrap::Bootstrap;

macro_rules! audit_suite {
    ($db:expr) => {
        $crate::store::audit_suite::audit_suite!(@tests $db;
            each_mutation_leaves_one_record_with_its_revision_and_no_secret,
            tampering_with_stored_rows_is_reported_at_the_record,
            compaction_never_deletes_audit_records,
            pruning_moves_the_anchor_and_the_rest_still_verifies,
            writers_on_two_processes_keep_one_chain,
            listing_filters_and_pages,
        );
    };
    (@tests $db:expr; $($name:ident,)*) => {
        $(
            #[tokio::test]
            async fn $name() {
                $crate::store::audit_suite::$name($db).await;
            }
        )*
    };
}
pub(crate) use audit_suite;

async fn all(store: &dyn Store) -> Vec<AuditRecord> {
    store.list_audit(&AuditQuery { limit: 10_000, ..AuditQuery::default() }).await.unwrap()
}

/// Runs raw SQL on the database from outside the store, as someone with access to it would.
async fn tamper(db: &TestDb, sql: &str) {
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    match db {
        TestDb::Sqlite(_) => {
            let mut conn = sqlx::sqlite::SqliteConnection::connect(&db.url()).await.unwrap();
            sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
            conn.close().await.unwrap();
        }
        TestDb::Postgres(pg) => {
            let mut conn = pg.connect().await;
            sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
            conn.close().await.unwrap();
        }
    }
}

async fn broken(store: &dyn Store) -> Option<ChainBreak> {
    store.verify_audit().await.unwrap().broken
}

pub(super) async fn each_mutation_leaves_one_record_with_its_revision_and_no_secret(db: TestDb) {
    let store = db.open().await;
    let store = store.as_ref();
    let mut vars =
        ProductVars { master_key: Some("master-key-value-0123456789abcdef".into()), ..ProductVars::default() };
    vars.credentials.anthropic = Some("sk-ant-bootstrap-secret".into());
    let mut expected: Vec<(u64, &str, String)> = Vec::new();
    let mut secrets: Vec<String> = vec![
        "master-key-value-0123456789abcdef".into(),
        KeyHash::of("master-key-value-0123456789abcdef").to_hex(),
        "sk-ant-bootstrap-secret".into(),
        Credential::new("sk-ant-bootstrap-secret").fingerprint(),
    ];

    let bootstrap = Bootstrap::new(vars);
    let revision = store.bootstrap(&bootstrap, &Actor::bootstrap(Arc::from("boot-host:1:x"))).await.unwrap().unwrap();
    expected.push((revision, "bootstrap", "environment".into()));

    let (key, secret) = new_key("ci");
    secrets.extend([secret.expose().to_owned(), secret.hash().to_hex()]);
    let (key, revision) = store.create_key(key, &actor()).await.unwrap();
    expected.push((revision, "key.create", key.id.to_string()));
    let patch = KeyPatch { description: Some("nightly".into()), ..KeyPatch::default() };
    let (_, revision) = store.update_key(key.id, patch, &actor()).await.unwrap();
    expected.push((revision, "key.update", key.id.to_string()));
    let (_, revision) = store.revoke_key(key.id, &actor()).await.unwrap();
    expected.push((revision, "key.revoke", key.id.to_string()));
    let revision = store.delete_key(key.id, &actor()).await.unwrap();
    expected.push((revision, "key.delete", key.id.to_string()));

    for credential in ["sk-openai-first-secret", "sk-openai-second-secret"] {
        secrets.extend([credential.to_owned(), Credential::new(credential).fingerprint()]);
        let (_, revision) =
            store.upsert_provider(ProviderKind::OpenAi, credential_patch(credential), &actor()).await.unwrap();
        expected.push((revision, "provider.upsert", "openai".into()));
    }
    let clear = ProviderPatch { credential: Some(None), ..ProviderPatch::default() };
    let (_, revision) = store.upsert_provider(ProviderKind::OpenAi, clear, &actor()).await.unwrap();
    expected.push((revision, "provider.upsert", "openai".into()));
    let revision = store.delete_provider(ProviderKind::Zai, &actor()).await.unwrap();
    expected.push((revision, "provider.delete", "zai".into()));
    let patch = SettingsPatch { passthrough_enabled: Some(false), ..SettingsPatch::default() };
    let (_, revision) = store.update_settings(patch, &actor()).await.unwrap();
    expected.push((revision, "settings.update", "settings".into()));

    // Failed mutations commit nothing, so they leave no record.
    assert!(matches!(store.revoke_key(key.id, &actor()).await, Err(StoreError::KeyNotFound(_))));
    assert!(matches!(store.delete_provider(ProviderKind::Zai, &actor()).await, Err(StoreError::ProviderNotFound(_))));

    let records = all(store).await;
    let got: Vec<(u64, &str, String)> =
        records.iter().map(|r| (r.revision, r.action.as_str(), r.target.clone())).collect();
    assert_eq!(got, expected);
    assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), (1..=expected.len() as u64).collect::<Vec<_>>());
    assert_eq!(store.head_revision().await.unwrap(), expected.last().unwrap().0);

    let boot = &records[0];
    assert_eq!((boot.actor.as_str(), boot.peer.as_str(), boot.replica.as_str()), ("bootstrap", "", "boot-host:1:x"));
    let boot_changes: serde_json::Value = serde_json::from_str(&boot.changes).unwrap();
    assert_eq!(boot_changes["master_key"], "set");
    assert_eq!(boot_changes["provider.anthropic.credential"], "set");
    let api = &records[1];
    assert_eq!((api.actor.as_str(), api.peer.as_str()), ("master-key", "127.0.0.1:1"));
    let credentials: Vec<serde_json::Value> = records[5..8]
        .iter()
        .map(|r| serde_json::from_str::<serde_json::Value>(&r.changes).unwrap()["credential"].clone())
        .collect();
    assert_eq!(credentials, ["set", "replaced", "cleared"]);
    assert_eq!(records[9].changes, r#"{"passthrough_enabled":false}"#);

    for record in &records {
        let text = format!("{record:?}");
        for secret in &secrets {
            assert!(!text.contains(secret.as_str()), "record {} holds a secret: {text}", record.seq);
        }
    }
    let verification = store.verify_audit().await.unwrap();
    assert_eq!(verification.broken, None);
    assert_eq!(verification.checked, expected.len() as u64);
    assert_eq!(verification.ends.last_hash, records.last().unwrap().hash);
}

pub(super) async fn tampering_with_stored_rows_is_reported_at_the_record(db: TestDb) {
    let store = db.open().await;
    for i in 0..5 {
        store.create_key(new_key(&format!("k{i}")).0, &actor()).await.unwrap();
    }
    assert_eq!(broken(store.as_ref()).await, None);
    let original = all(store.as_ref()).await;

    // An edited field.
    tamper(&db, "UPDATE audit_log SET actor = 'someone-else' WHERE seq = 2").await;
    assert_eq!(broken(store.as_ref()).await, Some(ChainBreak::Altered { seq: 2, revision: 2 }));
    tamper(&db, "UPDATE audit_log SET actor = 'master-key' WHERE seq = 2").await;
    assert_eq!(broken(store.as_ref()).await, None, "restored");

    // Two rows swapped (their numbers exchanged).
    tamper(&db, "UPDATE audit_log SET seq = -1 WHERE seq = 3").await;
    tamper(&db, "UPDATE audit_log SET seq = 3 WHERE seq = 4").await;
    tamper(&db, "UPDATE audit_log SET seq = 4 WHERE seq = -1").await;
    assert_eq!(broken(store.as_ref()).await.map(|b| b.seq()), Some(3));
    tamper(&db, "UPDATE audit_log SET seq = -1 WHERE seq = 3").await;
    tamper(&db, "UPDATE audit_log SET seq = 3 WHERE seq = 4").await;
    tamper(&db, "UPDATE audit_log SET seq = 4 WHERE seq = -1").await;
    assert_eq!(all(store.as_ref()).await, original);

    // A deleted row in the middle, then the newest.
    tamper(&db, "DELETE FROM audit_log WHERE seq = 3").await;
    assert_eq!(broken(store.as_ref()).await, Some(ChainBreak::Missing { expected: 3, found: 4 }));
    tamper(&db, "DELETE FROM audit_log WHERE seq >= 3").await;
    assert_eq!(broken(store.as_ref()).await, Some(ChainBreak::Truncated { expected: 5, found: 2 }));
    // Even with the chain's head rewritten to match, the revisions without a record show.
    let hash2 = hex::encode(original[1].hash);
    let set_head = match db {
        TestDb::Sqlite(_) => format!("UPDATE audit_chain SET last_seq = 2, last_hash = x'{hash2}'"),
        TestDb::Postgres(_) => format!("UPDATE audit_chain SET last_seq = 2, last_hash = '\\x{hash2}'::bytea"),
    };
    tamper(&db, &set_head).await;
    assert_eq!(broken(store.as_ref()).await, Some(ChainBreak::Unrecorded { seq: 3, head: 5, recorded: 2 }));
}

pub(super) async fn compaction_never_deletes_audit_records(db: TestDb) {
    let store = db.open().await;
    for i in 0..6 {
        store.create_key(new_key(&format!("k{i}")).0, &actor()).await.unwrap();
    }
    assert_eq!(store.compact_changes(0).await.unwrap(), 6);
    assert_eq!(all(store.as_ref()).await.len(), 6);
    assert_eq!(store.verify_audit().await.unwrap().checked, 6);
    assert_eq!(broken(store.as_ref()).await, None);
}

pub(super) async fn pruning_moves_the_anchor_and_the_rest_still_verifies(db: TestDb) {
    let store = db.open().await;
    for i in 0..4 {
        store.create_key(new_key(&format!("k{i}")).0, &actor()).await.unwrap();
    }
    assert_eq!(store.prune_audit(SystemTime::UNIX_EPOCH).await.unwrap(), 0, "nothing is that old");
    let before = all(store.as_ref()).await;
    assert_eq!(store.prune_audit(SystemTime::now() + Duration::from_secs(3600)).await.unwrap(), 4);
    let verification = store.verify_audit().await.unwrap();
    assert_eq!((verification.broken, verification.checked), (None, 0));
    assert_eq!(verification.ends.first_seq, 5);
    assert_eq!(verification.ends.anchor, before[3].hash);

    let (_, revision) = store.create_key(new_key("after").0, &actor()).await.unwrap();
    let records = all(store.as_ref()).await;
    assert_eq!(records.iter().map(|r| (r.seq, r.revision)).collect::<Vec<_>>(), [(5, revision)]);
    assert_eq!(records[0].prev_hash, before[3].hash);
    assert_eq!(store.verify_audit().await.unwrap().broken, None);
}

pub(super) async fn writers_on_two_processes_keep_one_chain(db: TestDb) {
    let stores = [db.open().await, db.open().await];
    let mut tasks = Vec::new();
    for task in 0..4 {
        let store = Arc::clone(&stores[task % 2]);
        tasks.push(tokio::spawn(async move {
            for i in 0..8 {
                store.create_key(new_key(&format!("key-{task}-{i}")).0, &actor()).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let verification = stores[1].verify_audit().await.unwrap();
    assert_eq!((verification.broken, verification.checked), (None, 32));
    let revisions: Vec<u64> = all(stores[0].as_ref()).await.iter().map(|r| r.revision).collect();
    assert_eq!(revisions, (1..=32).collect::<Vec<_>>());
}

pub(super) async fn listing_filters_and_pages(db: TestDb) {
    let store = db.open().await;
    let (a, _) = store.create_key(new_key("a").0, &actor()).await.unwrap();
    let (b, _) = store.create_key(new_key("b").0, &actor()).await.unwrap();
    store.revoke_key(a.id, &actor()).await.unwrap();
    store
        .upsert_provider(ProviderKind::Vllm, ProviderPatch { enabled: Some(true), ..Default::default() }, &actor())
        .await
        .unwrap();
    let list = |query: AuditQuery| {
        let store = Arc::clone(&store);
        async move {
            let query = AuditQuery { limit: if query.limit == 0 { 100 } else { query.limit }, ..query };
            store.list_audit(&query).await.unwrap().iter().map(|r| r.seq).collect::<Vec<_>>()
        }
    };
    assert_eq!(list(AuditQuery { target: Some(a.id.to_string()), ..Default::default() }).await, [1, 3]);
    assert_eq!(list(AuditQuery { target: Some(b.id.to_string()), ..Default::default() }).await, [2]);
    assert_eq!(list(AuditQuery { action: Some("key".into()), ..Default::default() }).await, [1, 2, 3]);
    assert_eq!(list(AuditQuery { action: Some("key.revoke".into()), ..Default::default() }).await, [3]);
    assert_eq!(list(AuditQuery { action: Some("provider".into()), ..Default::default() }).await, [4]);
    assert_eq!(list(AuditQuery { after_seq: 1, limit: 2, ..Default::default() }).await, [2, 3]);
    let future = SystemTime::now() + Duration::from_secs(3600);
    assert!(list(AuditQuery { since: Some(future), ..Default::default() }).await.is_empty());
    assert_eq!(list(AuditQuery { until: Some(future), ..Default::default() }).await, [1, 2, 3, 4]);
    assert!(list(AuditQuery { until: Some(SystemTime::UNIX_EPOCH), ..Default::default() }).await.is_empty());
}
