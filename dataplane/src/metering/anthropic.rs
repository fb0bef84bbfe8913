//! Anthropic's Messages API stream: usage arrives in two events.
//!
//! `message_start` carries the message being generated, with the model and the input side of
//! the usage (`input_tokens`, `cache_creation_input_tokens`, `cache_read_input_tokens`, and a
//! first `output_tokens`); `message_delta`, sent once before `message_stop`, carries the
//! cumulative usage (`output_tokens`, and the input fields again on newer API versions). A
//! stream cut between the two keeps the input tokens and the output counted so far. Non-streamed
//! responses put the same `usage` object at the top level, read by [`super::json`].
//! Z.ai's Anthropic-compatible endpoint sends the same events and is read the same way.

use super::Seen;
use super::sse::Event;

/// Reads an Anthropic event; `false` if the event is not one of Anthropic's.
pub fn on_event(event: &Event<'_>, seen: &mut Seen) -> bool {
    match event.kind.as_deref() {
        Some("message_start") => {
            if let Some(message) = &event.message {
                seen.model_from(message.model.as_deref());
                if let Some(usage) = &message.usage {
                    seen.reported.merge(&usage.into());
                }
            }
            true
        }
        Some("message_delta") => {
            if let Some(usage) = &event.usage {
                seen.reported.merge(&usage.into());
                seen.final_seen = true;
            }
            true
        }
        _ => false,
    }
}
