//! Credential sets: the named upstream credentials of a provider, and their rows.
//!
//! A provider holds any number of named credentials, each with a weight and an enabled flag
//! (issue 15). They travel with the provider: every change to a set rewrites the provider's
//! record and appends one `provider_upsert` change, so data planes receive the whole set at the
//! revision that changed it. The credential named [`DEFAULT_CREDENTIAL`] is the one the single-
//! credential interfaces set (`UpsertProvider.credential`, the product page's
//! `<PROVIDER>_API_KEY`), so a one-credential provider works exactly as before.
//!
//! Every read and write of a secret goes through [`seal_secret`] and [`open_secret`]: each
//! credential is sealed in `secret_sealed` (envelope encryption, `at_rest.rs`) bound to its
//! provider and its name, so a sealed value copied to another row does not open. The plaintext
//! `secret` column only ever holds what migration 0007 (PostgreSQL 0006) copied from an older
//! store's `providers.credential`, until `seal_at_rest` seals it at the same start.

use std::time::SystemTime;

use aurora_core::ProviderKind;
use aurora_proto::v1::UpstreamCredential;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Row, Type};

use super::at_rest;
use super::audit::{Actor, AuditEvent};
use super::change::ChangeEntry;
use super::model::{Credential, ProviderRecord};
use super::sealed::Keyring;
use super::{Dialect, Revision, SqlStore, StoreError};
use crate::time;

/// The name of the credential the single-credential interfaces manage.
pub const DEFAULT_CREDENTIAL: &str = "default";

/// The most credentials one provider may hold: the set is walked on every request and each
/// name becomes a metric label, so it stays small.
pub const MAX_CREDENTIALS: usize = 32;

/// One named credential of a provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedCredential {
    pub name: String,
    pub weight: u32,
    pub enabled: bool,
    pub secret: Credential,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
}

impl NamedCredential {
    fn same_config(&self, other: &NamedCredential) -> bool {
        self.name == other.name
            && self.weight == other.weight
            && self.enabled == other.enabled
            && self.secret == other.secret
    }

    fn to_config(&self) -> UpstreamCredential {
        UpstreamCredential {
            name: self.name.clone(),
            secret: self.secret.expose().to_owned(),
            weight: self.weight,
            enabled: self.enabled,
        }
    }
}

/// A provider's credentials in creation order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CredentialSet(Vec<NamedCredential>);

impl CredentialSet {
    pub fn new(mut credentials: Vec<NamedCredential>) -> Self {
        credentials.sort_by(|a, b| a.created_at.cmp(&b.created_at).then_with(|| a.name.cmp(&b.name)));
        CredentialSet(credentials)
    }

