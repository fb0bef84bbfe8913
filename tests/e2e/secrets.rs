//! No secret ever reaches a log line or an error body, across a full request flow with every
//! kind of secret set: the master key, a managed key, provider credentials and the node token.

use wiremock::matchers::{any, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::controlplane::{ADMIN_KEY, NODE_TOKEN, TestControlplane};
use crate::support::dataplane::TestDataplane;
use crate::support::wait;

const ANTHROPIC_SECRET: &str = "sk-ant-e2e-provider-secret-1f2e";
const OPENAI_SECRET: &str = "sk-openai-e2e-provider-secret-3c4d";
const OPENROUTER_SECRET: &str = "sk-or-e2e-provider-secret-5a6b";
/// A wrong token a client presents: refused, and never echoed either.
const PRESENTED_WRONG: &str = "aur_presented-but-wrong-7e8f";

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

#[tokio::test]
async fn no_secret_reaches_any_log_or_error_body() {
    let upstream = MockServer::start().await;
    Mock::given(path_regex("^/openai/"))
        .respond_with(ResponseTemplate::new(500).set_body_string(r#"{"error":{"message":"upstream broke"}}"#))
        .mount(&upstream)
        .await;
    Mock::given(any()).respond_with(ResponseTemplate::new(200).set_body_string("{}")).mount(&upstream).await;
    let anthropic = format!("{}/anthropic/v1", upstream.uri());
    let openai = format!("{}/openai/v1", upstream.uri());
    // Nothing listens on port 1: calls to OpenRouter fail and the failure is logged.
    let debug = ("AURORA_LOG", "debug");
    let cp_env = [
        ("ANTHROPIC_BASE_URL", anthropic.as_str()),
        ("ANTHROPIC_API_KEY", ANTHROPIC_SECRET),
        ("OPENAI_BASE_URL", openai.as_str()),
        ("OPENAI_API_KEY", OPENAI_SECRET),
        ("OPENROUTER_BASE_URL", "http://127.0.0.1:1/api/v1"),
        ("OPENROUTER_API_KEY", OPENROUTER_SECRET),
        debug,
    ];
    let mut cp = TestControlplane::start(&cp_env).await;
    let dp = TestDataplane::subscribed(&cp.url(), "dp-secrets", &[debug]).await;
    dp.wait_ready().await;

    let mut cli_output = Vec::new();
    let created = cp.cli(&["keys", "create", "--name", "app", "-o", "json", "--wait"]).await;
    let key = created.json();
    let (key_id, managed) = (key["id"].as_str().unwrap().to_owned(), key["secret"].as_str().unwrap().to_owned());
    cli_output.push(created.stderr);

    let mut error_bodies = Vec::new();
    let calls: &[(&str, Option<&str>, u16)] = &[
        ("/p/anthropic/v1/messages", Some(&managed), 200),
        ("/p/anthropic/v1/messages", Some(ADMIN_KEY), 200),
        ("/p/openai/v1/chat/completions", Some(&managed), 500),
        ("/p/openrouter/v1/chat/completions", Some(&managed), 502),
        ("/p/anthropic/v1/messages", None, 401),
        ("/p/anthropic/v1/messages", Some(PRESENTED_WRONG), 401),
        ("/p/anthropic/v1/messages", Some(NODE_TOKEN), 401),
        ("/p/nope/v1/x", Some(&managed), 404),
    ];
    let send = |path: &str, token: Option<&str>| {
        let mut request = client().post(dp.url(path)).header("x-api-key", "placeholder").body("{}");
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    for (path, token, status) in calls {
        let response = send(path, *token).await.unwrap();
        let got = response.status().as_u16();
        let body = response.text().await.unwrap();
        assert_eq!(got, *status, "{path}: {body}");
        if got >= 400 {
            error_bodies.push(body);
        }
    }
    let seen = upstream.received_requests().await.unwrap();
    assert!(seen.iter().any(|r| r.headers["x-api-key"] == ANTHROPIC_SECRET), "the credential is in use");

    // A revoked key is refused; admin errors are one line each.
    let revoked = cp.cli(&["keys", "revoke", &key_id, "--wait"]).await;
    revoked.ok();
    cli_output.push(revoked.stderr);
    let response = send("/p/anthropic/v1/messages", Some(&managed)).await.unwrap();
    assert_eq!(response.status(), 401);
    error_bodies.push(response.text().await.unwrap());
    let wrong_admin = cp.cli_with(&["keys", "list"], &[("AURORA_MASTER_KEY", PRESENTED_WRONG)], None).await;
    cli_output.push(wrong_admin.error_line().to_owned());
    let missing = cp.cli(&["keys", "get", "00000000-0000-0000-0000-000000000000"]).await;
    cli_output.push(missing.error_line().to_owned());

    // Stop the control plane too, so its shutdown path is covered.
    cp.process.signal("TERM");
    assert_eq!(cp.process.wait_exit().await, Some(0));
    // Every request's access-log line has reached the test (through a pipe and a reader thread)
    // before the logs are searched.
    let access_lines = || dp.process.events().into_iter().filter(|e| e["target"] == "aurora::access").count();
    wait::until("every request's access-log line", || (access_lines() > calls.len()).then_some(())).await;

    let secrets =
        [ADMIN_KEY, managed.as_str(), ANTHROPIC_SECRET, OPENAI_SECRET, OPENROUTER_SECRET, NODE_TOKEN, PRESENTED_WRONG];
    let places = [("control-plane log", cp.process.logs()), ("data-plane log", dp.process.logs())]
        .into_iter()
        .chain(error_bodies.into_iter().map(|body| ("error body", body)))
        .chain(cli_output.into_iter().map(|line| ("CLI error output", line)));
    for (place, text) in places {
        for secret in secrets {
            assert!(!text.contains(secret), "a secret ({}...) reached the {place}:\n{text}", &secret[..8]);
        }
    }
    // The logs checked are the real thing: debug level, every request, every mutation.
    assert_eq!(access_lines(), calls.len() + 1);
    assert!(dp.process.logs().contains(&key_id), "keys are identified by id in the access log");
    assert!(cp.process.logs().contains("\"level\":\"DEBUG\""));
}

/// Secrets come from a variable or from the file `NAME_FILE` names (a mounted Kubernetes
/// Secret), never from argv: nothing secret is in any process's command line.
#[tokio::test]
async fn secrets_come_from_files_and_never_from_argv() {
    use crate::support::controlplane::run_cli;
    use crate::support::process::AuroraProcess;

    let upstream = MockServer::start().await;
    Mock::given(any()).respond_with(ResponseTemplate::new(200).set_body_string("{}")).mount(&upstream).await;
    let secrets = tempfile::tempdir().unwrap();
    let master_file = secrets.path().join("master-key");
    let credential_file = secrets.path().join("anthropic");
    std::fs::write(&master_file, format!("{ADMIN_KEY}\n")).unwrap();
    std::fs::write(&credential_file, ANTHROPIC_SECRET).unwrap();
    let base_url = format!("{}/anthropic/v1", upstream.uri());
    let dir = tempfile::tempdir().unwrap();
    let cp = TestControlplane::start_in(
        dir.path(),
        &[
            ("AURORA_MASTER_KEY_FILE", master_file.to_str().unwrap()),
            ("ANTHROPIC_API_KEY_FILE", credential_file.to_str().unwrap()),
            ("ANTHROPIC_BASE_URL", base_url.as_str()),
        ],
    )
    .await;
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", cp.process.pid())).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline);
    assert!(!cmdline.contains(ADMIN_KEY) && !cmdline.contains(ANTHROPIC_SECRET), "{cmdline}");

    // The CLI reads its master key from a file too.
    let env = [("AURORA_MASTER_KEY_FILE", master_file.to_str().unwrap())];
    let settings = cp.cli_with(&["settings", "get", "-o", "json"], &env, None).await.json();
    assert!(settings.is_object(), "{settings}");
    let dp = TestDataplane::subscribed(&cp.url(), "dp-files", &[]).await;
    dp.wait_ready().await;
    assert_eq!(dp.call(ADMIN_KEY).await, 200);
    let seen = upstream.received_requests().await.unwrap();
    assert_eq!(seen[0].headers["x-api-key"], ANTHROPIC_SECRET, "the credential from the file is the one sent");

    // Both forms at once is ambiguous: refused at startup, naming both.
    let mut both = AuroraProcess::spawn(
        &["controlplane"],
        &[
            ("AURORA_GRPC_LISTEN_ADDR", "127.0.0.1:0"),
            ("AURORA_NODE_TOKEN", NODE_TOKEN),
            ("AURORA_NODE_TOKEN_FILE", master_file.to_str().unwrap()),
        ],
    );
    assert_ne!(both.wait_exit().await, Some(0));
    // The output reader may still be draining the pipe when the process has exited.
    let refusal = "both AURORA_NODE_TOKEN and AURORA_NODE_TOKEN_FILE are set";
    crate::support::wait::until(&format!("{refusal:?} in the logs"), || both.logs().contains(refusal).then_some(()))
        .await;

    // And no flag takes a secret.
    for args in [
        vec!["controlplane", "--master-key=x"],
        vec!["controlplane", "--node-token=x"],
        vec!["dataplane", "--anthropic-api-key=x"],
        vec!["keys", "list", "--token=x"],
    ] {
        let out = run_cli(&args, &[], None).await;
        assert_eq!(out.code, Some(2), "{args:?} must be refused: {out:?}");
    }
}
