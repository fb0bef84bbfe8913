//! The bounds on what the admin API and the config stream accept, through a real server: far
//! expiries, huge or unprintable text, secrets in base URLs, rewritten URLs, and paging the
//! fleet.

#![allow(clippy::unwrap_used)]

use aurora_proto::v1 as pb;
use aurora_proto::v1::config_service_client::ConfigServiceClient;
use aurora_proto::v1::{Hello, Nack, SubscribeRequest, subscribe_request};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use super::tests::{Running, admin, assert_status, create};

/// Opens a config stream as a replica and sends `hello`; the stream stays open while the
/// returned sender lives.
async fn subscribe(running: &Running, hello: Hello) -> Result<mpsc::Sender<SubscribeRequest>, tonic::Status> {
    let mut client =
        ConfigServiceClient::with_interceptor(running.channel.clone(), |mut request: tonic::Request<()>| {
            request.metadata_mut().insert("authorization", "Bearer node-token".parse().unwrap());
            Ok(request)
        });
    let (outbound, receiver) = mpsc::channel(4);
    outbound.send(SubscribeRequest { message: Some(subscribe_request::Message::Hello(hello)) }).await.unwrap();
    let mut inbound = client.subscribe(ReceiverStream::new(receiver)).await?.into_inner();
    // Drain what the control plane sends, so it never waits on this replica.
    tokio::spawn(async move { while let Ok(Some(_)) = inbound.message().await {} });
    Ok(outbound)
}

fn hello(node_id: &str, version: &str) -> Hello {
    Hello { node_id: node_id.into(), version: version.into(), ..Hello::default() }
}

async fn list(admin: &mut super::tests::Client, page_size: u32, page_token: String) -> pb::ListDataPlanesResponse {
    admin.list_data_planes(pb::ListDataPlanesRequest { page_size, page_token }).await.unwrap().into_inner()
}

/// Waits (with a deadline) until `n` replicas are registered.
async fn wait_for_replicas(admin: &mut super::tests::Client, n: usize) -> pb::ListDataPlanesResponse {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let fleet = list(admin, 1000, String::new()).await;
        if fleet.data_planes.len() == n {
            return fleet;
        }
        assert!(tokio::time::Instant::now() < deadline, "{} replicas, expected {n}", fleet.data_planes.len());
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn expiries_beyond_year_9999_are_refused_naming_the_range() {
    let (_running, mut admin) = admin().await;
    let year_10000 = prost_types::Timestamp { seconds: 253_402_300_800, nanos: 0 };
    let far = pb::CreateKeyRequest { expires_at: Some(year_10000), ..create("far") };
    assert_status(
        admin.create_key(far).await,
        Code::InvalidArgument,
        "expires_at: must be in the future and no later than 9999-12-31T23:59:59Z",
    );
    let key = admin.create_key(create("near")).await.unwrap().into_inner().key.unwrap();
    let update = pb::UpdateKeyRequest {
        id: key.id,
        expiry: Some(pb::update_key_request::Expiry::ExpiresAt(prost_types::Timestamp { seconds: i64::MAX, nanos: 0 })),
        ..Default::default()
    };
    assert_status(admin.update_key(update).await, Code::InvalidArgument, "expires_at:");
    // Nothing far-future was stored: every key still lists.
    let keys = admin.list_keys(pb::ListKeysRequest::default()).await.unwrap().into_inner().keys;
    assert!(keys.iter().all(|k| k.expires_at.is_none()), "{keys:?}");
}

#[tokio::test]
async fn a_huge_id_is_a_plain_invalid_argument_with_a_short_message() {
    let (_running, mut admin) = admin().await;
    let huge = "k".repeat(100 * 1024);
    for result in [
        admin.get_key(pb::GetKeyRequest { id: huge.clone() }).await.map(|_| ()),
        admin.delete_key(pb::DeleteKeyRequest { id: huge.clone() }).await.map(|_| ()),
        admin
            .create_key(pb::CreateKeyRequest { allowed_providers: vec![huge.clone()], ..create("p") })
            .await
            .map(|_| ()),
    ] {
        let status = result.expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().len() < 200, "{}", status.message().len());
    }
}

#[tokio::test]
async fn names_and_descriptions_refuse_terminal_tricks() {
    let (_running, mut admin) = admin().await;
    assert_status(
        admin.create_key(create("invoice\u{202e}fdp.exe")).await,
        Code::InvalidArgument,
        "name: must not contain",
    );
    assert_status(admin.create_key(create("a\u{2028}b")).await, Code::InvalidArgument, "U+2028");
    let escape = pb::CreateKeyRequest { description: "\u{1b}[2J\u{1b}]0;pwned\u{7}".into(), ..create("d") };
    assert_status(admin.create_key(escape).await, Code::InvalidArgument, "description: must not contain");
}

