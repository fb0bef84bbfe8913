//! The config stream's messages as a [`Snapshot`]: chunks assemble into one, deltas apply to one.
//!
//! Everything a message carries is validated here, before the request path can see it. A
//! message that fails validation is rejected as a whole (the replica answers `Nack` and keeps
//! serving its previous revision): a snapshot is applied entirely or not at all.

use std::sync::Arc;

use aurora_core::{BaseUrl, DefaultHeaderError, DefaultHeaders, KeyHash, ProviderKind, ProviderSet};
use aurora_proto::v1::{
    ConfigSettings, Delta, HeaderField, KeyConfig, ProviderConfig, SnapshotChunk, UpstreamCredential, change,
};

use super::{InvalidCredential, KeyId, ManagedKey, ProviderTls, ProviderTlsError, Settings, Snapshot, Upstream};
use crate::limits::{KeyPolicy, LimitSettings, limits_from_proto, limits_to_proto};

/// Why a snapshot or delta could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("unknown provider {0:?}")]
    UnknownProvider(String),
    #[error("provider {provider}: {reason}")]
    BaseUrl { provider: ProviderKind, reason: String },
    #[error(transparent)]
    Credential(#[from] InvalidCredential),
    #[error("provider {provider}: credential name: {reason}")]
    CredentialName { provider: ProviderKind, reason: aurora_core::CredentialNameError },
    #[error("provider {provider}: {reason}")]
    DefaultHeader { provider: ProviderKind, reason: DefaultHeaderError },
    #[error("provider {provider}: {reason}")]
    Tls { provider: ProviderKind, reason: ProviderTlsError },
    #[error("a key hash must be 32 bytes, got {0}")]
    KeyHash(usize),
    #[error("a key id must be 16 bytes, got {0}")]
    KeyId(usize),
    #[error("the master-key hash must be 32 or 0 bytes, got {0}")]
    MasterKeyHash(usize),
    #[error("snapshot chunk for revision {got} arrived while assembling revision {expected}")]
    ChunkRevision { expected: u64, got: u64 },
    #[error("a snapshot must start with its first chunk")]
    MissingFirstChunk,
    #[error("an empty change")]
    EmptyChange,
}

/// The most keys a snapshot's announced size reserves room for (more can still be added).
const MAX_RESERVED_KEYS: u64 = 16 << 20;

/// Collects the chunks of one snapshot.
#[derive(Debug)]
pub struct SnapshotAssembly {
    snapshot: Snapshot,
}

impl SnapshotAssembly {
    /// Starts from a first chunk.
    pub fn start(chunk: SnapshotChunk) -> Result<Self, ApplyError> {
        if !chunk.first {
            return Err(ApplyError::MissingFirstChunk);
        }
        let settings = chunk.settings.as_ref().map(settings_from).unwrap_or_default();
        let mut snapshot = Snapshot::new(chunk.revision, settings, master_key_from(&chunk.master_key_hash)?);
        snapshot.limits = chunk.settings.as_ref().map(LimitSettings::from_proto).unwrap_or_default();
        // An absent or malformed id reads as "unknown": the next resume then takes a snapshot.
        snapshot.store_id = chunk.store_id.as_slice().try_into().unwrap_or_default();
        for provider in &chunk.providers {
            snapshot.set_provider(upstream_from(provider)?);
        }
        // Capped: the count only sizes an allocation, and must not be able to exhaust memory.
        snapshot.keys.reserve(usize::try_from(chunk.total_keys.min(MAX_RESERVED_KEYS)).unwrap_or(0));
        let mut assembly = SnapshotAssembly { snapshot };
        assembly.add_keys(&chunk.keys)?;
        Ok(assembly)
    }

    pub fn revision(&self) -> u64 {
        self.snapshot.revision
    }

