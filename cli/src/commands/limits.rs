//! Per-key limits on the command line (issue 13): the `--rpm`, `--tpm`, `--max-concurrent`,
//! `--budget-tokens` and `--budget-period` options of `keys create|update`, their `--default-*`
//! twins of `settings set`, and how limits and what is left of them are printed.

use aurora_proto::v1 as pb;
use clap::Args;
use serde_json::{Value, json};

use super::output::timestamp;

/// A key's own limits. On `create`, any of them gives the key limits of its own (the others
/// zero: no such limit); on `update`, each one given replaces that limit and the rest stay.
#[derive(Debug, Args)]
pub(crate) struct LimitArgs {
    /// Requests per minute, fleet-wide (0: no limit).
    #[arg(long, value_name = "N")]
    rpm: Option<u32>,
    /// Tokens (input + output) per minute, fleet-wide, charged from metered usage (0: no limit).
    #[arg(long, value_name = "N")]
    tpm: Option<u64>,
    /// Requests (streams included) in flight at once, fleet-wide (0: no limit).
    #[arg(long, value_name = "N")]
    max_concurrent: Option<u32>,
    /// A token budget per --budget-period, fleet-wide (0: no budget).
    #[arg(long, value_name = "N")]
    budget_tokens: Option<u64>,
    /// When the budget renews: day, week (from Monday), month (UTC), or none.
    #[arg(long, value_name = "PERIOD", value_parser = ["day", "week", "month", "none"])]
    budget_period: Option<String>,
    /// No limits at all for this key, even when default limits are set.
    #[arg(long, conflicts_with_all = ["rpm", "tpm", "max_concurrent", "budget_tokens", "budget_period"])]
    no_limits: bool,
}

impl LimitArgs {
    fn any(&self) -> bool {
        self.rpm.is_some()
            || self.tpm.is_some()
            || self.max_concurrent.is_some()
            || self.budget_tokens.is_some()
            || self.budget_period.is_some()
    }

    /// The limits a new key gets; `None` (no option given): the default limits apply.
    pub(crate) fn for_create(&self) -> Option<pb::Limits> {
        if self.no_limits {
            return Some(pb::Limits::default());
        }
        self.any().then(|| pb::Limits {
            requests_per_minute: self.rpm.unwrap_or(0),
            tokens_per_minute: self.tpm.unwrap_or(0),
            max_concurrent: self.max_concurrent.unwrap_or(0),
            budget_tokens: self.budget_tokens.unwrap_or(0),
            budget_period: self.budget_period.clone().unwrap_or_default(),
        })
    }

    /// The change `update` asks for; `clear` comes from `--default-limits`.
    pub(crate) fn for_update(&self, clear: bool) -> Option<pb::LimitsUpdate> {
        if clear {
            return Some(pb::LimitsUpdate { clear: true, ..Default::default() });
        }
        if self.no_limits {
            return Some(pb::LimitsUpdate {
                requests_per_minute: Some(0),
                tokens_per_minute: Some(0),
                max_concurrent: Some(0),
                budget_tokens: Some(0),
                budget_period: Some("none".into()),
                clear: false,
            });
        }
        self.any().then(|| pb::LimitsUpdate {
            clear: false,
            requests_per_minute: self.rpm,
            tokens_per_minute: self.tpm,
            max_concurrent: self.max_concurrent,
            budget_tokens: self.budget_tokens,
            budget_period: self.budget_period.clone(),
        })
    }
}

