//! Usage facts both planes agree on: the pseudo key ids of traffic that no managed key carried,
//! and which model names are kept.

/// The key id usage is attributed to when a request authenticated with the master key.
pub const MASTER_KEY_USAGE_ID: &str = "master";
/// The key id usage is attributed to when gateway auth is off (no master key, no managed keys).
pub const ANONYMOUS_USAGE_ID: &str = "anonymous";
/// Longest model name kept, in bytes; a response naming a longer one (or one with characters
/// that may not be stored) is attributed to [`UNREADABLE_MODEL`].
pub const MODEL_MAX_BYTES: usize = 200;
/// Where usage goes when the response's model name cannot be kept as it is.
pub const UNREADABLE_MODEL: &str = "(unreadable)";
/// Where usage goes once one data plane's aggregate already names this many distinct models in
/// one report: a hostile upstream inventing a model per response cannot grow memory.
pub const OTHER_MODEL: &str = "(other)";

/// The model name as usage records it: empty for none, [`UNREADABLE_MODEL`] for one too long
/// or holding characters stored text may not have.
pub fn usage_model(model: Option<&str>) -> &str {
    match model {
        None => "",
        Some(model) if model.len() <= MODEL_MAX_BYTES && model.chars().all(|c| c.is_ascii_graphic() || c == ' ') => {
            model
        }
        Some(_) => UNREADABLE_MODEL,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_are_kept_only_when_short_and_printable() {
        assert_eq!(usage_model(None), "");
        assert_eq!(usage_model(Some("gpt-4o-2024-08-06")), "gpt-4o-2024-08-06");
        assert_eq!(usage_model(Some("claude-sonnet-4-5@20250929")), "claude-sonnet-4-5@20250929");
        assert_eq!(usage_model(Some("a\nb")), UNREADABLE_MODEL);
        assert_eq!(usage_model(Some("modèle")), UNREADABLE_MODEL);
        assert_eq!(usage_model(Some(&"x".repeat(MODEL_MAX_BYTES + 1))), UNREADABLE_MODEL);
    }
}
