//! The metering stage: reads the usage each provider reports out of its response, as the
//! response streams to the client, and hands one [`Usage`] per upstream response to the
//! [`UsageSink`] when the response ends.
//!
//! The stage only ever reads a copy of what passes: it never changes a byte, a status or a
//! timing the client sees, and nothing it meets can make the proxy fail. A [`Meter`] is made
//! when the upstream's headers arrive ([`Metering::start`]); the response body hands it each
//! data frame as it forwards the frame ([`Meter::sent`], through [`crate::access::Exchange`]),
//! and the meter reads a frame only once the client has it (when the next frame is asked for);
//! the exchange ends it exactly once ([`Meter::end`]), however the response ended. Memory per
//! request is bounded by fixed caps: a JSON body buffered for one parse
//! ([`json::MAX_BUFFERED_BYTES`]) or, past it, a scalar of it ([`json::MAX_SCALAR_BYTES`]), an
//! event of a stream ([`sse::MAX_EVENT_BYTES`]), what a compressed frame or response may
//! decode to ([`decode`]); past a cap the scanner gives up and the usage is unknown.
//!
//! What is read, per response: a JSON body ([`json`]) or an event stream ([`sse`], with the
//! events of [`anthropic`] and [`openai`]), decoded first if compressed ([`decode`]). Every
//! provider's field names are read into one [`fields::Reported`] and mapped to
//! [`TokenCounts`] by [`tokens`].

pub mod anthropic;
pub mod decode;
pub mod fields;
pub mod json;
pub mod openai;
pub mod sse;
#[cfg(test)]
mod tests;

use aurora_core::ProviderKind;
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, StatusCode};

use self::decode::{Decoder, Encoding};
use self::fields::Reported;
use self::json::JsonScanner;
use self::sse::SseScanner;
use crate::auth::Principal;
use crate::usage::{TokenCounts, Usage, UsageOutcome, UsageSink};

/// Longest model name kept; a longer one is not a model name.
pub const MAX_MODEL_BYTES: usize = 256;

/// The stage's settings, shared by every request.
#[derive(Debug, Clone, Copy)]
pub struct Metering {
    enabled: bool,
}

impl Default for Metering {
    fn default() -> Self {
        Metering::new(true)
    }
}

impl Metering {
    /// `enabled: false` (`AURORA_USAGE_METERING=off`) runs no scanner: the sink gets every
    /// upstream response with its usage unknown.
    pub fn new(enabled: bool) -> Self {
        Metering { enabled }
    }

    /// Starts metering an upstream response, from its status and headers. `body_length` is the
    /// body's exact length when the body knows it (hyper's, from the same `Content-Length`), so
    /// the header need not be parsed again.
    pub fn start(&self, status: StatusCode, headers: &HeaderMap, body_length: Option<u64>) -> Meter {
        let reading = if self.enabled { Reading::of(status, headers, body_length) } else { Reading::Nothing };
        Meter { reading, pending: None }
    }
}

/// One upstream response being metered.
#[derive(Debug)]
pub struct Meter {
    reading: Reading,
    /// The frame last handed to the client, read once the next one is asked for (or the
    /// response ends): scanning never stands between a frame and the client.
    pending: Option<Bytes>,
}

#[derive(Debug)]
enum Reading {
    /// Metering is off, or the response cannot carry usage (an error status, a body that is
    /// neither JSON nor an event stream, an encoding not decoded).
    Nothing,
    Plain(Scanner),
    Decoded(Box<Decoder>),
    /// The body could not be read (a corrupt or oversized compressed stream).
    Failed,
}

impl Reading {
    fn of(status: StatusCode, headers: &HeaderMap, body_length: Option<u64>) -> Reading {
        if !status.is_success() {
            return Reading::Nothing;
        }
        let Some(encoding) = Encoding::of(headers) else { return Reading::Nothing };
        // `Content-Length` sizes the plain body only: a compressed one decodes to more.
        let length =
            (encoding == Encoding::Identity).then(|| body_length.or_else(|| content_length(headers))).flatten();
        let Some(scanner) = Scanner::for_content_type(headers, length) else { return Reading::Nothing };
        match Decoder::new(encoding, scanner) {
            Ok(decoder) => Reading::Decoded(Box::new(decoder)),
            Err(scanner) => Reading::Plain(scanner),
        }
    }
}

/// The body's declared length, if it is one number.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

impl Meter {
    /// A data frame is on its way to the client: it is read after it has gone, when the next
    /// frame comes or the response ends. Holding it costs a reference count, no copy.
    pub fn sent(&mut self, frame: &Bytes) {
        if matches!(self.reading, Reading::Nothing | Reading::Failed) {
            return;
        }
        if let Some(previous) = self.pending.replace(frame.clone()) {
            self.feed_frame(previous);
        }
    }

    /// Reads a frame now, without copying it where the scanner can keep it as it is.
    fn feed_frame(&mut self, frame: Bytes) {
        match &mut self.reading {
            Reading::Plain(Scanner::Json(scanner)) => scanner.feed_frame(frame),
            _ => self.feed(&frame),
        }
    }

