//! Validation of a key's endpoint allow-list as the admin API receives it (issue 13).

use aurora_core::text::excerpt;
use aurora_core::{EndpointRule, MAX_ENDPOINT_RULES};

use super::validate::FieldError;

/// Parses every rule, drops duplicates (keeping the first), and refuses more than
/// [`MAX_ENDPOINT_RULES`]. The error names the rule and what is wrong with it.
pub(crate) fn endpoint_rules(field: &'static str, rules: &[String]) -> Result<Vec<EndpointRule>, FieldError> {
    let mut parsed: Vec<EndpointRule> = Vec::with_capacity(rules.len().min(MAX_ENDPOINT_RULES));
    for text in rules {
        let rule: EndpointRule =
            text.trim().parse().map_err(|err| FieldError { field, message: format!("{}: {err}", excerpt(text)) })?;
        if !parsed.contains(&rule) {
            parsed.push(rule);
        }
    }
    if parsed.len() > MAX_ENDPOINT_RULES {
        let message = format!("at most {MAX_ENDPOINT_RULES} endpoint rules per key, got {}", parsed.len());
        return Err(FieldError { field, message });
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_deduplicated_and_bounded() {
        let rules =
            ["anthropic POST /v1/messages".into(), " anthropic POST /messages ".into(), "openai GET /models/*".into()];
        let parsed = endpoint_rules("allowed_endpoints", &rules).unwrap();
        let texts: Vec<String> = parsed.iter().map(ToString::to_string).collect();
        assert_eq!(texts, ["anthropic POST /messages", "openai GET /models/*"]);

        let err = endpoint_rules("allowed_endpoints", &["anthropic FETCH /x".into()]).unwrap_err();
        assert_eq!(err.field, "allowed_endpoints");
        assert!(err.message.contains("FETCH") && err.message.contains("method"), "{}", err.message);

        let many: Vec<String> = (0..=MAX_ENDPOINT_RULES).map(|i| format!("openai GET /m{i}")).collect();
        let err = endpoint_rules("allowed_endpoints", &many).unwrap_err();
        assert!(err.message.contains("at most"), "{}", err.message);
    }
}
