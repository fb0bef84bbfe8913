//! The two message heads of an upstream exchange: the request head written from the already
//! prepared headers, and the response head parsed by `httparse` (the parser hyper itself uses)
//! into `http` types, with the framing of the body that follows (RFC 9112, section 6.3).

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Version};

use super::Http1Error;
use crate::headers::{self, ContentLength};

/// Header fields parsed on the stack; a head with more is parsed again with room for all the
/// configured limit allows.
const STACK_FIELDS: usize = 64;

/// How a body this side sends is framed on the wire (a request upstream, a response to a client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendFraming {
    /// The body's length is in the head; this many bytes of it are still to be sent.
    Length(u64),
    /// `Transfer-Encoding: chunked`: the body's length is not known before it ends.
    Chunked,
}

/// Writes the request line and header section of `headers` (already filtered for the upstream)
/// to `out`, with `host` as the `Host` and the body's framing: a `Content-Length` of the body's
/// exact length when it is known, else chunked. The client's own `Content-Length` and
/// `Transfer-Encoding` never pass as they are: the framing written is the one the body is sent
/// by.
pub(super) fn write_request(
    out: &mut Vec<u8>,
    method: &Method,
    target: &str,
    host: &HeaderValue,
    headers: &HeaderMap,
    body_length: Option<u64>,
) -> SendFraming {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut stated_length = false;
    for (name, value) in headers {
        if name == HOST || name == TRANSFER_ENCODING {
            continue;
        }
        if name == CONTENT_LENGTH {
            stated_length = true;
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let framing = match body_length {
        // An empty body needs no header, unless the client sent one or the method expects a body.
        Some(0) if !stated_length && !matches!(*method, Method::POST | Method::PUT | Method::PATCH) => {
            SendFraming::Length(0)
        }
        Some(length) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(length).as_bytes());
            out.extend_from_slice(b"\r\n");
            SendFraming::Length(length)
        }
        None => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            SendFraming::Chunked
        }
    };
    out.extend_from_slice(b"\r\n");
    framing
}

/// How the response body is delimited (RFC 9112, section 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ResponseFraming {
    /// No body at all: a `HEAD` request's response, a 204 or a 304.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    Chunked,
    /// Everything until the upstream closes the connection.
    UntilClose,
}

/// A parsed final response head.
#[derive(Debug)]
pub(super) struct ResponseHead {
    pub(super) parts: http::response::Parts,
    pub(super) framing: ResponseFraming,
    /// Whether the connection can carry another request once this body has been read.
    pub(super) keep_alive: bool,
}

/// The limits a response head is parsed under.
#[derive(Debug, Clone, Copy)]
pub(super) struct HeadLimits {
    /// The most bytes a head may take on the wire.
    pub(super) max_bytes: usize,
    /// The most header fields it may have.
    pub(super) max_fields: usize,
}

/// What [`parse_response`] made of the bytes read so far.
#[derive(Debug)]
pub(super) enum Parsed {
    /// The head is not complete yet.
    Partial,
    /// An interim (1xx) response, consumed; the final response follows.
    Interim,
    Final(ResponseHead),
}

/// Parses a response head at the start of `buf`, removing it from `buf` once complete (the
/// body's first bytes stay). Header values are slices of the head's bytes, not copies.
pub(super) fn parse_response(
    buf: &mut BytesMut,
    request_method: &Method,
    limits: HeadLimits,
) -> Result<Parsed, Http1Error> {
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_FIELDS];
    let mut spans = [Span::default(); STACK_FIELDS];
    match scan(buf, &mut fields, &mut spans, limits)? {
        Scanned::OutOfRoom if limits.max_fields > STACK_FIELDS => {
            let mut fields = Vec::new();
            fields.resize_with(limits.max_fields, MaybeUninit::uninit);
            let mut spans = vec![Span::default(); limits.max_fields];
            let scanned = scan(buf, &mut fields, &mut spans, limits)?;
            finish(buf, request_method, scanned, &spans)
        }
        scanned => finish(buf, request_method, scanned, &spans),
    }
}

/// What `httparse` made of the bytes read so far.
#[derive(Debug)]
enum Scanned {
    Partial,
    Complete(Scan),
    /// More fields than the slots it was given.
    OutOfRoom,
}

