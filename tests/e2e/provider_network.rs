//! Per-provider network settings through the admin API, enforced by a subscribed data plane:
//! default headers, a provider CA bundle and a client certificate for mutual TLS.

use serde_json::Value;

use crate::support::controlplane::{ADMIN_KEY, TestControlplane};
use crate::support::dataplane::TestDataplane;
use crate::support::tls_upstream::{Options, Pki, TlsUpstream};

/// `GET /p/{provider}/models` with the master key as gateway token and `headers`.
async fn models(dp: &TestDataplane, provider: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut request = reqwest::Client::new().get(dp.url(&format!("/p/{provider}/models"))).bearer_auth(ADMIN_KEY);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn default_headers_reach_the_upstream_unless_the_client_sends_its_own() {
    let pki = Pki::generate();
    pki.issue("server", "localhost", false);
    let upstream = TlsUpstream::start(&pki, "server", Options { http2: true, client_auth: false }).await;
    let cp = TestControlplane::start(&[]).await;
    let dp = TestDataplane::subscribed(&cp.url(), "dp-headers", &[]).await;
    dp.wait_ready().await;

    let base_url = format!("{}/api/v1", upstream.base_url("localhost"));
    let set = cp
        .cli_with(
            &[
                "providers",
                "set",
                "openrouter",
                "--api-key-env",
                "CRED",
                "--base-url",
                &base_url,
                "--ca-file",
                pki.ca(),
                "--header",
                "HTTP-Referer: https://example.com",
                "--header",
                "X-Title: Aurora",
                "-o",
                "json",
                "--wait",
            ],
            &[("AURORA_MASTER_KEY", ADMIN_KEY), ("CRED", "sk-or-upstream")],
            None,
        )
        .await
        .json();
    assert_eq!(set["default_headers"], serde_json::json!({"http-referer": "https://example.com", "x-title": "Aurora"}));
    assert_eq!(set["ca_set"], true);

    let (status, body) = models(&dp, "openrouter", &[("X-Title", "Client App")]).await;
    assert_eq!(status, 200, "{body}: the provider's CA bundle is trusted");
    let seen = upstream.requests();
    let last = seen.last().unwrap();
    assert_eq!(last["http-referer"], "https://example.com");
    assert_eq!(last["x-title"], "Client App", "the client's own value wins");
    assert_eq!(last.get_all("x-title").iter().count(), 1);
    assert_eq!(last["authorization"], "Bearer sk-or-upstream");

    for forbidden in ["Authorization: Bearer sk-mine", "Host: evil.example"] {
        let refused = cp.cli(&["providers", "set", "openrouter", "--header", forbidden]).await;
        assert!(refused.error_line().starts_with("error: INVALID_ARGUMENT: default_headers: header "), "{refused:?}");
        assert!(refused.error_line().ends_with("cannot be a default header: the gateway sets or removes it itself"));
    }

    cp.cli(&["providers", "set", "openrouter", "--clear-headers", "--wait"]).await.ok();
    let (status, _) = models(&dp, "openrouter", &[]).await;
    assert_eq!(status, 200);
    assert!(!upstream.requests().last().unwrap().contains_key("http-referer"), "cleared");
}

#[tokio::test]
async fn an_upstream_requiring_a_client_certificate_is_served_with_the_providers() {
    let pki = Pki::generate();
    pki.issue("server", "localhost", false);
    pki.issue("client", "aurora-dataplane", false);
    let upstream = TlsUpstream::start(&pki, "server", Options { http2: false, client_auth: true }).await;
    let cp = TestControlplane::start(&[]).await;
    let dp = TestDataplane::subscribed(&cp.url(), "dp-mtls", &[("AURORA_UPSTREAM_CA_FILE", pki.ca())]).await;
    dp.wait_ready().await;

    let base_url = format!("{}/v1", upstream.base_url("localhost"));
    cp.cli(&["providers", "set", "vllm", "--base-url", &base_url, "--wait"]).await.ok();
    let (status, body) = models(&dp, "vllm", &[]).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "upstream_tls_failed");
    assert!(body["error"]["message"].as_str().unwrap().contains("client certificate"), "{body}");

    // The key comes from standard input, never from argv.
    let key = std::fs::read_to_string(pki.path("client-key.pem")).unwrap();
    let cert = pki.path("client.pem");
    let set = cp
        .cli_with(
            &[
                "providers",
                "set",
                "vllm",
                "--client-cert",
                cert.to_str().unwrap(),
                "--client-key",
                "-",
                "-o",
                "json",
                "--wait",
            ],
            &[("AURORA_MASTER_KEY", ADMIN_KEY)],
            Some(&key),
        )
        .await
        .json();
    assert_eq!(set["client_certificate_set"], true);
    let (status, body) = models(&dp, "vllm", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["path"], "/v1/models");

    // Write-only: no API output and no log line holds the key.
    let key_body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
    let listed = cp.cli(&["providers", "list", "-o", "json"]).await.ok().to_owned();
    for shown in [listed, set.to_string(), cp.process.logs(), dp.process.logs()] {
        assert!(!shown.contains(&key_body[..40]), "{shown}");
    }

    cp.cli(&["providers", "set", "vllm", "--clear-client-cert", "--wait"]).await.ok();
    assert_eq!(models(&dp, "vllm", &[]).await.0, 502, "refused again once the certificate is removed");
}
