//! Where control-plane replicas sharing one database publish the data planes they serve, so
//! each can list and wait for the whole fleet (see `fleet_share`). Only PostgreSQL has it:
//! a SQLite store belongs to one control plane, whose own fleet is the whole fleet.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use sqlx::{PgPool, Row};

use super::sql::{to_i64, to_revision};
use super::tx::Tx;
use super::{Revision, StoreError};
use crate::time;

/// One data plane's stream, as the replica holding it last published it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    /// The control-plane replica holding the stream.
    pub instance: String,
    /// The stream's registration id in that replica.
    pub registration: u64,
    pub node_id: String,
    pub address: Option<SocketAddr>,
    pub version: String,
    pub connected_at: SystemTime,
    pub last_seen_at: SystemTime,
    pub acked_revision: Revision,
    pub rejected: Option<(Revision, String)>,
}

/// The shared presence table.
#[async_trait]
pub trait PresenceTable: Send + Sync + std::fmt::Debug {
    /// Replaces every row of `instance` with `rows`, each valid for `ttl`, and deletes the rows
    /// of any replica that let them expire.
    async fn publish(&self, instance: &str, rows: &[Presence], ttl: Duration) -> Result<(), StoreError>;
    /// The unexpired rows of every replica but `instance`.
    async fn others(&self, instance: &str) -> Result<Vec<Presence>, StoreError>;

    /// Like [`PresenceTable::publish`], for this replica's summed credential health.
    async fn publish_credentials(
        &self,
        instance: &str,
        rows: &[crate::credential_health::CredentialRow],
        ttl: Duration,
    ) -> Result<(), StoreError>;
    /// Every other replica's unexpired credential health.
    async fn other_credentials(
        &self,
        instance: &str,
    ) -> Result<Vec<crate::credential_health::CredentialRow>, StoreError>;

    /// Like [`PresenceTable::publish`], for this replica's summed limit demand (issue 13).
    async fn publish_limits(
        &self,
        instance: &str,
        rows: &[super::limit_presence::LimitRow],
        ttl: Duration,
    ) -> Result<(), StoreError>;
    /// Every other replica's unexpired limit demand.
    async fn other_limits(&self, instance: &str) -> Result<Vec<super::limit_presence::LimitRow>, StoreError>;
}

/// [`PresenceTable`] in the `fleet_presence` table of a PostgreSQL store.
#[derive(Debug, Clone)]
pub(super) struct PgPresence {
    pub(super) pool: PgPool,
}

#[async_trait]
impl PresenceTable for PgPresence {
    async fn publish_limits(
        &self,
        instance: &str,
        rows: &[super::limit_presence::LimitRow],
        ttl: Duration,
    ) -> Result<(), StoreError> {
        super::limit_presence::publish(&self.pool, instance, rows, ttl).await
    }

    async fn other_limits(&self, instance: &str) -> Result<Vec<super::limit_presence::LimitRow>, StoreError> {
        super::limit_presence::others(&self.pool, instance).await
    }

    async fn publish_credentials(
        &self,
        instance: &str,
        rows: &[crate::credential_health::CredentialRow],
        ttl: Duration,
    ) -> Result<(), StoreError> {
        super::credential_presence::publish(&self.pool, instance, rows, ttl).await
    }

    async fn other_credentials(
        &self,
        instance: &str,
    ) -> Result<Vec<crate::credential_health::CredentialRow>, StoreError> {
        super::credential_presence::others(&self.pool, instance).await
    }

    async fn publish(&self, instance: &str, rows: &[Presence], ttl: Duration) -> Result<(), StoreError> {
        let now = time::now();
        let expires_at = time::to_millis(now + ttl);
        let mut tx = Tx::begin(self.pool.acquire().await?, "BEGIN").await?;
        sqlx::query("DELETE FROM fleet_presence WHERE instance = $1 OR expires_at < $2")
            .bind(instance)
            .bind(time::to_millis(now))
            .execute(&mut *tx)
            .await?;
        for row in rows {
            sqlx::query(
                "INSERT INTO fleet_presence (instance, registration, node_id, address, version, connected_at, \
                 last_seen_at, acked_revision, rejected_revision, rejected_reason, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(instance)
            .bind(to_i64(row.registration))
            .bind(&row.node_id)
            .bind(row.address.map(|a| a.to_string()))
            .bind(&row.version)
            .bind(time::to_millis(row.connected_at))
            .bind(time::to_millis(row.last_seen_at))
            .bind(to_i64(row.acked_revision))
            .bind(row.rejected.as_ref().map(|(revision, _)| to_i64(*revision)))
            .bind(row.rejected.as_ref().map(|(_, reason)| reason.as_str()))
            .bind(expires_at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn others(&self, instance: &str) -> Result<Vec<Presence>, StoreError> {
        let rows = sqlx::query(
            "SELECT instance, registration, node_id, address, version, connected_at, last_seen_at, acked_revision, \
             rejected_revision, rejected_reason FROM fleet_presence WHERE instance <> $1 AND expires_at >= $2",
        )
        .bind(instance)
        .bind(time::to_millis(time::now()))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let rejected = match row.try_get::<Option<i64>, _>("rejected_revision")? {
                    Some(revision) => Some((
                        to_revision(revision)?,
                        row.try_get::<Option<String>, _>("rejected_reason")?.unwrap_or_default(),
                    )),
                    None => None,
                };
                Ok(Presence {
                    instance: row.try_get("instance")?,
                    registration: to_revision(row.try_get("registration")?)?,
                    node_id: row.try_get("node_id")?,
                    address: row.try_get::<Option<String>, _>("address")?.and_then(|a| a.parse().ok()),
                    version: row.try_get("version")?,
                    connected_at: time::from_millis(row.try_get("connected_at")?),
                    last_seen_at: time::from_millis(row.try_get("last_seen_at")?),
                    acked_revision: to_revision(row.try_get("acked_revision")?)?,
                    rejected,
                })
            })
            .collect()
    }
}
