//! Saturation rounds: every generator against every target, interleaved, with the CPU time
//! each gateway spent per request.
//!
//! A round runs each load generator (wrk, then oha when available) against each target in
//! turn, so a burst of background load hits every generator and target alike. Around each run
//! the gateway's CPU time is read from `/proc` ([`crate::cpu`]) and divided by the requests
//! the generator completed: user and kernel time per request, for each run, so the figures
//! have their range over rounds like the throughput beside them.

use std::collections::BTreeMap;
use std::path::Path;

use super::memory::Memories;
use crate::cpu::{self, PerRequest};
use crate::load::Target;
use crate::load::saturation::{Generator, Outcome, Plan};
use crate::rotation::rotated;
use crate::spread::Spread;

/// A target under load and the process whose CPU time counts for it (none for direct).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Subject<'a> {
    pub(crate) target: &'a Target,
    pub(crate) pid: Option<u32>,
}

/// One run's figures.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    pub(crate) outcome: Outcome,
    pub(crate) cpu: Option<PerRequest>,
}

/// Every run of a set of rounds, by generator and target name, one sample per round.
#[derive(Debug, Default)]
pub(crate) struct Runs {
    samples: BTreeMap<(&'static str, &'static str), Vec<Sample>>,
}

impl Runs {
    fn of(&self, generator: &str, target: &str) -> &[Sample] {
        self.samples
            .iter()
            .find(|((g, t), _)| *g == generator && *t == target)
            .map(|(_, samples)| samples.as_slice())
            .unwrap_or_default()
    }

    /// Responses per second, over the rounds.
    pub(crate) fn rate(&self, generator: &str, target: &str) -> Spread {
        Spread::of(&self.of(generator, target).iter().map(|s| s.outcome.requests_per_sec).collect::<Vec<_>>())
    }

    /// CPU time per request (µs) as `pick` reads it, over the rounds that measured it.
    pub(crate) fn cpu(&self, generator: &str, target: &str, pick: fn(&PerRequest) -> f64) -> Spread {
        Spread::of(&self.of(generator, target).iter().filter_map(|s| s.cpu.as_ref().map(pick)).collect::<Vec<_>>())
    }

    /// `a`'s CPU per request minus `b`'s, round by round (the same round of each).
    pub(crate) fn cpu_difference(&self, generator: &str, a: &str, b: &str, pick: fn(&PerRequest) -> f64) -> Spread {
        let differences: Vec<f64> = self
            .of(generator, a)
            .iter()
            .zip(self.of(generator, b))
            .filter_map(|(a, b)| Some(pick(a.cpu.as_ref()?) - pick(b.cpu.as_ref()?)))
            .collect();
        Spread::of(&differences)
    }

    /// Responses of 400 or more, and errors, over every round.
    pub(crate) fn failures(&self, generator: &str, target: &str) -> (u64, u64) {
        self.of(generator, target).iter().fold((0, 0), |(n, e), s| (n + s.outcome.non_2xx, e + s.outcome.errors))
    }

    /// Successful responses (below 400) over every round.
    pub(crate) fn successes(&self, generator: &str, target: &str) -> u64 {
        self.of(generator, target).iter().map(|s| s.outcome.requests.saturating_sub(s.outcome.non_2xx)).sum()
    }
}

/// Runs `rounds` rounds of `plan`: in each, every generator against every subject. With
/// `memory`, each round's resident-memory peak is kept.
pub(crate) async fn rounds(
    generators: &[Generator],
    subjects: &[Subject<'_>],
    plan: Plan,
    rounds: usize,
    scratch: &Path,
    mut memory: Option<&mut Memories>,
) -> anyhow::Result<Runs> {
    let mut runs = Runs::default();
    for round in 0..rounds {
        if let Some(memory) = memory.as_deref() {
            memory.start_round();
        }
        for generator in generators {
            for subject in rotated(subjects, round) {
                let before = subject.pid.and_then(cpu::of_tree);
                let outcome = generator.run(subject.target, plan, scratch).await?;
                let after = subject.pid.and_then(cpu::of_tree);
                let cpu = before.zip(after).and_then(|(b, a)| PerRequest::between(b, a, outcome.requests));
                runs.samples.entry((generator.name(), subject.target.name)).or_default().push(Sample { outcome, cpu });
            }
        }
        if let Some(memory) = memory.as_deref_mut() {
            memory.end_round();
        }
    }
    Ok(runs)
}
