//! Header rules for both directions of a passthrough request.
//!
//! A deny-list, not an allow-list: provider headers Aurora has never heard of (`anthropic-beta`,
//! `OpenAI-Organization`, next year's rate-limit headers) must pass through untouched. What is
//! removed is client credentials, connection-scoped (hop-by-hop) headers and headers that would
//! tell the provider about the client's network. Both functions edit the map in place.

use aurora_core::{AuthStyle, ProviderKind};
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue};

use crate::snapshot::Upstream;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_AURORA_ERROR: HeaderName = HeaderName::from_static("x-aurora-error");
const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
const ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");
const DEFAULT_ANTHROPIC_VERSION: HeaderValue = HeaderValue::from_static("2023-06-01");

/// Connection-scoped headers (RFC 9110 §7.6.1 and the legacy ones), removed in both directions.
/// Matched by name (a `match` on the string compiles to a length switch and a compare, where a
/// `const` array of `HeaderName`s was built and dropped again for every header checked).
pub(crate) fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            // The gateway answers `Expect: 100-continue` itself; the upstream client does not.
            | "expect"
    )
}

/// Removed from requests before they go upstream, besides the hop-by-hop ones.
fn is_request_denied(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        // Client credentials: the Aurora token must never reach a provider.
        "authorization"
            | "x-api-key"
            | "api-key"
            | "x-goog-api-key"
            | "cookie"
            // Client network details the provider has no business seeing (X-Forwarded-* too).
            | "forwarded"
    ) || name.as_str().starts_with("x-forwarded-")
}

/// HTTP/2 counts each header field as its name, its value and 32 bytes (RFC 9113 §6.5.2).
const HEADER_FIELD_OVERHEAD: usize = 32;

/// The size of a header section as HTTP/2 counts it, whatever protocol carried it, so that a
/// byte limit means the same for HTTP/1.1 and HTTP/2.
pub fn section_size(headers: &HeaderMap) -> usize {
    headers.iter().map(|(name, value)| name.as_str().len() + value.len() + HEADER_FIELD_OVERHEAD).sum()
}

/// How many header fields fit in `max_header_bytes`, counted as [`section_size`] counts them.
/// hyper's HTTP/1.1 parser also limits the number of fields (to 100 by default, a limit no
/// setting mentioned); set to this, it only refuses heads that are too large by bytes anyway.
pub fn field_ceiling(max_header_bytes: u32) -> usize {
    usize::try_from(max_header_bytes).unwrap_or(usize::MAX) / HEADER_FIELD_OVERHEAD
}

/// Turns the client's request headers into the upstream request headers. The client's `Host`
/// is left in place for the upstream client to replace (a replacement costs less than a
/// removal and an insertion); whoever sends the request must set it.
///
/// `framing` says who frames the body upstream. The plain-HTTP/1.1 client
/// ([`crate::upstream::http1`]) always writes the body's framing itself and skips the
/// client's `Content-Length` and `Transfer-Encoding`, so they are left for it to skip. For
/// hyper-util's client, the client's `Content-Length` stays only when it is a single value
/// equal to the body's exact length (the server framed the body by it, so it is exactly right,
/// and that client then need not format and insert its own); any other is removed, and that
/// client frames the body itself (chunked, or by a length it computes).
pub fn prepare_request(
    headers: &mut HeaderMap,
    upstream: &Upstream,
    credential: Option<&HeaderValue>,
    request_id: &HeaderValue,
    framing: BodyFraming,
) {
    let credential_header = match upstream.kind.auth_style() {
        AuthStyle::XApiKey => X_API_KEY,
        AuthStyle::Bearer => header::AUTHORIZATION,
    };
    // The header the credential goes in is replaced below, every value of it: no need to
    // remove the client's first.
    let replaced = |name: &HeaderName| credential.is_some() && *name == credential_header;
    let length_frames_body = match framing {
        BodyFraming::BySender => true,
        BodyFraming::ByLength(body_length) => body_length.is_some_and(|length| states_length(headers, length)),
    };
    remove_where(headers, |name| {
        is_hop_by_hop(name)
            || (is_request_denied(name) && !replaced(name))
            || (name == header::CONTENT_LENGTH && !length_frames_body)
    });

    // Defaults only: a header the client sent wins. None of them can be a header the gateway
    // sets below (the admin API and the snapshot both refuse those names).
    for (name, value) in upstream.default_headers() {
        if let http::header::Entry::Vacant(entry) = headers.entry(name) {
            entry.insert(value.clone());
        }
    }
    if let Some(credential) = credential {
        headers.insert(credential_header, credential.clone());
    }
    if upstream.kind == ProviderKind::Anthropic {
        // A default only: clients pick their own API version when they send one.
        headers.entry(ANTHROPIC_VERSION).or_insert(DEFAULT_ANTHROPIC_VERSION);
    }
    headers.insert(X_REQUEST_ID, request_id.clone());
}

