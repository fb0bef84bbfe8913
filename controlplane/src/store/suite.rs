//! The store's contract, tested the same way on every backend: `sqlite_tests.rs` and
//! `postgres_tests.rs` run each of these (through [`store_suite!`]) on a fresh database of
//! their own. Opening the same database twice stands for two control-plane processes.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aurora_core::{KeyHash, KeySecret, ProductVars, ProviderKind, ProviderSet};
use aurora_proto::v1::{ConfigSettings, Delta, KeyConfig, ProviderConfig, change};
use uuid::Uuid;

pub(super) use super::credentials_suite::credential_sets_are_stored_streamed_and_replayed;
pub(super) use super::key_rotation_suite::{
    a_rotation_keeps_the_key_and_its_previous_secret_for_the_grace, rotations_replace_clear_and_refuse_precisely,
    rotations_replay_and_an_ended_grace_leaves_the_stream,
};
pub(super) use super::limits_suite::{default_limits_and_fallback_persist, key_limits_persist_stream_and_patch};
use super::test_db::TestDb;
use super::{Credential, KeyPatch, NewKey, ProviderPatch, SettingsPatch, Snapshot, Store, StoreError};
use crate::bootstrap::Bootstrap;

/// One `#[tokio::test]` per contract test, on the databases `$db` (an async expression
/// yielding a [`TestDb`]) makes.
macro_rules! store_suite {
    ($db:expr) => {
        store_suite!(@tests $db;
            restart_keeps_everything,
            revisions_are_gap_free_under_concurrent_writers,
            replaying_the_change_log_over_empty_state_equals_the_snapshot,
            compaction_keeps_the_newest_revisions_replayable,
            bootstrap_with_the_same_environment_writes_nothing,
            failed_mutations_are_precise_and_leave_no_gap,
            list_keys_pages_in_creation_order,
            watchers_learn_each_commit,
            key_endpoint_allow_lists_persist,
            credential_sets_are_stored_streamed_and_replayed,
            a_rotation_keeps_the_key_and_its_previous_secret_for_the_grace,
            rotations_replace_clear_and_refuse_precisely,
            rotations_replay_and_an_ended_grace_leaves_the_stream,
            key_limits_persist_stream_and_patch,
            default_limits_and_fallback_persist,
        );
    };
    (@tests $db:expr; $($name:ident,)*) => {
        $(
            #[tokio::test]
            async fn $name() {
                $crate::store::suite::$name($db).await;
            }
        )*
    };
}
pub(crate) use store_suite;

pub(crate) fn new_key(name: &str) -> (NewKey, KeySecret) {
    let secret = KeySecret::generate();
    let key = NewKey {
        name: name.to_owned(),
        description: String::new(),
        hash: secret.hash(),
        redacted: secret.redacted(),
        enabled: true,
        expires_at: None,
        allowed_providers: ProviderSet::empty(),
        allowed_endpoints: Vec::new(),
        limits: None,
    };
    (key, secret)
}

/// The actor of every mutation in these tests.
pub(crate) fn actor() -> super::Actor {
    super::Actor::for_tests()
}

pub(crate) fn credential_patch(secret: &str) -> ProviderPatch {
    ProviderPatch { credential: Some(Some(Credential::new(secret))), ..ProviderPatch::default() }
}

pub(super) async fn restart_keeps_everything(db: TestDb) {
    let store = db.open().await;
    store.bootstrap(&Bootstrap::new(ProductVars::default()), &actor()).await.unwrap();
    let (key, _) = new_key("ci");
    let (key, _) = store.create_key(key, &actor()).await.unwrap();
    store.upsert_provider(ProviderKind::Zai, credential_patch("zai-secret"), &actor()).await.unwrap();
    let network = ProviderPatch {
        default_headers: Some(
            aurora_core::DefaultHeaders::from_pairs([("HTTP-Referer", "https://example.com"), ("X-Title", "a: b")])
                .unwrap(),
        ),
        client_identity: Some(Some(super::model::ClientIdentity::new("CERT PEM", "KEY PEM"))),
        ca_pem: Some(Some("CA PEM".into())),
        ..Default::default()
    };
    store.upsert_provider(ProviderKind::OpenRouter, network, &actor()).await.unwrap();
    store
        .update_settings(SettingsPatch { v1_alias_enabled: Some(false), ..Default::default() }, &actor())
        .await
        .unwrap();
    let before = store.load_snapshot().await.unwrap();
    let openrouter = before.providers.iter().find(|p| p.name == "openrouter").unwrap();
    assert_eq!(openrouter.default_headers.len(), 2);
    assert_eq!((openrouter.client_key_pem.as_str(), openrouter.ca_pem.as_str()), ("KEY PEM", "CA PEM"));
    let providers = store.list_providers().await.unwrap();
    store.close().await;

    let store = db.open().await;
    assert_eq!(store.load_snapshot().await.unwrap(), before);
    assert_eq!(store.get_key(key.id).await.unwrap(), key);
    assert_eq!(store.list_providers().await.unwrap(), providers);
    assert_eq!(*store.watch_head().borrow(), before.revision);
    assert!(!store.get_settings().await.unwrap().settings.v1_alias_enabled);
}

