//! Credential health across control-plane replicas on one PostgreSQL store.
//!
//! Each replica writes its data planes' summed credential health to the store's shared table
//! every [`INTERVAL`] and at once when one of its data planes reports a new cooldown, then reads
//! every other replica's rows into its [`CredentialBoard`](crate::credential_health::CredentialBoard),
//! which adds them to `GetProvider` and fans their new cooldowns out to its own data planes.
//! A cooldown that starts on a data plane of replica A therefore reaches the data planes of
//! replica B within about [`INTERVAL`] plus one round trip to the database.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::fleet::Fleet;
use crate::store::PresenceTable;

/// How often a replica shares and reads credential health.
pub const INTERVAL: Duration = Duration::from_millis(250);
/// How long a replica's rows last without a refresh (a killed replica's drop out by then).
pub const TTL: Duration = Duration::from_secs(10);

/// Shares and mirrors until the task is aborted.
pub async fn share(fleet: Arc<Fleet>, table: Arc<dyn PresenceTable>, instance: String) {
    let board = fleet.credential_health();
    let mut cooldowns = board.subscribe();
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            // A new cooldown (local or mirrored): share it now. A lagged receiver only means
            // several arrived; the next write carries them all.
            received = cooldowns.recv() => if matches!(received, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                return;
            },
        }
        let rows = board.local_rows(SystemTime::now());
        let result = match table.publish_credentials(&instance, &rows, TTL).await {
            Ok(()) => table.other_credentials(&instance).await,
            Err(err) => Err(err),
        };
        match result {
            Ok(others) => {
                board.set_remote(others, SystemTime::now());
                failing = false;
            }
            // The mirror keeps what it last read; the next round retries.
            Err(err) if !failing => {
                tracing::warn!(error = %err, "cannot share credential health with the other control planes");
                failing = true;
            }
            Err(_) => {}
        }
    }
}