/// Where one field's name and value lie in the head.
#[derive(Debug, Clone, Copy, Default)]
struct Span {
    name: (u32, u32),
    value: (u32, u32),
}

impl Span {
    fn name<'h>(&self, head: &'h [u8]) -> &'h [u8] {
        &head[self.name.0 as usize..self.name.1 as usize]
    }

    fn value<'h>(&self, head: &'h [u8]) -> &'h [u8] {
        &head[self.value.0 as usize..self.value.1 as usize]
    }
}

/// A complete head's shape, holding no borrow of the bytes it was read from.
#[derive(Debug)]
struct Scan {
    len: usize,
    code: u16,
    version: Version,
    fields: usize,
}

/// Runs `httparse` over `buf`, noting each field's position in `spans`.
fn scan<'b>(
    buf: &'b [u8],
    fields: &mut [MaybeUninit<httparse::Header<'b>>],
    spans: &mut [Span],
    limits: HeadLimits,
) -> Result<Scanned, Http1Error> {
    let allowed = fields.len().min(limits.max_fields);
    let mut response = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut fields[..allowed],
    ) {
        Ok(httparse::Status::Complete(len)) if len > limits.max_bytes => return Err(Http1Error::HeadTooLarge),
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= limits.max_bytes => return Err(Http1Error::HeadTooLarge),
        Ok(httparse::Status::Partial) => return Ok(Scanned::Partial),
        Err(httparse::Error::TooManyHeaders) => return Ok(Scanned::OutOfRoom),
        Err(_) => return Err(Http1Error::Malformed("response head")),
    };
    let base = buf.as_ptr() as usize;
    let offsets = |field: &[u8]| {
        let start = field.as_ptr() as usize - base;
        // Within a head of at most `max_bytes` (a u32).
        (start as u32, (start + field.len()) as u32)
    };
    for (field, span) in response.headers.iter().zip(spans.iter_mut()) {
        *span = Span { name: offsets(field.name.as_bytes()), value: offsets(field.value) };
    }
    let version = if response.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
    Ok(Scanned::Complete(Scan {
        len,
        code: response.code.unwrap_or_default(),
        version,
        fields: response.headers.len(),
    }))
}

/// Takes a scanned head off `buf` and turns it into `http` types.
///
/// The connection-scoped fields (RFC 9110, section 7.6.1: `Connection`, `Transfer-Encoding`
/// and the rest of [`headers::is_hop_by_hop`], and any field `Connection` names) describe this
/// connection, which this client manages: they are read here, for the framing and the
/// connection's reuse, and left out of the header map, so that the proxy's own filtering finds
/// nothing of them to look up or remove. `Content-Length` is end to end, and stays.
fn finish(buf: &mut BytesMut, request_method: &Method, scanned: Scanned, spans: &[Span]) -> Result<Parsed, Http1Error> {
    let scan = match scanned {
        Scanned::Complete(scan) => scan,
        Scanned::Partial => return Ok(Parsed::Partial),
        // More fields than the configured limit allows.
        Scanned::OutOfRoom => return Err(Http1Error::HeadTooLarge),
    };
    let status = StatusCode::from_u16(scan.code).map_err(|_| Http1Error::Malformed("status code"))?;
    if status.is_informational() {
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(Http1Error::Malformed("unrequested protocol switch"));
        }
        let _ = buf.split_to(scan.len);
        return Ok(Parsed::Interim);
    }
    let head: Bytes = buf.split_to(scan.len).freeze();
    let spans = &spans[..scan.fields];
    let mut headers = HeaderMap::with_capacity(scan.fields);
    let mut fields = FramingFields::default();
    for span in spans {
        let name = HeaderName::from_bytes(span.name(&head)).map_err(|_| Http1Error::Malformed("header name"))?;
        if headers::is_hop_by_hop(&name) {
            fields.read_connection_scoped(&name, span.value(&head));
            continue;
        }
        if name == CONTENT_LENGTH {
            fields.read_content_length(span.value(&head));
        }
        let value = HeaderValue::from_maybe_shared(head.slice(span.value.0 as usize..span.value.1 as usize))
            .map_err(|_| Http1Error::Malformed("header value"))?;
        headers.append(name, value);
    }
    if fields.names_other_fields {
        remove_named_by_connection(&mut headers, &head, spans);
    }

    let (framing, keep_alive) = framing(request_method, status, scan.version, &fields)?;
    if fields.transfer_encoding.is_some() && framing != ResponseFraming::Empty {
        // The encoding wins, and the length would misdescribe the body the client gets.
        headers.remove(CONTENT_LENGTH);
    }
    let (mut parts, ()) = Response::new(()).into_parts();
    parts.status = status;
    parts.version = scan.version;
    parts.headers = headers;
    Ok(Parsed::Final(ResponseHead { parts, framing, keep_alive }))
}

