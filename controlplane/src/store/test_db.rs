//! Fresh, empty databases for store tests, one per test so tests run in parallel: a SQLite file
//! in a temporary directory, or a PostgreSQL database created on the test server (trust auth;
//! `AURORA_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`) and
//! dropped when the test ends, also when it panics.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use sqlx::Connection;
use sqlx::postgres::PgConnection;

use super::{Keyring, PgPoolConfig, Store};

/// The key-encryption key every store test seals with (32 bytes of base64, like a real one).
pub(crate) const TEST_ENCRYPTION_KEY: &str = "dGVzdC1vbmx5LWVuY3J5cHRpb24ta2V5LTMyLWJ5dGU=";

/// A keyring with [`TEST_ENCRYPTION_KEY`].
pub(crate) fn test_keyring() -> Keyring {
    Keyring::parse(TEST_ENCRYPTION_KEY).unwrap()
}

/// The server the PostgreSQL tests create their databases on.
fn server_url() -> String {
    std::env::var("AURORA_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// One test's database.
#[derive(Debug)]
pub(crate) enum TestDb {
    Sqlite(tempfile::TempDir),
    Postgres(PgDatabase),
}

impl TestDb {
    pub(crate) fn sqlite() -> Self {
        TestDb::Sqlite(tempfile::tempdir().unwrap())
    }

    pub(crate) async fn postgres() -> Self {
        TestDb::Postgres(PgDatabase::create().await)
    }

    pub(crate) fn url(&self) -> String {
        match self {
            TestDb::Sqlite(dir) => format!("sqlite://{}", dir.path().join("nested/dir/aurora.db").display()),
            TestDb::Postgres(db) => db.url(),
        }
    }

    /// Opens a store on the database; opening again is another process on the same database.
    pub(crate) async fn open(&self) -> Arc<dyn Store> {
        super::open(&self.url(), PgPoolConfig::default(), test_keyring()).await.unwrap()
    }
}

/// A database created for one test and dropped (with its connections) when this is dropped.
#[derive(Debug)]
pub(crate) struct PgDatabase {
    name: String,
}

impl PgDatabase {
    async fn create() -> Self {
        let name = format!("aurora_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&server_url()).await.expect("the PostgreSQL test server is reachable");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut admin).await.unwrap();
        admin.close().await.unwrap();
        PgDatabase { name }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn url(&self) -> String {
        let server = server_url();
        let base = server.rsplit_once('/').map_or(server.as_str(), |(base, _)| base);
        format!("{base}/{}", self.name)
    }

    /// A connection to the server's maintenance database, to act on this one from outside.
    pub(crate) async fn connect_server(&self) -> PgConnection {
        PgConnection::connect(&server_url()).await.unwrap()
    }

    /// A connection of the test's own to the database, to act on it from outside the store.
    pub(crate) async fn connect(&self) -> PgConnection {
        PgConnection::connect(&self.url()).await.unwrap()
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which cannot block on a future: a thread with a
        // runtime of its own does it.
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let mut admin = PgConnection::connect(&server_url()).await?;
                let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut admin).await?;
                admin.close().await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) && !std::thread::panicking() {
            panic!("cannot drop the test database {}", self.name);
        }
    }
}
