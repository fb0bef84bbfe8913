//! The side-by-side comparison: direct, nginx and Aurora, in the same run, interleaved.
//!
//! Every measurement runs in rounds, and each round visits direct, nginx and Aurora in turn,
//! so a burst of background load (others compile on this machine) hits all three alike
//! instead of one of them. Histograms are merged across rounds; throughput is the median of
//! the rounds.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::load::{Target, open_loop, saturation, sse};
use crate::procs::{Memory, memory_of};
use crate::report::{Report, Table, mib, rate, ratio, signed_us, us};
use crate::upstream::Counters;

/// How hard and how long to push.
#[derive(Debug, Clone)]
pub(crate) struct Scale {
    pub(crate) rates: Vec<u64>,
    pub(crate) rounds: usize,
    pub(crate) fixed_duration: Duration,
    pub(crate) warmup: Duration,
    pub(crate) connections: usize,
    pub(crate) saturation_duration: Duration,
    pub(crate) saturation_connections: usize,
    pub(crate) sse: sse::Plan,
}

/// The three ways to reach the upstream, plus the two gateways with a bad token.
#[derive(Debug, Clone)]
pub(crate) struct Targets {
    pub(crate) direct: Target,
    pub(crate) nginx: Target,
    pub(crate) aurora: Target,
    pub(crate) nginx_bad: Target,
    pub(crate) aurora_bad: Target,
}

/// Processes whose memory the report shows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pids {
    pub(crate) aurora: u32,
    pub(crate) nginx: u32,
}

