//! A client's request head, parsed by `httparse` (the parser hyper itself uses) into `http`
//! types, with its whole body when that is small. Only the plain API call is taken; every other head is left to hyper ([`Head::Handoff`]), which answers it exactly as it
//! always has.

use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::header::{EXPECT, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version};

use crate::headers::{self, ContentLength};
use crate::server::ClientBody;

/// Header fields parsed on the stack; a head with more goes to hyper.
const STACK_FIELDS: usize = 64;

/// The largest body read whole before the request is handed to the handler (an API call's JSON
/// is a few KiB); a larger one goes to hyper, which streams it. What nginx holds the same way
/// by default is 8 or 16 KiB (`client_body_buffer_size`), before spilling to a file.
pub(super) const MAX_WHOLE_BODY: usize = 64 * 1024;

/// What the bytes read so far hold.
#[derive(Debug)]
#[expect(clippy::large_enum_variant, reason = "matched as soon as returned; a box would allocate for every request")]
pub(super) enum Head {
    /// Not a whole head yet, or a whole head whose body (of at most [`MAX_WHOLE_BODY`]) is not
    /// all there yet.
    Partial,
    /// A request, taken off the buffer with its body; `keep_alive` is false when the client
    /// said `Connection: close`.
    Ready { request: Request<ClientBody>, keep_alive: bool },
    /// Anything but the plain case: nothing was taken off the buffer, and hyper serves the
    /// connection from here on. That covers every head hyper refuses (malformed, too large,
    /// too many fields), so the client gets hyper's answer to it, and every feature this codec
    /// does not implement: HTTP/1.0, `HEAD`, `CONNECT` and other methods, `Expect`, `Upgrade`,
    /// `Transfer-Encoding`, a target that is not a path, and a body larger than
    /// [`MAX_WHOLE_BODY`].
    Handoff,
    /// A head `httparse` accepts and `http` does not (a target or field it will not hold),
    /// found only once the head was off the buffer: refused with a 400, as hyper refuses it.
    Invalid,
}

/// Parses the request head at the start of `buf`, under a limit of `max_bytes` for the head.
pub(super) fn parse(buf: &mut BytesMut, max_bytes: usize) -> Head {
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_FIELDS];
    let mut request = httparse::Request::new(&mut []);
    let len = match request.parse_with_uninit_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete(len)) if len <= max_bytes => len,
        Ok(httparse::Status::Partial) if buf.len() < max_bytes => return Head::Partial,
        _ => return Head::Handoff,
    };
    if request.version != Some(1) {
        return Head::Handoff;
    }
    let method = match request.method.map(str::as_bytes) {
        Some(b"POST") => Method::POST,
        Some(b"GET") => Method::GET,
        Some(b"PUT") => Method::PUT,
        Some(b"PATCH") => Method::PATCH,
        Some(b"DELETE") => Method::DELETE,
        Some(b"OPTIONS") => Method::OPTIONS,
        _ => return Head::Handoff,
    };
    let Some(path) = request.path.filter(|path| path.starts_with('/')) else { return Head::Handoff };

    // Every field is checked before anything is taken off the buffer, so that a head handed
    // over is handed over whole.
    let mut framing = Framing::default();
    for field in request.headers.iter() {
        let name = field.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            framing.read_content_length(field.value);
        } else if name.eq_ignore_ascii_case(b"connection") {
            framing.read_connection(field.value);
        } else if name.eq_ignore_ascii_case(TRANSFER_ENCODING.as_str().as_bytes())
            || name.eq_ignore_ascii_case(EXPECT.as_str().as_bytes())
            || name.eq_ignore_ascii_case(UPGRADE.as_str().as_bytes())
        {
            return Head::Handoff;
        }
    }
    let body_length = match framing.content_length {
        ContentLength::Absent => 0,
        ContentLength::Agreed(length) => length,
        ContentLength::Malformed => return Head::Handoff,
    };
    let Some(body_end) = usize::try_from(body_length).ok().and_then(|length| len.checked_add(length)) else {
        return Head::Handoff;
    };
    if buf.len() < body_end {
        // A small body still on its way (an SDK that writes its head and its body apart) is
        // waited for; a larger one streams, through hyper.
        return if body_end - len <= MAX_WHOLE_BODY { Head::Partial } else { Head::Handoff };
    }

    // Where the target and each field lie in the head, to be sliced once the head is off the
    // buffer. Within a head of at most `max_bytes`, which the configuration keeps to a `u32`.
    let base = buf.as_ptr() as usize;
    let span = |part: &[u8]| {
        let start = part.as_ptr() as usize - base;
        [start as u32, (start + part.len()) as u32]
    };
    let path = span(path.as_bytes());
    let mut spans = [[0u32; 4]; STACK_FIELDS];
    let count = request.headers.len();
    for (field, at) in request.headers.iter().zip(spans.iter_mut()) {
        let ([name_start, name_end], [value_start, value_end]) = (span(field.name.as_bytes()), span(field.value));
        *at = [name_start, name_end, value_start, value_end];
    }

    let mut taken = buf.split_to(body_end).freeze();
    let head = taken.split_to(len);
    let Ok(uri) = Uri::from_maybe_shared(head.slice(path[0] as usize..path[1] as usize)) else { return Head::Invalid };
    let mut map = HeaderMap::with_capacity(count);
    for &[name_start, name_end, value_start, value_end] in &spans[..count] {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&head[name_start as usize..name_end as usize]),
            HeaderValue::from_maybe_shared(head.slice(value_start as usize..value_end as usize)),
        ) else {
            return Head::Invalid;
        };
        map.append(name, value);
    }
    let mut request = Request::new(ClientBody::whole(taken));
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = map;
    Head::Ready { request, keep_alive: !framing.close }
}

/// What the fields that frame the body and govern the connection said.
#[derive(Debug, Default)]
struct Framing {
    close: bool,
    content_length: ContentLength,
}

impl Framing {
    fn read_connection(&mut self, value: &[u8]) {
        self.close |= value.split(|&b| b == b',').any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"));
    }

    /// As hyper's server reads it: each field one run of digits (a list such as `5, 5` is
    /// refused), and repeated fields only when they agree.
    fn read_content_length(&mut self, value: &[u8]) {
        self.content_length = self.content_length.and(headers::decimal_length(value));
    }
}
