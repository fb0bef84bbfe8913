//! Contract tests of key rotation, run on every backend through `store_suite!`.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime};

use aurora_core::{KeyHash, KeySecret};
use aurora_proto::v1::{Delta, change};

use super::audit::AuditQuery;
use super::suite::{Replayed, actor, new_key};
use super::test_db::TestDb;
use super::{KeyPatch, NewSecret, Store, StoreError};

fn secret() -> (NewSecret, KeySecret) {
    let secret = KeySecret::generate();
    (NewSecret { hash: secret.hash(), redacted: secret.redacted() }, secret)
}

/// The key changes of one revision, as (delete | upsert, hash, previous hash) triples.
fn key_changes(delta: &Delta) -> Vec<(&'static str, Vec<u8>, Vec<u8>)> {
    delta
        .changes
        .iter()
        .filter_map(|c| match c.change.as_ref()? {
            change::Change::KeyDelete(hash) => Some(("delete", hash.clone(), Vec::new())),
            change::Change::KeyUpsert(key) => Some(("upsert", key.hash.clone(), key.previous_hash.clone())),
            _ => None,
        })
        .collect()
}

async fn delta_of(store: &dyn Store, revision: u64) -> Delta {
    store.changes_since(revision - 1, 1).await.unwrap().remove(0)
}

fn bytes(hash: KeyHash) -> Vec<u8> {
    hash.as_bytes().to_vec()
}

