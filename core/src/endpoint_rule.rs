//! Endpoint allow-list rules of a gateway key: `PROVIDER METHOD PATH`, e.g.
//! `anthropic POST /v1/messages`.
//!
//! The control plane validates rules with this parser, the CLI and the store keep their
//! canonical text, and the data plane parses that text again and matches every request of a
//! key that has rules. Matching allocates nothing.
//!
//! Syntax (documented in README.md, "Endpoint allow-lists"):
//! - `PROVIDER` is a provider name (`anthropic`, `openai`, ...).
//! - `METHOD` is one of the forwarded methods (`GET`, `HEAD`, `POST`, `PUT`, `PATCH`, `DELETE`,
//!   `OPTIONS`), or `*` for any of them.
//! - `PATH` is the endpoint after `/p/{provider}`, starting with `/`. A leading `/v1` segment is
//!   dropped, as the data plane's `/v1` alias drops it from requests, so `/v1/messages` and
//!   `/messages` are the same rule. Each segment is a literal (letters, digits and
//!   `-._~:@!$&'()+,;=`), `*` (exactly one non-empty segment), or, as the last segment only,
//!   `**` (any number of segments, none included).
//!
//! Literal segments are compared byte for byte with the raw request path, so a percent-encoded
//! spelling of an allowed path does not match (refused, never let through). A wildcard matches
//! no segment that carries an encoded slash or backslash, which an upstream might decode into a
//! path of its own choosing.

use std::fmt;
use std::str::FromStr;

use crate::ProviderKind;

/// At most this many rules per key: a key's rules are matched on every one of its requests.
pub const MAX_ENDPOINT_RULES: usize = 64;
/// Longest rule text accepted.
pub const MAX_ENDPOINT_RULE_BYTES: usize = 512;

/// The methods a rule may name: those passthrough routes forward.
const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// One parsed rule.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EndpointRule {
    provider: ProviderKind,
    /// `None` for `*`; otherwise one of [`METHODS`].
    method: Option<&'static str>,
    /// The path's segments after the optional `/v1`; `**` only ever last.
    segments: Box<[Segment]>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum Segment {
    Literal(Box<str>),
    One,
    Rest,
}

/// Why a rule was refused, said precisely enough to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointRuleError {
    #[error("an endpoint rule is `PROVIDER METHOD PATH`, e.g. `anthropic POST /v1/messages`")]
    Shape,
    #[error("an endpoint rule is at most {MAX_ENDPOINT_RULE_BYTES} bytes")]
    TooLong,
    #[error("unknown provider in endpoint rule; known providers: {}", ProviderKind::known_list())]
    Provider,
    #[error("the method of an endpoint rule is one of {} or `*`", METHODS.join(", "))]
    Method,
    #[error("the path of an endpoint rule starts with `/`")]
    PathStart,
    #[error("`**` may only be the last segment of an endpoint rule's path")]
    RestNotLast,
    #[error(
        "an endpoint rule's path segment is a literal (letters, digits, -._~:@!$&'()+,;=), `*` or a final `**`; \
         `.` and `..` are not segments"
    )]
    Segment,
}

impl FromStr for EndpointRule {
    type Err = EndpointRuleError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.len() > MAX_ENDPOINT_RULE_BYTES {
            return Err(EndpointRuleError::TooLong);
        }
        let mut words = text.split_ascii_whitespace();
        let (Some(provider), Some(method), Some(path), None) = (words.next(), words.next(), words.next(), words.next())
        else {
            return Err(EndpointRuleError::Shape);
        };
        let provider: ProviderKind = provider.parse().map_err(|_| EndpointRuleError::Provider)?;
        let method = match method {
            "*" => None,
            name => Some(*METHODS.iter().find(|m| **m == name).ok_or(EndpointRuleError::Method)?),
        };
        let path = path.strip_prefix('/').ok_or(EndpointRuleError::PathStart)?;
        let path = match path.strip_prefix("v1") {
            Some("") => "",
            Some(rest) if rest.starts_with('/') => &rest[1..],
            _ => path,
        };
        let mut segments = Vec::new();
        let mut parts = path.split('/').peekable();
        while let Some(part) = parts.next() {
            let segment = match part {
                "**" if parts.peek().is_some() => return Err(EndpointRuleError::RestNotLast),
                "**" => Segment::Rest,
                "*" => Segment::One,
                "." | ".." => return Err(EndpointRuleError::Segment),
                // `/` and `/v1` alone are the empty endpoint, which a request can call.
                "" if segments.is_empty() && parts.peek().is_none() => Segment::Literal("".into()),
                literal if !literal.is_empty() && literal.bytes().all(literal_byte) => Segment::Literal(literal.into()),
                _ => return Err(EndpointRuleError::Segment),
            };
            segments.push(segment);
        }
        Ok(EndpointRule { provider, method, segments: segments.into() })
    }
}

fn literal_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~:@!$&'()+,;=".contains(&b)
}

impl EndpointRule {
    pub fn provider(&self) -> ProviderKind {
        self.provider
    }

    /// Whether a request to `provider` with `method` on `endpoint` (the raw endpoint as the
    /// route hands it over: no leading slash, `/v1` alias already applied) is allowed.
    pub fn matches(&self, provider: ProviderKind, method: &str, endpoint: &str) -> bool {
        if self.provider != provider || self.method.is_some_and(|m| m != method) {
            return false;
        }
        let mut parts = endpoint.split('/');
        for segment in &self.segments {
            match segment {
                Segment::Rest => return parts.all(wildcard_safe),
                Segment::One => match parts.next() {
                    Some(part) if !part.is_empty() && wildcard_safe(part) => {}
                    _ => return false,
                },
                Segment::Literal(literal) => {
                    if parts.next() != Some(literal) {
                        return false;
                    }
                }
            }
        }
        parts.next().is_none()
    }
}

