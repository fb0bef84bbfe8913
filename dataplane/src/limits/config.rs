//! What a key's limits are, as the data plane holds them: decoded once from the config stream
//! (`KeyConfig.limits`, `ConfigSettings.default_key_limits` and `limit_fallback`) and encoded
//! back for the cache.

use aurora_proto::v1 as pb;

/// A key's limits; a zero field is "no such limit".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyLimits {
    pub requests_per_minute: u32,
    /// Input plus output tokens, charged from metered usage.
    pub tokens_per_minute: u64,
    /// Requests (streams included) in flight at once.
    pub max_concurrent: u32,
    pub budget_tokens: u64,
    pub budget_period: BudgetPeriod,
}

/// When a token budget renews (calendar periods in UTC, weeks from Monday).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BudgetPeriod {
    /// Never: the budget is a total.
    #[default]
    None,
    Day,
    Week,
    Month,
}

/// What a replica does with limited keys while it holds no valid lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fallback {
    /// Each cap is `ceil(limit / replicas)`, replicas as the last leases counted them.
    #[default]
    Share,
    /// Limited keys are refused until a lease arrives.
    Closed,
}

/// The snapshot-wide part: defaults for keys without limits of their own, and the fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LimitSettings {
    pub default_key_limits: Option<KeyLimits>,
    pub fallback: Fallback,
}

impl KeyLimits {
    /// Whether nothing here limits anything.
    pub fn is_unlimited(&self) -> bool {
        self.requests_per_minute == 0
            && self.tokens_per_minute == 0
            && self.max_concurrent == 0
            && self.budget_tokens == 0
    }

    pub fn from_proto(limits: &pb::KeyLimits) -> Self {
        KeyLimits {
            requests_per_minute: limits.requests_per_minute,
            tokens_per_minute: limits.tokens_per_minute,
            max_concurrent: limits.max_concurrent,
            budget_tokens: limits.budget_tokens,
            // A period this build does not know reads as "never renews": narrower, never wider.
            budget_period: match pb::BudgetPeriod::try_from(limits.budget_period) {
                Ok(pb::BudgetPeriod::Day) => BudgetPeriod::Day,
                Ok(pb::BudgetPeriod::Week) => BudgetPeriod::Week,
                Ok(pb::BudgetPeriod::Month) => BudgetPeriod::Month,
                Ok(pb::BudgetPeriod::None) | Err(_) => BudgetPeriod::None,
            },
        }
    }

    pub fn to_proto(self) -> pb::KeyLimits {
        pb::KeyLimits {
            requests_per_minute: self.requests_per_minute,
            tokens_per_minute: self.tokens_per_minute,
            max_concurrent: self.max_concurrent,
            budget_tokens: self.budget_tokens,
            budget_period: match self.budget_period {
                BudgetPeriod::None => pb::BudgetPeriod::None,
                BudgetPeriod::Day => pb::BudgetPeriod::Day,
                BudgetPeriod::Week => pb::BudgetPeriod::Week,
                BudgetPeriod::Month => pb::BudgetPeriod::Month,
            } as i32,
        }
    }
}

impl BudgetPeriod {
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetPeriod::None => "total",
            BudgetPeriod::Day => "day",
            BudgetPeriod::Week => "week",
            BudgetPeriod::Month => "month",
        }
    }
}

impl LimitSettings {
    pub fn from_proto(settings: &pb::ConfigSettings) -> Self {
        LimitSettings {
            default_key_limits: settings.default_key_limits.as_ref().map(KeyLimits::from_proto),
            // A fallback this build does not know: SHARE, the documented default.
            fallback: match pb::LimitFallback::try_from(settings.limit_fallback) {
                Ok(pb::LimitFallback::Closed) => Fallback::Closed,
                Ok(pb::LimitFallback::Share) | Err(_) => Fallback::Share,
            },
        }
    }

    /// Writes these into `settings` (the cache's copy of the stream's settings).
    pub fn write_proto(&self, settings: &mut pb::ConfigSettings) {
        settings.default_key_limits = self.default_key_limits.map(KeyLimits::to_proto);
        settings.limit_fallback = match self.fallback {
            Fallback::Share => pb::LimitFallback::Share,
            Fallback::Closed => pb::LimitFallback::Closed,
        } as i32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_round_trip_and_unknown_enums_read_narrow() {
        let limits = KeyLimits {
            requests_per_minute: 30,
            tokens_per_minute: 1000,
            max_concurrent: 2,
            budget_tokens: 5000,
            budget_period: BudgetPeriod::Week,
        };
        assert_eq!(KeyLimits::from_proto(&limits.to_proto()), limits);
        assert!(!limits.is_unlimited());
        assert!(KeyLimits::default().is_unlimited());
        let unknown = pb::KeyLimits { budget_tokens: 5, budget_period: 99, ..Default::default() };
        assert_eq!(KeyLimits::from_proto(&unknown).budget_period, BudgetPeriod::None);

        let settings = LimitSettings { default_key_limits: Some(limits), fallback: Fallback::Closed };
        let mut proto = pb::ConfigSettings::default();
        settings.write_proto(&mut proto);
        assert_eq!(LimitSettings::from_proto(&proto), settings);
        proto.limit_fallback = 42;
        assert_eq!(LimitSettings::from_proto(&proto).fallback, Fallback::Share);
    }
}
