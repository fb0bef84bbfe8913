//! What one proxied request consumed, as the provider reported it, and where it goes.
//!
//! This is the seam between metering (which reads usage out of a response as it streams past,
//! in `metering`) and usage reporting (which aggregates per key, provider and model and delivers
//! the aggregates to the control plane). Metering produces one [`Usage`] per request that
//! reached an upstream; the request's [`UsageSink`] receives it once, when the response ends.

use aurora_core::ProviderKind;

use crate::auth::Principal;

/// Token counts as the provider declared them. Fields the provider did not report are zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenCounts {
    /// Prompt tokens, not counting cache reads or writes where the provider reports those apart
    /// (Anthropic's `input_tokens`; OpenAI's `prompt_tokens`, which includes cached tokens).
    pub input: u64,
    pub output: u64,
    /// Anthropic `cache_read_input_tokens`; OpenAI `prompt_tokens_details.cached_tokens`.
    pub cache_read_input: u64,
    /// Anthropic `cache_creation_input_tokens`.
    pub cache_creation_input: u64,
    /// OpenAI `completion_tokens_details.reasoning_tokens` (already inside `output`).
    pub reasoning: u64,
}

/// How much of the response's usage was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageOutcome {
    /// The provider's final usage was read.
    Complete,
    /// The response ended early (client gone, upstream broke, idle timeout): the counts are
    /// what had been reported so far.
    Incomplete,
    /// No usage could be read (no usage in the body, an endpoint that reports none, a body that
    /// is not JSON or SSE): the request still counts, its tokens are unknown.
    Unknown,
}

impl UsageOutcome {
    /// How the access log and the `outcome` metric label spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            UsageOutcome::Complete => "complete",
            UsageOutcome::Incomplete => "incomplete",
            UsageOutcome::Unknown => "unknown",
        }
    }
}

/// One request's usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    /// The model the response says served it (`model` in the body), when it said.
    pub model: Option<Box<str>>,
    pub tokens: TokenCounts,
    pub outcome: UsageOutcome,
}

/// Receives each metered request's usage exactly once, from the task that ends the response.
/// Implementations must not block: this runs on the request path's executor.
pub trait UsageSink: Send + Sync + std::fmt::Debug + 'static {
    fn record(&self, principal: Principal, provider: ProviderKind, usage: &Usage);
}

/// A sink that drops everything: the data plane without usage reporting (a static
/// configuration file, no control plane), and tests.
#[derive(Debug, Default)]
pub struct DiscardUsage;

impl UsageSink for DiscardUsage {
    fn record(&self, _: Principal, _: ProviderKind, _: &Usage) {}
}
