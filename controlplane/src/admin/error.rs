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
                StoreError::Database(sqlx::Error::PoolTimedOut) => {
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

#[cfg(test)]
mod tests {
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
        ];
        for (err, code) in cases {
            assert_eq!(Status::from(AdminError::from(err)).code(), code);
        }
    }
}
