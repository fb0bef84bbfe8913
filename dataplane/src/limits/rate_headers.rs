//! The rate-limit headers a limited key's responses carry, named the way each provider names
//! them, so that the providers' own SDKs (and their users) pace themselves by the key's limits
//! as they would by the provider's.
//!
//! A response's fields are made once its head is ready ([`RateHeaders::new`]) and handed out as
//! names and values ([`RateHeaders::for_each`]): the server's own HTTP/1.1 codec writes them
//! straight into the response head's bytes, the other paths insert them into the header map
//! ([`RateHeaders::insert_into`]). Six map inserts and their encoding were most of what a
//! limited key cost per request; written as bytes, the values are formatted on the stack and
//! nothing is hashed or allocated.

use std::cell::Cell;

use aurora_core::ErrorShape;
use http::{HeaderMap, HeaderName, HeaderValue};

use super::refusal::{RateView, ceil_secs};

/// The headers' names, `[limit, remaining, reset]` for requests then tokens: made at compile
/// time, so no name is checked per response.
static OPENAI: [[HeaderName; 3]; 2] = [
    [
        HeaderName::from_static("x-ratelimit-limit-requests"),
        HeaderName::from_static("x-ratelimit-remaining-requests"),
        HeaderName::from_static("x-ratelimit-reset-requests"),
    ],
    [
        HeaderName::from_static("x-ratelimit-limit-tokens"),
        HeaderName::from_static("x-ratelimit-remaining-tokens"),
        HeaderName::from_static("x-ratelimit-reset-tokens"),
    ],
];
static ANTHROPIC: [[HeaderName; 3]; 2] = [
    [
        HeaderName::from_static("anthropic-ratelimit-requests-limit"),
        HeaderName::from_static("anthropic-ratelimit-requests-remaining"),
        HeaderName::from_static("anthropic-ratelimit-requests-reset"),
    ],
    [
        HeaderName::from_static("anthropic-ratelimit-tokens-limit"),
        HeaderName::from_static("anthropic-ratelimit-tokens-remaining"),
        HeaderName::from_static("anthropic-ratelimit-tokens-reset"),
    ],
];

/// What every name of a shape starts with: a head without such a name holds none to replace.
fn prefix(shape: ErrorShape) -> &'static str {
    match shape {
        ErrorShape::OpenAi => "x-ratelimit-",
        ErrorShape::Anthropic => "anthropic-ratelimit-",
    }
}

fn names(shape: ErrorShape) -> &'static [[HeaderName; 3]; 2] {
    match shape {
        ErrorShape::OpenAi => &OPENAI,
        ErrorShape::Anthropic => &ANTHROPIC,
    }
}

/// When the window renews, as each provider says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reset {
    /// OpenAI: how long until then, in whole seconds, rounded up ("17s").
    In(u64),
    /// Anthropic: when, in Unix seconds, written as RFC 3339.
    At(i64),
}

/// One response's rate-limit fields: the limits the key has (fleet-wide), what is left of them
/// (this replica's share), and when they renew. Only the limits the key has are written; the
/// provider's headers for the others pass unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateHeaders {
    view: RateView,
    shape: ErrorShape,
    reset: Reset,
}

impl RateHeaders {
    /// The fields for `view` in `shape`'s naming. `now_ms` is called only for OpenAI's
    /// countdown: Anthropic's reset is a time.
    pub fn new(view: &RateView, shape: ErrorShape, now_ms: impl FnOnce() -> i64) -> Self {
        let reset = match shape {
            ErrorShape::OpenAi => Reset::In(ceil_secs(view.reset_ms - now_ms())),
            ErrorShape::Anthropic => Reset::At(view.reset_ms.div_euclid(1000)),
        };
        RateHeaders { view: *view, shape, reset }
    }

