//! The records the store keeps and the patches that change them.
//!
//! Records are validated domain values: the admin API validates requests before building a
//! patch, so the store never sees an unknown provider or a malformed base URL. Anything holding
//! an upstream credential has a hand-written `Debug` that never prints it.

use std::fmt;
use std::time::SystemTime;

use aurora_core::{
    BaseUrl, DefaultHeaders, EndpointRule, KeyHash, KeyLimits, KeyLimitsError, LimitFallback, LimitsUpdate,
    ProviderKind, ProviderSet,
};
use aurora_proto::v1::{ConfigSettings, HeaderField, KeyConfig, ProviderConfig};
use uuid::Uuid;

use super::Revision;
use super::credentials::CredentialSet;
use crate::time;

/// An upstream provider credential. Write-only: it is shown to nobody but data planes, and its
/// `Debug` prints only the fingerprint.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential(String);

impl Credential {
    pub fn new(secret: impl Into<String>) -> Self {
        Credential(secret.into())
    }

    /// The first 8 hex digits of the credential's SHA-256.
    pub fn fingerprint(&self) -> String {
        KeyHash::of(&self.0).fingerprint()
    }

    /// The plaintext, for the config stream and the database only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credential({})", self.fingerprint())
    }
}

/// A gateway key as stored. The secret is not part of it: only its hash and redacted form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    pub hash: KeyHash,
    pub redacted: String,
    pub enabled: bool,
    pub expires_at: Option<SystemTime>,
    /// Empty: every provider is allowed.
    pub allowed_providers: ProviderSet,
    /// Empty: every endpoint of the allowed providers.
    pub allowed_endpoints: Vec<EndpointRule>,
    /// The key's own limits; `None`: the default limits apply (see [`Settings`]).
    pub limits: Option<KeyLimits>,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
    pub revoked_at: Option<SystemTime>,
    /// The secret the last rotation replaced, kept (as a hash) until another rotation replaces
    /// it; accepted only until its `expires_at` (see `store/key_rotation.rs`).
    pub previous: Option<PreviousSecret>,
}

/// A rotated-out secret: its hash, its redacted form and the end of its grace period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousSecret {
    pub hash: KeyHash,
    pub redacted: String,
    pub expires_at: SystemTime,
}

impl KeyRecord {
    /// The previous secret if it is still in its grace period at `now`.
    pub fn previous_in_grace(&self, now: SystemTime) -> Option<&PreviousSecret> {
        self.previous.as_ref().filter(|previous| previous.expires_at > now)
    }

    /// The key as data planes see it. A revoked key is sent as disabled. A previous secret
    /// still in grace travels with it (its expiry is enforced by every data plane at lookup);
    /// one whose grace has ended is left out.
    pub fn to_config(&self) -> KeyConfig {
        let previous = self.previous_in_grace(time::now());
        KeyConfig {
            hash: self.hash.as_bytes().to_vec(),
            id: self.id.as_bytes().to_vec(),
            enabled: self.enabled && self.revoked_at.is_none(),
            expires_at: self.expires_at.map(time::to_unix_secs).unwrap_or(0),
            allowed_providers: self.allowed_providers.bits(),
            allowed_endpoints: self.allowed_endpoints.iter().map(ToString::to_string).collect(),
            previous_hash: previous.map(|p| p.hash.as_bytes().to_vec()).unwrap_or_default(),
            previous_expires_at: previous.map(|p| time::to_unix_secs(p.expires_at)).unwrap_or(0),
            limits: self.limits.as_ref().map(super::key_limits::to_config),
        }
    }
}

/// The fields of a key to create; `hash` and `redacted` come from a freshly generated secret.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub name: String,
    pub description: String,
    pub hash: KeyHash,
    pub redacted: String,
    pub enabled: bool,
    pub expires_at: Option<SystemTime>,
    pub allowed_providers: ProviderSet,
    pub allowed_endpoints: Vec<EndpointRule>,
    /// `None`: the default limits apply.
    pub limits: Option<KeyLimits>,
}

/// A partial update of a key: `None` leaves a field alone.
#[derive(Debug, Clone, Default)]
pub struct KeyPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
    /// `Some(None)` removes the expiry.
    pub expires_at: Option<Option<SystemTime>>,
    pub allowed_providers: Option<ProviderSet>,
    pub allowed_endpoints: Option<Vec<EndpointRule>>,
    /// Applied to the key's own limits inside the update's transaction (so two patches of
    /// different limits never lose one another).
    pub limits: Option<LimitsUpdate>,
}

