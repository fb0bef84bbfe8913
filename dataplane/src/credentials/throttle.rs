//! How long a throttled credential cools down, from the provider's own 429 headers.
//!
//! In order, the first that yields a time in the future:
//! 1. `retry-after`: delay seconds (`2`, `1.5`) or an HTTP date.
//! 2. `anthropic-ratelimit-*-reset`: RFC 3339 times (`2026-12-01T13:00:05Z`); the latest wins,
//!    since the request may have hit any of the limits they describe.
//! 3. `x-ratelimit-reset-*` (OpenAI and compatibles): Go-style durations (`1s`, `6m0s`, `20ms`,
//!    `1h2m3.5s`); the latest wins.
//!
//! Without any, [`default_cooldown`] backs off exponentially with the 429s in a row.

use std::time::{Duration, SystemTime};

use http::HeaderMap;
use http::header::RETRY_AFTER;

/// The first default cooldown; it doubles with each 429 in a row up to [`MAX_DEFAULT_COOLDOWN`].
pub const BASE_DEFAULT_COOLDOWN: Duration = Duration::from_secs(1);
pub const MAX_DEFAULT_COOLDOWN: Duration = Duration::from_secs(60);

/// The cooldown the headers of a 429 ask for, if they say.
pub fn cooldown(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    if let Some(after) = headers.get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(|v| retry_after(v, now)) {
        return Some(after);
    }
    let latest = |prefix: &str, suffix: &str, parse: &dyn Fn(&str) -> Option<Duration>| {
        headers
            .iter()
            .filter(|(name, _)| name.as_str().starts_with(prefix) && name.as_str().ends_with(suffix))
            .filter_map(|(_, value)| parse(value.to_str().ok()?))
            .filter(|d| !d.is_zero())
            .max()
    };
    latest("anthropic-ratelimit-", "-reset", &|v| until(humantime::parse_rfc3339_weak(v.trim()).ok()?, now))
        .or_else(|| latest("x-ratelimit-reset-", "", &go_duration))
}

/// The default cooldown after `streak` earlier 429s in a row: 1 s, 2 s, 4 s, … up to 60 s.
pub fn default_cooldown(streak: u32) -> Duration {
    BASE_DEFAULT_COOLDOWN.saturating_mul(1u32.checked_shl(streak.min(16)).unwrap_or(u32::MAX)).min(MAX_DEFAULT_COOLDOWN)
}

fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds > 0.0).then(|| Duration::try_from_secs_f64(seconds).ok()).flatten();
    }
    until(httpdate::parse_http_date(value).ok()?, now)
}

fn until(at: SystemTime, now: SystemTime) -> Option<Duration> {
    at.duration_since(now).ok().filter(|d| !d.is_zero())
}

/// A Go `time.Duration` string: a sequence of decimal numbers with units (`h`, `m`, `s`, `ms`,
/// `us`/`µs`, `ns`), such as `6m0s` or `1.5s`.
pub fn go_duration(value: &str) -> Option<Duration> {
    let mut rest = value.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * seconds;
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(n, v)| (http::HeaderName::from_static(n), HeaderValue::from_static(v))).collect()
    }

    fn at(rfc3339: &str) -> SystemTime {
        humantime::parse_rfc3339(rfc3339).unwrap()
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date_comes_first() {
        let now = at("2026-12-01T13:00:00Z");
        let h = headers(&[("retry-after", "2"), ("x-ratelimit-reset-requests", "6m0s")]);
        assert_eq!(cooldown(&h, now), Some(Duration::from_secs(2)));
        assert_eq!(cooldown(&headers(&[("retry-after", "0.5")]), now), Some(Duration::from_millis(500)));
        let h = headers(&[("retry-after", "Tue, 01 Dec 2026 13:00:07 GMT")]);
        assert_eq!(cooldown(&h, now), Some(Duration::from_secs(7)));
        assert_eq!(cooldown(&headers(&[("retry-after", "Tue, 01 Dec 2026 12:00:00 GMT")]), now), None, "past");
        assert_eq!(cooldown(&headers(&[("retry-after", "soon")]), now), None);
        assert_eq!(cooldown(&headers(&[("retry-after", "-3")]), now), None);
    }

    #[test]
    fn anthropic_resets_are_times_and_the_latest_wins() {
        let now = at("2026-12-01T13:00:00Z");
        let h = headers(&[
            ("anthropic-ratelimit-requests-reset", "2026-12-01T13:00:03Z"),
            ("anthropic-ratelimit-tokens-reset", "2026-12-01T13:00:10Z"),
            ("anthropic-ratelimit-input-tokens-reset", "garbage"),
            ("x-ratelimit-reset-requests", "1s"),
        ]);
        assert_eq!(cooldown(&h, now), Some(Duration::from_secs(10)));
    }

    #[test]
    fn openai_resets_are_go_durations() {
        let now = SystemTime::UNIX_EPOCH;
        let h = headers(&[("x-ratelimit-reset-requests", "20ms"), ("x-ratelimit-reset-tokens", "6m0s")]);
        assert_eq!(cooldown(&h, now), Some(Duration::from_secs(360)));
        assert_eq!(go_duration("1h2m3.5s"), Some(Duration::from_millis(3_723_500)));
        assert_eq!(go_duration("20ms"), Some(Duration::from_millis(20)));
        assert_eq!(go_duration("1.5"), None, "a unit is required");
        assert_eq!(go_duration("5x"), None);
        assert_eq!(go_duration(""), None);
        assert_eq!(cooldown(&HeaderMap::new(), now), None);
    }

    #[test]
    fn the_default_backs_off_exponentially_and_is_capped() {
        assert_eq!(default_cooldown(0), Duration::from_secs(1));
        assert_eq!(default_cooldown(3), Duration::from_secs(8));
        assert_eq!(default_cooldown(10), MAX_DEFAULT_COOLDOWN);
        assert_eq!(default_cooldown(u32::MAX), MAX_DEFAULT_COOLDOWN);
    }
}
