//! Validated upstream base URLs.
//!
//! A base URL is the prefix every passthrough endpoint of a provider is appended to. It is
//! validated once, when it enters the system (environment, admin API, snapshot), so the request
//! path can join strings without re-checking anything.
//!
//! A base URL is stored exactly as given, or refused: the one rewrite is that surrounding
//! whitespace and trailing slashes are dropped. Anything a URL parser would otherwise change
//! silently (`http://0x7f000001` becoming `127.0.0.1`, `/v1/../../admin` becoming `/admin`,
//! an upper-case scheme, a default port, characters that need percent-encoding) is refused
//! with the canonical form to write instead, so what an operator reads in a listing is what
//! the data plane sends to.
//!
//! No error ever repeats the URL as given: it may hold a password (`https://user:pw@host`)
//! even when it does not parse.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::ProviderKind;

/// An absolute `http` or `https` URL with a host, no query, fragment or user info, in
/// canonical form, without a trailing slash.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BaseUrl(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BaseUrlError {
    /// The parser's own message (e.g. "invalid port number") never contains the input.
    #[error("base URL is not an absolute URL ({0})")]
    NotAbsolute(url::ParseError),
    #[error("base URL has no host")]
    NoHost,
    /// The scheme is not repeated either: `user:password@host` parses with `user` as its scheme.
    #[error("base URL must use http or https")]
    Scheme,
    #[error("base URL must not contain {0}")]
    Extras(&'static str),
    #[error("base URL must not be longer than {max} bytes", max = BaseUrl::MAX_LEN)]
    TooLong,
    /// The canonical form is shown (it has no user info: that is refused first).
    #[error(
        "base URL is not in canonical form (it would be rewritten); write it as {canonical}",
        canonical = crate::text::excerpt_of(.0, 96)
    )]
    NotCanonical(String),
}

/// Where an upstream host is, as far as can be told without resolving a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostScope {
    /// This machine: a loopback or unspecified address, or `localhost`.
    Loopback,
    /// 169.254.0.0/16 or fe80::/10, where cloud metadata endpoints live.
    LinkLocal,
    /// Anything else, including every other name.
    Other,
}

impl BaseUrl {
    pub const MAX_LEN: usize = 2048;

    pub fn parse(raw: &str) -> Result<Self, BaseUrlError> {
        let raw = raw.trim();
        if raw.len() > Self::MAX_LEN {
            return Err(BaseUrlError::TooLong);
        }
        let url = url::Url::parse(raw).map_err(BaseUrlError::NotAbsolute)?;
        // User info first: every later error may show the parsed URL, which would include it.
        if !url.username().is_empty() || url.password().is_some() {
            return Err(BaseUrlError::Extras("user info"));
        }
        if !matches!(url.scheme(), "http" | "https") {
            return Err(BaseUrlError::Scheme);
        }
        if url.host().is_none() {
            return Err(BaseUrlError::NoHost);
        }
        if url.query().is_some() {
            return Err(BaseUrlError::Extras("a query"));
        }
        if url.fragment().is_some() {
            return Err(BaseUrlError::Extras("a fragment"));
        }
        let canonical = url.as_str().trim_end_matches('/');
        if canonical != raw.trim_end_matches('/') {
            return Err(BaseUrlError::NotCanonical(canonical.to_owned()));
        }
        Ok(BaseUrl(canonical.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Where the host is (names other than `localhost` are not resolved).
    pub fn host_scope(&self) -> HostScope {
        match url::Url::parse(&self.0).ok().as_ref().and_then(url::Url::host) {
            Some(url::Host::Ipv4(ip)) => ip_scope(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => ip_scope(IpAddr::V6(ip)),
            Some(url::Host::Domain(name)) => {
                let name = name.trim_end_matches('.');
                if name == "localhost" || name.ends_with(".localhost") { HostScope::Loopback } else { HostScope::Other }
            }
            None => HostScope::Other,
        }
    }

    /// A warning when this URL is an unusual upstream for `kind`: a link-local address for any
    /// provider (no model server lives at a cloud metadata endpoint), or this machine for any
    /// provider but `vllm` (the one that is self-hosted). Such URLs are accepted, since tests
    /// and local mirrors use them, but never silently.
    pub fn upstream_warning(&self, kind: ProviderKind) -> Option<&'static str> {
        match self.host_scope() {
            HostScope::LinkLocal => Some(
                "the base URL points at a link-local address (169.254.0.0/16 or fe80::/10), where cloud metadata endpoints live; requests and the provider's credential will go there",
            ),
            HostScope::Loopback if kind != ProviderKind::Vllm => Some(
                "the base URL points at this machine (loopback), which is unusual for a hosted provider; requests and the provider's credential will go there",
            ),
            HostScope::Loopback | HostScope::Other => None,
        }
    }
}

fn ip_scope(ip: IpAddr) -> HostScope {
    match ip {
        IpAddr::V4(ip) => v4_scope(ip),
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(v4) => v4_scope(v4),
            None if ip.is_loopback() || ip.is_unspecified() => HostScope::Loopback,
            None if is_v6_link_local(ip) => HostScope::LinkLocal,
            None => HostScope::Other,
        },
    }
}

fn v4_scope(ip: Ipv4Addr) -> HostScope {
    // 0.0.0.0 reaches this machine on Linux.
    if ip.is_loopback() || ip.is_unspecified() {
        HostScope::Loopback
    } else if ip.is_link_local() {
        HostScope::LinkLocal
    } else {
        HostScope::Other
    }
}

fn is_v6_link_local(ip: Ipv6Addr) -> bool {
    ip.segments()[0] & 0xffc0 == 0xfe80
}

impl TryFrom<String> for BaseUrl {
    type Error = BaseUrlError;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        BaseUrl::parse(&raw)
    }
}

impl From<BaseUrl> for String {
    fn from(url: BaseUrl) -> String {
        url.0
    }
}

impl fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_trailing_slash() {
        assert_eq!(BaseUrl::parse("https://api.x.com/v1/").unwrap().as_str(), "https://api.x.com/v1");
        assert_eq!(BaseUrl::parse("http://127.0.0.1:8000").unwrap().as_str(), "http://127.0.0.1:8000");
        assert_eq!(BaseUrl::parse(" http://[::1]:2375/ ").unwrap().as_str(), "http://[::1]:2375");
    }

