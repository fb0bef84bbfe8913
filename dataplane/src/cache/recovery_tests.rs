//! Recovery from snapshot generations and the delta journal, under crashes and corruption.

use aurora_core::KeyHash;
use aurora_proto::v1::{Change, Delta, KeyConfig, SubscribeRequest, change, subscribe_request};
use tokio::sync::mpsc;

use super::writer::Durability;
use super::*;
use crate::snapshot::Settings;

const STORE: [u8; 16] = [7; 16];

fn base(revision: u64) -> Snapshot {
    let mut snapshot = Snapshot::new(revision, Settings::default(), Some(KeyHash::of("m")));
    snapshot.store_id = STORE;
    snapshot
}

/// Revision `revision` adds (or, with `enabled: false`, disables) the key `k{revision}`.
fn delta(revision: u64, key: &str, enabled: bool) -> Delta {
    let config = KeyConfig {
        hash: KeyHash::of(key).as_bytes().to_vec(),
        id: vec![1; 16],
        enabled,
        expires_at: 0,
        allowed_providers: 0,
        allowed_endpoints: Vec::new(),
        ..Default::default()
    };
    Delta { revision, changes: vec![Change { change: Some(change::Change::KeyUpsert(config)) }] }
}

fn key_enabled(snapshot: &Snapshot, key: &str) -> Option<bool> {
    snapshot.keys.get(&KeyHash::of(key)).map(|k| k.enabled)
}

/// Feeds a whole snapshot, then `deltas` (as fast as they come, so they are grouped), through a
/// real writer and waits for every ack, as the subscription would.
async fn persist_all(durability: &Durability, start: Snapshot, deltas: &[Delta]) -> Arc<Snapshot> {
    let (outbound, mut acks) = mpsc::channel::<SubscribeRequest>(deltas.len() + 1);
    let mut state = Arc::new(start);
    durability.persist(state.clone(), None, &outbound).await;
    assert_eq!(next_ack(&mut acks).await, state.revision);
    for delta in deltas {
        state = Arc::new(state.apply(delta).unwrap());
        durability.persist(state.clone(), Some(delta.clone()), &outbound).await;
    }
    for delta in deltas {
        assert_eq!(next_ack(&mut acks).await, delta.revision, "acks go out in order");
    }
    assert_eq!(durability.durable_revision(), state.revision);
    state
}

async fn next_ack(acks: &mut mpsc::Receiver<SubscribeRequest>) -> u64 {
    match acks.recv().await {
        Some(SubscribeRequest { message: Some(subscribe_request::Message::Ack(ack)) }) => ack.revision,
        other => panic!("expected an ack, got {other:?}"),
    }
}

fn start_writer(cache: &ConfigCache) -> Durability {
    let (durability, writer) = Durability::start(cache.clone(), None);
    tokio::spawn(writer);
    durability
}

#[tokio::test]
async fn every_acknowledged_delta_survives_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let cache = ConfigCache::new(&dir.path().join("config.cache"), CacheKey::derive(b"node-token"));
    let durability = start_writer(&cache);
    let deltas = [delta(11, "created", true), delta(12, "revoked", true), delta(13, "revoked", false)];
    persist_all(&durability, base(10), &deltas).await;
    // "Crash": nothing but what is on disk; the generation alone is at revision 10.
    drop(durability);
    let recovered =
        ConfigCache::new(&dir.path().join("config.cache"), CacheKey::derive(b"node-token")).recover().unwrap();
    assert_eq!((recovered.snapshot.revision, recovered.replayed), (13, 3));
    assert_eq!(key_enabled(&recovered.snapshot, "created"), Some(true));
    assert_eq!(key_enabled(&recovered.snapshot, "revoked"), Some(false), "a revocation is never undone");
}

#[tokio::test]
async fn a_torn_journal_tail_is_ignored_never_applied() {
    let dir = tempfile::tempdir().unwrap();
    let cache = ConfigCache::new(&dir.path().join("config.cache"), CacheKey::derive(b"node-token"));
    let durability = start_writer(&cache);
    persist_all(&durability, base(10), &[delta(11, "a", true), delta(12, "b", true)]).await;
    let journal = &cache.journals.current;
    let bytes = fs::read(journal).unwrap();

    // A crash mid-append: the last record is cut short.
    fs::write(journal, &bytes[..bytes.len() - 3]).unwrap();
    let recovered = cache.recover().unwrap();
    assert_eq!(recovered.snapshot.revision, 11);
    assert_eq!(key_enabled(&recovered.snapshot, "b"), None);

    // A flipped byte in the last record: its checksum fails, so it is not applied either.
    let mut flipped = bytes.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x55;
    fs::write(journal, &flipped).unwrap();
    assert_eq!(cache.recover().unwrap().snapshot.revision, 11);
}

