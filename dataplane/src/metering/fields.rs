//! The usage fields the providers report, under their own names, before they are mapped to
//! [`TokenCounts`](crate::usage::TokenCounts) by [`super::anthropic`] or [`super::openai`].
//!
//! Both scanners (the incremental one for whole JSON bodies in [`super::json`], and the
//! per-event one for streams in [`super::sse`]) fill the same [`Reported`], so what a provider
//! declares is read the same way whatever the transport.

use std::borrow::Cow;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
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
    pub fn of(name: &[u8]) -> Option<UsageKey> {
        Some(match name {
            b"input_tokens" => UsageKey::Count(Field::InputTokens),
            b"output_tokens" => UsageKey::Count(Field::OutputTokens),
            b"cache_creation_input_tokens" => UsageKey::Count(Field::CacheCreationInputTokens),
            b"cache_read_input_tokens" => UsageKey::Count(Field::CacheReadInputTokens),
            b"prompt_tokens" => UsageKey::Count(Field::PromptTokens),
            b"completion_tokens" => UsageKey::Count(Field::CompletionTokens),
            b"prompt_tokens_details" | b"input_tokens_details" => UsageKey::InputDetails,
            b"completion_tokens_details" | b"output_tokens_details" => UsageKey::OutputDetails,
            _ => return None,
        })
    }
}

/// The count a key inside a `*_details` object names, if Aurora reads it.
pub fn detail(details: UsageKey, name: &[u8]) -> Option<Field> {
    match (details, name) {
        (UsageKey::InputDetails, b"cached_tokens") => Some(Field::CachedTokens),
        (UsageKey::OutputDetails, b"reasoning_tokens") => Some(Field::ReasoningTokens),
        _ => None,
    }
}

/// A `usage` object, read by serde straight into [`Reported`] (from a whole body or from one
/// stream event, a bounded slice). Only a JSON object is accepted; unknown fields are skipped;
/// a count that is not a non-negative integer (or `null`), a `*_details` value that is not an
/// object (or `null`), or a field given twice fails the whole read, which then reports nothing
/// rather than a guess (these are the rules a derived struct followed; written by hand because
/// the derived one, with its nested `Option` structs, compiled into several thousand
/// instructions per response of moving its fields around).
#[derive(Debug, Default)]
pub struct UsageObject(pub Reported);

impl From<&UsageObject> for Reported {
    fn from(usage: &UsageObject) -> Reported {
        usage.0
    }
}

impl<'de> Deserialize<'de> for UsageObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut reported = Reported::default();
        UsageSeed(&mut reported).deserialize(deserializer)?;
        Ok(UsageObject(reported))
    }
}

/// Reads a `usage` object (see [`UsageObject`]) into the `Reported` it holds, which is
/// written as fields are read: after an error its contents mean nothing.
#[derive(Debug)]
pub struct UsageSeed<'r>(pub &'r mut Reported);

impl<'de> DeserializeSeed<'de> for UsageSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for UsageSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a usage object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let reported = self.0;
        let mut once = Once::default();
        while let Some(Key(key)) = map.next_key()? {
            // Matched as bytes: the names are ASCII, and checking a key for UTF-8 first cost
            // more than matching it.
            let Some(usage_key) = UsageKey::of(&key) else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            once.first(usage_key.slot())?;
            match usage_key {
                UsageKey::Count(field) => {
                    if let Some(count) = map.next_value::<Option<u64>>()? {
                        reported.set(field, count);
                    }
                }
                details => {
                    let Some(ObjectOnly(Details { cached_tokens, reasoning_tokens })) = map.next_value()? else {
                        continue;
                    };
                    let wanted = if details == UsageKey::InputDetails {
                        cached_tokens.map(|n| (Field::CachedTokens, n))
                    } else {
                        reasoning_tokens.map(|n| (Field::ReasoningTokens, n))
                    };
                    if let Some((field, count)) = wanted {
                        reported.set(field, count);
                    }
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug, Default, Deserialize)]
struct Details {
    cached_tokens: Option<u64>,
    reasoning_tokens: Option<u64>,
}

impl UsageKey {
    /// Which of a `usage` object's fields this is, the two spellings of each `*_details`
    /// counting as one (as serde's `alias` did).
    fn slot(self) -> u32 {
        match self {
            UsageKey::Count(field) => field as u32,
            UsageKey::InputDetails => 8,
            UsageKey::OutputDetails => 9,
        }
    }
}

/// The fields a visitor has read, to refuse one given twice.
#[derive(Debug, Default)]
pub struct Once(u32);

impl Once {
    pub fn first<E: serde::de::Error>(&mut self, slot: u32) -> Result<(), E> {
        if self.0 & (1 << slot) != 0 {
            return Err(E::custom("duplicate field in usage"));
        }
        self.0 |= 1 << slot;
        Ok(())
    }
}

/// An object key as raw bytes: borrowed from the input unless it had escapes to undo, and
/// not checked for UTF-8 until it might matter.
#[derive(Debug)]
pub struct Key<'de>(pub Cow<'de, [u8]>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Bytes;
        impl<'de> Visitor<'de> for Bytes {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_bytes<E>(self, key: &'de [u8]) -> Result<Key<'de>, E> {
                Ok(Key(key.into()))
            }
            fn visit_bytes<E>(self, key: &[u8]) -> Result<Key<'de>, E> {
                Ok(Key(key.to_vec().into()))
            }
            fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(key.as_bytes().into()))
            }
            fn visit_str<E>(self, key: &str) -> Result<Key<'de>, E> {
                Ok(Key(key.as_bytes().to_vec().into()))
            }
        }
        deserializer.deserialize_bytes(Bytes)
    }
}

/// A string borrowed from the input unless it had escapes to undo. serde's own `Cow<str>` is
/// always an owned copy (only a derived field marked `borrow` borrows), which for the model's
/// name cost an allocation per response before it was copied again to be kept.
#[derive(Debug)]
pub struct Text<'de>(pub Cow<'de, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Str;
        impl<'de> Visitor<'de> for Str {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(text.into()))
            }
            fn visit_str<E>(self, text: &str) -> Result<Text<'de>, E> {
                Ok(Text(text.to_owned().into()))
            }
            fn visit_string<E>(self, text: String) -> Result<Text<'de>, E> {
                Ok(Text(text.into()))
            }
        }
        deserializer.deserialize_str(Str)
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

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::{Key, Text, UsageKey};

    #[test]
    fn text_borrows_unless_it_has_escapes_to_undo() {
        let Text(plain) = serde_json::from_slice(br#""claude-x""#).unwrap();
        assert!(matches!(plain, Cow::Borrowed("claude-x")));
        let Text(escaped) = serde_json::from_slice(br#""claude\u002dx\/1""#).unwrap();
        assert!(matches!(escaped, Cow::Owned(ref name) if name == "claude-x/1"));
        assert!(serde_json::from_slice::<Text<'_>>(b"17").is_err());
    }

    #[test]
    fn usage_keys_are_matched_after_unescaping() {
        let Key(key) = serde_json::from_slice(br#""input\u005ftokens""#).unwrap();
        assert!(UsageKey::of(&key).is_some());
        assert!(UsageKey::of(b"input_tokens\xff").is_none());
    }
}
