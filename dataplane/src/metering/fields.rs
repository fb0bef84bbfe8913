//! The usage fields the providers report, under their own names, before they are mapped to
//! [`TokenCounts`](crate::usage::TokenCounts) by [`super::anthropic`] or [`super::openai`].
//!
//! Both scanners (the incremental one for whole JSON bodies in [`super::json`], and the
//! per-event one for streams in [`super::sse`]) fill the same [`Reported`], so what a provider
//! declares is read the same way whatever the transport.

use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// Every usage field Aurora reads, as the provider named it. `None`: not in the response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reported {
    /// Anthropic and the OpenAI Responses API.
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    /// Anthropic only.
    pub cache_creation_input_tokens: Option<u64>,
    pub cache_read_input_tokens: Option<u64>,
    /// OpenAI chat completions, completions and embeddings.
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    /// `prompt_tokens_details.cached_tokens` or `input_tokens_details.cached_tokens`.
    pub cached_tokens: Option<u64>,
    /// `completion_tokens_details.reasoning_tokens` or `output_tokens_details.reasoning_tokens`.
    pub reasoning_tokens: Option<u64>,
}

impl Reported {
    /// Whether any usage field was read.
    pub fn any(&self) -> bool {
        *self != Reported::default()
    }

    /// Takes every field `later` reports. Every provider's figures are cumulative (Anthropic's
    /// `message_delta` repeats the running totals, vLLM's continuous usage too), so the last
    /// value of a field is its value.
    pub fn merge(&mut self, later: &Reported) {
        fn take(field: &mut Option<u64>, later: Option<u64>) {
            if later.is_some() {
                *field = later;
            }
        }
        take(&mut self.input_tokens, later.input_tokens);
        take(&mut self.output_tokens, later.output_tokens);
        take(&mut self.cache_creation_input_tokens, later.cache_creation_input_tokens);
        take(&mut self.cache_read_input_tokens, later.cache_read_input_tokens);
        take(&mut self.prompt_tokens, later.prompt_tokens);
        take(&mut self.completion_tokens, later.completion_tokens);
        take(&mut self.cached_tokens, later.cached_tokens);
        take(&mut self.reasoning_tokens, later.reasoning_tokens);
    }

    /// Stores one token count found at `field`; other names are not usage.
    pub fn set(&mut self, field: Field, value: u64) {
        let slot = match field {
            Field::InputTokens => &mut self.input_tokens,
            Field::OutputTokens => &mut self.output_tokens,
            Field::CacheCreationInputTokens => &mut self.cache_creation_input_tokens,
            Field::CacheReadInputTokens => &mut self.cache_read_input_tokens,
            Field::PromptTokens => &mut self.prompt_tokens,
            Field::CompletionTokens => &mut self.completion_tokens,
            Field::CachedTokens => &mut self.cached_tokens,
            Field::ReasoningTokens => &mut self.reasoning_tokens,
        };
        *slot = Some(value);
    }
}

/// A token count's name inside a `usage` object (or one of its `*_details` objects).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    InputTokens,
    OutputTokens,
    CacheCreationInputTokens,
    CacheReadInputTokens,
    PromptTokens,
    CompletionTokens,
    CachedTokens,
    ReasoningTokens,
}

/// What a key directly inside `usage` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageKey {
    Count(Field),
    /// `prompt_tokens_details` or `input_tokens_details`: holds `cached_tokens`.
    InputDetails,
    /// `completion_tokens_details` or `output_tokens_details`: holds `reasoning_tokens`.
    OutputDetails,
}

impl UsageKey {
    pub fn of(name: &str) -> Option<UsageKey> {
        Some(match name {
            "input_tokens" => UsageKey::Count(Field::InputTokens),
            "output_tokens" => UsageKey::Count(Field::OutputTokens),
            "cache_creation_input_tokens" => UsageKey::Count(Field::CacheCreationInputTokens),
            "cache_read_input_tokens" => UsageKey::Count(Field::CacheReadInputTokens),
            "prompt_tokens" => UsageKey::Count(Field::PromptTokens),
            "completion_tokens" => UsageKey::Count(Field::CompletionTokens),
            "prompt_tokens_details" | "input_tokens_details" => UsageKey::InputDetails,
            "completion_tokens_details" | "output_tokens_details" => UsageKey::OutputDetails,
            _ => return None,
        })
    }
}

/// The count a key inside a `*_details` object names, if Aurora reads it.
pub fn detail(details: UsageKey, name: &str) -> Option<Field> {
    match (details, name) {
        (UsageKey::InputDetails, "cached_tokens") => Some(Field::CachedTokens),
        (UsageKey::OutputDetails, "reasoning_tokens") => Some(Field::ReasoningTokens),
        _ => None,
    }
}

/// A `usage` object as serde reads it from one stream event (a bounded slice). Unknown fields
/// are skipped; a count that is not a non-negative integer fails the event, which then reports
/// nothing rather than a guess.
#[derive(Debug, Default, Deserialize)]
pub struct UsageObject {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    #[serde(alias = "input_tokens_details")]
    prompt_tokens_details: Option<ObjectOnly<Details>>,
    #[serde(alias = "output_tokens_details")]
    completion_tokens_details: Option<ObjectOnly<Details>>,
}

#[derive(Debug, Default, Deserialize)]
struct Details {
    cached_tokens: Option<u64>,
    reasoning_tokens: Option<u64>,
}

impl From<&UsageObject> for Reported {
    fn from(usage: &UsageObject) -> Reported {
        Reported {
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            cache_creation_input_tokens: usage.cache_creation_input_tokens,
            cache_read_input_tokens: usage.cache_read_input_tokens,
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            cached_tokens: usage.prompt_tokens_details.as_ref().and_then(|d| d.0.cached_tokens),
            reasoning_tokens: usage.completion_tokens_details.as_ref().and_then(|d| d.0.reasoning_tokens),
        }
    }
}

/// A struct read from a JSON object only. A derived struct also accepts an array of its fields
/// in order (`"usage": [19, 10]` would read as counts); usage is only ever an object, and the
/// push parser reads nothing inside an array, so neither does serde.
#[derive(Debug, Default)]
pub struct ObjectOnly<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ObjectOnly<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Object<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Object<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }
        deserializer.deserialize_map(Object(PhantomData)).map(ObjectOnly)
    }
}