    /// Adds a later chunk of the same snapshot.
    pub fn add(&mut self, chunk: &SnapshotChunk) -> Result<(), ApplyError> {
        if chunk.first || chunk.revision != self.snapshot.revision {
            return Err(ApplyError::ChunkRevision { expected: self.snapshot.revision, got: chunk.revision });
        }
        self.add_keys(&chunk.keys)
    }

    pub fn finish(self) -> Snapshot {
        self.snapshot
    }

    fn add_keys(&mut self, keys: &[KeyConfig]) -> Result<(), ApplyError> {
        for key in keys {
            let (hash, managed) = key_from(key)?;
            let previous = previous_from(key)?;
            self.snapshot.keys.insert(hash, managed);
            self.snapshot.keys.set_previous(hash, previous);
        }
        Ok(())
    }
}

impl Snapshot {
    /// The snapshot after `delta`; `self` is left untouched, so a failure changes nothing.
    /// Cheap for large key sets: the key table is persistent, so untouched keys are shared.
    pub fn apply(&self, delta: &Delta) -> Result<Snapshot, ApplyError> {
        let mut next = self.clone();
        next.revision = delta.revision;
        for change in &delta.changes {
            match change.change.as_ref().ok_or(ApplyError::EmptyChange)? {
                change::Change::Settings(settings) => {
                    next.settings = settings_from(settings);
                    next.limits = LimitSettings::from_proto(settings);
                }
                change::Change::ProviderUpsert(provider) => next.set_provider(upstream_from(provider)?),
                change::Change::ProviderDelete(name) => next.remove_provider(provider_kind(name)?),
                change::Change::KeyUpsert(key) => {
                    let (hash, managed) = key_from(key)?;
                    let previous = previous_from(key)?;
                    next.keys.insert(hash, managed);
                    next.keys.set_previous(hash, previous);
                }
                change::Change::KeyDelete(hash) => {
                    next.keys.remove(&KeyHash::from_slice(hash).ok_or(ApplyError::KeyHash(hash.len()))?);
                }
                change::Change::MasterKeyHash(hash) => next.master_key = master_key_from(hash)?,
            }
        }
        Ok(next)
    }

    /// The whole snapshot as one chunk: what the last-known-good cache stores.
    pub fn to_chunk(&self) -> SnapshotChunk {
        SnapshotChunk {
            revision: self.revision,
            first: true,
            last: true,
            settings: Some({
                let mut settings = ConfigSettings {
                    passthrough_enabled: self.settings.passthrough_enabled,
                    v1_alias_enabled: self.settings.v1_alias_enabled,
                    ..Default::default()
                };
                self.limits.write_proto(&mut settings);
                settings
            }),
            providers: self
                .providers()
                .map(|upstream| ProviderConfig {
                    name: upstream.kind.as_str().to_owned(),
                    enabled: upstream.enabled,
                    base_url: upstream.base_url().as_str().to_owned(),
                    credential: String::new(),
                    credentials: upstream
                        .credentials()
                        .iter()
                        .map(|c| UpstreamCredential {
                            name: c.name.to_string(),
                            secret: c.plain().to_owned(),
                            weight: c.weight,
                            enabled: c.enabled,
                        })
                        .collect(),
                    default_headers: upstream
                        .default_headers()
                        .iter()
                        .map(|(name, value)| HeaderField {
                            name: name.as_str().to_owned(),
                            value: value.to_str().unwrap_or_default().to_owned(),
                        })
                        .collect(),
                    client_certificate_pem: upstream.tls().map(|t| t.pem.0.clone()).unwrap_or_default(),
                    client_key_pem: upstream.tls().map(|t| t.pem.1.clone()).unwrap_or_default(),
                    ca_pem: upstream.tls().map(|t| t.pem.2.clone()).unwrap_or_default(),
                })
                .collect(),
            master_key_hash: self.master_key.map(|hash| hash.as_bytes().to_vec()).unwrap_or_default(),
            store_id: self.store_id.to_vec(),
            total_keys: self.keys.len() as u64,
            keys: self
                .keys
                .iter()
                .map(|(hash, key)| (hash, key, self.keys.previous_of(hash)))
                .map(|(hash, key, previous)| KeyConfig {
                    hash: hash.as_bytes().to_vec(),
                    id: key.id.0.to_vec(),
                    enabled: key.enabled,
                    expires_at: key.expires_at.map_or(0, std::num::NonZeroI64::get),
                    allowed_providers: key.allowed_providers.map_or(0, ProviderSet::bits),
                    allowed_endpoints: key
                        .policy
                        .as_ref()
                        .and_then(|policy| policy.endpoints())
                        .map(|rules| rules.iter().map(ToString::to_string).collect())
                        .unwrap_or_default(),
                    previous_hash: previous.map(|(hash, _)| hash.as_bytes().to_vec()).unwrap_or_default(),
                    previous_expires_at: previous.map_or(0, |(_, expires_at)| expires_at),
                    limits: key.policy.as_ref().and_then(|policy| policy.limits()).map(limits_to_proto),
                })
                .collect(),
        }
    }
}

