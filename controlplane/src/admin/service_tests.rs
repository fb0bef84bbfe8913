//! Admin API tests: the real server on 127.0.0.1:0, called through a real tonic channel.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime};

use aurora_core::{KeyHash, ProductVars};
use aurora_proto::v1 as pb;
use aurora_proto::v1::admin_service_client::AdminServiceClient;
use tonic::Code;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::Config;

pub(super) const MASTER_KEY: &str = "test-master-key-of-at-least-32-characters";

pub(super) struct Running {
    pub(super) channel: Channel,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

pub(super) async fn serve(master_key: Option<&str>) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let mut config =
        Config::new("127.0.0.1:0".parse().unwrap(), format!("sqlite://{}/cp.db", dir.path().display()), "node-token");
    config.product = ProductVars { master_key: master_key.map(Into::into), ..ProductVars::default() };
    let control_plane = crate::start(config).await.unwrap();
    let url = format!("http://{}", control_plane.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(control_plane.serve(async move {
        let _ = stopped.await;
    }));
    let channel = tonic::transport::Endpoint::from_shared(url).unwrap().connect().await.unwrap();
    Running { channel, _stop: stop, _dir: dir }
}

#[derive(Clone)]
pub(super) struct Bearer(Option<&'static str>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = self.0 {
            request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        Ok(request)
    }
}

pub(super) type Client = AdminServiceClient<InterceptedService<Channel, Bearer>>;

fn client(running: &Running, token: Option<&'static str>) -> Client {
    AdminServiceClient::with_interceptor(running.channel.clone(), Bearer(token))
}

pub(super) async fn admin() -> (Running, Client) {
    let running = serve(Some(MASTER_KEY)).await;
    let client = client(&running, Some(MASTER_KEY));
    (running, client)
}

pub(super) fn create(name: &str) -> pb::CreateKeyRequest {
    pb::CreateKeyRequest { name: name.into(), ..Default::default() }
}

/// Asserts the call failed with `code` and a message containing `needle`.
pub(super) fn assert_status<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: Code, needle: &str) {
    let status = result.expect_err("the call should fail");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(status.message().contains(needle), "{:?} does not mention {needle:?}", status.message());
}

#[tokio::test]
async fn every_call_needs_the_master_key() {
    let running = serve(Some(MASTER_KEY)).await;
    assert_status(
        client(&running, None).list_keys(pb::ListKeysRequest::default()).await,
        Code::Unauthenticated,
        "authorization",
    );
    assert_status(
        client(&running, Some("wrong")).get_settings(pb::GetSettingsRequest {}).await,
        Code::Unauthenticated,
        "invalid",
    );
    assert_status(client(&running, Some("wrong")).create_key(create("x")).await, Code::Unauthenticated, "invalid");
    client(&running, Some(MASTER_KEY)).get_settings(pb::GetSettingsRequest {}).await.unwrap();
}

#[tokio::test]
async fn without_a_master_key_the_admin_api_is_closed() {
    let running = serve(None).await;
    for token in [None, Some(""), Some("anything")] {
        let result = client(&running, token).list_providers(pb::ListProvidersRequest {}).await;
        assert_status(result, Code::Unauthenticated, "AURORA_MASTER_KEY");
    }
}

