//! Passthrough route parsing: `/p/{provider}/{endpoint...}`, and which methods it forwards.
//!
//! Works on the raw (still percent-encoded) request path and never allocates unless a segment
//! contains a percent escape. The endpoint that comes out is safe to append to a provider's base
//! URL: it has no dot segments (raw or encoded), no backslashes and no control characters, so
//! it can never climb out of the base URL's path.

use std::borrow::Cow;

use http::Method;
use percent_encoding::percent_decode_str;

/// The methods passthrough routes forward, as the `Allow` header of a 405 lists them: what
/// provider APIs use (OPTIONS for CORS preflights). The rest is refused before anything goes
/// upstream: TRACE would have the provider echo the injected credential back to the client,
/// CONNECT would make the upstream client open a tunnel, and nothing else has a use here.
pub const FORWARDED_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

/// Whether passthrough routes forward `method` (see [`FORWARDED_METHODS`]).
pub fn forwards(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::POST | Method::PUT | Method::PATCH | Method::DELETE | Method::OPTIONS
    )
}

/// Why an endpoint was refused. Each is answered with 400 before anything is sent upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the endpoint path must not contain '.' or '..' segments")]
    DotSegment,
    #[error("the endpoint path must not contain backslashes")]
    Backslash,
    #[error("the endpoint path must not contain control characters")]
    ControlCharacter,
    #[error("the endpoint path contains an invalid percent-encoded sequence")]
    InvalidEncoding,
    #[error("the endpoint path must not contain double percent-encoding")]
    DoubleEncoding,
    #[error("the endpoint path must be ASCII")]
    NonAscii,
    #[error(
        "the /v1 alias is disabled (ALLOW_PASSTHROUGH_V1_ALIAS=false); send the endpoint without the leading v1 segment"
    )]
    V1AliasDisabled,
}

/// Splits `/p/{provider}/{endpoint}` into its provider name and raw endpoint (without the
/// leading slash; empty for `/p/{provider}` and `/p/{provider}/`). `None` if the path is not a
/// passthrough route.
pub fn split(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/p/")?;
    // A byte loop: a provider's name is a few bytes, where `split_once` sets up a memchr.
    let (provider, endpoint) = match rest.bytes().position(|b| b == b'/') {
        Some(slash) => (&rest[..slash], &rest[slash + 1..]),
        None => (rest, ""),
    };
    (!provider.is_empty()).then_some((provider, endpoint))
}

/// Validates the raw endpoint and applies the v1 alias: with the alias on, a whole leading `v1`
/// segment is dropped (`v1/messages` → `messages`, `v1` → ``); with it off, such an endpoint is
/// refused. `v1beta/...` is not a `v1` segment and passes untouched.
pub fn normalize_endpoint(endpoint: &str, v1_alias_enabled: bool) -> Result<&str, PathError> {
    let bytes = endpoint.as_bytes();
    // One pass: whether the endpoint is plain, and whether any segment starts with a dot (a dot
    // segment does, so without one there is none to look for).
    let (mut plain, mut dotted, mut previous) = (true, false, b'/');
    for &b in bytes {
        plain &= b.is_ascii_graphic() && b != b'\\' && b != b'%';
        dotted |= b == b'.' && previous == b'/';
        previous = b;
    }
    if plain {
        // Nearly every endpoint: visible ASCII with nothing to decode, so nothing to refuse byte
        // by byte; only dot segments are left to find (what `check_segment` does for these).
        if dotted && bytes.split(|&b| b == b'/').any(is_dot_segment) {
            return Err(PathError::DotSegment);
        }
    } else {
        for segment in endpoint.split('/') {
            check_segment(segment)?;
        }
    }
    let (first, rest) = match bytes.iter().position(|&b| b == b'/') {
        Some(slash) => (&endpoint[..slash], &endpoint[slash + 1..]),
        None => (endpoint, ""),
    };
    // Compared decoded, so `%76%31` cannot slip past ALLOW_PASSTHROUGH_V1_ALIAS=false.
    let is_v1 = first == "v1" || (first.contains('%') && percent_decode_str(first).eq(b"v1".iter().copied()));
    if !is_v1 {
        return Ok(endpoint);
    }
    if v1_alias_enabled { Ok(rest) } else { Err(PathError::V1AliasDisabled) }
}

fn check_segment(segment: &str) -> Result<(), PathError> {
    check_bytes(segment.as_bytes())?;
    if !segment.contains('%') {
        return if is_dot_segment(segment.as_bytes()) { Err(PathError::DotSegment) } else { Ok(()) };
    }
    let decoded: Cow<'_, [u8]> = percent_decode_str(segment).into();
    if decoded.contains(&b'%') && !valid_escapes(segment) {
        return Err(PathError::InvalidEncoding);
    }
    check_bytes(&decoded)?;
    // A decoded `%2e` is still an escape to an upstream that decodes twice.
    if decoded.windows(3).any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit()) {
        return Err(PathError::DoubleEncoding);
    }
    // An encoded slash (`%2F`) could become a separator at an upstream that decodes before it
    // normalises, so the decoded segment is checked piece by piece too.
    if decoded.split(|b| *b == b'/').any(is_dot_segment) {
        return Err(PathError::DotSegment);
    }
    Ok(())
}