/// What the fields that frame the body and govern the connection said, read as the head's
/// fields go by (each value once, with no lookup in the map afterwards).
#[derive(Debug, Default)]
struct FramingFields {
    /// A `Connection` token `close`, anywhere.
    close: bool,
    /// A `Connection` token `keep-alive`, anywhere.
    keep_alive: bool,
    /// A `Connection` token naming another field, which is connection-scoped too.
    names_other_fields: bool,
    /// `Transfer-Encoding` was present: whether the last coding of its last field is `chunked`.
    transfer_encoding: Option<bool>,
    content_length: ContentLength,
}

impl FramingFields {
    fn read_connection_scoped(&mut self, name: &HeaderName, value: &[u8]) {
        if *name == CONNECTION {
            for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    self.close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    self.keep_alive = true;
                } else if !token.is_empty() {
                    self.names_other_fields = true;
                }
            }
        } else if *name == TRANSFER_ENCODING {
            let last = value.rsplit(|&b| b == b',').next().unwrap_or_default();
            self.transfer_encoding = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        }
    }

    fn read_content_length(&mut self, value: &[u8]) {
        // A list of equal values (`5, 5`) is one length, as hyper's client reads it.
        for item in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            self.content_length = self.content_length.and(headers::decimal_length(item));
        }
    }
}

/// Removes the fields a `Connection` field names (rare: the usual tokens are `close` and
/// `keep-alive`, which name none).
fn remove_named_by_connection(headers: &mut HeaderMap, head: &[u8], spans: &[Span]) {
    for span in spans.iter().filter(|span| span.name(head).eq_ignore_ascii_case(b"connection")) {
        let tokens = span.value(head).split(|&b| b == b',').map(<[u8]>::trim_ascii);
        for token in tokens.filter(|t| !t.eq_ignore_ascii_case(b"close") && !t.eq_ignore_ascii_case(b"keep-alive")) {
            if let Ok(name) = HeaderName::from_bytes(token) {
                headers.remove(name);
            }
        }
    }
}

