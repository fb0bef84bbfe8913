//! Transactions that can never poison a pooled connection.
//!
//! sqlx's own `Transaction` tracks a nesting depth inside the connection and only lowers it when
//! its `COMMIT` or `ROLLBACK` succeeds. When a database ends the transaction by itself (SQLite
//! rolls back on `SQLITE_FULL` or an I/O error during `COMMIT`; PostgreSQL aborts on a broken
//! connection), the `ROLLBACK` sqlx sends on drop fails with "no transaction is active", the
//! depth stays at one, and every later `BEGIN` on that pooled connection fails with "attempted to
//! call begin_with at non-zero transaction depth", long after the cause is gone.
//!
//! [`Tx`] owns its pooled connection instead and issues `BEGIN`/`COMMIT`/`ROLLBACK` itself. The
//! connection goes back to the pool only once one of them has succeeded and left it outside any
//! transaction; on every other path (an error anywhere, a failed commit, a cancelled future, an
//! early `?`) the connection is closed rather than returned, which ends any transaction still
//! open on it. The next caller gets a fresh connection and succeeds as soon as the database can.

use std::ops::{Deref, DerefMut};

use sqlx::pool::PoolConnection;
use sqlx::{Database, Executor};

/// An open transaction on a connection taken from the pool.
#[derive(Debug)]
pub(super) struct Tx<DB: Database> {
    conn: PoolConnection<DB>,
    /// True once the connection is known to be outside any transaction.
    clean: bool,
}

impl<DB> Tx<DB>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    /// Runs `begin` (`BEGIN`, `BEGIN IMMEDIATE`, ...) on a connection taken from the pool.
    pub(super) async fn begin(conn: PoolConnection<DB>, begin: &'static str) -> Result<Self, sqlx::Error> {
        let mut tx = Tx { conn, clean: false };
        sqlx::raw_sql(begin).execute(&mut *tx.conn).await?;
        Ok(tx)
    }

    /// Commits. On failure the connection is discarded, whatever state the database left it in.
    pub(super) async fn commit(mut self) -> Result<(), sqlx::Error> {
        sqlx::raw_sql("COMMIT").execute(&mut *self.conn).await?;
        self.clean = true;
        Ok(())
    }

    /// Rolls back, keeping the connection only if the rollback itself succeeded.
    pub(super) async fn rollback(mut self) -> Result<(), sqlx::Error> {
        sqlx::raw_sql("ROLLBACK").execute(&mut *self.conn).await?;
        self.clean = true;
        Ok(())
    }
}

impl<DB: Database> Drop for Tx<DB> {
    fn drop(&mut self) {
        if !self.clean {
            // Closing a connection ends its open transaction (the database rolls it back).
            self.conn.close_on_drop();
        }
    }
}

impl<DB: Database> Deref for Tx<DB> {
    type Target = DB::Connection;

    fn deref(&self) -> &DB::Connection {
        &self.conn
    }
}

impl<DB: Database> DerefMut for Tx<DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        &mut self.conn
    }
}
