//! Server-sent events through each target: time to the first event and each event's delivery
//! delay, per round, and what each gateway adds to direct's same round.

use std::collections::BTreeMap;

use crate::load::{Target, sse};
use crate::report::{Report, Table, signed_us};
use crate::rotation::rotated;
use crate::spread::Spread;

/// Every target's streams, one outcome per round.
#[derive(Debug)]
pub(crate) struct Streams {
    rounds: usize,
    per_round: usize,
    plan: sse::Plan,
    outcomes: BTreeMap<&'static str, Vec<sse::Outcome>>,
}

/// Opens `plan.streams` streams per target, spread over `rounds` interleaved rounds.
pub(crate) async fn rounds(targets: &[&Target], plan: sse::Plan, rounds: usize) -> anyhow::Result<Streams> {
    let per_round = sse::Plan { streams: plan.streams.div_ceil(rounds).max(1), ..plan };
    let mut streams = Streams { rounds, per_round: per_round.streams, plan, outcomes: BTreeMap::new() };
    for round in 0..rounds {
        for target in rotated(targets, round) {
            let outcome = sse::run(target, per_round).await?;
            streams.outcomes.entry(target.name).or_default().push(outcome);
        }
    }
    for (name, rounds) in &streams.outcomes {
        let broken: u64 = rounds.iter().map(|o| o.broken).sum();
        anyhow::ensure!(
            rounds.iter().all(|o| !o.first_event.is_empty()) && broken == 0,
            "broken SSE streams through {name}"
        );
    }
    Ok(streams)
}

impl Streams {
    /// The table and the target's check.
    pub(crate) fn report(&self, report: &mut Report, text: &mut String) {
        let none = Vec::new();
        let get = |name: &str| self.outcomes.get(name).unwrap_or(&none);
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
            "broken streams (all rounds)".into(),
            broken(d).to_string(),
            broken(n).to_string(),
            broken(a).to_string(),
            "–".into(),
            "–".into(),
        ]);
        text.push_str(&format!(
            "### Server-sent events\n\n{} streams per target of {} events {:?} apart, in {} interleaved round(s); median of the rounds (range). *Event delivery delay* is the time from the upstream writing an event to the client having read it whole (the upstream stamps each event; both run in the harness's process and share a clock), so the added delay is exactly what the gateway adds to every inter-event gap. *Added* is the gateway's round minus direct's same round.\n\n{}\n",
            self.per_round * self.rounds,
            self.plan.events,
            self.plan.gap,
            self.rounds,
            table.render()
        ));
        let pick_added = |label: &str, pl: &str| {
            aurora_added.iter().find(|(l, p, _)| *l == label && *p == pl).map_or(0.0, |(_, _, v)| *v)
        };
        let (ttfe_added, gap_added) =
            (pick_added("time to first event", "p99"), pick_added("event delivery delay", "p99"));
        let (ttfe_p50, gap_p50) = (pick_added("time to first event", "p50"), pick_added("event delivery delay", "p50"));
        report.check(
            "SSE adds < 1 ms to first event and to each gap (p99)",
            format!(
                "p99: first event {}, each event {} (p50: {}, {})",
                signed_us(ttfe_added),
                signed_us(gap_added),
                signed_us(ttfe_p50),
                signed_us(gap_p50)
            ),
            ttfe_added < 1_000.0 && gap_added < 1_000.0 && broken(a) == 0,
        );
    }
}
