//! Upstream credentials as operators type them, checked once where they enter the system.
//!
//! A credential ends up in an HTTP header on every request to its provider, so it must be a
//! valid header value. Checking at the entrances (the environment at startup, the admin API)
//! rather than on the data plane matters: a data plane rejects an update it cannot apply
//! whole, so one bad credential accepted by the control plane would freeze every replica.

/// Longer than any provider's keys, short enough to bound a header.
pub const MAX_CREDENTIAL_BYTES: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("must be 1 to {MAX_CREDENTIAL_BYTES} characters")]
    Length,
    #[error("must be printable ASCII")]
    Characters,
}

/// The credential with surrounding whitespace removed (a trailing newline is what a secret read
/// from a file usually carries), if what remains can be sent as a header value.
pub fn validate_credential(raw: &str) -> Result<&str, CredentialError> {
    let credential = raw.trim();
    if credential.is_empty() || credential.len() > MAX_CREDENTIAL_BYTES {
        return Err(CredentialError::Length);
    }
    if !credential.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return Err(CredentialError::Characters);
    }
    Ok(credential)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_and_checks() {
        assert_eq!(validate_credential("sk-ant-123\n"), Ok("sk-ant-123"));
        assert_eq!(validate_credential("  sk 1 "), Ok("sk 1"));
        assert_eq!(validate_credential(" \n"), Err(CredentialError::Length));
        assert_eq!(validate_credential(&"x".repeat(MAX_CREDENTIAL_BYTES + 1)), Err(CredentialError::Length));
        assert_eq!(validate_credential("sk\r\nx"), Err(CredentialError::Characters));
        assert_eq!(validate_credential("clé"), Err(CredentialError::Characters));
    }
}