/// A segment a wildcard may stand for: no encoded `/` or `\`.
fn wildcard_safe(part: &str) -> bool {
    let bytes = part.as_bytes();
    !bytes.windows(3).any(|w| w[0] == b'%' && (w[1] == b'2' && w[2].eq_ignore_ascii_case(&b'f')))
        && !bytes.windows(3).any(|w| w[0] == b'%' && (w[1] == b'5' && w[2].eq_ignore_ascii_case(&b'c')))
}

/// The canonical text: what the store keeps and the APIs show.
impl fmt::Display for EndpointRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} ", self.provider, self.method.unwrap_or("*"))?;
        if self.segments.is_empty() {
            return f.write_str("/");
        }
        for segment in &self.segments {
            let text = match segment {
                Segment::Literal(literal) => literal,
                Segment::One => "*",
                Segment::Rest => "**",
            };
            write!(f, "/{text}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for EndpointRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EndpointRule({self})")
    }
}

/// Whether any of `rules` allows the request (see [`EndpointRule::matches`]).
pub fn endpoint_allowed(rules: &[EndpointRule], provider: ProviderKind, method: &str, endpoint: &str) -> bool {
    rules.iter().any(|rule| rule.matches(provider, method, endpoint))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(text: &str) -> EndpointRule {
        text.parse().unwrap_or_else(|err| panic!("{text}: {err}"))
    }

    const A: ProviderKind = ProviderKind::Anthropic;

    #[test]
    fn literal_paths_match_exactly_with_or_without_v1() {
        let messages = rule("anthropic POST /v1/messages");
        assert_eq!(messages, rule("anthropic  POST\t/messages"));
        assert_eq!(messages.to_string(), "anthropic POST /messages");
        assert!(messages.matches(A, "POST", "messages"));
        assert!(!messages.matches(A, "GET", "messages"));
        assert!(!messages.matches(ProviderKind::OpenAi, "POST", "messages"));
        assert!(!messages.matches(A, "POST", "messages/batches"));
        assert!(!messages.matches(A, "POST", "messages/"));
        assert!(!messages.matches(A, "POST", "files"));
        assert!(!messages.matches(A, "POST", ""));
        // An encoded spelling is refused, not let through.
        assert!(!messages.matches(A, "POST", "%6Dessages"));
        // `v1beta` is not the `v1` segment.
        assert_eq!(rule("openai GET /v1beta/x").to_string(), "openai GET /v1beta/x");
    }

    #[test]
    fn wildcards() {
        let one = rule("openai GET /models/*");
        assert!(one.matches(ProviderKind::OpenAi, "GET", "models/gpt-4o"));
        assert!(!one.matches(ProviderKind::OpenAi, "GET", "models"));
        assert!(!one.matches(ProviderKind::OpenAi, "GET", "models/"));
        assert!(!one.matches(ProviderKind::OpenAi, "GET", "models/a/b"));
        assert!(!one.matches(ProviderKind::OpenAi, "GET", "models/x%2F..%2Ffiles"));
        let rest = rule("openai * /v1/chat/**");
        assert!(rest.matches(ProviderKind::OpenAi, "POST", "chat"));
        assert!(rest.matches(ProviderKind::OpenAi, "DELETE", "chat/completions/abc"));
        assert!(!rest.matches(ProviderKind::OpenAi, "POST", "chatx"));
        assert!(!rest.matches(ProviderKind::OpenAi, "POST", "chat/a%5cb"));
        let everything = rule("vllm GET /**");
        assert!(everything.matches(ProviderKind::Vllm, "GET", ""));
        assert!(everything.matches(ProviderKind::Vllm, "GET", "models"));
        let root = rule("vllm GET /");
        assert_eq!(root.to_string(), "vllm GET /");
        assert!(root.matches(ProviderKind::Vllm, "GET", ""));
        assert!(!root.matches(ProviderKind::Vllm, "GET", "models"));
        assert_eq!(rule("vllm GET /v1"), root);
        assert_eq!(rule(&root.to_string()), root);
        assert!(endpoint_allowed(&[root, one], ProviderKind::OpenAi, "GET", "models/m"));
        assert!(!endpoint_allowed(&[], ProviderKind::OpenAi, "GET", "models/m"));
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        let err = |text: &str| text.parse::<EndpointRule>().expect_err(text);
        assert_eq!(err("anthropic POST"), EndpointRuleError::Shape);
        assert_eq!(err("anthropic POST /a extra"), EndpointRuleError::Shape);
        assert_eq!(err("gemini POST /a"), EndpointRuleError::Provider);
        assert_eq!(err("anthropic post /a"), EndpointRuleError::Method);
        assert_eq!(err("anthropic TRACE /a"), EndpointRuleError::Method);
        assert_eq!(err("anthropic POST a"), EndpointRuleError::PathStart);
        assert_eq!(err("anthropic POST /**/a"), EndpointRuleError::RestNotLast);
        assert_eq!(err("anthropic POST /a/../b"), EndpointRuleError::Segment);
        assert_eq!(err("anthropic POST /a//b"), EndpointRuleError::Segment);
        assert_eq!(err("anthropic POST /a%2Fb"), EndpointRuleError::Segment);
        assert_eq!(err("anthropic POST /a*"), EndpointRuleError::Segment);
        assert_eq!(err(&format!("anthropic POST /{}", "a".repeat(600))), EndpointRuleError::TooLong);
        assert_eq!(err("anthropic POST /\u{1b}[31m"), EndpointRuleError::Segment);
    }
}
