//! Child processes (the `aurora` planes, nginx): spawning, log capture, addresses, memory.
//!
//! Every child runs with piped stderr. A background task keeps each line, so the harness can
//! wait for the JSON `listening` event of a port-0 listener, count log events (how many
//! snapshots a control plane sent), and show the logs when something fails. Children are killed
//! when dropped, so a failed scenario never leaves a process behind.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::AsyncBufReadExt;

const MAX_LINES: usize = 50_000;

/// A running child process and the lines it wrote to stderr (and stdout).
#[derive(Debug)]
pub(crate) struct Proc {
    pub(crate) name: String,
    child: tokio::process::Child,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    /// Spawns `program args` with exactly `env` added to a minimal environment.
    pub(crate) fn spawn(name: &str, program: &Path, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Proc> {
        let mut command = tokio::process::Command::new(program);
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().with_context(|| format!("cannot start {}", program.display()))?;
        let logs = Arc::new(Mutex::new(Vec::new()));
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(collect(tokio::io::BufReader::new(stderr), logs.clone()));
        }
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(collect(tokio::io::BufReader::new(stdout), logs.clone()));
        }
        Ok(Proc { name: name.to_owned(), child, logs })
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Waits for the JSON `listening` event of `listener` and returns its address.
    pub(crate) async fn listening_addr(&mut self, listener: &str) -> anyhow::Result<SocketAddr> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let found = self.logs().iter().find_map(|line| {
                let event: serde_json::Value = serde_json::from_str(line).ok()?;
                let fields = event.get("fields").unwrap_or(&event);
                (fields.get("message")?.as_str()? == "listening" && fields.get("listener")?.as_str()? == listener)
                    .then(|| fields.get("addr")?.as_str()?.parse().ok())
                    .flatten()
            });
            if let Some(addr) = found {
                return Ok(addr);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!("{} exited ({status}) before listening:\n{}", self.name, self.tail(30));
            }
            if Instant::now() > deadline {
                bail!("{} did not report its {listener} listener:\n{}", self.name, self.tail(30));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub(crate) fn logs(&self) -> Vec<String> {
        self.logs.lock().map(|logs| logs.clone()).unwrap_or_default()
    }

    /// How many log lines contain `needle`.
    pub(crate) fn count(&self, needle: &str) -> usize {
        self.logs.lock().map(|logs| logs.iter().filter(|line| line.contains(needle)).count()).unwrap_or(0)
    }

    pub(crate) fn tail(&self, lines: usize) -> String {
        let logs = self.logs();
        logs[logs.len().saturating_sub(lines)..].join("\n")
    }

    /// Sends SIGTERM and waits up to `timeout` for the process to exit.
    pub(crate) async fn terminate(&mut self, timeout: Duration) -> anyhow::Result<()> {
        if let Some(pid) = self.pid() {
            std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status()?;
        }
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => {
                status?;
                Ok(())
            }
            Err(_) => {
                self.child.start_kill()?;
                bail!("{} did not stop within {timeout:?}", self.name)
            }
        }
    }
}

async fn collect(mut reader: impl tokio::io::AsyncBufRead + Unpin, logs: Arc<Mutex<Vec<String>>>) {
    let mut line = String::new();
    while reader.read_line(&mut line).await.map(|n| n > 0).unwrap_or(false) {
        // Bounded: a data plane under load could log without end; the harness only needs
        // start-up events and the control plane's stream events.
        if let Ok(mut logs) = logs.lock()
            && logs.len() < MAX_LINES
        {
            logs.push(line.trim_end().to_owned());
        }
        line.clear();
    }
}

/// Resident memory of a process, in bytes.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Memory {
    pub(crate) rss: u64,
    pub(crate) peak: u64,
}

pub(crate) fn memory_of(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|kib| kib.parse::<u64>().ok())
            .map(|kib| kib * 1024)
    };
    Some(Memory { rss: field("VmRSS:")?, peak: field("VmHWM:")? })
}

/// A port that was free a moment ago, for programs that cannot report a port-0 listener (nginx).
pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The `aurora` binary: `$AURORA_BIN`, else next to this executable (both are built into the
/// same target directory by `scripts/bench`).
pub(crate) fn aurora_bin(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path.to_owned());
    }
    let here = std::env::current_exe()?;
    let sibling = here.with_file_name("aurora");
    if sibling.exists() {
        return Ok(sibling);
    }
    bail!("no aurora binary next to {}; build it (scripts/bench does) or pass --aurora-bin", here.display())
}
