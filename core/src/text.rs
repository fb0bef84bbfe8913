//! Untrusted text: which characters it may hold, and how it is shown to people.
//!
//! Key names, descriptions, node ids, versions and rejection reasons come from clients and data
//! planes, and end up in terminals (CLI tables) and in the pretty log format. There a raw ESC
//! starts a terminal escape sequence, a newline forges a log line, and a bidi override (U+202E)
//! makes text read differently from what it is. So the control plane refuses such characters in
//! the text it stores, and every human-facing output escapes whatever untrusted text it prints,
//! in case it came from somewhere (an older server, a data plane) that did not refuse them.

use std::borrow::Cow;
use std::fmt::Write;

/// How many characters of client input an error message repeats at most.
pub const EXCERPT_CHARS: usize = 32;

/// Whether `c` must never reach a terminal or a log line raw: the C0 and C1 controls and DEL,
/// the bidi embeddings, overrides and isolates (U+202A–U+202E, U+2066–U+2069), and the line and
/// paragraph separators (U+2028, U+2029).
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}')
}

/// The first character of `text` that [`is_unsafe_char`], if any.
pub fn first_unsafe_char(text: &str) -> Option<char> {
    text.chars().find(|&c| is_unsafe_char(c))
}

/// `text` with every unsafe character written as a Rust-style escape (`\n`, `\t`, `\u{1b}`,
/// `\u{202e}`); borrowed when there is nothing to escape, which is nearly always.
pub fn escape(text: &str) -> Cow<'_, str> {
    if first_unsafe_char(text).is_none() {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_unsafe_char(c) => {
                // Writing to a String cannot fail.
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A short, escaped and quoted prefix of client input, for an error message: errors name what
/// was wrong without repeating a 100 KB argument (which would not even fit a gRPC status).
pub fn excerpt(input: &str) -> String {
    excerpt_of(input, EXCERPT_CHARS)
}

/// Like [`excerpt`], keeping at most `max_chars` characters.
pub fn excerpt_of(input: &str, max_chars: usize) -> String {
    match input.char_indices().nth(max_chars) {
        None => format!("\"{}\"", escape(input)),
        Some((end, _)) => format!("\"{}\"… ({} bytes)", escape(&input[..end]), input.len()),
    }
}

/// `text` cut to at most `max_bytes` bytes on a character boundary; when it had to be cut, the
/// cut ends with a marker saying so and how long the original was (the marker is extra).
pub fn truncate(text: &str, max_bytes: usize) -> Cow<'_, str> {
    if text.len() <= max_bytes {
        return Cow::Borrowed(text);
    }
    Cow::Owned(format!("{}… [truncated from {} bytes]", cut(text, max_bytes), text.len()))
}

/// The longest prefix of `text` of at most `max_bytes` bytes that ends on a character boundary.
pub fn cut(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// `url` with any user info (`user:password@`) in its authority replaced by `***@`, for error
/// messages about URLs an operator typed: the string need not parse as a URL.
pub fn redact_user_info(url: &str) -> Cow<'_, str> {
    let start = url.find("://").map_or(0, |i| i + 3);
    let authority_end = url[start..].find(['/', '?', '#']).map_or(url.len(), |i| start + i);
    match url[start..authority_end].rfind('@') {
        Some(at) => Cow::Owned(format!("{}***{}", &url[..start], &url[start + at..])),
        None => Cow::Borrowed(url),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_bidi_and_separators_are_unsafe() {
        for c in ['\0', '\n', '\u{1b}', '\u{7f}', '\u{85}', '\u{9b}', '\u{202a}', '\u{202e}', '\u{2066}', '\u{2069}'] {
            assert!(is_unsafe_char(c), "{c:?}");
        }
        for c in ['\u{2028}', '\u{2029}'] {
            assert!(is_unsafe_char(c), "{c:?}");
        }
        for c in ['a', ' ', 'é', '日', '\u{200d}', '\u{2070}', '\u{2027}'] {
            assert!(!is_unsafe_char(c), "{c:?}");
        }
        assert_eq!(first_unsafe_char("ab\u{202e}c\n"), Some('\u{202e}'));
    }

    #[test]
    fn escaping_keeps_safe_text_and_neutralises_the_rest() {
        assert!(matches!(escape("plain é 日本"), Cow::Borrowed("plain é 日本")));
        assert_eq!(escape("a\nb\u{1b}[31mc\u{202e}d\u{2028}"), "a\\nb\\u{1b}[31mc\\u{202e}d\\u{2028}");
        assert_eq!(first_unsafe_char(&escape("\u{9b}\u{2066}\r\t")), None);
    }

    #[test]
    fn excerpts_are_short_escaped_and_say_how_long_the_input_was() {
        assert_eq!(excerpt("gemini"), "\"gemini\"");
        let long = "x".repeat(100_000);
        let short = excerpt(&long);
        assert_eq!(short, format!("\"{}\"… (100000 bytes)", "x".repeat(EXCERPT_CHARS)));
        assert_eq!(excerpt("a\u{1b}b"), "\"a\\u{1b}b\"");
        assert_eq!(excerpt_of("ééé", 2), "\"éé\"… (6 bytes)");
    }

    #[test]
    fn user_info_is_redacted_even_in_urls_that_do_not_parse() {
        assert_eq!(redact_user_info("http://admin:S3cret@cp:50051/x@y"), "http://***@cp:50051/x@y");
        assert_eq!(redact_user_info("admin:S3cret@[cp"), "***@[cp");
        assert_eq!(redact_user_info("https://cp:50051"), "https://cp:50051");
    }

    #[test]
    fn truncation_respects_character_boundaries_and_marks_the_cut() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("ééé", 3), "é… [truncated from 6 bytes]");
        assert_eq!(truncate(&"y".repeat(5000), 1024).len(), 1024 + "… [truncated from 5000 bytes]".len());
    }
}