    /// Hands each field to `field`, as a name and a value of visible ASCII.
    pub fn for_each(&self, field: &mut dyn FnMut(&HeaderName, &[u8])) {
        let mut countdown = itoa::Buffer::new();
        let mut countdown_text = [0; 21];
        let at;
        let reset: &[u8] = match self.reset {
            Reset::In(secs) => {
                let digits = countdown.format(secs).as_bytes();
                countdown_text[..digits.len()].copy_from_slice(digits);
                countdown_text[digits.len()] = b's';
                &countdown_text[..=digits.len()]
            }
            Reset::At(unix_s) => {
                at = rfc3339(unix_s);
                &at
            }
        };
        let mut number = itoa::Buffer::new();
        for (limit, [limit_name, remaining_name, reset_name]) in
            [self.view.requests, self.view.tokens].into_iter().zip(names(self.shape))
        {
            let Some((limit, remaining)) = limit else { continue };
            field(limit_name, number.format(limit).as_bytes());
            field(remaining_name, number.format(remaining).as_bytes());
            field(reset_name, reset);
        }
    }

    /// Sets the fields in `headers`, replacing any of the same names.
    pub fn insert_into(&self, headers: &mut HeaderMap) {
        self.for_each(&mut |name, value| {
            if let Ok(value) = HeaderValue::from_bytes(value) {
                headers.insert(name.clone(), value);
            }
        });
    }

    /// Removes the provider's own headers of the names these fields have: they describe the
    /// upstream credential, not this key. A head with no name of the shape's prefix, the usual
    /// case behind a provider that sends none, is scanned once and left as it is.
    pub fn remove_replaced(&self, headers: &mut HeaderMap) {
        let prefix = prefix(self.shape);
        if !headers.keys().any(|name| name.as_str().starts_with(prefix)) {
            return;
        }
        for (limit, names) in [self.view.requests, self.view.tokens].into_iter().zip(names(self.shape)) {
            if limit.is_some() {
                for name in names {
                    headers.remove(name);
                }
            }
        }
    }
}

thread_local! {
    /// The reset last written on this thread, with its Unix second: every response of a limited
    /// key in one window says the same, and a date costs more to format than the rest of the
    /// fields together.
    static LAST_RESET: Cell<Option<(i64, [u8; 20])>> = const { Cell::new(None) };
}

