//! What can go wrong in the store. The admin API maps these to gRPC statuses in one place
//! (`admin::error`).

use aurora_core::ProviderKind;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key {0} not found")]
    KeyNotFound(Uuid),
    #[error("provider {0} has no record")]
    ProviderNotFound(ProviderKind),
    #[error("a key named {0:?} already exists")]
    KeyNameTaken(String),
    #[error("key {0} is revoked and can never be enabled again")]
    KeyRevoked(Uuid),
    #[error("key {0} is already revoked")]
    KeyAlreadyRevoked(Uuid),
    #[error("key {0} is revoked: its secret cannot be rotated")]
    RotateRevoked(Uuid),
    /// A limits patch that leaves them inconsistent (checked in the update's transaction,
    /// against the limits it patches); the field is `limits` or `default_key_limits`.
    #[error("{0}: {1}")]
    InvalidLimits(&'static str, aurora_core::KeyLimitsError),
    #[error("provider {0} has no credential named {1:?}")]
    CredentialNotFound(ProviderKind, String),
    #[error("a credential named {0:?} already exists")]
    CredentialNameTaken(String),
    #[error("a provider holds at most {0} credentials")]
    TooManyCredentials(usize),
    /// A row that does not decode into a record: the database was edited by hand or by a newer
    /// version. The message names the column, never its value.
    #[error("corrupt record in the store: {0}")]
    Corrupt(String),
    #[error("cannot open the store: {0}")]
    Open(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// No connection to the database server could be had (PostgreSQL down, unreachable, or
    /// refusing connections); the reason is the database's message or the kind of failure.
    #[error("cannot reach the database: {0}")]
    Unreachable(String),
    #[error("cannot migrate the store: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A credential could not be sealed or opened (`store/sealed.rs`): the keyring lacks the
    /// key it was sealed under, or the stored blob is damaged. Names the column, never a value.
    #[error("{what}: {source}")]
    Sealed { what: String, source: super::sealed::SealError },
}

/// Why the database could not carry out an operation, when the cause is the database's
/// environment (a full disk, an I/O error, contention) rather than the request or the data.
/// Such failures end when their cause does; callers may retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageFailure {
    /// Another writer held the lock past the busy timeout, or every pooled connection was busy.
    Busy,
    /// The disk is full, the file cannot be written or opened, or an I/O error occurred; or
    /// the database server is unreachable, shutting down, out of resources or read-only.
    CannotWrite,
}

impl StoreError {
    /// The environmental cause of this error, if it has one (see [`StorageFailure`]).
    pub fn storage_failure(&self) -> Option<StorageFailure> {
        let err = match self {
            StoreError::Database(err) => err,
            StoreError::Unreachable(_) => return Some(StorageFailure::CannotWrite),
            _ => return None,
        };
        match err {
            sqlx::Error::PoolTimedOut => Some(StorageFailure::Busy),
            sqlx::Error::Io(_) | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => {
                Some(StorageFailure::CannotWrite)
            }
            sqlx::Error::Database(db) => sqlite_failure(db.as_ref()).or_else(|| postgres_failure(db.as_ref())),
            _ => None,
        }
    }

    /// A short description of a storage failure that is safe to show to operators: the
    /// database's own message ("database or disk is full"), which names no value.
    pub fn storage_reason(&self) -> String {
        match self {
            StoreError::Database(err) => describe(err),
            StoreError::Unreachable(reason) => format!("cannot reach the database: {reason}"),
            _ => "database error".into(),
        }
    }
}

/// What a sqlx error says, for logs and operators: the database's own message or the kind of
/// failure, never a URL (which may carry a password) or a value.
pub(super) fn describe(err: &sqlx::Error) -> String {
    match err {
        sqlx::Error::Database(db) => db.message().to_owned(),
        sqlx::Error::Io(err) => format!("I/O error: {}", err.kind()),
        sqlx::Error::PoolTimedOut => "timed out waiting for a database connection".into(),
        sqlx::Error::PoolClosed => "the store is closed".into(),
        _ => "database error".into(),
    }
}

/// sqlx reports SQLite's extended result code (SQLITE_BUSY_SNAPSHOT is 517, ...); its low byte
/// is the primary code.
fn sqlite_failure(err: &dyn sqlx::error::DatabaseError) -> Option<StorageFailure> {
    match sqlite_code(err)? & 0xff {
        SQLITE_BUSY | SQLITE_LOCKED => Some(StorageFailure::Busy),
        SQLITE_NOMEM | SQLITE_READONLY | SQLITE_IOERR | SQLITE_FULL | SQLITE_CANTOPEN => {
            Some(StorageFailure::CannotWrite)
        }
        _ => None,
    }
}

/// PostgreSQL's SQLSTATE classes and codes that describe the server, not the request.
fn postgres_failure(err: &dyn sqlx::error::DatabaseError) -> Option<StorageFailure> {
    let code = err.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()?.code();
    match code {
        // serialization_failure, deadlock_detected, lock_not_available, query_canceled
        // (statement timeout): contention, over when the other transaction is.
        "40001" | "40P01" | "55P03" | "57014" => Some(StorageFailure::Busy),
        // admin_shutdown (a terminated backend, a server shutting down), crash_shutdown,
        // cannot_connect_now (starting up); read_only_sql_transaction (a standby, mid-failover).
        "57P01" | "57P02" | "57P03" | "25006" => Some(StorageFailure::CannotWrite),
        // 08: connection exception; 53: insufficient resources (disk full, out of memory, too
        // many connections); 58: system error (I/O).
        _ if ["08", "53", "58"].iter().any(|class| code.starts_with(class)) => Some(StorageFailure::CannotWrite),
        _ => None,
    }
}

const SQLITE_BUSY: i32 = 5;
const SQLITE_LOCKED: i32 = 6;
const SQLITE_NOMEM: i32 = 7;
const SQLITE_READONLY: i32 = 8;
const SQLITE_IOERR: i32 = 10;
const SQLITE_FULL: i32 = 13;
const SQLITE_CANTOPEN: i32 = 14;

/// SQLite's extended result code, if `err` comes from SQLite.
fn sqlite_code(err: &dyn sqlx::error::DatabaseError) -> Option<i32> {
    use sqlx::error::DatabaseError as _;
    err.try_downcast_ref::<sqlx::sqlite::SqliteError>()?.code()?.parse().ok()
}
