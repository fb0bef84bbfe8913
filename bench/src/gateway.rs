//! The side-by-side comparison: direct, nginx and Aurora, in the same run, interleaved.
//!
//! Every measurement runs in rounds, and each round visits direct, nginx and Aurora in turn,
//! so a burst of background load (others compile on this machine) hits all three alike
//! instead of one of them; each round starts one further along ([`rotated`]), so none of them
//! always runs right after another's load. Every figure is computed per round and reported as
//! the median of the rounds with their range ([`Spread`]); an *added* figure is the gateway's
//! round minus direct's same round, so both halves of a difference saw the same background
//! load.
//!
//! This module runs the fixed-rate comparison and orders the rest: [`saturate`] runs the
//! saturation rounds (every load generator, with the gateways' CPU time per request),
//! [`throughput`] and [`rejections`] report them, [`streams`] measures server-sent events and
//! [`memory`] the gateways' resident memory.

mod memory;
mod rejections;
mod saturate;
mod streams;
mod throughput;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use self::memory::Memories;
use self::rejections::Rejections;
use self::saturate::Subject;
use self::throughput::CPU_FIGURES;
use crate::cpu::{self, PerRequest};
use crate::load::saturation::Generator;
use crate::load::{Target, open_loop, saturation, sse};
use crate::report::{Report, Table, ratio, signed_us, us};
use crate::rotation::rotated;
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

/// The gateways' processes, whose memory and CPU time the report shows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pids {
    pub(crate) aurora: u32,
    pub(crate) nginx: u32,
}

/// The saturation generators to run (wrk, and oha when it is there), and why oha is missing
/// when it is.
#[derive(Debug, Clone)]
pub(crate) struct Generators {
    pub(crate) run: Vec<Generator>,
    pub(crate) missing: Option<String>,
}

impl Generators {
    pub(crate) fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.run.iter().map(Generator::name)
    }

    pub(crate) fn oha(&self) -> Option<&Generator> {
        self.run.iter().find(|g| matches!(g, Generator::Oha(_)))
    }
}

/// What the comparison reads besides the targets.
#[derive(Debug, Clone)]
pub(crate) struct Setup<'a> {
    pub(crate) counters: &'a Counters,
    pub(crate) pids: Pids,
    pub(crate) generators: Generators,
}