/// Who frames a request body on its way upstream (see [`prepare_request`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// The plain-HTTP/1.1 client: it writes the framing of the body it sends, whatever the
    /// client's fields say.
    BySender,
    /// hyper-util's client: by the client's `Content-Length` when that states the body's exact
    /// length (given here when known), else by a framing of its own.
    ByLength(Option<u64>),
}

/// Whether `headers` hold exactly one `Content-Length`, of exactly `length` (digits only).
fn states_length(headers: &HeaderMap, length: u64) -> bool {
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    let stated = values.next().and_then(|value| decimal_length(value.as_bytes()));
    stated == Some(length) && values.next().is_none()
}

/// Every `Content-Length` of a message head, taken together as its fields go by.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ContentLength {
    #[default]
    Absent,
    /// Every value seen is this same run of digits.
    Agreed(u64),
    /// Values that disagree, or one that is not digits: malformed, if the length frames the body.
    Malformed,
}

impl ContentLength {
    /// With one more value (its digits read by [`decimal_length`]; `None` if it is not digits).
    pub(crate) fn and(self, value: Option<u64>) -> ContentLength {
        match (self, value) {
            (ContentLength::Absent, Some(length)) => ContentLength::Agreed(length),
            (ContentLength::Agreed(seen), Some(length)) if seen == length => ContentLength::Agreed(length),
            _ => ContentLength::Malformed,
        }
    }
}

/// A `Content-Length` value: one or more ASCII digits that fit a `u64`, nothing else (no sign,
/// no spaces, unlike `str::parse`).
pub(crate) fn decimal_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        if !d.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// Filters the upstream's response headers before they go back to the client. Everything else,
/// `retry-after` and `x-ratelimit-*` above all, passes through verbatim.
pub fn prepare_response(headers: &mut HeaderMap, request_id: &HeaderValue) {
    // Provider cookies would be scoped to the gateway's host, never the provider's; only this
    // gateway's own errors carry X-Aurora-Error, so an upstream (or a chained gateway) must not
    // be able to pass its errors off as ours.
    remove_where(headers, |name| is_hop_by_hop(name) || name == header::SET_COOKIE || name == X_AURORA_ERROR);
    headers.insert(X_REQUEST_ID, request_id.clone());
}

/// Names removed from a map in one go. Requests carry a handful of headers and lose one or
/// two (a credential header the gateway does not replace, a `Connection`), so they are kept
/// on the stack; only a head with more than [`Doomed::INLINE`] of them spills into a vector.
struct Doomed {
    inline: [Option<HeaderName>; Doomed::INLINE],
    len: usize,
    spilled: Vec<HeaderName>,
}

impl Doomed {
    const INLINE: usize = 8;

    fn new() -> Self {
        Doomed { inline: Default::default(), len: 0, spilled: Vec::new() }
    }

    fn push(&mut self, name: HeaderName) {
        match self.inline.get_mut(self.len) {
            Some(slot) => {
                *slot = Some(name);
                self.len += 1;
            }
            None => self.spilled.push(name),
        }
    }

    /// By reference and only the slots used: moving the whole array into an iterator, and
    /// looking at every empty slot on the way, cost more than the removal it usually feeds.
    fn remove_from(mut self, headers: &mut HeaderMap) {
        for name in self.inline[..self.len].iter_mut().filter_map(Option::take).chain(self.spilled.drain(..)) {
            headers.remove(name);
        }
    }
}

