//! TLS and mutual TLS between data planes (and the CLI) and the control plane, with
//! certificates generated at test time.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

use crate::support::controlplane::{ADMIN_KEY, TestControlplane};
use crate::support::dataplane::TestDataplane;

/// A CA, a server certificate for `localhost` and a client certificate, as PEM files.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn generate() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "Aurora test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);

        let write = |name: &str, pem: String| std::fs::write(dir.path().join(name), pem).unwrap();
        write("ca.pem", ca_cert.pem());
        for (name, subject) in [("server", "localhost"), ("client", "dp-tls")] {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(vec![subject.to_owned()]).unwrap();
            params.distinguished_name.push(DnType::CommonName, subject);
            let cert = params.signed_by(&key, &issuer).unwrap();
            write(&format!("{name}.pem"), cert.pem());
            write(&format!("{name}-key.pem"), key.serialize_pem());
        }
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[tokio::test]
async fn data_planes_and_the_cli_reach_a_mutual_tls_control_plane_only_with_a_client_certificate() {
    let pki = Pki::generate();
    let (cert, key, ca) = (pki.path("server.pem"), pki.path("server-key.pem"), pki.path("ca.pem"));
    let (client_cert, client_key) = (pki.path("client.pem"), pki.path("client-key.pem"));
    let cp = TestControlplane::start(&[
        ("AURORA_TLS_CERT", s(&cert)),
        ("AURORA_TLS_KEY", s(&key)),
        ("AURORA_TLS_CLIENT_CA", s(&ca)),
    ])
    .await;
    let url = format!("https://localhost:{}", cp.addr.port());
    let tls_env = [
        ("AURORA_TLS_CA", s(&ca)),
        ("AURORA_TLS_CLIENT_CERT", s(&client_cert)),
        ("AURORA_TLS_CLIENT_KEY", s(&client_key)),
    ];

    let dp = TestDataplane::subscribed(&url, "dp-tls", &tls_env).await;
    dp.wait_ready().await;

    // The CLI over the same mutual TLS: create a key, wait for the replica, use it.
    let mut cli_env = vec![("AURORA_MASTER_KEY", ADMIN_KEY), ("AURORA_CONTROL_PLANE_URL", url.as_str())];
    cli_env.extend_from_slice(&tls_env);
    let created = crate::support::controlplane::run_cli(
        &["keys", "create", "--name", "tls", "-o", "json", "--wait"],
        &cli_env,
        None,
    )
    .await
    .json();
    let secret = created["secret"].as_str().unwrap();
    assert_eq!(dp.call(secret).await, 500, "authenticated; anthropic has no upstream credential configured");

    // No client certificate: the handshake fails and the replica never becomes ready.
    let mut anonymous = TestDataplane::subscribed(&url, "dp-anonymous", &[("AURORA_TLS_CA", s(&ca))]).await;
    anonymous
        .process
        .wait_for_event("a failed connection", |e| {
            e["message"] == "config stream lost; serving the last applied configuration"
        })
        .await;
    assert_eq!(anonymous.readiness().await, 503);

    // Plain text to a TLS listener is refused too.
    let plain = crate::support::controlplane::run_cli(
        &["keys", "list"],
        &[
            ("AURORA_MASTER_KEY", ADMIN_KEY),
            ("AURORA_CONTROL_PLANE_URL", &format!("http://localhost:{}", cp.addr.port())),
        ],
        None,
    )
    .await;
    assert_ne!(plain.code, Some(0));
}