/// `settings set`'s default limits: those of every key without its own.
#[derive(Debug, Args)]
pub(crate) struct DefaultLimitArgs {
    /// Default requests per minute (0: none).
    #[arg(long, value_name = "N", group = "change")]
    default_rpm: Option<u32>,
    /// Default tokens per minute (0: none).
    #[arg(long, value_name = "N", group = "change")]
    default_tpm: Option<u64>,
    /// Default requests in flight at once (0: none).
    #[arg(long, value_name = "N", group = "change")]
    default_max_concurrent: Option<u32>,
    /// Default token budget per --default-budget-period (0: none).
    #[arg(long, value_name = "N", group = "change")]
    default_budget_tokens: Option<u64>,
    /// When the default budget renews: day, week, month or none.
    #[arg(long, value_name = "PERIOD", value_parser = ["day", "week", "month", "none"], group = "change")]
    default_budget_period: Option<String>,
    /// Remove the default limits (keys without their own then have none).
    #[arg(long, group = "change", conflicts_with_all = [
        "default_rpm", "default_tpm", "default_max_concurrent", "default_budget_tokens", "default_budget_period"
    ])]
    no_default_limits: bool,
    /// What data planes do with limited keys while they hold no lease from the control plane:
    /// share (each keeps limit / replicas) or closed (refuse them).
    #[arg(long, value_name = "POLICY", value_parser = ["share", "closed"], group = "change")]
    pub(crate) limit_fallback: Option<String>,
}

impl DefaultLimitArgs {
    pub(crate) fn update(&self) -> Option<pb::LimitsUpdate> {
        if self.no_default_limits {
            return Some(pb::LimitsUpdate { clear: true, ..Default::default() });
        }
        let update = pb::LimitsUpdate {
            clear: false,
            requests_per_minute: self.default_rpm,
            tokens_per_minute: self.default_tpm,
            max_concurrent: self.default_max_concurrent,
            budget_tokens: self.default_budget_tokens,
            budget_period: self.default_budget_period.clone(),
        };
        (update != pb::LimitsUpdate::default()).then_some(update)
    }
}

pub(crate) fn limits_json(limits: Option<&pb::Limits>) -> Value {
    match limits {
        None => Value::Null,
        Some(l) => json!({
            "requests_per_minute": l.requests_per_minute,
            "tokens_per_minute": l.tokens_per_minute,
            "max_concurrent": l.max_concurrent,
            "budget_tokens": l.budget_tokens,
            "budget_period": if l.budget_period.is_empty() { "none" } else { l.budget_period.as_str() },
        }),
    }
}

pub(crate) fn status_json(status: Option<&pb::KeyLimitStatus>) -> Value {
    let Some(s) = status else { return Value::Null };
    json!({
        "source": s.source,
        "limits": limits_json(s.limits.as_ref()),
        "window_start": s.window_start,
        "requests_admitted": s.requests_admitted,
        "requests_remaining": s.requests_remaining,
        "tokens_charged": s.tokens_charged,
        "tokens_remaining": s.tokens_remaining,
        "in_flight": s.in_flight,
        "budget_used": s.budget_used,
        "budget_remaining": s.budget_remaining,
        "budget_period_end": timestamp(s.budget_period_end.as_ref()),
        "replicas": s.replicas,
    })
}

/// `rpm 10, tpm none, ...` for a set of limits.
pub(crate) fn limits_line(l: &pb::Limits) -> String {
    let or_none = |n: u64| if n == 0 { "none".to_owned() } else { n.to_string() };
    let period = if l.budget_period.is_empty() || l.budget_period == "none" { "total" } else { &l.budget_period };
    let budget =
        if l.budget_tokens == 0 { "none".to_owned() } else { format!("{} tokens per {period}", l.budget_tokens) };
    format!(
        "rpm {}, tpm {}, max concurrent {}, budget {budget}",
        or_none(l.requests_per_minute.into()),
        or_none(l.tokens_per_minute),
        or_none(l.max_concurrent.into()),
    )
}