#[tokio::test]
async fn a_corrupt_generation_falls_back_to_the_previous_one_and_both_journals() {
    let dir = tempfile::tempdir().unwrap();
    let cache = ConfigCache::new(&dir.path().join("config.cache"), CacheKey::derive(b"node-token"));
    // Generation 10 with a journal to 12, then generation 12 (a whole snapshot) with one to 13.
    let durability = start_writer(&cache);
    let state = persist_all(&durability, base(10), &[delta(11, "a", true), delta(12, "b", true)]).await;
    let (outbound, mut acks) = mpsc::channel(8);
    durability.persist(state.clone(), None, &outbound).await;
    assert_eq!(next_ack(&mut acks).await, 12);
    let next = Arc::new(state.apply(&delta(13, "c", true)).unwrap());
    durability.persist(next, Some(delta(13, "c", true)), &outbound).await;
    assert_eq!(next_ack(&mut acks).await, 13);
    assert_eq!(read(&cache.current, &cache.key).unwrap().revision, 12);

    let mut bytes = fs::read(&cache.current).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&cache.current, &bytes).unwrap();
    let recovered = cache.recover().unwrap();
    assert_eq!(recovered.snapshot.revision, 13, "generation 10, then both journals");
    assert_eq!(key_enabled(&recovered.snapshot, "c"), Some(true));
}

#[tokio::test]
async fn a_journal_from_another_store_history_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let cache = ConfigCache::new(&dir.path().join("config.cache"), CacheKey::derive(b"node-token"));
    cache.store(&base(10)).unwrap();
    let mut journal = Journal::create(&cache.journals.current, &cache.key, [9; 16], 10).unwrap();
    journal.append(&delta(11, "foreign", true)).unwrap();
    journal.sync().unwrap();
    let recovered = cache.recover().unwrap();
    assert_eq!((recovered.snapshot.revision, recovered.replayed), (10, 0));
    assert_eq!(key_enabled(&recovered.snapshot, "foreign"), None);
}

#[tokio::test]
async fn a_long_journal_is_folded_into_a_new_generation() {
    let dir = tempfile::tempdir().unwrap();
    let cache = ConfigCache::new(&dir.path().join("config.cache"), CacheKey::derive(b"node-token"));
    let durability = start_writer(&cache);
    let count = writer::COMPACT_AFTER_RECORDS + 5;
    let deltas: Vec<Delta> = (0..count).map(|i| delta(11 + i, &format!("k{i}"), true)).collect();
    let state = persist_all(&durability, base(10), &deltas).await;
    // The next group finds the journal full and writes a generation instead.
    let (outbound, mut acks) = mpsc::channel(1);
    let last = delta(state.revision + 1, "last", true);
    let state = Arc::new(state.apply(&last).unwrap());
    durability.persist(state.clone(), Some(last), &outbound).await;
    assert_eq!(next_ack(&mut acks).await, state.revision);
    let generation = read(&cache.current, &cache.key).unwrap().revision;
    assert_eq!(generation, state.revision, "the journal was folded into a generation");
    let recovered = cache.recover().unwrap();
    assert_eq!(recovered.snapshot.revision, state.revision);
    assert!(recovered.replayed < count);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for path in [&cache.journals.current, &cache.journals.previous] {
            let mode = fs::metadata(path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{}: the journal holds credentials too", path.display());
        }
    }
}

/// A copied cache directory yields no credential and no hash to guess offline, and a replica
/// holding another key treats the files as corrupt.
#[tokio::test]
async fn the_files_hold_no_credential_or_hash_and_open_only_with_the_key() {
    use aurora_core::ProviderKind;

    use crate::snapshot::Upstream;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.cache");
    let cache = ConfigCache::new(&path, CacheKey::derive(b"node-token"));
    let mut start = base(10);
    let kind = ProviderKind::Anthropic;
    let credential = "sk-ant-at-rest-credential";
    start.set_provider(Upstream::new(kind, true, kind.default_base_url_parsed(), Some(credential)).unwrap());
    let durability = start_writer(&cache);
    persist_all(&durability, start, &[delta(11, "journaled-key", true)]).await;

    let (master, key) = (KeyHash::of("m"), KeyHash::of("journaled-key"));
    let secrets: [&[u8]; 3] = [credential.as_bytes(), master.as_bytes(), key.as_bytes()];
    for entry in fs::read_dir(dir.path()).unwrap() {
        let bytes = fs::read(entry.unwrap().path()).unwrap();
        for secret in secrets {
            assert!(!bytes.windows(secret.len()).any(|w| w == secret), "a secret is stored in the clear");
        }
    }
    assert_eq!(cache.recover().unwrap().snapshot.revision, 11);
    assert!(ConfigCache::new(&path, CacheKey::derive(b"another token")).recover().is_none());
}
