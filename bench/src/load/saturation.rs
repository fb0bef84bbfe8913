//! Maximum throughput: wrk, closed loop, a fixed number of keep-alive connections.
//!
//! wrk (from Debian's packages) is an established generator written in C, so the figure does
//! not depend on this harness's own client. It runs with one thread, leaving the second core to
//! the systems under test; every target gets the same connections and duration.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};

use super::{REQUEST_BODY, Target};

#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    pub(crate) connections: usize,
    pub(crate) duration: Duration,
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Outcome {
    pub(crate) requests_per_sec: f64,
    /// Responses other than 2xx/3xx, and socket errors.
    pub(crate) non_2xx: u64,
    pub(crate) requests: u64,
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
            outcome.non_2xx +=
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
        let text = "Running 1s test @ http://127.0.0.1:1/\n  1 threads and 8 connections\n  12345 requests in 1.00s, 2.00MB read\n  Non-2xx or 3xx responses: 7\nRequests/sec:  12345.67\nTransfer/sec:      2.00MB\n";
        let outcome = super::parse(text).expect("parsed");
        assert_eq!(outcome.requests, 12345);
        assert_eq!(outcome.non_2xx, 7);
        assert!((outcome.requests_per_sec - 12345.67).abs() < 1e-6);
    }
}
