//! CPU time per request in wall-clock runs: how much user and kernel time a gateway's
//! processes spent, divided by the requests the load generator completed meanwhile.
//!
//! The kernel keeps each process's user and system time (`utime`, `stime` in `/proc/PID/stat`,
//! summed over all its threads, including threads that have exited) in clock ticks of
//! 1/`CLK_TCK` s (10 ms here). A reading before and after a saturation run gives the CPU the
//! gateway spent on it: Aurora's data plane is one process; nginx is its master and workers
//! (the master's direct children), summed. Over a few seconds at tens of thousands of requests
//! per second that is hundreds of ticks, so the per-request figure is good to a few percent,
//! and it needs no hardware counters (this VM has none for `perf stat`).
//!
//! What it counts: everything the process was charged for during the run, including its
//! background work (a data plane's config stream and usage reports, tiny beside the load) and
//! the kernel's loopback processing that runs in the process's own system calls (a packet it
//! sends is usually delivered to the receiving socket in the sender's context), which both
//! gateways incur alike. Unlike callgrind's instruction counts it sees the kernel, so it shows
//! whether a gap is user space or system calls; unlike them it moves with cache and scheduler
//! contention on a shared machine, hence the range over rounds.

use std::sync::OnceLock;

/// A process tree's CPU time so far, in clock ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Ticks {
    pub(crate) user: u64,
    pub(crate) system: u64,
}

/// CPU time per request, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct PerRequest {
    pub(crate) user: f64,
    pub(crate) system: f64,
}

impl PerRequest {
    /// The CPU spent between two readings, per request completed in between; `None` when no
    /// request completed.
    pub(crate) fn between(before: Ticks, after: Ticks, requests: u64) -> Option<PerRequest> {
        if requests == 0 {
            return None;
        }
        let micros_per_tick = 1e6 / ticks_per_sec() as f64;
        let per_request = |ticks: u64| ticks as f64 * micros_per_tick / requests as f64;
        Some(PerRequest {
            user: per_request(after.user.saturating_sub(before.user)),
            system: per_request(after.system.saturating_sub(before.system)),
        })
    }

    pub(crate) fn total(&self) -> f64 {
        self.user + self.system
    }
}

/// The CPU time of `pid` and its direct children (nginx's workers), or `None` when `pid` is
/// gone.
pub(crate) fn of_tree(pid: u32) -> Option<Ticks> {
    let own = of_process(pid)?;
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    Some(
        children
            .split_whitespace()
            .filter_map(|c| c.parse().ok())
            .filter_map(of_process)
            .fold(own, |sum, child| Ticks { user: sum.user + child.user, system: sum.system + child.system }),
    )
}

/// The CPU time of one process (all its threads).
fn of_process(pid: u32) -> Option<Ticks> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// `utime` and `stime` (fields 14 and 15) of a `/proc/PID/stat` line. The command name (field
/// 2) is in parentheses and may hold spaces or parentheses itself, so fields are counted from
/// the last `)`.
fn parse_stat(stat: &str) -> Option<Ticks> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (the state).
    Some(Ticks { user: fields.get(11)?.parse().ok()?, system: fields.get(12)?.parse().ok()? })
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on every Linux this runs on, the fallback).
fn ticks_per_sec() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
            .filter(|&ticks| ticks > 0)
            .unwrap_or(100)
    })
}

#[cfg(test)]
mod tests {
    use super::{PerRequest, Ticks, parse_stat};

    #[test]
    fn reads_utime_and_stime_after_the_command_name() {
        let stat = "4242 (nginx: wor) ker) S 4241 4241 4241 0 -1 4194624 120 0 0 0 1234 567 0 0 20 0 1 0 99 1000 200";
        assert_eq!(parse_stat(stat), Some(Ticks { user: 1234, system: 567 }));
        assert_eq!(parse_stat("1 (x) S 0"), None);
    }

    #[test]
    fn cpu_per_request() {
        let before = Ticks { user: 100, system: 50 };
        let after = Ticks { user: 200, system: 350 };
        let per = PerRequest::between(before, after, 100_000).expect("requests");
        // 100 ticks of 10 ms = 1 s of user time over 100,000 requests: 10 µs each.
        let tick_us = 1e6 / super::ticks_per_sec() as f64;
        assert!((per.user - 100.0 * tick_us / 100_000.0).abs() < 1e-9);
        assert!((per.total() - 400.0 * tick_us / 100_000.0).abs() < 1e-9);
        assert_eq!(PerRequest::between(before, after, 0), None);
    }
}
