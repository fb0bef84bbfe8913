//! The saturation tables: maximum throughput by load generator, and the CPU time each gateway
//! spent per request in those runs (proxied and invalid-token), with the targets they judge.

use super::Generators;
use super::saturate::Runs;
use crate::cpu::PerRequest;
use crate::load::saturation::Plan;
use crate::report::{Report, Table, ratio};
use crate::spread::Spread;

/// Reads one figure from a [`PerRequest`].
pub(crate) type Pick = fn(&PerRequest) -> f64;

/// The CPU figures of a run: what each row reads from a [`PerRequest`].
pub(crate) const CPU_FIGURES: [(&str, Pick); 3] =
    [("user", |c| c.user), ("system", |c| c.system), ("user + system", PerRequest::total)];

/// How each generator runs, for the section's text.
fn describe(generators: &Generators, plan: Plan) -> String {
    let mut text = format!(
        "wrk with 1 thread{}, {} connections, {:?} per run",
        if generators.oha().is_some() {
            " and oha with its defaults (a tokio worker thread per core, as a new user would run it)"
        } else {
            ""
        },
        plan.connections,
        plan.duration
    );
    if let Some(why) = &generators.missing {
        text.push_str(&format!(" (**oha rows skipped**: {why})"));
    }
    text
}

/// The maximum-throughput table and its target.
pub(crate) fn max_throughput(
    report: &mut Report,
    text: &mut String,
    generators: &Generators,
    runs: &Runs,
    plan: Plan,
    rounds: usize,
) {
    let mut table = Table::new(&["figure", "direct", "nginx", "aurora", "aurora ÷ direct", "aurora ÷ nginx"]);
    let mut ratios = Vec::new();
    for generator in generators.names() {
        let (d, n, a) = (runs.rate(generator, "direct"), runs.rate(generator, "nginx"), runs.rate(generator, "aurora"));
        table.row(vec![
            format!("max throughput, {generator}"),
            d.rate(),
            n.rate(),
            a.rate(),
            ratio(a.median, d.median),
            ratio(a.median, n.median),
        ]);
        ratios.push((generator, a.median, n.median));
    }
    for generator in generators.names() {
        let failures = |name: &str| {
            let (non_2xx, errors) = runs.failures(generator, name);
            (non_2xx + errors).to_string()
        };
        table.row(vec![
            format!("non-2xx or socket errors, {generator} (all rounds)"),
            failures("direct"),
            failures("nginx"),
            failures("aurora"),
            "–".into(),
            "–".into(),
        ]);
    }
    text.push_str(&format!(
        "### Maximum throughput\n\n{}; {rounds} round(s), each running every generator against direct, nginx and Aurora in turn (each round starting one further along); median of the rounds (range). The generator, the upstream and the gateway share the machine's 2 cores, so these are the throughput of the whole loop on this machine, comparable with each other, not a gateway's capacity on dedicated cores; a generator that takes more CPU leaves less to the gateway, so the ratio to nginx depends on the generator, and the target is judged on each.\n\n{}\n",
        describe(generators, plan),
        table.render()
    ));
    check_ratios(report, "max throughput ≥ 1.0x nginx", &ratios, generators);
}

/// The target's check on each generator's aurora ÷ nginx ratio: met only when every one is.
pub(crate) fn check_ratios(report: &mut Report, target: &str, ratios: &[(&str, f64, f64)], generators: &Generators) {
    let mut figure = ratios
        .iter()
        .map(|(generator, a, n)| format!("{} ({generator})", ratio(*a, *n)))
        .collect::<Vec<_>>()
        .join(", ");
    if generators.missing.is_some() {
        figure.push_str("; oha not run");
    }
    report.check(target, figure, !ratios.is_empty() && ratios.iter().all(|(_, a, n)| a >= n));
}

/// The CPU-per-request table (proxied and invalid-token runs) and the proxied figure's target.
pub(crate) fn cpu(report: &mut Report, text: &mut String, generators: &Generators, proxied: &Runs, rejected: &Runs) {
    let mut table = Table::new(&[
        "requests",
        "generator",
        "CPU per request",
        "nginx",
        "aurora",
        "aurora ÷ nginx",
        "aurora − nginx",
    ]);
    for (label, runs) in [("proxied", proxied), ("invalid token", rejected)] {
        for generator in generators.names() {
            for (figure, pick) in CPU_FIGURES {
                let (n, a) = (runs.cpu(generator, "nginx", pick), runs.cpu(generator, "aurora", pick));
                table.row(vec![
                    label.into(),
                    generator.into(),
                    figure.into(),
                    n.us_precise(),
                    a.us_precise(),
                    ratio(a.median, n.median),
                    runs.cpu_difference(generator, "aurora", "nginx", pick).signed_us_precise(),
                ]);
            }
        }
    }
    text.push_str(&format!(
        "### CPU time per request at saturation\n\nThe gateway's own CPU time in each saturation run above, with valid keys and with the invalid token: user and system time read from `/proc/PID/stat` before and after the run (all of Aurora's threads; nginx's master and workers, summed), divided by the responses the generator completed in the run; µs per request, median of the rounds (range); *aurora − nginx* is taken round by round. The kernel counts in 10 ms ticks, and a run of seconds at tens of thousands of requests per second spends hundreds of them, so each figure is good to a few percent. Unlike the instruction counts below it includes the kernel (the loopback TCP work done in the gateway's own system calls), so it shows whether a gap is in user space or in system calls; like every wall-clock figure, it moves with contention on the shared cores.\n\n{}\n",
        table.render()
    ));
    let totals: Vec<(&str, Spread, Spread)> = generators
        .names()
        .map(|g| (g, proxied.cpu(g, "aurora", PerRequest::total), proxied.cpu(g, "nginx", PerRequest::total)))
        .collect();
    let mut figure = totals
        .iter()
        .map(|(g, a, n)| format!("{g} {:.1} vs {:.1} µs ({})", a.median, n.median, ratio(a.median, n.median)))
        .collect::<Vec<_>>()
        .join(", ");
    if generators.missing.is_some() {
        figure.push_str("; oha not run");
    }
    let measured = !totals.is_empty() && totals.iter().all(|(_, a, n)| a.median > 0.0 && n.median > 0.0);
    report.check(
        "CPU time (user + system) per proxied request at saturation ≤ nginx's",
        if measured { figure } else { "not measured (no CPU time readable in /proc)".into() },
        measured && totals.iter().all(|(_, a, n)| a.median <= n.median),
    );
}
