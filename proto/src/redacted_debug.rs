//! Hand-written `Debug` for the messages that carry a secret.
//!
//! prost derives `Debug` for every message, and a derived `Debug` prints every field: an upstream
//! credential in a `ProviderConfig` (inside a snapshot chunk or a delta) or an
//! `UpsertProviderRequest`, or the one-time secret in a `CreateKeyResponse` or `RotateKeyResponse`, would reach any
//! `{:?}` in a log line. `build.rs` turns the derive off for exactly these messages; here each
//! prints every field except the secret, which shows only whether it is set.

use std::fmt;

use crate::v1::{
    ClientCertificate, CreateKeyResponse, ProviderConfig, RotateKeyResponse, UpsertProviderRequest,
    upsert_provider_request,
};

/// A secret in a debug print: `<redacted>` when set, `""` when empty.
struct Secret<'a>(&'a str);

impl fmt::Debug for Secret<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() { f.write_str("\"\"") } else { f.write_str("<redacted>") }
    }
}

impl fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("name", &self.name)
            .field("enabled", &self.enabled)
            .field("base_url", &self.base_url)
            .field("credential", &Secret(&self.credential))
            .field("default_headers", &self.default_headers)
            .field("client_certificate_set", &!self.client_certificate_pem.is_empty())
            .field("client_key", &Secret(&self.client_key_pem))
            .field("ca_set", &!self.ca_pem.is_empty())
            .finish()
    }
}

impl fmt::Debug for UpsertProviderRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpsertProviderRequest")
            .field("name", &self.name)
            .field("enabled", &self.enabled)
            .field("base_url", &self.base_url)
            .field("credential_change", &self.credential_change)
            .field("default_headers", &self.default_headers)
            .field("client_certificate_change", &self.client_certificate_change)
            .field("ca_change", &self.ca_change.as_ref().map(|_| "set"))
            .finish()
    }
}

// prost skips the derive for a message's oneofs too.
impl fmt::Debug for upsert_provider_request::CredentialChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Credential(credential) => f.debug_tuple("Credential").field(&Secret(credential)).finish(),
            Self::ClearCredential(clear) => f.debug_tuple("ClearCredential").field(clear).finish(),
        }
    }
}

impl fmt::Debug for upsert_provider_request::ClientCertificateChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ClientCertificate(certificate) => f.debug_tuple("ClientCertificate").field(certificate).finish(),
            Self::ClearClientCertificate(clear) => f.debug_tuple("ClearClientCertificate").field(clear).finish(),
        }
    }
}

impl fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCertificate")
            .field("certificate_set", &!self.certificate_pem.is_empty())
            .field("private_key", &Secret(&self.private_key_pem))
            .finish()
    }
}

impl fmt::Debug for CreateKeyResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateKeyResponse")
            .field("key", &self.key)
            .field("secret", &Secret(&self.secret))
            .field("revision", &self.revision)
            .finish()
    }
}

impl fmt::Debug for RotateKeyResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RotateKeyResponse")
            .field("key", &self.key)
            .field("secret", &Secret(&self.secret))
            .field("revision", &self.revision)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use crate::v1::{Change, Delta, Key, SnapshotChunk, SubscribeResponse, change, subscribe_response};

    use super::*;

    const SECRET: &str = "sk-ant-very-secret";

    fn provider() -> ProviderConfig {
        ProviderConfig {
            name: "anthropic".into(),
            enabled: true,
            base_url: "https://api.anthropic.com".into(),
            credential: SECRET.into(),
            client_key_pem: format!("-----BEGIN PRIVATE KEY-----{SECRET}"),
            ..Default::default()
        }
    }

    #[test]
    fn a_provider_config_hides_its_credential_wherever_it_travels() {
        let printed = format!("{:?}", provider());
        assert!(printed.contains("anthropic") && printed.contains("<redacted>"), "{printed}");
        let chunk = SnapshotChunk { providers: vec![provider()], ..Default::default() };
        let change = Change { change: Some(change::Change::ProviderUpsert(provider())) };
        let delta = Delta { revision: 7, changes: vec![change.clone()] };
        let response = SubscribeResponse { message: Some(subscribe_response::Message::Delta(delta.clone())) };
        for printed in [
            format!("{chunk:?}"),
            format!("{change:?}"),
            format!("{delta:?}"),
            format!("{response:?}"),
            format!("{:#?}", provider()),
        ] {
            assert!(!printed.contains(SECRET), "{printed}");
        }
        let empty = ProviderConfig { credential: String::new(), ..provider() };
        assert!(format!("{empty:?}").contains("credential: \"\""));
    }

    #[test]
    fn an_upsert_request_hides_its_credential() {
        let request = UpsertProviderRequest {
            name: "anthropic".into(),
            enabled: Some(true),
            base_url: None,
            credential_change: Some(upsert_provider_request::CredentialChange::Credential(SECRET.into())),
            client_certificate_change: Some(upsert_provider_request::ClientCertificateChange::ClientCertificate(
                ClientCertificate { certificate_pem: "cert".into(), private_key_pem: SECRET.into() },
            )),
            ..Default::default()
        };
        let printed = format!("{request:?}");
        assert!(!printed.contains(SECRET) && printed.contains("Credential(<redacted>)"), "{printed}");
        let clear = upsert_provider_request::CredentialChange::ClearCredential(true);
        assert_eq!(format!("{clear:?}"), "ClearCredential(true)");
    }

    #[test]
    fn a_create_key_response_hides_the_secret() {
        let response = CreateKeyResponse {
            key: Some(Key { name: "ci".into(), ..Default::default() }),
            secret: format!("aur_{SECRET}"),
            revision: 3,
        };
        let printed = format!("{response:?}");
        assert!(!printed.contains(SECRET), "{printed}");
        assert!(printed.contains("\"ci\"") && printed.contains("revision: 3"), "{printed}");
    }

    #[test]
    fn a_rotate_key_response_hides_the_secret() {
        let response = RotateKeyResponse {
            key: Some(Key { name: "ci".into(), ..Default::default() }),
            secret: format!("aur_{SECRET}"),
            revision: 4,
        };
        let printed = format!("{response:?}");
        assert!(!printed.contains(SECRET), "{printed}");
        assert!(printed.contains("\"ci\"") && printed.contains("revision: 4"), "{printed}");
    }
}
