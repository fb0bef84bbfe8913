//! The SQLite backend: one embedded database file, versioned migrations applied on open.
//!
//! The database runs in WAL mode (readers never block the writer) with `synchronous = FULL`
//! (a committed revision survives power loss: data planes may already have acknowledged it) and
//! a busy timeout, so several processes may open the same file. Write transactions start with
//! `BEGIN IMMEDIATE`, taking the write lock up front, and their first statement allocates the
//! revision from the head row. A mutation that fails validation inside the transaction (not
//! found, name taken) rolls back, and so does its revision: no gap is left behind.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aurora_core::{BaseUrl, DefaultHeaders, KeyHash, ProviderKind, ProviderSet};
use aurora_proto::v1::{Change, Delta};
use prost::Message;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, SqliteConnection};
use tokio::sync::watch;
use uuid::Uuid;

use super::change::ChangeEntry;
use super::model::{
    ClientIdentity, Credential, KeyPatch, KeyRecord, NewKey, ProviderPatch, ProviderRecord, Settings, SettingsPatch,
    SettingsView, Snapshot,
};
use super::tx::Tx;
use super::write_health::{WriteHealth, WriteStatus};
use super::{Revision, Store, StoreError, StoreId};
use crate::bootstrap::{Bootstrap, BootstrapState};
use crate::time;

/// The schema migrations in `controlplane/migrations`, embedded in the binary.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How long a connection waits for another process's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Small on purpose: SQLite has one writer at a time, the pool only lets reads overlap.
const MAX_CONNECTIONS: u32 = 4;

macro_rules! key_columns {
    () => {
        "id, name, description, hash, redacted, enabled, expires_at, allowed_providers, created_at, updated_at, revoked_at"
    };
}

/// Creates the database file (and missing parent directories) readable by its owner only, before
/// SQLite opens it: the file and its write-ahead log hold provider credentials, and SQLite gives
/// `-wal` and `-shm` the main file's permissions. Directories this creates are `0700`; an
/// existing file that others could read is tightened to `0600`, with a warning.
fn create_owner_only(file: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};

    let open_error = |what: &str, path: &Path, err: std::io::Error| {
        StoreError::Open(format!("cannot {what} {}: {err}", path.display()))
    };
    if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|err| open_error("create directory", parent, err))?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(file)
        .map_err(|err| open_error("create", file, err))?;
    for path in [file.to_owned(), suffixed(file, "-wal"), suffixed(file, "-shm")] {
        let Ok(metadata) = std::fs::metadata(&path) else { continue };
        if metadata.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "the database file was readable by others; making it owner-only");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(|err| open_error("restrict", &path, err))?;
        }
    }
    Ok(())
}

fn suffixed(file: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

/// A [`Store`] in a SQLite database file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    head: Arc<watch::Sender<Revision>>,
    health: Arc<WriteHealth>,
    store_id: StoreId,
}

