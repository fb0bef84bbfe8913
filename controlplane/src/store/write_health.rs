//! Whether the store can write right now, as its writes and probes find it.
//!
//! Every write transaction reports its outcome here, and the control plane probes the store
//! with a small durable write every few seconds (`Store::probe_write`), so the status turns
//! `CannotWrite` when a disk fills even while nobody writes, and back to `Writable` as soon as
//! the cause is gone. Health checks, readiness and a metric read it.

use tokio::sync::watch;

use super::{StorageFailure, StoreError};

/// What the latest write or probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteStatus {
    Writable,
    /// The latest write failed for an environmental reason ([`StorageFailure`]); `reason` is
    /// the database's own message, which names no value.
    CannotWrite {
        reason: String,
    },
}

impl WriteStatus {
    pub fn is_writable(&self) -> bool {
        matches!(self, WriteStatus::Writable)
    }
}

/// The writer's side: shared by a store's clones.
#[derive(Debug)]
pub(crate) struct WriteHealth {
    status: watch::Sender<WriteStatus>,
}

impl WriteHealth {
    pub(crate) fn new() -> Self {
        WriteHealth { status: watch::Sender::new(WriteStatus::Writable) }
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<WriteStatus> {
        self.status.subscribe()
    }

    /// Records the outcome of a write and passes it through. A success means the store can
    /// write; a failure counts only when its cause is the environment (a name already taken
    /// says nothing about the disk).
    pub(crate) fn track<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        let next = match &result {
            Ok(_) => WriteStatus::Writable,
            Err(err) if err.storage_failure() == Some(StorageFailure::CannotWrite) => {
                WriteStatus::CannotWrite { reason: err.storage_reason() }
            }
            Err(_) => return result,
        };
        self.status.send_if_modified(|status| {
            if *status == next {
                return false;
            }
            match &next {
                WriteStatus::Writable => tracing::info!("the store can write again"),
                WriteStatus::CannotWrite { reason } => tracing::error!(%reason, "the store cannot write"),
            }
            *status = next;
            true
        });
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_of_the_environment_flip_the_status_and_a_success_flips_it_back() {
        let health = WriteHealth::new();
        let status = health.subscribe();
        let _ = health.track::<()>(Err(StoreError::Database(sqlx::Error::Io(std::io::Error::other("disk")))));
        assert!(!status.borrow().is_writable());

        // Not about the disk: the status stays as it was.
        let _ = health.track::<()>(Err(StoreError::KeyNameTaken("ci".into())));
        assert!(!status.borrow().is_writable());

        let _ = health.track(Ok(()));
        assert_eq!(*status.borrow(), WriteStatus::Writable);
    }

    #[test]
    fn busy_is_not_a_failure_to_write() {
        let health = WriteHealth::new();
        let _ = health.track::<()>(Err(StoreError::Database(sqlx::Error::PoolTimedOut)));
        assert!(health.subscribe().borrow().is_writable());
    }
}
