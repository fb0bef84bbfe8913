//! Headers the operator adds to every request to a provider (OpenRouter's `HTTP-Referer` and
//! `X-Title`, `OpenAI-Organization`, ...), and which ones can never be set that way.
//!
//! Both planes agree on the rules: the admin API refuses a forbidden or malformed header naming
//! it, and the data plane checks again when it applies a configuration. A default header never
//! replaces what the gateway itself decides: the provider credential (any provider's credential
//! header, so a provider's kind changing its auth style cannot open a hole), `Host`, the body's
//! framing, connection-scoped (hop-by-hop) headers and the request id.

use std::fmt;

/// Most default headers one provider may have.
pub const MAX_DEFAULT_HEADERS: usize = 32;
/// Longest header name, in bytes.
pub const MAX_HEADER_NAME_BYTES: usize = 64;
/// Longest header value, in bytes.
pub const MAX_HEADER_VALUE_BYTES: usize = 1024;

/// Names a default header can never have (lower case).
const FORBIDDEN: [&str; 18] = [
    // Credentials: the gateway injects the provider's own; the client's are removed.
    "authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    // Set by the HTTP client for the upstream.
    "host",
    "content-length",
    // Hop-by-hop (RFC 9110 §7.6.1 and the legacy ones).
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
    // The gateway's own.
    "x-request-id",
    "x-aurora-error",
];

/// One default header: a lower-case token name and a printable ASCII value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultHeader {
    name: String,
    value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DefaultHeaderError {
    #[error("expected `Name: value`")]
    NotAHeader,
    #[error(
        "header name {0} is not a valid HTTP field name (at most {MAX_HEADER_NAME_BYTES} letters, digits and !#$%&'*+-.^_`|~)"
    )]
    InvalidName(String),
    #[error("header {0:?} cannot be a default header: the gateway sets or removes it itself")]
    Forbidden(String),
    #[error("the value of header {0:?} must be printable ASCII of at most {MAX_HEADER_VALUE_BYTES} bytes")]
    InvalidValue(String),
    #[error("header {0:?} is given twice")]
    Duplicate(String),
    #[error("at most {MAX_DEFAULT_HEADERS} default headers per provider")]
    TooMany,
}

impl DefaultHeader {
    pub fn new(name: &str, value: &str) -> Result<DefaultHeader, DefaultHeaderError> {
        let shown = || crate::text::excerpt_of(name, MAX_HEADER_NAME_BYTES);
        if name.is_empty() || name.len() > MAX_HEADER_NAME_BYTES || !name.bytes().all(is_token_byte) {
            return Err(DefaultHeaderError::InvalidName(shown()));
        }
        let name = name.to_ascii_lowercase();
        if FORBIDDEN.contains(&name.as_str()) || name.starts_with("x-aurora-") {
            return Err(DefaultHeaderError::Forbidden(name));
        }
        let value = value.trim_matches([' ', '\t']);
        if value.len() > MAX_HEADER_VALUE_BYTES
            || !value.bytes().all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic())
        {
            return Err(DefaultHeaderError::InvalidValue(name));
        }
        Ok(DefaultHeader { name, value: value.to_owned() })
    }

    /// Parses `Name: value`, as the CLI's `--header` takes it.
    pub fn parse(line: &str) -> Result<DefaultHeader, DefaultHeaderError> {
        let (name, value) = line.split_once(':').ok_or(DefaultHeaderError::NotAHeader)?;
        DefaultHeader::new(name.trim(), value)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn value(&self) -> &str {
        &self.value
    }
}

impl fmt::Display for DefaultHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, self.value)
    }
}

/// A provider's default headers: distinct names, at most [`MAX_DEFAULT_HEADERS`], in the order
/// given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DefaultHeaders(Vec<DefaultHeader>);

impl DefaultHeaders {
    pub fn new(headers: Vec<DefaultHeader>) -> Result<DefaultHeaders, DefaultHeaderError> {
        if headers.len() > MAX_DEFAULT_HEADERS {
            return Err(DefaultHeaderError::TooMany);
        }
        for (i, header) in headers.iter().enumerate() {
            if headers[..i].iter().any(|earlier| earlier.name == header.name) {
                return Err(DefaultHeaderError::Duplicate(header.name.clone()));
            }
        }
        Ok(DefaultHeaders(headers))
    }

