//! The range a key's expiry may take.
//!
//! Four-digit years are what RFC 3339 allows and what every tool that reads our timestamps
//! (humantime, SQL, JavaScript, spreadsheets) formats without error, so the latest expiry is
//! the last second of year 9999. The admin API refuses anything later, and the CLI refuses it
//! before it sends a request.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// 9999-12-31T23:59:59Z in Unix seconds.
pub const LATEST_EXPIRY_UNIX_SECS: i64 = 253_402_300_799;

/// [`LATEST_EXPIRY_UNIX_SECS`] as people read it.
pub const LATEST_EXPIRY: &str = "9999-12-31T23:59:59Z";

/// The latest instant a key may expire at.
pub fn latest_expiry() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(LATEST_EXPIRY_UNIX_SECS.unsigned_abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_expiry_is_the_last_second_of_9999() {
        assert_eq!(humantime::format_rfc3339_seconds(latest_expiry()).to_string(), LATEST_EXPIRY);
    }
}
