//! Timestamps as the store keeps them: Unix milliseconds.
//!
//! Records carry `SystemTime` values already truncated to milliseconds, so a record returned by
//! a write is identical to the same record read back later.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Now, truncated to whole milliseconds.
pub(crate) fn now() -> SystemTime {
    from_millis(to_millis(SystemTime::now()))
}

/// Milliseconds since the Unix epoch; times before it clamp to 0.
pub(crate) fn to_millis(time: SystemTime) -> i64 {
    let millis = time.duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    i64::try_from(millis).unwrap_or(i64::MAX)
}

pub(crate) fn from_millis(millis: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(millis).unwrap_or(0))
}

/// Whole seconds since the Unix epoch, as `KeyConfig.expires_at` carries them.
pub(crate) fn to_unix_secs(time: SystemTime) -> i64 {
    to_millis(time) / 1000
}
