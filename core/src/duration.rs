//! Durations in configuration.

use std::time::Duration;

/// Parses a human duration (`250ms`, `10s`, `5m`) that must not be zero: for intervals and
/// timeouts, zero would mean a busy loop, a panic, or every request failing at once.
pub fn parse_positive_duration(raw: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(raw).map_err(|err| err.to_string())?;
    if duration.is_zero() {
        return Err("must be greater than zero".to_owned());
    }
    Ok(duration)
}

/// Parses a human duration that may be zero: for delays, where zero means "none".
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw).map_err(|err| err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_refused() {
        assert_eq!(parse_positive_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_positive_duration("0s").is_err());
        assert!(parse_positive_duration("soon").is_err());
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert!(parse_duration("soon").is_err());
    }
}
