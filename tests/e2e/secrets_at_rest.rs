//! Secrets at rest, through the real binary: no credential ever set (current, replaced or
//! cleared) is in the SQLite files or any PostgreSQL table; a store never opens without its key;
//! rotation with `aurora controlplane re-encrypt`; a plaintext store from an older version is
//! sealed at start; a short master key is refused.

use std::path::Path;

use sqlx::Connection;
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::controlplane::{ADMIN_KEY, NODE_TOKEN, TestControlplane, run_cli};
use crate::support::dataplane::TestDataplane;
use crate::support::postgres::TestDatabase;
use crate::support::process::AuroraProcess;
use crate::support::wait;

const FIRST: &str = "sk-ant-at-rest-first-9a8b";
const SECOND: &str = "sk-ant-at-rest-second-7c6d";
const CLEARED: &str = "sk-openai-at-rest-cleared-5e4f";
/// A named credential of Anthropic's set, added then removed.
const SPARE: &str = "sk-ant-at-rest-spare-3a2b";

async fn upstream() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(any()).respond_with(ResponseTemplate::new(200).set_body_string("{}")).mount(&server).await;
    server
}

/// Replaces Anthropic's credential with [`SECOND`], sets OpenAI's to [`CLEARED`] and clears it,
/// adds [`SPARE`] to Anthropic's set and removes it.
async fn replace_and_clear(cp: &TestControlplane) {
    let env = [("AURORA_MASTER_KEY", ADMIN_KEY), ("CRED", SECOND), ("OTHER", CLEARED)];
    cp.cli_with(&["providers", "set", "anthropic", "--api-key-env", "CRED", "--wait"], &env, None).await.ok();
    cp.cli_with(&["providers", "set", "openai", "--api-key-env", "OTHER", "--wait"], &env, None).await.ok();
    cp.cli_with(&["providers", "set", "openai", "--clear-api-key", "--wait"], &env, None).await.ok();
    let add = ["providers", "credentials", "add", "anthropic", "spare", "--wait"];
    cp.cli_with(&add, &env, Some(SPARE)).await.ok();
    cp.cli_with(&["providers", "credentials", "remove", "anthropic", "spare", "--wait"], &env, None).await.ok();
}

/// Every byte of the SQLite database files (main, `-wal`, `-shm`) in `dir`.
fn sqlite_bytes(dir: &Path) -> Vec<u8> {
    let mut raw = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().starts_with("aurora.db") {
            raw.extend(std::fs::read(path).unwrap());
        }
    }
    raw
}

fn assert_none_in(raw: &[u8], needles: &[&str]) {
    for needle in needles {
        for form in [needle.as_bytes().to_vec(), hex::encode(needle).into_bytes()] {
            assert!(!raw.windows(form.len()).any(|w| w == form.as_slice()), "{needle} is stored");
        }
    }
}

/// A control plane that must fail to start with `expected` in its logs; returns the logs.
async fn fails_to_start(env: &[(&str, &str)], expected: &str) -> String {
    let mut all = vec![("AURORA_GRPC_LISTEN_ADDR", "127.0.0.1:0"), ("AURORA_NODE_TOKEN", NODE_TOKEN)];
    all.extend_from_slice(env);
    let mut process = AuroraProcess::spawn(&["controlplane"], &all);
    assert_ne!(process.wait_exit().await, Some(0), "started: {}", process.logs());
    // The output is read by another thread: it may land just after the exit.
    wait::until(&format!("{expected:?} in the logs"), || process.logs().contains(expected).then_some(())).await;
    process.logs()
}

