//! What a hostile client, data plane or careless operator sends, against a real control plane
//! and the real CLI: far-future expiries, text that would rewrite a terminal or forge a log
//! line, oversized fields, secrets in base URLs and base URLs a parser would rewrite.

use aurora_proto::v1::{Hello, Nack, SubscribeRequest, SubscribeResponse, subscribe_request};
use tokio::sync::mpsc;
use tonic::Streaming;

use crate::support::controlplane::{ADMIN_KEY, NODE_TOKEN, TestControlplane, run_cli};
use crate::support::wait;

/// A hand-driven replica that says Hello and then only what a test makes it say.
struct Replica {
    outbound: mpsc::Sender<SubscribeRequest>,
    _inbound: Streaming<SubscribeResponse>,
}

async fn subscribe(cp: &TestControlplane, node_id: &str, version: &str) -> Result<Replica, tonic::Status> {
    let hello = Hello { node_id: node_id.into(), version: version.into(), ..Hello::default() };
    let (outbound, mut inbound) = crate::support::config_stream::subscribe(cp, hello).await?;
    // The first message (the snapshot) proves the stream was accepted, not just opened.
    inbound.message().await?;
    Ok(Replica { outbound, _inbound: inbound })
}

/// No raw ESC, other control character (but the line ends), bidi override or separator.
fn assert_printable(what: &str, text: &str) {
    let unsafe_char = text.replace('\n', "").chars().find(|&c| aurora_core::text::is_unsafe_char(c));
    assert_eq!(unsafe_char, None, "{what} holds a raw unsafe character:\n{text:?}");
}

#[tokio::test]
async fn far_future_expiries_are_refused_before_any_key_is_created() {
    let cp = TestControlplane::start(&[]).await;
    for expiry in [
        ["--expires-in", "20000y"],
        ["--expires-in", "18446744073709551615s"],
        ["--expires-at", "10000-01-01T00:00:00Z"],
    ] {
        let refused = cp.cli(&["keys", "create", "--name", "far", expiry[0], expiry[1]]).await;
        assert_eq!(refused.code, Some(2), "a usage error, not a panic (101): {refused:?}");
        assert!(!refused.stderr.contains("panicked"), "{refused:?}");
    }
    let refused = cp.cli(&["keys", "create", "--name", "far", "--expires-in", "20000y"]).await;
    assert!(refused.stderr.contains("9999-12-31T23:59:59Z"), "the error names the limit: {refused:?}");
    assert_eq!(cp.cli(&["keys", "list", "-o", "json"]).await.json()["keys"], serde_json::json!([]));

    // The latest expiry allowed is created, printed (secret included) and listed.
    let latest = cp.cli(&["keys", "create", "--name", "latest", "--expires-at", "9999-12-31T23:59:59Z"]).await;
    assert!(latest.ok().contains("secret: aur_") && latest.ok().contains("9999-12-31T23:59:59Z"), "{latest:?}");
    let table = cp.cli(&["keys", "list"]).await.ok().to_owned();
    assert!(table.contains("9999-12-31T23:59:59Z"), "{table}");
}

#[tokio::test]
async fn names_and_descriptions_cannot_carry_terminal_controls() {
    let cp = TestControlplane::start(&[]).await;
    for (flag, value) in [
        ("--name", "invoice\u{202e}fdp.exe"),
        ("--name", "line\u{2028}break"),
        ("--description", "\u{1b}[2J\u{1b}]0;pwned\u{7}"),
    ] {
        let mut args = vec!["keys", "create", flag, value];
        if flag != "--name" {
            args.extend(["--name", "k"]);
        }
        let refused = cp.cli(&args).await;
        let line = refused.error_line();
        assert!(line.starts_with("error: INVALID_ARGUMENT: "), "{refused:?}");
        assert_printable("the error", line);
    }
    let huge = "k".repeat(100 * 1024);
    let missing = cp.cli(&["keys", "get", &huge]).await;
    let line = missing.error_line();
    assert!(line.starts_with("error: INVALID_ARGUMENT: id: \"kkkk") && line.len() < 200, "{line}");
}

