//! The one place where admin failures become gRPC statuses.

use tonic::Status;

use super::validate::FieldError;
use crate::store::{StorageFailure, StoreError};

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
                StoreError::KeyNotFound(_) | StoreError::ProviderNotFound(_) | StoreError::CredentialNotFound(..) => {
                    Status::not_found(err.to_string())
                }
                StoreError::KeyNameTaken(_) | StoreError::CredentialNameTaken(_) => {
                    Status::already_exists(err.to_string())
                }
                StoreError::InvalidLimits(..) => Status::invalid_argument(err.to_string()),
                StoreError::TooManyCredentials(_) => Status::resource_exhausted(err.to_string()),
                StoreError::KeyRevoked(_) | StoreError::KeyAlreadyRevoked(_) | StoreError::RotateRevoked(_) => {
                    Status::failed_precondition(err.to_string())
                }
                StoreError::Database(_) | StoreError::Unreachable(_) => match err.storage_failure() {
                    Some(StorageFailure::Busy) => {
                        tracing::warn!(error = %err, "store busy");
                        Status::unavailable("the store is busy; retry")
                    }
                    // The database's environment, not the request: say what it is, so the
                    // operator can fix it, and that a retry will work once it is fixed.
                    Some(StorageFailure::CannotWrite) => {
                        tracing::error!(error = %err, "admin call failed: the store cannot write");
                        Status::unavailable(format!(
                            "the store cannot write ({}); retry once it is fixed",
                            err.storage_reason()
                        ))
                    }
                    None => internal(&err),
                },
                StoreError::Corrupt(_) | StoreError::Open(_) | StoreError::Migrate(_) | StoreError::Sealed { .. } => {
                    internal(&err)
                }
            },
        }
    }
}

/// The details go to the log only; the caller learns nothing about internals.
fn internal(err: &StoreError) -> Status {
    tracing::error!(error = %err, "admin call failed in the store");
    Status::internal("internal store error; see the control plane's log")
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
            (
                StoreError::InvalidLimits(
                    "limits",
                    aurora_core::KeyLimitsError::PeriodWithoutBudget(Default::default()),
                ),
                Code::InvalidArgument,
            ),
            (StoreError::KeyAlreadyRevoked(id), Code::FailedPrecondition),
            (StoreError::RotateRevoked(id), Code::FailedPrecondition),
            (StoreError::Corrupt("keys.hash".into()), Code::Internal),
            (StoreError::Database(sqlx::Error::PoolTimedOut), Code::Unavailable),
            (StoreError::Database(sqlx::Error::RowNotFound), Code::Internal),
            (StoreError::Unreachable("connection refused".into()), Code::Unavailable),
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

    /// PostgreSQL down: `UNAVAILABLE`, saying the database cannot be reached.
    #[test]
    fn an_unreachable_database_is_unavailable_and_says_so() {
        let err = StoreError::Unreachable("timed out waiting for a database connection".into());
        let status = Status::from(AdminError::from(err));
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(
            status.message(),
            "the store cannot write (cannot reach the database: timed out waiting for a database connection); retry once it is fixed"
        );
    }

    /// A PostgreSQL session terminated under a write (`57P01`) is the environment, not a bug.
    #[tokio::test]
    async fn a_terminated_postgres_session_is_unavailable() {
        use sqlx::Connection;

        let db = crate::store::test_db::TestDb::postgres().await;
        let crate::store::test_db::TestDb::Postgres(pg) = &db else { unreachable!() };
        let mut victim = pg.connect().await;
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut victim).await.unwrap();
        let mut admin = pg.connect().await;
        sqlx::query("SELECT pg_terminate_backend($1)").bind(pid).execute(&mut admin).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let err = loop {
            // The termination arrives asynchronously; the next statements see it.
            match sqlx::query("SELECT 1").execute(&mut victim).await {
                Ok(_) => {
                    assert!(tokio::time::Instant::now() < deadline, "the session was never terminated");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(err) => break err,
            }
        };
        let status = Status::from(AdminError::from(StoreError::Database(err)));
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        admin.close().await.unwrap();
    }

    /// A read-only database is a store that cannot write: `UNAVAILABLE` with SQLite's reason.
    #[tokio::test]
    async fn a_database_that_cannot_write_is_unavailable_with_its_reason() {
        use sqlx::{ConnectOptions, Connection};

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ro.db");
        let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&path).create_if_missing(true);
        let mut writer = options.clone().connect().await.unwrap();
        sqlx::query("CREATE TABLE t (x)").execute(&mut writer).await.unwrap();
        writer.close().await.unwrap();
        let mut reader = options.read_only(true).connect().await.unwrap();

        let err = sqlx::query("INSERT INTO t VALUES (1)").execute(&mut reader).await.unwrap_err();
        let status = Status::from(AdminError::from(StoreError::Database(err)));
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(
            status.message().starts_with("the store cannot write (attempt to write a readonly database)"),
            "{status:?}"
        );
        reader.close().await.unwrap();
    }
}
