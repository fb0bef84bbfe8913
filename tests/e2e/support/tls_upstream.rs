//! TLS upstreams signed by a CA generated at test time, speaking HTTP/1.1 or HTTP/2 by ALPN,
//! optionally requiring a client certificate. Each answers `{"version": ..., "path": ...}` and
//! records the headers of every request it serves.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use http::{HeaderMap, Request, Response};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A CA and certificates it signs, as PEM files in a temporary directory.
pub struct Pki {
    dir: tempfile::TempDir,
    issuer: Issuer<'static, KeyPair>,
    ca: String,
}

impl Pki {
    pub fn generate() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "Aurora upstream test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, ca_cert.pem()).unwrap();
        let ca = ca.to_str().unwrap().to_owned();
        Pki { dir, issuer: Issuer::new(ca_params, ca_key), ca }
    }

    /// Writes `{name}.pem` and `{name}-key.pem`, a certificate for `subject` signed by the CA;
    /// `expired` dates it entirely in the past.
    pub fn issue(&self, name: &str, subject: &str, expired: bool) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![subject.to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, subject);
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        std::fs::write(self.path(&format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(self.path(&format!("{name}-key.pem")), key.serialize_pem()).unwrap();
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The CA certificate's path.
    pub fn ca(&self) -> &str {
        &self.ca
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Offer `h2` by ALPN (besides `http/1.1`).
    pub http2: bool,
    /// Require a client certificate signed by the PKI's CA.
    pub client_auth: bool,
}

pub struct TlsUpstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<HeaderMap>>>,
}

impl TlsUpstream {
    /// Serves with the certificate `{cert}.pem` (see [`Pki::issue`]) on 127.0.0.1, port 0.
    pub async fn start(pki: &Pki, cert: &str, options: Options) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let chain = vec![CertificateDer::from_pem_file(pki.path(&format!("{cert}.pem"))).unwrap()];
        let key = PrivateKeyDer::from_pem_file(pki.path(&format!("{cert}-key.pem"))).unwrap();
        let builder = rustls::ServerConfig::builder();
        let builder = if options.client_auth {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(CertificateDer::from_pem_file(pki.ca()).unwrap()).unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots)).build().unwrap();
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder.with_single_cert(chain, key).unwrap();
        config.alpn_protocols =
            if options.http2 { vec![b"h2".to_vec(), b"http/1.1".to_vec()] } else { vec![b"http/1.1".to_vec()] };
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorder = seen.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, recorder) = (acceptor.clone(), recorder.clone());
                tokio::spawn(async move {
                    // Handshake failures are what some tests are about; the client reports them.
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        recorder.lock().unwrap().push(request.headers().clone());
                        let body = serde_json::json!({
                            "version": format!("{:?}", request.version()),
                            "path": request.uri().path(),
                        });
                        async move {
                            Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(body.to_string()))))
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        TlsUpstream { addr, seen }
    }

    /// `https://{host}:{port}`, `host` being what the certificate is checked against.
    pub fn base_url(&self, host: &str) -> String {
        format!("https://{host}:{}", self.addr.port())
    }

    /// The headers of every request served so far.
    pub fn requests(&self) -> Vec<HeaderMap> {
        self.seen.lock().unwrap().clone()
    }
}

pub fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}