#[tokio::test]
async fn base_url_errors_never_contain_a_password_and_nothing_is_rewritten() {
    let (_running, mut admin) = admin().await;
    let upsert = |url: &str| pb::UpsertProviderRequest {
        name: "openai".into(),
        base_url: Some(url.into()),
        ..Default::default()
    };
    for url in ["ftp://admin:S3cretPw@x.com/v1", "https://admin:S3cretPw@[x/v1", "https://admin:S3cretPw@x.com/v1"] {
        let status = admin.upsert_provider(upsert(url)).await.expect_err(url);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().starts_with("base_url: ") && !status.message().contains("S3cretPw"), "{status:?}");
    }
    assert_status(
        admin.upsert_provider(upsert("http://0x7f000001")).await,
        Code::InvalidArgument,
        "write it as \"http://127.0.0.1\"",
    );
    assert_status(
        admin.upsert_provider(upsert("https://x.com/v1/../../admin")).await,
        Code::InvalidArgument,
        "canonical",
    );
    let providers = admin.list_providers(pb::ListProvidersRequest {}).await.unwrap().into_inner().providers;
    assert!(
        providers.iter().all(|p| !p.base_url.contains("admin") && !p.base_url.contains("127.0.0.1")),
        "{providers:?}"
    );
}

#[tokio::test]
async fn local_upstreams_are_accepted_with_a_warning_except_for_vllm() {
    let (_running, mut admin) = admin().await;
    let upsert = |name: &str, url: &str| pb::UpsertProviderRequest {
        name: name.into(),
        base_url: Some(url.into()),
        ..Default::default()
    };
    let metadata = admin.upsert_provider(upsert("openai", "http://169.254.169.254/latest")).await.unwrap().into_inner();
    assert_eq!(metadata.provider.unwrap().base_url, "http://169.254.169.254/latest");
    assert!(metadata.warnings.iter().any(|w| w.contains("link-local")), "{:?}", metadata.warnings);
    let docker = admin.upsert_provider(upsert("anthropic", "http://[::1]:2375")).await.unwrap().into_inner();
    assert!(docker.warnings.iter().any(|w| w.contains("loopback")), "{:?}", docker.warnings);
    let vllm = admin.upsert_provider(upsert("vllm", "http://127.0.0.1:8000/v1")).await.unwrap().into_inner();
    assert!(vllm.warnings.is_empty(), "{:?}", vllm.warnings);
    let public = admin.upsert_provider(upsert("openai", "https://api.openai.com/v1")).await.unwrap().into_inner();
    assert!(public.warnings.is_empty(), "{:?}", public.warnings);
}

#[tokio::test]
async fn hello_fields_are_bounded_and_printable() {
    let (running, mut admin) = admin().await;
    for (bad, field) in [
        (hello("dp-0", &"v".repeat(200)), "version: must be 0 to 128 bytes"),
        (hello(&"n".repeat(300), "1"), "node_id: must be 1 to 253 bytes"),
        (hello("dp\n2026-01-01T00:00:00Z INFO forged line", "1"), "node_id: must not contain"),
        (hello("dp-1", "1.0\u{1b}[2J"), "version: must not contain"),
    ] {
        let status = subscribe(&running, bad).await.expect_err(field);
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().starts_with(field), "{status:?}");
    }
    // Far past the field's bound, the Hello is over the config stream's 64 KiB message limit.
    let status = subscribe(&running, hello("dp-0", &"v".repeat(3 << 20))).await.expect_err("a 3 MB version");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(list(&mut admin, 0, String::new()).await.data_planes.is_empty(), "no refused replica is registered");
}

#[tokio::test]
async fn nack_errors_are_kept_escaped_and_truncated() {
    let (running, mut admin) = admin().await;
    let replica = subscribe(&running, hello("dp-0", "1.0")).await.unwrap();
    wait_for_replicas(&mut admin, 1).await;
    // Under the stream's 64 KiB message limit, far over the 1024 bytes a reason is kept to.
    let error = format!("bad\n\u{1b}[31m{}", "e".repeat(60 << 10));
    let nack = Nack { revision: 1, error, resync: false };
    replica.send(SubscribeRequest { message: Some(subscribe_request::Message::Nack(nack)) }).await.unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let reason = loop {
        let reason = list(&mut admin, 0, String::new()).await.data_planes[0].rejected_reason.clone();
        if !reason.is_empty() {
            break reason;
        }
        assert!(tokio::time::Instant::now() < deadline, "the Nack was not recorded");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert!(reason.starts_with("bad\\n\\u{1b}[31meee"), "{}", &reason[..40]);
    assert!(reason.len() < 1100 && reason.ends_with("[truncated from 61449 bytes]"), "{}", reason.len());
}

#[tokio::test]
async fn data_planes_are_listed_page_by_page() {
    let (running, mut admin) = admin().await;
    let mut replicas = Vec::new();
    for node_id in ["dp-c", "dp-a", "dp-b", "dp-a"] {
        replicas.push(subscribe(&running, hello(node_id, "1.0")).await.unwrap());
    }
    wait_for_replicas(&mut admin, 4).await;

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = list(&mut admin, 3, token).await;
        assert!(page.data_planes.len() <= 3);
        seen.extend(page.data_planes.into_iter().map(|dp| dp.node_id));
        pages += 1;
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!((pages, seen), (2, vec!["dp-a".to_owned(), "dp-a".into(), "dp-b".into(), "dp-c".into()]));
    assert_status(
        admin.list_data_planes(pb::ListDataPlanesRequest { page_size: 1001, ..Default::default() }).await,
        Code::InvalidArgument,
        "page_size:",
    );
    assert_status(
        admin.list_data_planes(pb::ListDataPlanesRequest { page_token: "zz".into(), ..Default::default() }).await,
        Code::InvalidArgument,
        "page_token:",
    );
    drop(replicas);
}
