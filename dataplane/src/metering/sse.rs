//! The scanner for a server-sent-event stream: splits the stream into events as frames pass,
//! and reads the few events that can carry usage.
//!
//! No SSE crate fits here: the maintained ones (`eventsource-stream`, `sse-stream`) are pull
//! adapters over a `Stream` that own the body and allocate a `String` per event, and none caps
//! an event's size. This is the minimal part of the WHATWG event-stream grammar usage needs:
//! lines end in LF, CRLF or CR; `data:` lines of one event are joined with LF; a blank line
//! ends the event; every other field and comment is skipped. Each event's data is copied into
//! one reused buffer, capped at [`MAX_EVENT_BYTES`] (an event past it is skipped whole, the
//! stream is still read), so memory stays bounded and frames cost no allocation once the buffer
//! has grown to the stream's event size. The JSON of an event is parsed (serde_json, on the
//! bounded slice) only when it can matter: it names `"usage"`, or the model is still unknown
//! and it names `"model"`; the text deltas that make up most of a stream are never parsed.

use std::borrow::Cow;

use memchr::memmem;
use serde::Deserialize;

use super::fields::UsageObject;
use super::{Seen, anthropic, openai};

/// Largest event data read. The biggest event that carries usage is the Responses API's
/// `response.completed`, which repeats the whole output; 1 MiB holds ~250k tokens of text.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// What the splitter is in the middle of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// At the start of a line, or reading a field name (its first bytes are in `name`).
    Name,
    /// Reading a `data` line's value into the event buffer.
    Data,
    /// Reading a line that is skipped (another field, a comment, an over-long name).
    Skip,
}

/// The longest field name kept while telling `data` from the others.
const NAME_BYTES: usize = 5;

#[derive(Debug)]
pub struct SseScanner {
    line: Line,
    name: [u8; NAME_BYTES],
    name_len: usize,
    /// A `data:` value's first byte comes next (a single leading space is dropped).
    value_start: bool,
    /// The previous byte ended a line with CR: an LF right after it belongs to that line end.
    after_cr: bool,
    /// The current event's data, `data` lines joined with LF.
    event: Vec<u8>,
    /// The current event has data (possibly empty) or grew past the cap.
    has_data: bool,
    oversized: bool,
    seen: Seen,
}

impl Default for SseScanner {
    fn default() -> Self {
        SseScanner {
            line: Line::Name,
            name: [0; NAME_BYTES],
            name_len: 0,
            value_start: false,
            after_cr: false,
            event: Vec::new(),
            has_data: false,
            oversized: false,
            seen: Seen::default(),
        }
    }
}

impl SseScanner {
    pub fn feed(&mut self, mut data: &[u8]) {
        if self.after_cr {
            self.after_cr = false;
            if let Some(rest) = data.strip_prefix(b"\n") {
                data = rest;
            }
        }
        while !data.is_empty() {
            // The line's content up to its end (or the end of the frame).
            let end = memchr::memchr2(b'\n', b'\r', data);
            let (content, rest) = match end {
                Some(at) => (&data[..at], Some(&data[at..])),
                None => (data, None),
            };
            self.content(content);
            let Some(rest) = rest else { return };
            let (eol, rest) = rest.split_at(1);
            data = rest;
            if eol == b"\r" {
                match data.first() {
                    Some(b'\n') => data = &data[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            self.end_of_line();
        }
    }

    /// The stream ended: an event not closed by a blank line is not dispatched (the spec
    /// drops it too), and what was read is the result.
    pub fn finish(self) -> Seen {
        self.seen
    }

    /// The bytes held for the current event (bounded by [`MAX_EVENT_BYTES`]).
    pub fn buffered(&self) -> usize {
        self.event.capacity()
    }

    fn content(&mut self, mut bytes: &[u8]) {
        if self.line == Line::Name {
            match memchr::memchr(b':', bytes) {
                Some(colon) => {
                    let name = &bytes[..colon];
                    self.push_name(name);
                    self.line = if self.name() == b"data" { Line::Data } else { Line::Skip };
                    self.value_start = true;
                    bytes = &bytes[colon + 1..];
                }
                None => {
                    self.push_name(bytes);
                    return;
                }
            }
        }
        if self.line == Line::Data {
            if self.value_start && !bytes.is_empty() {
                self.value_start = false;
                self.start_data();
                bytes = bytes.strip_prefix(b" ").unwrap_or(bytes);
            }
            self.append(bytes);
        }
    }

    fn push_name(&mut self, bytes: &[u8]) {
        match self.name.get_mut(self.name_len..self.name_len + bytes.len()) {
            Some(slot) => {
                slot.copy_from_slice(bytes);
                self.name_len += bytes.len();
            }
            // Longer than any name read: a field that is skipped.
            None => self.name_len = NAME_BYTES + 1,
        }
    }

    fn name(&self) -> &[u8] {
        self.name.get(..self.name_len).unwrap_or_default()
    }

    /// A `data` line begins: joined to the previous one with LF.
    fn start_data(&mut self) {
        if self.has_data {
            self.append(b"\n");
        }
        self.has_data = true;
    }

    fn append(&mut self, bytes: &[u8]) {
        if self.oversized {
            return;
        }
        if self.event.len() + bytes.len() > MAX_EVENT_BYTES {
            self.oversized = true;
            self.event.clear();
            return;
        }
        self.event.extend_from_slice(bytes);
    }

    fn end_of_line(&mut self) {
        match self.line {
            // `data` alone on a line, without a colon: an empty data line.
            Line::Name if self.name() == b"data" => self.start_data(),
            Line::Name if self.name_len == 0 => self.dispatch(),
            // A `data:` line whose value was empty still joins the event.
            Line::Data if self.value_start => self.start_data(),
            Line::Name | Line::Data | Line::Skip => {}
        }
        self.line = Line::Name;
        self.name_len = 0;
        self.value_start = false;
    }

    /// A blank line: the event is complete.
    fn dispatch(&mut self) {
        if self.has_data && !self.oversized && self.worth_parsing() {
            if let Ok(event) = serde_json::from_slice::<Event<'_>>(&self.event) {
                if !anthropic::on_event(&event, &mut self.seen) {
                    openai::on_event(&event, &mut self.seen);
                }
            }
        }
        self.event.clear();
        self.has_data = false;
        self.oversized = false;
    }

    /// Whether the event can tell anything not known yet. A JSON key is written `"usage"`
    /// exactly; inside a string value those quotes would be escaped, so no usage is missed.
    fn worth_parsing(&self) -> bool {
        let data = self.event.as_slice();
        memmem::find(data, b"\"usage\"").is_some()
            || (self.seen.model.is_none() && memmem::find(data, b"\"model\"").is_some())
    }
}

/// One event's JSON, as far as usage is concerned: the union of every provider's events that
/// carry usage or the model. Unknown fields (the content, the choices) are skipped by serde.
#[derive(Debug, Deserialize)]
pub struct Event<'a> {
    /// Anthropic and the Responses API name their events; chat completion chunks do not.
    #[serde(rename = "type", borrow, default)]
    pub kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub model: Option<Cow<'a, str>>,
    #[serde(default)]
    pub usage: Option<UsageObject>,
    /// Anthropic `message_start`: the message being generated.
    #[serde(borrow, default)]
    pub message: Option<Inner<'a>>,
    /// Responses API `response.*`: the response object.
    #[serde(borrow, default)]
    pub response: Option<Inner<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct Inner<'a> {
    #[serde(borrow, default)]
    pub model: Option<Cow<'a, str>>,
    #[serde(default)]
    pub usage: Option<UsageObject>,
}
