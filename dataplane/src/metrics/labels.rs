//! The closed label sets of the data plane's metrics, and how a request maps onto them.
//!
//! Every label is an enum here, so the number of series is fixed at compile time: no key id,
//! token, path or model ever becomes a label value.

use aurora_core::ProviderKind;
use http::{Method, StatusCode};

/// `provider`: the five providers in [`ProviderKind::ALL`] order, then `unknown` for requests
/// refused before a provider was known (no route, unknown provider name).
pub const PROVIDERS: &[&str] = &["openai", "anthropic", "openrouter", "zai", "vllm", "unknown"];

pub fn provider(kind: Option<ProviderKind>) -> usize {
    kind.map_or(PROVIDERS.len() - 1, |kind| kind as usize)
}

/// `method`: the methods LLM APIs use, and `OTHER` for anything else.
pub const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "OTHER"];

pub fn method(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::POST => 1,
        Method::PUT => 2,
        Method::PATCH => 3,
        Method::DELETE => 4,
        Method::HEAD => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

/// `status_class`: `1xx` to `5xx`.
pub const STATUS_CLASSES: &[&str] = &["1xx", "2xx", "3xx", "4xx", "5xx"];

pub fn status_class(status: StatusCode) -> usize {
    usize::from(status.as_u16() / 100).clamp(1, 5) - 1
}

/// `source`: who made the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Aurora answered itself (a refusal, or an upstream that failed or timed out).
    Gateway = 0,
    /// The provider's response, passed through.
    Upstream = 1,
    /// The client went away before any response was sent (logged as status 499).
    Client = 2,
}

pub const SOURCES: &[&str] = &["gateway", "upstream", "client"];

impl Source {
    pub fn as_str(self) -> &'static str {
        SOURCES[self as usize]
    }
}

/// `reason`: why gateway authentication failed, as `AuthError::reason` spells it.
pub const AUTH_REASONS: &[&str] = &["missing", "unknown", "disabled", "expired", "provider_not_allowed"];

pub fn auth_reason(err: crate::auth::AuthError) -> usize {
    use crate::auth::AuthError;
    match err {
        AuthError::Missing => 0,
        AuthError::Unknown => 1,
        AuthError::Disabled => 2,
        AuthError::Expired => 3,
        AuthError::ProviderNotAllowed(_) => 4,
    }
}

/// `direction`: which of a response's token counts (cache reads and writes are counted apart
/// from `input` where the provider reports them apart; see README's "Usage metering").
pub const DIRECTIONS: &[&str] = &["input", "output", "cache_read_input", "cache_creation_input"];

/// `outcome`: how much of a response's usage was read, as [`crate::usage::UsageOutcome`] spells it.
pub const USAGE_OUTCOMES: &[&str] = &["complete", "incomplete", "unknown"];

pub fn usage_outcome(outcome: crate::usage::UsageOutcome) -> usize {
    use crate::usage::UsageOutcome;
    match outcome {
        UsageOutcome::Complete => 0,
        UsageOutcome::Incomplete => 1,
        UsageOutcome::Unknown => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AuthError;

    #[test]
    fn label_values_match_the_names_used_elsewhere() {
        for kind in ProviderKind::ALL {
            assert_eq!(PROVIDERS[provider(Some(kind))], kind.as_str());
        }
        assert_eq!(PROVIDERS[provider(None)], "unknown");
        let errors = [
            AuthError::Missing,
            AuthError::Unknown,
            AuthError::Disabled,
            AuthError::Expired,
            AuthError::ProviderNotAllowed(ProviderKind::Zai),
        ];
        for err in errors {
            assert_eq!(AUTH_REASONS[auth_reason(err)], err.reason());
        }
        assert_eq!(STATUS_CLASSES[status_class(StatusCode::from_u16(499).unwrap())], "4xx");
        assert_eq!(STATUS_CLASSES[status_class(StatusCode::SWITCHING_PROTOCOLS)], "1xx");
        assert_eq!(METHODS[method(&Method::from_bytes(b"PROPFIND").unwrap())], "OTHER");
        use crate::usage::UsageOutcome;
        for outcome in [UsageOutcome::Complete, UsageOutcome::Incomplete, UsageOutcome::Unknown] {
            assert_eq!(USAGE_OUTCOMES[usage_outcome(outcome)], outcome.as_str());
        }
    }
}
