//! The audit trail: one record per committed revision, appended in the revision's own
//! transaction, hash-chained, listed with filters and verified end to end.
//!
//! [`SqlStore::commit`](super::sql) is the only way a revision commits and it takes an
//! [`AuditEvent`] and the [`Actor`] behind it, so no mutation can commit without its record.
//! Appending reads the chain's head row, inserts the record with the next sequence number and
//! the previous record's hash, and moves the head row on; writers are already serialized by the
//! store's head row (SQLite `BEGIN IMMEDIATE`, PostgreSQL its row lock), so the chain is one line
//! across every replica. After the commit, each record is also logged as one event on the
//! `aurora::audit` tracing target (a JSON line with `AURORA_LOG_FORMAT=json`).
//!
//! Records are never updated. The only delete is [`AuditLog::prune_audit`], which removes the
//! oldest records and moves the chain's anchor to the last removed hash, so the rest still
//! verifies. Change-log compaction does not touch this table.

mod chain;
mod event;

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Row, Type};

pub use chain::{ChainBreak, ChainEnds, GENESIS, Hash};
pub use event::{ACTIONS, AuditEvent};

use super::sql::{Dialect, SqlStore, to_i64, to_revision};
use super::{Revision, StoreError};
use crate::time;

/// Who made a change, from where, through which control-plane process: passed by the admin API
/// (or bootstrap) to every mutation, so adding a mutation is one more call with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// `master-key` (the admin API's one credential today) or `bootstrap`.
    pub identity: String,
    /// The caller's address as the gRPC server saw it; empty when there is no caller.
    pub peer: String,
    /// The control-plane process that commits the change.
    pub replica: Arc<str>,
}

impl Actor {
    /// A caller of the admin API, authenticated by the master key.
    pub fn master_key(peer: Option<std::net::SocketAddr>, replica: Arc<str>) -> Self {
        Actor { identity: "master-key".into(), peer: peer.map(|a| a.to_string()).unwrap_or_default(), replica }
    }

    /// The environment applied at startup.
    pub fn bootstrap(replica: Arc<str>) -> Self {
        Actor { identity: "bootstrap".into(), peer: String::new(), replica }
    }

    /// The actor of the store's own tests.
    #[cfg(test)]
    pub(crate) fn for_tests() -> Self {
        Actor { identity: "master-key".into(), peer: "127.0.0.1:1".into(), replica: Arc::from("test-host:1:tests") }
    }
}

/// One stored audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// 1, 2, 3, … in commit order, without gaps.
    pub seq: u64,
    /// Unix milliseconds.
    pub committed_at_ms: i64,
    pub revision: Revision,
    pub action: String,
    pub target: String,
    /// A JSON object, field → new value, exactly as stored and hashed.
    pub changes: String,
    pub actor: String,
    pub peer: String,
    pub replica: String,
    pub prev_hash: Hash,
    pub hash: Hash,
}

impl AuditRecord {
    pub fn committed_at(&self) -> SystemTime {
        time::from_millis(self.committed_at_ms)
    }
}

/// Which records [`AuditLog::list_audit`] returns, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only records with a greater sequence number (a page token).
    pub after_seq: u64,
    /// Committed at or after this.
    pub since: Option<SystemTime>,
    /// Committed before this.
    pub until: Option<SystemTime>,
    /// The key id, provider name, `settings` or `environment`.
    pub target: Option<String>,
    /// An action (`key.revoke`) or a group of them (`key`).
    pub action: Option<String>,
    pub limit: u32,
}

/// What [`AuditLog::verify_audit`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditVerification {
    pub ends: ChainEnds,
    /// How many records were checked before the walk ended.
    pub checked: u64,
    /// The first broken link; `None` when the whole chain verifies.
    pub broken: Option<ChainBreak>,
}

/// The audit trail's reads and its pruning. Appending is part of every mutation's commit.
#[async_trait]
pub trait AuditLog: Send + Sync {
    async fn list_audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError>;
    /// Walks the whole retained chain in one consistent read.
    async fn verify_audit(&self) -> Result<AuditVerification, StoreError>;
    /// Removes the records committed before `before` (oldest first, up to the newest of them)
    /// and anchors the chain at the last one removed. Returns how many were removed.
    async fn prune_audit(&self, before: SystemTime) -> Result<u64, StoreError>;
}

