//! Why a limited key was refused, and what it has left.
//!
//! The error response itself (status 429, the provider's body shape, `x-aurora-error`) is made
//! in `error.rs`, the one place errors become responses; this module supplies the reason and
//! the `retry-after`, and `rate_headers.rs` the headers named the way each provider names them.

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

/// Milliseconds as whole seconds, rounded up, at least 1.
pub(super) fn ceil_secs(ms: i64) -> u64 {
    u64::try_from(ms.max(1)).unwrap_or(1).div_ceil(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_MS: i64 = 1_796_143_262_000;

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
