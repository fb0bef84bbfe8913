//! Why a limited key was refused, and the rate-limit headers clients pace themselves by.
//!
//! The error response itself (status 429, the provider's body shape, `x-aurora-error`) is made
//! in `error.rs`, the one place errors become responses; this module supplies the reason, the
//! `retry-after` and the headers named the way each provider names them.

use std::cell::RefCell;

use aurora_core::ErrorShape;
use http::{HeaderMap, HeaderName, HeaderValue};

use super::config::BudgetPeriod;

/// Which limit refused the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    Requests,
    Tokens,
    Concurrency,
    Budget,
    /// No valid lease, and the operator chose to fail closed.
    Closed,
}

impl RefusalReason {
    pub const ALL: [RefusalReason; 5] = [
        RefusalReason::Requests,
        RefusalReason::Tokens,
        RefusalReason::Concurrency,
        RefusalReason::Budget,
        RefusalReason::Closed,
    ];

    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::Requests => "requests",
            RefusalReason::Tokens => "tokens",
            RefusalReason::Concurrency => "concurrency",
            RefusalReason::Budget => "budget",
            RefusalReason::Closed => "no_lease",
        }
    }
}

/// What a limited key has left in the current window, as the rate-limit headers say it.
/// The limits are the key's own (fleet-wide); what is left is this replica's share of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateView {
    /// `(limit, remaining)` when the key has a request limit.
    pub requests: Option<(u64, u64)>,
    /// `(limit, remaining)` when the key has a token limit.
    pub tokens: Option<(u64, u64)>,
    /// Unix milliseconds when the window ends and both renew.
    pub reset_ms: i64,
}

/// A refused request: the reason, when to retry and what the headers say.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub struct Refusal {
    pub reason: RefusalReason,
    /// Whole seconds, at least 1.
    pub retry_after_secs: u64,
    /// The key's limit for this reason (requests, tokens, slots or budget tokens).
    pub limit: u64,
    pub budget_period: BudgetPeriod,
    pub view: RateView,
    /// When the decision was made (the headers' resets count from it).
    pub now_ms: i64,
}

impl Refusal {
    fn message(&self) -> String {
        let retry = self.retry_after_secs;
        match self.reason {
            RefusalReason::Requests => format!(
                "rate limit reached for this gateway key: {} requests per minute; retry in {retry} s",
                self.limit
            ),
            RefusalReason::Tokens => {
                format!("rate limit reached for this gateway key: {} tokens per minute; retry in {retry} s", self.limit)
            }
            RefusalReason::Concurrency => format!(
                "this gateway key already has the most requests in flight it may have ({}); retry when one ends",
                self.limit
            ),
            RefusalReason::Budget if self.budget_period == BudgetPeriod::None => {
                format!("this gateway key has used its whole token budget ({} tokens)", self.limit)
            }
            RefusalReason::Budget => format!(
                "this gateway key has used its token budget for this {} ({} tokens); it renews in {retry} s",
                self.budget_period.as_str(),
                self.limit
            ),
            RefusalReason::Closed => "the gateway cannot reach its limit service and this key's limits fail closed \
                                      (limit fallback CLOSED); retry shortly"
                .to_owned(),
        }
    }

    /// The OpenAI-style `code`.
    pub fn code(&self) -> &'static str {
        match self.reason {
            RefusalReason::Budget => "insufficient_quota",
            _ => "rate_limit_exceeded",
        }
    }

    /// The OpenAI-style `type`: which limit, as OpenAI says it.
    pub fn openai_type(&self) -> &'static str {
        match self.reason {
            RefusalReason::Tokens => "tokens",
            RefusalReason::Budget => "insufficient_quota",
            RefusalReason::Requests | RefusalReason::Concurrency | RefusalReason::Closed => "requests",
        }
    }
}

/// The headers' names, `[limit, remaining, reset]` for requests then tokens: constants, so no
/// name is checked per response.
const OPENAI: [[HeaderName; 3]; 2] = [
    [
        HeaderName::from_static("x-ratelimit-limit-requests"),
        HeaderName::from_static("x-ratelimit-remaining-requests"),
        HeaderName::from_static("x-ratelimit-reset-requests"),
    ],
    [
        HeaderName::from_static("x-ratelimit-limit-tokens"),
        HeaderName::from_static("x-ratelimit-remaining-tokens"),
        HeaderName::from_static("x-ratelimit-reset-tokens"),
    ],
];
const ANTHROPIC: [[HeaderName; 3]; 2] = [
    [
        HeaderName::from_static("anthropic-ratelimit-requests-limit"),
        HeaderName::from_static("anthropic-ratelimit-requests-remaining"),
        HeaderName::from_static("anthropic-ratelimit-requests-reset"),
    ],
    [
        HeaderName::from_static("anthropic-ratelimit-tokens-limit"),
        HeaderName::from_static("anthropic-ratelimit-tokens-remaining"),
        HeaderName::from_static("anthropic-ratelimit-tokens-reset"),
    ],
];