/// Records read per query while verifying, so a long chain is walked in bounded memory.
const VERIFY_BATCH: i64 = 1000;

const COLUMNS: &str = "seq, committed_at, revision, action, target, changes, actor, peer, replica, prev_hash, hash";

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
    /// Appends the record of `revision` inside its write transaction.
    pub(super) async fn append_audit(
        conn: &mut DB::Connection,
        revision: Revision,
        now: SystemTime,
        actor: &Actor,
        event: &AuditEvent,
    ) -> Result<AuditRecord, StoreError> {
        let ends = Self::chain_ends(conn).await?;
        let mut record = AuditRecord {
            seq: ends.last_seq + 1,
            committed_at_ms: time::to_millis(now),
            revision,
            action: event.action.to_owned(),
            target: event.target.clone(),
            changes: event.changes_json(),
            actor: actor.identity.clone(),
            peer: actor.peer.clone(),
            replica: actor.replica.to_string(),
            prev_hash: ends.last_hash,
            hash: GENESIS,
        };
        record.hash = chain::record_hash(&record, &record.prev_hash);
        sqlx::query(
            "INSERT INTO audit_log (seq, committed_at, revision, action, target, changes, actor, peer, replica, \
             prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(to_i64(record.seq))
        .bind(record.committed_at_ms)
        .bind(to_i64(record.revision))
        .bind(record.action.clone())
        .bind(record.target.clone())
        .bind(record.changes.clone())
        .bind(record.actor.clone())
        .bind(record.peer.clone())
        .bind(record.replica.clone())
        .bind(record.prev_hash.to_vec())
        .bind(record.hash.to_vec())
        .execute(&mut *conn)
        .await?;
        sqlx::query("UPDATE audit_chain SET last_seq = $1, last_hash = $2 WHERE id = 1")
            .bind(to_i64(record.seq))
            .bind(record.hash.to_vec())
            .execute(&mut *conn)
            .await?;
        Ok(record)
    }

    async fn chain_ends(conn: &mut DB::Connection) -> Result<ChainEnds, StoreError> {
        let row = sqlx::query("SELECT first_seq, anchor_hash, last_seq, last_hash FROM audit_chain WHERE id = 1")
            .fetch_one(&mut *conn)
            .await?;
        Ok(ChainEnds {
            first_seq: to_revision(row.try_get("first_seq")?)?,
            anchor: hash_of(row.try_get("anchor_hash")?, "audit_chain.anchor_hash")?,
            last_seq: to_revision(row.try_get("last_seq")?)?,
            last_hash: hash_of(row.try_get("last_hash")?, "audit_chain.last_hash")?,
        })
    }

    fn record_from_row(row: &DB::Row) -> Result<AuditRecord, StoreError> {
        Ok(AuditRecord {
            seq: to_revision(row.try_get("seq")?)?,
            committed_at_ms: row.try_get("committed_at")?,
            revision: to_revision(row.try_get("revision")?)?,
            action: row.try_get("action")?,
            target: row.try_get("target")?,
            changes: row.try_get("changes")?,
            actor: row.try_get("actor")?,
            peer: row.try_get("peer")?,
            replica: row.try_get("replica")?,
            prev_hash: hash_of(row.try_get("prev_hash")?, "audit_log.prev_hash")?,
            hash: hash_of(row.try_get("hash")?, "audit_log.hash")?,
        })
    }
}

