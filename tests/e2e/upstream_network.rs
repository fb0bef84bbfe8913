//! Upstreams in real networks: egress proxies (CONNECT tunnels, absolute-form HTTP, NO_PROXY,
//! proxy credentials, refusals) and private CAs, against TLS upstreams generated at test time.

use aurora_core::KeyHash;
use serde_json::{Value, json};

use crate::support::dataplane::{MASTER_KEY, TestDataplane};
use crate::support::egress_proxy::{EgressProxy, Mode};
use crate::support::tls_upstream::{Options, Pki, TlsUpstream};

/// Only vLLM, at `base_url`, with gateway auth by [`MASTER_KEY`].
fn vllm_at(base_url: &str) -> Value {
    json!({
        "revision": 1,
        "providers": { "vllm": { "base_url": format!("{base_url}/v1"), "credential": "sk-vllm" } },
        "master_key_hash": KeyHash::of(MASTER_KEY).to_hex(),
    })
}

/// `GET /p/vllm/models` through `dp`: the status and the JSON body.
async fn models(dp: &TestDataplane) -> (u16, Value) {
    let response = reqwest::Client::new().get(dp.url("/p/vllm/models")).bearer_auth(MASTER_KEY).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

const HTTP1: Options = Options { http2: false, client_auth: false };
const HTTP2: Options = Options { http2: true, client_auth: false };

#[tokio::test]
async fn a_private_ca_is_refused_by_default_and_trusted_with_aurora_upstream_ca_file() {
    let pki = Pki::generate();
    pki.issue("server", "localhost", false);
    for (options, version) in [(HTTP1, "HTTP/1.1"), (HTTP2, "HTTP/2.0")] {
        let upstream = TlsUpstream::start(&pki, "server", options).await;
        let snapshot = vllm_at(&upstream.base_url("localhost"));

        let dp = TestDataplane::start(&snapshot, &[]).await;
        let (status, body) = models(&dp).await;
        assert_eq!(status, 502, "{body}");
        assert_eq!(body["error"]["code"], "upstream_tls_failed");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("unknown issuer"), "{message}");
        assert!(message.contains("AURORA_UPSTREAM_CA_FILE"), "{message}");

        let dp = TestDataplane::start(&snapshot, &[("AURORA_UPSTREAM_CA_FILE", pki.ca())]).await;
        let (status, body) = models(&dp).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, json!({"version": version, "path": "/v1/models"}));
    }
}

#[tokio::test]
async fn certificate_failures_name_their_reason() {
    let pki = Pki::generate();
    pki.issue("server", "localhost", false);
    pki.issue("expired", "localhost", true);
    let valid = TlsUpstream::start(&pki, "server", HTTP1).await;
    let expired = TlsUpstream::start(&pki, "expired", HTTP1).await;
    let ca = [("AURORA_UPSTREAM_CA_FILE", pki.ca())];

    // The certificate names localhost, not 127.0.0.1.
    let dp = TestDataplane::start(&vllm_at(&valid.base_url("127.0.0.1")), &ca).await;
    let (status, body) = models(&dp).await;
    assert_eq!((status, body["error"]["code"].as_str()), (502, Some("upstream_tls_failed")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("not valid for the upstream's host name"), "{body}");

    let dp = TestDataplane::start(&vllm_at(&expired.base_url("localhost")), &ca).await;
    let (status, body) = models(&dp).await;
    assert_eq!((status, body["error"]["code"].as_str()), (502, Some("upstream_tls_failed")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("expired"), "{body}");
}

#[tokio::test]
async fn https_upstreams_are_tunnelled_through_the_proxy_with_its_credentials_and_http2_kept() {
    let pki = Pki::generate();
    pki.issue("server", "localhost", false);
    let upstream = TlsUpstream::start(&pki, "server", HTTP2).await;
    let proxy = EgressProxy::start(Mode::Forward).await;
    let proxy_url = proxy.url(Some("aurora:s3cr%40t-proxy-pass"));
    let env = [("AURORA_UPSTREAM_CA_FILE", pki.ca()), ("HTTPS_PROXY", proxy_url.as_str())];
    let dp = TestDataplane::start(&vllm_at(&upstream.base_url("localhost")), &env).await;

    let (status, body) = models(&dp).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], "HTTP/2.0", "ALPN negotiated with the upstream through the tunnel");
    let seen = proxy.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].request_line, format!("CONNECT localhost:{} HTTP/1.1", upstream.addr.port()));
    // base64("aurora:s3cr@t-proxy-pass"): the URL's user info, percent-decoded.
    assert_eq!(seen[0].proxy_authorization.as_deref(), Some("Basic YXVyb3JhOnMzY3JAdC1wcm94eS1wYXNz"));
    let upstream_saw = upstream.requests();
    assert!(
        upstream_saw.iter().all(|h| !h.contains_key("proxy-authorization")),
        "the tunnel's credential stays at the proxy"
    );

    let logs = dp.process.logs();
    assert!(!logs.contains("s3cr") && !logs.contains("YXVyb3Jh"), "proxy credentials never logged:\n{logs}");
}