/// Removes every header `matches` names, and the headers a `Connection` header lists (they
/// are hop-by-hop by declaration), in one pass over the names present.
fn remove_where(headers: &mut HeaderMap, matches: impl Fn(&HeaderName) -> bool) {
    // Made at the first name to remove: a response usually has none, and an unused list still
    // cost its setting up and its drop.
    let mut doomed: Option<Doomed> = None;
    let mut has_connection = false;
    for name in headers.keys() {
        has_connection |= name == header::CONNECTION;
        if matches(name) {
            doomed.get_or_insert_with(Doomed::new).push(name.clone());
        }
    }
    if has_connection {
        for listed in headers
            .get_all(header::CONNECTION)
            .iter()
            // Bytes, not `to_str`: one non-UTF-8 value must not hide the names listed beside it.
            .flat_map(|value| value.as_bytes().split(|b| *b == b','))
            .map(<[u8]>::trim_ascii)
            // The usual values name no header beyond those removed above.
            .filter(|token| !token.eq_ignore_ascii_case(b"keep-alive") && !token.eq_ignore_ascii_case(b"close"))
            .filter_map(|token| HeaderName::from_bytes(token).ok())
        {
            doomed.get_or_insert_with(Doomed::new).push(listed);
        }
    }
    if let Some(doomed) = doomed {
        doomed.remove_from(headers);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(kind: ProviderKind, credential: Option<&str>) -> Upstream {
        Upstream::new(kind, true, kind.default_base_url_parsed(), credential).unwrap()
    }

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn strips_client_credentials_and_hop_by_hop_headers() {
        let mut headers = map(&[
            ("authorization", "Bearer aurora"),
            ("x-api-key", "aurora"),
            ("api-key", "a"),
            ("x-goog-api-key", "g"),
            ("cookie", "c=1"),
            ("host", "gateway"),
            ("content-length", "12"),
            ("forwarded", "for=1.2.3.4"),
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("connection", "keep-alive, x-custom-hop"),
            ("x-custom-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic x"),
            ("anthropic-beta", "tools-2024"),
            ("anthropic-version", "2024-01-01"),
            ("openai-organization", "org"),
            ("idempotency-key", "k"),
            ("accept", "text/event-stream"),
        ]);
        let id = HeaderValue::from_static("req-1");
        let anthropic = upstream(ProviderKind::Anthropic, Some("sk-ant"));
        prepare_request(&mut headers, &anthropic, anthropic.credential(), &id, BodyFraming::ByLength(None));

        let mut names: Vec<_> = headers.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "accept",
                "anthropic-beta",
                "anthropic-version",
                // Left for the upstream client to replace.
                "host",
                "idempotency-key",
                "openai-organization",
                "x-api-key",
                "x-request-id"
            ]
        );
        assert_eq!(headers["x-api-key"], "sk-ant");
        assert_eq!(headers.get_all("x-api-key").iter().count(), 1, "the client's value is replaced");
        assert_eq!(headers["anthropic-version"], "2024-01-01", "the client's version wins");
        assert_eq!(headers["x-request-id"], "req-1");
    }

    #[test]
    fn injects_per_provider() {
        let id = HeaderValue::from_static("r");
        let mut headers = HeaderMap::new();
        let anthropic = upstream(ProviderKind::Anthropic, Some("sk-ant"));
        prepare_request(&mut headers, &anthropic, anthropic.credential(), &id, BodyFraming::ByLength(None));
        assert_eq!(headers["anthropic-version"], "2023-06-01");

        for kind in [ProviderKind::OpenAi, ProviderKind::OpenRouter, ProviderKind::Zai, ProviderKind::Vllm] {
            let mut headers = map(&[("authorization", "Bearer aurora")]);
            let up = upstream(kind, Some("sk-up"));
            prepare_request(&mut headers, &up, up.credential(), &id, BodyFraming::ByLength(None));
            assert_eq!(headers["authorization"], "Bearer sk-up", "{kind}");
            assert!(!headers.contains_key("anthropic-version"));
        }

        let mut headers = map(&[("authorization", "Bearer aurora")]);
        let vllm = upstream(ProviderKind::Vllm, None);
        prepare_request(&mut headers, &vllm, vllm.credential(), &id, BodyFraming::ByLength(None));
        assert!(!headers.contains_key("authorization"), "no credential configured: nothing sent");
    }

    #[test]
    fn default_headers_are_added_unless_the_client_sent_them() {
        let defaults = aurora_core::DefaultHeaders::from_pairs([
            ("HTTP-Referer", "https://example.com"),
            ("X-Title", "Aurora"),
            ("OpenAI-Organization", "org-default"),
        ])
        .unwrap();
        let upstream = upstream(ProviderKind::OpenRouter, Some("sk-or")).with_default_headers(&defaults);
        let mut headers = map(&[("x-title", "Client App"), ("authorization", "Bearer aurora")]);
        prepare_request(
            &mut headers,
            &upstream,
            upstream.credential(),
            &HeaderValue::from_static("r"),
            BodyFraming::ByLength(None),
        );
        assert_eq!(headers["http-referer"], "https://example.com");
        assert_eq!(headers["x-title"], "Client App", "the client's own value wins");
        assert_eq!(headers.get_all("x-title").iter().count(), 1);
        assert_eq!(headers["openai-organization"], "org-default");
        assert_eq!(headers["authorization"], "Bearer sk-or");
    }

    #[test]
    fn connection_listed_names_are_found_beside_non_utf8_bytes() {
        let mut headers = map(&[("x-hop", "1"), ("x-keep", "1")]);
        headers.insert("connection", HeaderValue::from_bytes(b"x-hop, \xff").unwrap());
        prepare_response(&mut headers, &HeaderValue::from_static("r"));
        assert!(!headers.contains_key("x-hop"));
        assert!(headers.contains_key("x-keep"));
    }

    #[test]
    fn content_length_stays_only_when_it_is_the_bodys_exact_length() {
        let anthropic = upstream(ProviderKind::Anthropic, Some("sk-ant"));
        let id = HeaderValue::from_static("r");
        let forwarded = |pairs: &[(&'static str, &'static str)], body_length: Option<u64>| {
            let mut headers = map(pairs);
            prepare_request(&mut headers, &anthropic, anthropic.credential(), &id, BodyFraming::ByLength(body_length));
            headers.get_all("content-length").iter().map(|v| v.to_str().unwrap().to_owned()).collect::<Vec<_>>()
        };
        assert_eq!(forwarded(&[("content-length", "12")], Some(12)), ["12"]);
        assert_eq!(forwarded(&[("content-length", "0")], Some(0)), ["0"]);
        // Any doubt, and the upstream client frames the body itself.
        assert!(forwarded(&[("content-length", "12")], None).is_empty());
        assert!(forwarded(&[("content-length", "12")], Some(13)).is_empty());
        assert!(forwarded(&[("content-length", "12"), ("content-length", "12")], Some(12)).is_empty());
        assert!(forwarded(&[("content-length", "+12")], Some(12)).is_empty());
        assert!(forwarded(&[("content-length", "12, 12")], Some(12)).is_empty());
        assert!(forwarded(&[("content-length", "")], Some(0)).is_empty());
        assert!(forwarded(&[("transfer-encoding", "chunked")], Some(12)).is_empty());

        // The plain-HTTP/1.1 client frames the body itself and skips the field: left in place.
        let mut headers = map(&[("content-length", "12, 13")]);
        prepare_request(&mut headers, &anthropic, anthropic.credential(), &id, BodyFraming::BySender);
        assert_eq!(headers["content-length"], "12, 13");
    }

    #[test]
    fn response_keeps_provider_headers() {
        let mut headers = map(&[
            ("retry-after", "7"),
            ("x-ratelimit-remaining-requests", "0"),
            ("content-type", "application/json"),
            ("content-length", "42"),
            ("set-cookie", "a=b"),
            ("connection", "close"),
            ("transfer-encoding", "chunked"),
            ("request-id", "req_upstream"),
            ("x-aurora-error", "gateway"),
        ]);
        prepare_response(&mut headers, &HeaderValue::from_static("r"));
        let mut names: Vec<_> = headers.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "content-length",
                "content-type",
                "request-id",
                "retry-after",
                "x-ratelimit-remaining-requests",
                "x-request-id"
            ]
        );
    }

    #[test]
    fn header_sections_are_measured_the_http2_way() {
        let headers = map(&[("a", "bc"), ("x-y", "")]);
        assert_eq!(section_size(&headers), (1 + 2 + 32) + (3 + 32));
        assert_eq!(field_ceiling(64 * 1024), 2048);
    }

    #[test]
    fn content_lengths_are_plain_digits_that_fit() {
        assert_eq!(decimal_length(b"0"), Some(0));
        assert_eq!(decimal_length(b"4096"), Some(4096));
        assert_eq!(decimal_length(u64::MAX.to_string().as_bytes()), Some(u64::MAX));
        for bad in [&b""[..], b"+5", b" 5", b"5 ", b"-1", b"0x10", b"18446744073709551616"] {
            assert_eq!(decimal_length(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
