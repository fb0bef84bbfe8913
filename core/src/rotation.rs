//! The grace period of a key rotation: how long a replaced secret keeps working.
//!
//! Both the CLI (before it sends a request) and the admin API (for any client) check the same
//! bound, so an operator learns about a typo like `--grace 24d` instead of `24h` at once.

use std::time::Duration;

/// The longest grace period: 90 days. A previous secret is meant to bridge a redeploy, not to
/// live on as a second credential.
pub const MAX_ROTATION_GRACE_SECS: u64 = 90 * 24 * 60 * 60;

/// [`MAX_ROTATION_GRACE_SECS`] as people read it.
pub const MAX_ROTATION_GRACE: &str = "90 days";

/// Why a grace period was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraceError {
    #[error("{0}")]
    Syntax(String),
    #[error("must be whole seconds")]
    Fraction,
    #[error("must be at most {MAX_ROTATION_GRACE}")]
    TooLong,
}

/// Parses a grace period (`0`, `30s`, `24h`, `7d`) into whole seconds. Zero is allowed: the
/// replaced secret stops at once.
pub fn parse_rotation_grace(raw: &str) -> Result<u64, GraceError> {
    let duration = if raw.trim() == "0" {
        Duration::ZERO
    } else {
        humantime::parse_duration(raw).map_err(|err| GraceError::Syntax(err.to_string()))?
    };
    if duration.subsec_nanos() != 0 {
        return Err(GraceError::Fraction);
    }
    check_rotation_grace(duration.as_secs())
}

/// Checks a grace period given in seconds (as the admin API receives it).
pub fn check_rotation_grace(secs: u64) -> Result<u64, GraceError> {
    if secs > MAX_ROTATION_GRACE_SECS {
        return Err(GraceError::TooLong);
    }
    Ok(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_periods_parse_to_whole_seconds_within_the_bound() {
        assert_eq!(parse_rotation_grace("0"), Ok(0));
        assert_eq!(parse_rotation_grace("0s"), Ok(0));
        assert_eq!(parse_rotation_grace("24h"), Ok(86_400));
        assert_eq!(parse_rotation_grace("90d"), Ok(MAX_ROTATION_GRACE_SECS));
        assert_eq!(parse_rotation_grace("91d"), Err(GraceError::TooLong));
        assert_eq!(parse_rotation_grace("1500ms"), Err(GraceError::Fraction));
        assert!(matches!(parse_rotation_grace("soon"), Err(GraceError::Syntax(_))));
        assert!(matches!(parse_rotation_grace("-1h"), Err(GraceError::Syntax(_))));
        assert_eq!(check_rotation_grace(MAX_ROTATION_GRACE_SECS + 1), Err(GraceError::TooLong));
    }
}