#[async_trait]
impl<DB> AuditLog for SqlStore<DB>
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
    async fn list_audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        let action = query.action.clone().unwrap_or_default();
        // A group (`key`) matches its actions (`key.create`, …); '' LIKE '' only matches ''.
        let group = if action.is_empty() || action.contains('.') { String::new() } else { format!("{action}.%") };
        let sql = format!(
            "SELECT {COLUMNS} FROM audit_log WHERE seq > $1 AND committed_at >= $2 AND committed_at < $3 \
             AND ($4 = '' OR target = $4) AND ($5 = '' OR action = $5 OR action LIKE $6) ORDER BY seq LIMIT $7"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(to_i64(query.after_seq))
            .bind(query.since.map_or(i64::MIN, time::to_millis))
            .bind(query.until.map_or(i64::MAX, time::to_millis))
            .bind(query.target.clone().unwrap_or_default())
            .bind(action)
            .bind(group)
            .bind(i64::from(query.limit))
            .fetch_all(&mut *self.conn().await?)
            .await?;
        rows.iter().map(Self::record_from_row).collect()
    }

    async fn verify_audit(&self) -> Result<AuditVerification, StoreError> {
        let mut tx = self.begin(DB::BEGIN_SNAPSHOT).await?;
        let head = Self::read_head(&mut tx).await?;
        let ends = Self::chain_ends(&mut tx).await?;
        let mut walk = match chain::Walk::new(ends) {
            Ok(walk) => walk,
            Err(broken) => return Ok(AuditVerification { ends, checked: 0, broken: Some(broken) }),
        };
        let mut checked = 0;
        let mut next = to_i64(ends.first_seq);
        loop {
            let sql = format!("SELECT {COLUMNS} FROM audit_log WHERE seq >= $1 ORDER BY seq LIMIT $2");
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(next).bind(VERIFY_BATCH).fetch_all(&mut *tx).await?;
            for row in &rows {
                let record = Self::record_from_row(row)?;
                if let Err(broken) = walk.check(&record) {
                    tx.commit().await?;
                    return Ok(AuditVerification { ends, checked, broken: Some(broken) });
                }
                checked += 1;
                next = to_i64(record.seq) + 1;
            }
            if i64::try_from(rows.len()).unwrap_or(i64::MAX) < VERIFY_BATCH {
                break;
            }
        }
        tx.commit().await?;
        match walk.finish_at(head) {
            Ok(checked) => Ok(AuditVerification { ends, checked, broken: None }),
            Err(broken) => Ok(AuditVerification { ends, checked, broken: Some(broken) }),
        }
    }

    async fn prune_audit(&self, before: SystemTime) -> Result<u64, StoreError> {
        let mut tx = self.begin(DB::BEGIN_WRITE).await?;
        // Locks the chain's head row first (PostgreSQL; SQLite holds the write lock already), so
        // two replicas pruning at once run one after the other and the anchor only moves
        // forward; the reads below then see the other's committed prune.
        sqlx::query("UPDATE audit_chain SET first_seq = first_seq WHERE id = 1").execute(&mut *tx).await?;
        let ends = Self::chain_ends(&mut tx).await?;
        let row = sqlx::query(
            "SELECT seq, hash FROM audit_log WHERE seq >= $1 AND committed_at < $2 ORDER BY seq DESC LIMIT 1",
        )
        .bind(to_i64(ends.first_seq))
        .bind(time::to_millis(before))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(0);
        };
        let last: i64 = row.try_get("seq")?;
        let anchor = hash_of(row.try_get("hash")?, "audit_log.hash")?;
        sqlx::query("DELETE FROM audit_log WHERE seq <= $1").bind(last).execute(&mut *tx).await?;
        sqlx::query("UPDATE audit_chain SET first_seq = $1, anchor_hash = $2 WHERE id = 1")
            .bind(last + 1)
            .bind(anchor.to_vec())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        let removed = to_revision(last)?.saturating_sub(ends.first_seq) + 1;
        tracing::info!(
            target: "aurora::audit",
            removed,
            first_seq = to_revision(last)? + 1,
            anchor_hash = %hex::encode(anchor),
            "pruned the audit trail"
        );
        Ok(removed)
    }
}

/// Logs a committed record as one event: with `AURORA_LOG_FORMAT=json`, one JSON line whose
/// fields are the record's, ready to ship with the logs.
pub(super) fn log(record: &AuditRecord) {
    tracing::info!(
        target: "aurora::audit",
        seq = record.seq,
        committed_at = %humantime::format_rfc3339_millis(record.committed_at()),
        revision = record.revision,
        action = %record.action,
        object = %record.target,
        changes = %record.changes,
        actor = %record.actor,
        peer = %record.peer,
        replica = %record.replica,
        prev_hash = %hex::encode(record.prev_hash),
        hash = %hex::encode(record.hash),
        "audit"
    );
}

fn hash_of(bytes: Vec<u8>, column: &str) -> Result<Hash, StoreError> {
    Hash::try_from(bytes.as_slice()).map_err(|_| StoreError::Corrupt(column.to_owned()))
}