    /// From `(name, value)` pairs, each checked.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<DefaultHeaders, DefaultHeaderError> {
        DefaultHeaders::new(pairs.into_iter().map(|(n, v)| DefaultHeader::new(n, v)).collect::<Result<_, _>>()?)
    }

    pub fn iter(&self) -> impl Iterator<Item = &DefaultHeader> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// One `name: value` per line: the storage form (values hold no line breaks).
    pub fn to_lines(&self) -> String {
        self.0.iter().map(DefaultHeader::to_string).collect::<Vec<_>>().join("\n")
    }

    /// The inverse of [`Self::to_lines`], checking everything again.
    pub fn from_lines(lines: &str) -> Result<DefaultHeaders, DefaultHeaderError> {
        DefaultHeaders::new(
            lines.lines().filter(|l| !l.is_empty()).map(DefaultHeader::parse).collect::<Result<_, _>>()?,
        )
    }
}

/// RFC 9110 `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lower_cased_and_values_trimmed() {
        let header = DefaultHeader::parse("HTTP-Referer:  https://example.com ").unwrap();
        assert_eq!((header.name(), header.value()), ("http-referer", "https://example.com"));
        assert_eq!(DefaultHeader::parse("X-Title: My App").unwrap().to_string(), "x-title: My App");
    }

    #[test]
    fn the_gateways_own_headers_are_refused() {
        for name in ["Authorization", "x-api-key", "HOST", "Connection", "transfer-encoding", "x-aurora-anything"] {
            assert!(
                matches!(DefaultHeader::new(name, "v"), Err(DefaultHeaderError::Forbidden(_))),
                "{name} must be refused"
            );
        }
        let message = DefaultHeader::new("Authorization", "Bearer x").unwrap_err().to_string();
        assert_eq!(
            message,
            "header \"authorization\" cannot be a default header: the gateway sets or removes it itself"
        );
    }

    #[test]
    fn malformed_headers_are_refused() {
        assert_eq!(DefaultHeader::parse("no colon"), Err(DefaultHeaderError::NotAHeader));
        assert!(matches!(DefaultHeader::new("bad name", "v"), Err(DefaultHeaderError::InvalidName(_))));
        assert!(matches!(DefaultHeader::new(":path", "v"), Err(DefaultHeaderError::InvalidName(_))));
        assert!(matches!(DefaultHeader::new("x-a", "line\r\nbreak"), Err(DefaultHeaderError::InvalidValue(_))));
        assert!(matches!(DefaultHeader::new("x-a", "café"), Err(DefaultHeaderError::InvalidValue(_))));
        let long = "v".repeat(MAX_HEADER_VALUE_BYTES + 1);
        assert!(matches!(DefaultHeader::new("x-a", &long), Err(DefaultHeaderError::InvalidValue(_))));
        assert_eq!(
            DefaultHeaders::from_pairs([("X-A", "1"), ("x-a", "2")]),
            Err(DefaultHeaderError::Duplicate("x-a".into()))
        );
        let many: Vec<String> = (0..=MAX_DEFAULT_HEADERS).map(|i| format!("x-{i}")).collect();
        assert_eq!(
            DefaultHeaders::from_pairs(many.iter().map(|n| (n.as_str(), "v"))),
            Err(DefaultHeaderError::TooMany)
        );
    }

    #[test]
    fn the_storage_form_round_trips() {
        let headers =
            DefaultHeaders::from_pairs([("HTTP-Referer", "https://example.com"), ("X-Title", "a: b")]).unwrap();
        assert_eq!(headers.to_lines(), "http-referer: https://example.com\nx-title: a: b");
        assert_eq!(DefaultHeaders::from_lines(&headers.to_lines()).unwrap(), headers);
        assert_eq!(DefaultHeaders::from_lines("").unwrap(), DefaultHeaders::default());
    }
}