#[tokio::test]
async fn key_lifecycle_returns_a_revision_for_every_mutation() {
    let (_running, mut admin) = admin().await;
    let expires = SystemTime::now() + Duration::from_secs(86_400);
    let created = admin
        .create_key(pb::CreateKeyRequest {
            name: "ci".into(),
            description: "pipeline".into(),
            expires_at: Some(expires.into()),
            allowed_providers: vec!["anthropic".into()],
            disabled: false,
            allowed_endpoints: vec!["anthropic POST /v1/messages".into()],
            limits: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(created.secret.starts_with("aur_") && created.secret.len() >= 47, "{}", created.secret.len());
    let key = created.key.unwrap();
    assert_eq!(key.redacted, format!("aur_…{}", &created.secret[created.secret.len() - 4..]));
    assert_eq!(key.allowed_providers, ["anthropic"]);
    assert_eq!(key.allowed_endpoints, ["anthropic POST /messages"], "canonical form");
    assert!(key.enabled && key.revoked_at.is_none());

    let mut fetched = admin.get_key(pb::GetKeyRequest { id: key.id.clone() }).await.unwrap().into_inner();
    // GetKey alone adds the limits in force (none here) and what is left of them.
    assert_eq!(fetched.limit_status.take().map(|s| s.source), Some("none".to_owned()));
    assert_eq!(fetched, key);

    let updated = admin
        .update_key(pb::UpdateKeyRequest {
            id: key.id.clone(),
            name: Some("ci-2".into()),
            enabled: Some(false),
            expiry: Some(pb::update_key_request::Expiry::ClearExpiry(true)),
            allowed_providers: Some(pb::ProviderList { providers: vec![] }),
            allowed_endpoints: Some(pb::EndpointList { rules: vec![] }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.revision, created.revision + 1);
    let updated_key = updated.key.unwrap();
    assert_eq!((updated_key.name.as_str(), updated_key.enabled), ("ci-2", false));
    assert!(updated_key.expires_at.is_none() && updated_key.allowed_providers.is_empty());
    assert!(updated_key.allowed_endpoints.is_empty());

    let revoked = admin.revoke_key(pb::RevokeKeyRequest { id: key.id.clone() }).await.unwrap().into_inner();
    assert_eq!(revoked.revision, updated.revision + 1);
    assert!(revoked.key.unwrap().revoked_at.is_some());

    let deleted = admin.delete_key(pb::DeleteKeyRequest { id: key.id.clone() }).await.unwrap().into_inner();
    assert_eq!(deleted.revision, revoked.revision + 1);
    assert_status(admin.get_key(pb::GetKeyRequest { id: key.id }).await, Code::NotFound, "not found");
}

#[tokio::test]
async fn status_codes_are_precise() {
    let (_running, mut admin) = admin().await;
    let key = admin.create_key(create("taken")).await.unwrap().into_inner().key.unwrap();

    // INVALID_ARGUMENT names the field.
    assert_status(admin.create_key(create("")).await, Code::InvalidArgument, "name: must be 1 to 128 characters");
    let past = pb::CreateKeyRequest {
        expires_at: Some((SystemTime::now() - Duration::from_secs(5)).into()),
        ..create("late")
    };
    assert_status(admin.create_key(past).await, Code::InvalidArgument, "expires_at: must be in the future");
    let unknown = pb::CreateKeyRequest { allowed_providers: vec!["gemini".into()], ..create("g") };
    assert_status(admin.create_key(unknown).await, Code::InvalidArgument, "known providers: openai, anthropic");
    let bad_rule = pb::CreateKeyRequest { allowed_endpoints: vec!["anthropic POST messages".into()], ..create("r") };
    assert_status(
        admin.create_key(bad_rule).await,
        Code::InvalidArgument,
        "allowed_endpoints: \"anthropic POST messages\"",
    );
    assert_status(admin.get_key(pb::GetKeyRequest { id: "nope".into() }).await, Code::InvalidArgument, "id:");
    let bad_url =
        pb::UpsertProviderRequest { name: "vllm".into(), base_url: Some("gpu:8000".into()), ..Default::default() };
    assert_status(admin.upsert_provider(bad_url).await, Code::InvalidArgument, "base_url:");
    let bad_provider = pb::UpsertProviderRequest { name: "gemini".into(), ..Default::default() };
    assert_status(admin.upsert_provider(bad_provider).await, Code::InvalidArgument, "name: unknown provider");
    let too_big = pb::ListKeysRequest { page_size: 1001, ..Default::default() };
    assert_status(admin.list_keys(too_big).await, Code::InvalidArgument, "page_size:");
    let bad_token = pb::ListKeysRequest { page_token: "xyz".into(), ..Default::default() };
    assert_status(admin.list_keys(bad_token).await, Code::InvalidArgument, "page_token:");

    // NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION.
    let missing = uuid::Uuid::now_v7().to_string();
    assert_status(admin.get_key(pb::GetKeyRequest { id: missing.clone() }).await, Code::NotFound, &missing);
    assert_status(admin.revoke_key(pb::RevokeKeyRequest { id: missing }).await, Code::NotFound, "not found");
    admin.delete_provider(pb::DeleteProviderRequest { name: "zai".into() }).await.unwrap();
    assert_status(admin.delete_provider(pb::DeleteProviderRequest { name: "zai".into() }).await, Code::NotFound, "zai");
    assert_status(admin.create_key(create("taken")).await, Code::AlreadyExists, "taken");
    admin.revoke_key(pb::RevokeKeyRequest { id: key.id.clone() }).await.unwrap();
    let enable = pb::UpdateKeyRequest { id: key.id.clone(), enabled: Some(true), ..Default::default() };
    assert_status(admin.update_key(enable).await, Code::FailedPrecondition, "revoked");
    assert_status(
        admin.revoke_key(pb::RevokeKeyRequest { id: key.id }).await,
        Code::FailedPrecondition,
        "already revoked",
    );

    let fleet = admin.list_data_planes(pb::ListDataPlanesRequest::default()).await.unwrap().into_inner();
    assert!(fleet.data_planes.is_empty());
    let head = fleet.head_revision;
    let beyond = pb::WaitForRevisionRequest { revision: head + 1, timeout_ms: 0 };
    assert_status(admin.wait_for_revision(beyond).await, Code::InvalidArgument, "revision");
    let too_long = pb::WaitForRevisionRequest { revision: head, timeout_ms: 300_001 };
    assert_status(admin.wait_for_revision(too_long).await, Code::InvalidArgument, "timeout_ms");
    let waited = admin.wait_for_revision(pb::WaitForRevisionRequest { revision: head, timeout_ms: 0 }).await.unwrap();
    assert!(waited.into_inner().complete, "no replicas: nothing to wait for");
}

#[tokio::test]
async fn list_keys_paginates() {
    let (_running, mut admin) = admin().await;
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(admin.create_key(create(&format!("k{i}"))).await.unwrap().into_inner().key.unwrap().id);
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = admin.list_keys(pb::ListKeysRequest { page_size: 2, page_token: token }).await.unwrap().into_inner();
        pages += 1;
        seen.extend(page.keys.into_iter().map(|k| k.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!((pages, seen), (3, created.clone()));
    let all = admin.list_keys(pb::ListKeysRequest::default()).await.unwrap().into_inner();
    assert_eq!(all.keys.len(), 5);
    assert!(all.next_page_token.is_empty());
}

#[tokio::test]
async fn provider_credentials_are_write_only() {
    let (_running, mut admin) = admin().await;
    let listed = admin.list_providers(pb::ListProvidersRequest {}).await.unwrap().into_inner();
    let names: Vec<_> = listed.providers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["openai", "anthropic", "openrouter", "zai", "vllm"], "bootstrap created every provider");

    let upserted = admin
        .upsert_provider(pb::UpsertProviderRequest {
            name: "vllm".into(),
            enabled: Some(false),
            base_url: Some("http://gpu:8000/v1/".into()),
            credential_change: Some(pb::upsert_provider_request::CredentialChange::Credential("vllm-secret".into())),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let provider = upserted.provider.unwrap();
    assert_eq!(provider.base_url, "http://gpu:8000/v1");
    assert!(provider.credential_set && !provider.enabled);
    assert_eq!(provider.credential_fingerprint, KeyHash::of("vllm-secret").fingerprint());
    let listed = admin.list_providers(pb::ListProvidersRequest {}).await.unwrap().into_inner();
    assert!(!format!("{listed:?}").contains("vllm-secret"));

    let cleared = admin
        .upsert_provider(pb::UpsertProviderRequest {
            name: "vllm".into(),
            credential_change: Some(pb::upsert_provider_request::CredentialChange::ClearCredential(true)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cleared.revision, upserted.revision + 1);
    let provider = cleared.provider.unwrap();
    assert!(!provider.credential_set && provider.credential_fingerprint.is_empty());
    assert_eq!(provider.base_url, "http://gpu:8000/v1", "unset fields are left alone");
}

fn headers(pairs: &[(&str, &str)]) -> Option<pb::HeaderList> {
    Some(pb::HeaderList {
        headers: pairs.iter().map(|(n, v)| pb::HeaderField { name: (*n).into(), value: (*v).into() }).collect(),
    })
}

#[tokio::test]
async fn default_headers_are_set_replaced_and_cleared_and_never_the_gateways_own() {
    let (_running, mut admin) = admin().await;
    let set =
        |list| pb::UpsertProviderRequest { name: "openrouter".into(), default_headers: list, ..Default::default() };

    let upserted = admin
        .upsert_provider(set(headers(&[("HTTP-Referer", "https://example.com"), ("X-Title", "Aurora")])))
        .await
        .unwrap()
        .into_inner();
    let shown: Vec<(String, String)> =
        upserted.provider.unwrap().default_headers.into_iter().map(|h| (h.name, h.value)).collect();
    assert_eq!(shown, [("http-referer".into(), "https://example.com".into()), ("x-title".into(), "Aurora".into())]);

    for (name, value) in [("Authorization", "Bearer sk-x"), ("Host", "evil.example"), ("Transfer-Encoding", "chunked")]
    {
        let status = admin.upsert_provider(set(headers(&[(name, value)]))).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{name}");
        assert!(status.message().starts_with("default_headers: header \""), "{}", status.message());
        assert!(status.message().contains("cannot be a default header"), "{}", status.message());
    }
    let bad_value = admin.upsert_provider(set(headers(&[("X-Title", "a\r\nb")]))).await.unwrap_err();
    assert_eq!(bad_value.code(), tonic::Code::InvalidArgument);

    // Absent: unchanged. Empty: cleared.
    let untouched = admin.upsert_provider(set(None)).await.unwrap().into_inner();
    assert_eq!(untouched.provider.unwrap().default_headers.len(), 2);
    let cleared = admin.upsert_provider(set(headers(&[]))).await.unwrap().into_inner();
    assert!(cleared.provider.unwrap().default_headers.is_empty());
}

#[tokio::test]
async fn client_certificates_are_write_only_and_checked() {
    let (_running, mut admin) = admin().await;
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["aurora-client".into()]).unwrap().self_signed(&key).unwrap();
    let other_key = rcgen::KeyPair::generate().unwrap();
    let with = |certificate_pem: String, private_key_pem: String| pb::UpsertProviderRequest {
        name: "vllm".into(),
        client_certificate_change: Some(pb::upsert_provider_request::ClientCertificateChange::ClientCertificate(
            pb::ClientCertificate { certificate_pem, private_key_pem },
        )),
        ..Default::default()
    };

    let upserted = admin.upsert_provider(with(cert.pem(), key.serialize_pem())).await.unwrap().into_inner();
    assert!(upserted.provider.unwrap().client_certificate_set);
    let listed = admin.list_providers(pb::ListProvidersRequest {}).await.unwrap().into_inner();
    let printed = format!("{listed:?}");
    assert!(!printed.contains("PRIVATE KEY") && !printed.contains("BEGIN CERTIFICATE"), "{printed}");

    let mismatch = admin.upsert_provider(with(cert.pem(), other_key.serialize_pem())).await.unwrap_err();
    assert_eq!(mismatch.code(), tonic::Code::InvalidArgument);
    assert!(mismatch.message().starts_with("client_certificate.private_key_pem: "), "{}", mismatch.message());
    assert!(!mismatch.message().contains("PRIVATE"), "never repeats the key");
    let not_pem = admin.upsert_provider(with("garbage".into(), key.serialize_pem())).await.unwrap_err();
    assert!(not_pem.message().starts_with("client_certificate.certificate_pem: "), "{}", not_pem.message());

    let cleared = admin
        .upsert_provider(pb::UpsertProviderRequest {
            name: "vllm".into(),
            client_certificate_change: Some(
                pb::upsert_provider_request::ClientCertificateChange::ClearClientCertificate(true),
            ),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!cleared.provider.unwrap().client_certificate_set);
}

#[tokio::test]
async fn settings_round_trip_with_revisions() {
    let (_running, mut admin) = admin().await;
    let settings = admin.get_settings(pb::GetSettingsRequest {}).await.unwrap().into_inner();
    assert!(settings.passthrough_enabled && settings.v1_alias_enabled);
    assert_eq!(settings.enabled_providers.len(), 5);
    let updated = admin
        .update_settings(pb::UpdateSettingsRequest { v1_alias_enabled: Some(false), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.revision, settings.revision + 1);
    let now = admin.get_settings(pb::GetSettingsRequest {}).await.unwrap().into_inner();
    assert_eq!(Some(&now), updated.settings.as_ref());
    assert!(now.passthrough_enabled && !now.v1_alias_enabled);
    assert_eq!(now.revision, updated.revision);
}
