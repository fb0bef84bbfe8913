//! The gateways' resident memory: once before any load, and sampled every 50 ms while the
//! load runs, as a peak over the whole comparison and a peak per saturation round.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::Pids;
use crate::procs::{Memory, memory_of};
use crate::report::{Report, Table, mib};
use crate::spread::Spread;

/// Samples a process's resident memory every 50 ms and keeps the largest value, over the whole
/// run and since the last [`MemorySampler::end_round`].
#[derive(Debug)]
struct MemorySampler {
    peak: Arc<AtomicU64>,
    round_peak: Arc<AtomicU64>,
    rounds: Vec<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl MemorySampler {
    fn start(pid: u32, with_children: bool) -> MemorySampler {
        let (peak, round_peak) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (shared, shared_round) = (peak.clone(), round_peak.clone());
        let task = tokio::spawn(async move {
            loop {
                let rss = if with_children { tree_rss(pid) } else { memory_of(pid).map_or(0, |m| m.rss) };
                shared.fetch_max(rss, Ordering::Relaxed);
                shared_round.fetch_max(rss, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        MemorySampler { peak, round_peak, rounds: Vec::new(), task }
    }

    /// Starts a round: its peak counts from now.
    fn start_round(&self) {
        self.round_peak.store(0, Ordering::Relaxed);
    }

    /// Keeps the peak since [`MemorySampler::start_round`] as that round's.
    fn end_round(&mut self) {
        self.rounds.push(self.round_peak.swap(0, Ordering::Relaxed));
    }

    fn stop(self) -> (u64, Vec<u64>) {
        self.task.abort();
        (self.peak.load(Ordering::Relaxed), self.rounds)
    }
}

/// The resident memory of a process and its direct children (nginx's workers).
fn tree_rss(pid: u32) -> u64 {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    std::iter::once(pid)
        .chain(children.split_whitespace().filter_map(|c| c.parse().ok()))
        .filter_map(memory_of)
        .map(|m: Memory| m.rss)
        .sum()
}

/// Reads `rss` every 50 ms until it gives the same figure [`SETTLED_READS`] times in a row (at
/// most for [`SETTLE_LIMIT`]), and returns that figure. A process that has only just started is
/// still faulting its pages in: nginx's workers are forked after the master listens, and a
/// fork copies no page-table entries for the binary's and libraries' file mappings, so a
/// worker read at once is several MiB short of the worker it becomes a moment later (one run
/// read nginx at 15.7 MiB idle, where it settles at 20.5).
async fn settled(rss: impl Fn() -> u64) -> u64 {
    let deadline = tokio::time::Instant::now() + SETTLE_LIMIT;
    let (mut last, mut same) = (rss(), 1);
    while same < SETTLED_READS && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = rss();
        same = if now == last { same + 1 } else { 1 };
        last = now;
    }
    last
}

/// Equal readings in a row that make an idle figure settled.
const SETTLED_READS: u32 = 5;

/// The longest an idle figure is waited for; a process whose memory never settles is read then.
const SETTLE_LIMIT: Duration = Duration::from_secs(5);

/// Both gateways' memory while the comparison runs.
#[derive(Debug)]
pub(crate) struct Memories {
    idle_aurora: u64,
    idle_nginx: u64,
    aurora: MemorySampler,
    nginx: MemorySampler,
}

impl Memories {
    /// Reads the idle figures, each once it has settled, and starts sampling.
    pub(crate) async fn start(pids: Pids) -> Memories {
        let (idle_aurora, idle_nginx) =
            tokio::join!(settled(|| memory_of(pids.aurora).map_or(0, |m| m.rss)), settled(|| tree_rss(pids.nginx)));
        Memories {
            idle_aurora,
            idle_nginx,
            aurora: MemorySampler::start(pids.aurora, false),
            nginx: MemorySampler::start(pids.nginx, true),
        }
    }

    /// Called before each saturation round of proxied requests.
    pub(crate) fn start_round(&self) {
        self.aurora.start_round();
        self.nginx.start_round();
    }

    /// Called after each saturation round of proxied requests.
    pub(crate) fn end_round(&mut self) {
        self.aurora.end_round();
        self.nginx.end_round();
    }

    /// Stops sampling (before the streaming runs, which are not part of the load).
    pub(crate) fn finish(self) -> Measured {
        let (loaded_aurora, rounds_aurora) = self.aurora.stop();
        let (loaded_nginx, rounds_nginx) = self.nginx.stop();
        Measured {
            idle_aurora: self.idle_aurora,
            idle_nginx: self.idle_nginx,
            loaded_aurora,
            loaded_nginx,
            rounds_aurora,
            rounds_nginx,
        }
    }
}

/// The figures, once sampling stopped.
#[derive(Debug)]
pub(crate) struct Measured {
    idle_aurora: u64,
    idle_nginx: u64,
    loaded_aurora: u64,
    loaded_nginx: u64,
    rounds_aurora: Vec<u64>,
    rounds_nginx: Vec<u64>,
}

impl Measured {
    /// The table and the target's check.
    pub(crate) fn report(&self, report: &mut Report, text: &mut String) {
        let (idle_aurora, idle_nginx, loaded_aurora, loaded_nginx) =
            (self.idle_aurora, self.idle_nginx, self.loaded_aurora, self.loaded_nginx);
        let (rounds_aurora, rounds_nginx) = (&self.rounds_aurora, &self.rounds_nginx);
        let per_round = |rounds: &[u64]| {
            let spread = Spread::of(&rounds.iter().map(|&b| b as f64).collect::<Vec<_>>());
            let mib = |b: f64| mib(b as u64);
            if (spread.max - spread.min).abs() < f64::EPSILON {
                return mib(spread.median);
            }
            format!("{} ({}–{})", mib(spread.median), mib(spread.min).trim_end_matches(" MiB"), mib(spread.max))
        };
        let mut table = Table::new(&[
            "process",
            "idle (before any load)",
            "peak in each saturation round",
            "peak under load (whole comparison)",
        ]);
        table.row(vec!["aurora data plane".into(), mib(idle_aurora), per_round(rounds_aurora), mib(loaded_aurora)]);
        table.row(vec!["nginx (master + workers)".into(), mib(idle_nginx), per_round(rounds_nginx), mib(loaded_nginx)]);
        text.push_str(&format!(
            "### Resident memory\n\nIdle is read once, before the first request (a process has one idle state before load; after load it keeps what it allocated), once it has settled: the same figure five times in a row, 50 ms apart (a process that has just started, nginx's freshly forked workers above all, is still faulting its pages in). Under load, resident memory is sampled every 50 ms from the first fixed-rate run to the last saturation run: the peak of each saturation round (median of the rounds, range) and the peak over the whole comparison, which the target is judged on.\n\n{}\n",
            table.render()
        ));
        report.check(
            "idle and loaded RSS at or below nginx's",
            format!(
                "idle {} vs {}, loaded {} vs {}",
                mib(idle_aurora),
                mib(idle_nginx),
                mib(loaded_aurora),
                mib(loaded_nginx)
            ),
            idle_aurora <= idle_nginx && loaded_aurora <= loaded_nginx,
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_idle_figure_is_the_one_that_repeats() {
        // A worker still faulting its pages in, then settled.
        let reads = [15, 18, 20, 20, 20, 21, 21, 21, 21, 21, 21, 99];
        let at = AtomicUsize::new(0);
        let rss = || reads[at.fetch_add(1, Ordering::Relaxed).min(reads.len() - 1)];
        assert_eq!(settled(rss).await, 21);
        assert_eq!(at.load(Ordering::Relaxed), 10, "stops at the fifth equal reading");
    }

    #[tokio::test(start_paused = true)]
    async fn a_figure_that_never_settles_is_read_at_the_limit() {
        let at = AtomicU64::new(0);
        let started = tokio::time::Instant::now();
        let last = settled(|| at.fetch_add(1, Ordering::Relaxed)).await;
        assert!(started.elapsed() >= SETTLE_LIMIT);
        assert_eq!(last, at.load(Ordering::Relaxed) - 1);
    }
}