pub(super) async fn revisions_are_gap_free_under_concurrent_writers(db: TestDb) {
    // Two pools on one file behave like two control-plane processes.
    let stores = [db.open().await, db.open().await];
    let mut tasks = Vec::new();
    for task in 0..6 {
        let store = Arc::clone(&stores[task % 2]);
        tasks.push(tokio::spawn(async move {
            let mut committed = 0u64;
            for i in 0..10 {
                let (key, _) = new_key(&format!("key-{task}-{i}"));
                let (record, _) = store.create_key(key, &actor()).await.unwrap();
                // A failing mutation in between: its revision must roll back, not leave a hole.
                let (duplicate, _) = new_key(&format!("key-{task}-{i}"));
                assert!(matches!(store.create_key(duplicate, &actor()).await, Err(StoreError::KeyNameTaken(_))));
                store
                    .update_key(record.id, KeyPatch { enabled: Some(false), ..KeyPatch::default() }, &actor())
                    .await
                    .unwrap();
                committed += 2;
            }
            committed
        }));
    }
    let mut committed = 0;
    for task in tasks {
        committed += task.await.unwrap();
    }
    let head = stores[0].head_revision().await.unwrap();
    assert_eq!(head, committed);
    let revisions: Vec<u64> =
        stores[1].changes_since(0, 1000).await.unwrap().iter().map(|delta| delta.revision).collect();
    assert_eq!(revisions, (1..=head).collect::<Vec<_>>());
}

pub(super) async fn replaying_the_change_log_over_empty_state_equals_the_snapshot(db: TestDb) {
    let store = db.open().await;
    mutate_everything(store.as_ref()).await;

    let mut replayed = Replayed::default();
    loop {
        // Small pages, as a stream catching up would read them.
        let deltas = store.changes_since(replayed.revision, 3).await.unwrap();
        if deltas.is_empty() {
            break;
        }
        deltas.iter().for_each(|delta| replayed.apply(delta));
    }
    let snapshot = store.load_snapshot().await.unwrap();
    assert_eq!(replayed, Replayed::of_snapshot(&snapshot));
    assert_eq!(snapshot.keys.len(), 4);
    assert!(snapshot.keys.iter().any(|k| !k.enabled), "the revoked key is sent disabled");
    assert_eq!(snapshot.master_key_hash, Some(KeyHash::of("mk-2")));
}

pub(super) async fn compaction_keeps_the_newest_revisions_replayable(db: TestDb) {
    let store = db.open().await;
    mutate_everything(store.as_ref()).await;
    let head = store.head_revision().await.unwrap();
    let before = store.changes_since(head - 3, 100).await.unwrap();

    assert_eq!(store.compact_changes(3).await.unwrap(), head - 3);
    assert_eq!(store.oldest_retained_revision().await.unwrap(), head - 2);
    assert_eq!(store.changes_since(head - 3, 100).await.unwrap(), before);
    assert!(store.changes_since(0, 100).await.unwrap().first().map(|d| d.revision) == Some(head - 2));
    assert_eq!(store.compact_changes(3).await.unwrap(), 0, "compaction is idempotent");
    assert_eq!(store.compact_changes(0).await.unwrap(), 3);
    assert_eq!(store.oldest_retained_revision().await.unwrap(), head + 1);
}

pub(super) async fn bootstrap_with_the_same_environment_writes_nothing(db: TestDb) {
    let vars =
        ProductVars { master_key: Some("mk".into()), enable_passthrough_routes: Some(false), ..ProductVars::default() };
    let store = db.open().await;
    assert_eq!(store.bootstrap(&Bootstrap::new(vars.clone()), &actor()).await.unwrap(), Some(1));
    let first = store.changes_since(0, 10).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].changes.len(), 7, "settings, five providers and the master-key hash");
    store.close().await;

    let store = db.open().await;
    assert_eq!(store.bootstrap(&Bootstrap::new(vars), &actor()).await.unwrap(), None);
    assert_eq!(store.head_revision().await.unwrap(), 1);
    assert_eq!(store.list_providers().await.unwrap().len(), 5);
    // The API's change survives a restart that does not set the variable...
    store
        .update_settings(SettingsPatch { v1_alias_enabled: Some(false), ..Default::default() }, &actor())
        .await
        .unwrap();
    assert_eq!(
        store.bootstrap(&Bootstrap::new(ProductVars::default()), &actor()).await.unwrap(),
        Some(3),
        "only the master key"
    );
    assert!(!store.get_settings().await.unwrap().settings.v1_alias_enabled);
    // ...and a set variable overrides it.
    let vars = ProductVars { allow_passthrough_v1_alias: Some(true), ..ProductVars::default() };
    assert_eq!(store.bootstrap(&Bootstrap::new(vars), &actor()).await.unwrap(), Some(4));
    assert!(store.get_settings().await.unwrap().settings.v1_alias_enabled);
}

