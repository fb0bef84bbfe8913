//! The gateway configuration a data plane enforces: one immutable value per revision.
//!
//! Every source (a JSON file, the environment, and the control-plane stream) produces the same
//! [`Snapshot`] type, validated once when it is built, so the request path can trust it and
//! never re-parses anything. Keys live in a [`KeyTable`]: a delta that changes one key
//! shares every untouched entry with the previous revision instead of copying a million keys.

mod file;
mod key_table;
mod previous_secrets;
pub(crate) mod proto;
pub mod provider_tls;

use std::fmt;
use std::num::NonZeroI64;
use std::sync::Arc;

pub use aurora_core::Settings;
use aurora_core::{BaseUrl, DefaultHeaders, KeyHash, ProviderKind, ProviderSet};
use http::{HeaderName, HeaderValue};

pub use crate::credentials::InvalidCredential;
use crate::credentials::{CredentialSet, UpstreamCredential};
use crate::limits::{KeyPolicy, LimitSettings};
use crate::upstream::target::Target;

pub use file::{SnapshotFile, SnapshotFileError};
pub use key_table::KeyTable;
pub use proto::{ApplyError, SnapshotAssembly};
pub use provider_tls::{ProviderTls, ProviderTlsError};

/// A complete, validated gateway configuration at one revision.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub revision: u64,
    pub settings: Settings,
    /// Default key limits and the fallback without a lease (issue 13).
    pub limits: LimitSettings,
    providers: [Option<Arc<Upstream>>; ProviderKind::ALL.len()],
    pub master_key: Option<KeyHash>,
    pub keys: KeyTable,
    /// The control plane's store history this revision belongs to (all zero when unknown, as
    /// for a file or the environment); echoed in the next `Hello`, so a replica is never
    /// resumed by deltas from a different history.
    pub store_id: [u8; 16],
}

/// A provider as the data plane uses it.
pub struct Upstream {
    pub kind: ProviderKind,
    pub enabled: bool,
    base_url: BaseUrl,
    /// `base_url` in the pieces each request's URI is built from (`None`: see [`Target::of`]).
    target: Option<Target>,
    /// The provider's credentials (often just one, named `default`), header values pre-built;
    /// each request picks one (see `credentials.rs`).
    credentials: CredentialSet,
    /// Added to each request unless the client sent the same header; built once per snapshot.
    default_headers: Box<[(HeaderName, HeaderValue)]>,
    /// The provider's own TLS material; `None` (the usual case) means the shared client.
    tls: Option<Arc<ProviderTls>>,
}

/// The name a single credential gets (the environment's `<PROVIDER>_API_KEY`, a JSON file's
/// `credential`, an old control plane's `ProviderConfig.credential`).
pub const DEFAULT_CREDENTIAL: &str = "default";

impl Upstream {
    /// A provider with at most one credential, named [`DEFAULT_CREDENTIAL`].
    pub fn new(
        kind: ProviderKind,
        enabled: bool,
        base_url: BaseUrl,
        credential: Option<&str>,
    ) -> Result<Self, InvalidCredential> {
        let credentials = credential
            .filter(|c| !c.is_empty())
            .map(|c| UpstreamCredential::new(kind, DEFAULT_CREDENTIAL, c, 1, true))
            .transpose()?;
        Ok(Upstream {
            kind,
            enabled,
            target: Target::of(&base_url).or_else(|| {
                tracing::error!(provider = %kind, "the base URL is not a valid HTTP URI; requests to this provider are refused");
                None
            }),
            base_url,
            credentials: CredentialSet::new(credentials.into_iter().collect()),
            default_headers: Box::default(),
            tls: None,
        })
    }

    /// With this credential set instead.
    pub fn with_credentials(mut self, credentials: Vec<UpstreamCredential>) -> Self {
        self.credentials = CredentialSet::new(credentials);
        self
    }

    pub fn base_url(&self) -> &BaseUrl {
        &self.base_url
    }

    /// The upstream URI of a request for `endpoint` with `query` (byte for byte).
    pub fn uri(&self, endpoint: &str, query: Option<&str>) -> Option<http::Uri> {
        self.target.as_ref()?.uri(endpoint, query)
    }

    pub fn credentials(&self) -> &CredentialSet {
        &self.credentials
    }

    /// With these default headers, already checked by the rules both planes share (so building
    /// the header values cannot fail).
    pub fn with_default_headers(mut self, headers: &DefaultHeaders) -> Self {
        self.default_headers = headers
            .iter()
            .filter_map(|h| {
                Some((HeaderName::from_bytes(h.name().as_bytes()).ok()?, HeaderValue::from_str(h.value()).ok()?))
            })
            .collect();
        self
    }

    pub fn with_tls(mut self, tls: Option<ProviderTls>) -> Self {
        self.tls = tls.map(Arc::new);
        self
    }

    pub fn default_headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.default_headers
    }

    pub fn tls(&self) -> Option<&Arc<ProviderTls>> {
        self.tls.as_ref()
    }

    /// The first credential's header value, for tests of single-credential sources.
    #[cfg(test)]
    pub(crate) fn credential(&self) -> Option<&HeaderValue> {
        self.credentials.iter().next().map(UpstreamCredential::header)
    }
}

/// Hand-written: the credential must never reach a log line.
impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("kind", &self.kind)
            .field("enabled", &self.enabled)
            .field("base_url", &self.base_url)
            .field("credentials", &self.credentials)
            .field("default_headers", &self.default_headers.len())
            .field("tls", &self.tls)
            .finish()
    }
}