impl SqliteStore {
    /// Opens (creating it and its parent directory if needed) the database at `url`, a
    /// `sqlite://PATH` URL, and applies pending migrations.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        if !url.starts_with("sqlite:") {
            // The URL is not echoed: a PostgreSQL URL may carry a password.
            return Err(StoreError::Open("unsupported database URL: expected sqlite://PATH".into()));
        }
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let file = options.get_filename();
        if file != Path::new(":memory:") {
            create_owner_only(file)?;
        }
        let pool = SqlitePoolOptions::new().max_connections(MAX_CONNECTIONS).connect_with(options).await?;
        MIGRATOR.run(&pool).await?;
        let mut conn = pool.acquire().await?;
        let head = read_head(&mut conn).await?;
        let id: Vec<u8> = sqlx::query_scalar("SELECT store_id FROM head WHERE id = 1").fetch_one(&mut *conn).await?;
        let store_id = StoreId::try_from(id.as_slice()).map_err(|_| StoreError::Corrupt("head.store_id".into()))?;
        drop(conn);
        let (sender, _) = watch::channel(head);
        Ok(SqliteStore { pool, head: Arc::new(sender), health: Arc::new(WriteHealth::new()), store_id })
    }

    /// Folds the write-ahead log back into the database file, then closes every connection:
    /// a copy of the file alone is then a complete, consistent database. Calls after the
    /// first find the pool closed and do nothing.
    pub async fn close(&self) {
        if self.pool.is_closed() {
            return;
        }
        // TRUNCATE waits for readers and leaves an empty WAL. Failing here loses nothing: the
        // WAL stays and SQLite replays it on the next open.
        if let Err(err) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&self.pool).await {
            tracing::warn!(error = %err, "cannot checkpoint the database; it will recover on the next start");
        }
        self.pool.close().await;
    }

    /// Starts a write transaction and allocates its revision. Dropping the transaction without
    /// committing rolls the revision back too.
    async fn begin_write(&self) -> Result<(Tx<Sqlite>, Revision), StoreError> {
        let mut tx = Tx::begin(&self.pool, "BEGIN IMMEDIATE").await?;
        let revision: i64 =
            sqlx::query_scalar("UPDATE head SET revision = revision + 1 WHERE id = 1 RETURNING revision")
                .fetch_one(&mut *tx)
                .await?;
        Ok((tx, to_revision(revision)?))
    }

    /// Appends `entries` to the change log under `revision`, commits, and tells watchers.
    async fn commit(
        &self,
        mut tx: Tx<Sqlite>,
        revision: Revision,
        entries: &[ChangeEntry],
        now: SystemTime,
    ) -> Result<(), StoreError> {
        for (seq, entry) in entries.iter().enumerate() {
            sqlx::query(
                "INSERT INTO changes (revision, seq, kind, object_id, op, payload, committed_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(to_i64(revision))
            .bind(i64::try_from(seq).unwrap_or(i64::MAX))
            .bind(entry.kind)
            .bind(&entry.object_id)
            .bind(entry.op)
            .bind(entry.payload())
            .bind(time::to_millis(now))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.observe(revision);
        Ok(())
    }

    /// Advances the watched head; commits may finish their notification out of order, so it
    /// only ever moves forward.
    fn observe(&self, revision: Revision) {
        self.head.send_if_modified(|head| {
            let newer = revision > *head;
            if newer {
                *head = revision;
            }
            newer
        });
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_key(&self, key: NewKey) -> Result<(KeyRecord, Revision), StoreError> {
        self.health.track(
            async {
                let (mut tx, revision) = self.begin_write().await?;
                ensure_name_free(&mut tx, &key.name, None).await?;
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
                    created_at: now,
                    updated_at: now,
                    revoked_at: None,
                };
                sqlx::query(concat!(
                    "INSERT INTO keys (",
                    key_columns!(),
                    ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                ))
                .bind(record.id.to_string())
                .bind(&record.name)
                .bind(&record.description)
                .bind(record.hash.as_bytes().as_slice())
                .bind(&record.redacted)
                .bind(record.enabled)
                .bind(record.expires_at.map(time::to_millis))
                .bind(provider_list(record.allowed_providers))
                .bind(time::to_millis(record.created_at))
                .bind(time::to_millis(record.updated_at))
                .bind(None::<i64>)
                .execute(&mut *tx)
                .await?;
                self.commit(tx, revision, &[ChangeEntry::key_upsert(&record)], now).await?;
                Ok((record, revision))
            }
            .await,
        )
    }

    async fn get_key(&self, id: Uuid) -> Result<KeyRecord, StoreError> {
        let mut conn = self.pool.acquire().await?;
        fetch_key(&mut conn, id).await
    }

    async fn list_keys(&self, after: Option<Uuid>, limit: u32) -> Result<Vec<KeyRecord>, StoreError> {
        let after = after.map(|id| id.to_string()).unwrap_or_default();
        let rows = sqlx::query(concat!("SELECT ", key_columns!(), " FROM keys WHERE id > ? ORDER BY id LIMIT ?"))
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(key_from_row).collect()
    }

    async fn update_key(&self, id: Uuid, patch: KeyPatch) -> Result<(KeyRecord, Revision), StoreError> {
        self.health.track(
            async {
                let (mut tx, revision) = self.begin_write().await?;
                let mut record = fetch_key(&mut tx, id).await?;
                if patch.enabled == Some(true) && record.revoked_at.is_some() {
                    return Err(StoreError::KeyRevoked(id));
                }
                if let Some(name) = patch.name {
                    ensure_name_free(&mut tx, &name, Some(id)).await?;
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
                let now = time::now();
                record.updated_at = now;
                write_key(&mut tx, &record).await?;
                self.commit(tx, revision, &[ChangeEntry::key_upsert(&record)], now).await?;
                Ok((record, revision))
            }
            .await,
        )
    }

    async fn revoke_key(&self, id: Uuid) -> Result<(KeyRecord, Revision), StoreError> {
        self.health.track(
            async {
                let (mut tx, revision) = self.begin_write().await?;
                let mut record = fetch_key(&mut tx, id).await?;
                if record.revoked_at.is_some() {
                    return Err(StoreError::KeyAlreadyRevoked(id));
                }
                let now = time::now();
                record.enabled = false;
                record.revoked_at = Some(now);
                record.updated_at = now;
                write_key(&mut tx, &record).await?;
                self.commit(tx, revision, &[ChangeEntry::key_upsert(&record)], now).await?;
                Ok((record, revision))
            }
            .await,
        )
    }

    async fn delete_key(&self, id: Uuid) -> Result<Revision, StoreError> {
        self.health.track(
            async {
                let (mut tx, revision) = self.begin_write().await?;
                let record = fetch_key(&mut tx, id).await?;
                sqlx::query("DELETE FROM keys WHERE id = ?").bind(id.to_string()).execute(&mut *tx).await?;
                self.commit(tx, revision, &[ChangeEntry::key_delete(&record)], time::now()).await?;
                Ok(revision)
            }
            .await,
        )
    }

    async fn list_providers(&self) -> Result<Vec<ProviderRecord>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        fetch_providers(&mut conn).await
    }

    async fn upsert_provider(
        &self,
        kind: ProviderKind,
        patch: ProviderPatch,
    ) -> Result<(ProviderRecord, Revision), StoreError> {
        self.health.track(
            async {
                let (mut tx, revision) = self.begin_write().await?;
                let now = time::now();
                let current = fetch_providers(&mut tx).await?.into_iter().find(|p| p.kind == kind);
                let mut record = current.unwrap_or_else(|| ProviderRecord::new_default(kind, now));
                patch.apply(&mut record);
                record.updated_at = now;
                write_provider(&mut tx, &record).await?;
                self.commit(tx, revision, &[ChangeEntry::provider_upsert(&record)], now).await?;
                Ok((record, revision))
            }
            .await,
        )
    }

    async fn delete_provider(&self, kind: ProviderKind) -> Result<Revision, StoreError> {
        self.health.track(
            async {
                let (mut tx, revision) = self.begin_write().await?;
                let deleted = sqlx::query("DELETE FROM providers WHERE name = ?")
                    .bind(kind.as_str())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if deleted == 0 {
                    return Err(StoreError::ProviderNotFound(kind));
                }
                self.commit(tx, revision, &[ChangeEntry::provider_delete(kind)], time::now()).await?;
                Ok(revision)
            }
            .await,
        )
    }

    async fn get_settings(&self) -> Result<SettingsView, StoreError> {
        let mut tx = Tx::begin(&self.pool, "BEGIN").await?;
        let revision = read_head(&mut tx).await?;
        let view = settings_view(&mut tx, revision).await?;
        tx.commit().await?;
        Ok(view)
    }

    async fn update_settings(&self, patch: SettingsPatch) -> Result<(SettingsView, Revision), StoreError> {
        self.health.track(
            async {
                let (mut tx, revision) = self.begin_write().await?;
                let (mut settings, _) = fetch_settings(&mut tx).await?;
                patch.apply(&mut settings);
                let now = time::now();
                write_settings(&mut tx, settings, now).await?;
                let view = settings_view(&mut tx, revision).await?;
                self.commit(tx, revision, &[ChangeEntry::settings(settings)], now).await?;
                Ok((view, revision))
            }
            .await,
        )
    }

    async fn bootstrap(&self, bootstrap: &Bootstrap) -> Result<Option<Revision>, StoreError> {
        self.health.track(
            async {
                let (mut tx, revision) = self.begin_write().await?;
                let (settings, master_key_hash) = fetch_settings(&mut tx).await?;
                let state = BootstrapState {
                    first_start: revision == 1,
                    settings,
                    providers: fetch_providers(&mut tx).await?,
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
                let mut entries = Vec::new();
                if let Some(settings) = writes.settings {
                    write_settings(&mut tx, settings, now).await?;
                    entries.push(ChangeEntry::settings(settings));
                }
                for record in &writes.providers {
                    write_provider(&mut tx, record).await?;
                    entries.push(ChangeEntry::provider_upsert(record));
                }
                if let Some(hash) = writes.master_key_hash {
                    sqlx::query("UPDATE settings SET master_key_hash = ? WHERE id = 1")
                        .bind(hash.map(|h| h.as_bytes().to_vec()))
                        .execute(&mut *tx)
                        .await?;
                    entries.push(ChangeEntry::master_key_hash(hash));
                }
                self.commit(tx, revision, &entries, now).await?;
                Ok(Some(revision))
            }
            .await,
        )
    }

    async fn head_revision(&self) -> Result<Revision, StoreError> {
        let revision = read_head(&mut *self.pool.acquire().await?).await?;
        self.observe(revision);
        Ok(revision)
    }

    async fn changes_since(&self, after: Revision, limit: u32) -> Result<Vec<Delta>, StoreError> {
        let upper = after.saturating_add(u64::from(limit));
        let rows = sqlx::query(
            "SELECT revision, payload FROM changes WHERE revision > ? AND revision <= ? ORDER BY revision, seq",
        )
        .bind(to_i64(after))
        .bind(to_i64(upper))
        .fetch_all(&self.pool)
        .await?;
        let mut deltas: Vec<Delta> = Vec::new();
        for row in rows {
            let revision = to_revision(row.try_get("revision")?)?;
            let payload: Vec<u8> = row.try_get("payload")?;
            let change = Change::decode(payload.as_slice())
                .map_err(|_| StoreError::Corrupt(format!("changes.payload of revision {revision}")))?;
            match deltas.last_mut() {
                Some(delta) if delta.revision == revision => delta.changes.push(change),
                _ => deltas.push(Delta { revision, changes: vec![change] }),
            }
        }
        Ok(deltas)
    }

    async fn oldest_retained_revision(&self) -> Result<Revision, StoreError> {
        let mut tx = Tx::begin(&self.pool, "BEGIN").await?;
        let oldest: Option<i64> = sqlx::query_scalar("SELECT MIN(revision) FROM changes").fetch_one(&mut *tx).await?;
        let head = read_head(&mut tx).await?;
        tx.commit().await?;
        match oldest {
            Some(oldest) => to_revision(oldest),
            None => Ok(head + 1),
        }
    }

    async fn compact_changes(&self, keep_revisions: u64) -> Result<u64, StoreError> {
        self.health.track(
            async {
                let mut tx = Tx::begin(&self.pool, "BEGIN IMMEDIATE").await?;
                let head = read_head(&mut tx).await?;
                let cutoff = to_i64(head.saturating_sub(keep_revisions));
                let dropped: i64 =
                    sqlx::query_scalar("SELECT COUNT(DISTINCT revision) FROM changes WHERE revision <= ?")
                        .bind(cutoff)
                        .fetch_one(&mut *tx)
                        .await?;
                sqlx::query("DELETE FROM changes WHERE revision <= ?").bind(cutoff).execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(u64::try_from(dropped).unwrap_or(0))
            }
            .await,
        )
    }

    async fn load_snapshot(&self) -> Result<Snapshot, StoreError> {
        // One read transaction: in WAL mode it sees exactly the commits before its first read.
        let mut tx = Tx::begin(&self.pool, "BEGIN").await?;
        let revision = read_head(&mut tx).await?;
        let (settings, master_key_hash) = fetch_settings(&mut tx).await?;
        let providers = fetch_providers(&mut tx).await?;
        let rows =
            sqlx::query(concat!("SELECT ", key_columns!(), " FROM keys ORDER BY id")).fetch_all(&mut *tx).await?;
        tx.commit().await?;
        let keys = rows.iter().map(|row| key_from_row(row).map(|k| k.to_config())).collect::<Result<_, _>>()?;
        Ok(Snapshot {
            revision,
            settings: super::model::settings_config(settings),
            providers: providers.iter().map(ProviderRecord::to_config).collect(),
            master_key_hash,
            keys,
        })
    }

    async fn close(&self) {
        SqliteStore::close(self).await;
    }

    async fn probe_write(&self) -> Result<(), StoreError> {
        self.health.track(
            async {
                let mut tx = Tx::begin(&self.pool, "BEGIN IMMEDIATE").await?;
                sqlx::query(
                    "INSERT INTO write_probe (id, probed_at) VALUES (1, ?) \
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
}

async fn read_head(conn: &mut SqliteConnection) -> Result<Revision, StoreError> {
    let revision: i64 = sqlx::query_scalar("SELECT revision FROM head WHERE id = 1").fetch_one(&mut *conn).await?;
    to_revision(revision)
}

async fn ensure_name_free(conn: &mut SqliteConnection, name: &str, except: Option<Uuid>) -> Result<(), StoreError> {
    let holder: Option<String> =
        sqlx::query_scalar("SELECT id FROM keys WHERE name = ?").bind(name).fetch_optional(&mut *conn).await?;
    match holder {
        Some(holder) if Some(holder.as_str()) != except.map(|id| id.to_string()).as_deref() => {
            Err(StoreError::KeyNameTaken(name.to_owned()))
        }
        _ => Ok(()),
    }
}

async fn fetch_key(conn: &mut SqliteConnection, id: Uuid) -> Result<KeyRecord, StoreError> {
    let row = sqlx::query(concat!("SELECT ", key_columns!(), " FROM keys WHERE id = ?"))
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(key_from_row).transpose()?.ok_or(StoreError::KeyNotFound(id))
}

async fn write_key(conn: &mut SqliteConnection, record: &KeyRecord) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE keys SET name = ?, description = ?, enabled = ?, expires_at = ?, allowed_providers = ?, \
         updated_at = ?, revoked_at = ? WHERE id = ?",
    )
    .bind(&record.name)
    .bind(&record.description)
    .bind(record.enabled)
    .bind(record.expires_at.map(time::to_millis))
    .bind(provider_list(record.allowed_providers))
    .bind(time::to_millis(record.updated_at))
    .bind(record.revoked_at.map(time::to_millis))
    .bind(record.id.to_string())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

fn key_from_row(row: &SqliteRow) -> Result<KeyRecord, StoreError> {
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
    })
}

/// The providers with a record, in `ProviderKind::ALL` order.
async fn fetch_providers(conn: &mut SqliteConnection) -> Result<Vec<ProviderRecord>, StoreError> {
    let rows = sqlx::query(
        "SELECT name, enabled, base_url, credential, default_headers, client_cert, client_key, ca_pem, updated_at \
         FROM providers",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut records = rows
        .iter()
        .map(|row| {
            let name: String = row.try_get("name")?;
            let base_url: String = row.try_get("base_url")?;
            Ok(ProviderRecord {
                kind: name.parse().map_err(|_| StoreError::Corrupt("providers.name".into()))?,
                enabled: row.try_get("enabled")?,
                base_url: BaseUrl::parse(&base_url).map_err(|_| StoreError::Corrupt("providers.base_url".into()))?,
                credential: row.try_get::<Option<String>, _>("credential")?.map(Credential::new),
                default_headers: DefaultHeaders::from_lines(&row.try_get::<String, _>("default_headers")?)
                    .map_err(|_| StoreError::Corrupt("providers.default_headers".into()))?,
                client_identity: match (
                    row.try_get::<Option<String>, _>("client_cert")?,
                    row.try_get::<Option<String>, _>("client_key")?,
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

async fn write_provider(conn: &mut SqliteConnection, record: &ProviderRecord) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO providers (name, enabled, base_url, credential, default_headers, client_cert, client_key, ca_pem, \
         updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (name) DO UPDATE SET enabled = excluded.enabled, base_url = excluded.base_url, \
         credential = excluded.credential, default_headers = excluded.default_headers, \
         client_cert = excluded.client_cert, client_key = excluded.client_key, ca_pem = excluded.ca_pem, \
         updated_at = excluded.updated_at",
    )
    .bind(record.kind.as_str())
    .bind(record.enabled)
    .bind(record.base_url.as_str())
    .bind(record.credential.as_ref().map(Credential::expose))
    .bind(record.default_headers.to_lines())
    .bind(record.client_identity.as_ref().map(|c| c.certificate_pem.as_str()))
    .bind(record.client_identity.as_ref().map(ClientIdentity::expose_key))
    .bind(record.ca_pem.as_deref())
    .bind(time::to_millis(record.updated_at))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn fetch_settings(conn: &mut SqliteConnection) -> Result<(Settings, Option<KeyHash>), StoreError> {
    let row = sqlx::query("SELECT passthrough_enabled, v1_alias_enabled, master_key_hash FROM settings WHERE id = 1")
        .fetch_one(&mut *conn)
        .await?;
    let settings = Settings {
        passthrough_enabled: row.try_get("passthrough_enabled")?,
        v1_alias_enabled: row.try_get("v1_alias_enabled")?,
    };
    let hash = row
        .try_get::<Option<Vec<u8>>, _>("master_key_hash")?
        .map(|bytes| KeyHash::from_slice(&bytes).ok_or_else(|| StoreError::Corrupt("settings.master_key_hash".into())))
        .transpose()?;
    Ok((settings, hash))
}

async fn write_settings(conn: &mut SqliteConnection, settings: Settings, now: SystemTime) -> Result<(), StoreError> {
    sqlx::query("UPDATE settings SET passthrough_enabled = ?, v1_alias_enabled = ?, updated_at = ? WHERE id = 1")
        .bind(settings.passthrough_enabled)
        .bind(settings.v1_alias_enabled)
        .bind(time::to_millis(now))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn settings_view(conn: &mut SqliteConnection, revision: Revision) -> Result<SettingsView, StoreError> {
    let (settings, _) = fetch_settings(conn).await?;
    let enabled_providers = fetch_providers(conn).await?.into_iter().filter(|p| p.enabled).map(|p| p.kind).collect();
    Ok(SettingsView { settings, enabled_providers, revision })
}

/// `anthropic,vllm`; empty for "every provider".
fn provider_list(set: ProviderSet) -> String {
    set.iter().map(ProviderKind::as_str).collect::<Vec<_>>().join(",")
}

fn to_revision(value: i64) -> Result<Revision, StoreError> {
    Revision::try_from(value).map_err(|_| StoreError::Corrupt("negative revision".into()))
}

fn to_i64(revision: Revision) -> i64 {
    i64::try_from(revision).unwrap_or(i64::MAX)
}

#[cfg(test)]
#[path = "sqlite_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "sqlite_fault_tests.rs"]
mod fault_tests;
