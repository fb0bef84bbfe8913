//! The JSON snapshot file: a hand-writable form of [`Snapshot`].
//!
//! `aurora dataplane --config-file PATH` serves from one of these. Every field is validated
//! while the file is loaded, so a bad file stops the process at startup with a precise message
//! instead of failing requests later. Unknown fields are rejected to catch typos.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use aurora_core::{BaseUrl, KeyHash, ProviderKind, ProviderSet};
use serde::{Deserialize, Serialize};

use super::{InvalidCredential, KeyId, ManagedKey, Settings, Snapshot, Upstream};
use crate::limits::KeyPolicy;

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotFile {
    #[serde(default)]
    pub revision: u64,
    #[serde(default)]
    pub settings: Settings,
    /// Providers by name; a provider that is not listed is disabled.
    #[serde(default)]
    pub providers: BTreeMap<ProviderKind, FileProvider>,
    /// Hex SHA-256 of the master key.
    #[serde(default)]
    pub master_key_hash: Option<KeyHash>,
    #[serde(default)]
    pub keys: Vec<FileKey>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileProvider {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Defaults to the provider's public base URL.
    #[serde(default)]
    pub base_url: Option<BaseUrl>,
    #[serde(default)]
    pub credential: Option<String>,
    /// Added to each request unless the client sent the same header (`{"X-Title": "My app"}`).
    #[serde(default)]
    pub default_headers: BTreeMap<String, String>,
}

impl std::fmt::Debug for FileProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileProvider")
            .field("enabled", &self.enabled)
            .field("base_url", &self.base_url)
            .field("credential_set", &self.credential.is_some())
            .field("default_headers", &self.default_headers)
            .finish()
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileKey {
    pub id: uuid::Uuid,
    /// Hex SHA-256 of the key's secret.
    pub hash: KeyHash,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Unix seconds.
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// Empty or absent: every provider.
    #[serde(default)]
    pub allowed_providers: ProviderSet,
    /// Endpoint allow-list rules (`PROVIDER METHOD PATH`); empty or absent: every endpoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_endpoints: Vec<String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("config file {path} is not a valid snapshot: {source}")]
    Parse { path: String, source: serde_json::Error },
    #[error("config file {path}: {source}")]
    Credential { path: String, source: InvalidCredential },
    #[error("config file {path}: provider {provider}: {source}")]
    DefaultHeader { path: String, provider: ProviderKind, source: aurora_core::DefaultHeaderError },
    #[error("config file {path}: key {id}: endpoint rule {rule:?}: {source}")]
    EndpointRule { path: String, id: uuid::Uuid, rule: String, source: aurora_core::EndpointRuleError },
    #[error("config file {path}: key {id} appears twice")]
    DuplicateKey { path: String, id: uuid::Uuid },
}

impl SnapshotFile {
    pub fn load(path: &Path) -> Result<Snapshot, SnapshotFileError> {
        let display = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| SnapshotFileError::Read { path: display.clone(), source })?;
        let file: SnapshotFile = serde_json::from_slice(&bytes)
            .map_err(|source| SnapshotFileError::Parse { path: display.clone(), source })?;
        file.into_snapshot(&display)
    }

    pub fn into_snapshot(self, origin: &str) -> Result<Snapshot, SnapshotFileError> {
        let mut snapshot = Snapshot::new(self.revision, self.settings, self.master_key_hash);
        for (kind, provider) in self.providers {
            let base_url = provider.base_url.unwrap_or_else(|| kind.default_base_url_parsed());
            let headers = aurora_core::DefaultHeaders::from_pairs(
                provider.default_headers.iter().map(|(name, value)| (name.as_str(), value.as_str())),
            )
            .map_err(|source| SnapshotFileError::DefaultHeader {
                path: origin.to_owned(),
                provider: kind,
                source,
            })?;
            let upstream = Upstream::new(kind, provider.enabled, base_url, provider.credential.as_deref())
                .map_err(|source| SnapshotFileError::Credential { path: origin.to_owned(), source })?
                .with_default_headers(&headers);
            snapshot.set_provider(upstream);
        }
        for key in self.keys {
            // A file is checked whole at startup: a bad rule is an error, not a dropped rule.
            for rule in &key.allowed_endpoints {
                rule.parse::<aurora_core::EndpointRule>().map_err(|source| SnapshotFileError::EndpointRule {
                    path: origin.to_owned(),
                    id: key.id,
                    rule: rule.clone(),
                    source,
                })?;
            }
            let managed = ManagedKey {
                id: KeyId(*key.id.as_bytes()),
                enabled: key.enabled,
                expires_at: key.expires_at.and_then(std::num::NonZeroI64::new),
                allowed_providers: (!key.allowed_providers.is_empty()).then_some(key.allowed_providers),
                policy: KeyPolicy::from_rules(key.allowed_endpoints.iter().map(String::as_str)).map(Arc::new),
            };
            if snapshot.keys.insert(key.hash, managed).is_some() {
                return Err(SnapshotFileError::DuplicateKey { path: origin.to_owned(), id: key.id });
            }
        }
        Ok(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Snapshot, SnapshotFileError> {
        serde_json::from_str::<SnapshotFile>(json)
            .map_err(|source| SnapshotFileError::Parse { path: "test".into(), source })?
            .into_snapshot("test")
    }

    #[test]
    fn loads_a_full_file() {
        let hash = KeyHash::of("aur_secret");
        let snapshot = parse(&format!(
            r#"{{
                "revision": 7,
                "settings": {{ "v1_alias_enabled": false }},
                "providers": {{
                    "anthropic": {{ "credential": "sk-ant" }},
                    "vllm": {{ "enabled": false, "base_url": "http://gpu:8000/v1/" }}
                }},
                "master_key_hash": "{master}",
                "keys": [{{ "id": "0192f0c1-0000-7000-8000-000000000001", "hash": "{hash}",
                            "expires_at": 1700000000, "allowed_providers": ["anthropic"] }}]
            }}"#,
            master = KeyHash::of("change-me").to_hex(),
            hash = hash.to_hex(),
        ))
        .unwrap();
        assert_eq!(snapshot.revision, 7);
        assert!(snapshot.settings.passthrough_enabled);
        assert!(!snapshot.settings.v1_alias_enabled);
        assert_eq!(snapshot.enabled_providers().to_string(), "anthropic");
        let vllm = snapshot.provider(ProviderKind::Vllm).unwrap();
        assert_eq!(vllm.base_url.as_str(), "http://gpu:8000/v1");
        assert!(snapshot.provider(ProviderKind::OpenAi).is_none());
        let key = snapshot.keys.get(&hash).unwrap();
        assert_eq!(key.expires_at.map(std::num::NonZeroI64::get), Some(1_700_000_000));
        assert_eq!(key.allowed_providers.unwrap().to_string(), "anthropic");
        assert!(snapshot.auth_required());
    }

    #[test]
    fn rejects_typos_bad_urls_and_unknown_providers() {
        assert!(parse(r#"{"setings": {}}"#).is_err());
        assert!(parse(r#"{"providers": {"gemini": {}}}"#).is_err());
        assert!(parse(r#"{"providers": {"openai": {"base_url": "ftp://x"}}}"#).is_err());
        assert!(parse(r#"{"master_key_hash": "abc"}"#).is_err());
    }

    #[test]
    fn default_headers_are_checked_like_the_admin_apis() {
        let snapshot = parse(r#"{"providers": {"openrouter": {"default_headers": {"X-Title": "My app"}}}}"#).unwrap();
        let headers = snapshot.provider(ProviderKind::OpenRouter).unwrap().default_headers();
        assert_eq!(headers.len(), 1);
        assert_eq!((headers[0].0.as_str(), headers[0].1.to_str().unwrap()), ("x-title", "My app"));
        let err = parse(r#"{"providers": {"openai": {"default_headers": {"Host": "x"}}}}"#).err().unwrap();
        assert!(err.to_string().contains("cannot be a default header"), "{err}");
    }

    #[test]
    fn endpoint_rules_are_checked_whole_at_load() {
        let hash = KeyHash::of("aur_scoped");
        let file = |rule: &str| {
            format!(
                r#"{{"keys": [{{ "id": "0192f0c1-0000-7000-8000-000000000002", "hash": "{}",
                                 "allowed_endpoints": ["{rule}"] }}]}}"#,
                hash.to_hex()
            )
        };
        let snapshot = parse(&file("anthropic POST /v1/messages")).unwrap();
        let policy = snapshot.keys.get(&hash).unwrap().policy.clone().unwrap();
        assert!(policy.check_endpoint(ProviderKind::Anthropic, &http::Method::POST, "messages").is_ok());
        assert!(policy.check_endpoint(ProviderKind::Anthropic, &http::Method::POST, "files").is_err());
        let err = parse(&file("anthropic FETCH /x")).err().unwrap();
        assert!(matches!(err, SnapshotFileError::EndpointRule { .. }), "{err}");
        assert!(err.to_string().contains("FETCH"), "{err}");
    }
}
