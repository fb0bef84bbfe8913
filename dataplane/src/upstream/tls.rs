//! Upstream TLS trust, and why a TLS session with a provider failed.
//!
//! The trust store is the compiled-in public roots plus the operator's CA bundle. A failed
//! handshake is classified once, from rustls's own error, so the client sees a 502 that names
//! the reason (unknown issuer, name mismatch, expired, a refused client certificate) rather
//! than a generic "unreachable".

use std::path::{Path, PathBuf};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{AlertDescription, CertificateError, RootCertStore};

#[derive(Debug, thiserror::Error)]
pub enum CaFileError {
    #[error("cannot read AURORA_UPSTREAM_CA_FILE {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("AURORA_UPSTREAM_CA_FILE {0} holds no PEM certificate")]
    Empty(PathBuf),
    #[error("AURORA_UPSTREAM_CA_FILE {path}: certificate {index} is not a usable CA: {reason}")]
    Unusable { path: PathBuf, index: usize, reason: rustls::Error },
}

/// The public roots, plus every certificate of the PEM bundle at `ca_file`.
pub fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, CaFileError> {
    let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    let Some(path) = ca_file else { return Ok(roots) };
    let read_error = |reason: String| CaFileError::Read { path: path.to_owned(), reason };
    let pem = std::fs::read(path).map_err(|e| read_error(e.to_string()))?;
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&pem).collect::<Result<_, _>>().map_err(|e| read_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(CaFileError::Empty(path.to_owned()));
    }
    for (index, cert) in certs.into_iter().enumerate() {
        roots.add(cert).map_err(|reason| CaFileError::Unusable { path: path.to_owned(), index: index + 1, reason })?;
    }
    Ok(roots)
}

/// Why the TLS session with the upstream failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TlsFailure {
    #[error("the upstream's TLS certificate was refused: unknown issuer (trust its CA with AURORA_UPSTREAM_CA_FILE)")]
    UnknownIssuer,
    #[error("the upstream's TLS certificate was refused: it is not valid for the upstream's host name")]
    NameMismatch,
    #[error("the upstream's TLS certificate was refused: it has expired")]
    Expired,
    #[error("the upstream's TLS certificate was refused: it is not valid yet")]
    NotYetValid,
    #[error("the upstream's TLS certificate was refused: it has been revoked")]
    Revoked,
    #[error("the upstream's TLS certificate was refused: it is invalid")]
    InvalidCertificate,
    #[error(
        "the upstream ended the TLS session with the alert {0:?} (if it requires a client certificate, set the provider's)"
    )]
    AlertReceived(AlertDescription),
    #[error("the TLS session with the upstream failed")]
    Other,
}

impl TlsFailure {
    /// The failure `err` describes, if it is a TLS one. tokio-rustls reports rustls errors as
    /// `io::Error`s wrapping them (which hyper-rustls wraps in another `io::Error`), and an
    /// `io::Error`'s `source()` skips what it wraps, hence `get_ref`, as deep as it goes.
    pub fn of(err: &(dyn std::error::Error + 'static)) -> Option<TlsFailure> {
        let mut err = err;
        let rustls = loop {
            if let Some(rustls) = err.downcast_ref::<rustls::Error>() {
                break rustls;
            }
            err = err.downcast_ref::<std::io::Error>()?.get_ref()?;
        };
        Some(match rustls {
            rustls::Error::InvalidCertificate(cert) => match cert {
                CertificateError::UnknownIssuer => TlsFailure::UnknownIssuer,
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                    TlsFailure::NameMismatch
                }
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => TlsFailure::Expired,
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => TlsFailure::NotYetValid,
                CertificateError::Revoked => TlsFailure::Revoked,
                _ => TlsFailure::InvalidCertificate,
            },
            rustls::Error::AlertReceived(alert) => TlsFailure::AlertReceived(*alert),
            _ => TlsFailure::Other,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    #[test]
    fn finds_the_rustls_error_inside_io_errors() {
        let wrapped = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        assert_eq!(TlsFailure::of(&wrapped), Some(TlsFailure::UnknownIssuer));
        // hyper-rustls wraps tokio-rustls's error once more.
        assert_eq!(TlsFailure::of(&io::Error::other(wrapped)), Some(TlsFailure::UnknownIssuer));
        let alert = io::Error::other(rustls::Error::AlertReceived(AlertDescription::CertificateRequired));
        assert_eq!(TlsFailure::of(&alert), Some(TlsFailure::AlertReceived(AlertDescription::CertificateRequired)));
        assert_eq!(TlsFailure::of(&io::Error::other("plain")), None);
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        assert!(matches!(roots(Some(&path)), Err(CaFileError::Empty(_))));
        assert!(matches!(roots(Some(&dir.path().join("missing.pem"))), Err(CaFileError::Read { .. })));
        assert_eq!(roots(None).unwrap().len(), webpki_roots::TLS_SERVER_ROOTS.len());
    }
}
