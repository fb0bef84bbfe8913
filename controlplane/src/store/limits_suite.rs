//! The store's contract for per-key limits and the default limits (issue 13), run on every
//! backend through `store_suite!`.

#![allow(clippy::unwrap_used)]

use aurora_core::{BudgetPeriod, KeyLimits, KeyLimitsPatch, LimitFallback, LimitsUpdate};
use aurora_proto::v1::{self as pb, change};

use super::audit::AuditQuery;
use super::suite::{actor, new_key};
use super::test_db::TestDb;
use super::{KeyPatch, SettingsPatch, StoreError};

fn limits(rpm: u32, budget: u64, period: BudgetPeriod) -> KeyLimits {
    KeyLimits { requests_per_minute: rpm, budget_tokens: budget, budget_period: period, ..Default::default() }
}

/// A key's own limits survive a reopen, reach data planes in snapshots and deltas, are patched
/// field by field inside the update's transaction, and a patch that leaves them inconsistent
/// is refused without a revision.
pub(super) async fn key_limits_persist_stream_and_patch(db: TestDb) {
    let store = db.open().await;
    let (mut key, _) = new_key("limited");
    key.limits = Some(limits(10, 5_000, BudgetPeriod::Month));
    let (created, first) = store.create_key(key, &actor()).await.unwrap();
    let (plain, _) = store.create_key(new_key("plain").0, &actor()).await.unwrap();
    assert_eq!(plain.limits, None, "no limits of its own: the default applies");

    let reopened = db.open().await;
    assert_eq!(reopened.get_key(created.id).await.unwrap().limits, created.limits);
    let snapshot = reopened.load_snapshot().await.unwrap();
    let streamed = snapshot.keys.iter().find(|k| k.id == created.id.as_bytes()).unwrap();
    let expected = pb::KeyLimits {
        requests_per_minute: 10,
        budget_tokens: 5_000,
        budget_period: pb::BudgetPeriod::Month as i32,
        ..Default::default()
    };
    assert_eq!(streamed.limits, Some(expected));
    assert_eq!(snapshot.keys.iter().find(|k| k.id == plain.id.as_bytes()).unwrap().limits, None);

    // A patch changes only what it names.
    let patch = KeyLimitsPatch { max_concurrent: Some(2), requests_per_minute: Some(0), ..Default::default() };
    let update = KeyPatch { limits: Some(LimitsUpdate::Patch(patch)), ..KeyPatch::default() };
    let (patched, revision) = reopened.update_key(created.id, update, &actor()).await.unwrap();
    let want = KeyLimits { max_concurrent: 2, ..limits(0, 5_000, BudgetPeriod::Month) };
    assert_eq!(patched.limits, Some(want));
    let deltas = reopened.changes_since(revision - 1, 10).await.unwrap();
    let Some(change::Change::KeyUpsert(config)) = &deltas[0].changes[0].change else { panic!("{deltas:?}") };
    assert_eq!(config.limits.as_ref().map(|l| (l.max_concurrent, l.requests_per_minute)), Some((2, 0)));

    // Other updates leave the limits alone.
    let rename = KeyPatch { name: Some("renamed".into()), ..KeyPatch::default() };
    assert_eq!(reopened.update_key(created.id, rename, &actor()).await.unwrap().0.limits, Some(want));

    // Inconsistent against the stored limits: refused, nothing committed.
    let head = reopened.head_revision().await.unwrap();
    let drop_budget = KeyLimitsPatch { budget_tokens: Some(0), ..Default::default() };
    let bad = KeyPatch { limits: Some(LimitsUpdate::Patch(drop_budget)), ..KeyPatch::default() };
    let err = reopened.update_key(created.id, bad, &actor()).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidLimits("limits", _)), "{err:?}");
    assert_eq!(err.to_string(), "limits: budget_period: month needs budget_tokens above 0");
    assert_eq!(reopened.head_revision().await.unwrap(), head);

    // Clearing brings the default back; all-zero limits are kept as "explicitly unlimited".
    let clear = KeyPatch { limits: Some(LimitsUpdate::Clear), ..KeyPatch::default() };
    assert_eq!(reopened.update_key(created.id, clear, &actor()).await.unwrap().0.limits, None);
    let zero = KeyLimitsPatch { requests_per_minute: Some(0), ..Default::default() };
    let unlimited = KeyPatch { limits: Some(LimitsUpdate::Patch(zero)), ..KeyPatch::default() };
    let (record, _) = store.update_key(plain.id, unlimited, &actor()).await.unwrap();
    assert_eq!(record.limits, Some(KeyLimits::default()));
    assert_eq!(record.to_config().limits, Some(pb::KeyLimits::default()), "sent, so the default stays away");

    // Every change is audited with the limits after it.
    let records = store.list_audit(&AuditQuery { limit: 100, ..AuditQuery::default() }).await.unwrap();
    let of_key: Vec<&str> =
        records.iter().filter(|r| r.target == created.id.to_string()).map(|r| r.changes.as_str()).collect();
    assert!(of_key[0].contains(r#""limits":{"budget_period":"month","budget_tokens":5000"#), "{}", of_key[0]);
    assert!(of_key.iter().any(|c| c.contains(r#""max_concurrent":2"#)), "{of_key:?}");
    assert!(of_key.iter().any(|c| c.contains(r#""limits":null"#)), "{of_key:?}");
    assert!(!of_key.iter().any(|c| c.contains("renamed") && c.contains("limits")), "{of_key:?}");
    assert!(first < revision);
}

/// The default limits and the fallback policy persist, reach data planes in the snapshot and
/// the settings delta, are audited, and an inconsistent patch is refused.
pub(super) async fn default_limits_and_fallback_persist(db: TestDb) {
    let store = db.open().await;
    let view = store.get_settings().await.unwrap();
    assert_eq!((view.settings.default_key_limits, view.settings.limit_fallback), (None, LimitFallback::Share));

    let patch = KeyLimitsPatch { requests_per_minute: Some(60), tokens_per_minute: Some(10_000), ..Default::default() };
    let update = SettingsPatch {
        default_key_limits: Some(LimitsUpdate::Patch(patch)),
        limit_fallback: Some(LimitFallback::Closed),
        ..SettingsPatch::default()
    };
    let (view, revision) = store.update_settings(update, &actor()).await.unwrap();
    let want = KeyLimits { requests_per_minute: 60, tokens_per_minute: 10_000, ..Default::default() };
    assert_eq!(view.settings.default_key_limits, Some(want));
    assert!(view.settings.passthrough_enabled, "untouched");

    let reopened = db.open().await;
    let settings = reopened.get_settings().await.unwrap().settings;
    assert_eq!((settings.default_key_limits, settings.limit_fallback), (Some(want), LimitFallback::Closed));
    let snapshot = reopened.load_snapshot().await.unwrap();
    assert_eq!(snapshot.settings.limit_fallback, pb::LimitFallback::Closed as i32);
    assert_eq!(snapshot.settings.default_key_limits.as_ref().map(|l| l.tokens_per_minute), Some(10_000));
    let deltas = reopened.changes_since(revision - 1, 10).await.unwrap();
    let Some(change::Change::Settings(config)) = &deltas[0].changes[0].change else { panic!("{deltas:?}") };
    assert_eq!(config.default_key_limits.as_ref().map(|l| l.requests_per_minute), Some(60));

    let head = reopened.head_revision().await.unwrap();
    let period = KeyLimitsPatch { budget_period: Some(BudgetPeriod::Day), ..Default::default() };
    let bad = SettingsPatch { default_key_limits: Some(LimitsUpdate::Patch(period)), ..SettingsPatch::default() };
    let err = reopened.update_settings(bad, &actor()).await.unwrap_err();
    assert_eq!(err.to_string(), "default_key_limits: budget_period: day needs budget_tokens above 0");
    assert_eq!(reopened.head_revision().await.unwrap(), head);

    let clear = SettingsPatch { default_key_limits: Some(LimitsUpdate::Clear), ..SettingsPatch::default() };
    let (view, _) = reopened.update_settings(clear, &actor()).await.unwrap();
    assert_eq!((view.settings.default_key_limits, view.settings.limit_fallback), (None, LimitFallback::Closed));
    assert_eq!(reopened.load_snapshot().await.unwrap().settings.default_key_limits, None);

    let records = store.list_audit(&AuditQuery { limit: 100, ..AuditQuery::default() }).await.unwrap();
    let changes: Vec<&str> =
        records.iter().filter(|r| r.action == "settings.update").map(|r| r.changes.as_str()).collect();
    assert!(changes[0].contains(r#""limit_fallback":"closed""#) && changes[0].contains(r#""requests_per_minute":60"#));
    assert_eq!(changes[1], r#"{"default_key_limits":null}"#);
}
