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
const HOP_BY_HOP: [HeaderName; 10] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    // The gateway answers `Expect: 100-continue` itself; the upstream client does not do it.
    header::EXPECT,
];

/// Removed from requests before they go upstream, besides the hop-by-hop ones.
const REQUEST_DENY: [HeaderName; 8] = [
    // Client credentials: the Aurora token must never reach a provider.
    header::AUTHORIZATION,
    X_API_KEY,
    HeaderName::from_static("api-key"),
    HeaderName::from_static("x-goog-api-key"),
    header::COOKIE,
    // Set by the HTTP client for the upstream instead.
    header::HOST,
    header::CONTENT_LENGTH,
    // Client network details the provider has no business seeing (X-Forwarded-* below).
    header::FORWARDED,
];

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

/// Turns the client's request headers into the upstream request headers.
pub fn prepare_request(
    headers: &mut HeaderMap,
    upstream: &Upstream,
    credential: Option<&HeaderValue>,
    request_id: &HeaderValue,
) {
    remove_connection_listed(headers);
    // One pass over the few headers a request has, rather than a hash lookup for each of the
    // eighteen names (which showed in the profile: `HeaderMap::remove` and its hashing).
    remove_where(headers, |name| {
        HOP_BY_HOP.contains(name) || REQUEST_DENY.contains(name) || name.as_str().starts_with("x-forwarded-")
    });

    // Defaults only: a header the client sent wins. None of them can be a header the gateway
    // sets below (the admin API and the snapshot both refuse those names).
    for (name, value) in upstream.default_headers() {
        if let http::header::Entry::Vacant(entry) = headers.entry(name) {
            entry.insert(value.clone());
        }
    }
    if let Some(credential) = credential {
        let name = match upstream.kind.auth_style() {
            AuthStyle::XApiKey => X_API_KEY,
            AuthStyle::Bearer => header::AUTHORIZATION,
        };
        headers.insert(name, credential.clone());
    }
    if upstream.kind == ProviderKind::Anthropic && !headers.contains_key(ANTHROPIC_VERSION) {
        // A default only: clients pick their own API version when they send one.
        headers.insert(ANTHROPIC_VERSION, DEFAULT_ANTHROPIC_VERSION);
    }
    headers.insert(X_REQUEST_ID, request_id.clone());
}

/// Filters the upstream's response headers before they go back to the client. Everything else,
/// `retry-after` and `x-ratelimit-*` above all, passes through verbatim.
pub fn prepare_response(headers: &mut HeaderMap, request_id: &HeaderValue) {
    remove_connection_listed(headers);
    // Provider cookies would be scoped to the gateway's host, never the provider's; only this
    // gateway's own errors carry X-Aurora-Error, so an upstream (or a chained gateway) must not
    // be able to pass its errors off as ours. One pass, as in `prepare_request`.
    remove_where(headers, |name| HOP_BY_HOP.contains(name) || name == header::SET_COOKIE || name == X_AURORA_ERROR);
    headers.insert(X_REQUEST_ID, request_id.clone());
}

/// Removes the headers a `Connection` header names (they are hop-by-hop by declaration).
fn remove_connection_listed(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        // Bytes, not `to_str`: one non-UTF-8 value must not hide the names listed beside it.
        .flat_map(|value| value.as_bytes().split(|b| *b == b','))
        .filter_map(|token| HeaderName::from_bytes(token.trim_ascii()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
}

fn remove_where(headers: &mut HeaderMap, matches: impl Fn(&HeaderName) -> bool) {
    // Collecting first is needed because the map cannot be mutated while iterating; the vector
    // only allocates when something matches.
    let doomed: Vec<HeaderName> = headers.keys().filter(|name| matches(name)).cloned().collect();
    for name in doomed {
        headers.remove(name);
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
        prepare_request(&mut headers, &anthropic, anthropic.credential(), &id);

        let mut names: Vec<_> = headers.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "accept",
                "anthropic-beta",
                "anthropic-version",
                "idempotency-key",
                "openai-organization",
                "x-api-key",
                "x-request-id"
            ]
        );
        assert_eq!(headers["x-api-key"], "sk-ant");
        assert_eq!(headers["anthropic-version"], "2024-01-01", "the client's version wins");
        assert_eq!(headers["x-request-id"], "req-1");
    }

    #[test]
    fn injects_per_provider() {
        let id = HeaderValue::from_static("r");
        let mut headers = HeaderMap::new();
        let anthropic = upstream(ProviderKind::Anthropic, Some("sk-ant"));
        prepare_request(&mut headers, &anthropic, anthropic.credential(), &id);
        assert_eq!(headers["anthropic-version"], "2023-06-01");

        for kind in [ProviderKind::OpenAi, ProviderKind::OpenRouter, ProviderKind::Zai, ProviderKind::Vllm] {
            let mut headers = map(&[("authorization", "Bearer aurora")]);
            let up = upstream(kind, Some("sk-up"));
            prepare_request(&mut headers, &up, up.credential(), &id);
            assert_eq!(headers["authorization"], "Bearer sk-up", "{kind}");
            assert!(!headers.contains_key("anthropic-version"));
        }

        let mut headers = map(&[("authorization", "Bearer aurora")]);
        let vllm = upstream(ProviderKind::Vllm, None);
        prepare_request(&mut headers, &vllm, vllm.credential(), &id);
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
        prepare_request(&mut headers, &upstream, upstream.credential(), &HeaderValue::from_static("r"));
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
}