fn check_bytes(bytes: &[u8]) -> Result<(), PathError> {
    for &b in bytes {
        if b == b'\\' {
            return Err(PathError::Backslash);
        }
        if b.is_ascii_control() {
            return Err(PathError::ControlCharacter);
        }
        // Outside ASCII are look-alikes (full-width dots that some servers normalise to `.`).
        if !b.is_ascii() {
            return Err(PathError::NonAscii);
        }
    }
    Ok(())
}

/// `.` and `..`, and what some upstream stacks read as them: `..;param` (matrix parameters),
/// `.. ` and `...` (trailing spaces and dots trimmed).
fn is_dot_segment(segment: &[u8]) -> bool {
    let segment = segment.split(|b| *b == b';').next().unwrap_or_default().trim_ascii_end();
    !segment.is_empty() && segment.iter().all(|b| *b == b'.')
}

/// Whether every `%` in the segment starts a two-hex-digit escape.
fn valid_escapes(segment: &str) -> bool {
    let bytes = segment.as_bytes();
    bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'%')
        .all(|(i, _)| bytes.get(i + 1..i + 3).is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_provider_and_endpoint() {
        assert_eq!(split("/p/anthropic/v1/messages"), Some(("anthropic", "v1/messages")));
        assert_eq!(split("/p/anthropic"), Some(("anthropic", "")));
        assert_eq!(split("/p/anthropic/"), Some(("anthropic", "")));
        assert_eq!(split("/p/"), None);
        assert_eq!(split("/v1/messages"), None);
        assert_eq!(split("/px/anthropic"), None);
    }

    #[test]
    fn v1_alias() {
        assert_eq!(normalize_endpoint("v1/messages", true), Ok("messages"));
        assert_eq!(normalize_endpoint("messages", true), Ok("messages"));
        assert_eq!(normalize_endpoint("v1", true), Ok(""));
        assert_eq!(normalize_endpoint("v1/", true), Ok(""));
        assert_eq!(normalize_endpoint("", true), Ok(""));
        assert_eq!(normalize_endpoint("v1beta/models", true), Ok("v1beta/models"));
        assert_eq!(normalize_endpoint("v10/x", false), Ok("v10/x"));
        assert_eq!(normalize_endpoint("models/v1", false), Ok("models/v1"));
        assert_eq!(normalize_endpoint("v1/messages", false), Err(PathError::V1AliasDisabled));
        assert_eq!(normalize_endpoint("v1", false), Err(PathError::V1AliasDisabled));
        assert_eq!(normalize_endpoint("%76%31/messages", false), Err(PathError::V1AliasDisabled));
    }

    #[test]
    fn refuses_unsafe_paths() {
        for (endpoint, expected) in [
            ("../admin", PathError::DotSegment),
            ("v1/../../x", PathError::DotSegment),
            ("./x", PathError::DotSegment),
            ("x/..", PathError::DotSegment),
            ("%2e%2e/x", PathError::DotSegment),
            ("%2E/x", PathError::DotSegment),
            (".%2e/x", PathError::DotSegment),
            ("a%2F..%2Fb", PathError::DotSegment),
            ("a\\b", PathError::Backslash),
            ("a%5cb", PathError::Backslash),
            ("a%5Cb", PathError::Backslash),
            ("a%00b", PathError::ControlCharacter),
            ("a%0d%0aHost:x", PathError::ControlCharacter),
            ("a%7f", PathError::ControlCharacter),
            ("a\tb", PathError::ControlCharacter),
            ("..;jsessionid=1/x", PathError::DotSegment),
            ("..%20/x", PathError::DotSegment),
            (".../x", PathError::DotSegment),
            ("%2e%2e%3b/x", PathError::DotSegment),
            ("%252e%252e/x", PathError::DoubleEncoding),
            ("%EF%BC%8E%EF%BC%8E/x", PathError::NonAscii),
            ("caf\u{e9}", PathError::NonAscii),
            ("a%zz", PathError::InvalidEncoding),
            ("a%2", PathError::InvalidEncoding),
        ] {
            assert_eq!(normalize_endpoint(endpoint, true), Err(expected), "{endpoint}");
        }
    }

    #[test]
    fn the_fast_path_agrees_with_segment_by_segment_checks() {
        // Every endpoint of up to five bytes over an alphabet with the interesting characters.
        let alphabet = b"a./;v1-";
        let mut endpoints = vec![String::new()];
        let mut shorter = vec![String::new()];
        for _ in 0..5 {
            // Each length once: the endpoints one byte longer than the last round's.
            shorter =
                shorter.iter().flat_map(|e| alphabet.iter().map(move |b| format!("{e}{}", char::from(*b)))).collect();
            endpoints.extend_from_slice(&shorter);
        }
        for endpoint in &endpoints {
            let slow = endpoint.split('/').try_for_each(check_segment);
            let fast = normalize_endpoint(endpoint, true).map(|_| ());
            assert_eq!(fast, slow, "{endpoint:?}");
        }
    }

    #[test]
    fn accepts_ordinary_paths() {
        for endpoint in
            ["chat/completions", "files/file-abc/content", "models/gpt-4o%3Amini", "a..b", ".well-known", "x//y"]
        {
            assert_eq!(normalize_endpoint(endpoint, true), Ok(endpoint));
        }
    }
}
