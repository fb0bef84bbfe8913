//! PostgreSQL's shared `limit_presence` table: each control-plane replica's summed limit
//! demand per key, so every replica divides each limit knowing what the others' data planes
//! hold (see `capacity/peers.rs`).

use std::time::Duration;

use sqlx::{PgPool, Row};

use super::StoreError;
use super::tx::Tx;
use crate::time;

/// One replica's demand for one key (or, with an empty `key_id`, only its data-plane count).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LimitRow {
    pub instance: String,
    /// The key's UUID as text; empty for the replica's row of `replicas` alone.
    pub key_id: String,
    pub window_start: i64,
    pub admitted: u64,
    pub tokens: u64,
    pub in_flight: u64,
    pub weight: u64,
    pub busy: u64,
    pub replicas: u64,
    pub budget_uncommitted: u64,
}

fn wide(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub(super) async fn publish(pool: &PgPool, instance: &str, rows: &[LimitRow], ttl: Duration) -> Result<(), StoreError> {
    let now = time::now();
    let mut tx = Tx::begin(pool.acquire().await?, "BEGIN").await?;
    sqlx::query("DELETE FROM limit_presence WHERE instance = $1 OR expires_at < $2")
        .bind(instance)
        .bind(time::to_millis(now))
        .execute(&mut *tx)
        .await?;
    for row in rows {
        sqlx::query(
            "INSERT INTO limit_presence (instance, key_id, window_start, admitted, tokens, in_flight, weight, busy, \
             replicas, budget_tokens, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(instance)
        .bind(&row.key_id)
        .bind(row.window_start)
        .bind(wide(row.admitted))
        .bind(wide(row.tokens))
        .bind(wide(row.in_flight))
        .bind(wide(row.weight))
        .bind(wide(row.busy))
        .bind(wide(row.replicas))
        .bind(wide(row.budget_uncommitted))
        .bind(time::to_millis(now + ttl))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

pub(super) async fn others(pool: &PgPool, instance: &str) -> Result<Vec<LimitRow>, StoreError> {
    let rows = sqlx::query(
        "SELECT instance, key_id, window_start, admitted, tokens, in_flight, weight, busy, replicas, budget_tokens \
         FROM limit_presence WHERE instance <> $1 AND expires_at >= $2",
    )
    .bind(instance)
    .bind(time::to_millis(time::now()))
    .fetch_all(pool)
    .await?;
    let count = |row: &sqlx::postgres::PgRow, column: &str| -> Result<u64, StoreError> {
        let value: i64 = row.try_get(column)?;
        u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("limit_presence.{column}")))
    };
    rows.iter()
        .map(|row| {
            Ok(LimitRow {
                instance: row.try_get("instance")?,
                key_id: row.try_get("key_id")?,
                window_start: row.try_get("window_start")?,
                admitted: count(row, "admitted")?,
                tokens: count(row, "tokens")?,
                in_flight: count(row, "in_flight")?,
                weight: count(row, "weight")?,
                busy: count(row, "busy")?,
                replicas: count(row, "replicas")?,
                budget_uncommitted: count(row, "budget_tokens")?,
            })
        })
        .collect()
}