pub(crate) async fn run(
    report: &mut Report,
    targets: &Targets,
    scale: &Scale,
    setup: Setup<'_>,
    scratch: &Path,
) -> anyhow::Result<()> {
    let Setup { counters, pids, generators } = setup;
    let all = [&targets.direct, &targets.nginx, &targets.aurora];
    let subjects = [
        Subject { target: &targets.direct, pid: None },
        Subject { target: &targets.nginx, pid: Some(pids.nginx) },
        Subject { target: &targets.aurora, pid: Some(pids.aurora) },
    ];
    let mut memory = Memories::start(pids).await;

    // Fixed rates, with the gateways' CPU time per request in each round.
    let mut fixed: BTreeMap<(u64, &str), Vec<open_loop::Outcome>> = BTreeMap::new();
    let mut fixed_cpu: BTreeMap<(u64, &str), Vec<PerRequest>> = BTreeMap::new();
    for &rate_per_sec in &scale.rates {
        let plan =
            open_loop::Plan { rate: rate_per_sec, duration: scale.fixed_duration, connections: scale.connections };
        for target in all {
            open_loop::run(target, open_loop::Plan { duration: scale.warmup, ..plan }).await?;
        }
        for round in 0..scale.rounds {
            for Subject { target, pid } in rotated(&subjects, round) {
                let before = pid.and_then(cpu::of_tree);
                let outcome = open_loop::run(target, plan).await?;
                let after = pid.and_then(cpu::of_tree);
                if let Some(cpu) = before.zip(after).and_then(|(b, a)| PerRequest::between(b, a, outcome.total())) {
                    fixed_cpu.entry((rate_per_sec, target.name)).or_default().push(cpu);
                }
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
    for round in 0..scale.rounds {
        for target in rotated(&bad_targets, round) {
            let outcome = open_loop::run(target, plan).await?;
            bad.entry(target.name).or_default().push(outcome);
        }
    }
    let saturation_plan =
        saturation::Plan { connections: scale.saturation_connections, duration: scale.saturation_duration };
    let bad_subjects = [
        Subject { target: &targets.nginx_bad, pid: Some(pids.nginx) },
        Subject { target: &targets.aurora_bad, pid: Some(pids.aurora) },
    ];
    let bad_saturation =
        saturate::rounds(&generators.run, &bad_subjects, saturation_plan, scale.rounds, scratch, None).await?;
    let reached_upstream = counters.requests() - upstream_before;

    // Saturation.
    let saturated =
        saturate::rounds(&generators.run, &subjects, saturation_plan, scale.rounds, scratch, Some(&mut memory)).await?;
    let memory = memory.finish();

    // Streaming.
    let streams = streams::rounds(&all, scale.sse, scale.rounds).await?;

    // Every scenario must have produced numbers, or the report would show zeros as figures.
    for ((rate_per_sec, name), rounds) in &fixed {
        anyhow::ensure!(merged(rounds).ok > 0, "no successful request to {name} at {rate_per_sec}/s");
    }
    for (name, rounds) in &bad {
        let outcome = merged(rounds);
        anyhow::ensure!(outcome.total() > 0 && outcome.ok == 0, "{name} let an invalid token through");
    }
    for generator in generators.names() {
        for subject in &subjects {
            let name = subject.target.name;
            anyhow::ensure!(
                saturated.successes(generator, name) > 0,
                "no successful request to {name} with {generator}"
            );
        }
        for subject in &bad_subjects {
            let name = subject.target.name;
            anyhow::ensure!(
                bad_saturation.successes(generator, name) == 0,
                "{name} let an invalid token through at saturation ({generator})"
            );
        }
    }

    // ---- Report ----
    let mut text = String::from("## Data plane against direct and nginx\n\n");
    text.push_str(&format!(
        "Fixed-rate runs: {} round(s) of {:?} per target and rate, interleaved (direct, nginx, Aurora, each round starting one further along), after a {:?} warm-up each; {} keep-alive connections; latency measured from each request's scheduled send time (coordinated omission corrected). *Added* = the gateway's figure minus direct's at the same percentile, in the same round. Every figure is the median of the rounds, with the range over the rounds in brackets; ratios are of medians. The tail targets are judged on the rows *all rounds pooled*: the percentile of every round's requests together (for p99.9 at 1,000/s one round holds only a few dozen requests past it, so a single slow moment moves that round's figure far). *CPU per request* is each gateway's user and system time during the round (read from `/proc` as in the saturation CPU table below) divided by the requests it answered: at a fixed rate the gateway idles between requests, and a request that finds its caches cold costs several times what it costs at saturation, so these rows show how much of the added latency is the gateway's own work.\n\n",
        scale.rounds, scale.fixed_duration, scale.warmup, scale.connections
    ));
    let none = Vec::new();
    let no_cpu = Vec::new();
    for &rate_per_sec in &scale.rates {
        let get = |name: &'static str| fixed.get(&(rate_per_sec, name)).unwrap_or(&none);
        let cpu_of = |name: &'static str| fixed_cpu.get(&(rate_per_sec, name)).unwrap_or(&no_cpu);
        let rounds: [&[open_loop::Outcome]; 3] = [get("direct"), get("nginx"), get("aurora")];
        fixed_rate_table(report, &mut text, rate_per_sec, top_rate, rounds, [cpu_of("nginx"), cpu_of("aurora")]);
    }
    throughput::max_throughput(report, &mut text, &generators, &saturated, saturation_plan, scale.rounds);
    let rejections = Rejections {
        rate: top_rate,
        rounds: scale.rounds,
        nginx: bad.get("nginx").unwrap_or(&none),
        aurora: bad.get("aurora").unwrap_or(&none),
        valid: fixed.get(&(top_rate, "aurora")).unwrap_or(&none),
        saturated: &bad_saturation,
        proxied: &saturated,
        reached_upstream,
    };
    rejections.report(report, &mut text, &generators);
    throughput::cpu(report, &mut text, &generators, &saturated, &bad_saturation);
    streams.report(report, &mut text);
    memory.report(report, &mut text);
    text.push_str(&format!(
        "Upstream leak check: requests that reached the upstream without an injected bench credential or still carrying the client's `Authorization`: **{}** (of {}).\n\n",
        counters.leaks(),
        counters.requests()
    ));
    report.section(text);
    Ok(())
}

/// One fixed rate's table (direct, nginx, Aurora) and the latency targets judged on it.
fn fixed_rate_table(
    report: &mut Report,
    text: &mut String,
    rate_per_sec: u64,
    top_rate: u64,
    [direct, nginx, aurora]: [&[open_loop::Outcome]; 3],
    [nginx_cpu, aurora_cpu]: [&[PerRequest]; 2],
) {
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
        if q > 0.5 {
            let (n_pooled, a_pooled) = (pooled_added(nginx, direct, q), pooled_added(aurora, direct, q));
            table.row(vec![
                format!("added {label}, all rounds pooled"),
                "–".into(),
                signed_us(n_pooled),
                signed_us(a_pooled),
                "–".into(),
                ratio(a_pooled, n_pooled),
            ]);
        }
    }
    let achieved = |rounds: &[open_loop::Outcome]| {
        Spread::of(&rounds.iter().map(open_loop::Outcome::achieved_rate).collect::<Vec<_>>()).rate()
    };
    table.row(vec![
        "achieved rate".into(),
        achieved(direct),
        achieved(nginx),
        achieved(aurora),
        "–".into(),
        "–".into(),
    ]);
    let late = |rounds: &[open_loop::Outcome]| {
        let o = merged(rounds);
        format!("{} / {} / {}", o.late, o.rejected, o.errors)
    };
    table.row(vec![
        "late / non-2xx / errors (all rounds)".into(),
        late(direct),
        late(nginx),
        late(aurora),
        "–".into(),
        "–".into(),
    ]);
    for (figure, pick) in CPU_FIGURES {
        let per_round = |rounds: &[PerRequest]| Spread::of(&rounds.iter().map(pick).collect::<Vec<_>>());
        let (n, a) = (per_round(nginx_cpu), per_round(aurora_cpu));
        table.row(vec![
            format!("CPU per request, {figure}"),
            "–".into(),
            n.us_precise(),
            a.us_precise(),
            "–".into(),
            ratio(a.median, n.median),
        ]);
    }
    text.push_str(&format!("### {rate_per_sec} requests/s\n\n{}\n", table.render()));

    // Judged on every round's requests pooled: a tail percentile of one round rests on a few
    // dozen requests, and a single slow moment in one round moves it far.
    let (a99, n99) = (pooled_added(aurora, direct, 0.99), pooled_added(nginx, direct, 0.99));
    report.check(
        &format!("added p99 at {rate_per_sec}/s no worse than nginx"),
        format!("{} vs {}", us(a99), us(n99)),
        a99 <= n99,
    );
    if rate_per_sec == 1_000 {
        let (a999, n999) = (pooled_added(aurora, direct, 0.999), pooled_added(nginx, direct, 0.999));
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

/// Every round's outcome merged (for counts, not for percentiles).
pub(crate) fn merged(rounds: &[open_loop::Outcome]) -> open_loop::Outcome {
    let mut all = open_loop::Outcome::empty();
    for round in rounds {
        all.merge(round);
    }
    all
}

/// The gateway's latency at `q` minus the baseline's, each over all rounds pooled.
pub(crate) fn pooled_added(gateway: &[open_loop::Outcome], base: &[open_loop::Outcome], q: f64) -> f64 {
    merged(gateway).micros(q) - merged(base).micros(q)
}

/// The latency at `q`, per round.
pub(crate) fn quantile(rounds: &[open_loop::Outcome], q: f64) -> Spread {
    Spread::of(&rounds.iter().map(|o| o.micros(q)).collect::<Vec<_>>())
}

/// What `gateway` adds to `base` at `q`, round by round (the same round of each).
pub(crate) fn added(gateway: &[open_loop::Outcome], base: &[open_loop::Outcome], q: f64) -> Spread {
    Spread::of(&gateway.iter().zip(base).map(|(g, b)| g.micros(q) - b.micros(q)).collect::<Vec<_>>())
}
