//! The side-by-side comparison: direct, nginx and Aurora, in the same run, interleaved.
//!
//! Every measurement runs in rounds, and each round visits direct, nginx and Aurora in turn,
//! so a burst of background load (others compile on this machine) hits all three alike
//! instead of one of them. Every figure is computed per round and reported as the median of
//! the rounds with their range ([`Spread`]); an *added* figure is the gateway's round minus
//! direct's same round, so both halves of a difference saw the same background load.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::load::{Target, open_loop, saturation, sse};
use crate::procs::{Memory, memory_of};
use crate::report::{Report, Table, mib, ratio, us};
use crate::spread::Spread;
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
    let mut fixed: BTreeMap<(u64, &str), Vec<open_loop::Outcome>> = BTreeMap::new();
    for &rate_per_sec in &scale.rates {
        let plan =
            open_loop::Plan { rate: rate_per_sec, duration: scale.fixed_duration, connections: scale.connections };
        for target in all {
            open_loop::run(target, open_loop::Plan { duration: scale.warmup, ..plan }).await?;
        }
        for _ in 0..scale.rounds {
            for target in all {
                let outcome = open_loop::run(target, plan).await?;
                fixed.entry((rate_per_sec, target.name)).or_default().push(outcome);
            }
        }
    }

    // Bad tokens, at the highest rate: must be refused by the gateway and never reach upstream.
    let top_rate = scale.rates.iter().copied().max().unwrap_or(1000);
    let bad_targets = [&targets.nginx_bad, &targets.aurora_bad];
    let upstream_before = counters.requests();
    let mut bad: BTreeMap<&str, Vec<open_loop::Outcome>> = BTreeMap::new();
    let plan = open_loop::Plan { rate: top_rate, duration: scale.fixed_duration, connections: scale.connections };
    for _ in 0..scale.rounds {
        for target in bad_targets {
            let outcome = open_loop::run(target, plan).await?;
            bad.entry(target.name).or_default().push(outcome);
        }
    }
    let mut bad_saturation: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let saturation_plan =
        saturation::Plan { connections: scale.saturation_connections, duration: scale.saturation_duration };
    for _ in 0..scale.rounds {
        for target in bad_targets {
            let outcome = saturation::run(target, saturation_plan, scratch).await?;
            bad_saturation.entry(target.name).or_default().push(outcome.requests_per_sec);
        }
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
    let mut streams: BTreeMap<&str, Vec<sse::Outcome>> = BTreeMap::new();
    let per_round = sse::Plan { streams: scale.sse.streams.div_ceil(scale.rounds).max(1), ..scale.sse };
    for _ in 0..scale.rounds {
        for target in all {
            let outcome = sse::run(target, per_round).await?;
            streams.entry(target.name).or_default().push(outcome);
        }
    }

    // Every scenario must have produced numbers, or the report would show zeros as figures.
    for ((rate_per_sec, name), rounds) in &fixed {
        anyhow::ensure!(merged(rounds).ok > 0, "no successful request to {name} at {rate_per_sec}/s");
    }
    for (name, rounds) in &bad {
        let outcome = merged(rounds);
        anyhow::ensure!(outcome.total() > 0 && outcome.ok == 0, "{name} let an invalid token through");
    }
    for (name, rounds) in &streams {
        let broken: u64 = rounds.iter().map(|o| o.broken).sum();
        anyhow::ensure!(
            rounds.iter().all(|o| !o.first_event.is_empty()) && broken == 0,
            "broken SSE streams through {name}"
        );
    }

    // ---- Report ----
    let mut text = String::from("## Data plane against direct and nginx\n\n");
    text.push_str(&format!(
        "Fixed-rate runs: {} round(s) of {:?} per target and rate, interleaved (direct, nginx, Aurora), after a {:?} warm-up each; {} keep-alive connections; latency measured from each request's scheduled send time (coordinated omission corrected). *Added* = the gateway's figure minus direct's at the same percentile, in the same round. Every figure is the median of the rounds, with the range over the rounds in brackets; ratios are of medians.\n\n",
        scale.rounds, scale.fixed_duration, scale.warmup, scale.connections
    ));
    let none = Vec::new();
    for &rate_per_sec in &scale.rates {
        let get = |name: &'static str| fixed.get(&(rate_per_sec, name)).unwrap_or(&none);
        let (direct, nginx, aurora) = (get("direct"), get("nginx"), get("aurora"));
        let mut table = Table::new(&["figure", "direct", "nginx", "aurora", "aurora ÷ direct", "aurora ÷ nginx"]);
        for (label, q) in [("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999)] {
            let (d, n, a) = (quantile(direct, q), quantile(nginx, q), quantile(aurora, q));
            table.row(vec![
                format!("latency {label}"),
                d.us(),
                n.us(),
                a.us(),
                ratio(a.median, d.median),
                ratio(a.median, n.median),
            ]);
            let (n_added, a_added) = (added(nginx, direct, q), added(aurora, direct, q));
            table.row(vec![
                format!("**added {label}**"),
                "–".into(),
                n_added.signed_us(),
                format!("**{}**", a_added.signed_us()),
                "–".into(),
                ratio(a_added.median, n_added.median),
            ]);
        }
        let (direct_all, nginx_all, aurora_all) = (merged(direct), merged(nginx), merged(aurora));
        let late = |o: &open_loop::Outcome| format!("{} / {} / {}", o.late, o.rejected, o.errors);
        table.row(vec![
            "achieved rate (all rounds)".into(),
            crate::report::rate(direct_all.achieved_rate()),
            crate::report::rate(nginx_all.achieved_rate()),
            crate::report::rate(aurora_all.achieved_rate()),
            "–".into(),
            "–".into(),
        ]);
        table.row(vec![
            "late / non-2xx / errors (all rounds)".into(),
            late(&direct_all),
            late(&nginx_all),
            late(&aurora_all),
            "–".into(),
            "–".into(),
        ]);
        text.push_str(&format!("### {rate_per_sec} requests/s\n\n{}\n", table.render()));

        let (a99, n99) = (added(aurora, direct, 0.99).median, added(nginx, direct, 0.99).median);
        report.check(
            &format!("added p99 at {rate_per_sec}/s no worse than nginx"),
            format!("{} vs {}", us(a99), us(n99)),
            a99 <= n99,
        );
        if rate_per_sec == 1_000 {
            let (a999, n999) = (added(aurora, direct, 0.999).median, added(nginx, direct, 0.999).median);
            report.check(
                &format!("added p99.9 at {rate_per_sec}/s ≤ 2x nginx's"),
                format!("{} vs {}", us(a999), us(n999)),
                a999 <= 2.0 * n999.max(0.0),
            );
        }
        if rate_per_sec == top_rate {
            report.check(
                &format!("added p99 at {rate_per_sec}/s ≤ 0.3 ms"),
                format!("{} (nginx {})", us(a99), us(n99)),
                a99 <= 300.0,
            );
        }
    }

    let max_rate = |name: &str| Spread::of(saturated.get(name).map(Vec::as_slice).unwrap_or_default());
    let (d, n, a) = (max_rate("direct"), max_rate("nginx"), max_rate("aurora"));
    let mut table = Table::new(&["figure", "direct", "nginx", "aurora", "aurora ÷ direct", "aurora ÷ nginx"]);
    table.row(vec![
        "max throughput".into(),
        d.rate(),
        n.rate(),
        a.rate(),
        ratio(a.median, d.median),
        ratio(a.median, n.median),
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
        "### Maximum throughput\n\nwrk, 1 thread, {} connections, {:?} per round, {} round(s) interleaved; median of the rounds (range). wrk, the upstream and the gateway share the machine's 2 cores, so these are the throughput of the whole loop on this machine, comparable with each other, not a gateway's capacity on dedicated cores.\n\n{}\n",
        scale.saturation_connections,
        scale.saturation_duration,
        scale.rounds,
        table.render()
    ));
    report.check("max throughput ≥ 1.0x nginx", ratio(a.median, n.median), a.median >= n.median);

    // Bad tokens.
    let good = fixed.get(&(top_rate, "aurora")).unwrap_or(&none);
    let (nb, ab) = (bad.get("nginx").unwrap_or(&none), bad.get("aurora").unwrap_or(&none));
    let sat = |name: &str| Spread::of(bad_saturation.get(name).map(Vec::as_slice).unwrap_or_default());
    let mut table = Table::new(&["figure", "nginx", "aurora", "aurora ÷ nginx", "aurora, valid key (same rate)"]);
    for (label, q) in [("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999)] {
        let (n, a) = (quantile(nb, q), quantile(ab, q));
        table.row(vec![
            format!("rejection latency {label}"),
            n.us(),
            a.us(),
            ratio(a.median, n.median),
            quantile(good, q).us(),
        ]);
    }
    let (nb_all, ab_all) = (merged(nb), merged(ab));
    table.row(vec![
        "refused by the gateway".into(),
        format!("{} of {}", nb_all.rejected, nb_all.total()),
        format!("{} of {} ({} marked x-aurora-error)", ab_all.rejected, ab_all.total(), ab_all.gateway_answered),
        "–".into(),
        "–".into(),
    ]);
    let (n_sat, a_sat) = (sat("nginx"), sat("aurora"));
    table.row(vec![
        "max rejections/s (wrk)".into(),
        n_sat.rate(),
        a_sat.rate(),
        ratio(a_sat.median, n_sat.median),
        format!("{} valid", a.rate()),
    ]);
    text.push_str(&format!(
        "### A flood of invalid tokens\n\n{top_rate} requests/s with an unknown `Bearer` token, {} round(s) interleaved, then wrk at saturation ({} round(s)). Requests that reached the upstream during these runs: **{reached_upstream}**.\n\n{}\n",
        scale.rounds,
        scale.rounds,
        table.render()
    ));
    report.check(
        "invalid-token rejections/s ≥ 1.0x nginx",
        ratio(a_sat.median, n_sat.median),
        a_sat.median >= n_sat.median,
    );
    let (ab99, good99) = (quantile(ab, 0.99).median, quantile(good, 0.99).median);
    let cheap = ab99 <= good99 && reached_upstream == 0 && ab_all.rejected == ab_all.total();
    report.check(
        "invalid-key rejection at least as fast as a successful request, never upstream",
        format!("rejection p99 {} vs valid p99 {}; {reached_upstream} reached upstream", us(ab99), us(good99)),
        cheap,
    );

    // SSE.
    let none_sse = Vec::new();
    let get = |name: &str| streams.get(name).unwrap_or(&none_sse);
    let (d, n, a) = (get("direct"), get("nginx"), get("aurora"));
    let mut table = Table::new(&["figure", "direct", "nginx", "aurora", "nginx added", "aurora added"]);
    let mut aurora_added = Vec::new();
    for (label, pick) in [
        (
            "time to first event",
            (|o: &sse::Outcome| &o.first_event) as fn(&sse::Outcome) -> &hdrhistogram::Histogram<u64>,
        ),
        ("event delivery delay", |o: &sse::Outcome| &o.delivery),
    ] {
        for (pl, q) in [("p50", 0.5), ("p99", 0.99)] {
            let per_round = |rounds: &[sse::Outcome]| -> Vec<f64> {
                rounds.iter().map(|o| pick(o).value_at_quantile(q) as f64 / 1_000.0).collect()
            };
            let (dv, nv, av) = (per_round(d), per_round(n), per_round(a));
            let difference = |g: &[f64]| Spread::of(&g.iter().zip(&dv).map(|(g, d)| g - d).collect::<Vec<_>>());
            let (n_added, a_added) = (difference(&nv), difference(&av));
            aurora_added.push((label, pl, a_added.median));
            table.row(vec![
                format!("{label} {pl}"),
                Spread::of(&dv).us(),
                Spread::of(&nv).us(),
                Spread::of(&av).us(),
                n_added.signed_us(),
                a_added.signed_us(),
            ]);
        }
    }
    let broken = |rounds: &[sse::Outcome]| rounds.iter().map(|o| o.broken).sum::<u64>();
    table.row(vec![
        "broken streams".into(),
        broken(d).to_string(),
        broken(n).to_string(),
        broken(a).to_string(),
        "–".into(),
        "–".into(),
    ]);
    text.push_str(&format!(
        "### Server-sent events\n\n{} streams per target of {} events {:?} apart, in {} interleaved round(s); median of the rounds (range). *Event delivery delay* is the time from the upstream writing an event to the client having read it whole (the upstream stamps each event; both run in the harness's process and share a clock), so the added delay is exactly what the gateway adds to every inter-event gap.\n\n{}\n",
        per_round.streams * scale.rounds,
        scale.sse.events,
        scale.sse.gap,
        scale.rounds,
        table.render()
    ));
    let pick_added = |label: &str, pl: &str| {
        aurora_added.iter().find(|(l, p, _)| *l == label && *p == pl).map_or(0.0, |(_, _, v)| *v)
    };
    let (ttfe_added, gap_added) = (pick_added("time to first event", "p99"), pick_added("event delivery delay", "p99"));
    let (ttfe_p50, gap_p50) = (pick_added("time to first event", "p50"), pick_added("event delivery delay", "p50"));
    report.check(
        "SSE adds < 1 ms to first event and to each gap (p99)",
        format!(
            "p99: first event {}, each event {} (p50: {}, {})",
            crate::report::signed_us(ttfe_added),
            crate::report::signed_us(gap_added),
            crate::report::signed_us(ttfe_p50),
            crate::report::signed_us(gap_p50)
        ),
        ttfe_added < 1_000.0 && gap_added < 1_000.0 && broken(a) == 0,
    );

    let mut table = Table::new(&["process", "idle", "peak under load (sampled every 50 ms)"]);
    table.row(vec!["aurora data plane".into(), mib(idle_aurora), mib(loaded_aurora)]);
    table.row(vec!["nginx (master + workers)".into(), mib(idle_nginx), mib(loaded_nginx)]);
    text.push_str(&format!("### Resident memory\n\n{}\n", table.render()));
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

    text.push_str(&format!(
        "Upstream leak check: requests that reached the upstream without the injected credential or still carrying the client's `Authorization`: **{}** (of {}).\n\n",
        counters.leaks(),
        counters.requests()
    ));
    report.section(text);
    Ok(())
}

/// Every round's outcome merged (for counts, not for percentiles).
pub(crate) fn merged(rounds: &[open_loop::Outcome]) -> open_loop::Outcome {
    let mut all = open_loop::Outcome::empty();
    for round in rounds {
        all.merge(round);
    }
    all
}

/// The latency at `q`, per round.
pub(crate) fn quantile(rounds: &[open_loop::Outcome], q: f64) -> Spread {
    Spread::of(&rounds.iter().map(|o| o.micros(q)).collect::<Vec<_>>())
}

/// What `gateway` adds to `base` at `q`, round by round (the same round of each).
pub(crate) fn added(gateway: &[open_loop::Outcome], base: &[open_loop::Outcome], q: f64) -> Spread {
    Spread::of(&gateway.iter().zip(base).map(|(g, b)| g.micros(q) - b.micros(q)).collect::<Vec<_>>())
}