/// A client certificate chain and its private key (PEM), for mutual TLS with an upstream. The
/// key is a secret: write-only through the API, hidden from `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub certificate_pem: String,
    key_pem: String,
}

impl ClientIdentity {
    pub fn new(certificate_pem: impl Into<String>, key_pem: impl Into<String>) -> Self {
        ClientIdentity { certificate_pem: certificate_pem.into(), key_pem: key_pem.into() }
    }

    /// The private key, for the config stream and the database only.
    pub fn expose_key(&self) -> &str {
        &self.key_pem
    }
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientIdentity(certificate {})", KeyHash::of(&self.certificate_pem).fingerprint())
    }
}

/// A provider's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderRecord {
    pub kind: ProviderKind,
    pub enabled: bool,
    pub base_url: BaseUrl,
    /// The provider's credentials; the one named `default` is what `credential` patches set.
    pub credentials: CredentialSet,
    pub default_headers: DefaultHeaders,
    pub client_identity: Option<ClientIdentity>,
    /// CA certificates (PEM) trusted for this provider besides the data planes' roots.
    pub ca_pem: Option<String>,
    pub updated_at: SystemTime,
}

impl ProviderRecord {
    /// The record a provider gets when one is first created: enabled, default base URL, no
    /// credential.
    pub fn new_default(kind: ProviderKind, now: SystemTime) -> Self {
        ProviderRecord {
            kind,
            enabled: true,
            base_url: kind.default_base_url_parsed(),
            credentials: CredentialSet::default(),
            default_headers: DefaultHeaders::default(),
            client_identity: None,
            ca_pem: None,
            updated_at: now,
        }
    }

    /// Whether the two records configure the same thing (ignoring timestamps).
    pub fn same_config(&self, other: &ProviderRecord) -> bool {
        self.kind == other.kind
            && self.enabled == other.enabled
            && self.base_url == other.base_url
            && self.credentials.same_config(&other.credentials)
            && self.default_headers == other.default_headers
            && self.client_identity == other.client_identity
            && self.ca_pem == other.ca_pem
    }

    pub fn to_config(&self) -> ProviderConfig {
        ProviderConfig {
            name: self.kind.as_str().to_owned(),
            enabled: self.enabled,
            base_url: self.base_url.as_str().to_owned(),
            // For data planes that predate credential sets; newer ones read `credentials`.
            credential: self.credentials.first_enabled().map(|c| c.expose().to_owned()).unwrap_or_default(),
            credentials: self.credentials.to_config(),
            default_headers: self
                .default_headers
                .iter()
                .map(|h| HeaderField { name: h.name().to_owned(), value: h.value().to_owned() })
                .collect(),
            client_certificate_pem: self
                .client_identity
                .as_ref()
                .map(|c| c.certificate_pem.clone())
                .unwrap_or_default(),
            client_key_pem: self.client_identity.as_ref().map(|c| c.expose_key().to_owned()).unwrap_or_default(),
            ca_pem: self.ca_pem.clone().unwrap_or_default(),
        }
    }
}

/// A partial update of a provider: `None` leaves a field alone.
#[derive(Debug, Clone, Default)]
pub struct ProviderPatch {
    pub enabled: Option<bool>,
    pub base_url: Option<BaseUrl>,
    /// Sets (`Some(Some)`) or removes (`Some(None)`) the credential named `default`.
    pub credential: Option<Option<Credential>>,
    /// Replaces the whole list.
    pub default_headers: Option<DefaultHeaders>,
    /// `Some(None)` removes the client certificate.
    pub client_identity: Option<Option<ClientIdentity>>,
    /// `Some(None)` removes the CA bundle.
    pub ca_pem: Option<Option<String>>,
}

impl ProviderPatch {
    pub(crate) fn apply(self, record: &mut ProviderRecord, now: SystemTime) {
        if let Some(enabled) = self.enabled {
            record.enabled = enabled;
        }
        if let Some(base_url) = self.base_url {
            record.base_url = base_url;
        }
        if let Some(credential) = self.credential {
            record.credentials.set_default(credential, now);
        }
        if let Some(headers) = self.default_headers {
            record.default_headers = headers;
        }
        if let Some(identity) = self.client_identity {
            record.client_identity = identity;
        }
        if let Some(ca_pem) = self.ca_pem {
            record.ca_pem = ca_pem;
        }
    }
}

