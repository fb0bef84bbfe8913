//! A fresh PostgreSQL database per test on the test server (trust auth;
//! `AURORA_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`), dropped
//! with every connection to it when the test ends, also when it panics.

use sqlx::{Connection, PgConnection};

fn server_url() -> String {
    std::env::var("AURORA_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

#[derive(Debug)]
pub struct TestDatabase {
    name: String,
}

impl TestDatabase {
    pub async fn create() -> Self {
        let name = format!("aurora_e2e_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&server_url()).await.expect("the PostgreSQL test server is reachable");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut admin).await.unwrap();
        admin.close().await.unwrap();
        TestDatabase { name }
    }

    /// The database's URL, for `AURORA_DATABASE_URL`.
    pub fn url(&self) -> String {
        let server = server_url();
        let base = server.rsplit_once('/').map_or(server.as_str(), |(base, _)| base);
        format!("{base}/{}", self.name)
    }

    /// Refuses (or accepts again) new connections to the database, and with `false` also ends
    /// every session on it: as good as down for the control planes, without touching a server
    /// that other tests share.
    pub async fn set_available(&self, available: bool) {
        let mut admin = PgConnection::connect(&server_url()).await.unwrap();
        let sql = format!("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {available}", self.name);
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut admin).await.unwrap();
        if !available {
            sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
                .bind(&self.name)
                .execute(&mut admin)
                .await
                .unwrap();
        }
        admin.close().await.unwrap();
    }

    /// A connection of the test's own, to read the store from outside the control planes.
    pub async fn connect(&self) -> PgConnection {
        PgConnection::connect(&self.url()).await.unwrap()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // The test's runtime cannot block on a future here: a thread with its own does it.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let mut admin = PgConnection::connect(&server_url()).await?;
                let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut admin).await?;
                admin.close().await
            })
        })
        .join();
    }
}
