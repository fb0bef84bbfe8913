//! Gateway authentication: is this request allowed to use this provider?
//!
//! The client presents an Aurora token as `Authorization: Bearer <token>` or as
//! `X-Api-Key: <token>` (many Anthropic clients can only set an API key). Only SHA-256 hashes
//! are ever compared: the master key in constant time, managed keys by hash lookup, which
//! reveals nothing about a secret with 256 bits of entropy.

use aurora_core::{KeyHash, ProviderKind};
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue};

use crate::snapshot::{KeyId, ManagedKey, Snapshot};

/// Who a request was authenticated as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    /// Gateway auth is off: no master key and no managed keys.
    Anonymous,
    MasterKey,
    Key(KeyId),
}

/// Why a request was refused. Also the label of the auth-failure metric, so it stays a small
/// closed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing gateway token: send `Authorization: Bearer <token>` or `X-Api-Key: <token>`")]
    Missing,
    #[error("invalid gateway token")]
    Unknown,
    #[error("this gateway key is disabled")]
    Disabled,
    #[error("this gateway key has expired")]
    Expired,
    #[error("this gateway key is not allowed to use provider {0}")]
    ProviderNotAllowed(ProviderKind),
}

impl AuthError {
    pub fn reason(self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Unknown => "unknown",
            AuthError::Disabled => "disabled",
            AuthError::Expired => "expired",
            AuthError::ProviderNotAllowed(_) => "provider_not_allowed",
        }
    }
}

const X_API_KEY: &str = "x-api-key";

/// Checks the request's token against `snapshot` for `provider`. `now` (Unix seconds) is only
/// read when a key has an expiry or the token is a rotated key's previous secret.
pub fn authenticate(
    snapshot: &Snapshot,
    headers: &HeaderMap,
    provider: ProviderKind,
    now: impl Fn() -> i64,
) -> Result<Principal, AuthError> {
    authenticate_key(snapshot, headers, provider, now).map(|(principal, _)| principal)
}

/// [`authenticate`], also handing back the managed key the request authenticated as (for its
/// policy: endpoint allow-list and limits).
pub fn authenticate_key<'s>(
    snapshot: &'s Snapshot,
    headers: &HeaderMap,
    provider: ProviderKind,
    now: impl Fn() -> i64,
) -> Result<(Principal, Option<&'s ManagedKey>), AuthError> {
    if !snapshot.auth_required() {
        return Ok((Principal::Anonymous, None));
    }
    // Bytes, never checked for UTF-8: only their hash is compared, and no key's secret is
    // anything but ASCII.
    let bearer = headers.get(AUTHORIZATION).and_then(|v| aurora_core::bearer_token_bytes(v.as_bytes()));
    let api_key = headers.get(X_API_KEY).map(HeaderValue::as_bytes);
    // A client may send both: the Anthropic SDK with `auth_token` set still sends `X-Api-Key`
    // when ANTHROPIC_API_KEY is in its environment. Either header may carry the Aurora token.
    let mut first_error = AuthError::Missing;
    for token in [bearer, api_key].into_iter().flatten().filter(|t| !t.is_empty()) {
        match check_token(snapshot, token, provider, &now) {
            Ok(principal) => return Ok(principal),
            Err(err) if first_error == AuthError::Missing => first_error = err,
            Err(_) => {}
        }
    }
    Err(first_error)
}

fn check_token<'s>(
    snapshot: &'s Snapshot,
    token: &[u8],
    provider: ProviderKind,
    now: &impl Fn() -> i64,
) -> Result<(Principal, Option<&'s ManagedKey>), AuthError> {
    let hash = KeyHash::of(token);
    if snapshot.master_key.is_some_and(|master| master.ct_eq(&hash)) {
        return Ok((Principal::MasterKey, None));
    }
    // A rotated key's previous secret finds the same key until its grace ends, then is as
    // unknown as any other token.
    let key = snapshot.keys.lookup(&hash, now).ok_or(AuthError::Unknown)?;
    if !key.enabled {
        return Err(AuthError::Disabled);
    }
    if key.expires_at.is_some_and(|expires_at| now() >= expires_at.get()) {
        return Err(AuthError::Expired);
    }
    if key.allowed_providers.is_some_and(|allowed| !allowed.contains(provider)) {
        return Err(AuthError::ProviderNotAllowed(provider));
    }
    Ok((Principal::Key(key.id), Some(key)))
}

#[cfg(test)]
mod tests {
    use aurora_core::ProviderSet;
    use http::HeaderValue;

    use super::*;
    use crate::snapshot::Settings;

    const NOW: i64 = 1_800_000_000;