/// Over the config stream (node token required) a replica's text reaches the fleet listing and
/// the log only bounded and escaped; `aurora dataplanes` shows it escaped and follows pages.
#[tokio::test]
async fn data_plane_text_is_bounded_escaped_and_paged() {
    let cp = TestControlplane::start(&[]).await;
    for (node_id, version) in [("dp\n2026-01-01T00:00:00Z INFO forged", "1"), ("dp-x", "1.0\u{1b}[2J")] {
        let refused = subscribe(&cp, node_id, version).await.err().expect("refused");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    }
    let long = subscribe(&cp, "dp-x", &"v".repeat(200)).await.err().expect("refused");
    assert!(long.message().starts_with("version: must be 0 to 128 bytes"), "{long:?}");
    // Far past any field's bound, the message itself is over the config stream's 64 KiB limit.
    let huge = subscribe(&cp, "dp-x", &"v".repeat(3 << 20)).await.err().expect("refused");
    assert_eq!(huge.code(), tonic::Code::OutOfRange, "{huge:?}");

    let mut replicas = Vec::new();
    for node_id in ["dp-c", "dp-a", "dp-b"] {
        replicas.push(subscribe(&cp, node_id, "1.0").await.unwrap());
    }
    // Under the config stream's 64 KiB message limit (a larger Nack fails the stream), far over
    // the 1024 bytes a rejection reason is kept to.
    let error = format!("bad\n\u{1b}[31mred\u{202e}{}", "e".repeat(32 << 10));
    let nack = Nack { revision: 1, error, resync: false };
    replicas[0]
        .outbound
        .send(SubscribeRequest { message: Some(subscribe_request::Message::Nack(nack)) })
        .await
        .unwrap();

    let listed = wait::until_async("the rejection to be listed", || async {
        let out = cp.cli(&["dataplanes", "--page-size", "1", "-o", "json"]).await.json();
        let rejected = out["data_planes"].as_array()?.iter().any(|dp| dp["rejected_reason"].is_string());
        rejected.then_some(out)
    })
    .await;
    let nodes: Vec<&str> =
        listed["data_planes"].as_array().unwrap().iter().map(|dp| dp["node_id"].as_str().unwrap()).collect();
    assert_eq!(nodes, ["dp-a", "dp-b", "dp-c"], "every page is followed");
    let reason = listed["data_planes"][2]["rejected_reason"].as_str().unwrap();
    assert!(reason.starts_with("bad\\n\\u{1b}[31mred\\u{202e}eee") && reason.len() < 1100, "{}", &reason[..60]);

    let table = cp.cli(&["dataplanes", "--page-size", "2"]).await.ok().to_owned();
    assert_printable("the dataplanes table", &table);
    assert_eq!(table.lines().count(), 5, "a header, three replicas and the summary:\n{table}");
    assert!(table.contains("REJECTED") && table.contains("3 data plane(s)"), "{table}");

    // The JSON format would escape a raw ESC itself; the pretty one prints field values as they
    // are. So check the decoded values, which are what the pretty format would print.
    let events = cp.process.events();
    let rejected =
        events.iter().find(|e| e["message"] == "data plane rejected a revision; it keeps its last good state");
    let logged = rejected.and_then(|e| e["error"].as_str()).expect("the rejection is logged");
    assert!(logged.starts_with("bad\\n\\u{1b}[31mred") && logged.len() < 1100, "{}", &logged[..60]);
    for event in &events {
        for (field, value) in event.as_object().unwrap() {
            let unsafe_char = aurora_core::text::first_unsafe_char(value.as_str().unwrap_or_default());
            assert_eq!(unsafe_char, None, "log field {field} holds a raw unsafe character: {value}");
        }
    }
    drop(replicas);
}

#[tokio::test]
async fn base_urls_are_stored_as_given_or_refused_and_errors_hide_passwords() {
    let cp = TestControlplane::start(&[]).await;
    for url in ["ftp://admin:S3cretPw@x.com/v1", "https://admin:S3cretPw@[x/v1"] {
        let refused = cp.cli(&["providers", "set", "openai", "--base-url", url]).await;
        let line = refused.error_line();
        assert!(line.starts_with("error: INVALID_ARGUMENT: base_url: ") && !line.contains("S3cretPw"), "{line}");
    }
    let rewritten = cp.cli(&["providers", "set", "openai", "--base-url", "http://0x7f000001"]).await;
    assert!(rewritten.error_line().contains("write it as \"http://127.0.0.1\""), "{rewritten:?}");
    let dots = cp.cli(&["providers", "set", "openai", "--base-url", "https://api.x.com/v1/../../admin"]).await;
    assert!(dots.error_line().contains("canonical"), "{dots:?}");

    let metadata =
        cp.cli(&["providers", "set", "openai", "--base-url", "http://169.254.169.254/latest", "-o", "json"]).await;
    assert_eq!(metadata.json()["base_url"], "http://169.254.169.254/latest");
    assert!(metadata.stderr.starts_with("warning: ") && metadata.stderr.contains("link-local"), "{metadata:?}");
    let vllm = cp.cli(&["providers", "set", "vllm", "--base-url", "http://127.0.0.1:8000/v1", "-o", "json"]).await;
    assert_eq!((vllm.json()["base_url"].as_str(), vllm.stderr.as_str()), (Some("http://127.0.0.1:8000/v1"), ""));
}

/// The control plane's startup error names the variable, never its value.
#[tokio::test]
async fn startup_errors_never_repeat_a_password_or_a_credential() {
    for (variable, value) in [
        ("OPENAI_BASE_URL", "ftp://admin:S3cretPw@x.com/v1"),
        ("OPENAI_BASE_URL", "http://admin:S3cretPw@[not-a-host/v1"),
        ("ZAI_API_KEY", "sk-S3cretPw\u{7f}"),
    ] {
        let env = [
            ("AURORA_MASTER_KEY", ADMIN_KEY),
            ("AURORA_NODE_TOKEN", NODE_TOKEN),
            ("AURORA_GRPC_LISTEN_ADDR", "127.0.0.1:0"),
            ("AURORA_METRICS_LISTEN_ADDR", "127.0.0.1:0"),
            (variable, value),
        ];
        let failed = run_cli(&["controlplane"], &env, None).await;
        assert_ne!(failed.code, Some(0), "{failed:?}");
        assert!(failed.stderr.contains(variable) && !failed.stderr.contains("S3cretPw"), "{failed:?}");
    }
    // Nor does the CLI repeat the user info of the control plane's URL.
    for url in ["http://admin:S3cretPw@127.0.0.1:1", "admin:S3cretPw@[bad"] {
        let failed =
            run_cli(&["keys", "list", "--control-plane", url], &[("AURORA_MASTER_KEY", ADMIN_KEY)], None).await;
        let line = failed.error_line();
        assert!(line.contains("***@") && !line.contains("S3cretPw"), "{line}");
    }
}
