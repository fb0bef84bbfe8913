//! The durable store: keys, providers, settings, one global revision and the change log.
//!
//! [`Store`] is the seam between a database and its two readers: the admin API and the config
//! stream's change feed and snapshots.
//! Every successful mutation runs in one transaction that first allocates the next revision by
//! updating the single head row (`UPDATE head SET revision = revision + 1 RETURNING revision`),
//! then writes the objects, then appends one change-log row per object it changed. Because the
//! head row is locked until commit, writers are serialized and revisions are gap-free and in
//! commit order, whichever process the writer lives in. The change log is a redo log: each row's
//! payload is an encoded `aurora.v1.Change` with the object's state after the mutation, so
//! replaying [`Store::changes_since`] over an empty state yields [`Store::load_snapshot`].
//! Secrets are the exception: they are sealed in their tables and never in the log, whose
//! entries are completed with the current secrets when read (`store/at_rest.rs`).

mod at_rest;
pub mod audit;
mod change;
mod credential_presence;
mod credentials;
mod error;
mod key_endpoints;
pub(crate) mod key_limits;
mod key_rotation;
mod limit_presence;
mod model;
pub mod postgres;
mod presence;
mod sealed;
mod sql;
pub mod sqlite;
mod tx;
mod usage;
mod write_health;

use std::sync::Arc;

use async_trait::async_trait;
use aurora_core::ProviderKind;
use aurora_proto::v1::Delta;
use tokio::sync::watch;
use uuid::Uuid;

pub use at_rest::Reencrypted;
pub use audit::{Actor, AuditLog};
pub use credentials::{
    CredentialPatch, CredentialSet, DEFAULT_CREDENTIAL, MAX_CREDENTIALS, NamedCredential, NewCredential,
};
pub use error::{StorageFailure, StoreError};
pub use key_rotation::NewSecret;
pub use limit_presence::LimitRow;
pub use model::{
    ClientIdentity, Credential, KeyPatch, KeyRecord, NewKey, PreviousSecret, ProviderPatch, ProviderRecord, Settings,
    SettingsPatch, SettingsView, Snapshot,
};
pub use postgres::{PgPoolConfig, PgStore};
pub use presence::{Presence, PresenceTable};
pub use sealed::{ENCRYPTION_KEY_VAR, KeyId, Keyring, KeyringError, SealError};
pub use sql::{Dialect, SqlStore};
pub use sqlite::SqliteStore;
pub use usage::{
    IngestOutcome, TimeGrouping, UsageBucket, UsageCounts, UsageQuery, UsageReportRecord, UsageStore, UsageTotal,
};
pub use write_health::WriteStatus;

use crate::bootstrap::Bootstrap;

/// Opens the store at `url`: `postgres://…` (or `postgresql://…`) for PostgreSQL, shared by
/// several control-plane replicas, connecting as `pool` says; otherwise `sqlite://PATH`. Every
/// credential in it is sealed and opened with `keyring` (see `store/sealed.rs`).
pub async fn open(url: &str, pool: PgPoolConfig, keyring: Keyring) -> Result<Arc<dyn Store>, StoreError> {
    let store: Arc<dyn Store> = if is_postgres(url) {
        Arc::new(PgStore::open(url, pool, keyring).await?)
    } else {
        Arc::new(SqliteStore::open(url, keyring).await?)
    };
    tracing::info!(database = %redacted_url(url), "store opened");
    Ok(store)
}

/// Whether `url` names a PostgreSQL database (else SQLite).
pub fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// `url` as logs and `Debug` may show it: without user info (`user:password@`) or a query
/// string (`?password=`).
pub fn redacted_url(url: &str) -> String {
    let without_query = url.split_once('?').map_or(url, |(base, _)| base);
    aurora_core::text::redact_user_info(without_query).into_owned()
}

/// A store revision. 0 means nothing was ever written; the first write is revision 1.
pub type Revision = u64;

/// The random identity of a store's history (see `migrations/0002_store_id.sql`).
pub type StoreId = [u8; 16];