fn settings_from(settings: &ConfigSettings) -> Settings {
    Settings { passthrough_enabled: settings.passthrough_enabled, v1_alias_enabled: settings.v1_alias_enabled }
}

fn provider_kind(name: &str) -> Result<ProviderKind, ApplyError> {
    name.parse().map_err(|_| ApplyError::UnknownProvider(name.to_owned()))
}

fn upstream_from(provider: &ProviderConfig) -> Result<Upstream, ApplyError> {
    let kind = provider_kind(&provider.name)?;
    let base_url = BaseUrl::parse(&provider.base_url)
        .map_err(|err| ApplyError::BaseUrl { provider: kind, reason: err.to_string() })?;
    // A set when the control plane sends one; else the single credential of older ones.
    let credential = Some(provider.credential.as_str()).filter(|c| !c.is_empty() && provider.credentials.is_empty());
    // Checked again here, not trusted from the stream: a data plane enforces its own rules.
    let headers =
        DefaultHeaders::from_pairs(provider.default_headers.iter().map(|h| (h.name.as_str(), h.value.as_str())))
            .map_err(|reason| ApplyError::DefaultHeader { provider: kind, reason })?;
    let tls = ProviderTls::from_pem(&provider.client_certificate_pem, &provider.client_key_pem, &provider.ca_pem)
        .map_err(|reason| ApplyError::Tls { provider: kind, reason })?;
    let mut upstream = Upstream::new(kind, provider.enabled, base_url, credential)?;
    if !provider.credentials.is_empty() {
        let set = provider
            .credentials
            .iter()
            .map(|c| {
                aurora_core::validate_credential_name(&c.name)
                    .map_err(|reason| ApplyError::CredentialName { provider: kind, reason })?;
                Ok(crate::credentials::UpstreamCredential::new(kind, &c.name, &c.secret, c.weight, c.enabled)?)
            })
            .collect::<Result<Vec<_>, ApplyError>>()?;
        upstream = upstream.with_credentials(set);
    }
    Ok(upstream.with_default_headers(&headers).with_tls(tls))
}

fn master_key_from(bytes: &[u8]) -> Result<Option<KeyHash>, ApplyError> {
    match bytes.len() {
        0 => Ok(None),
        _ => KeyHash::from_slice(bytes).map(Some).ok_or(ApplyError::MasterKeyHash(bytes.len())),
    }
}

fn key_from(key: &KeyConfig) -> Result<(KeyHash, ManagedKey), ApplyError> {
    let hash = KeyHash::from_slice(&key.hash).ok_or(ApplyError::KeyHash(key.hash.len()))?;
    let id: [u8; 16] = key.id.as_slice().try_into().map_err(|_| ApplyError::KeyId(key.id.len()))?;
    // A key limited to providers this build does not know must not become a key for all of
    // them: only 0 means "every provider".
    let allowed_providers = (key.allowed_providers != 0).then(|| ProviderSet::from_bits(key.allowed_providers));
    let managed = ManagedKey {
        id: KeyId(id),
        enabled: key.enabled,
        expires_at: std::num::NonZeroI64::new(key.expires_at),
        allowed_providers,
        policy: KeyPolicy::new(
            key.allowed_endpoints.iter().map(String::as_str),
            key.limits.as_ref().map(limits_from_proto),
        )
        .map(Arc::new),
    };
    Ok((hash, managed))
}

