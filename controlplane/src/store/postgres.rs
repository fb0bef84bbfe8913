//! The PostgreSQL backend: one database shared by every control-plane replica.
//!
//! The statements are the SQLite backend's (`sql.rs`); what PostgreSQL adds is what several
//! processes on one database need:
//!
//! - Write transactions lock the head row with their first statement, so writers on every
//!   replica are serialized and revisions stay gap-free and in commit order. Snapshot reads run
//!   in `REPEATABLE READ READ ONLY` transactions: every statement sees the same commits.
//! - Each write transaction sends `NOTIFY aurora_head, '<revision>'` before it commits; the
//!   database delivers it on commit, to every replica's dedicated `LISTEN` connection, which
//!   advances the replica's head watch so its config streams push the change at once. The
//!   payload is only the revision: notifications are lost while a listener is disconnected and
//!   collapsed when identical, so the change log stays the source of truth, a reconnected
//!   listener re-reads the head, and the change feed's slow poll stays as a backstop.
//! - Compaction takes a transaction-scoped advisory lock, so one replica compacts at a time.
//! - Migrations run under sqlx's advisory lock (`pg_advisory_lock`, keyed on the database
//!   name), so replicas that start together apply each migration once.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions, PgQueryResult};
use sqlx::{Pool, Postgres};
use tokio::sync::watch;

use super::error::describe;
use super::presence::{PgPresence, PresenceTable};
use super::sealed::Keyring;
use super::sql::{Dialect, SqlStore, observe, to_revision};
use super::{Revision, StoreError};

/// The schema migrations in `controlplane/migrations-postgres`, embedded in the binary.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations-postgres");

/// The channel commits are announced on (`Dialect::NOTIFY_COMMIT` names it too).
const HEAD_CHANNEL: &str = "aurora_head";

/// How long the listener waits before reconnecting after an error it could not recover from.
const LISTEN_RETRY: Duration = Duration::from_secs(1);

/// A [`Store`](super::Store) in a PostgreSQL database.
pub type PgStore = SqlStore<Postgres>;

/// How a PostgreSQL store connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgPoolConfig {
    /// Connections each replica keeps at most (plus one for `LISTEN`).
    pub max_connections: u32,
    /// How long an operation waits to connect (or for a free connection) before failing.
    pub connect_timeout: Duration,
}

impl Default for PgPoolConfig {
    fn default() -> Self {
        PgPoolConfig { max_connections: 10, connect_timeout: Duration::from_secs(5) }
    }
}

impl Dialect for Postgres {
    // The head row's lock serializes writers; nothing else needs a stronger isolation.
    const BEGIN_WRITE: &'static str = "BEGIN";
    const BEGIN_SNAPSHOT: &'static str = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";
    const NOTIFY_COMMIT: Option<&'static str> = Some("SELECT pg_notify('aurora_head', $1)");
    // Released by the database when the transaction ends, however it ends. The key is
    // 0x6175726f72610001: "aurora", then 1 for compaction.
    const TRY_LOCK_COMPACTION: Option<&'static str> = Some("SELECT pg_try_advisory_xact_lock(7022645016940052481)");
    const IS_SERVER: bool = true;

    fn before_close(_pool: &Pool<Postgres>) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    fn presence_table(pool: &Pool<Postgres>) -> Option<Arc<dyn PresenceTable>> {
        Some(Arc::new(PgPresence { pool: pool.clone() }))
    }

    fn rows_affected(result: &PgQueryResult) -> u64 {
        result.rows_affected()
    }
}

impl SqlStore<Postgres> {
    /// Connects to the database at `url` (`postgres://…`), applies pending migrations and
    /// starts listening for other replicas' commits before the head is first read, so no
    /// commit falls between the two.
    ///
    /// Errors never include the URL: it may carry a password.
    pub async fn open(url: &str, config: PgPoolConfig, keyring: Keyring) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|_| StoreError::Open("invalid PostgreSQL URL (expected postgres://USER@HOST/DATABASE)".into()))?
            .application_name("aurora-controlplane");
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.connect_timeout)
            .connect_with(options.clone())
            .await
            .map_err(|err| StoreError::Open(format!("cannot connect to PostgreSQL: {}", describe(&err))))?;
        // A pool of its own, so `LISTEN` never takes a connection writers need.
        let listen_pool =
            PgPoolOptions::new().max_connections(1).acquire_timeout(config.connect_timeout).connect_lazy_with(options);
        let mut listener = PgListener::connect_with(&listen_pool).await?;
        listener.listen(HEAD_CHANNEL).await?;
        MIGRATOR.run(&pool).await?;
        let mut store = SqlStore::new(pool, keyring).await?;
        let task = tokio::spawn(follow_notifications(listener, store.pool.clone(), store.head_sender()));
        store.set_background(task.abort_handle());
        Ok(store)
    }
}

/// Advances `head` on every commit another replica (or this one) announces. When the `LISTEN`
/// connection was lost, announcements made meanwhile are gone: the head is re-read once it is
/// back, so the change feed catches up from its last revision.
async fn follow_notifications(mut listener: PgListener, pool: Pool<Postgres>, head: Arc<watch::Sender<Revision>>) {
    // Errors are logged once per outage, not at every retry.
    let mut failing = false;
    loop {
        match listener.try_recv().await {
            Ok(Some(notification)) => match notification.payload().parse::<Revision>() {
                Ok(revision) => {
                    failing = false;
                    observe(&head, revision);
                }
                Err(_) => tracing::warn!(channel = HEAD_CHANNEL, "ignoring a notification that is not a revision"),
            },
            // Reconnected (and listening again): whatever was announced meanwhile is re-read.
            Ok(None) => {
                tracing::info!("the LISTEN connection to PostgreSQL was lost and is back");
                failing = false;
                resync(&pool, &head).await;
            }
            Err(sqlx::Error::PoolClosed) => return,
            Err(err) => {
                if !failing {
                    tracing::warn!(error = %describe(&err), "cannot listen for commits; retrying every second");
                }
                failing = true;
                tokio::time::sleep(LISTEN_RETRY).await;
                resync(&pool, &head).await;
            }
        }
    }
}

async fn resync(pool: &Pool<Postgres>, head: &watch::Sender<Revision>) {
    let read: Result<i64, _> = sqlx::query_scalar("SELECT revision FROM head WHERE id = 1").fetch_one(pool).await;
    if let Ok(revision) = read.map_err(StoreError::from).and_then(to_revision) {
        observe(head, revision);
    }
}

#[cfg(test)]
#[path = "postgres_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "postgres_fault_tests.rs"]
mod fault_tests;