#[tokio::test]
async fn sqlite_files_hold_no_credential_ever_set_and_a_lost_key_stops_the_start() {
    let upstream = upstream().await;
    let base = format!("{}/anthropic/v1", upstream.uri());
    let env = [("ANTHROPIC_BASE_URL", base.as_str()), ("ANTHROPIC_API_KEY", FIRST)];
    let dir = tempfile::tempdir().unwrap();
    let cp = TestControlplane::start_in(dir.path(), &[&[("AURORA_MASTER_KEY", ADMIN_KEY)], &env[..]].concat()).await;
    // No key configured: one is generated beside the database, owner-only, and the log says so.
    let key_file = cp.data_dir().join("encryption.key");
    assert!(cp.process.logs().contains("generated an encryption key"), "{}", cp.process.logs());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600);
    replace_and_clear(&cp).await;
    let dp = TestDataplane::subscribed(&cp.url(), "dp-at-rest", &[]).await;
    dp.wait_ready().await;
    assert_eq!(dp.call(ADMIN_KEY).await, 200);
    let seen = upstream.received_requests().await.unwrap();
    assert_eq!(seen.last().unwrap().headers["x-api-key"], SECOND, "the current credential is the one sent");

    // While it runs (the WAL holds the recent pages) and after it stopped.
    assert_none_in(&sqlite_bytes(&cp.data_dir()), &[FIRST, SECOND, CLEARED, SPARE, ADMIN_KEY]);
    let mut cp = cp;
    cp.process.signal("TERM");
    assert_eq!(cp.process.wait_exit().await, Some(0));
    assert_none_in(&sqlite_bytes(&cp.data_dir()), &[FIRST, SECOND, CLEARED, SPARE, ADMIN_KEY]);

    // The key file lost: the control plane refuses to start, naming the variable and the key id.
    let key = std::fs::read_to_string(&key_file).unwrap();
    std::fs::remove_file(&key_file).unwrap();
    let database = cp.database_url().to_owned();
    let logs = fails_to_start(
        &[("AURORA_DATABASE_URL", database.as_str()), ("AURORA_MASTER_KEY", ADMIN_KEY)],
        "sealed under encryption key",
    )
    .await;
    assert!(logs.contains("AURORA_ENCRYPTION_KEY") && logs.contains("sealed under encryption key"), "{logs}");
    assert!(!logs.contains(key.trim()), "{logs}");
    assert!(!key_file.exists(), "no useless key is left behind");

    // With the key given as a variable it starts, and the credential is still the current one.
    let cp = TestControlplane::start_in(
        dir.path(),
        &[("AURORA_MASTER_KEY", ADMIN_KEY), ("AURORA_ENCRYPTION_KEY", key.trim())],
    )
    .await;
    let settings = cp.cli(&["providers", "list", "-o", "json"]).await.json();
    assert!(settings.to_string().contains("anthropic"), "{settings}");
}

#[tokio::test]
async fn rotation_then_re_encrypt_leaves_everything_readable_under_the_new_key_alone() {
    let upstream = upstream().await;
    let base = format!("{}/anthropic/v1", upstream.uri());
    let old = "b2xkLWtleS1vbGQta2V5LW9sZC1rZXktb2xkLWtleTE=";
    let new = "bmV3LWtleS1uZXcta2V5LW5ldy1rZXktbmV3LWtleTI=";
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("AURORA_MASTER_KEY", ADMIN_KEY),
        ("ANTHROPIC_BASE_URL", base.as_str()),
        ("ANTHROPIC_API_KEY", FIRST),
        ("AURORA_ENCRYPTION_KEY", old),
    ];
    let mut cp = TestControlplane::start_in(dir.path(), &env).await;
    cp.process.signal("TERM");
    assert_eq!(cp.process.wait_exit().await, Some(0));
    let database = cp.database_url().to_owned();

    // Step 1 and 2 of the procedure: the new key first, the old one still accepted.
    let both = format!("{new},{old}");
    let out = run_cli(
        &["controlplane", "re-encrypt"],
        &[("AURORA_DATABASE_URL", database.as_str()), ("AURORA_ENCRYPTION_KEY", both.as_str())],
        None,
    )
    .await;
    let printed = out.ok();
    assert!(printed.starts_with("re-encrypted 2 secret(s) under encryption key "), "{printed}");

    // Step 3: the old key removed. The credential and the master key still open.
    let cp = TestControlplane::start_in(
        dir.path(),
        &[("AURORA_MASTER_KEY", ADMIN_KEY), ("ANTHROPIC_BASE_URL", base.as_str()), ("AURORA_ENCRYPTION_KEY", new)],
    )
    .await;
    let dp = TestDataplane::subscribed(&cp.url(), "dp-rotated", &[]).await;
    dp.wait_ready().await;
    assert_eq!(dp.call(ADMIN_KEY).await, 200);
    let seen = upstream.received_requests().await.unwrap();
    assert_eq!(seen.last().unwrap().headers["x-api-key"], FIRST);
    let mut cp = cp;
    cp.process.signal("TERM");
    assert_eq!(cp.process.wait_exit().await, Some(0));
    // And the old key alone no longer opens the store.
    let logs = fails_to_start(
        &[("AURORA_DATABASE_URL", database.as_str()), ("AURORA_ENCRYPTION_KEY", old)],
        "sealed under encryption key",
    )
    .await;
    assert!(logs.contains("sealed under encryption key"), "{logs}");
}