/// The global settings: the passthrough switches ([`aurora_core::Settings`]) and the limits of
/// keys without their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub passthrough_enabled: bool,
    pub v1_alias_enabled: bool,
    /// `None`: keys without their own limits have none.
    pub default_key_limits: Option<KeyLimits>,
    pub limit_fallback: LimitFallback,
}

impl From<aurora_core::Settings> for Settings {
    fn from(switches: aurora_core::Settings) -> Self {
        Settings {
            passthrough_enabled: switches.passthrough_enabled,
            v1_alias_enabled: switches.v1_alias_enabled,
            default_key_limits: None,
            limit_fallback: LimitFallback::default(),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        aurora_core::Settings::default().into()
    }
}

/// The settings as the config stream carries them.
pub(crate) fn settings_config(settings: Settings) -> ConfigSettings {
    ConfigSettings {
        passthrough_enabled: settings.passthrough_enabled,
        v1_alias_enabled: settings.v1_alias_enabled,
        default_key_limits: settings.default_key_limits.as_ref().map(super::key_limits::to_config),
        limit_fallback: super::key_limits::fallback_config(settings.limit_fallback) as i32,
    }
}

/// A partial update of the settings.
#[derive(Debug, Clone, Copy, Default)]
pub struct SettingsPatch {
    pub passthrough_enabled: Option<bool>,
    pub v1_alias_enabled: Option<bool>,
    pub default_key_limits: Option<LimitsUpdate>,
    pub limit_fallback: Option<LimitFallback>,
}

impl SettingsPatch {
    pub fn is_empty(&self) -> bool {
        self.passthrough_enabled.is_none()
            && self.v1_alias_enabled.is_none()
            && self.default_key_limits.is_none()
            && self.limit_fallback.is_none()
    }

    /// Fails (changing nothing) when the patched default limits are inconsistent.
    pub(crate) fn apply(self, settings: &mut Settings) -> Result<(), KeyLimitsError> {
        if let Some(update) = self.default_key_limits {
            settings.default_key_limits = update.apply(settings.default_key_limits)?;
        }
        if let Some(on) = self.passthrough_enabled {
            settings.passthrough_enabled = on;
        }
        if let Some(on) = self.v1_alias_enabled {
            settings.v1_alias_enabled = on;
        }
        if let Some(fallback) = self.limit_fallback {
            settings.limit_fallback = fallback;
        }
        Ok(())
    }
}

/// The settings as the admin API shows them, read in one transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettingsView {
    pub settings: Settings,
    /// The providers whose record is enabled.
    pub enabled_providers: ProviderSet,
    pub revision: Revision,
}

/// Everything a data plane needs, at one revision, in the config stream's own types.
#[derive(Clone, PartialEq)]
pub struct Snapshot {
    pub revision: Revision,
    pub settings: ConfigSettings,
    /// In [`ProviderKind::ALL`] order.
    pub providers: Vec<ProviderConfig>,
    pub master_key_hash: Option<KeyHash>,
    /// In id (creation) order.
    pub keys: Vec<KeyConfig>,
}

/// Hand-written: provider configs hold credentials.
impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let providers: Vec<&str> = self.providers.iter().map(|p| p.name.as_str()).collect();
        f.debug_struct("Snapshot")
            .field("revision", &self.revision)
            .field("settings", &self.settings)
            .field("providers", &providers)
            .field("master_key_hash", &self.master_key_hash)
            .field("keys", &self.keys.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_reach_debug_output() {
        let mut record = ProviderRecord::new_default(ProviderKind::OpenAi, SystemTime::UNIX_EPOCH);
        record.credentials.set_default(Some(Credential::new("sk-very-secret")), SystemTime::UNIX_EPOCH);
        let record = ProviderRecord {
            client_identity: Some(ClientIdentity::new("CERT", "-----BEGIN PRIVATE KEY----- very-secret-key")),
            ..record
        };
        let debug = format!("{record:?}");
        assert!(!debug.contains("sk-very-secret") && !debug.contains("very-secret-key"), "{debug}");
        assert!(debug.contains(&Credential::new("sk-very-secret").fingerprint()));
        assert!(!format!("{:?}", record.to_config()).contains("sk-very-secret"));
    }
}
