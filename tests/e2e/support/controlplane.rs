//! Starting `aurora controlplane` on an ephemeral port with a temporary database, and running
//! the `aurora` CLI against it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use super::process::{AuroraProcess, aurora_bin};
use super::wait;

/// The master key every [`TestControlplane`] is started with unless a test says otherwise.
pub const ADMIN_KEY: &str = "aurora-test-admin-key-0123456789abcdef";

/// The encryption key control planes on PostgreSQL are started with unless a test sets one
/// (PostgreSQL requires one; SQLite generates its own beside the database).
pub const POSTGRES_ENCRYPTION_KEY: &str = "ZTJlLXRlc3RzLXBvc3RncmVzLWVuY3J5cHRpb24ta3k=";

/// The node token every [`TestControlplane`] is started with unless a test says otherwise.
pub const NODE_TOKEN: &str = "aurora-test-node-token";

#[derive(Debug)]
pub struct TestControlplane {
    pub process: AuroraProcess,
    pub addr: SocketAddr,
    /// The plaintext `/metrics` and `/healthz` listener.
    pub metrics_addr: SocketAddr,
    database_url: String,
    dir: PathBuf,
    _tempdir: Option<tempfile::TempDir>,
}

impl TestControlplane {
    /// Starts a control plane with a fresh database and [`ADMIN_KEY`], plus `env`.
    pub async fn start(env: &[(&str, &str)]) -> Self {
        let tempdir = tempfile::tempdir().unwrap();
        let dir = tempdir.path().to_owned();
        let mut all_env = vec![("AURORA_MASTER_KEY", ADMIN_KEY)];
        all_env.extend_from_slice(env);
        let mut control_plane = Self::start_in(&dir, &all_env).await;
        control_plane._tempdir = Some(tempdir);
        control_plane
    }

    /// Starts a control plane on the database in `dir` with exactly `env` (plus the listen
    /// address and database URL), and waits until it listens.
    pub async fn start_in(dir: &Path, env: &[(&str, &str)]) -> Self {
        let database_url = format!("sqlite://{}", dir.join("data/aurora.db").display());
        let mut all_env = vec![
            ("AURORA_GRPC_LISTEN_ADDR", "127.0.0.1:0"),
            ("AURORA_METRICS_LISTEN_ADDR", "127.0.0.1:0"),
            ("AURORA_DATABASE_URL", database_url.as_str()),
            ("AURORA_NODE_TOKEN", NODE_TOKEN),
        ];
        all_env.extend_from_slice(env);
        let on_postgres = env.iter().any(|(k, v)| *k == "AURORA_DATABASE_URL" && v.starts_with("postgres"));
        let has_key = env.iter().any(|(k, _)| k.starts_with("AURORA_ENCRYPTION_KEY"));
        if on_postgres && !has_key {
            all_env.push(("AURORA_ENCRYPTION_KEY", POSTGRES_ENCRYPTION_KEY));
        }
        let mut process = AuroraProcess::spawn(&["controlplane"], &all_env);
        let addr = process.listening_addr("grpc").await;
        let metrics_addr = process.listening_addr("metrics").await;
        TestControlplane { process, addr, metrics_addr, database_url, dir: dir.to_owned(), _tempdir: None }
    }

    /// Stops the process with SIGTERM, waits for a clean exit, and starts a new one on the same
    /// database with `env` (plus [`ADMIN_KEY`]).
    pub async fn restart(mut self, env: &[(&str, &str)]) -> Self {
        self.process.signal("TERM");
        assert_eq!(self.process.wait_exit().await, Some(0), "logs:\n{}", self.process.logs());
        let mut all_env = vec![("AURORA_MASTER_KEY", ADMIN_KEY)];
        all_env.extend_from_slice(env);
        let mut next = Self::start_in(&self.dir, &all_env).await;
        next._tempdir = self._tempdir.take();
        next
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn metrics_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.metrics_addr)
    }

    pub fn database_url(&self) -> &str {
        &self.database_url
    }

    /// The directory the SQLite database (and its generated encryption key) lives in.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Runs `aurora <args>` against this control plane with [`ADMIN_KEY`].
    pub async fn cli(&self, args: &[&str]) -> CliOutput {
        self.cli_with(args, &[("AURORA_MASTER_KEY", ADMIN_KEY)], None).await
    }

    /// Runs `aurora <args>` against this control plane with exactly `env` and optional stdin.
    pub async fn cli_with(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> CliOutput {
        let url = self.url();
        let mut all_env = vec![("AURORA_CONTROL_PLANE_URL", url.as_str())];
        all_env.extend_from_slice(env);
        run_cli(args, &all_env, stdin).await
    }
}

/// What a CLI run printed and how it exited.
#[derive(Debug)]
pub struct CliOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    /// Asserts success and returns stdout.
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, Some(0), "aurora failed: {self:?}");
        &self.stdout
    }

    /// Asserts success and parses stdout as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.ok()).unwrap_or_else(|err| panic!("not JSON ({err}): {self:?}"))
    }

    /// Asserts failure with exactly one line on stderr, and returns that line.
    pub fn error_line(&self) -> &str {
        assert_ne!(self.code, Some(0), "aurora should have failed: {self:?}");
        assert_eq!(self.stderr.lines().count(), 1, "errors are one line: {self:?}");
        self.stderr.trim_end()
    }
}

/// Runs the `aurora` binary with a clean environment (PATH plus `env`), with a deadline.
pub async fn run_cli(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> CliOutput {
    let mut command = tokio::process::Command::new(aurora_bin());
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().expect("spawn aurora");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input.as_bytes()).await.unwrap();
        drop(pipe);
    }
    let output = tokio::time::timeout(wait::DEADLINE, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("aurora {args:?} did not finish in time"))
        .unwrap();
    CliOutput {
        code: output.status.code(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}