/// The body's framing and whether the connection stays open after it (RFC 9112, sections 6.3
/// and 9.3).
fn framing(
    request_method: &Method,
    status: StatusCode,
    version: Version,
    fields: &FramingFields,
) -> Result<(ResponseFraming, bool), Http1Error> {
    // A `close` anywhere wins, whatever comes after it.
    let keep_alive = !fields.close && (version == Version::HTTP_11 || fields.keep_alive);
    if *request_method == Method::HEAD || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok((ResponseFraming::Empty, keep_alive));
    }
    if let Some(chunked) = fields.transfer_encoding {
        // HTTP/1.0 has no transfer codings: a message claiming one is not to be trusted.
        if version == Version::HTTP_10 {
            return Err(Http1Error::Malformed("transfer-encoding"));
        }
        return Ok(if chunked { (ResponseFraming::Chunked, keep_alive) } else { (ResponseFraming::UntilClose, false) });
    }
    match fields.content_length {
        ContentLength::Malformed => Err(Http1Error::Malformed("content-length")),
        ContentLength::Agreed(0) => Ok((ResponseFraming::Empty, keep_alive)),
        ContentLength::Agreed(length) => Ok((ResponseFraming::Length(length), keep_alive)),
        ContentLength::Absent => Ok((ResponseFraming::UntilClose, false)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits { max_bytes: 8192, max_fields: 256 };

    fn parse(bytes: &str) -> Result<Parsed, Http1Error> {
        parse_response(&mut BytesMut::from(bytes), &Method::POST, LIMITS)
    }

    fn head(bytes: &str) -> ResponseHead {
        match parse(bytes) {
            Ok(Parsed::Final(head)) => head,
            other => panic!("not a final head: {other:?}"),
        }
    }

    #[test]
    fn request_heads_carry_the_host_and_frame_the_body() {
        let mut headers = HeaderMap::new();
        headers.insert(HOST, HeaderValue::from_static("client.example"));
        headers.insert("x-api-key", HeaderValue::from_static("sk-1"));
        let host = HeaderValue::from_static("127.0.0.1:9");
        let mut out = Vec::new();
        let framing = write_request(&mut out, &Method::POST, "/v1/messages?beta=true", &host, &headers, Some(12));
        assert_eq!(framing, SendFraming::Length(12));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /v1/messages?beta=true HTTP/1.1\r\nhost: 127.0.0.1:9\r\nx-api-key: sk-1\r\ncontent-length: 12\r\n\r\n"
        );

        let mut out = Vec::new();
        assert_eq!(write_request(&mut out, &Method::POST, "/", &host, &HeaderMap::new(), None), SendFraming::Chunked);
        assert!(out.ends_with(b"transfer-encoding: chunked\r\n\r\n"));

        let mut out = Vec::new();
        write_request(&mut out, &Method::GET, "/v1/models", &host, &HeaderMap::new(), Some(0));
        assert_eq!(out, b"GET /v1/models HTTP/1.1\r\nhost: 127.0.0.1:9\r\n\r\n");
        let mut out = Vec::new();
        write_request(&mut out, &Method::POST, "/", &host, &HeaderMap::new(), Some(0));
        assert!(out.ends_with(b"content-length: 0\r\n\r\n"));

        // The client's framing headers never pass as they are: the body's own framing does.
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("99"));
        headers.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        let mut out = Vec::new();
        assert_eq!(write_request(&mut out, &Method::POST, "/", &host, &headers, Some(12)), SendFraming::Length(12));
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches("content-length").count(), 1, "{text}");
        assert!(text.contains("content-length: 12\r\n") && !text.contains("transfer-encoding"), "{text}");
        // An empty GET keeps the client's `Content-Length: 0`.
        let mut out = Vec::new();
        write_request(&mut out, &Method::GET, "/", &host, &headers, Some(0));
        assert!(out.ends_with(b"content-length: 0\r\n\r\n"));
    }

    #[test]
    fn a_head_is_parsed_into_http_types_and_leaves_the_body() {
        let mut buf = BytesMut::from(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nX-Multi: a\r\nx-multi: b\r\n\r\n{}",
        );
        let Ok(Parsed::Final(head)) = parse_response(&mut buf, &Method::POST, LIMITS) else { panic!("not parsed") };
        assert_eq!(head.parts.status, StatusCode::OK);
        assert_eq!(head.parts.headers["content-type"], "application/json");
        assert_eq!(head.parts.headers.get_all("x-multi").iter().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(head.framing, ResponseFraming::Length(2));
        assert!(head.keep_alive);
        assert_eq!(&buf[..], b"{}");
    }

    #[test]
    fn partial_interim_and_malformed_heads() {
        assert!(matches!(parse("HTTP/1.1 200 OK\r\nContent-Le"), Ok(Parsed::Partial)));
        let mut buf = BytesMut::from("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n");
        assert!(matches!(parse_response(&mut buf, &Method::POST, LIMITS), Ok(Parsed::Interim)));
        assert!(matches!(parse_response(&mut buf, &Method::POST, LIMITS), Ok(Parsed::Final(_))));
        assert!(matches!(parse("HTTP/1.1 101 Switching Protocols\r\n\r\n"), Err(Http1Error::Malformed(_))));
        assert!(matches!(parse("HTTP/1.1 2000 OK\r\n\r\n"), Err(Http1Error::Malformed(_))));
        assert!(matches!(parse("SMTP ready\r\n\r\n"), Err(Http1Error::Malformed(_))));
        assert!(matches!(parse("HTTP/1.1 200 OK\r\nbad header\r\n\r\n"), Err(Http1Error::Malformed(_))));
        assert!(matches!(parse("HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n"), Err(Http1Error::Malformed(_))));
        assert!(matches!(parse("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"), Err(Http1Error::Malformed(_))));
    }

    #[test]
    fn heads_over_the_limits_are_refused() {
        let long = format!("HTTP/1.1 200 OK\r\nx-long: {}\r\n\r\n", "a".repeat(9000));
        assert!(matches!(parse(&long), Err(Http1Error::HeadTooLarge)));
        let unfinished = format!("HTTP/1.1 200 OK\r\nx-long: {}", "a".repeat(9000));
        assert!(matches!(parse(&unfinished), Err(Http1Error::HeadTooLarge)));
        let many: String = (0..300).map(|i| format!("x-{i}: v\r\n")).collect();
        assert!(matches!(parse(&format!("HTTP/1.1 200 OK\r\n{many}\r\n")), Err(Http1Error::HeadTooLarge)));
        // More fields than fit on the stack, within the limit.
        let some: String = (0..100).map(|i| format!("x-{i}: v\r\n")).collect();
        assert_eq!(head(&format!("HTTP/1.1 200 OK\r\n{some}content-length: 0\r\n\r\n")).parts.headers.len(), 101);
    }

    #[test]
    fn framing_follows_rfc_9112() {
        assert_eq!(head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").framing, ResponseFraming::Chunked);
        let both = head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert_eq!(both.framing, ResponseFraming::Chunked);
        assert!(!both.parts.headers.contains_key(CONTENT_LENGTH));
        let not_chunked = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n");
        assert_eq!((not_chunked.framing, not_chunked.keep_alive), (ResponseFraming::UntilClose, false));
        let unframed = head("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!((unframed.framing, unframed.keep_alive), (ResponseFraming::UntilClose, false));
        assert_eq!(head("HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n").framing, ResponseFraming::Empty);
        assert_eq!(head("HTTP/1.1 304 Not Modified\r\n\r\n").framing, ResponseFraming::Empty);
        assert_eq!(head("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").framing, ResponseFraming::Empty);
        assert_eq!(head("HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n").framing, ResponseFraming::Length(7));
        let mut buf = BytesMut::from("HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n");
        let Ok(Parsed::Final(head_of_head)) = parse_response(&mut buf, &Method::HEAD, LIMITS) else { panic!() };
        assert_eq!(head_of_head.framing, ResponseFraming::Empty);
    }

    #[test]
    fn connection_scoped_fields_are_read_and_left_out() {
        let chunked = head(concat!(
            "HTTP/1.1 200 OK\r\nX-Hop: 1\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\n",
            "X-End: 2\r\nTransfer-Encoding: chunked\r\nTrailer: x-t\r\nContent-Length: 9\r\n\r\n",
        ));
        assert_eq!((chunked.framing, chunked.keep_alive), (ResponseFraming::Chunked, true));
        let names: Vec<_> = chunked.parts.headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["x-end"], "only the end-to-end fields, less the length the encoding overrides");
        // `close` and `keep-alive` name no field.
        let closing = head("HTTP/1.1 200 OK\r\nConnection: close\r\nClose: kept\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(closing.parts.headers["close"], "kept");
        // A length that frames nothing is not read.
        let mut buf = BytesMut::from("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n");
        let Ok(Parsed::Final(head_of_head)) = parse_response(&mut buf, &Method::HEAD, LIMITS) else { panic!() };
        assert_eq!(head_of_head.framing, ResponseFraming::Empty);
        assert_eq!(head_of_head.parts.headers["content-length"], "x");
    }

    #[test]
    fn connection_reuse_follows_the_version_and_connection_tokens() {
        assert!(!head("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").keep_alive);
        assert!(!head("HTTP/1.1 200 OK\r\nConnection: upgrade, Close\r\nContent-Length: 0\r\n\r\n").keep_alive);
        assert!(!head("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").keep_alive);
        assert!(head("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n").keep_alive);
        // A `close` is not undone by a `keep-alive` after it.
        assert!(!head("HTTP/1.0 200 OK\r\nConnection: close, keep-alive\r\nContent-Length: 0\r\n\r\n").keep_alive);
        let two_lines = "HTTP/1.0 200 OK\r\nConnection: close\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n";
        assert!(!head(two_lines).keep_alive);
        // Transfer codings do not exist in HTTP/1.0.
        assert!(matches!(
            parse("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(Http1Error::Malformed(_))
        ));
    }
}
