//! The scanner for a whole (non-streamed) JSON response body, keeping only the top-level
//! `model` and `usage`.
//!
//! Two paths, one result. A body of at most [`MAX_BUFFERED_BYTES`] (nearly every answer: a
//! chat completion is a few KiB) is copied as it passes into one buffer (sized from
//! `Content-Length` when the upstream gave one) and parsed once when it ends, by `serde_json`
//! into a struct holding only `model` and `usage`: serde skips every other value without
//! building it, a few instructions a byte. A body that outgrows the cap (or whose
//! `Content-Length` says it will) goes to an incremental push parser ([`actson`]) instead, fed
//! each frame as it passes, since a long answer puts `usage` after the whole generated text and
//! holding it would be unbounded; the bytes buffered so far are handed to it first. The push
//! parser keeps only its nesting stack (capped at [`MAX_DEPTH`]) and the scalar it is reading;
//! a scalar longer than [`MAX_SCALAR_BYTES`] (or a body that is not JSON) makes it give up.
//!
//! When the one-shot parse fails (a body cut short, a count that is not a `u64`, a duplicate
//! key, bytes after the document, anything not an object where one is expected) the buffered
//! body is run through the push parser, so every body reads exactly as the push parser alone
//! reads it: a truncated body keeps the usage before the cut, garbage reads nothing.

use actson::feeder::PushJsonFeeder;
use actson::options::JsonParserOptionsBuilder;
use actson::{JsonEvent, JsonParser};
use bytes::Bytes;

use serde::Deserializer;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};

use super::fields::{Field, Key, Once, Reported, Text, UsageKey, UsageSeed, detail};
use super::{MAX_MODEL_BYTES, Seen};

/// Largest body buffered for the one-shot parse; past it the push parser reads the rest.
pub const MAX_BUFFERED_BYTES: usize = 64 * 1024;

/// Deepest nesting accepted; LLM responses nest a handful of levels (tool-call arguments are
/// strings, not objects), so a deeper body is not one this scanner reads.
const MAX_DEPTH: usize = 64;

/// Longest scalar the parser may hold (a string is held whole until its closing quote): the
/// generated text of a very long non-streamed answer fits; a body past it is not metered.
pub const MAX_SCALAR_BYTES: usize = 4 * 1024 * 1024;

/// The scanner of one JSON body: buffering for the one-shot parse, or pushing to the parser.
#[derive(Debug)]
pub struct JsonScanner {
    mode: Mode,
    /// What a buffer for the whole body should hold (its `Content-Length`, when known).
    capacity: usize,
}

#[derive(Debug)]
enum Mode {
    /// The body so far when it is at most one frame (empty before the first): held as it came,
    /// a reference count rather than a copy. Nearly every answer arrives in one frame.
    Frame(Bytes),
    /// The body so far, at most [`MAX_BUFFERED_BYTES`].
    Buffered(Vec<u8>),
    Push(Box<PushScanner>),
}

impl Default for JsonScanner {
    /// A body of unknown length: buffered until it outgrows the cap.
    fn default() -> Self {
        JsonScanner::new(None)
    }
}

impl JsonScanner {
    /// A scanner for a body of `length` bytes, if known (the plain body's `Content-Length`):
    /// a body that will not fit the buffer is pushed to the parser from its first byte.
    pub fn new(length: Option<u64>) -> JsonScanner {
        match length.map(usize::try_from) {
            Some(Ok(length)) if length <= MAX_BUFFERED_BYTES => {
                JsonScanner { mode: Mode::Frame(Bytes::new()), capacity: length }
            }
            Some(_) => JsonScanner { mode: Mode::Push(Box::default()), capacity: 0 },
            None => JsonScanner { mode: Mode::Frame(Bytes::new()), capacity: 0 },
        }
    }

    /// Reads a frame the caller owns: the first one is kept without a copy.
    pub fn feed_frame(&mut self, frame: Bytes) {
        match &mut self.mode {
            Mode::Frame(first) if first.is_empty() && frame.len() <= MAX_BUFFERED_BYTES => *first = frame,
            _ => self.feed(&frame),
        }
    }