    fn snapshot() -> Snapshot {
        let mut snapshot = Snapshot::new(1, Settings::default(), Some(KeyHash::of("master")));
        let key = |id: u8, enabled, expires_at: Option<i64>, allowed: ProviderSet| ManagedKey {
            id: KeyId([id; 16]),
            enabled,
            expires_at: expires_at.and_then(std::num::NonZeroI64::new),
            allowed_providers: (!allowed.is_empty()).then_some(allowed),
            policy: None,
        };
        snapshot.keys.insert(KeyHash::of("good"), key(1, true, None, ProviderSet::empty()));
        snapshot.keys.insert(KeyHash::of("off"), key(2, false, None, ProviderSet::empty()));
        snapshot.keys.insert(KeyHash::of("old"), key(3, true, Some(NOW), ProviderSet::empty()));
        snapshot.keys.insert(KeyHash::of("later"), key(4, true, Some(NOW + 1), ProviderSet::empty()));
        let only_anthropic = [ProviderKind::Anthropic].into_iter().collect();
        snapshot.keys.insert(KeyHash::of("scoped"), key(5, true, None, only_anthropic));
        snapshot
    }

    fn auth(headers: &[(&'static str, &str)], provider: ProviderKind) -> Result<Principal, AuthError> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        authenticate(&snapshot(), &map, provider, || NOW)
    }

    #[test]
    fn accepts_bearer_and_api_key() {
        let openai = ProviderKind::OpenAi;
        assert_eq!(auth(&[("authorization", "Bearer master")], openai), Ok(Principal::MasterKey));
        assert_eq!(auth(&[("authorization", "bearer good")], openai), Ok(Principal::Key(KeyId([1; 16]))));
        assert_eq!(auth(&[("x-api-key", "good")], openai), Ok(Principal::Key(KeyId([1; 16]))));
        // The SDK sends a dummy x-api-key next to the real bearer token, or the other way round.
        assert_eq!(auth(&[("authorization", "Bearer good"), ("x-api-key", "dummy")], openai).map(|_| ()), Ok(()));
        assert_eq!(auth(&[("authorization", "Bearer dummy"), ("x-api-key", "good")], openai).map(|_| ()), Ok(()));
    }

    #[test]
    fn refuses_with_a_reason() {
        let openai = ProviderKind::OpenAi;
        assert_eq!(auth(&[], openai), Err(AuthError::Missing));
        assert_eq!(auth(&[("authorization", "Basic Z29vZA==")], openai), Err(AuthError::Missing));
        assert_eq!(auth(&[("authorization", "Bearer ")], openai), Err(AuthError::Missing));
        assert_eq!(auth(&[("authorization", "Bearer nope")], openai), Err(AuthError::Unknown));
        assert_eq!(auth(&[("x-api-key", "off")], openai), Err(AuthError::Disabled));
        assert_eq!(auth(&[("x-api-key", "old")], openai), Err(AuthError::Expired));
        assert!(auth(&[("x-api-key", "later")], openai).is_ok());
        assert_eq!(auth(&[("x-api-key", "scoped")], openai), Err(AuthError::ProviderNotAllowed(openai)));
        assert!(auth(&[("x-api-key", "scoped")], ProviderKind::Anthropic).is_ok());
        // A token that is not UTF-8 is hashed like any other, and matches no key.
        let mut headers = HeaderMap::new();
        headers.insert(X_API_KEY, HeaderValue::from_bytes(b"go\xffod").unwrap());
        assert_eq!(authenticate(&snapshot(), &headers, openai, || NOW), Err(AuthError::Unknown));
        headers.insert(AUTHORIZATION, HeaderValue::from_bytes(b"Bearer \xff").unwrap());
        assert_eq!(authenticate(&snapshot(), &headers, openai, || NOW), Err(AuthError::Unknown));
        // The first presented token's failure is reported.
        assert_eq!(auth(&[("authorization", "Bearer off"), ("x-api-key", "nope")], openai), Err(AuthError::Disabled));
    }

    #[test]
    fn a_previous_secret_authenticates_as_its_key_until_its_grace_ends() {
        let mut snapshot = snapshot();
        snapshot.keys.set_previous(KeyHash::of("good"), Some((KeyHash::of("rotated-out"), NOW + 1)));
        snapshot.keys.set_previous(KeyHash::of("off"), Some((KeyHash::of("off-before"), NOW + 1)));
        snapshot.keys.set_previous(KeyHash::of("old"), Some((KeyHash::of("old-before"), NOW + 1)));
        let at = |token: &str, now: i64| {
            let mut headers = HeaderMap::new();
            headers.insert(X_API_KEY, HeaderValue::from_str(token).unwrap());
            authenticate(&snapshot, &headers, ProviderKind::OpenAi, || now)
        };
        assert_eq!(at("rotated-out", NOW), Ok(Principal::Key(KeyId([1; 16]))), "the same key id");
        assert_eq!(at("rotated-out", NOW + 1), Err(AuthError::Unknown), "grace over: unknown");
        assert_eq!(at("good", NOW + 1), Ok(Principal::Key(KeyId([1; 16]))));
        // The key's own state still applies to its previous secret.
        assert_eq!(at("off-before", NOW), Err(AuthError::Disabled));
        assert_eq!(at("old-before", NOW), Err(AuthError::Expired));
    }

    #[test]
    fn auth_off_ignores_tokens() {
        let snapshot = Snapshot::new(1, Settings::default(), None);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer whatever"));
        assert_eq!(authenticate(&snapshot, &headers, ProviderKind::OpenAi, || NOW), Ok(Principal::Anonymous));
    }
}