/// The control plane's durable state. Implementations must be safe to share between tasks and
/// between control-plane processes pointing at the same database.
/// Usage (reports and their totals) is the [`UsageStore`] supertrait, in `store/usage.rs`.
///
/// Every mutation takes the [`Actor`] behind it and commits, with its revision, one audit
/// record ([`AuditLog`]).
#[async_trait]
pub trait Store: UsageStore + AuditLog + Send + Sync + std::fmt::Debug + 'static {
    /// Creates a key; fails with [`StoreError::KeyNameTaken`] if the name is in use.
    async fn create_key(&self, key: NewKey, actor: &Actor) -> Result<(KeyRecord, Revision), StoreError>;
    async fn get_key(&self, id: Uuid) -> Result<KeyRecord, StoreError>;
    /// Up to `limit` keys with ids greater than `after`, in id (creation) order.
    async fn list_keys(&self, after: Option<Uuid>, limit: u32) -> Result<Vec<KeyRecord>, StoreError>;
    /// Applies the fields set in `patch`. Enabling a revoked key fails with
    /// [`StoreError::KeyRevoked`].
    async fn update_key(&self, id: Uuid, patch: KeyPatch, actor: &Actor) -> Result<(KeyRecord, Revision), StoreError>;
    /// Disables the key for good and stamps `revoked_at`.
    async fn revoke_key(&self, id: Uuid, actor: &Actor) -> Result<(KeyRecord, Revision), StoreError>;
    async fn delete_key(&self, id: Uuid, actor: &Actor) -> Result<Revision, StoreError>;
    /// Gives the key `secret` as its current secret; the one it replaces stays accepted for
    /// `grace_secs` seconds (0: not at once), replacing any previous secret still in grace.
    /// Fails with [`StoreError::RotateRevoked`] for a revoked key (see `store/key_rotation.rs`).
    async fn rotate_key(
        &self,
        id: Uuid,
        secret: NewSecret,
        grace_secs: u64,
        actor: &Actor,
    ) -> Result<(KeyRecord, Revision), StoreError>;

    /// The providers that have a record, in [`ProviderKind::ALL`] order.
    async fn list_providers(&self) -> Result<Vec<ProviderRecord>, StoreError>;
    /// Creates the provider's record if missing (enabled, default base URL, no credential),
    /// then applies the fields set in `patch`.
    async fn upsert_provider(
        &self,
        kind: ProviderKind,
        patch: ProviderPatch,
        actor: &Actor,
    ) -> Result<(ProviderRecord, Revision), StoreError>;
    async fn delete_provider(&self, kind: ProviderKind, actor: &Actor) -> Result<Revision, StoreError>;

    /// Adds a named credential to the provider's set, creating the provider's record if it has
    /// none; fails with [`StoreError::CredentialNameTaken`] if the name is in use.
    async fn add_credential(
        &self,
        kind: ProviderKind,
        credential: NewCredential,
        actor: &Actor,
    ) -> Result<(ProviderRecord, Revision), StoreError>;
    /// Changes a credential's enabled flag or weight.
    async fn update_credential(
        &self,
        kind: ProviderKind,
        name: &str,
        patch: CredentialPatch,
        actor: &Actor,
    ) -> Result<(ProviderRecord, Revision), StoreError>;
    async fn remove_credential(
        &self,
        kind: ProviderKind,
        name: &str,
        actor: &Actor,
    ) -> Result<(ProviderRecord, Revision), StoreError>;

    /// The settings, the enabled providers and the head revision, read together.
    async fn get_settings(&self) -> Result<SettingsView, StoreError>;
    async fn update_settings(
        &self,
        patch: SettingsPatch,
        actor: &Actor,
    ) -> Result<(SettingsView, Revision), StoreError>;

    /// Applies the environment at startup in one transaction. Returns the revision it committed,
    /// or `None` when the store already matched and nothing was written.
    async fn bootstrap(&self, bootstrap: &Bootstrap, actor: &Actor) -> Result<Option<Revision>, StoreError>;

    /// The last committed revision.
    async fn head_revision(&self) -> Result<Revision, StoreError>;
    /// The deltas of revisions `after + 1 ..= after + limit` that are committed, in order. The
    /// result is complete (no revision missing) when `after + 1 >= oldest_retained_revision()`.
    async fn changes_since(&self, after: Revision, limit: u32) -> Result<Vec<Delta>, StoreError>;
    /// The oldest revision still in the change log, or `head + 1` when the log is empty. A
    /// replica at revision `r` can catch up from deltas alone iff `r + 1 >= this`.
    async fn oldest_retained_revision(&self) -> Result<Revision, StoreError>;
    /// Drops change-log entries older than the newest `keep_revisions` revisions; returns how
    /// many revisions were dropped. Never touches the objects themselves or the audit trail.
    async fn compact_changes(&self, keep_revisions: u64) -> Result<u64, StoreError>;
    /// Every key, provider, the settings and the master-key hash at one consistent revision.
    async fn load_snapshot(&self) -> Result<Snapshot, StoreError>;

    /// Re-wraps every credential's data key under the keyring's current key, under the head
    /// row's lock (safe while other replicas run); allocates no revision.
    async fn reencrypt(&self) -> Result<Reencrypted, StoreError>;

    /// Closes the store consistently at shutdown (for SQLite: checkpoint the WAL, then close
    /// every connection). Calls after it fail.
    async fn close(&self);

    /// The random id of this store's history, created with the database: revision N of this
    /// store is revision N of no other.
    fn store_id(&self) -> StoreId;

    /// Makes one small durable write that allocates no revision and changes no object, to find
    /// out whether the store can write (see [`Store::write_status`]).
    async fn probe_write(&self) -> Result<(), StoreError>;

    /// Whether the store can write, as its latest write or probe found. A failed write whose
    /// cause is the environment (full disk, I/O error) turns it to `CannotWrite`; the next
    /// successful one turns it back.
    fn write_status(&self) -> watch::Receiver<WriteStatus>;

    /// A receiver whose value is the newest revision this process committed or observed. It is
    /// updated right after each commit, so the config stream can push every commit at once.
    fn watch_head(&self) -> watch::Receiver<Revision>;

    /// Where control-plane replicas sharing this store publish the data planes they serve, so
    /// each sees the whole fleet; `None` when the store belongs to one process (SQLite).
    fn presence_table(&self) -> Option<Arc<dyn PresenceTable>> {
        None
    }
}

#[cfg(test)]
mod audit_suite;
#[cfg(test)]
mod credentials_suite;
#[cfg(test)]
mod key_rotation_suite;
#[cfg(test)]
mod limits_suite;
#[cfg(test)]
pub(crate) mod suite;
#[cfg(test)]
pub(crate) mod test_db;
#[cfg(test)]
mod usage_suite;
