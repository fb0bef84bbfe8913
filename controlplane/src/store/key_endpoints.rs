//! How a key's endpoint allow-list is kept in the `keys.allowed_endpoints` column: its rules'
//! canonical text, one per line ('' = every endpoint). Canonical text has no line breaks.

use aurora_core::EndpointRule;

use super::StoreError;

pub(super) fn endpoint_list(rules: &[EndpointRule]) -> String {
    rules.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}

/// A rule the store cannot parse is corruption, not "allow everything".
pub(super) fn parse_endpoint_list(text: &str) -> Result<Vec<EndpointRule>, StoreError> {
    text.lines()
        .filter(|line| !line.is_empty())
        .map(|line| line.parse().map_err(|_| StoreError::Corrupt("keys.allowed_endpoints".into())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let rules: Vec<EndpointRule> =
            ["anthropic POST /messages", "openai * /chat/**"].iter().map(|r| r.parse().unwrap()).collect();
        assert_eq!(parse_endpoint_list(&endpoint_list(&rules)).unwrap(), rules);
        assert!(parse_endpoint_list("").unwrap().is_empty());
        assert!(matches!(parse_endpoint_list("anthropic FETCH /x"), Err(StoreError::Corrupt(_))));
    }
}