#[tokio::test]
async fn a_plaintext_store_from_an_older_version_is_sealed_at_start() {
    let upstream = upstream().await;
    let base = format!("{}/anthropic/v1", upstream.uri());
    let dir = tempfile::tempdir().unwrap();
    let env = [("AURORA_MASTER_KEY", ADMIN_KEY), ("ANTHROPIC_BASE_URL", base.as_str())];
    let mut cp = TestControlplane::start_in(dir.path(), &env).await;
    cp.cli_with(
        &["providers", "set", "anthropic", "--api-key-env", "CRED"],
        &[("AURORA_MASTER_KEY", ADMIN_KEY), ("CRED", "x")],
        None,
    )
    .await
    .ok();
    cp.process.signal("TERM");
    assert_eq!(cp.process.wait_exit().await, Some(0));
    // As migration 0007 leaves an older store's credential: plaintext in the set's row.
    let mut conn = sqlx::SqliteConnection::connect(cp.database_url()).await.unwrap();
    sqlx::query(
        "UPDATE provider_credentials SET secret = $1, secret_sealed = NULL \
         WHERE provider = 'anthropic' AND name = 'default'",
    )
    .bind(FIRST)
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    assert!(sqlite_bytes(&cp.data_dir()).windows(FIRST.len()).any(|w| w == FIRST.as_bytes()), "planted");

    let cp = TestControlplane::start_in(dir.path(), &env).await;
    wait::until("the sealing log line", || {
        cp.process.logs().contains("sealed the secrets an older version stored in plaintext").then_some(())
    })
    .await;
    assert_none_in(&sqlite_bytes(&cp.data_dir()), &[FIRST]);
    let dp = TestDataplane::subscribed(&cp.url(), "dp-migrated", &[]).await;
    dp.wait_ready().await;
    assert_eq!(dp.call(ADMIN_KEY).await, 200);
    assert_eq!(upstream.received_requests().await.unwrap().last().unwrap().headers["x-api-key"], FIRST);
}

#[tokio::test]
async fn postgres_requires_the_key_and_no_table_holds_any_credential_ever_set() {
    let db = TestDatabase::create().await;
    let url = db.url();
    let logs = fails_to_start(
        &[("AURORA_DATABASE_URL", url.as_str()), ("AURORA_MASTER_KEY", ADMIN_KEY)],
        "required with PostgreSQL",
    )
    .await;
    assert!(logs.contains("AURORA_ENCRYPTION_KEY") && logs.contains("required with PostgreSQL"), "{logs}");

    let upstream = upstream().await;
    let base = format!("{}/anthropic/v1", upstream.uri());
    let env =
        [("AURORA_DATABASE_URL", url.as_str()), ("ANTHROPIC_BASE_URL", base.as_str()), ("ANTHROPIC_API_KEY", FIRST)];
    let cp = TestControlplane::start(&env).await;
    replace_and_clear(&cp).await;
    let dp = TestDataplane::subscribed(&cp.url(), "dp-pg-at-rest", &[]).await;
    dp.wait_ready().await;
    assert_eq!(dp.call(ADMIN_KEY).await, 200);

    // Every table, every row, as text (bytes as hex).
    let mut conn = db.connect().await;
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let mut dump = String::new();
    for table in &tables {
        let sql = format!("SELECT COALESCE(string_agg(t::text, E'\\n'), '') FROM {table} t");
        dump.push_str(&sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql)).fetch_one(&mut conn).await.unwrap());
    }
    conn.close().await.unwrap();
    assert!(dump.contains("anthropic") && tables.iter().any(|t| t == "changes"), "the dump reads real data");
    assert_none_in(dump.as_bytes(), &[FIRST, SECOND, CLEARED, SPARE, ADMIN_KEY]);
}

#[tokio::test]
async fn a_short_master_key_is_refused_at_startup_with_how_to_make_one() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("aurora.db").display());
    let logs = fails_to_start(
        &[("AURORA_DATABASE_URL", database.as_str()), ("AURORA_MASTER_KEY", "short-master-key")],
        "at least 32",
    )
    .await;
    assert!(logs.contains("at least 32") && logs.contains("openssl rand -base64 32"), "{logs}");
    assert!(!logs.contains("short-master-key"), "{logs}");
}
