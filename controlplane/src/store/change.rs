//! Change-log entries: what a revision changed, encoded as `aurora.v1.Change`.
//!
//! Besides the payload, each row names the kind of object, its id and whether it was an upsert
//! or a delete, so an operator can read the log with `sqlite3` without decoding protobuf.

use aurora_core::ProviderKind;
use aurora_proto::v1::{Change, ProviderConfig, UpstreamCredential, change};
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

    /// The provider's state without its secrets (credential, every secret of its credential
    /// set, client certificate and key): the change log never holds them, not even sealed.
    /// `changes_since` completes the entry with the provider's current ones (`at_rest.rs`), so a
    /// replaced, cleared or removed credential is gone from every table the moment its change
    /// commits.
    pub(crate) fn provider_upsert(provider: &ProviderRecord) -> Self {
        Self::upsert(
            "provider",
            provider.kind.as_str().to_owned(),
            change::Change::ProviderUpsert(without_secrets(provider.to_config())),
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

    /// The master key changed. The entry holds no hash (a bare SHA-256 of the master key is
    /// never stored in the clear): `changes_since` fills in the current one, or none.
    pub(crate) fn master_key_changed() -> Self {
        Self::upsert("master_key", "master_key".to_owned(), change::Change::MasterKeyHash(Vec::new()))
    }

    fn upsert(kind: &'static str, object_id: String, change: change::Change) -> Self {
        ChangeEntry { kind, object_id, op: "upsert", change: Change { change: Some(change) } }
    }

    pub(crate) fn payload(&self) -> Vec<u8> {
        self.change.encode_to_vec()
    }
}

/// `config` with every secret field emptied, as the change log stores it. The credential set
/// keeps its names, weights and flags (what the revision changed, for an operator reading the
/// log); `complete` replaces it with the current set when the log is read.
pub(crate) fn without_secrets(config: ProviderConfig) -> ProviderConfig {
    ProviderConfig {
        credential: String::new(),
        credentials: config
            .credentials
            .into_iter()
            .map(|credential| UpstreamCredential { secret: String::new(), ..credential })
            .collect(),
        client_certificate_pem: String::new(),
        client_key_pem: String::new(),
        ..config
    }
}

/// Whether a stored entry still carries a secret (written by a version before secrets at rest).
pub(crate) fn holds_secrets(change: &Change) -> bool {
    match &change.change {
        Some(change::Change::ProviderUpsert(config)) => {
            !config.credential.is_empty()
                || config.credentials.iter().any(|credential| !credential.secret.is_empty())
                || !config.client_certificate_pem.is_empty()
                || !config.client_key_pem.is_empty()
        }
        Some(change::Change::MasterKeyHash(hash)) => !hash.is_empty(),
        _ => false,
    }
}

/// `change` as the change log stores it: [`holds_secrets`] is false for the result.
pub(crate) fn scrubbed(change: Change) -> Change {
    match change.change {
        Some(change::Change::ProviderUpsert(config)) => {
            Change { change: Some(change::Change::ProviderUpsert(without_secrets(config))) }
        }
        Some(change::Change::MasterKeyHash(_)) => Change { change: Some(change::Change::MasterKeyHash(Vec::new())) },
        other => Change { change: other },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_set_leaves_its_secrets_out_of_the_log_and_keeps_the_rest() {
        let credential = |name: &str, secret: &str| UpstreamCredential {
            name: name.into(),
            secret: secret.into(),
            weight: 2,
            enabled: true,
        };
        let config = ProviderConfig {
            name: "openai".into(),
            credential: "sk-first".into(),
            credentials: vec![credential("default", "sk-first"), credential("backup", "sk-second")],
            ..ProviderConfig::default()
        };
        let only_set = ProviderConfig { credential: String::new(), ..config.clone() };
        let entry = |config| Change { change: Some(change::Change::ProviderUpsert(config)) };
        assert!(holds_secrets(&entry(config.clone())));
        assert!(holds_secrets(&entry(only_set)), "a secret of the set alone counts");
        let stored = scrubbed(entry(config));
        assert!(!holds_secrets(&stored));
        let Some(change::Change::ProviderUpsert(stored)) = stored.change else { panic!("not a provider") };
        assert_eq!(stored.credentials, vec![credential("default", ""), credential("backup", "")]);
    }
}
