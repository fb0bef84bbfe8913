//! The store's one implementation, written once for every SQL backend.
//!
//! SQLite and PostgreSQL run the same statements (numbered `$1` placeholders, which both
//! accept), decode rows with the same code and share every mutation's logic: what to check,
//! which record to build, which change-log entries to append. A backend ([`Dialect`]) only says
//! how it opens its transactions, how it tells other processes about a commit and how it keeps
//! compaction to one process at a time; `sqlite.rs` and `postgres.rs` open their databases and
//! add what only they have (a WAL checkpoint, a `LISTEN` connection).
//!
//! Both schemas use the same column names and the same value types as sqlx sees them: ids as
//! text, timestamps as Unix milliseconds in 64-bit integers, flags as booleans, hashes and
//! payloads as bytes.

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use aurora_core::{BaseUrl, DefaultHeaders, KeyHash, KeyLimits, ProviderKind, ProviderSet};
use aurora_proto::v1::{Change, Delta};
use futures_util::future::BoxFuture;
use prost::Message;
use sqlx::pool::PoolConnection;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Row, Type};
use tokio::sync::watch;
use uuid::Uuid;

use super::at_rest;
use super::audit::{Actor, AuditEvent};
use super::change::ChangeEntry;
use super::credentials::{CredentialPatch, NewCredential};
use super::error::describe;
use super::key_endpoints::{endpoint_list, parse_endpoint_list};
use super::key_limits;
use super::model::{
    ClientIdentity, KeyPatch, KeyRecord, NewKey, ProviderPatch, ProviderRecord, Settings, SettingsPatch, SettingsView,
    Snapshot,
};
use super::presence::PresenceTable;
use super::sealed::Keyring;
use super::tx::Tx;
use super::write_health::{WriteHealth, WriteStatus};
use super::{NewSecret, Revision, Store, StoreError, StoreId};
use crate::bootstrap::{Bootstrap, BootstrapState};
use crate::time;

/// What differs between the SQL backends.
pub trait Dialect: Database {
    /// Starts a write transaction. Its first statement locks the head row either way; SQLite
    /// takes the database's write lock up front, so a reader never has to upgrade.
    const BEGIN_WRITE: &'static str;
    /// Starts a read-only transaction that sees one consistent state for all its statements.
    const BEGIN_SNAPSHOT: &'static str;
    /// Runs inside a write transaction just before `COMMIT`, with the revision as text in
    /// `$1`, to tell other processes on the same database about the commit once it lands.
    const NOTIFY_COMMIT: Option<&'static str>;
    /// Runs first in the compaction transaction and returns whether this process may compact
    /// now; `None` when the database already serializes compactions by itself.
    const TRY_LOCK_COMPACTION: Option<&'static str>;

    /// Whether failing to get a connection means the database server is unreachable (down,
    /// refusing connections, too slow to answer) rather than every local connection in use.
    const IS_SERVER: bool;

    /// Makes the database files self-contained before the pool closes (a WAL checkpoint).
    fn before_close(pool: &Pool<Self>) -> BoxFuture<'_, ()>;

    /// Where replicas sharing this database publish their data planes, if they can share one.
    fn presence_table(pool: &Pool<Self>) -> Option<Arc<dyn PresenceTable>>;

    /// How many rows a statement changed (not part of sqlx's generic interface).
    fn rows_affected(result: &Self::QueryResult) -> u64;
}

/// A [`Store`] on a SQL database through a sqlx pool.
#[derive(Debug)]
pub struct SqlStore<DB: Database> {
    pub(super) pool: Pool<DB>,
    head: Arc<watch::Sender<Revision>>,
    pub(super) health: Arc<WriteHealth>,
    store_id: StoreId,
    /// Seals and opens every credential the store holds (`sealed.rs`, `at_rest.rs`).
    pub(super) keyring: Keyring,
    /// A backend task (PostgreSQL's `LISTEN` connection) that ends when the store is closed or
    /// its last clone dropped.
    background: Option<Arc<Background>>,
}

impl<DB: Database> Clone for SqlStore<DB> {
    fn clone(&self) -> Self {
        SqlStore {
            pool: self.pool.clone(),
            head: Arc::clone(&self.head),
            health: Arc::clone(&self.health),
            store_id: self.store_id,
            keyring: self.keyring.clone(),
            background: self.background.clone(),
        }
    }
}

impl<DB: Database> SqlStore<DB> {
    /// Advances the watched head; commits may finish their notification out of order, and
    /// other processes' commits are learnt late, so it only ever moves forward.
    pub(super) fn observe(&self, revision: Revision) {
        observe(&self.head, revision);
    }

    /// The sender behind [`Store::watch_head`], for a backend task that learns about other
    /// processes' commits.
    pub(super) fn head_sender(&self) -> Arc<watch::Sender<Revision>> {
        Arc::clone(&self.head)
    }

    pub(super) fn set_background(&mut self, task: tokio::task::AbortHandle) {
        self.background = Some(Arc::new(Background(task)));
    }
}

