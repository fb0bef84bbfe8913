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
    /// A row that does not decode into a record: the database was edited by hand or by a newer
    /// version. The message names the column, never its value.
    #[error("corrupt record in the store: {0}")]
    Corrupt(String),
    #[error("cannot open the store: {0}")]
    Open(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("cannot migrate the store: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}
