//! The scanner for a whole (non-streamed) JSON response body: an incremental push parser
//! ([`actson`]) fed each frame as it passes, keeping only the top-level `model` and `usage`.
//!
//! A non-streamed answer puts `usage` at the end, after the whole generated text, so reading
//! it without holding the body needs a parser that can stop at any byte and resume with the
//! next frame: `actson` is one (serde_json needs the complete value). The parser keeps only
//! its nesting stack (capped at [`MAX_DEPTH`]) and the scalar it is reading; a scalar longer
//! than [`MAX_SCALAR_BYTES`] (or a body that is not JSON) makes the scanner give up.

use actson::feeder::PushJsonFeeder;
use actson::options::JsonParserOptionsBuilder;
use actson::{JsonEvent, JsonParser};

use super::fields::{Field, Reported, UsageKey, detail};
use super::{MAX_MODEL_BYTES, Seen};

/// Deepest nesting accepted; LLM responses nest a handful of levels (tool-call arguments are
/// strings, not objects), so a deeper body is not one this scanner reads.
const MAX_DEPTH: usize = 64;

/// Longest scalar the parser may hold (a string is held whole until its closing quote): the
/// generated text of a very long non-streamed answer fits; a body past it is not metered.
pub const MAX_SCALAR_BYTES: usize = 4 * 1024 * 1024;

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

pub struct JsonScanner {
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

impl std::fmt::Debug for JsonScanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonScanner")
            .field("depth", &self.depth)
            .field("reported", &self.reported)
            .field("ended", &self.ended)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl Default for JsonScanner {
    fn default() -> Self {
        let options = JsonParserOptionsBuilder::default().with_max_depth(MAX_DEPTH).build();
        JsonScanner {
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

impl JsonScanner {
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
            (2, Place::Usage) => UsageKey::of(name).map_or(Place::Other, Place::InUsage),
            (3, Place::InUsage(details)) => detail(details, name).map_or(Place::Other, Place::Detail),
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
