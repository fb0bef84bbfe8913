//! The closed set of upstream providers Aurora can pass traffic through.
//!
//! A provider is a *kind* of upstream API: it fixes the default base URL, the header the
//! credential goes in, and the shape of the error bodies its SDKs understand. Operators can
//! change the base URL and credential, but not what kind of API sits behind a name.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One of the providers the passthrough API knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    #[serde(rename = "openai")]
    OpenAi,
    Anthropic,
    #[serde(rename = "openrouter")]
    OpenRouter,
    Zai,
    Vllm,
}

/// How the upstream credential is presented to a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthStyle {
    /// `x-api-key: <credential>` (Anthropic).
    XApiKey,
    /// `Authorization: Bearer <credential>` (OpenAI and the OpenAI-compatible providers).
    Bearer,
}

/// The JSON shape a provider's SDK expects an error body to have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorShape {
    /// `{"type":"error","error":{"type":..,"message":..}}`
    Anthropic,
    /// `{"error":{"message":..,"type":..,"code":..}}`
    OpenAi,
}

/// Returned when a provider name is not one Aurora knows; its message lists the known ones and
/// repeats no more than a short, escaped prefix of the name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown provider {name}; known providers: {known}", name = crate::text::excerpt(.name), known = ProviderKind::known_list())]
pub struct UnknownProvider {
    pub name: String,
}

impl ProviderKind {
    /// Every provider, in the canonical order used for listings.
    pub const ALL: [ProviderKind; 5] = [
        ProviderKind::OpenAi,
        ProviderKind::Anthropic,
        ProviderKind::OpenRouter,
        ProviderKind::Zai,
        ProviderKind::Vllm,
    ];

    /// The name used in routes (`/p/{name}/...`), APIs and environment variables.
    pub const fn as_str(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::OpenRouter => "openrouter",
            ProviderKind::Zai => "zai",
            ProviderKind::Vllm => "vllm",
        }
    }

    /// The upstream base URL used when the operator configures none.
    pub const fn default_base_url(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "https://api.openai.com/v1",
            ProviderKind::Anthropic => "https://api.anthropic.com/v1",
            ProviderKind::OpenRouter => "https://openrouter.ai/api/v1",
            ProviderKind::Zai => "https://api.z.ai/api/paas/v4",
            ProviderKind::Vllm => "http://localhost:8000/v1",
        }
    }

    /// The environment variable holding this provider's upstream credential.
    pub const fn credential_env(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "OPENAI_API_KEY",
            ProviderKind::Anthropic => "ANTHROPIC_API_KEY",
            ProviderKind::OpenRouter => "OPENROUTER_API_KEY",
            ProviderKind::Zai => "ZAI_API_KEY",
            ProviderKind::Vllm => "VLLM_API_KEY",
        }
    }

    /// The environment variable overriding this provider's base URL.
    pub const fn base_url_env(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "OPENAI_BASE_URL",
            ProviderKind::Anthropic => "ANTHROPIC_BASE_URL",
            ProviderKind::OpenRouter => "OPENROUTER_BASE_URL",
            ProviderKind::Zai => "ZAI_BASE_URL",
            ProviderKind::Vllm => "VLLM_BASE_URL",
        }
    }

    /// [`Self::default_base_url`], parsed.
    pub fn default_base_url_parsed(self) -> crate::BaseUrl {
        crate::BaseUrl::parse(self.default_base_url())
            .unwrap_or_else(|err| unreachable!("built-in base URL is invalid: {err}"))
    }

    pub const fn auth_style(self) -> AuthStyle {
        match self {
            ProviderKind::Anthropic => AuthStyle::XApiKey,
            _ => AuthStyle::Bearer,
        }
    }

    pub const fn error_shape(self) -> ErrorShape {
        match self {
            ProviderKind::Anthropic => ErrorShape::Anthropic,
            _ => ErrorShape::OpenAi,
        }
    }

    /// Whether requests may be forwarded without an upstream credential. A self-hosted vLLM
    /// often runs without one; the hosted providers would only answer 401.
    pub const fn credential_optional(self) -> bool {
        matches!(self, ProviderKind::Vllm)
    }

    const fn bit(self) -> u8 {
        1 << (self as u8)
    }

    /// `openai, anthropic, openrouter, zai, vllm`, for error messages.
    pub fn known_list() -> String {
        ProviderSet::all().to_string()
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProviderKind {
    type Err = UnknownProvider;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        ProviderKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
            .ok_or_else(|| UnknownProvider { name: name.to_owned() })
    }
}

