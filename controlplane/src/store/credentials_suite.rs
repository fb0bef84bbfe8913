//! Contract tests of credential sets, run on every backend through `store_suite!`, and the
//! SQLite migration of the single credential into the set.

#![allow(clippy::unwrap_used)]

use aurora_core::ProviderKind;
use aurora_proto::v1::change;

use super::audit::AuditQuery;
use super::suite::actor;
use super::test_db::TestDb;
use super::{Credential, CredentialPatch, DEFAULT_CREDENTIAL, NewCredential, StoreError};

fn new(name: &str, secret: &str, weight: u32) -> NewCredential {
    NewCredential { name: name.into(), weight, enabled: true, secret: Credential::new(secret) }
}

fn names(store_record: &super::ProviderRecord) -> Vec<(String, u32, bool)> {
    store_record.credentials.iter().map(|c| (c.name.clone(), c.weight, c.enabled)).collect()
}

pub(crate) async fn credential_sets_are_stored_streamed_and_replayed(db: TestDb) {
    let store = db.open().await;
    let kind = ProviderKind::Anthropic;
    // The single-credential interface sets the credential named `default`.
    store.upsert_provider(kind, super::suite::credential_patch("sk-default"), &actor()).await.unwrap();
    let (record, added) = store.add_credential(kind, new("org-b", "sk-b", 3), &actor()).await.unwrap();
    assert_eq!(names(&record), [("default".into(), 1, true), ("org-b".into(), 3, true)]);

    // Failures are precise and leave no gap in the revisions.
    assert!(matches!(
        store.add_credential(kind, new("org-b", "sk-other", 1), &actor()).await,
        Err(StoreError::CredentialNameTaken(_))
    ));
    assert!(matches!(
        store.update_credential(kind, "nope", CredentialPatch::default(), &actor()).await,
        Err(StoreError::CredentialNotFound(..))
    ));
    assert!(matches!(
        store.remove_credential(ProviderKind::Zai, "default", &actor()).await,
        Err(StoreError::ProviderNotFound(ProviderKind::Zai))
    ));
    let patch = CredentialPatch { enabled: Some(false), weight: Some(5) };
    let (record, updated) = store.update_credential(kind, "org-b", patch, &actor()).await.unwrap();
    assert_eq!(updated, added + 1);
    assert_eq!(names(&record)[1], ("org-b".into(), 5, false));

    // Every change is one provider upsert carrying the whole set; old data planes get the
    // first enabled credential in the single field.
    let deltas = store.changes_since(added - 1, 10).await.unwrap();
    assert_eq!(deltas.iter().map(|d| d.revision).collect::<Vec<_>>(), [added, updated]);
    let Some(change::Change::ProviderUpsert(config)) = deltas[1].changes[0].change.clone() else { panic!() };
    assert_eq!(config.credentials.len(), 2);
    assert_eq!((config.credentials[1].weight, config.credentials[1].enabled), (5, false));
    assert_eq!(config.credential, "sk-default");
    assert_eq!(config.credentials[1].secret, "sk-b", "the log's entry is completed with the current secrets");
    let snapshot = store.load_snapshot().await.unwrap();
    assert_eq!(snapshot.providers.iter().find(|p| p.name == "anthropic"), Some(&config));

    let (record, removed) = store.remove_credential(kind, DEFAULT_CREDENTIAL, &actor()).await.unwrap();
    assert_eq!(names(&record), [("org-b".into(), 5, false)]);

    // Each credential change committed one audit record naming the credential, never a secret.
    let query = AuditQuery { action: Some("provider".into()), limit: 100, ..AuditQuery::default() };
    let records = store.list_audit(&query).await.unwrap();
    let audited: Vec<_> = records
        .iter()
        .filter(|r| r.revision >= added)
        .map(|r| (r.revision, r.action.as_str(), r.target.as_str(), r.changes.as_str()))
        .collect();
    assert_eq!(
        audited,
        [
            (
                added,
                "provider.credential.add",
                "anthropic",
                r#"{"enabled":true,"name":"org-b","secret":"set","weight":3}"#
            ),
            (updated, "provider.credential.update", "anthropic", r#"{"enabled":false,"name":"org-b","weight":5}"#),
            (removed, "provider.credential.remove", "anthropic", r#"{"name":"default","secret":"cleared"}"#),
        ]
    );
    let providers = store.list_providers().await.unwrap();
    store.close().await;
    let store = db.open().await;
    assert_eq!(store.list_providers().await.unwrap(), providers, "the set survives a restart");
    let config = store.load_snapshot().await.unwrap().providers.into_iter().find(|p| p.name == "anthropic").unwrap();
    assert_eq!(config.credential, "", "no enabled credential: none for old data planes either");

    // Deleting the provider forgets its credentials.
    store.delete_provider(kind, &actor()).await.unwrap();
    let (record, _) = store.upsert_provider(kind, super::ProviderPatch::default(), &actor()).await.unwrap();
    assert!(record.credentials.is_empty());
}

#[tokio::test]
async fn the_single_credential_of_earlier_versions_becomes_the_default_credential() {
    let db = TestDb::sqlite();
    let url = db.url();
    let path = url.trim_start_matches("sqlite://");
    std::fs::create_dir_all(std::path::Path::new(path).parent().unwrap()).unwrap();
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(path).create_if_missing(true);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut migrator = sqlx::migrate::Migrator::new(dir).await.unwrap();
    migrator.migrations = migrator.migrations.iter().filter(|m| m.version < 7).cloned().collect();
    migrator.run(&pool).await.unwrap();
    sqlx::query("INSERT INTO providers (name, enabled, base_url, credential, updated_at) VALUES ($1, 1, $2, $3, 5)")
        .bind("openai")
        .bind("https://api.openai.com/v1")
        .bind("sk-before-sets")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;

    let store = db.open().await;
    let providers = store.list_providers().await.unwrap();
    let openai = providers.iter().find(|p| p.kind == ProviderKind::OpenAi).unwrap();
    assert_eq!(openai.credentials.default_credential(), Some(&Credential::new("sk-before-sets")));
    store.close().await;
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(path);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    let column: Option<String> =
        sqlx::query_scalar("SELECT credential FROM providers WHERE name = 'openai'").fetch_one(&pool).await.unwrap();
    assert_eq!(column, None, "the secret lives in one place only");
    let (plain, sealed): (Option<String>, Option<Vec<u8>>) = sqlx::query_as(
        "SELECT secret, secret_sealed FROM provider_credentials WHERE provider = 'openai' AND name = 'default'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(plain, None, "sealed at the first start");
    assert!(!String::from_utf8_lossy(&sealed.unwrap()).contains("sk-before-sets"));
    pool.close().await;
}
