//! A key's policy as the data plane holds it: built once per snapshot change, shared by every
//! revision that keeps the key unchanged, read without locks.

use std::sync::{Arc, OnceLock};

use aurora_core::{EndpointRule, ProviderKind};
use http::Method;

use super::{KeyLimiter, KeyLimits};

/// What a key is allowed beyond its providers. Shared (`Arc`) between revisions.
#[derive(Debug, Clone, Default)]
pub struct KeyPolicy {
    /// `None`: every endpoint. `Some(rules)`: only what a rule matches; an empty slice (every
    /// rule was one this build cannot read) allows nothing, never everything.
    endpoints: Option<Box<[EndpointRule]>>,
    /// The key's own limits; `None`: the snapshot's default limits apply. `Some` with every
    /// field zero is an explicit "no limits" that the defaults do not override.
    limits: Option<KeyLimits>,
    /// The key's limiter state, found in the registry on first use and kept here so later
    /// requests reach it from the key without a lookup. The registry holds the same `Arc`, so
    /// a new policy for the same key (any change to it) finds the same counters.
    limiter: OnceLock<Arc<KeyLimiter>>,
}

/// Equal when they enforce the same (the limiter is state, not configuration).
impl PartialEq for KeyPolicy {
    fn eq(&self, other: &Self) -> bool {
        self.endpoints == other.endpoints && self.limits == other.limits
    }
}

impl Eq for KeyPolicy {}

/// The request is outside the key's endpoint allow-list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "this gateway key is not allowed to call this endpoint ({method} on provider {provider}); see its allowed endpoints"
)]
pub struct EndpointNotAllowed {
    pub provider: ProviderKind,
    pub method: Method,
}

impl KeyPolicy {
    /// The policy for a key whose allow-list is `rules` (canonical text, as the config stream
    /// carries it). Rules this build cannot parse are dropped and logged; the rest still bind.
    /// `None` when there is nothing to enforce.
    pub fn from_rules<'a>(rules: impl ExactSizeIterator<Item = &'a str>) -> Option<Self> {
        KeyPolicy::new(rules, None)
    }

    /// The policy for a key with allow-list `rules` and its own `limits` (if it has any);
    /// `None` when there is nothing to hold, which keeps such keys one pointer wide.
    pub fn new<'a>(rules: impl ExactSizeIterator<Item = &'a str>, limits: Option<KeyLimits>) -> Option<Self> {
        if rules.len() == 0 {
            return limits.map(|limits| KeyPolicy { limits: Some(limits), ..KeyPolicy::default() });
        }
        let parsed: Box<[EndpointRule]> = rules
            .filter_map(|text| match text.parse() {
                Ok(rule) => Some(rule),
                Err(err) => {
                    tracing::warn!(rule = %aurora_core::text::excerpt(text), error = %err, "endpoint rule ignored: this data plane cannot read it");
                    None
                }
            })
            .collect();
        Some(KeyPolicy { endpoints: Some(parsed), limits, limiter: OnceLock::new() })
    }

    /// The key's own limits, if it has any (see the field).
    pub fn limits(&self) -> Option<&KeyLimits> {
        self.limits.as_ref()
    }

    /// The key's limiter state, from `find` the first time.
    pub fn limiter(&self, find: impl FnOnce() -> Arc<KeyLimiter>) -> &Arc<KeyLimiter> {
        self.limiter.get_or_init(find)
    }

    /// The rules, when the key has an allow-list.
    pub fn endpoints(&self) -> Option<&[EndpointRule]> {
        self.endpoints.as_deref()
    }

    /// Whether the key may call `method` on `endpoint` (raw, `/v1` alias applied) of `provider`.
    pub fn check_endpoint(
        &self,
        provider: ProviderKind,
        method: &Method,
        endpoint: &str,
    ) -> Result<(), EndpointNotAllowed> {
        match &self.endpoints {
            Some(rules) if !aurora_core::endpoint_allowed(rules, provider, method.as_str(), endpoint) => {
                Err(EndpointNotAllowed { provider, method: method.clone() })
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_rules_no_policy_and_unreadable_rules_allow_nothing() {
        assert_eq!(KeyPolicy::from_rules(std::iter::empty()), None);
        let policy = KeyPolicy::from_rules(["anthropic POST /messages"].into_iter()).unwrap();
        let anthropic = ProviderKind::Anthropic;
        assert!(policy.check_endpoint(anthropic, &Method::POST, "messages").is_ok());
        let err = policy.check_endpoint(anthropic, &Method::POST, "files").unwrap_err();
        assert_eq!(err, EndpointNotAllowed { provider: anthropic, method: Method::POST });
        // A rule from a newer control plane that this build cannot read: the key is limited to
        // nothing rather than opened to everything.
        let unreadable = KeyPolicy::from_rules(["anthropic QUERY /messages"].into_iter()).unwrap();
        assert_eq!(unreadable.endpoints(), Some(&[][..]));
        assert!(unreadable.check_endpoint(anthropic, &Method::POST, "messages").is_err());
    }

    #[test]
    fn limits_alone_make_a_policy_and_take_part_in_equality() {
        let limits = KeyLimits { requests_per_minute: 5, ..Default::default() };
        let policy = KeyPolicy::new(std::iter::empty(), Some(limits)).unwrap();
        assert_eq!(policy.limits(), Some(&limits));
        assert_eq!(policy.endpoints(), None);
        assert_ne!(Some(policy.clone()), KeyPolicy::new(std::iter::empty(), Some(KeyLimits::default())));
        let state = Arc::new(KeyLimiter::new(crate::snapshot::KeyId([0; 16])));
        let first = policy.limiter(|| state.clone()).clone();
        assert!(Arc::ptr_eq(&first, policy.limiter(|| unreachable!("found once"))));
    }
}
