//! PostgreSQL's shared `credential_presence` table: each control-plane replica's summed
//! credential health, so every replica sees the whole fleet's (see `credential_share`).

use std::time::Duration;

use aurora_core::ProviderKind;
use sqlx::{PgPool, Row};

use super::StoreError;
use super::tx::Tx;
use crate::credential_health::{CredentialRow, FleetCredentialHealth};
use crate::time;

pub(super) async fn publish(
    pool: &PgPool,
    instance: &str,
    rows: &[CredentialRow],
    ttl: Duration,
) -> Result<(), StoreError> {
    let now = time::now();
    let mut tx = Tx::begin(pool.acquire().await?, "BEGIN").await?;
    sqlx::query("DELETE FROM credential_presence WHERE instance = $1 OR expires_at < $2")
        .bind(instance)
        .bind(time::to_millis(now))
        .execute(&mut *tx)
        .await?;
    for (kind, name, health) in rows {
        sqlx::query(
            "INSERT INTO credential_presence (instance, provider, credential, requests, throttled, auth_failures, \
             cooldown_until_ms, failing, replicas, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(instance)
        .bind(kind.as_str())
        .bind(name)
        .bind(i64::try_from(health.requests).unwrap_or(i64::MAX))
        .bind(i64::try_from(health.throttled).unwrap_or(i64::MAX))
        .bind(i64::try_from(health.auth_failures).unwrap_or(i64::MAX))
        .bind(health.cooldown_until.map_or(0, time::to_millis))
        .bind(health.failing)
        .bind(i64::from(health.replicas))
        .bind(time::to_millis(now + ttl))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

pub(super) async fn others(pool: &PgPool, instance: &str) -> Result<Vec<CredentialRow>, StoreError> {
    let rows = sqlx::query(
        "SELECT provider, credential, requests, throttled, auth_failures, cooldown_until_ms, failing, replicas \
         FROM credential_presence WHERE instance <> $1 AND expires_at >= $2",
    )
    .bind(instance)
    .bind(time::to_millis(time::now()))
    .fetch_all(pool)
    .await?;
    let count = |value: i64| u64::try_from(value).unwrap_or(0);
    rows.iter()
        .filter_map(|row| {
            let decoded = (|| -> Result<Option<CredentialRow>, StoreError> {
                let provider: String = row.try_get("provider")?;
                // A provider a newer replica knows and this one does not: not ours to show.
                let Ok(kind) = provider.parse::<ProviderKind>() else { return Ok(None) };
                let until: i64 = row.try_get("cooldown_until_ms")?;
                let health = FleetCredentialHealth {
                    requests: count(row.try_get("requests")?),
                    throttled: count(row.try_get("throttled")?),
                    auth_failures: count(row.try_get("auth_failures")?),
                    cooldown_until: (until > 0).then(|| time::from_millis(until)),
                    failing: row.try_get("failing")?,
                    replicas: u32::try_from(row.try_get::<i64, _>("replicas")?).unwrap_or(u32::MAX),
                };
                Ok(Some((kind, row.try_get("credential")?, health)))
            })();
            decoded.transpose()
        })
        .collect()
}
