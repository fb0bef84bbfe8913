//! A running `aurora` process whose JSON logs are captured for assertions.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use super::wait;

pub fn aurora_bin() -> &'static str {
    env!("CARGO_BIN_EXE_aurora")
}

#[derive(Debug)]
pub struct AuroraProcess {
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
}

impl AuroraProcess {
    /// Starts `aurora <args>` with a clean environment (only PATH, plus `env`), so nothing from
    /// the developer's shell (an ANTHROPIC_API_KEY, say) leaks into a test.
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn_in(None, args, env)
    }

    /// Like [`Self::spawn`], in the working directory `cwd`.
    pub fn spawn_in(cwd: Option<&std::path::Path>, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn_wrapped(cwd, &[], args, env)
    }

    /// Like [`Self::spawn_in`], started through `wrapper` (a command that ends by exec'ing its
    /// arguments, such as `sh -c 'ulimit -Sn 256 && exec "$0" "$@"'`), so the process keeps
    /// the wrapper's pid.
    pub fn spawn_wrapped(cwd: Option<&std::path::Path>, wrapper: &[&str], args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = match wrapper.split_first() {
            Some((program, wrapper_args)) => {
                let mut command = Command::new(program);
                command.args(wrapper_args).arg(aurora_bin());
                command
            }
            None => Command::new(aurora_bin()),
        };
        if let Some(cwd) = cwd {
            command.current_dir(cwd);
        }
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("AURORA_LOG_FORMAT", "json")
            .env("AURORA_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn aurora");
        let logs = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            child.stderr.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child.stdout.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    logs.lock().unwrap().push(line);
                }
            });
        }
        AuroraProcess { child, logs }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process printed so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Parsed JSON log events printed so far.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.logs.lock().unwrap().iter().filter_map(|line| serde_json::from_str(line).ok()).collect()
    }

    /// Waits for a log event matching `predicate` and returns it.
    pub async fn wait_for_event(
        &mut self,
        what: &str,
        predicate: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let logs = self.logs.clone();
        let child = &mut self.child;
        wait::until(what, || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "aurora exited with {status} while waiting for {what}; logs:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            }
            let logs = logs.lock().unwrap();
            logs.iter().filter_map(|line| serde_json::from_str(line).ok()).find(|event| predicate(event))
        })
        .await
    }

    /// The address a listener bound, read from its "listening" log event.
    pub async fn listening_addr(&mut self, listener: &str) -> SocketAddr {
        let event = self
            .wait_for_event(&format!("listener {listener}"), |e| {
                e["message"] == "listening" && e["listener"] == listener
            })
            .await;
        event["addr"].as_str().unwrap().parse().unwrap()
    }

    /// Sends a signal by name (TERM, KILL, ...).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").arg(format!("-{signal}")).arg(self.pid().to_string()).status().unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits for the process to exit and returns its exit code.
    pub async fn wait_exit(&mut self) -> Option<i32> {
        let child = &mut self.child;
        wait::until("process exit", || child.try_wait().ok().flatten()).await.code()
    }
}

impl Drop for AuroraProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