/// A set of providers, stored as a bitmask so that checking membership on the request path is
/// one AND instruction and copying the set never allocates.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ProviderSet(u8);

impl ProviderSet {
    pub const fn empty() -> Self {
        ProviderSet(0)
    }

    pub fn all() -> Self {
        ProviderKind::ALL.into_iter().collect()
    }

    pub const fn contains(self, kind: ProviderKind) -> bool {
        self.0 & kind.bit() != 0
    }

    pub fn insert(&mut self, kind: ProviderKind) {
        self.0 |= kind.bit();
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = ProviderKind> {
        ProviderKind::ALL.into_iter().filter(move |kind| self.contains(*kind))
    }

    /// The set as the config stream carries it: bit i is [`ProviderKind::ALL`]`[i]`.
    pub const fn bits(self) -> u32 {
        self.0 as u32
    }

    /// The inverse of [`Self::bits`]. Bits of providers this build does not know are dropped,
    /// so callers must not read an empty result as "every provider" when `bits` was not 0.
    pub fn from_bits(bits: u32) -> Self {
        ProviderKind::ALL.into_iter().filter(|kind| bits & u32::from(kind.bit()) != 0).collect()
    }

    /// Parses a comma-separated list such as `openai, anthropic`; blanks are ignored.
    pub fn parse_list(list: &str) -> Result<Self, UnknownProvider> {
        list.split(',').map(str::trim).filter(|name| !name.is_empty()).map(str::parse).collect()
    }
}

impl FromIterator<ProviderKind> for ProviderSet {
    fn from_iter<I: IntoIterator<Item = ProviderKind>>(iter: I) -> Self {
        let mut set = ProviderSet::empty();
        for kind in iter {
            set.insert(kind);
        }
        set
    }
}

impl fmt::Display for ProviderSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("(none)");
        }
        for (i, kind) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(kind.as_str())?;
        }
        Ok(())
    }
}

impl fmt::Debug for ProviderSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl Serialize for ProviderSet {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for ProviderSet {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let kinds = Vec::<ProviderKind>::deserialize(deserializer)?;
        Ok(kinds.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for kind in ProviderKind::ALL {
            assert_eq!(kind.as_str().parse::<ProviderKind>(), Ok(kind));
        }
    }

    #[test]
    fn unknown_provider_lists_known_ones() {
        let err = "gemini".parse::<ProviderKind>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown provider \"gemini\"; known providers: openai, anthropic, openrouter, zai, vllm"
        );
    }

    #[test]
    fn parses_lists_with_blanks() {
        let set = ProviderSet::parse_list(" anthropic, ,vllm ").unwrap();
        assert!(set.contains(ProviderKind::Anthropic));
        assert!(set.contains(ProviderKind::Vllm));
        assert!(!set.contains(ProviderKind::OpenAi));
        assert_eq!(set.to_string(), "anthropic, vllm");
        assert!(ProviderSet::parse_list("openai,bogus").is_err());
        assert!(ProviderSet::parse_list("").unwrap().is_empty());
    }

    #[test]
    fn bits_follow_the_canonical_order() {
        let set: ProviderSet = [ProviderKind::OpenAi, ProviderKind::Vllm].into_iter().collect();
        assert_eq!(set.bits(), 0b10001);
        assert_eq!(ProviderSet::from_bits(0b10001), set);
        assert!(ProviderSet::from_bits(1 << 7).is_empty());
    }

    #[test]
    fn default_base_urls_are_valid() {
        for kind in ProviderKind::ALL {
            crate::BaseUrl::parse(kind.default_base_url()).unwrap();
        }
    }
}