/// A rotated key's previous secret: its hash and the Unix second its grace ends. Empty: none.
fn previous_from(key: &KeyConfig) -> Result<Option<(KeyHash, i64)>, ApplyError> {
    if key.previous_hash.is_empty() {
        return Ok(None);
    }
    let hash = KeyHash::from_slice(&key.previous_hash).ok_or(ApplyError::KeyHash(key.previous_hash.len()))?;
    Ok(Some((hash, key.previous_expires_at)))
}

/// Shared with the cache, which stores a snapshot as one chunk.
pub(crate) fn snapshot_from_chunk(chunk: SnapshotChunk) -> Result<Arc<Snapshot>, ApplyError> {
    Ok(Arc::new(SnapshotAssembly::start(chunk)?.finish()))
}

#[cfg(test)]
mod tests {
    use aurora_proto::v1::Change;

    use super::*;

    fn key(secret: &str, enabled: bool, allowed: u32) -> KeyConfig {
        KeyConfig {
            hash: KeyHash::of(secret).as_bytes().to_vec(),
            id: vec![7; 16],
            enabled,
            expires_at: 0,
            allowed_providers: allowed,
            allowed_endpoints: Vec::new(),
            ..Default::default()
        }
    }

    fn provider(name: &str, credential: &str) -> ProviderConfig {
        ProviderConfig {
            name: name.into(),
            enabled: true,
            base_url: "http://127.0.0.1:9/v1".into(),
            credential: credential.into(),
            ..Default::default()
        }
    }

    fn upsert(change: change::Change) -> Change {
        Change { change: Some(change) }
    }

    fn first_chunk() -> SnapshotChunk {
        SnapshotChunk {
            revision: 3,
            first: true,
            last: false,
            settings: Some(ConfigSettings { passthrough_enabled: true, v1_alias_enabled: true, ..Default::default() }),
            providers: vec![provider("anthropic", "sk-ant")],
            master_key_hash: KeyHash::of("m").as_bytes().to_vec(),
            keys: vec![key("a", true, 0)],
            store_id: vec![9; 16],
            total_keys: 2,
        }
    }

    #[test]
    fn assembles_chunks_and_round_trips_through_one_chunk() {
        let mut assembly = SnapshotAssembly::start(first_chunk()).unwrap();
        let second = SnapshotChunk { revision: 3, last: true, keys: vec![key("b", false, 0b10)], ..Default::default() };
        assembly.add(&second).unwrap();
        let snapshot = assembly.finish();
        assert_eq!(snapshot.keys.len(), 2);
        assert_eq!(snapshot.master_key, Some(KeyHash::of("m")));

        assert_eq!(snapshot.store_id, [9; 16]);
        let again = snapshot_from_chunk(snapshot.to_chunk()).unwrap();
        assert_eq!(again.revision, 3);
        assert_eq!(again.store_id, [9; 16], "the cache keeps the history id");
        assert_eq!(again.keys, snapshot.keys);
        assert_eq!(again.provider(ProviderKind::Anthropic).unwrap().credential().unwrap(), "sk-ant");

        let stray = SnapshotChunk { revision: 4, ..Default::default() };
        let mut assembly = SnapshotAssembly::start(first_chunk()).unwrap();
        assert!(assembly.add(&stray).is_err());
        assert_eq!(SnapshotAssembly::start(stray).unwrap_err(), ApplyError::MissingFirstChunk);
    }