pub(super) async fn failed_mutations_are_precise_and_leave_no_gap(db: TestDb) {
    let store = db.open().await;
    let (key, _) = new_key("a");
    let (a, r1) = store.create_key(key, &actor()).await.unwrap();
    let (key, _) = new_key("b");
    let (b, _) = store.create_key(key, &actor()).await.unwrap();

    let missing = Uuid::now_v7();
    assert!(matches!(store.get_key(missing).await, Err(StoreError::KeyNotFound(id)) if id == missing));
    assert!(matches!(store.delete_key(missing, &actor()).await, Err(StoreError::KeyNotFound(_))));
    assert!(matches!(store.delete_provider(ProviderKind::Zai, &actor()).await, Err(StoreError::ProviderNotFound(_))));
    let rename = KeyPatch { name: Some("b".into()), ..KeyPatch::default() };
    assert!(matches!(store.update_key(a.id, rename, &actor()).await, Err(StoreError::KeyNameTaken(_))));
    let keep_name = KeyPatch { name: Some("b".into()), ..KeyPatch::default() };
    store.update_key(b.id, keep_name, &actor()).await.unwrap();
    store.revoke_key(a.id, &actor()).await.unwrap();
    assert!(matches!(store.revoke_key(a.id, &actor()).await, Err(StoreError::KeyAlreadyRevoked(_))));
    let enable = KeyPatch { enabled: Some(true), ..KeyPatch::default() };
    assert!(matches!(store.update_key(a.id, enable, &actor()).await, Err(StoreError::KeyRevoked(_))));

    let head = store.head_revision().await.unwrap();
    assert_eq!(head, r1 + 3, "create b, rename b, revoke a");
    let revisions: Vec<u64> = store.changes_since(0, 100).await.unwrap().iter().map(|d| d.revision).collect();
    assert_eq!(revisions, (1..=head).collect::<Vec<_>>());
}

pub(super) async fn list_keys_pages_in_creation_order(db: TestDb) {
    let store = db.open().await;
    let mut created = Vec::new();
    for i in 0..7 {
        let (key, _) = new_key(&format!("k{i}"));
        created.push(store.create_key(key, &actor()).await.unwrap().0.id);
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.list_keys(after, 3).await.unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|k| k.id);
        seen.extend(page.into_iter().map(|k| k.id));
    }
    assert_eq!(seen, created);
}

pub(super) async fn watchers_learn_each_commit(db: TestDb) {
    let store = db.open().await;
    let mut head = store.watch_head();
    assert_eq!(*head.borrow_and_update(), 0);
    let (key, _) = new_key("w");
    let (_, revision) = store.create_key(key, &actor()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), head.changed()).await.unwrap().unwrap();
    assert_eq!(*head.borrow(), revision);
    // A failed mutation notifies nobody.
    assert!(store.delete_key(Uuid::now_v7(), &actor()).await.is_err());
    assert!(!head.has_changed().unwrap());
}

/// The state a data plane builds by applying deltas, keyed like the snapshot.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Replayed {
    revision: u64,
    settings: Option<ConfigSettings>,
    providers: BTreeMap<String, ProviderConfig>,
    keys: BTreeMap<Vec<u8>, KeyConfig>,
    master_key_hash: Vec<u8>,
}

impl Replayed {
    pub(super) fn apply(&mut self, delta: &Delta) {
        assert_eq!(delta.revision, self.revision + 1, "deltas arrive gap-free");
        self.revision = delta.revision;
        for change in &delta.changes {
            match change.change.clone().unwrap() {
                change::Change::Settings(settings) => self.settings = Some(settings),
                change::Change::ProviderUpsert(p) => {
                    self.providers.insert(p.name.clone(), p);
                }
                change::Change::ProviderDelete(name) => {
                    self.providers.remove(&name);
                }
                change::Change::KeyUpsert(k) => {
                    self.keys.insert(k.hash.clone(), k);
                }
                change::Change::KeyDelete(hash) => {
                    self.keys.remove(&hash);
                }
                change::Change::MasterKeyHash(hash) => self.master_key_hash = hash,
            }
        }
    }