/// A managed gateway key, as small as possible: a snapshot may hold millions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagedKey {
    pub id: KeyId,
    pub enabled: bool,
    /// Unix seconds; `None` never expires. (`NonZeroI64` keeps the option 8 bytes wide: with a
    /// million keys every byte of a key costs a megabyte.)
    pub expires_at: Option<NonZeroI64>,
    /// `None` means every provider.
    pub allowed_providers: Option<ProviderSet>,
    /// Endpoint allow-list and limits (issue 13); `None` for a key with none, which keeps such
    /// keys one pointer wide.
    pub policy: Option<Arc<KeyPolicy>>,
}

/// A key id (a UUID), kept as raw bytes and formatted only when logged.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub [u8; 16]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        uuid::Uuid::from_bytes(self.0).fmt(f)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Snapshot {
    pub fn new(revision: u64, settings: Settings, master_key: Option<KeyHash>) -> Self {
        Snapshot {
            revision,
            settings,
            limits: LimitSettings::default(),
            providers: Default::default(),
            master_key,
            keys: KeyTable::default(),
            store_id: [0; 16],
        }
    }

    /// The configuration described by the product page's variables alone: no managed keys,
    /// gateway auth on only when `AURORA_MASTER_KEY` is set.
    pub fn from_product_vars(vars: &aurora_core::ProductVars) -> Result<Self, InvalidCredential> {
        let mut snapshot = Snapshot::new(0, vars.settings(), vars.master_key_hash());
        let enabled = vars.enabled_providers();
        for kind in ProviderKind::ALL {
            let upstream =
                Upstream::new(kind, enabled.contains(kind), vars.base_url_or_default(kind), vars.credential(kind))?;
            snapshot.set_provider(upstream);
        }
        Ok(snapshot)
    }

    pub fn providers(&self) -> impl Iterator<Item = &Arc<Upstream>> {
        self.providers.iter().flatten()
    }

    pub fn provider(&self, kind: ProviderKind) -> Option<&Arc<Upstream>> {
        self.providers[kind as usize].as_ref()
    }

    pub fn set_provider(&mut self, upstream: Upstream) {
        let slot = upstream.kind as usize;
        self.providers[slot] = Some(Arc::new(upstream));
    }

    /// Takes over `previous`'s credential health (cooldowns, counters) for every credential
    /// this snapshot keeps unchanged. Only providers built for this snapshot (not yet shared)
    /// can adopt; shared ones come from `previous` and hold its health already.
    pub fn adopt_credential_health(&mut self, previous: &Snapshot) {
        for (slot, old) in self.providers.iter_mut().zip(&previous.providers) {
            if let (Some(new), Some(old)) = (slot.as_mut().and_then(Arc::get_mut), old) {
                new.credentials.adopt_health(&old.credentials);
            }
        }
    }

    pub fn remove_provider(&mut self, kind: ProviderKind) {
        self.providers[kind as usize] = None;
    }

    /// The providers a client may currently reach: listed in every "not found" error.
    pub fn enabled_providers(&self) -> ProviderSet {
        if !self.settings.passthrough_enabled {
            return ProviderSet::empty();
        }
        self.providers.iter().flatten().filter(|u| u.enabled).map(|u| u.kind).collect()
    }

    /// Gateway auth is on when a master key is configured or any managed key exists.
    pub fn auth_required(&self) -> bool {
        self.master_key.is_some() || !self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_headers_are_prebuilt_and_sensitive() {
        let anthropic = Upstream::new(
            ProviderKind::Anthropic,
            true,
            ProviderKind::Anthropic.default_base_url_parsed(),
            Some("sk-ant"),
        )
        .unwrap();
        assert_eq!(anthropic.credential().unwrap(), "sk-ant");
        assert!(anthropic.credential().unwrap().is_sensitive());
        assert!(!format!("{anthropic:?}").contains("sk-ant"));

        let openai =
            Upstream::new(ProviderKind::OpenAi, true, ProviderKind::OpenAi.default_base_url_parsed(), Some("sk-oa"))
                .unwrap();
        assert_eq!(openai.credential().unwrap(), "Bearer sk-oa");

        let bad = Upstream::new(ProviderKind::Zai, true, ProviderKind::Zai.default_base_url_parsed(), Some("a\nb"));
        assert_eq!(bad.unwrap_err(), InvalidCredential(ProviderKind::Zai));
    }

    #[test]
    fn a_managed_key_stays_small() {
        // With a million keys, every byte here is a megabyte of data-plane memory. The policy
        // pointer (issue 13: allow-lists and limits) costs 8 of the 40; keys without a policy
        // hold no allocation.
        assert_eq!(std::mem::size_of::<ManagedKey>(), 40);
    }

    #[test]
    fn enabled_providers_respect_the_routes_switch() {
        let mut snapshot = Snapshot::new(1, Settings::default(), None);
        let url = ProviderKind::Vllm.default_base_url_parsed();
        snapshot.set_provider(Upstream::new(ProviderKind::Vllm, true, url.clone(), None).unwrap());
        snapshot.set_provider(Upstream::new(ProviderKind::Zai, false, url, None).unwrap());
        assert_eq!(snapshot.enabled_providers().to_string(), "vllm");
        snapshot.settings.passthrough_enabled = false;
        assert!(snapshot.enabled_providers().is_empty());
    }
}