    pub fn iter(&self) -> impl Iterator<Item = &NamedCredential> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn get(&self, name: &str) -> Option<&NamedCredential> {
        self.0.iter().find(|c| c.name == name)
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut NamedCredential> {
        self.0.iter_mut().find(|c| c.name == name)
    }

    /// The credential named `default`.
    pub fn default_credential(&self) -> Option<&Credential> {
        self.get(DEFAULT_CREDENTIAL).map(|c| &c.secret)
    }

    /// The credential old data planes get in `ProviderConfig.credential`: the first enabled.
    pub fn first_enabled(&self) -> Option<&Credential> {
        self.0.iter().find(|c| c.enabled).map(|c| &c.secret)
    }

    /// Sets or removes the `default` credential; setting keeps its weight and enabled flag, and
    /// setting the same secret again changes nothing (not even its timestamps).
    pub fn set_default(&mut self, secret: Option<Credential>, now: SystemTime) {
        match (secret, self.get_mut(DEFAULT_CREDENTIAL)) {
            (None, _) => self.remove(DEFAULT_CREDENTIAL).map_or((), drop),
            (Some(secret), Some(current)) => {
                if current.secret != secret {
                    current.secret = secret;
                    current.updated_at = now;
                }
            }
            (Some(secret), None) => self.0.push(NamedCredential {
                name: DEFAULT_CREDENTIAL.to_owned(),
                weight: 1,
                enabled: true,
                secret,
                created_at: now,
                updated_at: now,
            }),
        }
    }

    /// Adds a credential; fails if the name is taken or the set is full.
    pub fn add(&mut self, credential: NamedCredential) -> Result<(), StoreError> {
        if self.get(&credential.name).is_some() {
            return Err(StoreError::CredentialNameTaken(credential.name));
        }
        if self.0.len() >= MAX_CREDENTIALS {
            return Err(StoreError::TooManyCredentials(MAX_CREDENTIALS));
        }
        self.0.push(credential);
        Ok(())
    }

    pub fn remove(&mut self, name: &str) -> Option<NamedCredential> {
        let at = self.0.iter().position(|c| c.name == name)?;
        Some(self.0.remove(at))
    }

    /// Whether both sets configure the same thing (ignoring timestamps).
    pub fn same_config(&self, other: &CredentialSet) -> bool {
        self.0.len() == other.0.len() && self.0.iter().zip(&other.0).all(|(a, b)| a.same_config(b))
    }

    /// The set as the config stream carries it.
    pub fn to_config(&self) -> Vec<UpstreamCredential> {
        self.0.iter().map(NamedCredential::to_config).collect()
    }
}

/// A credential to add.
#[derive(Debug, Clone)]
pub struct NewCredential {
    pub name: String,
    pub weight: u32,
    pub enabled: bool,
    pub secret: Credential,
}

/// A change to a credential's metadata: `None` leaves a field alone.
#[derive(Debug, Clone, Copy, Default)]
pub struct CredentialPatch {
    pub enabled: Option<bool>,
    pub weight: Option<u32>,
}

/// The column string a credential's sealed secret is bound to: the credential's name is part of
/// it, so one credential's sealed value never opens as another's.
pub(super) fn sealed_column(name: &str) -> String {
    format!("secret_sealed:{name}")
}

/// What goes into the `secret_sealed` column for credential `name` of `provider`. The one write
/// path of a secret.
pub(super) fn seal_secret(
    keyring: &Keyring,
    provider: &str,
    name: &str,
    credential: &Credential,
) -> Result<Vec<u8>, StoreError> {
    at_rest::seal_text(keyring, provider, &sealed_column(name), credential.expose())
}

/// The credential a row holds: its sealed secret, or the plaintext one migration 0007 copied
/// from an older store (sealed by `seal_at_rest` before the store serves). The one read path
/// of a secret.
pub(super) fn open_secret(
    keyring: &Keyring,
    provider: &str,
    name: &str,
    sealed: Option<Vec<u8>>,
    plaintext: Option<String>,
) -> Result<Credential, StoreError> {
    match (sealed, plaintext) {
        (Some(sealed), _) => at_rest::open_text(keyring, provider, &sealed_column(name), &sealed).map(Credential::new),
        (None, Some(plaintext)) => Ok(Credential::new(plaintext)),
        (None, None) => Err(StoreError::Corrupt(format!("provider_credentials.secret_sealed of {provider}/{name}"))),
    }
}

// The same bounds as `sql.rs` (see there why they repeat).
impl<DB> SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    usize: ColumnIndex<DB::Row>,
    for<'s> &'s str: ColumnIndex<DB::Row>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Vec<u8>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB>,
    for<'q> Option<String>: Encode<'q, DB>,
    for<'q> Option<Vec<u8>>: Encode<'q, DB>,
{
    /// Loads the provider's record (or a new default one when `create`), lets `change` edit its
    /// credentials and say what it did (the audit event), writes it back and commits one
    /// provider change: every data plane receives the whole new set at this revision.
    async fn change_credentials(
        &self,
        kind: ProviderKind,
        create: bool,
        actor: &Actor,
        change: impl FnOnce(&mut ProviderRecord, std::time::SystemTime) -> Result<AuditEvent, StoreError>,
    ) -> Result<(ProviderRecord, Revision), StoreError> {
        let (mut tx, revision) = self.begin_write().await?;
        let now = time::now();
        let current = Self::fetch_providers(&self.keyring, &mut tx).await?.into_iter().find(|p| p.kind == kind);
        let mut record = match current {
            Some(record) => record,
            None if create => ProviderRecord::new_default(kind, now),
            None => return Err(StoreError::ProviderNotFound(kind)),
        };
        let event = change(&mut record, now)?;
        record.updated_at = now;
        Self::write_provider(&self.keyring, &mut tx, &record).await?;
        self.commit(tx, revision, &[ChangeEntry::provider_upsert(&record)], now, actor, event).await?;
        Ok((record, revision))
    }

    pub(super) async fn add_credential_tx(
        &self,
        kind: ProviderKind,
        new: NewCredential,
        actor: &Actor,
    ) -> Result<(ProviderRecord, Revision), StoreError> {
        self.change_credentials(kind, true, actor, |record, now| {
            let credential = NamedCredential {
                name: new.name,
                weight: new.weight,
                enabled: new.enabled,
                secret: new.secret,
                created_at: now,
                updated_at: now,
            };
            let event = AuditEvent::credential_added(kind, &credential);
            record.credentials.add(credential)?;
            Ok(event)
        })
        .await
    }

    pub(super) async fn update_credential_tx(
        &self,
        kind: ProviderKind,
        name: &str,
        patch: CredentialPatch,
        actor: &Actor,
    ) -> Result<(ProviderRecord, Revision), StoreError> {
        self.change_credentials(kind, false, actor, |record, now| {
            let credential = record
                .credentials
                .get_mut(name)
                .ok_or_else(|| StoreError::CredentialNotFound(kind, name.to_owned()))?;
            let before = credential.clone();
            if let Some(enabled) = patch.enabled {
                credential.enabled = enabled;
            }
            if let Some(weight) = patch.weight {
                credential.weight = weight;
            }
            credential.updated_at = now;
            Ok(AuditEvent::credential_updated(kind, &before, credential))
        })
        .await
    }

    pub(super) async fn remove_credential_tx(
        &self,
        kind: ProviderKind,
        name: &str,
        actor: &Actor,
    ) -> Result<(ProviderRecord, Revision), StoreError> {
        self.change_credentials(kind, false, actor, |record, _| {
            let removed =
                record.credentials.remove(name).ok_or_else(|| StoreError::CredentialNotFound(kind, name.to_owned()))?;
            Ok(AuditEvent::credential_removed(kind, &removed))
        })
        .await
    }

    /// Every provider's credentials, by provider name, opened with `keyring`.
    pub(super) async fn fetch_credentials(
        keyring: &Keyring,
        conn: &mut DB::Connection,
    ) -> Result<Vec<(String, NamedCredential)>, StoreError> {
        let rows = sqlx::query(
            "SELECT provider, name, weight, enabled, secret, secret_sealed, created_at, updated_at \
             FROM provider_credentials",
        )
        .fetch_all(&mut *conn)
        .await?;
        rows.iter()
            .map(|row| {
                let provider: String = row.try_get("provider")?;
                let name: String = row.try_get("name")?;
                let weight: i64 = row.try_get("weight")?;
                let secret =
                    open_secret(keyring, &provider, &name, row.try_get("secret_sealed")?, row.try_get("secret")?)?;
                let credential = NamedCredential {
                    weight: u32::try_from(weight)
                        .map_err(|_| StoreError::Corrupt("provider_credentials.weight".into()))?,
                    enabled: row.try_get("enabled")?,
                    secret,
                    created_at: time::from_millis(row.try_get("created_at")?),
                    updated_at: time::from_millis(row.try_get("updated_at")?),
                    name,
                };
                Ok((provider, credential))
            })
            .collect()
    }

    /// Replaces the stored credentials of `provider` with `set`, each sealed.
    pub(super) async fn write_credentials(
        keyring: &Keyring,
        conn: &mut DB::Connection,
        provider: &str,
        set: &CredentialSet,
    ) -> Result<(), StoreError> {
        Self::delete_credentials(conn, provider).await?;
        for credential in set.iter() {
            let sealed = seal_secret(keyring, provider, &credential.name, &credential.secret)?;
            sqlx::query(
                "INSERT INTO provider_credentials (provider, name, weight, enabled, secret, secret_sealed, \
                 created_at, updated_at) VALUES ($1, $2, $3, $4, NULL, $5, $6, $7)",
            )
            .bind(provider)
            .bind(credential.name.clone())
            .bind(i64::from(credential.weight))
            .bind(credential.enabled)
            .bind(sealed)
            .bind(time::to_millis(credential.created_at))
            .bind(time::to_millis(credential.updated_at))
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }

    pub(super) async fn delete_credentials(conn: &mut DB::Connection, provider: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM provider_credentials WHERE provider = $1").bind(provider).execute(&mut *conn).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(name: &str, secret: &str, at: u64) -> NamedCredential {
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(at);
        NamedCredential {
            name: name.into(),
            weight: 1,
            enabled: true,
            secret: Credential::new(secret),
            created_at: at,
            updated_at: at,
        }
    }

    #[test]
    fn the_default_credential_is_set_replaced_and_removed_in_place() {
        let mut set = CredentialSet::new(vec![named("b", "sk-b", 2), named("a", "sk-a", 1)]);
        assert_eq!(set.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["a", "b"], "creation order");
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(10);
        set.set_default(Some(Credential::new("sk-d")), now);
        set.get_mut(DEFAULT_CREDENTIAL).unwrap().weight = 5;
        let before = set.clone();
        set.set_default(Some(Credential::new("sk-d")), now + std::time::Duration::from_secs(1));
        assert_eq!(set, before, "the same secret again changes nothing");
        set.set_default(Some(Credential::new("sk-e")), now);
        assert_eq!(set.get(DEFAULT_CREDENTIAL).unwrap().weight, 5, "a new secret keeps the weight");
        assert!(!set.same_config(&before));
        set.set_default(None, now);
        assert_eq!(set.len(), 2);
        assert!(matches!(set.add(named("a", "x", 3)), Err(StoreError::CredentialNameTaken(_))));
    }

    #[test]
    fn old_data_planes_get_the_first_enabled_credential() {
        let mut set = CredentialSet::new(vec![named("a", "sk-a", 1), named("b", "sk-b", 2)]);
        set.get_mut("a").unwrap().enabled = false;
        assert_eq!(set.first_enabled().unwrap().expose(), "sk-b");
        assert!(!format!("{set:?}").contains("sk-b"), "Debug never shows a secret");
    }
}
