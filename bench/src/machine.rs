//! The machine and its load, and the report's frame: what ran, where, and under what load.

use std::fmt::Write;
use std::time::Duration;

use crate::report::Report;

/// The analysis written by hand after the latest full run, kept beside the harness so a
/// regenerated report keeps it (and a reader can see when it is older than the figures).
const NOTES: &str = include_str!("../NOTES.md");

/// How busy the machine was.
#[derive(Debug, Clone)]
pub(crate) struct Load {
    pub(crate) loadavg: String,
    /// Compilers and test runners running at that moment (others share this machine).
    pub(crate) builders: usize,
}

impl Load {
    pub(crate) fn now() -> Load {
        let loadavg = std::fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default();
        let builders = std::fs::read_dir("/proc")
            .map(|dir| {
                dir.filter_map(Result::ok)
                    .filter_map(|entry| std::fs::read_to_string(entry.path().join("comm")).ok())
                    .filter(|comm| matches!(comm.trim(), "rustc" | "cargo" | "cargo-nextest" | "cc1" | "ld" | "cc"))
                    .count()
            })
            .unwrap_or(0);
        Load { loadavg, builders }
    }
}

fn command_output(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .map(|out| {
            let text = if out.stdout.is_empty() { out.stderr } else { out.stdout };
            String::from_utf8_lossy(&text).lines().next().unwrap_or_default().trim().to_owned()
        })
        .unwrap_or_else(|_| "unknown".into())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn memory_total() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| info.lines().next().map(|l| l.trim_start_matches("MemTotal:").trim().to_owned()))
        .unwrap_or_default()
}

/// The whole markdown document.
pub(crate) fn document(
    report: &Report,
    command: &str,
    smoke: bool,
    before: &Load,
    after: &Load,
    elapsed: Duration,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Benchmarks\n");
    if smoke {
        let _ = writeln!(
            out,
            "> **Smoke run**: every scenario at a tiny scale, on the debug build. These figures prove the harness works; they measure nothing.\n"
        );
    }
    let _ = writeln!(
        out,
        "Aurora's data plane against a direct connection and nginx doing the same job, measured in the same run on the same machine, and the control plane's propagation. Regenerate with:\n\n```sh\n{command}\n```\n\n(`scripts/bench --smoke` runs every scenario at a tiny scale in seconds; CI runs it.) The harness is `bench/` (crate `aurora-bench`); its module docs say how each figure is measured.\n"
    );
    let _ = writeln!(out, "## Machine and conditions\n");
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let commit = command_output("git", &["rev-parse", "--short", "HEAD"]);
    let dirty = !command_output("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty();
    let mut rows: Vec<(&str, String)> = vec![
        ("date (UTC)", command_output("date", &["-u", "+%Y-%m-%d %H:%M"])),
        ("commit", format!("{commit}{}", if dirty { " (work tree had uncommitted changes)" } else { "" })),
        ("CPU", format!("{} × {}", cores, cpu_model())),
        ("memory", memory_total()),
        ("kernel", std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned()),
        ("nginx", crate::nginx::version()),
        ("wrk", command_output("wrk", &["-v"])),
    ];
    rows.extend(report.conditions.iter().map(|(name, value)| (name.as_str(), value.clone())));
    rows.extend([
        ("load average (1/5/15 min) at start → end", format!("{} → {}", before.loadavg, after.loadavg)),
        ("compiler/test processes running at start → end", format!("{} → {}", before.builders, after.builders)),
        ("duration of the run", format!("{:.0} s", elapsed.as_secs_f64())),
    ]);
    let _ = writeln!(out, "| | |\n|---|---|");
    for (name, value) in rows {
        let _ = writeln!(out, "| {name} | {value} |");
    }
    let _ = writeln!(
        out,
        "\nEverything runs on this one machine over loopback: the load generator, the upstream, the gateways. Other engineers build and test on it at the same time, so each comparison is interleaved (direct, nginx, Aurora in turn, several rounds, each round starting one further along) and the ratios are more trustworthy than the absolute figures. Aurora's data plane and nginx each use both cores (tokio's default worker count; `worker_processes auto`); both run without a per-request access log.\n"
    );
    let _ = writeln!(out, "## Targets\n\n{}", report.checks_table());
    for section in &report.sections {
        let _ = writeln!(out, "{section}");
    }
    let _ = writeln!(out, "{NOTES}");
    out
}
