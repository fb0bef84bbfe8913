//! Key rotation with a grace period: a new secret for the same key id.
//!
//! The key keeps its id, limits and usage history; only its secret changes. The secret it
//! replaces moves to `previous_hash` / `previous_redacted` / `previous_expires_at` (migration
//! 0010, PostgreSQL 0009) and stays accepted, as the same key, until its grace period ends. A
//! key holds at most one previous secret: rotating again while one is in grace replaces it (it
//! stops at once), and a rotation with no grace period clears it. A revoked key cannot be
//! rotated (it is disabled for good, so a new secret would be pointless); a disabled one can,
//! so a leaked secret can be replaced before the key is turned back on.
//!
//! On the config stream a rotation is one revision of two changes: a delete of the replaced
//! secret's hash, then an upsert of the key under its new hash carrying the previous hash and
//! its expiry. A data plane that predates rotation therefore simply stops the old secret at
//! once; a current one indexes the previous hash to the same key and compares its expiry with
//! its own clock at every lookup, so the grace period ends on time on every replica even with
//! no further revision (and with the control plane down). Once the grace has ended the key's
//! entries and snapshots leave the previous hash out (`KeyRecord::to_config`).

use std::time::SystemTime;

use aurora_core::KeyHash;
use aurora_proto::v1::{Change, change};
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Row, Type};
use uuid::Uuid;

use super::audit::{Actor, AuditEvent};
use super::change::ChangeEntry;
use super::model::{KeyRecord, PreviousSecret};
use super::sql::{Dialect, SqlStore};
use super::{Revision, StoreError};
use crate::time;

/// A freshly generated secret, as the store receives it: its hash and redacted form only.
#[derive(Debug, Clone)]
pub struct NewSecret {
    pub hash: KeyHash,
    pub redacted: String,
}

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
    pub(super) async fn rotate_key_tx(
        &self,
        id: Uuid,
        secret: NewSecret,
        grace_secs: u64,
        actor: &Actor,
    ) -> Result<(KeyRecord, Revision), StoreError> {
        let (mut tx, revision) = self.begin_write().await?;
        let mut record = Self::fetch_key(&mut tx, id).await?;
        if record.revoked_at.is_some() {
            return Err(StoreError::RotateRevoked(id));
        }
        let now = time::now();
        let replaced = record.hash;
        record.previous = (grace_secs > 0).then(|| PreviousSecret {
            hash: record.hash,
            redacted: record.redacted.clone(),
            expires_at: grace_end(now, grace_secs),
        });
        record.hash = secret.hash;
        record.redacted = secret.redacted;
        record.updated_at = now;
        sqlx::query(
            "UPDATE keys SET hash = $1, redacted = $2, previous_hash = $3, previous_redacted = $4, \
             previous_expires_at = $5, updated_at = $6 WHERE id = $7",
        )
        .bind(record.hash.as_bytes().to_vec())
        .bind(record.redacted.clone())
        .bind(record.previous.as_ref().map(|p| p.hash.as_bytes().to_vec()))
        .bind(record.previous.as_ref().map(|p| p.redacted.clone()))
        .bind(record.previous.as_ref().map(|p| time::to_millis(p.expires_at)))
        .bind(time::to_millis(now))
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
        // The delete first: a data plane drops the replaced secret's entry (and with it any
        // older previous secret indexed to it), then indexes the key under its new hash.
        let entries = [replaced_secret(id, replaced), ChangeEntry::key_upsert(&record)];
        let event = AuditEvent::key_rotated(&record, grace_secs);
        self.commit(tx, revision, &entries, now, actor, event).await?;
        Ok((record, revision))
    }

    /// The `previous_*` columns of a key row; all three are set together or not at all.
    pub(super) fn previous_from_row(row: &DB::Row) -> Result<Option<PreviousSecret>, StoreError>
    where
        for<'q> Option<Vec<u8>>: Decode<'q, DB> + Type<DB>,
        for<'q> Option<String>: Decode<'q, DB> + Type<DB>,
        for<'q> Option<i64>: Decode<'q, DB> + Type<DB>,
    {
        let hash: Option<Vec<u8>> = row.try_get("previous_hash")?;
        let redacted: Option<String> = row.try_get("previous_redacted")?;
        let expires_at: Option<i64> = row.try_get("previous_expires_at")?;
        match (hash, redacted, expires_at) {
            (None, None, None) => Ok(None),
            (Some(hash), Some(redacted), Some(expires_at)) => Ok(Some(PreviousSecret {
                hash: KeyHash::from_slice(&hash).ok_or_else(|| StoreError::Corrupt("keys.previous_hash".into()))?,
                redacted,
                expires_at: time::from_millis(expires_at),
            })),
            _ => Err(StoreError::Corrupt("keys.previous_*".into())),
        }
    }
}

/// The change that takes a replaced secret's hash out of every data plane's key table.
fn replaced_secret(id: Uuid, hash: KeyHash) -> ChangeEntry {
    ChangeEntry {
        kind: "key",
        object_id: id.to_string(),
        op: "delete",
        change: Change { change: Some(change::Change::KeyDelete(hash.as_bytes().to_vec())) },
    }
}

/// When a grace period that starts at `now` ends: in whole seconds (what data planes compare),
/// rounded up so the previous secret never gets less than it was given.
pub(super) fn grace_end(now: SystemTime, grace_secs: u64) -> SystemTime {
    // Milliseconds are never negative here (`to_millis` clamps at the epoch).
    let start = time::to_millis(now).saturating_add(999) / 1000;
    let grace = i64::try_from(grace_secs).unwrap_or(i64::MAX);
    time::from_millis(start.saturating_add(grace).saturating_mul(1000))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_grace_period_ends_on_a_whole_second_no_earlier_than_asked() {
        let now = time::from_millis(1_700_000_000_250);
        assert_eq!(grace_end(now, 2), time::from_millis(1_700_000_003_000));
        let on_the_second = time::from_millis(1_700_000_000_000);
        assert_eq!(grace_end(on_the_second, 2), time::from_millis(1_700_000_002_000));
        assert!(grace_end(now, 2) >= now + Duration::from_secs(2));
    }
}
