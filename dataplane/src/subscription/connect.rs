//! Control-plane endpoints: URLs and TLS settings, validated once at startup.

use std::path::Path;
use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::config::ControlPlaneConfig;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("AURORA_CONTROL_PLANE_URL {url:?} is not a valid URL: {reason}")]
    Url { url: String, reason: String },
    #[error("AURORA_CONTROL_PLANE_URL {0:?} must start with http:// or https://")]
    Scheme(String),
    #[error("TLS options (AURORA_TLS_CA, AURORA_TLS_CLIENT_CERT) require https:// control-plane URLs, got {0:?}")]
    TlsWithoutHttps(String),
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("invalid TLS configuration: {0}")]
    Tls(#[source] tonic::transport::Error),
}

/// The control planes to subscribe to, tried in turn.
#[derive(Debug, Clone)]
pub struct Endpoints {
    list: Vec<Endpoint>,
}

impl Endpoints {
    pub fn new(config: &ControlPlaneConfig) -> Result<Self, ConnectError> {
        let tls = tls_config(config)?;
        let list = config
            .urls
            .iter()
            .map(|url| url.trim())
            .filter(|url| !url.is_empty())
            .map(|url| endpoint(url, tls.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Endpoints { list })
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The endpoint for attempt `index`, cycling through the list.
    pub fn get(&self, index: usize) -> &Endpoint {
        &self.list[index % self.list.len()]
    }
}

fn endpoint(url: &str, tls: Option<&ClientTlsConfig>) -> Result<Endpoint, ConnectError> {
    // What errors and logs show: never a password in the URL's user info.
    let shown = || aurora_core::text::redact_user_info(url).into_owned();
    let https = url.starts_with("https://");
    if !https && !url.starts_with("http://") {
        return Err(ConnectError::Scheme(shown()));
    }
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|_| ConnectError::Url { url: shown(), reason: "not a valid URI".into() })?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        // Detects a control plane that vanished without closing the connection.
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    match (https, tls) {
        (true, Some(tls)) => endpoint = endpoint.tls_config(tls.clone()).map_err(ConnectError::Tls)?,
        (true, None) => {
            endpoint = endpoint.tls_config(ClientTlsConfig::new().with_webpki_roots()).map_err(ConnectError::Tls)?;
        }
        (false, Some(_)) => return Err(ConnectError::TlsWithoutHttps(shown())),
        (false, None) if !is_loopback(&endpoint) => tracing::warn!(
            control_plane = %shown(),
            "plaintext control-plane URL: the node token and upstream credentials cross the network unencrypted; use https://"
        ),
        (false, None) => {}
    }
    Ok(endpoint)
}

fn is_loopback(endpoint: &Endpoint) -> bool {
    match endpoint.uri().host() {
        Some("localhost") => true,
        Some(host) => host.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

fn tls_config(config: &ControlPlaneConfig) -> Result<Option<ClientTlsConfig>, ConnectError> {
    if config.tls_ca.is_none() && config.tls_client_cert.is_none() && config.tls_server_name.is_none() {
        return Ok(None);
    }
    let identity = config.tls_client_cert.as_deref().zip(config.tls_client_key.as_deref());
    client_tls(config.tls_ca.as_deref(), identity, config.tls_server_name.as_deref()).map(Some)
}

/// A rustls client configuration for talking to a control plane: its CA (or the Mozilla roots),
/// an optional client certificate and key for mutual TLS, and an optional name to verify.
/// Shared with the `aurora` CLI.
/// An endpoint's URL as logs may show it: without user info.
pub(super) fn shown(endpoint: &Endpoint) -> String {
    aurora_core::text::redact_user_info(&endpoint.uri().to_string()).into_owned()
}

pub fn client_tls(
    ca: Option<&Path>,
    identity: Option<(&Path, &Path)>,
    server_name: Option<&str>,
) -> Result<ClientTlsConfig, ConnectError> {
    let mut tls = match ca {
        Some(ca) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?)),
        None => ClientTlsConfig::new().with_webpki_roots(),
    };
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    if let Some(name) = server_name {
        tls = tls.domain_name(name.to_owned());
    }
    Ok(tls)
}

fn read(path: &Path) -> Result<Vec<u8>, ConnectError> {
    std::fs::read(path).map_err(|source| ConnectError::Read { path: path.display().to_string(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A control-plane URL's password never reaches an error or a log line.
    #[test]
    fn errors_never_show_a_urls_password() {
        for url in
            ["ftp://admin:S3cretPw@cp:50051", "http://admin:S3cretPw@[bad:50051", "http://admin:S3cretPw@cp:50051"]
        {
            let tls = url.starts_with("http://admin:S3cretPw@cp").then(ClientTlsConfig::new);
            let err = endpoint(url, tls.as_ref()).err().unwrap_or_else(|| panic!("{url} should fail"));
            let text = err.to_string();
            assert!(!text.contains("S3cretPw"), "{text}");
        }
        let ok = endpoint("http://admin:S3cretPw@127.0.0.1:50051", None).unwrap();
        assert!(!shown(&ok).contains("S3cretPw"), "{}", shown(&ok));
    }
}