#[tokio::test]
async fn no_proxy_exempts_hosts_and_plain_http_goes_to_the_proxy_in_absolute_form() {
    let pki = Pki::generate();
    pki.issue("server", "localhost", false);
    let upstream = TlsUpstream::start(&pki, "server", HTTP1).await;
    let proxy = EgressProxy::start(Mode::Forward).await;
    let proxy_url = proxy.url(Some("user:plainpass"));

    // NO_PROXY lists the upstream's host: connected directly.
    let env = [
        ("AURORA_UPSTREAM_CA_FILE", pki.ca()),
        ("https_proxy", proxy_url.as_str()),
        ("no_proxy", "example.invalid, localhost"),
    ];
    let dp = TestDataplane::start(&vllm_at(&upstream.base_url("localhost")), &env).await;
    let (status, body) = models(&dp).await;
    assert_eq!(status, 200, "{body}");
    assert!(proxy.requests().is_empty(), "{:?}", proxy.requests());

    // A plain-HTTP upstream: the request itself goes to the proxy, with the credential on it.
    let env = [("HTTP_PROXY", proxy_url.as_str())];
    let dp = TestDataplane::start(&vllm_at("http://vllm.internal.example:8000"), &env).await;
    let (status, body) = models(&dp).await;
    assert_eq!((status, body), (200, json!({"via": "proxy"})));
    let seen = proxy.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].request_line, "GET http://vllm.internal.example:8000/v1/models HTTP/1.1");
    assert_eq!(seen[0].proxy_authorization.as_deref(), Some("Basic dXNlcjpwbGFpbnBhc3M="));
    // The upstream's authority, never the gateway's that the client addressed.
    assert_eq!(seen[0].hosts, ["vllm.internal.example:8000"]);
    assert!(!dp.process.logs().contains("plainpass"));
}

#[tokio::test]
async fn a_proxy_that_refuses_the_tunnel_gives_a_502_saying_so() {
    let proxy = EgressProxy::start(Mode::RefuseConnect).await;
    let proxy_url = proxy.url(None);
    let dp =
        TestDataplane::start(&vllm_at("https://api.example.invalid"), &[("HTTPS_PROXY", proxy_url.as_str())]).await;
    let (status, body) = models(&dp).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "proxy_refused");
    assert_eq!(
        body["error"]["message"],
        "the egress proxy refused the tunnel to the upstream provider: it answered CONNECT with an error status"
    );
    assert_eq!(proxy.requests()[0].request_line, "CONNECT api.example.invalid:443 HTTP/1.1");

    // A proxy that is not there at all is a different failure.
    let dp =
        TestDataplane::start(&vllm_at("https://api.example.invalid"), &[("HTTPS_PROXY", "http://127.0.0.1:9")]).await;
    let (status, body) = models(&dp).await;
    assert_eq!((status, body["error"]["code"].as_str()), (502, Some("proxy_unreachable")), "{body}");
}

#[tokio::test]
async fn unusable_proxy_or_ca_settings_stop_the_data_plane_at_startup_without_repeating_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("snapshot.json");
    std::fs::write(&config, vllm_at("https://api.example.invalid").to_string()).unwrap();
    let args = ["dataplane", "--config-file", config.to_str().unwrap()];
    let listen = [("AURORA_LISTEN_ADDR", "127.0.0.1:0"), ("AURORA_ADMIN_LISTEN_ADDR", "127.0.0.1:0")];
    for (var, value, expected) in [
        ("HTTPS_PROXY", "socks5://user:pr0xy-s3cret@proxy:1080", "HTTPS_PROXY: only http:// proxies are supported"),
        ("http_proxy", "http://user:pr0xy-s3cret@", "HTTP_PROXY is not a valid proxy URL"),
        ("AURORA_UPSTREAM_CA_FILE", "/nonexistent/ca.pem", "cannot read AURORA_UPSTREAM_CA_FILE /nonexistent/ca.pem"),
    ] {
        let mut env = listen.to_vec();
        env.push((var, value));
        let mut process = crate::support::process::AuroraProcess::spawn(&args, &env);
        let code = process.wait_exit().await;
        let logs = process.logs();
        assert!(code.is_some_and(|c| c != 0), "{var}: exited with {code:?}:\n{logs}");
        assert!(logs.contains(expected), "{var}:\n{logs}");
        assert!(!logs.contains("pr0xy-s3cret"), "{var}: the proxy password is repeated:\n{logs}");
    }
}