    pub fn feed(&mut self, data: &[u8]) {
        match &mut self.mode {
            Mode::Frame(first) if first.len() + data.len() <= MAX_BUFFERED_BYTES => {
                let mut body = Vec::with_capacity(self.capacity.max(first.len() + data.len()));
                body.extend_from_slice(first);
                body.extend_from_slice(data);
                self.mode = Mode::Buffered(body);
            }
            Mode::Buffered(body) if body.len() + data.len() <= MAX_BUFFERED_BYTES => body.extend_from_slice(data),
            Mode::Frame(first) => {
                let first = std::mem::take(first);
                self.push(&first, data);
            }
            Mode::Buffered(body) => {
                let body = std::mem::take(body);
                self.push(&body, data);
            }
            Mode::Push(push) => push.feed(data),
        }
    }

    /// The body outgrew the buffer: the push parser reads what was buffered, then `data`.
    fn push(&mut self, buffered: &[u8], data: &[u8]) {
        let mut push = Box::<PushScanner>::default();
        push.feed(buffered);
        push.feed(data);
        self.mode = Mode::Push(push);
    }

    /// Whether the body is still buffered for the one-shot parse (not yet pushed).
    pub fn buffered(&self) -> bool {
        !matches!(self.mode, Mode::Push(_))
    }

    /// The body ended; what was read.
    pub fn finish(self) -> Seen {
        match self.mode {
            Mode::Frame(body) => parse_whole(&body),
            Mode::Buffered(body) => parse_whole(&body),
            Mode::Push(push) => push.finish(),
        }
    }
}

/// Reads a whole body's top-level `model` and `usage` into the `Seen` it holds, every other
/// value skipped by serde. Only an object is read; a `model` or `usage` given twice fails the
/// read. The fields are written as they are read, rather than returned in a struct: moving a
/// struct of `Option<u64>`s out of serde's `Result` compiled into thousands of instructions.
struct BodySeed<'s>(&'s mut Seen);

impl<'de> DeserializeSeed<'de> for BodySeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for BodySeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let seen = self.0;
        let mut once = Once::default();
        while let Some(Key(key)) = map.next_key()? {
            match &*key {
                b"model" => {
                    once.first(0)?;
                    let model: Option<Text<'de>> = map.next_value()?;
                    seen.model_from(model.as_ref().map(|Text(model)| &**model));
                }
                b"usage" => {
                    once.first(1)?;
                    map.next_value_seed(OptionalUsage(&mut seen.reported))?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// `usage` or `null`.
struct OptionalUsage<'r>(&'r mut Reported);

impl<'de> DeserializeSeed<'de> for OptionalUsage<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for OptionalUsage<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a usage object or null")
    }

    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        UsageSeed(self.0).deserialize(deserializer)
    }
}

/// Parses a whole buffered body at once; the push parser reads any body serde refuses.
fn parse_whole(body: &[u8]) -> Seen {
    let mut seen = Seen::default();
    let mut parser = serde_json::Deserializer::from_slice(body);
    let parsed = BodySeed(&mut seen).deserialize(&mut parser).and_then(|()| parser.end());
    if parsed.is_err() {
        let mut push = PushScanner::default();
        push.feed(body);
        return push.finish();
    }
    // The whole document was read: its usage is the final one.
    seen.final_seen = seen.reported.any();
    seen
}

/// Where the parser is, as far as usage is concerned: only the first three levels matter
/// (`{ "usage": { "prompt_tokens_details": { "cached_tokens": n } } }`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Anything Aurora does not read.
    Other,
    Model,
    Usage,
    /// A key directly inside `usage`.
    InUsage(UsageKey),
    /// A count inside a `*_details` object of `usage`.
    Detail(Field),
}

pub struct PushScanner {
    parser: JsonParser<PushJsonFeeder>,
    /// `path[n]`: the field through which open level `n + 1` was entered (level 1 is the
    /// document's own object), for the first `path.len()` levels.
    path: [Place; 3],
    depth: usize,
    /// The value about to be read: what its field name (or container) makes it.
    next: Place,
    reported: Reported,
    model: Option<Box<str>>,
    /// `parsed_bytes` when the last event came: a scalar's length is the distance from it.
    last_event: usize,
    /// The document's closing brace was read.
    ended: bool,
    failed: bool,
}

impl std::fmt::Debug for PushScanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushScanner")
            .field("depth", &self.depth)
            .field("reported", &self.reported)
            .field("ended", &self.ended)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl Default for PushScanner {
    fn default() -> Self {
        let options = JsonParserOptionsBuilder::default().with_max_depth(MAX_DEPTH).build();
        PushScanner {
            parser: JsonParser::new_with_options(PushJsonFeeder::new(), options),
            path: [Place::Other; 3],
            depth: 0,
            next: Place::Other,
            reported: Reported::default(),
            model: None,
            last_event: 0,
            ended: false,
            failed: false,
        }
    }
}