    pub(super) fn of_snapshot(snapshot: &Snapshot) -> Self {
        Replayed {
            revision: snapshot.revision,
            settings: Some(snapshot.settings),
            providers: snapshot.providers.iter().map(|p| (p.name.clone(), p.clone())).collect(),
            keys: snapshot.keys.iter().map(|k| (k.hash.clone(), k.clone())).collect(),
            master_key_hash: snapshot.master_key_hash.map(|h| h.as_bytes().to_vec()).unwrap_or_default(),
        }
    }
}

/// Exercises every kind of mutation.
async fn mutate_everything(store: &dyn Store) {
    let vars = ProductVars { master_key: Some("mk-1".into()), ..ProductVars::default() };
    store.bootstrap(&Bootstrap::new(vars), &actor()).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..5 {
        let (mut key, _) = new_key(&format!("k{i}"));
        key.expires_at = Some(SystemTime::now() + Duration::from_secs(3600));
        key.allowed_providers = ProviderSet::parse_list("anthropic,zai").unwrap();
        key.allowed_endpoints = vec!["anthropic POST /messages".parse().unwrap(), "zai * /chat/**".parse().unwrap()];
        ids.push(store.create_key(key, &actor()).await.unwrap().0.id);
    }
    store.update_key(ids[0], KeyPatch { name: Some("renamed".into()), ..KeyPatch::default() }, &actor()).await.unwrap();
    store.update_key(ids[1], KeyPatch { expires_at: Some(None), ..KeyPatch::default() }, &actor()).await.unwrap();
    store.revoke_key(ids[2], &actor()).await.unwrap();
    store.delete_key(ids[3], &actor()).await.unwrap();
    store.upsert_provider(ProviderKind::Vllm, credential_patch("vllm-token"), &actor()).await.unwrap();
    store.delete_provider(ProviderKind::OpenRouter, &actor()).await.unwrap();
    store
        .update_settings(SettingsPatch { passthrough_enabled: Some(false), ..Default::default() }, &actor())
        .await
        .unwrap();
    // A restart with another master key and an env override records one more revision.
    let vars = ProductVars {
        master_key: Some("mk-2".into()),
        enabled_passthrough_providers: Some(ProviderSet::parse_list("openai").unwrap()),
        ..ProductVars::default()
    };
    store.bootstrap(&Bootstrap::new(vars), &actor()).await.unwrap();
}

/// Issue 13: a key's endpoint allow-list survives a reopen, reaches data planes in its
/// canonical text, and an update replaces or clears it.
pub(super) async fn key_endpoint_allow_lists_persist(db: TestDb) {
    let store = db.open().await;
    let (mut key, _) = new_key("scoped");
    key.allowed_endpoints =
        vec!["anthropic POST /v1/messages".parse().unwrap(), "openai GET /models/*".parse().unwrap()];
    let (created, _) = store.create_key(key, &actor()).await.unwrap();
    let texts = |rules: &[aurora_core::EndpointRule]| rules.iter().map(ToString::to_string).collect::<Vec<_>>();
    assert_eq!(texts(&created.allowed_endpoints), ["anthropic POST /messages", "openai GET /models/*"]);
    let reopened = db.open().await;
    assert_eq!(reopened.get_key(created.id).await.unwrap().allowed_endpoints, created.allowed_endpoints);
    assert_eq!(created.to_config().allowed_endpoints, ["anthropic POST /messages", "openai GET /models/*"]);

    let replace = KeyPatch { allowed_endpoints: Some(vec!["vllm GET /**".parse().unwrap()]), ..KeyPatch::default() };
    let (updated, _) = reopened.update_key(created.id, replace, &actor()).await.unwrap();
    assert_eq!(texts(&updated.allowed_endpoints), ["vllm GET /**"]);
    let untouched = KeyPatch { name: Some("renamed".into()), ..KeyPatch::default() };
    let (renamed, _) = reopened.update_key(created.id, untouched, &actor()).await.unwrap();
    assert_eq!(renamed.allowed_endpoints, updated.allowed_endpoints);
    let clear = KeyPatch { allowed_endpoints: Some(Vec::new()), ..KeyPatch::default() };
    let (cleared, _) = reopened.update_key(created.id, clear, &actor()).await.unwrap();
    assert!(cleared.allowed_endpoints.is_empty());
    assert!(store.get_key(created.id).await.unwrap().allowed_endpoints.is_empty());
}
