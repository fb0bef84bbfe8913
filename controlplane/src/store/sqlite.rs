//! The SQLite backend: one embedded database file, versioned migrations applied on open.
//!
//! The database runs in WAL mode (readers never block the writer) with `synchronous = FULL`
//! (a committed revision survives power loss: data planes may already have acknowledged it) and
//! a busy timeout, so several processes may open the same file. Write transactions start with
//! `BEGIN IMMEDIATE`, taking the write lock up front, and their first statement allocates the
//! revision from the head row. A mutation that fails validation inside the transaction (not
//! found, name taken) rolls back, and so does its revision: no gap is left behind. The
//! statements themselves are shared with PostgreSQL (`sql.rs`).

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteQueryResult, SqliteSynchronous};
use sqlx::{Pool, Sqlite};

use super::StoreError;
use super::presence::PresenceTable;
use super::sealed::Keyring;
use super::sql::{Dialect, SqlStore};

/// The schema migrations in `controlplane/migrations`, embedded in the binary.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How long a connection waits for another process's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Small on purpose: SQLite has one writer at a time, the pool only lets reads overlap.
const MAX_CONNECTIONS: u32 = 4;

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

/// A [`Store`](super::Store) in a SQLite database file.
pub type SqliteStore = SqlStore<Sqlite>;

impl Dialect for Sqlite {
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";
    // In WAL mode a deferred transaction reads one snapshot, taken at its first read.
    const BEGIN_SNAPSHOT: &'static str = "BEGIN";
    // Other processes on the same file learn about commits by polling the head.
    const NOTIFY_COMMIT: Option<&'static str> = None;
    // `BEGIN IMMEDIATE` already lets one compaction (one writer) run at a time.
    const TRY_LOCK_COMPACTION: Option<&'static str> = None;
    // Connections are local: a timeout means every one of them was in use.
    const IS_SERVER: bool = false;

    /// Folds the write-ahead log back into the database file: a copy of the file alone is then
    /// a complete, consistent database.
    fn before_close(pool: &Pool<Sqlite>) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // TRUNCATE waits for readers and leaves an empty WAL. Failing here loses nothing:
            // the WAL stays and SQLite replays it on the next open.
            if let Err(err) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(pool).await {
                tracing::warn!(error = %err, "cannot checkpoint the database; it will recover on the next start");
            }
        })
    }

    // One control plane per file: its own fleet is the whole fleet.
    fn presence_table(_pool: &Pool<Sqlite>) -> Option<Arc<dyn PresenceTable>> {
        None
    }

    fn rows_affected(result: &SqliteQueryResult) -> u64 {
        result.rows_affected()
    }
}

impl SqlStore<Sqlite> {
    /// Opens (creating it and its parent directory if needed) the database at `url`, a
    /// `sqlite://PATH` URL, and applies pending migrations.
    pub async fn open(url: &str, keyring: Keyring) -> Result<Self, StoreError> {
        if !url.starts_with("sqlite:") {
            // The URL is not echoed: a PostgreSQL URL may carry a password.
            return Err(StoreError::Open("unsupported database URL: expected sqlite://PATH".into()));
        }
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
            // Deleted and overwritten content (a replaced credential's old sealed blob, the
            // plaintext an older version stored) is zeroed in the file, not left in free space.
            .pragma("secure_delete", "ON");
        let file = options.get_filename();
        if file != Path::new(":memory:") {
            create_owner_only(file)?;
        }
        let pool = SqlitePoolOptions::new().max_connections(MAX_CONNECTIONS).connect_with(options).await?;
        MIGRATOR.run(&pool).await?;
        SqlStore::new(pool, keyring).await
    }
}

#[cfg(test)]
#[path = "sqlite_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "sqlite_fault_tests.rs"]
mod fault_tests;
