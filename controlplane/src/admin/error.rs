//! The one place where admin failures become gRPC statuses.

use tonic::Status;

use super::validate::FieldError;
use crate::store::StoreError;

/// Why an admin call failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AdminError {
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<AdminError> for Status {
    fn from(err: AdminError) -> Status {
        match err {
            AdminError::Invalid(err) => Status::invalid_argument(err.to_string()),
            AdminError::Store(err) => match err {
                StoreError::KeyNotFound(_) | StoreError::ProviderNotFound(_) => Status::not_found(err.to_string()),
                StoreError::KeyNameTaken(_) => Status::already_exists(err.to_string()),
                StoreError::KeyRevoked(_) | StoreError::KeyAlreadyRevoked(_) => {
                    Status::failed_precondition(err.to_string())
                }
                StoreError::Database(ref db) if is_busy(db) => {
                    tracing::warn!(error = %err, "store busy");
                    Status::unavailable("the store is busy; retry")
                }
                StoreError::Corrupt(_) | StoreError::Open(_) | StoreError::Database(_) | StoreError::Migrate(_) => {
                    // The details go to the log only; the caller learns nothing about internals.
                    tracing::error!(error = %err, "admin call failed in the store");
                    Status::internal("internal store error; see the control plane's log")
                }
            },
        }
    }
}

/// The store is contended, not broken: every pooled connection is in use, or another writer
/// (maybe another control plane on the same file) held the lock for SQLite's whole busy timeout.
/// Retrying later can succeed, so the caller gets `UNAVAILABLE`, not `INTERNAL`.
fn is_busy(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut => true,
        // sqlx reports SQLite's extended result code (SQLITE_BUSY_SNAPSHOT is 517, ...); its low
        // byte is the primary code: 5 is SQLITE_BUSY, 6 is SQLITE_LOCKED.
        sqlx::Error::Database(db) => {
            db.code().and_then(|code| code.parse::<i32>().ok()).is_some_and(|code| matches!(code & 0xff, 5 | 6))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tonic::Code;
    use uuid::Uuid;

    use super::*;

    #[test]
    fn every_store_error_has_a_precise_code() {
        let id = Uuid::nil();
        let cases = [
            (StoreError::KeyNotFound(id), Code::NotFound),
            (StoreError::ProviderNotFound(aurora_core::ProviderKind::Zai), Code::NotFound),
            (StoreError::KeyNameTaken("ci".into()), Code::AlreadyExists),
            (StoreError::KeyRevoked(id), Code::FailedPrecondition),
            (StoreError::KeyAlreadyRevoked(id), Code::FailedPrecondition),
            (StoreError::Corrupt("keys.hash".into()), Code::Internal),
            (StoreError::Database(sqlx::Error::PoolTimedOut), Code::Unavailable),
            (StoreError::Database(sqlx::Error::RowNotFound), Code::Internal),
        ];
        for (err, code) in cases {
            assert_eq!(Status::from(AdminError::from(err)).code(), code);
        }
    }

    /// A real SQLITE_BUSY: one connection holds the write lock, another gives up at once.
    #[tokio::test]
    async fn a_locked_database_is_unavailable_not_internal() {
        use sqlx::{ConnectOptions, Connection};

        let dir = tempfile::tempdir().unwrap();
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(dir.path().join("busy.db"))
            .create_if_missing(true)
            .busy_timeout(Duration::ZERO);
        let mut holder = options.connect().await.unwrap();
        let mut other = options.connect().await.unwrap();
        sqlx::query("BEGIN IMMEDIATE").execute(&mut holder).await.unwrap();

        let err = sqlx::query("BEGIN IMMEDIATE").execute(&mut other).await.unwrap_err();
        let status = Status::from(AdminError::from(StoreError::Database(err)));
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert_eq!(status.message(), "the store is busy; retry");
        holder.close().await.unwrap();
    }

    /// Extended codes of SQLITE_BUSY and SQLITE_LOCKED count too; other database errors do not.
    #[test]
    fn busy_and_locked_codes_are_unavailable() {
        #[derive(Debug)]
        struct Coded(&'static str);
        impl std::fmt::Display for Coded {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "code {}", self.0)
            }
        }
        impl std::error::Error for Coded {}
        impl sqlx::error::DatabaseError for Coded {
            fn message(&self) -> &str {
                "coded"
            }
            fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
                Some(self.0.into())
            }
            fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
                self
            }
            fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
                self
            }
            fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
                self
            }
            fn kind(&self) -> sqlx::error::ErrorKind {
                sqlx::error::ErrorKind::Other
            }
        }
        for (code, expected) in [
            ("5", Code::Unavailable),
            ("517", Code::Unavailable),
            ("6", Code::Unavailable),
            ("262", Code::Unavailable),
            ("1", Code::Internal),
            ("2067", Code::Internal),
        ] {
            let err = StoreError::Database(sqlx::Error::Database(Box::new(Coded(code))));
            assert_eq!(Status::from(AdminError::from(err)).code(), expected, "code {code}");
        }
    }
}