/// Rotation keeps the key (id, settings) and moves the old secret to `previous` with its
/// grace; the revision deletes the old hash and upserts the key carrying both; a reopen and a
/// snapshot keep it; the audit record names no secret.
pub(super) async fn a_rotation_keeps_the_key_and_its_previous_secret_for_the_grace(db: TestDb) {
    let store = db.open().await;
    let (mut key, first) = new_key("rotating");
    key.allowed_endpoints = vec!["anthropic POST /messages".parse().unwrap()];
    let (created, _) = store.create_key(key, &actor()).await.unwrap();
    let (new, second) = secret();
    let before = SystemTime::now();
    let (rotated, revision) = store.rotate_key(created.id, new, 3600, &actor()).await.unwrap();

    assert_eq!(
        (rotated.id, &rotated.name, &rotated.allowed_endpoints),
        (created.id, &created.name, &created.allowed_endpoints)
    );
    assert_eq!((rotated.hash, rotated.redacted.as_str()), (second.hash(), second.redacted().as_str()));
    let previous = rotated.previous.clone().unwrap();
    assert_eq!((previous.hash, previous.redacted.as_str()), (first.hash(), created.redacted.as_str()));
    assert!(previous.expires_at >= before + Duration::from_secs(3600));
    assert!(previous.expires_at <= SystemTime::now() + Duration::from_secs(3601));

    let reopened = db.open().await;
    assert_eq!(reopened.get_key(created.id).await.unwrap(), rotated);
    let delta = delta_of(reopened.as_ref(), revision).await;
    assert_eq!(
        key_changes(&delta),
        [("delete", bytes(first.hash()), Vec::new()), ("upsert", bytes(second.hash()), bytes(first.hash()))]
    );
    let Some(change::Change::KeyUpsert(config)) = &delta.changes[1].change else { panic!("not an upsert") };
    assert_eq!(config.previous_expires_at, crate::time::to_unix_secs(previous.expires_at));
    assert_eq!(config.allowed_endpoints, ["anthropic POST /messages"]);
    let snapshot = reopened.load_snapshot().await.unwrap();
    let streamed = snapshot.keys.iter().find(|k| k.id == created.id.as_bytes()).unwrap();
    assert_eq!((&streamed.hash, &streamed.previous_hash), (&bytes(second.hash()), &bytes(first.hash())));

    // Other updates keep the previous secret and carry it along.
    let patch = KeyPatch { description: Some("still rotating".into()), ..KeyPatch::default() };
    let (updated, revision) = reopened.update_key(created.id, patch, &actor()).await.unwrap();
    assert_eq!(updated.previous, rotated.previous);
    let delta = delta_of(reopened.as_ref(), revision).await;
    assert_eq!(key_changes(&delta), [("upsert", bytes(second.hash()), bytes(first.hash()))]);

    let query = AuditQuery { action: Some("key.rotate".into()), limit: 10, ..AuditQuery::default() };
    let records = reopened.list_audit(&query).await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].target, created.id.to_string());
    for secret in [&first, &second] {
        for shown in
            [secret.expose().to_owned(), secret.hash().to_hex(), secret.hash().fingerprint(), secret.redacted()]
        {
            assert!(!records[0].changes.contains(&shown), "{}", records[0].changes);
        }
    }
    assert!(records[0].changes.contains(r#""secret":"replaced""#), "{}", records[0].changes);
}

/// A second rotation during the grace replaces the previous secret; a rotation with no grace
/// clears it; a rotated key's delete removes it; a revoked key cannot be rotated, a disabled
/// one can; an unknown key is not found. Failures leave no gap in the revisions.
pub(super) async fn rotations_replace_clear_and_refuse_precisely(db: TestDb) {
    let store = db.open().await;
    let (key, first) = new_key("twice");
    let (created, _) = store.create_key(key, &actor()).await.unwrap();
    let (new, second) = secret();
    store.rotate_key(created.id, new, 600, &actor()).await.unwrap();
    let (new, third) = secret();
    let (again, revision) = store.rotate_key(created.id, new, 60, &actor()).await.unwrap();
    assert_eq!(again.previous.as_ref().unwrap().hash, second.hash(), "the older previous secret is gone");
    let delta = delta_of(store.as_ref(), revision).await;
    assert_eq!(
        key_changes(&delta),
        [("delete", bytes(second.hash()), Vec::new()), ("upsert", bytes(third.hash()), bytes(second.hash()))]
    );
    assert!(!delta.changes.iter().any(|c| format!("{c:?}").contains(&format!("{:?}", bytes(first.hash())))));

    let (new, fourth) = secret();
    let (at_once, revision) = store.rotate_key(created.id, new, 0, &actor()).await.unwrap();
    assert_eq!(at_once.previous, None, "no grace: the replaced secret stops at once");
    assert_eq!(store.get_key(created.id).await.unwrap().previous, None);
    let delta = delta_of(store.as_ref(), revision).await;
    assert_eq!(
        key_changes(&delta),
        [("delete", bytes(third.hash()), Vec::new()), ("upsert", bytes(fourth.hash()), Vec::new())]
    );

    // Deleting a rotated key: the delete names its current hash, which data planes use to
    // drop the previous one with it.
    let (new, _) = secret();
    let (rotated, _) = store.rotate_key(created.id, new, 60, &actor()).await.unwrap();
    let revision = store.delete_key(created.id, &actor()).await.unwrap();
    let delta = delta_of(store.as_ref(), revision).await;
    assert_eq!(key_changes(&delta), [("delete", bytes(rotated.hash), Vec::new())]);
    let (new, _) = secret();
    assert!(matches!(store.rotate_key(created.id, new, 0, &actor()).await, Err(StoreError::KeyNotFound(_))));

    let (key, _) = new_key("disabled");
    let (disabled, _) = store.create_key(key, &actor()).await.unwrap();
    let off = KeyPatch { enabled: Some(false), ..KeyPatch::default() };
    store.update_key(disabled.id, off, &actor()).await.unwrap();
    let (new, _) = secret();
    let (rotated, _) = store.rotate_key(disabled.id, new, 60, &actor()).await.unwrap();
    assert!(!rotated.enabled, "rotation leaves the status alone");
    store.revoke_key(disabled.id, &actor()).await.unwrap();
    let head = store.head_revision().await.unwrap();
    let (new, _) = secret();
    assert!(matches!(store.rotate_key(disabled.id, new, 60, &actor()).await, Err(StoreError::RotateRevoked(_))));
    assert_eq!(store.head_revision().await.unwrap(), head, "a refused rotation leaves no gap");
    let revoked = store.get_key(disabled.id).await.unwrap();
    assert!(revoked.previous.is_some(), "revocation keeps the record; the key is sent disabled");
    let snapshot = store.load_snapshot().await.unwrap();
    let streamed = snapshot.keys.iter().find(|k| k.id == disabled.id.as_bytes()).unwrap();
    assert!(!streamed.enabled && !streamed.previous_hash.is_empty(), "both secrets now find a disabled key");
}

/// Replaying the log of rotations over empty state equals the snapshot; a previous secret
/// whose grace has ended is left out of snapshots and of the key's next upsert.
pub(super) async fn rotations_replay_and_an_ended_grace_leaves_the_stream(db: TestDb) {
    let store = db.open().await;
    store.bootstrap(&crate::bootstrap::Bootstrap::new(aurora_core::ProductVars::default()), &actor()).await.unwrap();
    let (key, _) = new_key("replayed");
    let (created, _) = store.create_key(key, &actor()).await.unwrap();
    for grace in [3600, 60, 0, 3600] {
        let (new, _) = secret();
        store.rotate_key(created.id, new, grace, &actor()).await.unwrap();
    }
    let mut replayed = Replayed::default();
    for delta in store.changes_since(0, 1000).await.unwrap() {
        replayed.apply(&delta);
    }
    assert_eq!(replayed, Replayed::of_snapshot(&store.load_snapshot().await.unwrap()));

    // A grace of one second, then wait (on a condition, with a deadline) until it has passed.
    let (new, _) = secret();
    let (rotated, _) = store.rotate_key(created.id, new, 1, &actor()).await.unwrap();
    let ends = rotated.previous.unwrap().expires_at;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while SystemTime::now() <= ends {
        assert!(std::time::Instant::now() < deadline, "the grace never ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let snapshot = store.load_snapshot().await.unwrap();
    let streamed = snapshot.keys.iter().find(|k| k.id == created.id.as_bytes()).unwrap();
    assert!(streamed.previous_hash.is_empty() && streamed.previous_expires_at == 0);
    let patch = KeyPatch { description: Some("after".into()), ..KeyPatch::default() };
    let (updated, revision) = store.update_key(created.id, patch, &actor()).await.unwrap();
    assert!(updated.previous.is_some(), "the store keeps it for the admin API to show as expired");
    let delta = delta_of(store.as_ref(), revision).await;
    assert_eq!(key_changes(&delta), [("upsert", bytes(updated.hash), Vec::new())]);
}
