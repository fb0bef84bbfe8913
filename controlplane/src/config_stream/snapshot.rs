//! Full snapshots, split into chunks and encoded once per revision.
//!
//! A replica that is new, or further behind than the change feed reaches, gets the whole
//! configuration. Chunks keep every message far below gRPC's message-size limit however many
//! keys there are, and the encoded chunks of the latest revision are cached so that a fleet
//! reconnecting at once (a control-plane restart) costs one database read, not one per replica.

use std::sync::Arc;

use aurora_proto::PreEncoded;
use aurora_proto::v1::{SnapshotChunk, SubscribeResponse, subscribe_response};
use tokio::sync::Mutex;

use crate::store::{Revision, Snapshot, Store, StoreError, StoreId};

/// Keys per chunk: at about 60 bytes a key, a chunk stays well under 1 MiB.
pub const KEYS_PER_CHUNK: usize = 10_000;

#[derive(Debug, Clone)]
pub struct EncodedSnapshot {
    pub revision: Revision,
    pub chunks: Arc<[PreEncoded]>,
}

#[derive(Debug)]
pub struct SnapshotSource {
    store: Arc<dyn Store>,
    // A tokio mutex on purpose: concurrent requests wait for the one build in progress and then
    // share its result instead of each reading the whole store.
    latest: Mutex<Option<EncodedSnapshot>>,
}

impl SnapshotSource {
    pub fn new(store: Arc<dyn Store>) -> Self {
        SnapshotSource { store, latest: Mutex::new(None) }
    }

    /// The snapshot at the store's current head revision.
    pub async fn current(&self) -> Result<EncodedSnapshot, StoreError> {
        let mut latest = self.latest.lock().await;
        let head = self.store.head_revision().await?;
        if let Some(cached) = latest.as_ref().filter(|cached| cached.revision == head) {
            return Ok(cached.clone());
        }
        let snapshot = self.store.load_snapshot().await?;
        let store_id = self.store.store_id();
        let encoded = tokio::task::spawn_blocking(move || encode_from(snapshot, store_id))
            .await
            .map_err(|err| StoreError::Corrupt(format!("snapshot encoding failed: {err}")))?;
        *latest = Some(encoded.clone());
        Ok(encoded)
    }
}

/// [`encode_from`] for a snapshot whose store history is unknown: replicas that start from it
/// always get a full snapshot when they resume.
pub fn encode(snapshot: Snapshot) -> EncodedSnapshot {
    encode_from(snapshot, StoreId::default())
}

/// Splits `snapshot`, taken from the store whose history is `store_id`, into `SnapshotChunk`s:
/// the first carries settings, providers, the master-key hash and the store id; every chunk
/// carries up to [`KEYS_PER_CHUNK`] keys; the last is marked.
pub fn encode_from(snapshot: Snapshot, store_id: StoreId) -> EncodedSnapshot {
    let revision = snapshot.revision;
    let total_keys = snapshot.keys.len() as u64;
    let key_chunks: Vec<_> = snapshot.keys.chunks(KEYS_PER_CHUNK).map(<[_]>::to_vec).collect();
    let count = key_chunks.len().max(1);
    let mut chunks = Vec::with_capacity(count);
    let mut key_chunks = key_chunks.into_iter();
    for index in 0..count {
        let first = index == 0;
        let chunk = SnapshotChunk {
            revision,
            first,
            last: index + 1 == count,
            settings: first.then_some(snapshot.settings),
            providers: if first { snapshot.providers.clone() } else { Vec::new() },
            master_key_hash: match (first, snapshot.master_key_hash) {
                (true, Some(hash)) => hash.as_bytes().to_vec(),
                _ => Vec::new(),
            },
            keys: key_chunks.next().unwrap_or_default(),
            store_id: if first && store_id != StoreId::default() { store_id.to_vec() } else { Vec::new() },
            total_keys: if first { total_keys } else { 0 },
        };
        let message = SubscribeResponse { message: Some(subscribe_response::Message::Snapshot(chunk)) };
        chunks.push(PreEncoded::encode(&message));
    }
    EncodedSnapshot { revision, chunks: chunks.into() }
}

#[cfg(test)]
mod tests {
    use aurora_core::KeyHash;
    use aurora_proto::v1::{ConfigSettings, KeyConfig};
    use prost::Message;

    use super::*;

    fn key(i: u32) -> KeyConfig {
        KeyConfig {
            hash: KeyHash::of(format!("aur_{i}")).as_bytes().to_vec(),
            id: uuid::Uuid::now_v7().as_bytes().to_vec(),
            enabled: true,
            expires_at: 0,
            allowed_providers: 0,
            allowed_endpoints: Vec::new(),
            ..Default::default()
        }
    }

    fn decode(chunk: &PreEncoded) -> SnapshotChunk {
        match SubscribeResponse::decode(chunk.0.clone()).unwrap().message {
            Some(subscribe_response::Message::Snapshot(chunk)) => chunk,
            other => panic!("not a snapshot chunk: {other:?}"),
        }
    }

    #[test]
    fn chunks_carry_everything_once_and_mark_first_and_last() {
        let keys: Vec<_> = (0..25_001).map(key).collect();
        let snapshot = Snapshot {
            revision: 9,
            settings: ConfigSettings { passthrough_enabled: true, v1_alias_enabled: false, ..Default::default() },
            providers: Vec::new(),
            master_key_hash: Some(KeyHash::of("m")),
            keys: keys.clone(),
        };
        let encoded = encode(snapshot);
        let chunks: Vec<_> = encoded.chunks.iter().map(decode).collect();
        assert_eq!(chunks.len(), 3);
        assert!(chunks[0].first && !chunks[0].last && chunks[2].last);
        assert!(chunks[0].settings.is_some() && chunks[1].settings.is_none());
        assert_eq!(chunks[0].master_key_hash, KeyHash::of("m").as_bytes());
        assert_eq!(chunks[0].total_keys, 25_001, "the first chunk announces the size");
        assert_eq!(chunks[1].total_keys, 0);
        let all: Vec<_> = chunks.into_iter().flat_map(|c| c.keys).collect();
        assert_eq!(all, keys);
        assert!(encoded.chunks.iter().all(|c| c.0.len() < 1024 * 1024));
        // Wire size per key, the figure the benchmark report tracks (target: at most 64 bytes).
        let per_key = encoded.chunks.iter().map(|c| c.0.len()).sum::<usize>() / 25_001;
        assert!(per_key <= 64, "{per_key} bytes per key");
    }

    #[test]
    fn an_empty_store_is_one_chunk() {
        let encoded = encode(Snapshot {
            revision: 0,
            settings: ConfigSettings::default(),
            providers: Vec::new(),
            master_key_hash: None,
            keys: Vec::new(),
        });
        assert_eq!(encoded.chunks.len(), 1);
        let chunk = decode(&encoded.chunks[0]);
        assert!(chunk.first && chunk.last);
    }
}
