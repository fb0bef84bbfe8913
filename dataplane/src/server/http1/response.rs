//! A response head as the server's own HTTP/1.1 writes it: the status line, the handler's
//! fields (its framing fields excepted: the framing written is the one the body is sent by), a
//! `Date` when the handler gave none, as hyper adds one, and `Connection: close` when the
//! connection ends after this response.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, StatusCode};

use crate::upstream::http1::SendFraming;

/// The answer to a head `http` will not hold: what hyper sends for it.
pub(super) const BAD_REQUEST: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// How a response goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Written {
    /// The body's framing; `None` for a status that has no body (204, 304).
    pub(super) framing: Option<SendFraming>,
    /// The connection closes after this response (it said so).
    pub(super) close: bool,
}

/// Writes the head of a response with `status` and `headers` to `out`, and after them the
/// fields `late` hands out (the handler's late fields). The body is framed by its exact length
/// when it knows it, else by a single valid `Content-Length` the handler gave, else chunked.
/// `close` asks for `Connection: close`; a handler's own `Connection: close` is honoured too.
pub(super) fn write_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    late: impl FnOnce(&mut dyn FnMut(&HeaderName, &[u8])),
    body_length: Option<u64>,
    close: bool,
) -> Written {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut close = close;
    let mut stated_length = None;
    let mut dated = false;
    for (name, value) in headers {
        if name == CONTENT_LENGTH {
            stated_length = match stated_length {
                None => crate::headers::decimal_length(value.as_bytes()).map(Some),
                // Two values: not one to frame a body by.
                Some(_) => Some(None),
            };
            continue;
        }
        if name == TRANSFER_ENCODING {
            continue;
        }
        if name == CONNECTION {
            close |= value.as_bytes().split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
            continue;
        }
        dated |= name == DATE;
        write_field(out, name, value.as_bytes());
    }
    late(&mut |name, value| write_field(out, name, value));
    if !dated {
        out.extend_from_slice(b"date: ");
        write_date(out);
        out.extend_from_slice(b"\r\n");
    }
    let framing = if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        None
    } else {
        match body_length.or(stated_length.flatten()) {
            Some(length) => {
                out.extend_from_slice(b"content-length: ");
                out.extend_from_slice(itoa::Buffer::new().format(length).as_bytes());
                out.extend_from_slice(b"\r\n");
                Some(SendFraming::Length(length))
            }
            None => {
                out.extend_from_slice(b"transfer-encoding: chunked\r\n");
                Some(SendFraming::Chunked)
            }
        }
    };
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Written { framing, close }
}

fn write_field(out: &mut Vec<u8>, name: &HeaderName, value: &[u8]) {
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

thread_local! {
    /// The current second's `Date` value on this thread, formatted once a second.
    static CACHED_DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
}

/// Appends the current time as an HTTP date (RFC 9110, section 5.6.7).
fn write_date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs());
    CACHED_DATE.with(|date| {
        let mut date = date.borrow_mut();
        if date.0 != second {
            let formatted = httpdate::fmt_http_date(now);
            if formatted.len() == date.1.len() {
                date.1.copy_from_slice(formatted.as_bytes());
                date.0 = second;
            } else {
                out.extend_from_slice(formatted.as_bytes());
                return;
            }
        }
        out.extend_from_slice(&date.1);
    });
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn head(status: StatusCode, headers: &HeaderMap, length: Option<u64>, close: bool) -> (String, Written) {
        let mut out = Vec::new();
        let written = write_head(&mut out, status, headers, |_| {}, length, close);
        (String::from_utf8(out).unwrap(), written)
    }

    #[test]
    fn the_body_is_framed_by_its_own_length_else_chunked() {
        let mut headers = HeaderMap::new();
        headers.insert(DATE, HeaderValue::from_static("Mon, 07 Dec 2026 19:00:00 GMT"));
        headers.insert("x-request-id", HeaderValue::from_static("r1"));
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("99"));
        headers.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        let (text, written) = head(StatusCode::OK, &headers, Some(12), false);
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\ndate: Mon, 07 Dec 2026 19:00:00 GMT\r\nx-request-id: r1\r\ncontent-length: 12\r\n\r\n"
        );
        assert_eq!(written, Written { framing: Some(SendFraming::Length(12)), close: false });

        // No length known: the handler's single `Content-Length`, else chunked.
        let (text, written) = head(StatusCode::OK, &headers, None, false);
        assert!(text.ends_with("content-length: 99\r\n\r\n"), "{text}");
        assert_eq!(written.framing, Some(SendFraming::Length(99)));
        headers.append(CONTENT_LENGTH, HeaderValue::from_static("98"));
        let (text, written) = head(StatusCode::OK, &headers, None, false);
        assert!(text.ends_with("transfer-encoding: chunked\r\n\r\n") && !text.contains("content-length"), "{text}");
        assert_eq!(written.framing, Some(SendFraming::Chunked));
    }

    #[test]
    fn a_date_is_added_when_missing_and_close_is_said_once() {
        let mut headers = HeaderMap::new();
        headers.insert(CONNECTION, HeaderValue::from_static("keep-alive, close"));
        let (text, written) = head(StatusCode::UNAUTHORIZED, &headers, Some(0), false);
        assert!(text.starts_with("HTTP/1.1 401 Unauthorized\r\ndate: "), "{text}");
        let date = text.lines().nth(1).unwrap().trim_start_matches("date: ");
        assert!(httpdate::parse_http_date(date).is_ok(), "{date}");
        assert_eq!(text.matches("connection").count(), 1, "{text}");
        assert!(text.ends_with("content-length: 0\r\nconnection: close\r\n\r\n"), "{text}");
        assert!(written.close);
    }

    #[test]
    fn bodiless_statuses_get_no_framing() {
        let (text, written) = head(StatusCode::NO_CONTENT, &HeaderMap::new(), Some(0), true);
        assert!(!text.contains("content-length") && !text.contains("transfer-encoding"), "{text}");
        assert_eq!(written, Written { framing: None, close: true });
        let (text, _) = head(StatusCode::from_u16(599).unwrap(), &HeaderMap::new(), Some(0), false);
        assert!(text.starts_with("HTTP/1.1 599 \r\n"), "{text}");
    }
}