/// The lines `keys get` prints: each limit in force with what is left of it now.
pub(crate) fn status_lines(key: &pb::Key) -> String {
    let mut text = String::new();
    match &key.limits {
        Some(own) => text.push_str(&format!("limits: {} (the key's own)\n", limits_line(own))),
        None => text.push_str("limits: the default limits\n"),
    }
    let Some(status) = &key.limit_status else { return text };
    let Some(limits) = &status.limits else { return text };
    if status.source == "none" {
        text.push_str("in force: no limits\n");
        return text;
    }
    text.push_str(&format!("in force ({}): {}\n", status.source, limits_line(limits)));
    if limits.requests_per_minute > 0 {
        text.push_str(&format!(
            "  requests this minute: {} admitted, {} left of {}\n",
            status.requests_admitted, status.requests_remaining, limits.requests_per_minute
        ));
    }
    if limits.tokens_per_minute > 0 {
        text.push_str(&format!(
            "  tokens this minute: {} charged, {} left of {}\n",
            status.tokens_charged, status.tokens_remaining, limits.tokens_per_minute
        ));
    }
    if limits.max_concurrent > 0 {
        text.push_str(&format!("  in flight: {} of {}\n", status.in_flight, limits.max_concurrent));
    }
    if limits.budget_tokens > 0 {
        let end = match timestamp(status.budget_period_end.as_ref()) {
            Some(end) => format!(", renews {end}"),
            None => ", never renews".to_owned(),
        };
        text.push_str(&format!(
            "  budget: {} used, {} left of {}{end}\n",
            status.budget_used, status.budget_remaining, limits.budget_tokens
        ));
    }
    text.push_str(&format!("  (fleet-wide over {} data-plane replicas)\n", status.replicas));
    text
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        limits: LimitArgs,
    }

    fn parse(args: &[&str]) -> Result<LimitArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied())).map(|cli| cli.limits)
    }

    #[test]
    fn create_and_update_requests() {
        let args = parse(&["--rpm", "10", "--budget-tokens", "500", "--budget-period", "month"]).unwrap();
        let create = args.for_create().unwrap();
        assert_eq!(
            (create.requests_per_minute, create.tokens_per_minute, create.budget_period.as_str()),
            (10, 0, "month")
        );
        let update = args.for_update(false).unwrap();
        assert_eq!((update.requests_per_minute, update.tokens_per_minute), (Some(10), None), "only what was given");
        assert!(parse(&[]).unwrap().for_create().is_none() && parse(&[]).unwrap().for_update(false).is_none());
        assert!(parse(&[]).unwrap().for_update(true).unwrap().clear);
        let unlimited = parse(&["--no-limits"]).unwrap();
        assert_eq!(unlimited.for_create(), Some(pb::Limits::default()));
        assert_eq!(unlimited.for_update(false).unwrap().max_concurrent, Some(0));
        assert!(parse(&["--no-limits", "--rpm", "3"]).is_err());
        assert!(parse(&["--budget-period", "year"]).is_err());
        assert!(parse(&["--rpm", "-1"]).is_err());
    }

    #[test]
    fn status_shows_what_is_left() {
        let limits = pb::Limits {
            requests_per_minute: 10,
            max_concurrent: 2,
            budget_tokens: 1000,
            budget_period: "day".into(),
            ..Default::default()
        };
        let key = pb::Key {
            limits: Some(limits.clone()),
            limit_status: Some(pb::KeyLimitStatus {
                source: "key".into(),
                limits: Some(limits),
                requests_admitted: 4,
                requests_remaining: 6,
                in_flight: 1,
                budget_used: 300,
                budget_remaining: 700,
                budget_period_end: Some(prost_types::Timestamp { seconds: 1_796_256_000, nanos: 0 }),
                replicas: 3,
                ..Default::default()
            }),
            ..Default::default()
        };
        let text = status_lines(&key);
        assert!(text.contains("requests this minute: 4 admitted, 6 left of 10"), "{text}");
        assert!(text.contains("in flight: 1 of 2"), "{text}");
        assert!(text.contains("budget: 300 used, 700 left of 1000, renews 2026-12-03T00:00:00Z"), "{text}");
        assert!(!text.contains("tokens this minute"), "{text}");
    }
}