/// Samples a process's resident memory every 50 ms and keeps the largest value.
#[derive(Debug)]
struct MemorySampler {
    peak: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl MemorySampler {
    fn start(pid: u32, with_children: bool) -> MemorySampler {
        let peak = Arc::new(AtomicU64::new(0));
        let shared = peak.clone();
        let task = tokio::spawn(async move {
            loop {
                let rss = if with_children { tree_rss(pid) } else { memory_of(pid).map_or(0, |m| m.rss) };
                shared.fetch_max(rss, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        MemorySampler { peak, task }
    }

    fn stop(self) -> u64 {
        self.task.abort();
        self.peak.load(Ordering::Relaxed)
    }
}

/// The resident memory of a process and its direct children (nginx's workers).
pub(crate) fn tree_rss(pid: u32) -> u64 {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    std::iter::once(pid)
        .chain(children.split_whitespace().filter_map(|c| c.parse().ok()))
        .filter_map(memory_of)
        .map(|m: Memory| m.rss)
        .sum()
}

pub(crate) async fn run(
    report: &mut Report,
    targets: &Targets,
    scale: &Scale,
    counters: &Counters,
    pids: Pids,
    scratch: &Path,
) -> anyhow::Result<()> {
    let all = [&targets.direct, &targets.nginx, &targets.aurora];
    let idle_aurora = memory_of(pids.aurora).unwrap_or_default().rss;
    let idle_nginx = tree_rss(pids.nginx);
    let aurora_memory = MemorySampler::start(pids.aurora, false);
    let nginx_memory = MemorySampler::start(pids.nginx, true);

    // Fixed rates.
    let mut fixed: BTreeMap<(u64, &str), open_loop::Outcome> = BTreeMap::new();
    for &rate_per_sec in &scale.rates {
        let plan =
            open_loop::Plan { rate: rate_per_sec, duration: scale.fixed_duration, connections: scale.connections };
        for target in all {
            open_loop::run(target, open_loop::Plan { duration: scale.warmup, ..plan }).await?;
        }
        for _ in 0..scale.rounds {
            for target in all {
                let outcome = open_loop::run(target, plan).await?;
                fixed.entry((rate_per_sec, target.name)).or_insert_with(open_loop::Outcome::empty).merge(&outcome);
            }
        }
    }

    // Bad tokens, at the highest rate: must be refused by the gateway and never reach upstream.
    let top_rate = scale.rates.iter().copied().max().unwrap_or(1000);
    let bad_targets = [&targets.nginx_bad, &targets.aurora_bad];
    let upstream_before = counters.requests();
    let mut bad: BTreeMap<&str, open_loop::Outcome> = BTreeMap::new();
    let plan = open_loop::Plan { rate: top_rate, duration: scale.fixed_duration, connections: scale.connections };
    for _ in 0..scale.rounds {
        for target in bad_targets {
            let outcome = open_loop::run(target, plan).await?;
            bad.entry(target.name).or_insert_with(open_loop::Outcome::empty).merge(&outcome);
        }
    }
    let mut bad_saturation: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let saturation_plan =
        saturation::Plan { connections: scale.saturation_connections, duration: scale.saturation_duration };
    for target in bad_targets {
        let outcome = saturation::run(target, saturation_plan, scratch).await?;
        bad_saturation.entry(target.name).or_default().push(outcome.requests_per_sec);
    }
    let reached_upstream = counters.requests() - upstream_before;

    // Saturation.
    let mut saturated: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut saturation_errors: BTreeMap<&str, u64> = BTreeMap::new();
    for _ in 0..scale.rounds {
        for target in all {
            let outcome = saturation::run(target, saturation_plan, scratch).await?;
            saturated.entry(target.name).or_default().push(outcome.requests_per_sec);
            *saturation_errors.entry(target.name).or_default() += outcome.non_2xx;
        }
    }
    let loaded_aurora = aurora_memory.stop();
    let loaded_nginx = nginx_memory.stop();

    // Streaming.
    let mut streams: BTreeMap<&str, sse::Outcome> = BTreeMap::new();
    let per_round = sse::Plan { streams: scale.sse.streams.div_ceil(scale.rounds).max(1), ..scale.sse };
    for _ in 0..scale.rounds {
        for target in all {
            let outcome = sse::run(target, per_round).await?;
            streams.entry(target.name).or_insert_with(sse::Outcome::empty).merge(&outcome);
        }
    }

    // Every scenario must have produced numbers, or the report would show zeros as figures.
    for ((rate_per_sec, name), outcome) in &fixed {
        anyhow::ensure!(outcome.ok > 0, "no successful request to {name} at {rate_per_sec}/s");
    }
    for (name, outcome) in &bad {
        anyhow::ensure!(outcome.total() > 0 && outcome.ok == 0, "{name} let an invalid token through");
    }
    for (name, outcome) in &streams {
        anyhow::ensure!(!outcome.first_event.is_empty() && outcome.broken == 0, "broken SSE streams through {name}");
    }

    // ---- Report ----
    let mut text = String::from("## Data plane against direct and nginx\n\n");
    text.push_str(&format!(
        "Fixed-rate runs: {} round(s) of {:?} per target and rate, interleaved (direct, nginx, Aurora), after a {:?} warm-up each; {} keep-alive connections; latency measured from each request's scheduled send time (coordinated omission corrected). *Added* = the gateway's figure minus direct's at the same percentile.\n\n",
        scale.rounds, scale.fixed_duration, scale.warmup, scale.connections
    ));
    for &rate_per_sec in &scale.rates {
        let get = |name: &str| fixed.get(&(rate_per_sec, name)).cloned().unwrap_or_else(open_loop::Outcome::empty);
        let (direct, nginx, aurora) = (get("direct"), get("nginx"), get("aurora"));
        let mut table = Table::new(&["figure", "direct", "nginx", "aurora", "aurora ÷ direct", "aurora ÷ nginx"]);
        for (label, q) in [("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999)] {
            let (d, n, a) = (direct.micros(q), nginx.micros(q), aurora.micros(q));
            table.row(vec![format!("latency {label}"), us(d), us(n), us(a), ratio(a, d), ratio(a, n)]);
            table.row(vec![
                format!("**added {label}**"),
                "–".into(),
                signed_us(n - d),
                format!("**{}**", signed_us(a - d)),
                "–".into(),
                ratio(a - d, n - d),
            ]);
        }
        let late = |o: &open_loop::Outcome| format!("{} / {} / {}", o.late, o.rejected, o.errors);
        table.row(vec![
            "achieved rate".into(),
            rate(direct.achieved_rate()),
            rate(nginx.achieved_rate()),
            rate(aurora.achieved_rate()),
            "–".into(),
            "–".into(),
        ]);
        table.row(vec![
            "late / non-2xx / errors".into(),
            late(&direct),
            late(&nginx),
            late(&aurora),
            "–".into(),
            "–".into(),
        ]);
        text.push_str(&format!("### {rate_per_sec} requests/s\n\n{}\n", table.render()));

        if rate_per_sec == top_rate {
            let added = aurora.micros(0.99) - direct.micros(0.99);
            let nginx_added = nginx.micros(0.99) - direct.micros(0.99);
            report.check(
                &format!("added p99 at {rate_per_sec}/s ≤ 0.3 ms"),
                format!("{} (nginx {})", us(added), us(nginx_added)),
                added <= 300.0,
            );
            report.check(
                &format!("added p99 at {rate_per_sec}/s no worse than nginx"),
                format!("{} vs {}", us(added), us(nginx_added)),
                added <= nginx_added,
            );
        }
    }

    let max_rate = |name: &str| median(saturated.get(name).map(Vec::as_slice).unwrap_or_default());
    let (d, n, a) = (max_rate("direct"), max_rate("nginx"), max_rate("aurora"));
    let mut table = Table::new(&["figure", "direct", "nginx", "aurora", "aurora ÷ direct", "aurora ÷ nginx"]);
    table.row(vec!["max throughput (median of rounds)".into(), rate(d), rate(n), rate(a), ratio(a, d), ratio(a, n)]);
    let all_rounds = |name: &str| {
        saturated
            .get(name)
            .map(|v| v.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    };
    table.row(vec![
        "every round".into(),
        all_rounds("direct"),
        all_rounds("nginx"),
        all_rounds("aurora"),
        "–".into(),
        "–".into(),
    ]);
    let errors = |name: &str| saturation_errors.get(name).copied().unwrap_or(0).to_string();
    table.row(vec![
        "non-2xx or socket errors".into(),
        errors("direct"),
        errors("nginx"),
        errors("aurora"),
        "–".into(),
        "–".into(),
    ]);
    text.push_str(&format!(
        "### Maximum throughput\n\nwrk, 1 thread, {} connections, {:?} per round, {} round(s) interleaved. wrk, the upstream and the gateway share the machine's 2 cores, so these are the throughput of the whole loop on this machine, comparable with each other, not a gateway's capacity on dedicated cores.\n\n{}\n",
        scale.saturation_connections,
        scale.saturation_duration,
        scale.rounds,
        table.render()
    ));
    report.check("max throughput ≥ 1.0x nginx", ratio(a, n), a >= n);

    // Bad tokens.
    let good = fixed.get(&(top_rate, "aurora")).cloned().unwrap_or_else(open_loop::Outcome::empty);
    let (nb, ab) = (
        bad.get("nginx").cloned().unwrap_or_else(open_loop::Outcome::empty),
        bad.get("aurora").cloned().unwrap_or_else(open_loop::Outcome::empty),
    );
    let sat = |name: &str| median(bad_saturation.get(name).map(Vec::as_slice).unwrap_or_default());
    let mut table = Table::new(&["figure", "nginx", "aurora", "aurora ÷ nginx", "aurora, valid key (same rate)"]);
    for (label, q) in [("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999)] {
        table.row(vec![
            format!("rejection latency {label}"),
            us(nb.micros(q)),
            us(ab.micros(q)),
            ratio(ab.micros(q), nb.micros(q)),
            us(good.micros(q)),
        ]);
    }
    table.row(vec![
        "refused by the gateway".into(),
        format!("{} of {}", nb.rejected, nb.total()),
        format!("{} of {} ({} marked x-aurora-error)", ab.rejected, ab.total(), ab.gateway_answered),
        "–".into(),
        "–".into(),
    ]);
    table.row(vec![
        "max rejections/s (wrk)".into(),
        rate(sat("nginx")),
        rate(sat("aurora")),
        ratio(sat("aurora"), sat("nginx")),
        format!("{} valid", rate(a)),
    ]);
    text.push_str(&format!(
        "### A flood of invalid tokens\n\n{top_rate} requests/s with an unknown `Bearer` token, {} round(s) interleaved, then wrk at saturation. Requests that reached the upstream during these runs: **{reached_upstream}**.\n\n{}\n",
        scale.rounds,
        table.render()
    ));
    let cheap = ab.micros(0.99) <= good.micros(0.99) && reached_upstream == 0 && ab.rejected == ab.total();
    report.check(
        "invalid-key rejection at least as fast as a successful request, never upstream",
        format!(
            "rejection p99 {} vs valid p99 {}; {reached_upstream} reached upstream",
            us(ab.micros(0.99)),
            us(good.micros(0.99))
        ),
        cheap,
    );

    // SSE.
    let get = |name: &str| streams.get(name).cloned().unwrap_or_else(sse::Outcome::empty);
    let (d, n, a) = (get("direct"), get("nginx"), get("aurora"));
    let q = |h: &hdrhistogram::Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1_000.0;
    let mut table = Table::new(&["figure", "direct", "nginx", "aurora", "nginx added", "aurora added"]);
    for (label, pick) in [
        ("time to first event", (|o: &sse::Outcome| o.first_event.clone()) as fn(&sse::Outcome) -> _),
        ("event delivery delay", |o: &sse::Outcome| o.delivery.clone()),
    ] {
        for (pl, qq) in [("p50", 0.5), ("p99", 0.99)] {
            let (dv, nv, av) = (q(&pick(&d), qq), q(&pick(&n), qq), q(&pick(&a), qq));
            table.row(vec![format!("{label} {pl}"), us(dv), us(nv), us(av), signed_us(nv - dv), signed_us(av - dv)]);
        }
    }
    table.row(vec![
        "broken streams".into(),
        d.broken.to_string(),
        n.broken.to_string(),
        a.broken.to_string(),
        "–".into(),
        "–".into(),
    ]);
    text.push_str(&format!(
        "### Server-sent events\n\n{} streams per target of {} events {:?} apart, interleaved. *Event delivery delay* is the time from the upstream writing an event to the client having read it whole (the upstream stamps each event; both run in the harness's process and share a clock), so the added delay is exactly what the gateway adds to every inter-event gap.\n\n{}\n",
        per_round.streams * scale.rounds,
        scale.sse.events,
        scale.sse.gap,
        table.render()
    ));
    let ttfe_added = q(&a.first_event, 0.99) - q(&d.first_event, 0.99);
    let gap_added = q(&a.delivery, 0.99) - q(&d.delivery, 0.99);
    let ttfe_p50 = q(&a.first_event, 0.5) - q(&d.first_event, 0.5);
    let gap_p50 = q(&a.delivery, 0.5) - q(&d.delivery, 0.5);
    report.check(
        "SSE adds < 1 ms to first event and to each gap (p99)",
        format!(
            "p99: first event {}, each event {} (p50: {}, {})",
            signed_us(ttfe_added),
            signed_us(gap_added),
            signed_us(ttfe_p50),
            signed_us(gap_p50)
        ),
        ttfe_added < 1_000.0 && gap_added < 1_000.0 && a.broken == 0,
    );

    let mut table = Table::new(&["process", "idle", "peak under load (sampled every 50 ms)"]);
    table.row(vec!["aurora data plane".into(), mib(idle_aurora), mib(loaded_aurora)]);
    table.row(vec!["nginx (master + workers)".into(), mib(idle_nginx), mib(loaded_nginx)]);
    text.push_str(&format!("### Resident memory\n\n{}\n", table.render()));

    text.push_str(&format!(
        "Upstream leak check: requests that reached the upstream without the injected credential or still carrying the client's `Authorization`: **{}** (of {}).\n\n",
        counters.leaks(),
        counters.requests()
    ));
    report.section(text);
    Ok(())
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}