/// Sets the rate-limit headers for the limits the key has (replacing the provider's own
/// same-named headers, which describe the upstream credential, not this key); leaves the
/// others untouched. `now_ms` is called only for OpenAI's countdown: Anthropic's reset is a time.
pub fn write_headers(view: &RateView, shape: ErrorShape, now_ms: impl FnOnce() -> i64, headers: &mut HeaderMap) {
    let names = match shape {
        ErrorShape::OpenAi => OPENAI,
        ErrorShape::Anthropic => ANTHROPIC,
    };
    let reset = reset_value(shape, view.reset_ms, now_ms);
    for (slot, (limit, [limit_name, remaining_name, reset_name])) in
        [view.requests, view.tokens].into_iter().zip(names).enumerate()
    {
        let Some((limit, remaining)) = limit else { continue };
        headers.insert(limit_name, limit_value(slot, limit));
        headers.insert(remaining_name, HeaderValue::from(remaining));
        if let Some(reset) = &reset {
            headers.insert(reset_name, reset.clone());
        }
    }
}

thread_local! {
    /// The reset value last written in each shape, with what it was made from: every response
    /// of a limited key in one window (one second, for OpenAI's countdown) says the same, so it
    /// is formatted once rather than per response (an RFC 3339 date cost more than the rest of
    /// the headers together).
    static RESETS: RefCell<[Option<(i64, HeaderValue)>; 2]> = const { RefCell::new([None, None]) };
    /// The request and token limits last written: a key's limits change only with its policy,
    /// so they are formatted once rather than per response.
    static LIMITS: RefCell<[Option<(u64, HeaderValue)>; 2]> = const { RefCell::new([None, None]) };
}

/// `limit` as a header value, for the requests (`slot` 0) or tokens (1) limit.
fn limit_value(slot: usize, limit: u64) -> HeaderValue {
    LIMITS.with(|limits| {
        let mut limits = limits.borrow_mut();
        match &limits[slot] {
            Some((made_from, value)) if *made_from == limit => value.clone(),
            _ => {
                let value = HeaderValue::from(limit);
                limits[slot] = Some((limit, value.clone()));
                value
            }
        }
    })
}

/// When the window resets: OpenAI says how long until then ("17s"); Anthropic says when
/// (RFC 3339).
fn reset_value(shape: ErrorShape, reset_ms: i64, now_ms: impl FnOnce() -> i64) -> Option<HeaderValue> {
    let (slot, made_from) = match shape {
        ErrorShape::OpenAi => (0, i64::try_from(ceil_secs(reset_ms - now_ms())).unwrap_or(i64::MAX)),
        ErrorShape::Anthropic => (1, reset_ms.div_euclid(1000)),
    };
    RESETS.with(|resets| {
        let mut resets = resets.borrow_mut();
        if let Some((from, value)) = &resets[slot] {
            if *from == made_from {
                return Some(value.clone());
            }
        }
        let text = match shape {
            ErrorShape::OpenAi => format!("{made_from}s"),
            ErrorShape::Anthropic => rfc3339(made_from),
        };
        let value = HeaderValue::from_str(&text).ok()?;
        resets[slot] = Some((made_from, value.clone()));
        Some(value)
    })
}

/// `2026-12-01T17:05:00Z` for Unix seconds (UTC, whole seconds), as Anthropic writes resets.
fn rfc3339(unix_s: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(unix_s).unwrap_or(0));
    humantime::format_rfc3339_seconds(at).to_string()
}