    #[test]
    fn deltas_apply_without_touching_the_original() {
        let base = SnapshotAssembly::start(first_chunk()).unwrap().finish();
        let delta = Delta {
            revision: 4,
            changes: vec![
                upsert(change::Change::KeyUpsert(key("a", false, 0))),
                upsert(change::Change::KeyUpsert(key("c", true, 0))),
                upsert(change::Change::ProviderUpsert(provider("openai", "sk-oa"))),
                upsert(change::Change::ProviderDelete("anthropic".into())),
                upsert(change::Change::MasterKeyHash(Vec::new())),
            ],
        };
        let next = base.apply(&delta).unwrap();
        assert_eq!(next.revision, 4);
        assert!(!next.keys.get(&KeyHash::of("a")).unwrap().enabled);
        assert!(next.keys.contains_key(&KeyHash::of("c")));
        assert!(next.provider(ProviderKind::Anthropic).is_none());
        assert!(next.provider(ProviderKind::OpenAi).is_some());
        assert_eq!(next.master_key, None);
        // The previous revision is intact: requests still reading it see a whole state.
        assert!(base.keys.get(&KeyHash::of("a")).unwrap().enabled);
        assert_eq!(base.revision, 3);

        let deleted = next
            .apply(&Delta {
                revision: 5,
                changes: vec![upsert(change::Change::KeyDelete(KeyHash::of("c").as_bytes().to_vec()))],
            })
            .unwrap();
        assert!(!deleted.keys.contains_key(&KeyHash::of("c")));
    }

    #[test]
    fn invalid_changes_are_rejected_whole() {
        let base = SnapshotAssembly::start(first_chunk()).unwrap().finish();
        for (change, expected) in [
            (change::Change::ProviderUpsert(provider("gemini", "")), "unknown provider"),
            (change::Change::ProviderUpsert(provider("openai", "bad\ncredential")), "credential"),
            (change::Change::KeyUpsert(KeyConfig { hash: vec![1, 2], ..key("x", true, 0) }), "32 bytes"),
            (change::Change::MasterKeyHash(vec![1]), "master-key"),
            (
                change::Change::ProviderUpsert(ProviderConfig {
                    default_headers: vec![HeaderField { name: "authorization".into(), value: "Bearer x".into() }],
                    ..provider("openai", "sk")
                }),
                "cannot be a default header",
            ),
            (
                change::Change::ProviderUpsert(ProviderConfig {
                    client_certificate_pem: "not pem".into(),
                    client_key_pem: "not pem".into(),
                    ..provider("vllm", "")
                }),
                "client certificate",
            ),
            (
                change::Change::ProviderUpsert(ProviderConfig { client_key_pem: "key".into(), ..provider("vllm", "") }),
                "both a certificate and a key",
            ),
        ] {
            let delta = Delta {
                revision: 4,
                changes: vec![upsert(change::Change::KeyUpsert(key("z", true, 0))), upsert(change)],
            };
            let err = base.apply(&delta).unwrap_err();
            assert!(err.to_string().contains(expected), "{err}");
        }
    }