/// `unix_s` (UTC, whole seconds) as RFC 3339, as Anthropic writes resets
/// (`2026-12-01T17:05:00Z`), formatted once per value per thread.
fn rfc3339(unix_s: i64) -> [u8; 20] {
    if let Some((made_from, text)) = LAST_RESET.get()
        && made_from == unix_s
    {
        return text;
    }
    // A time before 1970 is a clock gone wrong; the epoch says so without a panic. Every year
    // from 1970 to 9999 is written in exactly 20 bytes.
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(unix_s).unwrap_or(0));
    let formatted = humantime::format_rfc3339_seconds(at).to_string();
    let mut text = *b"1970-01-01T00:00:00Z";
    if formatted.len() == text.len() {
        text.copy_from_slice(formatted.as_bytes());
    }
    LAST_RESET.set(Some((unix_s, text)));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_MS: i64 = 1_796_143_262_000;

    fn fields(headers: &RateHeaders) -> Vec<(String, String)> {
        let mut fields = Vec::new();
        headers.for_each(&mut |name, value| {
            fields.push((name.as_str().to_owned(), String::from_utf8(value.to_vec()).unwrap()));
        });
        fields
    }

    #[test]
    fn fields_follow_each_providers_naming_for_the_limits_the_key_has() {
        let view = RateView { requests: Some((30, 4)), tokens: None, reset_ms: NOW_MS + 17_500 };
        let openai = RateHeaders::new(&view, ErrorShape::OpenAi, || NOW_MS);
        assert_eq!(
            fields(&openai),
            [
                ("x-ratelimit-limit-requests".into(), "30".into()),
                ("x-ratelimit-remaining-requests".into(), "4".into()),
                ("x-ratelimit-reset-requests".into(), "18s".into()),
            ]
        );

        let view = RateView { requests: None, tokens: Some((1000, 0)), reset_ms: NOW_MS + 17_500 };
        let anthropic = RateHeaders::new(&view, ErrorShape::Anthropic, || unreachable!("a time needs no clock"));
        assert_eq!(
            fields(&anthropic),
            [
                ("anthropic-ratelimit-tokens-limit".into(), "1000".into()),
                ("anthropic-ratelimit-tokens-remaining".into(), "0".into()),
                ("anthropic-ratelimit-tokens-reset".into(), "2026-12-01T16:41:19Z".into()),
            ]
        );

        let view = RateView { requests: Some((u64::MAX, 1)), tokens: Some((7, 7)), reset_ms: NOW_MS - 5_000 };
        let late = fields(&RateHeaders::new(&view, ErrorShape::OpenAi, || NOW_MS));
        assert_eq!(late.len(), 6);
        assert_eq!(late[0].1, u64::MAX.to_string());
        assert_eq!(late[2].1, "1s", "a window already over renews in at least a second");
        assert_eq!(late[5], ("x-ratelimit-reset-tokens".into(), "1s".into()));
    }

    #[test]
    fn inserted_fields_replace_the_providers_and_leave_the_rest() {
        let view = RateView { requests: Some((30, 4)), tokens: None, reset_ms: NOW_MS + 17_500 };
        let fields = RateHeaders::new(&view, ErrorShape::OpenAi, || NOW_MS);
        let mut headers = HeaderMap::new();
        headers.insert("x-ratelimit-limit-requests", HeaderValue::from_static("10000"));
        headers.insert("x-ratelimit-limit-tokens", HeaderValue::from_static("2000000"));
        fields.insert_into(&mut headers);
        assert_eq!(headers["x-ratelimit-limit-requests"], "30");
        assert_eq!(headers["x-ratelimit-remaining-requests"], "4");
        assert_eq!(headers["x-ratelimit-reset-requests"], "18s");
        // The key has no token limit: the provider's header passes unchanged.
        assert_eq!(headers["x-ratelimit-limit-tokens"], "2000000");
    }

    #[test]
    fn only_the_providers_fields_the_key_replaces_are_removed() {
        let view = RateView { requests: None, tokens: Some((1000, 0)), reset_ms: NOW_MS };
        let fields = RateHeaders::new(&view, ErrorShape::Anthropic, || NOW_MS);
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("anthropic-ratelimit-tokens-limit", "80000"),
            ("anthropic-ratelimit-tokens-remaining", "79000"),
            ("anthropic-ratelimit-tokens-reset", "2026-12-01T16:41:00Z"),
            ("anthropic-ratelimit-requests-limit", "50"),
            ("x-ratelimit-limit-tokens", "5"),
            ("content-type", "application/json"),
        ] {
            headers.append(name, HeaderValue::from_static(value));
        }
        headers.append("anthropic-ratelimit-tokens-limit", HeaderValue::from_static("80001"));
        fields.remove_replaced(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["anthropic-ratelimit-requests-limit", "content-type", "x-ratelimit-limit-tokens"]);

        // Nothing of the shape's naming: nothing removed.
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        fields.remove_replaced(&mut headers);
        assert_eq!(headers.len(), 1);
    }

    #[test]
    fn a_reset_written_once_is_reused_only_within_its_second() {
        let reset = |reset_ms: i64| {
            let view = RateView { requests: Some((30, 4)), tokens: None, reset_ms };
            fields(&RateHeaders::new(&view, ErrorShape::Anthropic, || NOW_MS))[2].1.clone()
        };
        assert_eq!(reset(NOW_MS + 17_500), "2026-12-01T16:41:19Z");
        assert_eq!(reset(NOW_MS + 17_900), "2026-12-01T16:41:19Z");
        assert_eq!(reset(NOW_MS + 77_500), "2026-12-01T16:42:19Z");
        assert_eq!(reset(NOW_MS + 17_500), "2026-12-01T16:41:19Z");
        assert_eq!(reset(-1_000), "1970-01-01T00:00:00Z", "a clock before 1970 says the epoch");
    }
}