/// Milliseconds as whole seconds, rounded up, at least 1.
pub(super) fn ceil_secs(ms: i64) -> u64 {
    u64::try_from(ms.max(1)).unwrap_or(1).div_ceil(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_MS: i64 = 1_796_143_262_000;

    #[test]
    fn headers_follow_each_providers_naming() {
        let view = RateView { requests: Some((30, 4)), tokens: None, reset_ms: NOW_MS + 17_500 };
        let mut headers = HeaderMap::new();
        headers.insert("x-ratelimit-limit-requests", HeaderValue::from_static("10000"));
        headers.insert("x-ratelimit-limit-tokens", HeaderValue::from_static("2000000"));
        write_headers(&view, ErrorShape::OpenAi, || NOW_MS, &mut headers);
        assert_eq!(headers["x-ratelimit-limit-requests"], "30");
        assert_eq!(headers["x-ratelimit-remaining-requests"], "4");
        assert_eq!(headers["x-ratelimit-reset-requests"], "18s");
        // The key has no token limit: the provider's header passes unchanged.
        assert_eq!(headers["x-ratelimit-limit-tokens"], "2000000");

        let view = RateView { requests: None, tokens: Some((1000, 0)), reset_ms: NOW_MS + 17_500 };
        let mut headers = HeaderMap::new();
        write_headers(&view, ErrorShape::Anthropic, || NOW_MS, &mut headers);
        assert_eq!(headers["anthropic-ratelimit-tokens-limit"], "1000");
        assert_eq!(headers["anthropic-ratelimit-tokens-remaining"], "0");
        assert_eq!(headers["anthropic-ratelimit-tokens-reset"], "2026-12-01T16:41:19Z");
        assert!(!headers.contains_key("anthropic-ratelimit-requests-limit"));
    }

    #[test]
    fn a_limit_written_once_is_reused_only_while_it_is_the_same() {
        let limit = |requests, tokens| {
            let view = RateView { requests: Some((requests, 1)), tokens: Some((tokens, 2)), reset_ms: NOW_MS };
            let mut headers = HeaderMap::new();
            write_headers(&view, ErrorShape::OpenAi, || NOW_MS, &mut headers);
            let text = |name: &str| headers[name].to_str().unwrap().to_owned();
            (text("x-ratelimit-limit-requests"), text("x-ratelimit-limit-tokens"))
        };
        assert_eq!(limit(30, 1000), ("30".into(), "1000".into()));
        assert_eq!(limit(30, 1000), ("30".into(), "1000".into()));
        assert_eq!(limit(31, 1000), ("31".into(), "1000".into()), "a changed limit is written anew");
        assert_eq!(limit(1000, 30), ("1000".into(), "30".into()), "requests and tokens are kept apart");
    }

    #[test]
    fn a_reset_written_once_is_reused_only_within_its_window() {
        let at = |reset_ms: i64, now_ms: i64, shape| {
            let view = RateView { requests: Some((30, 4)), tokens: None, reset_ms };
            let mut headers = HeaderMap::new();
            write_headers(&view, shape, || now_ms, &mut headers);
            let name = if shape == ErrorShape::OpenAi {
                "x-ratelimit-reset-requests"
            } else {
                "anthropic-ratelimit-requests-reset"
            };
            headers[name].to_str().unwrap().to_owned()
        };
        assert_eq!(at(NOW_MS + 17_500, NOW_MS, ErrorShape::OpenAi), "18s");
        assert_eq!(at(NOW_MS + 17_500, NOW_MS + 100, ErrorShape::OpenAi), "18s");
        assert_eq!(at(NOW_MS + 17_500, NOW_MS + 1_000, ErrorShape::OpenAi), "17s");
        assert_eq!(at(NOW_MS + 17_500, NOW_MS, ErrorShape::Anthropic), "2026-12-01T16:41:19Z");
        assert_eq!(at(NOW_MS + 77_500, NOW_MS, ErrorShape::Anthropic), "2026-12-01T16:42:19Z");
        assert_eq!(at(NOW_MS + 17_500, NOW_MS, ErrorShape::Anthropic), "2026-12-01T16:41:19Z");
    }

    #[test]
    fn messages_and_codes_name_the_limit() {
        let refusal = |reason, budget_period| Refusal {
            reason,
            retry_after_secs: 12,
            limit: 30,
            budget_period,
            view: RateView::default(),
            now_ms: NOW_MS,
        };
        let requests = refusal(RefusalReason::Requests, BudgetPeriod::None);
        assert_eq!((requests.code(), requests.openai_type()), ("rate_limit_exceeded", "requests"));
        assert!(requests.to_string().contains("30 requests per minute; retry in 12 s"), "{requests}");
        let budget = refusal(RefusalReason::Budget, BudgetPeriod::Day);
        assert_eq!((budget.code(), budget.openai_type()), ("insufficient_quota", "insufficient_quota"));
        assert!(budget.to_string().contains("for this day (30 tokens); it renews in 12 s"), "{budget}");
        assert!(refusal(RefusalReason::Closed, BudgetPeriod::None).to_string().contains("fail closed"));
        assert_eq!(refusal(RefusalReason::Tokens, BudgetPeriod::None).openai_type(), "tokens");
        assert_eq!(ceil_secs(0), 1);
        assert_eq!(ceil_secs(1001), 2);
    }
}
