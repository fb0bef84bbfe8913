//! The OpenAI-shaped streams (OpenAI, OpenRouter, Z.ai, vLLM): chat completions, completions
//! and the Responses API.
//!
//! Chat and completion chunks are unnamed events; the usage comes in the last chunk (with empty
//! `choices`) only when the request asked for it (`stream_options.include_usage`; OpenRouter
//! and vLLM may send it unasked, vLLM in every chunk with continuous usage stats, which is
//! cumulative). Without it the stream's usage is unknown. The Responses API names its events:
//! `response.created` carries the model, `response.completed` (or `response.incomplete` /
//! `response.failed`) the final `response.usage`. Non-streamed responses (and embeddings) put
//! `usage` at the top level, read by [`super::json`].

use super::Seen;
use super::sse::Event;

pub fn on_event(event: &Event<'_>, seen: &mut Seen) {
    match event.kind.as_deref() {
        // A chat or completion chunk.
        None => {
            seen.model_from(event.model.as_deref());
            if let Some(usage) = &event.usage {
                seen.reported.merge(&usage.into());
                seen.final_seen = true;
            }
        }
        Some(
            kind @ ("response.created"
            | "response.in_progress"
            | "response.completed"
            | "response.incomplete"
            | "response.failed"),
        ) => {
            let Some(response) = &event.response else { return };
            seen.model_from(response.model.as_deref());
            if let Some(usage) = &response.usage {
                seen.reported.merge(&usage.into());
                seen.final_seen |= kind != "response.created" && kind != "response.in_progress";
            }
        }
        Some(_) => {}
    }
}