/// Aborts its task when dropped.
#[derive(Debug)]
struct Background(tokio::task::AbortHandle);

impl Drop for Background {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// See [`SqlStore::observe`].
pub(super) fn observe(head: &watch::Sender<Revision>, revision: Revision) {
    head.send_if_modified(|head| {
        let newer = revision > *head;
        if newer {
            *head = revision;
        }
        newer
    });
}

/// The columns `insert_key` writes.
macro_rules! key_base_columns {
    () => {
        "id, name, description, hash, redacted, enabled, expires_at, allowed_providers, created_at, updated_at, revoked_at, \
         allowed_endpoints, previous_hash, previous_redacted, previous_expires_at"
    };
}

/// The columns a key is read from: its base columns and its limits (`write_key_limits`).
macro_rules! key_columns {
    () => {
        concat!(
            key_base_columns!(),
            ", limit_rpm, limit_tpm, limit_concurrent, limit_budget_tokens, limit_budget_period"
        )
    };
}

// The bounds say what the shared code needs from a sqlx database: its connections execute
// queries, and the schema's value types (and `Option`s of them) encode and decode. Both impl
// blocks repeat them: Rust does not carry such bounds along with a trait.
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
    /// Wraps a migrated pool: reads the head and the store id, then makes sure every credential
    /// is sealed under a key of `keyring` (sealing any left in plaintext by an older version).
    pub(super) async fn new(pool: Pool<DB>, keyring: Keyring) -> Result<Self, StoreError> {
        let mut conn = pool.acquire().await?;
        let head = Self::read_head(&mut conn).await?;
        let id: Vec<u8> = sqlx::query_scalar("SELECT store_id FROM head WHERE id = 1").fetch_one(&mut *conn).await?;
        let store_id = StoreId::try_from(id.as_slice()).map_err(|_| StoreError::Corrupt("head.store_id".into()))?;
        drop(conn);
        let store = SqlStore {
            pool,
            head: Arc::new(watch::channel(head).0),
            health: Arc::new(WriteHealth::new()),
            store_id,
            keyring,
            background: None,
        };
        store.seal_at_rest().await?;
        Ok(store)
    }

    /// Makes the database self-contained, then closes every connection. Calls after the first
    /// find the pool closed and do nothing.
    pub(super) async fn close_pool(&self) {
        if let Some(task) = &self.background {
            task.0.abort();
        }
        if self.pool.is_closed() {
            return;
        }
        DB::before_close(&self.pool).await;
        self.pool.close().await;
    }

    /// Takes a connection from the pool. A server that cannot give one is named unreachable:
    /// that is what readiness and the admin API must say (not "internal", not "busy").
    pub(super) async fn conn(&self) -> Result<PoolConnection<DB>, StoreError> {
        self.pool.acquire().await.map_err(|err| match err {
            sqlx::Error::PoolClosed => StoreError::Database(err),
            err if DB::IS_SERVER => StoreError::Unreachable(describe(&err)),
            err => StoreError::Database(err),
        })
    }

    /// Takes a connection and starts a transaction on it.
    pub(super) async fn begin(&self, begin: &'static str) -> Result<Tx<DB>, StoreError> {
        Ok(Tx::begin(self.conn().await?, begin).await?)
    }