    /// Reads a data frame now.
    pub fn feed(&mut self, data: &[u8]) {
        let reading = &mut self.reading;
        // The decoders and parsers are third-party code fed hostile input: should one panic,
        // the response must still reach the client, so the panic ends metering only.
        let fed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match reading {
            Reading::Plain(scanner) => {
                scanner.feed(data);
                true
            }
            Reading::Decoded(decoder) => decoder.feed(data).is_ok(),
            Reading::Nothing | Reading::Failed => true,
        }));
        if !matches!(fed, Ok(true)) {
            self.reading = Reading::Failed;
        }
    }

    /// The response ended (`completed`: the whole body reached the client). Hands the usage
    /// to `sink` and returns it for the access log and the metrics.
    pub fn end(mut self, completed: bool, principal: Principal, provider: ProviderKind, sink: &dyn UsageSink) -> Usage {
        if let Some(last) = self.pending.take() {
            self.feed_frame(last);
        }
        let reading = self.reading;
        let seen = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match reading {
            Reading::Plain(scanner) => scanner.finish(),
            Reading::Decoded(decoder) => decoder.finish().map(Scanner::finish).unwrap_or_default(),
            Reading::Nothing | Reading::Failed => Seen::default(),
        }))
        .unwrap_or_default();
        let usage = seen.into_usage(completed);
        sink.record(principal, provider, &usage);
        usage
    }
}

/// A scanner for the body's format.
#[derive(Debug)]
pub enum Scanner {
    Json(JsonScanner),
    Sse(Box<SseScanner>),
}

impl Scanner {
    /// The scanner the body's `Content-Type` calls for (`length`: the plain body's size, if
    /// known); `None` for a format without usage.
    fn for_content_type(headers: &HeaderMap, length: Option<u64>) -> Option<Scanner> {
        let value = headers.get(CONTENT_TYPE)?.to_str().ok()?;
        // A byte loop: the value is a few bytes, where `split` sets up a memchr.
        let essence = value[..value.bytes().position(|b| b == b';').unwrap_or(value.len())].trim();
        if essence.eq_ignore_ascii_case("text/event-stream") {
            Some(Scanner::Sse(Box::default()))
        } else if essence.eq_ignore_ascii_case("application/json")
            || essence.get(essence.len().saturating_sub(5)..).is_some_and(|end| end.eq_ignore_ascii_case("+json"))
        {
            Some(Scanner::Json(JsonScanner::new(length)))
        } else {
            None
        }
    }

    pub fn feed(&mut self, data: &[u8]) {
        match self {
            Scanner::Json(scanner) => scanner.feed(data),
            Scanner::Sse(scanner) => scanner.feed(data),
        }
    }

    pub fn finish(self) -> Seen {
        match self {
            Scanner::Json(scanner) => scanner.finish(),
            Scanner::Sse(scanner) => scanner.finish(),
        }
    }
}

/// What a scanner read.
#[derive(Debug, Default)]
pub struct Seen {
    pub reported: Reported,
    pub model: Option<Box<str>>,
    /// The provider's final usage was read (the end of a JSON body, Anthropic's
    /// `message_delta`, a chat stream's usage chunk, `response.completed`).
    pub final_seen: bool,
}

impl Seen {
    /// Keeps the first model named (the one that served the request).
    pub fn model_from(&mut self, model: Option<&str>) {
        if self.model.is_none() {
            if let Some(model) = model.filter(|m| !m.is_empty() && m.len() <= MAX_MODEL_BYTES) {
                self.model = Some(model.into());
            }
        }
    }

    fn into_usage(self, completed: bool) -> Usage {
        let outcome = if !self.reported.any() {
            UsageOutcome::Unknown
        } else if completed && self.final_seen {
            UsageOutcome::Complete
        } else {
            UsageOutcome::Incomplete
        };
        Usage { model: self.model, tokens: tokens(&self.reported), outcome }
    }
}

/// Maps every provider's fields to Aurora's counts. The names do not collide, so one mapping
/// serves all: OpenAI-shaped chat, completions and embeddings report `prompt_tokens` (cached
/// tokens included, `prompt_tokens_details.cached_tokens` of them) and `completion_tokens`
/// (reasoning included); Anthropic reports `input_tokens` without the cache reads and writes,
/// given apart; the Responses API reports `input_tokens` with cached ones included, as OpenAI
/// chat does.
pub fn tokens(reported: &Reported) -> TokenCounts {
    TokenCounts {
        input: reported.prompt_tokens.or(reported.input_tokens).unwrap_or(0),
        output: reported.completion_tokens.or(reported.output_tokens).unwrap_or(0),
        cache_read_input: reported.cache_read_input_tokens.or(reported.cached_tokens).unwrap_or(0),
        cache_creation_input: reported.cache_creation_input_tokens.unwrap_or(0),
        reasoning: reported.reasoning_tokens.unwrap_or(0),
    }
}
