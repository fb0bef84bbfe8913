//! `RotateKey` through the real server, and how a key's two secrets are shown.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime};

use aurora_core::KeyHash;
use aurora_proto::v1 as pb;
use pb::secret_state::State;
use tonic::Code;

use super::tests::{admin, assert_status, create};
use crate::admin::convert;
use crate::store::{KeyRecord, PreviousSecret};

fn rotate(id: &str, grace_seconds: u64) -> pb::RotateKeyRequest {
    pb::RotateKeyRequest { id: id.into(), grace_seconds }
}

#[tokio::test]
async fn rotate_key_issues_a_new_secret_once_and_shows_both_states() {
    let (_running, mut client) = admin().await;
    let created = client.create_key(create("ci")).await.unwrap().into_inner();
    let key = created.key.unwrap();
    let current = key.current_secret.clone().unwrap();
    assert_eq!((current.redacted.as_str(), current.state()), (key.redacted.as_str(), State::Active));
    assert!(key.previous_secret.is_none());

    let before = SystemTime::now();
    let rotated = client.rotate_key(rotate(&key.id, 86_400)).await.unwrap().into_inner();
    assert!(rotated.secret.starts_with("aur_") && rotated.secret != created.secret);
    assert_eq!(rotated.revision, created.revision + 1);
    let after = rotated.key.unwrap();
    assert_eq!((after.id.as_str(), after.name.as_str()), (key.id.as_str(), "ci"));
    assert_ne!(after.redacted, key.redacted);
    assert_eq!(after.current_secret.as_ref().unwrap().redacted, after.redacted);
    let previous = after.previous_secret.clone().unwrap();
    assert_eq!((previous.redacted.as_str(), previous.state()), (key.redacted.as_str(), State::Grace));
    let ends = SystemTime::try_from(previous.expires_at.unwrap()).unwrap();
    assert!(ends >= before + Duration::from_secs(86_400) && ends <= SystemTime::now() + Duration::from_secs(86_401));

    // GetKey and ListKeys show the same, and never a secret.
    let fetched = client.get_key(pb::GetKeyRequest { id: key.id.clone() }).await.unwrap().into_inner();
    // GetKey alone adds the live limit status (this key has no limits).
    assert_eq!(fetched.limit_status.as_ref().map(|status| status.source.as_str()), Some("none"));
    assert_eq!(pb::Key { limit_status: None, ..fetched }, after);
    let listed = client.list_keys(pb::ListKeysRequest::default()).await.unwrap().into_inner();
    assert_eq!(listed.keys, std::slice::from_ref(&after));
    let printed = format!("{listed:?}");
    for secret in [&created.secret, &rotated.secret] {
        assert!(!printed.contains(secret.as_str()) && !printed.contains(&KeyHash::of(secret).to_hex()));
    }

    // No grace: the previous secret is gone.
    let at_once = client.rotate_key(rotate(&key.id, 0)).await.unwrap().into_inner();
    assert!(at_once.key.unwrap().previous_secret.is_none());
}

#[tokio::test]
async fn rotate_key_refuses_precisely() {
    let (_running, mut client) = admin().await;
    let key = client.create_key(create("ci")).await.unwrap().into_inner().key.unwrap();
    assert_status(
        client.rotate_key(rotate(&key.id, 90 * 86_400 + 1)).await,
        Code::InvalidArgument,
        "grace_seconds: must be at most 90 days",
    );
    assert_status(client.rotate_key(rotate("nope", 0)).await, Code::InvalidArgument, "id:");
    assert_status(client.rotate_key(rotate(&uuid::Uuid::now_v7().to_string(), 0)).await, Code::NotFound, "not found");
    client.revoke_key(pb::RevokeKeyRequest { id: key.id.clone() }).await.unwrap();
    assert_status(client.rotate_key(rotate(&key.id, 60)).await, Code::FailedPrecondition, "cannot be rotated");
    // Exactly 90 days is allowed (on another key).
    let other = client.create_key(create("other")).await.unwrap().into_inner().key.unwrap();
    client.rotate_key(rotate(&other.id, 90 * 86_400)).await.unwrap();
}

#[test]
fn secret_states_follow_the_clock_and_the_key_expiry() {
    let at = |secs: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
    let record = KeyRecord {
        id: uuid::Uuid::now_v7(),
        name: "k".into(),
        description: String::new(),
        hash: KeyHash::of("new"),
        redacted: "aur_…new0".into(),
        enabled: true,
        expires_at: Some(at(2000)),
        allowed_providers: aurora_core::ProviderSet::empty(),
        allowed_endpoints: Vec::new(),
        created_at: at(0),
        updated_at: at(0),
        revoked_at: None,
        limits: None,
        previous: Some(PreviousSecret {
            hash: KeyHash::of("old"), redacted: "aur_…old0".into(), expires_at: at(1000)
        }),
    };
    let states = |now| {
        let key = convert::key_at(&record, at(now));
        (key.current_secret.unwrap().state(), key.previous_secret.unwrap().state())
    };
    assert_eq!(states(999), (State::Active, State::Grace));
    assert_eq!(states(1000), (State::Active, State::Expired));
    assert_eq!(states(2000), (State::Expired, State::Expired));
    let key = convert::key_at(&record, at(0));
    assert_eq!(key.current_secret.unwrap().expires_at, Some(at(2000).into()));
    assert_eq!(key.previous_secret.unwrap().expires_at, Some(at(1000).into()));
}