    /// Feeds a write's outcome to the store's write status (for writes outside this file).
    pub(super) fn track_write<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        self.health.track(result)
    }

    /// Starts a write transaction and allocates its revision. Dropping the transaction without
    /// committing rolls the revision back too.
    pub(super) async fn begin_write(&self) -> Result<(Tx<DB>, Revision), StoreError> {
        let mut tx = self.begin(DB::BEGIN_WRITE).await?;
        let revision: i64 =
            sqlx::query_scalar("UPDATE head SET revision = revision + 1 WHERE id = 1 RETURNING revision")
                .fetch_one(&mut *tx)
                .await?;
        Ok((tx, to_revision(revision)?))
    }

    /// Appends `entries` to the change log and the revision's audit record (what `actor` did:
    /// `event`) under `revision`, commits, logs the record and tells watchers. The only way a
    /// revision commits, so none commits without its audit record.
    pub(super) async fn commit(
        &self,
        mut tx: Tx<DB>,
        revision: Revision,
        entries: &[ChangeEntry],
        now: SystemTime,
        actor: &Actor,
        event: AuditEvent,
    ) -> Result<(), StoreError> {
        for (seq, entry) in entries.iter().enumerate() {
            sqlx::query(
                "INSERT INTO changes (revision, seq, kind, object_id, op, payload, committed_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(to_i64(revision))
            .bind(i64::try_from(seq).unwrap_or(i64::MAX))
            .bind(entry.kind)
            .bind(entry.object_id.clone())
            .bind(entry.op)
            .bind(entry.payload())
            .bind(time::to_millis(now))
            .execute(&mut *tx)
            .await?;
        }
        let record = Self::append_audit(&mut tx, revision, now, actor, &event).await?;
        if let Some(notify) = DB::NOTIFY_COMMIT {
            // Delivered by the database on commit, never for a transaction that rolls back.
            sqlx::query(notify).bind(revision.to_string()).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        super::audit::log(&record);
        self.observe(revision);
        Ok(())
    }

    pub(super) async fn read_head(conn: &mut DB::Connection) -> Result<Revision, StoreError> {
        let revision: i64 = sqlx::query_scalar("SELECT revision FROM head WHERE id = 1").fetch_one(&mut *conn).await?;
        to_revision(revision)
    }

    async fn ensure_name_free(conn: &mut DB::Connection, name: &str, except: Option<Uuid>) -> Result<(), StoreError> {
        let holder: Option<String> = sqlx::query_scalar("SELECT id FROM keys WHERE name = $1")
            .bind(name.to_owned())
            .fetch_optional(&mut *conn)
            .await?;
        match holder {
            Some(holder) if Some(holder.as_str()) != except.map(|id| id.to_string()).as_deref() => {
                Err(StoreError::KeyNameTaken(name.to_owned()))
            }
            _ => Ok(()),
        }
    }

    pub(super) async fn fetch_key(conn: &mut DB::Connection, id: Uuid) -> Result<KeyRecord, StoreError> {
        let row = sqlx::query(concat!("SELECT ", key_columns!(), " FROM keys WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(&mut *conn)
            .await?;
        row.as_ref().map(Self::key_from_row).transpose()?.ok_or(StoreError::KeyNotFound(id))
    }

    async fn insert_key(conn: &mut DB::Connection, record: &KeyRecord) -> Result<(), StoreError> {
        sqlx::query(concat!(
            "INSERT INTO keys (",
            key_base_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
        ))
        .bind(record.id.to_string())
        .bind(record.name.clone())
        .bind(record.description.clone())
        .bind(record.hash.as_bytes().to_vec())
        .bind(record.redacted.clone())
        .bind(record.enabled)
        .bind(record.expires_at.map(time::to_millis))
        .bind(provider_list(record.allowed_providers))
        .bind(time::to_millis(record.created_at))
        .bind(time::to_millis(record.updated_at))
        .bind(record.revoked_at.map(time::to_millis))
        .bind(endpoint_list(&record.allowed_endpoints))
        .bind(record.previous.as_ref().map(|p| p.hash.as_bytes().to_vec()))
        .bind(record.previous.as_ref().map(|p| p.redacted.clone()))
        .bind(record.previous.as_ref().map(|p| time::to_millis(p.expires_at)))
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    async fn write_key(conn: &mut DB::Connection, record: &KeyRecord) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE keys SET name = $1, description = $2, enabled = $3, expires_at = $4, allowed_providers = $5, \
             updated_at = $6, revoked_at = $7, allowed_endpoints = $9 WHERE id = $8",
        )
        .bind(record.name.clone())
        .bind(record.description.clone())
        .bind(record.enabled)
        .bind(record.expires_at.map(time::to_millis))
        .bind(provider_list(record.allowed_providers))
        .bind(time::to_millis(record.updated_at))
        .bind(record.revoked_at.map(time::to_millis))
        .bind(record.id.to_string())
        .bind(endpoint_list(&record.allowed_endpoints))
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    fn key_from_row(row: &DB::Row) -> Result<KeyRecord, StoreError> {
        let id: String = row.try_get("id")?;
        let hash: Vec<u8> = row.try_get("hash")?;
        let allowed: String = row.try_get("allowed_providers")?;
        Ok(KeyRecord {
            id: Uuid::parse_str(&id).map_err(|_| StoreError::Corrupt("keys.id".into()))?,
            name: row.try_get("name")?,
            description: row.try_get("description")?,
            hash: KeyHash::from_slice(&hash).ok_or_else(|| StoreError::Corrupt("keys.hash".into()))?,
            redacted: row.try_get("redacted")?,
            enabled: row.try_get("enabled")?,
            expires_at: row.try_get::<Option<i64>, _>("expires_at")?.map(time::from_millis),
            allowed_providers: ProviderSet::parse_list(&allowed)
                .map_err(|_| StoreError::Corrupt("keys.allowed_providers".into()))?,
            created_at: time::from_millis(row.try_get("created_at")?),
            updated_at: time::from_millis(row.try_get("updated_at")?),
            revoked_at: row.try_get::<Option<i64>, _>("revoked_at")?.map(time::from_millis),
            allowed_endpoints: parse_endpoint_list(&row.try_get::<String, _>("allowed_endpoints")?)?,
            previous: Self::previous_from_row(row)?,
            limits: Self::limits_from_row(row, "keys", "limit_")?,
        })
    }

    /// The five limit columns `{prefix}rpm` ... `{prefix}budget_period` of `row`.
    fn limits_from_row(row: &DB::Row, table: &str, prefix: &str) -> Result<Option<KeyLimits>, StoreError> {
        let mut numbers = [None; 4];
        for (number, suffix) in numbers.iter_mut().zip(key_limits::COLUMNS) {
            *number = row.try_get::<Option<i64>, _>(format!("{prefix}{suffix}").as_str())?;
        }
        let period: Option<String> = row.try_get(format!("{prefix}budget_period").as_str())?;
        key_limits::from_columns(table, prefix, numbers, period)
    }

    /// Writes a key's own limits (a statement of its own, beside `insert_key`/`write_key`).
    async fn write_key_limits(conn: &mut DB::Connection, record: &KeyRecord) -> Result<(), StoreError> {
        let ([rpm, tpm, concurrent, budget], period) = key_limits::columns(record.limits.as_ref());
        sqlx::query(
            "UPDATE keys SET limit_rpm = $1, limit_tpm = $2, limit_concurrent = $3, limit_budget_tokens = $4, \
             limit_budget_period = $5 WHERE id = $6",
        )
        .bind(rpm)
        .bind(tpm)
        .bind(concurrent)
        .bind(budget)
        .bind(period)
        .bind(record.id.to_string())
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// The providers with a record, in `ProviderKind::ALL` order.
    pub(super) async fn fetch_providers(
        keyring: &Keyring,
        conn: &mut DB::Connection,
    ) -> Result<Vec<ProviderRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, enabled, base_url, default_headers, client_cert, client_key, client_key_sealed, ca_pem, \
             updated_at FROM providers",
        )
        .fetch_all(&mut *conn)
        .await?;
        let credentials = Self::fetch_credentials(keyring, conn).await?;
        let mut records = rows
            .iter()
            .map(|row| {
                let name: String = row.try_get("name")?;
                let base_url: String = row.try_get("base_url")?;
                // The sealed column, or the plaintext one an older version wrote, until
                // `at_rest::seal_at_rest` seals it at the next start.
                let open = |column: &str, plain: &str| -> Result<Option<String>, StoreError> {
                    match row.try_get::<Option<Vec<u8>>, _>(column)? {
                        Some(sealed) => at_rest::open_text(keyring, &name, column, &sealed).map(Some),
                        None => Ok(row.try_get::<Option<String>, _>(plain)?),
                    }
                };
                Ok(ProviderRecord {
                    kind: name.parse().map_err(|_| StoreError::Corrupt("providers.name".into()))?,
                    enabled: row.try_get("enabled")?,
                    base_url: BaseUrl::parse(&base_url)
                        .map_err(|_| StoreError::Corrupt("providers.base_url".into()))?,
                    credentials: super::credentials::CredentialSet::new(
                        credentials.iter().filter(|(provider, _)| *provider == name).map(|(_, c)| c.clone()).collect(),
                    ),
                    default_headers: DefaultHeaders::from_lines(&row.try_get::<String, _>("default_headers")?)
                        .map_err(|_| StoreError::Corrupt("providers.default_headers".into()))?,
                    client_identity: match (
                        row.try_get::<Option<String>, _>("client_cert")?,
                        open("client_key_sealed", "client_key")?,
                    ) {
                        (Some(cert), Some(key)) => Some(ClientIdentity::new(cert, key)),
                        (None, None) => None,
                        _ => return Err(StoreError::Corrupt("providers.client_cert".into())),
                    },
                    ca_pem: row.try_get("ca_pem")?,
                    updated_at: time::from_millis(row.try_get("updated_at")?),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        records.sort_by_key(|record| record.kind);
        Ok(records)
    }

    /// Writes the record with its secrets sealed (its credential set too, `credentials.rs`); the
    /// plaintext columns of older versions are left NULL.
    pub(super) async fn write_provider(
        keyring: &Keyring,
        conn: &mut DB::Connection,
        record: &ProviderRecord,
    ) -> Result<(), StoreError> {
        let name = record.kind.as_str();
        let client_key = record
            .client_identity
            .as_ref()
            .map(|identity| at_rest::seal_text(keyring, name, "client_key_sealed", identity.expose_key()))
            .transpose()?;
        sqlx::query(
            "INSERT INTO providers (name, enabled, base_url, default_headers, client_cert, client_key, \
             client_key_sealed, ca_pem, updated_at) VALUES ($1, $2, $3, $4, $5, NULL, $6, $7, $8) \
             ON CONFLICT (name) DO UPDATE SET enabled = excluded.enabled, base_url = excluded.base_url, \
             default_headers = excluded.default_headers, client_cert = excluded.client_cert, client_key = NULL, \
             client_key_sealed = excluded.client_key_sealed, ca_pem = excluded.ca_pem, \
             updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(record.enabled)
        .bind(record.base_url.as_str().to_owned())
        .bind(record.default_headers.to_lines())
        .bind(record.client_identity.as_ref().map(|c| c.certificate_pem.clone()))
        .bind(client_key)
        .bind(record.ca_pem.clone())
        .bind(time::to_millis(record.updated_at))
        .execute(&mut *conn)
        .await?;
        Self::write_credentials(keyring, conn, name, &record.credentials).await?;
        Ok(())
    }

    pub(super) async fn fetch_settings(
        keyring: &Keyring,
        conn: &mut DB::Connection,
    ) -> Result<(Settings, Option<KeyHash>), StoreError> {
        let row = sqlx::query(
            "SELECT passthrough_enabled, v1_alias_enabled, master_key_hash, master_key_sealed, \
                         default_limit_rpm, default_limit_tpm, default_limit_concurrent, default_limit_budget_tokens, \
                         default_limit_budget_period, limit_fallback FROM settings WHERE id = 1",
        )
        .fetch_one(&mut *conn)
        .await?;
        let settings = Settings {
            passthrough_enabled: row.try_get("passthrough_enabled")?,
            v1_alias_enabled: row.try_get("v1_alias_enabled")?,
            default_key_limits: Self::limits_from_row(&row, "settings", "default_limit_")?,
            limit_fallback: key_limits::parse_fallback(&row.try_get::<String, _>("limit_fallback")?)?,
        };
        let bytes = match row.try_get::<Option<Vec<u8>>, _>("master_key_sealed")? {
            Some(sealed) => Some(at_rest::open_bytes(keyring, "settings", "master_key_sealed", &sealed)?),
            // Written by an older version; sealed at the next start.
            None => row.try_get::<Option<Vec<u8>>, _>("master_key_hash")?,
        };
        let hash = bytes
            .map(|bytes| {
                KeyHash::from_slice(&bytes).ok_or_else(|| StoreError::Corrupt("settings.master_key_sealed".into()))
            })
            .transpose()?;
        Ok((settings, hash))
    }

    async fn write_settings(conn: &mut DB::Connection, settings: Settings, now: SystemTime) -> Result<(), StoreError> {
        let ([rpm, tpm, concurrent, budget], period) = key_limits::columns(settings.default_key_limits.as_ref());
        sqlx::query(
            "UPDATE settings SET passthrough_enabled = $1, v1_alias_enabled = $2, updated_at = $3, \
             default_limit_rpm = $4, default_limit_tpm = $5, default_limit_concurrent = $6, \
             default_limit_budget_tokens = $7, default_limit_budget_period = $8, limit_fallback = $9 WHERE id = 1",
        )
        .bind(settings.passthrough_enabled)
        .bind(settings.v1_alias_enabled)
        .bind(time::to_millis(now))
        .bind(rpm)
        .bind(tpm)
        .bind(concurrent)
        .bind(budget)
        .bind(period)
        .bind(settings.limit_fallback.as_str())
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    async fn settings_view(
        keyring: &Keyring,
        conn: &mut DB::Connection,
        revision: Revision,
    ) -> Result<SettingsView, StoreError> {
        let (settings, _) = Self::fetch_settings(keyring, conn).await?;
        let enabled_providers =
            Self::fetch_providers(keyring, conn).await?.into_iter().filter(|p| p.enabled).map(|p| p.kind).collect();
        Ok(SettingsView { settings, enabled_providers, revision })
    }
}

#[async_trait]
impl<DB> Store for SqlStore<DB>
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
    async fn create_key(&self, key: NewKey, actor: &Actor) -> Result<(KeyRecord, Revision), StoreError> {
        self.health.track(
            async {
                let (mut tx, revision) = self.begin_write().await?;
                Self::ensure_name_free(&mut tx, &key.name, None).await?;
                let now = time::now();
                let record = KeyRecord {
                    id: Uuid::now_v7(),
                    name: key.name,
                    description: key.description,
                    hash: key.hash,
                    redacted: key.redacted,
                    enabled: key.enabled,
                    expires_at: key.expires_at,
                    allowed_providers: key.allowed_providers,
                    allowed_endpoints: key.allowed_endpoints,
                    limits: key.limits,
                    created_at: now,
                    updated_at: now,
                    revoked_at: None,
                    previous: None,
                };
                Self::insert_key(&mut tx, &record).await?;
                Self::write_key_limits(&mut tx, &record).await?;
                let event = AuditEvent::key_created(&record);
                self.commit(tx, revision, &[ChangeEntry::key_upsert(&record)], now, actor, event).await?;
                Ok((record, revision))
            }
            .await,
        )
    }

    async fn rotate_key(
        &self,
        id: Uuid,
        secret: NewSecret,
        grace_secs: u64,
        actor: &Actor,
    ) -> Result<(KeyRecord, Revision), StoreError> {
        self.health.track(self.rotate_key_tx(id, secret, grace_secs, actor).await)
    }

    async fn get_key(&self, id: Uuid) -> Result<KeyRecord, StoreError> {
        let mut conn = self.conn().await?;
        Self::fetch_key(&mut conn, id).await
    }

    async fn list_keys(&self, after: Option<Uuid>, limit: u32) -> Result<Vec<KeyRecord>, StoreError> {
        let after = after.map(|id| id.to_string()).unwrap_or_default();
        let rows = sqlx::query(concat!("SELECT ", key_columns!(), " FROM keys WHERE id > $1 ORDER BY id LIMIT $2"))
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&mut *self.conn().await?)
            .await?;
        rows.iter().map(Self::key_from_row).collect()
    }

    async fn update_key(&self, id: Uuid, patch: KeyPatch, actor: &Actor) -> Result<(KeyRecord, Revision), StoreError> {
        self.health.track(
            async {
                let (mut tx, revision) = self.begin_write().await?;
                let mut record = Self::fetch_key(&mut tx, id).await?;
                let before = record.clone();
                if patch.enabled == Some(true) && record.revoked_at.is_some() {
                    return Err(StoreError::KeyRevoked(id));
                }
                if let Some(name) = patch.name {
                    Self::ensure_name_free(&mut tx, &name, Some(id)).await?;
                    record.name = name;
                }
                if let Some(description) = patch.description {
                    record.description = description;
                }
                if let Some(enabled) = patch.enabled {
                    record.enabled = enabled;
                }
                if let Some(expires_at) = patch.expires_at {
                    record.expires_at = expires_at;
                }
                if let Some(allowed) = patch.allowed_providers {
                    record.allowed_providers = allowed;
                }
                if let Some(allowed) = patch.allowed_endpoints {
                    record.allowed_endpoints = allowed;
                }
                if let Some(update) = patch.limits {
                    record.limits =
                        update.apply(record.limits).map_err(|err| StoreError::InvalidLimits("limits", err))?;
                }
                let now = time::now();
                record.updated_at = now;
                Self::write_key(&mut tx, &record).await?;
                if record.limits != before.limits {
                    Self::write_key_limits(&mut tx, &record).await?;
                }
                let event = AuditEvent::key_updated(&before, &record);
                self.commit(tx, revision, &[ChangeEntry::key_upsert(&record)], now, actor, event).await?;
                Ok((record, revision))
            }
            .await,
        )
    }

    async fn revoke_key(&self, id: Uuid, actor: &Actor) -> Result<(KeyRecord, Revision), StoreError> {
        self.health.track(
            async {
                let (mut tx, revision) = self.begin_write().await?;
                let mut record = Self::fetch_key(&mut tx, id).await?;
                if record.revoked_at.is_some() {
                    return Err(StoreError::KeyAlreadyRevoked(id));
                }
                let now = time::now();
                record.enabled = false;
                record.revoked_at = Some(now);
                record.updated_at = now;
                Self::write_key(&mut tx, &record).await?;
                let event = AuditEvent::key_revoked(&record);
                self.commit(tx, revision, &[ChangeEntry::key_upsert(&record)], now, actor, event).await?;
                Ok((record, revision))
            }
            .await,
        )
    }

    async fn delete_key(&self, id: Uuid, actor: &Actor) -> Result<Revision, StoreError> {
        self.health.track(
            async {
                let (mut tx, revision) = self.begin_write().await?;
                let record = Self::fetch_key(&mut tx, id).await?;
                sqlx::query("DELETE FROM keys WHERE id = $1").bind(id.to_string()).execute(&mut *tx).await?;
                let event = AuditEvent::key_deleted(&record);
                self.commit(tx, revision, &[ChangeEntry::key_delete(&record)], time::now(), actor, event).await?;
                Ok(revision)
            }
            .await,
        )
    }

    async fn list_providers(&self) -> Result<Vec<ProviderRecord>, StoreError> {
        let mut conn = self.conn().await?;
        Self::fetch_providers(&self.keyring, &mut conn).await
    }

    async fn upsert_provider(
        &self,
        kind: ProviderKind,
        patch: ProviderPatch,
        actor: &Actor,
    ) -> Result<(ProviderRecord, Revision), StoreError> {
        self.health.track(
            async {
                let (mut tx, revision) = self.begin_write().await?;
                let now = time::now();
                let current = Self::fetch_providers(&self.keyring, &mut tx).await?.into_iter().find(|p| p.kind == kind);
                let mut record = current.clone().unwrap_or_else(|| ProviderRecord::new_default(kind, now));
                patch.apply(&mut record, now);
                record.updated_at = now;
                Self::write_provider(&self.keyring, &mut tx, &record).await?;
                let event = AuditEvent::provider_upserted(current.as_ref(), &record);
                self.commit(tx, revision, &[ChangeEntry::provider_upsert(&record)], now, actor, event).await?;
                Ok((record, revision))
            }
            .await,
        )
    }

    async fn add_credential(
        &self,
        kind: ProviderKind,
        credential: NewCredential,
        actor: &Actor,
    ) -> Result<(ProviderRecord, Revision), StoreError> {
        self.health.track(self.add_credential_tx(kind, credential, actor).await)
    }

    async fn update_credential(
        &self,
        kind: ProviderKind,
        name: &str,
        patch: CredentialPatch,
        actor: &Actor,
    ) -> Result<(ProviderRecord, Revision), StoreError> {
        self.health.track(self.update_credential_tx(kind, name, patch, actor).await)
    }

    async fn remove_credential(
        &self,
        kind: ProviderKind,
        name: &str,
        actor: &Actor,
    ) -> Result<(ProviderRecord, Revision), StoreError> {
        self.health.track(self.remove_credential_tx(kind, name, actor).await)
    }

    async fn delete_provider(&self, kind: ProviderKind, actor: &Actor) -> Result<Revision, StoreError> {
        self.health.track(
            async {
                let (mut tx, revision) = self.begin_write().await?;
                let deleted =
                    sqlx::query("DELETE FROM providers WHERE name = $1").bind(kind.as_str()).execute(&mut *tx).await?;
                if DB::rows_affected(&deleted) == 0 {
                    return Err(StoreError::ProviderNotFound(kind));
                }
                Self::delete_credentials(&mut tx, kind.as_str()).await?;
                let event = AuditEvent::provider_deleted(kind);
                self.commit(tx, revision, &[ChangeEntry::provider_delete(kind)], time::now(), actor, event).await?;
                Ok(revision)
            }
            .await,
        )
    }

    async fn get_settings(&self) -> Result<SettingsView, StoreError> {
        let mut tx = self.begin(DB::BEGIN_SNAPSHOT).await?;
        let revision = Self::read_head(&mut tx).await?;
        let view = Self::settings_view(&self.keyring, &mut tx, revision).await?;
        tx.commit().await?;
        Ok(view)
    }

    async fn update_settings(
        &self,
        patch: SettingsPatch,
        actor: &Actor,
    ) -> Result<(SettingsView, Revision), StoreError> {
        self.health.track(
            async {
                let (mut tx, revision) = self.begin_write().await?;
                let (mut settings, _) = Self::fetch_settings(&self.keyring, &mut tx).await?;
                let before = settings;
                patch.apply(&mut settings).map_err(|err| StoreError::InvalidLimits("default_key_limits", err))?;
                let now = time::now();
                Self::write_settings(&mut tx, settings, now).await?;
                let view = Self::settings_view(&self.keyring, &mut tx, revision).await?;
                let event = AuditEvent::settings_updated(before, settings);
                self.commit(tx, revision, &[ChangeEntry::settings(settings)], now, actor, event).await?;
                Ok((view, revision))
            }
            .await,
        )
    }

    async fn bootstrap(&self, bootstrap: &Bootstrap, actor: &Actor) -> Result<Option<Revision>, StoreError> {
        self.health.track(
            async {
                let (mut tx, revision) = self.begin_write().await?;
                let (settings, master_key_hash) = Self::fetch_settings(&self.keyring, &mut tx).await?;
                let state = BootstrapState {
                    first_start: revision == 1,
                    settings,
                    providers: Self::fetch_providers(&self.keyring, &mut tx).await?,
                    master_key_hash,
                };
                let now = time::now();
                let writes = bootstrap.plan(&state, now);
                if writes.is_empty() {
                    // Rolls back the revision allocated above: restarts with the same environment
                    // leave no trace in the change log.
                    tx.rollback().await?;
                    return Ok(None);
                }
                let event =
                    AuditEvent::bootstrap(state.settings, &state.providers, state.master_key_hash.is_some(), &writes);
                let mut entries = Vec::new();
                if let Some(settings) = writes.settings {
                    Self::write_settings(&mut tx, settings, now).await?;
                    entries.push(ChangeEntry::settings(settings));
                }
                for record in &writes.providers {
                    Self::write_provider(&self.keyring, &mut tx, record).await?;
                    entries.push(ChangeEntry::provider_upsert(record));
                }
                if let Some(hash) = writes.master_key_hash {
                    let sealed = hash
                        .map(|h| at_rest::seal_bytes(&self.keyring, "settings", "master_key_sealed", h.as_bytes()))
                        .transpose()?;
                    sqlx::query("UPDATE settings SET master_key_hash = NULL, master_key_sealed = $1 WHERE id = 1")
                        .bind(sealed)
                        .execute(&mut *tx)
                        .await?;
                    entries.push(ChangeEntry::master_key_changed());
                }
                self.commit(tx, revision, &entries, now, actor, event).await?;
                Ok(Some(revision))
            }
            .await,
        )
    }

    async fn head_revision(&self) -> Result<Revision, StoreError> {
        let revision = Self::read_head(&mut *self.conn().await?).await?;
        self.observe(revision);
        Ok(revision)
    }

    async fn changes_since(&self, after: Revision, limit: u32) -> Result<Vec<Delta>, StoreError> {
        let upper = after.saturating_add(u64::from(limit));
        // One snapshot: the entries and the current secrets they are completed with (see
        // `at_rest::Secrets`) are read at the same revision.
        let mut tx = self.begin(DB::BEGIN_SNAPSHOT).await?;
        let rows = sqlx::query(
            "SELECT revision, payload FROM changes WHERE revision > $1 AND revision <= $2 ORDER BY revision, seq",
        )
        .bind(to_i64(after))
        .bind(to_i64(upper))
        .fetch_all(&mut *tx)
        .await?;
        let mut secrets = at_rest::Secrets::default();
        let mut deltas: Vec<Delta> = Vec::new();
        for row in rows {
            let revision = to_revision(row.try_get("revision")?)?;
            let payload: Vec<u8> = row.try_get("payload")?;
            let mut change = Change::decode(payload.as_slice())
                .map_err(|_| StoreError::Corrupt(format!("changes.payload of revision {revision}")))?;
            self.complete(&mut secrets, &mut tx, &mut change).await?;
            match deltas.last_mut() {
                Some(delta) if delta.revision == revision => delta.changes.push(change),
                _ => deltas.push(Delta { revision, changes: vec![change] }),
            }
        }
        tx.commit().await?;
        Ok(deltas)
    }

    async fn oldest_retained_revision(&self) -> Result<Revision, StoreError> {
        let mut tx = self.begin(DB::BEGIN_SNAPSHOT).await?;
        let oldest: Option<i64> = sqlx::query_scalar("SELECT MIN(revision) FROM changes").fetch_one(&mut *tx).await?;
        let head = Self::read_head(&mut tx).await?;
        tx.commit().await?;
        match oldest {
            Some(oldest) => to_revision(oldest),
            None => Ok(head + 1),
        }
    }

    async fn compact_changes(&self, keep_revisions: u64) -> Result<u64, StoreError> {
        self.health.track(
            async {
                let mut tx = self.begin(DB::BEGIN_WRITE).await?;
                if let Some(try_lock) = DB::TRY_LOCK_COMPACTION {
                    let locked: bool = sqlx::query_scalar(try_lock).fetch_one(&mut *tx).await?;
                    if !locked {
                        // Another process is compacting right now; its cutoff is as good as ours.
                        tx.rollback().await?;
                        return Ok(0);
                    }
                }
                let head = Self::read_head(&mut tx).await?;
                let cutoff = to_i64(head.saturating_sub(keep_revisions));
                let dropped: i64 =
                    sqlx::query_scalar("SELECT COUNT(DISTINCT revision) FROM changes WHERE revision <= $1")
                        .bind(cutoff)
                        .fetch_one(&mut *tx)
                        .await?;
                sqlx::query("DELETE FROM changes WHERE revision <= $1").bind(cutoff).execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(u64::try_from(dropped).unwrap_or(0))
            }
            .await,
        )
    }

    async fn load_snapshot(&self) -> Result<Snapshot, StoreError> {
        // One snapshot transaction: it sees exactly the commits before its first read.
        let mut tx = self.begin(DB::BEGIN_SNAPSHOT).await?;
        let revision = Self::read_head(&mut tx).await?;
        let (settings, master_key_hash) = Self::fetch_settings(&self.keyring, &mut tx).await?;
        let providers = Self::fetch_providers(&self.keyring, &mut tx).await?;
        let rows =
            sqlx::query(concat!("SELECT ", key_columns!(), " FROM keys ORDER BY id")).fetch_all(&mut *tx).await?;
        tx.commit().await?;
        let keys = rows.iter().map(|row| Self::key_from_row(row).map(|k| k.to_config())).collect::<Result<_, _>>()?;
        Ok(Snapshot {
            revision,
            settings: super::model::settings_config(settings),
            providers: providers.iter().map(ProviderRecord::to_config).collect(),
            master_key_hash,
            keys,
        })
    }

    async fn close(&self) {
        self.close_pool().await;
    }

    async fn reencrypt(&self) -> Result<super::Reencrypted, StoreError> {
        self.reencrypt_all().await
    }

    async fn probe_write(&self) -> Result<(), StoreError> {
        self.health.track(
            async {
                let mut tx = self.begin(DB::BEGIN_WRITE).await?;
                sqlx::query(
                    "INSERT INTO write_probe (id, probed_at) VALUES (1, $1) \
                     ON CONFLICT (id) DO UPDATE SET probed_at = excluded.probed_at",
                )
                .bind(time::to_millis(time::now()))
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }
            .await,
        )
    }

    fn write_status(&self) -> watch::Receiver<WriteStatus> {
        self.health.subscribe()
    }

    fn store_id(&self) -> StoreId {
        self.store_id
    }

    fn watch_head(&self) -> watch::Receiver<Revision> {
        self.head.subscribe()
    }

    fn presence_table(&self) -> Option<Arc<dyn PresenceTable>> {
        DB::presence_table(&self.pool)
    }
}

/// `anthropic,vllm`; empty for "every provider".
fn provider_list(set: ProviderSet) -> String {
    set.iter().map(ProviderKind::as_str).collect::<Vec<_>>().join(",")
}

pub(super) fn to_revision(value: i64) -> Result<Revision, StoreError> {
    Revision::try_from(value).map_err(|_| StoreError::Corrupt("negative revision".into()))
}

pub(super) fn to_i64(revision: Revision) -> i64 {
    i64::try_from(revision).unwrap_or(i64::MAX)
}