    #[test]
    fn provider_network_settings_survive_the_cache() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["dp".into()]).unwrap().self_signed(&key).unwrap();
        let openrouter = ProviderConfig {
            default_headers: vec![HeaderField { name: "http-referer".into(), value: "https://example.com".into() }],
            client_certificate_pem: cert.pem(),
            client_key_pem: key.serialize_pem(),
            ca_pem: cert.pem(),
            ..provider("openrouter", "sk-or")
        };
        let chunk = SnapshotChunk { last: true, providers: vec![openrouter.clone()], ..first_chunk() };
        let snapshot = snapshot_from_chunk(chunk).unwrap();
        let upstream = snapshot.provider(ProviderKind::OpenRouter).unwrap();
        assert_eq!(upstream.default_headers().len(), 1);
        let tls = upstream.tls().unwrap();
        assert!(tls.identity.is_some() && tls.cas.len() == 1);
        assert!(!format!("{upstream:?}").contains("PRIVATE KEY"));

        let again = snapshot_from_chunk(snapshot.to_chunk()).unwrap().to_chunk();
        // The cache keeps the single credential as the one-credential set `default`.
        let cached = ProviderConfig {
            credential: String::new(),
            credentials: vec![UpstreamCredential {
                name: "default".into(),
                secret: "sk-or".into(),
                weight: 1,
                enabled: true,
            }],
            ..openrouter
        };
        assert_eq!(again.providers.iter().find(|p| p.name == "openrouter"), Some(&cached));
    }

    #[test]
    fn a_credential_set_wins_over_the_single_credential_and_is_checked() {
        let set = |name: &str| ProviderConfig {
            credentials: vec![
                UpstreamCredential { name: "a".into(), secret: "sk-a".into(), weight: 3, enabled: true },
                UpstreamCredential { name: name.into(), secret: "sk-b".into(), weight: 1, enabled: false },
            ],
            ..provider("openai", "sk-old")
        };
        let chunk = SnapshotChunk { last: true, providers: vec![set("b")], ..first_chunk() };
        let snapshot = snapshot_from_chunk(chunk).unwrap();
        let upstream = snapshot.provider(ProviderKind::OpenAi).unwrap();
        let names: Vec<_> = upstream.credentials().iter().map(|c| (c.name.to_string(), c.weight, c.enabled)).collect();
        assert_eq!(names, [("a".to_owned(), 3, true), ("b".to_owned(), 1, false)]);
        assert_eq!(upstream.credentials().get("a").unwrap().header(), "Bearer sk-a");
        let again = snapshot_from_chunk(snapshot.to_chunk()).unwrap();
        assert_eq!(again.provider(ProviderKind::OpenAi).unwrap().credentials().iter().count(), 2);

        let chunk = SnapshotChunk { last: true, providers: vec![set("b\"}")], ..first_chunk() };
        assert!(matches!(snapshot_from_chunk(chunk), Err(ApplyError::CredentialName { .. })));
    }

    fn rotated_key(secret: &str, previous: &str, expires_at: i64) -> KeyConfig {
        KeyConfig {
            previous_hash: KeyHash::of(previous).as_bytes().to_vec(),
            previous_expires_at: expires_at,
            ..key(secret, true, 0)
        }
    }

    fn delta(revision: u64, changes: Vec<change::Change>) -> Delta {
        Delta { revision, changes: changes.into_iter().map(upsert).collect() }
    }

    fn delete(secret: &str) -> change::Change {
        change::Change::KeyDelete(KeyHash::of(secret).as_bytes().to_vec())
    }

    #[test]
    fn a_rotation_keeps_the_previous_secret_until_its_grace_ends_and_a_delete_stops_both() {
        let base = SnapshotAssembly::start(first_chunk()).unwrap().finish();
        let lookup = |snapshot: &Snapshot, secret: &str, now: i64| {
            snapshot.keys.lookup(&KeyHash::of(secret), || now).map(|key| key.id)
        };
        // Rotation as the control plane sends it: the replaced hash's delete, then the upsert.
        let rotated =
            base.apply(&delta(4, vec![delete("a"), change::Change::KeyUpsert(rotated_key("b", "a", 1000))])).unwrap();
        assert_eq!(lookup(&rotated, "a", 999), Some(KeyId([7; 16])), "the old secret is the same key");
        assert_eq!(lookup(&rotated, "b", 999), Some(KeyId([7; 16])));
        assert_eq!(lookup(&rotated, "a", 1000), None, "and stops when its grace ends");
        assert_eq!(lookup(&base, "b", 0), None);

        // The cache keeps the previous secret.
        let cached = snapshot_from_chunk(rotated.to_chunk()).unwrap();
        assert_eq!(cached.keys, rotated.keys);
        assert_eq!(lookup(&cached, "a", 999), Some(KeyId([7; 16])));

        // Rotating again during the grace replaces the previous secret: `a` stops at once.
        let again = rotated
            .apply(&delta(5, vec![delete("b"), change::Change::KeyUpsert(rotated_key("c", "b", 2000))]))
            .unwrap();
        assert_eq!(lookup(&again, "a", 0), None);
        assert_eq!(lookup(&again, "b", 1999), Some(KeyId([7; 16])));
        assert!(!again.keys.contains_key(&KeyHash::of("b")), "b is no longer a current secret");

        // An update after the grace carries no previous secret and drops it.
        let updated = again.apply(&delta(6, vec![change::Change::KeyUpsert(key("c", false, 0))])).unwrap();
        assert_eq!(updated.keys.previous_of(&KeyHash::of("c")), None);
        assert_eq!(lookup(&updated, "b", 0), None);

        // Deleting the key (by its current hash) stops both secrets.
        let deleted = again.apply(&delta(6, vec![delete("c")])).unwrap();
        assert_eq!(lookup(&deleted, "b", 0), None);
        assert_eq!(lookup(&deleted, "c", 0), None);
        assert!(deleted.keys.is_empty());

        // A malformed previous hash is refused like a malformed hash.
        let bad = KeyConfig { previous_hash: vec![1; 3], ..key("z", true, 0) };
        assert_eq!(base.apply(&delta(4, vec![change::Change::KeyUpsert(bad)])).unwrap_err(), ApplyError::KeyHash(3));
    }

    #[test]
    fn limits_survive_the_cache_and_keys_without_them_hold_no_policy() {
        let limits = aurora_proto::v1::KeyLimits { requests_per_minute: 30, max_concurrent: 2, ..Default::default() };
        let limited = KeyConfig { limits: Some(limits), ..key("l", true, 0) };
        let defaults = aurora_proto::v1::KeyLimits { tokens_per_minute: 500, ..Default::default() };
        let settings = ConfigSettings {
            passthrough_enabled: true,
            default_key_limits: Some(defaults),
            limit_fallback: aurora_proto::v1::LimitFallback::Closed as i32,
            ..Default::default()
        };
        let chunk = SnapshotChunk {
            last: true,
            settings: Some(settings),
            keys: vec![limited, key("a", true, 0)],
            ..first_chunk()
        };
        let snapshot = snapshot_from_chunk(chunk).unwrap();
        let policy = snapshot.keys.get(&KeyHash::of("l")).unwrap().policy.clone().unwrap();
        assert_eq!(policy.limits(), Some(&limits_from_proto(&limits)));
        assert!(snapshot.keys.get(&KeyHash::of("a")).unwrap().policy.is_none());
        assert_eq!(snapshot.limits.fallback, crate::limits::Fallback::Closed);

        let again = snapshot_from_chunk(snapshot.to_chunk()).unwrap();
        assert_eq!(again.limits, snapshot.limits);
        assert_eq!(again.keys, snapshot.keys);
        let cached = again.to_chunk();
        assert_eq!(cached.keys.iter().find(|k| k.hash == KeyHash::of("l").as_bytes()).unwrap().limits, Some(limits));
        assert_eq!(cached.settings.unwrap().default_key_limits, Some(defaults));

        // A settings change replaces the defaults; a key change keeps the policy's equality.
        let cleared = again
            .apply(&Delta {
                revision: 4,
                changes: vec![upsert(change::Change::Settings(ConfigSettings {
                    passthrough_enabled: true,
                    ..Default::default()
                }))],
            })
            .unwrap();
        assert_eq!(cleared.limits, LimitSettings::default());
    }

    #[test]
    fn unknown_provider_bits_never_widen_a_key() {
        let (_, managed) = key_from(&key("a", true, 1 << 9)).unwrap();
        assert_eq!(managed.allowed_providers, Some(ProviderSet::empty()));
        let (_, managed) = key_from(&key("a", true, 0)).unwrap();
        assert_eq!(managed.allowed_providers, None);
    }
}
