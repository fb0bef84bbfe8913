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
