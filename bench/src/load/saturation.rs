//! Maximum throughput: an established closed-loop generator, a fixed number of keep-alive
//! connections, as many requests as the loop allows.
//!
//! Two generators, so the figure does not depend on one tool (nor on this harness's own
//! client): wrk (from Debian's packages, written in C) with one thread, leaving the second core
//! to the systems under test, and [`oha`] (Rust, tokio and hyper), run as a new user would, with
//! its defaults (a worker thread per core). Both send the same POST: same path, body and
//! headers (oha adds `accept` and `user-agent`). Every target gets the same connections and
//! duration.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};

use super::{REQUEST_BODY, Target, oha};

#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    pub(crate) connections: usize,
    pub(crate) duration: Duration,
}

/// A saturation run's result, whichever generator ran it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Outcome {
    /// Responses completed per second of the run.
    pub(crate) requests_per_sec: f64,
    /// Responses with a status of 400 or more (wrk's "Non-2xx or 3xx").
    pub(crate) non_2xx: u64,
    /// Connection errors, read/write errors and timeouts (not oha's requests cut off by the end
    /// of the run).
    pub(crate) errors: u64,
    /// Responses completed.
    pub(crate) requests: u64,
}

/// The load generator of a saturation run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Generator {
    Wrk,
    /// oha, at this path.
    Oha(PathBuf),
}

impl Generator {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Generator::Wrk => "wrk",
            Generator::Oha(_) => "oha",
        }
    }

    /// Runs this generator against `target`; `scratch` holds wrk's Lua script.
    pub(crate) async fn run(&self, target: &Target, plan: Plan, scratch: &Path) -> anyhow::Result<Outcome> {
        match self {
            Generator::Wrk => run(target, plan, scratch).await,
            Generator::Oha(path) => oha::run(path, target, plan).await,
        }
    }
}

/// Runs wrk against `target`; `scratch` holds its Lua script.
pub(crate) async fn run(target: &Target, plan: Plan, scratch: &Path) -> anyhow::Result<Outcome> {
    let (header, value) = target.auth_header();
    let script = format!(
        "wrk.method = \"POST\"\nwrk.body = '{REQUEST_BODY}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.headers[\"anthropic-version\"] = \"2023-06-01\"\nwrk.headers[\"{header}\"] = \"{value}\"\n"
    );
    let script_path = scratch.join(format!("wrk-{}.lua", target.name));
    std::fs::write(&script_path, script)?;
    let output = tokio::process::Command::new("wrk")
        .arg("-t1")
        .arg(format!("-c{}", plan.connections))
        .arg(format!("-d{}s", plan.duration.as_secs().max(1)))
        .arg("-s")
        .arg(&script_path)
        .arg(target.url())
        .output()
        .await
        .context("cannot run wrk (scripts/bench installs it: apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!("wrk failed: {text}{}", String::from_utf8_lossy(&output.stderr));
    }
    parse(&text).with_context(|| format!("cannot read wrk's output:\n{text}"))
}

fn parse(text: &str) -> Option<Outcome> {
    let mut outcome = Outcome::default();
    for line in text.lines().map(str::trim) {
        if let Some(rate) = line.strip_prefix("Requests/sec:") {
            outcome.requests_per_sec = rate.trim().parse().ok()?;
        } else if let Some(count) = line.strip_prefix("Non-2xx or 3xx responses:") {
            outcome.non_2xx += count.trim().parse::<u64>().ok()?;
        } else if let Some(errors) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            outcome.errors +=
                errors.split(',').filter_map(|part| part.split_whitespace().nth(1)?.parse::<u64>().ok()).sum::<u64>();
        } else if line.contains("requests in") {
            outcome.requests = line.split_whitespace().next()?.parse().ok()?;
        }
    }
    (outcome.requests_per_sec > 0.0).then_some(outcome)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_wrk_output() {
        let text = "Running 1s test @ http://127.0.0.1:1/\n  1 threads and 8 connections\n  12345 requests in 1.00s, 2.00MB read\n  Socket errors: connect 0, read 2, write 0, timeout 1\n  Non-2xx or 3xx responses: 7\nRequests/sec:  12345.67\nTransfer/sec:      2.00MB\n";
        let outcome = super::parse(text).expect("parsed");
        assert_eq!(outcome.requests, 12345);
        assert_eq!(outcome.non_2xx, 7);
        assert_eq!(outcome.errors, 3);
        assert!((outcome.requests_per_sec - 12345.67).abs() < 1e-6);
    }
}
