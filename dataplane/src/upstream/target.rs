//! Where a provider's requests go: its base URL split once, per snapshot, into scheme,
//! authority and path, so that each request's URI is built by appending its endpoint and query
//! to that path (one string, one path check) rather than by parsing a whole absolute URL.

use bytes::Bytes;
use http::Uri;
use http::uri::{Authority, PathAndQuery, Scheme};

use aurora_core::BaseUrl;

/// A base URL in the pieces `http::Uri` is made of.
#[derive(Debug, Clone)]
pub struct Target {
    scheme: Scheme,
    authority: Authority,
    /// The base URL's path without its trailing slash: empty or `/v1`-like.
    path: Box<str>,
}

impl Target {
    /// `None` if `http` does not read the base URL as `url` did (no known case: both accept
    /// the canonical `http(s)://host[:port][/path]` a [`BaseUrl`] is).
    pub fn of(base: &BaseUrl) -> Option<Target> {
        let parts = base.as_str().parse::<Uri>().ok()?.into_parts();
        let path = parts.path_and_query.as_ref().map_or("", PathAndQuery::path).trim_end_matches('/');
        Some(Target { scheme: parts.scheme?, authority: parts.authority?, path: path.into() })
    }

    /// `{base}/{endpoint}?{query}`, the query byte for byte. `None` only if the result is not a
    /// valid URI, which the route checks make impossible in practice.
    pub fn uri(&self, endpoint: &str, query: Option<&str>) -> Option<Uri> {
        // Exactly the length written: `Bytes` takes a full vector as it is, where a spare byte
        // of capacity costs it an allocation of its own to share the buffer.
        let endpoint_len = if endpoint.is_empty() { usize::from(self.path.is_empty()) } else { endpoint.len() + 1 };
        let mut path = Vec::with_capacity(self.path.len() + endpoint_len + query.map_or(0, |q| q.len() + 1));
        path.extend_from_slice(self.path.as_bytes());
        if !endpoint.is_empty() {
            path.push(b'/');
            path.extend_from_slice(endpoint.as_bytes());
        }
        if path.is_empty() {
            path.push(b'/');
        }
        if let Some(query) = query {
            path.push(b'?');
            path.extend_from_slice(query.as_bytes());
        }
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        debug_assert_eq!(path.len(), path.capacity());
        parts.path_and_query = Some(PathAndQuery::from_maybe_shared(Bytes::from(path)).ok()?);
        Uri::from_parts(parts).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(base: &str) -> Target {
        Target::of(&BaseUrl::parse(base).unwrap()).unwrap()
    }

    #[test]
    fn joins_without_doubling_slashes_and_keeps_the_query() {
        let anthropic = target("https://api.anthropic.com/v1");
        let uri = anthropic.uri("messages", Some("beta=true&x=%20y")).unwrap();
        assert_eq!(uri.to_string(), "https://api.anthropic.com/v1/messages?beta=true&x=%20y");
        assert_eq!(anthropic.uri("", None).unwrap().to_string(), "https://api.anthropic.com/v1");
        assert_eq!(anthropic.uri("models/claude", None).unwrap().path(), "/v1/models/claude");
    }

    #[test]
    fn a_base_without_a_path_gets_the_root() {
        let local = target("http://127.0.0.1:8000");
        assert_eq!(local.uri("", None).unwrap().to_string(), "http://127.0.0.1:8000/");
        assert_eq!(local.uri("", Some("a=1")).unwrap().to_string(), "http://127.0.0.1:8000/?a=1");
        assert_eq!(
            local.uri("v1/chat/completions", None).unwrap().to_string(),
            "http://127.0.0.1:8000/v1/chat/completions"
        );
        let ipv6 = target("http://[::1]:9000/api");
        assert_eq!(ipv6.uri("x", None).unwrap().authority().unwrap().as_str(), "[::1]:9000");
    }

    #[test]
    fn what_the_old_string_join_made_is_what_this_makes() {
        for base in ["https://api.openai.com/v1", "http://localhost:8000", "https://openrouter.ai/api/v1"] {
            let target = target(base);
            for (endpoint, query) in [("chat/completions", None), ("", Some("x=1")), ("a/b%2Fc", Some(""))] {
                let mut joined = base.to_owned();
                if !endpoint.is_empty() {
                    joined.push('/');
                    joined.push_str(endpoint);
                }
                if let Some(query) = query {
                    joined.push('?');
                    joined.push_str(query);
                }
                assert_eq!(target.uri(endpoint, query).unwrap(), joined.parse::<Uri>().unwrap(), "{base} {endpoint}");
            }
        }
    }
}