    #[test]
    fn rejects_bad_urls() {
        assert!(matches!(BaseUrl::parse("api.x.com/v1"), Err(BaseUrlError::NotAbsolute(_))));
        assert!(matches!(BaseUrl::parse("ftp://x.com"), Err(BaseUrlError::Scheme)));
        assert!(matches!(BaseUrl::parse("https://x.com/v1?a=b"), Err(BaseUrlError::Extras("a query"))));
        assert!(matches!(BaseUrl::parse("https://u:p@x.com/v1"), Err(BaseUrlError::Extras("user info"))));
        assert!(matches!(BaseUrl::parse("https://x.com/#f"), Err(BaseUrlError::Extras("a fragment"))));
        assert!(matches!(BaseUrl::parse(&format!("https://x.com/{}", "a".repeat(2048))), Err(BaseUrlError::TooLong)));
    }

    /// Today's parser rewrote these silently; now they are refused, naming the form to write.
    #[test]
    fn non_canonical_urls_are_refused_not_rewritten() {
        for (raw, canonical) in [
            ("http://0x7f000001", "http://127.0.0.1"),
            ("http://2130706433:8000/v1", "http://127.0.0.1:8000/v1"),
            ("https://api.x.com/v1/../../admin", "https://api.x.com/admin"),
            ("https://api.x.com/v1/%2e%2e/admin", "https://api.x.com/admin"),
            ("https://api.x.com/./v1", "https://api.x.com/v1"),
            ("HTTPS://API.x.com/v1", "https://api.x.com/v1"),
            ("https://api.x.com:443/v1", "https://api.x.com/v1"),
            ("https://api.x.com/a b", "https://api.x.com/a%20b"),
            ("https://api.x.com\\v1", "https://api.x.com/v1"),
            ("http://[0:0::1]:8000", "http://[::1]:8000"),
        ] {
            let err = BaseUrl::parse(raw).expect_err(raw);
            assert_eq!(err, BaseUrlError::NotCanonical(canonical.to_owned()), "{raw}");
            assert!(err.to_string().contains(canonical), "{err}");
            assert!(BaseUrl::parse(canonical).is_ok(), "the suggested form is accepted: {canonical}");
        }
    }

    /// No error repeats a password, whether the URL parses or not.
    #[test]
    fn errors_never_contain_user_info() {
        for raw in [
            "ftp://admin:S3cretPw@x.com",
            "https://admin:S3cretPw@x.com/v1",
            "http://admin:S3cretPw@[not-a-host/v1",
            "http://admin:S3cretPw@x.com:99999",
            "admin:S3cretPw@x.com",
            "HTTP://admin:S3cretPw@0x7f000001/",
            "http://admin:S3cretPw@x.com/v1?q#f",
        ] {
            let err = BaseUrl::parse(raw).expect_err(raw).to_string();
            assert!(!err.contains("S3cretPw") && !err.contains("admin"), "{raw}: {err}");
        }
    }

    #[test]
    fn errors_repeat_at_most_a_short_prefix() {
        let err = BaseUrl::parse(&format!("https://x.com/{}/../v1", "a".repeat(1500))).expect_err("dots").to_string();
        assert!(err.len() < 200, "{err}");
    }

    #[test]
    fn loopback_and_link_local_upstreams_are_told_apart() {
        let scope = |raw: &str| BaseUrl::parse(raw).unwrap().host_scope();
        for raw in
            ["http://127.0.0.1:8000", "http://127.8.9.1", "http://[::1]:2375", "http://localhost:1", "http://0.0.0.0"]
        {
            assert_eq!(scope(raw), HostScope::Loopback, "{raw}");
        }
        for raw in ["http://169.254.169.254/latest", "http://[fe80::1]", "http://[febf::1]", "http://[::ffff:a9fe:101]"]
        {
            assert_eq!(scope(raw), HostScope::LinkLocal, "{raw}");
        }
        for raw in ["https://api.openai.com/v1", "http://10.0.0.1", "http://[fec0::1]", "http://gpu:8000"] {
            assert_eq!(scope(raw), HostScope::Other, "{raw}");
        }
    }

    #[test]
    fn warnings_spare_a_local_vllm_only() {
        let metadata = BaseUrl::parse("http://169.254.169.254/v1").unwrap();
        let docker = BaseUrl::parse("http://[::1]:2375").unwrap();
        let public = BaseUrl::parse("https://api.openai.com/v1").unwrap();
        assert!(metadata.upstream_warning(ProviderKind::Vllm).is_some());
        assert!(metadata.upstream_warning(ProviderKind::OpenAi).is_some());
        assert!(docker.upstream_warning(ProviderKind::OpenAi).is_some());
        assert_eq!(docker.upstream_warning(ProviderKind::Vllm), None);
        assert_eq!(public.upstream_warning(ProviderKind::OpenAi), None);
    }
}
