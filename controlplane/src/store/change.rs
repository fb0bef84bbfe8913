//! Change-log entries: what a revision changed, encoded as `aurora.v1.Change`.
//!
//! Besides the payload, each row names the kind of object, its id and whether it was an upsert
//! or a delete, so an operator can read the log with `sqlite3` without decoding protobuf.

use aurora_core::{KeyHash, ProviderKind};
use aurora_proto::v1::{Change, change};
use prost::Message;

use super::model::{KeyRecord, ProviderRecord, Settings};

/// One object changed by a revision.
#[derive(Clone)]
pub(crate) struct ChangeEntry {
    pub(crate) kind: &'static str,
    pub(crate) object_id: String,
    pub(crate) op: &'static str,
    pub(crate) change: Change,
}

impl ChangeEntry {
    pub(crate) fn key_upsert(key: &KeyRecord) -> Self {
        Self::upsert("key", key.id.to_string(), change::Change::KeyUpsert(key.to_config()))
    }

    pub(crate) fn key_delete(key: &KeyRecord) -> Self {
        ChangeEntry {
            kind: "key",
            object_id: key.id.to_string(),
            op: "delete",
            change: Change { change: Some(change::Change::KeyDelete(key.hash.as_bytes().to_vec())) },
        }
    }

    pub(crate) fn provider_upsert(provider: &ProviderRecord) -> Self {
        Self::upsert(
            "provider",
            provider.kind.as_str().to_owned(),
            change::Change::ProviderUpsert(provider.to_config()),
        )
    }

    pub(crate) fn provider_delete(kind: ProviderKind) -> Self {
        ChangeEntry {
            kind: "provider",
            object_id: kind.as_str().to_owned(),
            op: "delete",
            change: Change { change: Some(change::Change::ProviderDelete(kind.as_str().to_owned())) },
        }
    }

    pub(crate) fn settings(settings: Settings) -> Self {
        Self::upsert(
            "settings",
            "settings".to_owned(),
            change::Change::Settings(super::model::settings_config(settings)),
        )
    }

    /// The master key changed; an empty hash means there is none any more.
    pub(crate) fn master_key_hash(hash: Option<KeyHash>) -> Self {
        let bytes = hash.map(|h| h.as_bytes().to_vec()).unwrap_or_default();
        Self::upsert("master_key", "master_key".to_owned(), change::Change::MasterKeyHash(bytes))
    }

    fn upsert(kind: &'static str, object_id: String, change: change::Change) -> Self {
        ChangeEntry { kind, object_id, op: "upsert", change: Change { change: Some(change) } }
    }

    pub(crate) fn payload(&self) -> Vec<u8> {
        self.change.encode_to_vec()
    }
}
