//! Names of the credentials in a provider's credential set, checked by both planes.
//!
//! A name is shown by the admin API and the CLI, written to logs and used as a Prometheus
//! label value, so it is short and made of characters that need no escaping anywhere.

/// Long enough for `org-research-2`, short enough for a label.
pub const MAX_CREDENTIAL_NAME_BYTES: usize = 64;

/// The largest weight a credential may have: weights are relative, so more is never needed.
pub const MAX_CREDENTIAL_WEIGHT: u32 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CredentialNameError {
    #[error("must be 1 to {MAX_CREDENTIAL_NAME_BYTES} characters")]
    Length,
    #[error("may hold only ASCII letters, digits, '-', '_' and '.'")]
    Characters,
}

pub fn validate_credential_name(name: &str) -> Result<&str, CredentialNameError> {
    if name.is_empty() || name.len() > MAX_CREDENTIAL_NAME_BYTES {
        return Err(CredentialNameError::Length);
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
        return Err(CredentialNameError::Characters);
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_and_plain() {
        assert_eq!(validate_credential_name("org-b_2.x"), Ok("org-b_2.x"));
        assert_eq!(validate_credential_name(""), Err(CredentialNameError::Length));
        assert_eq!(validate_credential_name(&"a".repeat(65)), Err(CredentialNameError::Length));
        assert_eq!(validate_credential_name("a b"), Err(CredentialNameError::Characters));
        assert_eq!(validate_credential_name("a\"}"), Err(CredentialNameError::Characters));
    }
}
