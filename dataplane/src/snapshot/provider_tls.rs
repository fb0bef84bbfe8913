//! A provider's own TLS material: a client certificate for mutual TLS and extra trusted CAs.
//!
//! Parsed and checked once, when a configuration is applied (so a bad certificate is a `Nack`,
//! never a request-time surprise); the upstream client for it is built from this on first use
//! (see `upstream::dedicated`). The PEM text is kept only to write the last-known-good cache.

use std::fmt;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub struct ProviderTls {
    pub identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    pub cas: Vec<CertificateDer<'static>>,
    /// As configured: certificate chain, key, CA bundle (empty when unset).
    pub(crate) pem: (String, String, String),
}

/// Why a provider's TLS material cannot be used. Never repeats the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderTlsError {
    #[error("the client certificate is not a PEM certificate chain")]
    Certificate,
    #[error("the client key is not a PEM private key, or not the certificate's")]
    Key,
    #[error("a client certificate needs both a certificate and a key")]
    Incomplete,
    #[error("the CA bundle holds no usable PEM certificate")]
    Ca,
}

impl ProviderTls {
    /// The material the three PEM documents describe (each empty when unset), or `None` when
    /// there is none at all.
    pub fn from_pem(cert: &str, key: &str, ca: &str) -> Result<Option<ProviderTls>, ProviderTlsError> {
        if cert.is_empty() && key.is_empty() && ca.is_empty() {
            return Ok(None);
        }
        let identity = match (cert.is_empty(), key.is_empty()) {
            (true, true) => None,
            (false, false) => {
                let chain = certificates(cert).ok_or(ProviderTlsError::Certificate)?;
                let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|_| ProviderTlsError::Key)?;
                // Checks the key's type is supported and that it is the certificate's own.
                rustls::sign::CertifiedKey::from_der(
                    chain.clone(),
                    key.clone_key(),
                    &rustls::crypto::ring::default_provider(),
                )
                .map_err(|_| ProviderTlsError::Key)?;
                Some((chain, key))
            }
            _ => return Err(ProviderTlsError::Incomplete),
        };
        let cas = if ca.is_empty() { Vec::new() } else { certificates(ca).ok_or(ProviderTlsError::Ca)? };
        Ok(Some(ProviderTls { identity, cas, pem: (cert.to_owned(), key.to_owned(), ca.to_owned()) }))
    }
}

fn certificates(pem: &str) -> Option<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes()).collect::<Result<Vec<_>, _>>().ok()?;
    (!certs.is_empty()).then_some(certs)
}

/// Hand-written: the private key must never reach a log line.
impl fmt::Debug for ProviderTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderTls")
            .field("client_certificate_set", &self.identity.is_some())
            .field("cas", &self.cas.len())
            .finish()
    }
}
