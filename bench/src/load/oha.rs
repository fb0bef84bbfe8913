//! oha (<https://github.com/hatoo/oha>) as the second saturation generator: a Rust load
//! generator on tokio and hyper, the one a new user is likely to reach for.
//!
//! It runs without its terminal UI for a fixed duration (`-z`) and prints a JSON summary, from
//! which the run's responses are counted by status. Requests still in flight when the duration
//! ends are cut off and listed as "aborted due to deadline": they are neither responses nor
//! errors here, and the rate is the responses completed divided by the run's duration (oha's
//! own `requestsPerSec` counts those cut-off requests too). `--disable-compression` keeps oha
//! from asking for compressed responses, so the request matches wrk's but for oha's `accept`
//! and `user-agent` headers. `scripts/bench` installs it (`cargo install oha --locked`) for a
//! full run; a smoke run uses it only when it is already installed.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::saturation::{Outcome, Plan};
use super::{REQUEST_BODY, Target};

/// oha's name for requests still in flight when the duration ended.
const CUT_OFF: &str = "aborted due to deadline";

/// `explicit`, else `oha` on the `PATH`, else in `~/.cargo/bin` (where `cargo install` puts it).
pub(crate) fn locate(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = explicit {
        return Some(path.to_owned());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let cargo_bin = std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo/bin"));
    std::env::split_paths(&path).chain(cargo_bin).map(|dir| dir.join("oha")).find(|candidate| candidate.is_file())
}

/// `oha --version`'s answer, for the report.
pub(crate) fn version(path: &Path) -> String {
    std::process::Command::new(path)
        .arg("--version")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// Runs oha against `target` for `plan`.
pub(crate) async fn run(oha: &Path, target: &Target, plan: Plan) -> anyhow::Result<Outcome> {
    let (header, value) = target.auth_header();
    let output = tokio::process::Command::new(oha)
        .args(["--no-tui", "--output-format", "json", "--disable-compression", "-m", "POST"])
        .arg("-z")
        .arg(format!("{}s", plan.duration.as_secs().max(1)))
        .arg("-c")
        .arg(plan.connections.to_string())
        .args(["-d", REQUEST_BODY, "-H", "content-type: application/json", "-H", "anthropic-version: 2023-06-01"])
        .arg("-H")
        .arg(format!("{header}: {value}"))
        .arg(target.url())
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .with_context(|| {
            format!("cannot run {} (scripts/bench installs it: cargo install oha --locked)", oha.display())
        })?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!("oha failed: {text}{}", String::from_utf8_lossy(&output.stderr));
    }
    parse(&text).with_context(|| format!("cannot read oha's output:\n{text}"))
}

fn parse(text: &str) -> Option<Outcome> {
    let json: serde_json::Value = serde_json::from_str(text).ok()?;
    let seconds = json.get("summary")?.get("total")?.as_f64()?;
    let mut outcome = Outcome::default();
    for (status, count) in json.get("statusCodeDistribution")?.as_object()? {
        let count = count.as_u64()?;
        outcome.requests += count;
        if status.parse::<u16>().ok()? >= 400 {
            outcome.non_2xx += count;
        }
    }
    if let Some(errors) = json.get("errorDistribution").and_then(serde_json::Value::as_object) {
        outcome.errors =
            errors.iter().filter(|(kind, _)| !kind.contains(CUT_OFF)).filter_map(|(_, n)| n.as_u64()).sum();
    }
    outcome.requests_per_sec = outcome.requests as f64 / seconds;
    (outcome.requests > 0 && seconds > 0.0).then_some(outcome)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_oha_json() {
        let text = r#"{"summary":{"successRate":0.99,"total":2.0,"requestsPerSec":5010.0},
            "statusCodeDistribution":{"200":9000,"401":1000},
            "errorDistribution":{"aborted due to deadline":20,"connection closed before message completed":3}}"#;
        let outcome = super::parse(text).expect("parsed");
        assert_eq!(outcome.requests, 10_000);
        assert_eq!(outcome.non_2xx, 1_000);
        assert_eq!(outcome.errors, 3);
        assert!((outcome.requests_per_sec - 5_000.0).abs() < 1e-9);
        assert!(super::parse(r#"{"summary":{"total":1.0},"statusCodeDistribution":{}}"#).is_none());
    }
}
