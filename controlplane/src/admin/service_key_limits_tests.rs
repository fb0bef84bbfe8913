//! Per-key limits and the default limits through the real admin API (issue 13): what is
//! accepted, what is refused and with which message, and set / patch / clear semantics.

#![allow(clippy::unwrap_used)]

use aurora_proto::v1 as pb;
use tonic::Code;

use super::tests::{admin, assert_status, create};

fn rpm(n: u32) -> pb::LimitsUpdate {
    pb::LimitsUpdate { requests_per_minute: Some(n), ..Default::default() }
}

#[tokio::test]
async fn key_limits_are_set_patched_and_cleared() {
    let (_running, mut admin) = admin().await;
    let limits = pb::Limits {
        requests_per_minute: 10,
        tokens_per_minute: 2_000,
        budget_tokens: 50_000,
        budget_period: "week".into(),
        ..Default::default()
    };
    let request = pb::CreateKeyRequest { limits: Some(limits.clone()), ..create("limited") };
    let created = admin.create_key(request).await.unwrap().into_inner();
    let key = created.key.unwrap();
    assert_eq!(key.limits.as_ref(), Some(&limits));
    let plain = admin.create_key(create("plain")).await.unwrap().into_inner().key.unwrap();
    assert_eq!(plain.limits, None);

    // A patch replaces only the limits it names.
    let update = pb::UpdateKeyRequest { id: key.id.clone(), limits: Some(rpm(0)), ..Default::default() };
    let updated = admin.update_key(update).await.unwrap().into_inner().key.unwrap();
    assert_eq!(updated.limits, Some(pb::Limits { requests_per_minute: 0, ..limits.clone() }));
    let fetched = admin.get_key(pb::GetKeyRequest { id: key.id.clone() }).await.unwrap().into_inner();
    assert_eq!(fetched.limits, updated.limits);
    let status = fetched.limit_status.unwrap();
    assert_eq!((status.source.as_str(), status.limits), ("key", updated.limits.clone()));
    assert_eq!((status.budget_remaining, status.requests_remaining), (50_000, 0), "nothing used; no request limit");

    // A key without limits of its own follows the default limits.
    let default = pb::UpdateSettingsRequest { default_key_limits: Some(rpm(7)), ..Default::default() };
    admin.update_settings(default).await.unwrap();
    let status =
        admin.get_key(pb::GetKeyRequest { id: plain.id.clone() }).await.unwrap().into_inner().limit_status.unwrap();
    assert_eq!((status.source.as_str(), status.requests_remaining), ("default", 7));

    let clear = pb::LimitsUpdate { clear: true, ..Default::default() };
    let update = pb::UpdateKeyRequest { id: key.id.clone(), limits: Some(clear), ..Default::default() };
    assert_eq!(admin.update_key(update).await.unwrap().into_inner().key.unwrap().limits, None);
}

#[tokio::test]
async fn bad_limits_are_refused_precisely() {
    let (_running, mut admin) = admin().await;
    let period = pb::Limits { budget_period: "fortnight".into(), budget_tokens: 5, ..Default::default() };
    assert_status(
        admin.create_key(pb::CreateKeyRequest { limits: Some(period), ..create("a") }).await,
        Code::InvalidArgument,
        "limits: budget_period: \"fortnight\": unknown budget period; known periods: day, week, month, none",
    );
    let lonely = pb::Limits { budget_period: "day".into(), ..Default::default() };
    assert_status(
        admin.create_key(pb::CreateKeyRequest { limits: Some(lonely), ..create("b") }).await,
        Code::InvalidArgument,
        "limits: budget_period: day needs budget_tokens above 0",
    );
    let huge = pb::Limits { tokens_per_minute: u64::MAX, ..Default::default() };
    assert_status(
        admin.create_key(pb::CreateKeyRequest { limits: Some(huge), ..create("c") }).await,
        Code::InvalidArgument,
        "limits: tokens_per_minute: at most 1000000000000000",
    );

    let budget = pb::Limits { budget_tokens: 100, budget_period: "month".into(), ..Default::default() };
    let key = admin
        .create_key(pb::CreateKeyRequest { limits: Some(budget), ..create("d") })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    let update = |limits| pb::UpdateKeyRequest { id: key.id.clone(), limits: Some(limits), ..Default::default() };
    // Consistency is judged against the stored limits, in the update's transaction.
    let drop_budget = pb::LimitsUpdate { budget_tokens: Some(0), ..Default::default() };
    assert_status(
        admin.update_key(update(drop_budget)).await,
        Code::InvalidArgument,
        "limits: budget_period: month needs budget_tokens above 0",
    );
    let both = pb::LimitsUpdate { clear: true, requests_per_minute: Some(1), ..Default::default() };
    assert_status(admin.update_key(update(both)).await, Code::InvalidArgument, "limits: clear removes the limits");
    assert_status(
        admin.update_key(update(pb::LimitsUpdate::default())).await,
        Code::InvalidArgument,
        "limits: set `clear` or at least one limit",
    );
    let week = pb::LimitsUpdate { budget_period: Some("weekly".into()), ..Default::default() };
    assert_status(admin.update_key(update(week)).await, Code::InvalidArgument, "limits: budget_period: \"weekly\"");
}

#[tokio::test]
async fn default_limits_and_fallback_round_trip() {
    let (_running, mut admin) = admin().await;
    let settings = admin.get_settings(pb::GetSettingsRequest {}).await.unwrap().into_inner();
    assert_eq!((settings.default_key_limits, settings.limit_fallback.as_str()), (None, "share"));

    let request = pb::UpdateSettingsRequest {
        default_key_limits: Some(rpm(30)),
        limit_fallback: Some("closed".into()),
        ..Default::default()
    };
    let updated = admin.update_settings(request).await.unwrap().into_inner().settings.unwrap();
    assert_eq!(updated.default_key_limits.as_ref().map(|l| l.requests_per_minute), Some(30));
    assert_eq!(updated.limit_fallback, "closed");
    assert!(updated.passthrough_enabled, "untouched");

    let bad = pb::UpdateSettingsRequest { limit_fallback: Some("open".into()), ..Default::default() };
    assert_status(
        admin.update_settings(bad).await,
        Code::InvalidArgument,
        "limit_fallback: \"open\": unknown limit fallback; known fallbacks: share, closed",
    );
    let period = pb::LimitsUpdate { budget_period: Some("day".into()), ..Default::default() };
    let bad = pb::UpdateSettingsRequest { default_key_limits: Some(period), ..Default::default() };
    assert_status(
        admin.update_settings(bad).await,
        Code::InvalidArgument,
        "default_key_limits: budget_period: day needs budget_tokens above 0",
    );
    let clear = pb::LimitsUpdate { clear: true, ..Default::default() };
    let request = pb::UpdateSettingsRequest { default_key_limits: Some(clear), ..Default::default() };
    let cleared = admin.update_settings(request).await.unwrap().into_inner().settings.unwrap();
    assert_eq!((cleared.default_key_limits, cleared.limit_fallback.as_str()), (None, "closed"));
}

#[tokio::test]
async fn a_lease_ttl_no_longer_than_the_interval_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/cp.db", dir.path().display());
    let mut config = crate::Config::new("127.0.0.1:0".parse().unwrap(), url, "node-token");
    config.capacity.lease_ttl = std::time::Duration::from_millis(250);
    let err = crate::start(config).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "AURORA_LEASE_TTL (250ms) must be longer than AURORA_LEASE_INTERVAL (250ms): leases would lapse between two grants"
    );
}
