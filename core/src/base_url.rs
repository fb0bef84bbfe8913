//! Validated upstream base URLs.
//!
//! A base URL is the prefix every passthrough endpoint of a provider is appended to. It is
//! validated once, when it enters the system (environment, admin API, snapshot), so the request
//! path can join strings without re-checking anything.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An absolute `http` or `https` URL with a host, no query, fragment or user info, and no
/// trailing slash.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BaseUrl(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BaseUrlError {
    #[error("base URL {0:?} is not an absolute URL")]
    NotAbsolute(String),
    #[error("base URL {0:?} must use http or https")]
    Scheme(String),
    /// The URL is not repeated: user info may be a password.
    #[error("base URL must not contain a query, fragment or user info")]
    Extras,
    #[error("base URL must not be longer than {max} bytes", max = BaseUrl::MAX_LEN)]
    TooLong,
}

impl BaseUrl {
    pub const MAX_LEN: usize = 2048;

    pub fn parse(raw: &str) -> Result<Self, BaseUrlError> {
        let raw = raw.trim();
        if raw.len() > Self::MAX_LEN {
            return Err(BaseUrlError::TooLong);
        }
        let url = url::Url::parse(raw).map_err(|_| BaseUrlError::NotAbsolute(raw.to_owned()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(BaseUrlError::Scheme(raw.to_owned()));
        }
        if url.host().is_none() {
            return Err(BaseUrlError::NotAbsolute(raw.to_owned()));
        }
        if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
            return Err(BaseUrlError::Extras);
        }
        // `url` normalises the path (percent-encoding, dot segments), so what we store is exactly
        // what an HTTP client will send.
        let normalised = url.as_str().trim_end_matches('/').to_owned();
        Ok(BaseUrl(normalised))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
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
    }

    #[test]
    fn rejects_bad_urls() {
        assert!(matches!(BaseUrl::parse("api.x.com/v1"), Err(BaseUrlError::NotAbsolute(_))));
        assert!(matches!(BaseUrl::parse("ftp://x.com"), Err(BaseUrlError::Scheme(_))));
        assert!(matches!(BaseUrl::parse("https://x.com/v1?a=b"), Err(BaseUrlError::Extras)));
        assert!(matches!(BaseUrl::parse("https://u:p@x.com/v1"), Err(BaseUrlError::Extras)));
        assert!(matches!(BaseUrl::parse("https://x.com/#f"), Err(BaseUrlError::Extras)));
    }
}