impl PushScanner {
    pub fn feed(&mut self, mut data: &[u8]) {
        // Bytes after the document (a trailing newline) are not read.
        while !self.failed && !self.ended && !data.is_empty() {
            let pushed = self.parser.feeder.push_bytes(data);
            data = &data[pushed..];
            self.drain();
        }
    }

    /// The body ended; what was read.
    pub fn finish(mut self) -> Seen {
        if self.failed {
            return Seen::default();
        }
        // A body cut short keeps what was read before the cut (the outcome says incomplete).
        if !self.ended {
            self.parser.feeder.done();
            self.drain();
            self.failed = false;
        }
        Seen { reported: self.reported, model: self.model, final_seen: self.ended && self.reported.any() }
    }

    /// Runs the parser over what the feeder holds.
    fn drain(&mut self) {
        while !self.failed {
            match self.parser.next_event() {
                Ok(Some(JsonEvent::NeedMoreInput)) => {
                    if self.parser.parsed_bytes().saturating_sub(self.last_event) > MAX_SCALAR_BYTES {
                        self.failed = true;
                    }
                    return;
                }
                Ok(Some(event)) => {
                    self.last_event = self.parser.parsed_bytes();
                    self.on(event);
                }
                Ok(None) => {
                    self.ended = true;
                    return;
                }
                // Not JSON, truncated, too deep, or bytes after the document.
                Err(_) => self.failed = true,
            }
        }
    }

    fn on(&mut self, event: JsonEvent) {
        match event {
            JsonEvent::StartObject | JsonEvent::StartArray => {
                // Arrays hold no named fields: nothing in one is read (a `usage` inside
                // `choices` is not the response's usage).
                let entered = if event == JsonEvent::StartObject { self.next } else { Place::Other };
                if let Some(slot) = self.path.get_mut(self.depth) {
                    *slot = entered;
                }
                self.depth += 1;
                self.next = Place::Other;
            }
            JsonEvent::EndObject | JsonEvent::EndArray => {
                self.depth = self.depth.saturating_sub(1);
                self.next = Place::Other;
            }
            JsonEvent::FieldName => self.next = self.place_of_field(),
            JsonEvent::ValueInt => {
                if let Some(field) = self.count_field() {
                    match self.parser.current_int::<u64>() {
                        Ok(value) => self.reported.set(field, value),
                        // A negative or absurd count: the provider's usage cannot be trusted.
                        Err(_) => self.failed = true,
                    }
                }
                self.next = Place::Other;
            }
            JsonEvent::ValueString => {
                if self.next == Place::Model && self.depth == 1 {
                    if let Ok(model) = self.parser.current_str() {
                        if !model.is_empty() && model.len() <= MAX_MODEL_BYTES {
                            self.model = Some(model.into());
                        }
                    }
                }
                self.next = Place::Other;
            }
            JsonEvent::ValueFloat
            | JsonEvent::ValueTrue
            | JsonEvent::ValueFalse
            | JsonEvent::ValueNull
            | JsonEvent::NeedMoreInput => self.next = Place::Other,
        }
    }

    /// The container the current level was entered through (`Other` deeper than the path
    /// keeps).
    fn container(&self) -> Place {
        self.depth.checked_sub(1).and_then(|level| self.path.get(level)).copied().unwrap_or(Place::Other)
    }

    fn place_of_field(&self) -> Place {
        let Ok(name) = self.parser.current_str() else { return Place::Other };
        match (self.depth, self.container()) {
            (1, _) => match name {
                "model" => Place::Model,
                "usage" => Place::Usage,
                _ => Place::Other,
            },
            (2, Place::Usage) => UsageKey::of(name.as_bytes()).map_or(Place::Other, Place::InUsage),
            (3, Place::InUsage(details)) => detail(details, name.as_bytes()).map_or(Place::Other, Place::Detail),
            _ => Place::Other,
        }
    }

    fn count_field(&self) -> Option<Field> {
        match (self.depth, self.next) {
            (2, Place::InUsage(UsageKey::Count(field))) | (3, Place::Detail(field)) => Some(field),
            _ => None,
        }
    }
}
