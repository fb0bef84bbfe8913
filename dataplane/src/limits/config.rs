//! What a key's limits are, as the data plane holds them: decoded once from the config stream
//! (`KeyConfig.limits`, `ConfigSettings.default_key_limits` and `limit_fallback`) and encoded
//! back for the cache.

use aurora_proto::v1 as pb;

/// What a replica does with limited keys while it holds no valid lease (the shared type).
pub use aurora_core::LimitFallback as Fallback;
pub use aurora_core::{BudgetPeriod, KeyLimits};

/// The snapshot-wide part: defaults for keys without limits of their own, and the fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LimitSettings {
    pub default_key_limits: Option<KeyLimits>,
    pub fallback: Fallback,
}

/// A key's limits as the config stream carries them. A budget period this build does not know
/// reads as "never renews": narrower, never wider.
pub fn limits_from_proto(limits: &pb::KeyLimits) -> KeyLimits {
    KeyLimits {
        requests_per_minute: limits.requests_per_minute,
        tokens_per_minute: limits.tokens_per_minute,
        max_concurrent: limits.max_concurrent,
        budget_tokens: limits.budget_tokens,
        budget_period: match pb::BudgetPeriod::try_from(limits.budget_period) {
            Ok(pb::BudgetPeriod::Day) => BudgetPeriod::Day,
            Ok(pb::BudgetPeriod::Week) => BudgetPeriod::Week,
            Ok(pb::BudgetPeriod::Month) => BudgetPeriod::Month,
            Ok(pb::BudgetPeriod::None) | Err(_) => BudgetPeriod::None,
        },
    }
}

pub fn limits_to_proto(limits: &KeyLimits) -> pb::KeyLimits {
    pb::KeyLimits {
        requests_per_minute: limits.requests_per_minute,
        tokens_per_minute: limits.tokens_per_minute,
        max_concurrent: limits.max_concurrent,
        budget_tokens: limits.budget_tokens,
        budget_period: match limits.budget_period {
            BudgetPeriod::None => pb::BudgetPeriod::None,
            BudgetPeriod::Day => pb::BudgetPeriod::Day,
            BudgetPeriod::Week => pb::BudgetPeriod::Week,
            BudgetPeriod::Month => pb::BudgetPeriod::Month,
        } as i32,
    }
}

impl LimitSettings {
    pub fn from_proto(settings: &pb::ConfigSettings) -> Self {
        LimitSettings {
            default_key_limits: settings.default_key_limits.as_ref().map(limits_from_proto),
            // A fallback this build does not know: SHARE, the documented default.
            fallback: match pb::LimitFallback::try_from(settings.limit_fallback) {
                Ok(pb::LimitFallback::Closed) => Fallback::Closed,
                Ok(pb::LimitFallback::Share) | Err(_) => Fallback::Share,
            },
        }
    }

    /// Writes these into `settings` (the cache's copy of the stream's settings).
    pub fn write_proto(&self, settings: &mut pb::ConfigSettings) {
        settings.default_key_limits = self.default_key_limits.as_ref().map(limits_to_proto);
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
        assert_eq!(limits_from_proto(&limits_to_proto(&limits)), limits);
        assert!(!limits.is_unlimited());
        assert!(KeyLimits::default().is_unlimited());
        let unknown = pb::KeyLimits { budget_tokens: 5, budget_period: 99, ..Default::default() };
        assert_eq!(limits_from_proto(&unknown).budget_period, BudgetPeriod::None);

        let settings = LimitSettings { default_key_limits: Some(limits), fallback: Fallback::Closed };
        let mut proto = pb::ConfigSettings::default();
        settings.write_proto(&mut proto);
        assert_eq!(LimitSettings::from_proto(&proto), settings);
        proto.limit_fallback = 42;
        assert_eq!(LimitSettings::from_proto(&proto).fallback, Fallback::Share);
    }
}
