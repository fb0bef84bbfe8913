//! What sharing a limited key's counters between the serving workers costs.
//!
//! Every request of a limited key takes a concurrency slot, counts itself in the key's minute
//! window, holds an `Arc` of the key's state, is charged its tokens three ways and frees its
//! slot: nine read-modify-writes on the key's state, which both workers write when both serve
//! the key. callgrind cannot see what moving those cache lines between cores costs (it runs one
//! thread at a time), and the key-limits row cannot tell it from the rest of what a limited key
//! adds. So this measures it alone, with the data plane's own admission ([`Limiters::admit`]):
//! two threads admit, charge and release requests of one shared key, against the same with a
//! key each, back to back (the worst case) and with some work between admission and release.
//! The report puts the latter beside a limited request's own CPU time at saturation: a request
//! whose own work spaces its operations further apart than here pays less for sharing.

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::Instant;

use aurora_core::LimitFallback;
use aurora_dataplane::limits::{KeyLimiter, Limiters};
use aurora_dataplane::snapshot::KeyId;

use crate::aurora::EVERY_LIMIT;
use crate::spread::Spread;

/// A fixed instant: every request falls in one window, and no clock read is timed.
const NOW_MS: i64 = 1_796_143_262_000;

/// Iterations of [`busy`] between a request's admission and its release, and after it.
const SPACED_WORK: u64 = 1_000;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Scale {
    pub(crate) rounds: usize,
    /// Requests per thread and round.
    pub(crate) requests: u64,
}

/// Nanoseconds per request that sharing one key adds, round by round.
#[derive(Debug)]
pub(crate) struct Contention {
    pub(crate) back_to_back: Spread,
    pub(crate) spaced: Spread,
    /// What [`SPACED_WORK`] takes per request without any limits, in nanoseconds.
    pub(crate) spacing_ns: Spread,
}

impl Contention {
    /// The report's note under the feature table; `request_cpu_us` is what a limited key's
    /// request cost the data plane at saturation in the key-limits row, for scale.
    pub(crate) fn describe(&self, scale: Scale, request_cpu_us: Option<f64>) -> String {
        let ns = |spread: &Spread| format!("{:+.0} ns ({:+.0}–{:+.0})", spread.median, spread.min, spread.max);
        let request = request_cpu_us
            .map(|us| {
                format!(
                    " (a limited key's request took {us:.1} µs of the data plane's CPU at saturation in the row above)"
                )
            })
            .unwrap_or_default();
        format!(
            "Key limits' shared counters, measured alone (`bench/src/features/contention.rs`): two threads admitting, charging and releasing {} requests each through the data plane's own admission, one key shared against a key each, median of {} round(s) (range): sharing adds **{}** per request back to back, and **{}** with {:.0} ns of other work per request between them{request}.",
            scale.requests,
            scale.rounds,
            ns(&self.back_to_back),
            ns(&self.spaced),
            self.spacing_ns.median,
        )
    }
}

/// Runs on two threads of its own: call it from a blocking context.
pub(crate) fn measure(scale: Scale) -> anyhow::Result<Contention> {
    let (mut back_to_back, mut spaced, mut spacing) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..scale.rounds {
        for (work, added) in [(0, &mut back_to_back), (SPACED_WORK, &mut spaced)] {
            let shared = per_request_ns(true, work, scale.requests)?;
            let separate = per_request_ns(false, work, scale.requests)?;
            added.push(shared - separate);
        }
        spacing.push(bare_ns(SPACED_WORK, scale.requests));
    }
    Ok(Contention {
        back_to_back: Spread::of(&back_to_back),
        spaced: Spread::of(&spaced),
        spacing_ns: Spread::of(&spacing),
    })
}

/// Wall-clock nanoseconds per request of two threads serving `requests` each, of one key or
/// of a key each.
fn per_request_ns(shared: bool, work: u64, requests: u64) -> anyhow::Result<f64> {
    let limiters = Arc::new(Limiters::default());
    let keys = [limiters.state(KeyId([1; 16])), limiters.state(KeyId([if shared { 1 } else { 2 }; 16]))];
    let start = Arc::new(Barrier::new(3));
    let threads: Vec<_> = keys
        .into_iter()
        .map(|key| {
            let (limiters, start) = (limiters.clone(), start.clone());
            std::thread::spawn(move || serve(&limiters, &key, work, requests, &start))
        })
        .collect();
    start.wait();
    let began = Instant::now();
    for thread in threads {
        thread.join().map_err(|_| anyhow::anyhow!("a contention thread panicked"))??;
    }
    Ok(began.elapsed().as_nanos() as f64 / requests as f64)
}

fn serve(limiters: &Limiters, key: &Arc<KeyLimiter>, work: u64, requests: u64, start: &Barrier) -> anyhow::Result<()> {
    start.wait();
    for _ in 0..requests {
        let admission = limiters
            .admit(key, &EVERY_LIMIT, LimitFallback::Share, NOW_MS)
            .map_err(|refusal| anyhow::anyhow!("a key far below its limits was refused: {:?}", refusal.reason))?;
        black_box(busy(work));
        admission.charge(20, NOW_MS);
        drop(admission);
        black_box(busy(work));
    }
    Ok(())
}

/// What the spacing alone takes per request, in nanoseconds.
fn bare_ns(work: u64, requests: u64) -> f64 {
    let began = Instant::now();
    for _ in 0..requests {
        black_box(busy(work));
        black_box(busy(work));
    }
    began.elapsed().as_nanos() as f64 / requests as f64
}

/// `n` steps of arithmetic the compiler cannot skip, touching no shared memory.
fn busy(n: u64) -> u64 {
    (0..n).fold(1u64, |x, i| black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_ways_serve_every_request_and_free_every_slot() {
        // A refusal of the benchmark's limited key would fail the measurement, and this.
        for shared in [true, false] {
            per_request_ns(shared, 1, 50).unwrap();
        }
        let limiters = Limiters::default();
        let key = limiters.state(KeyId([3; 16]));
        serve(&limiters, &key, 1, 10, &Barrier::new(1)).unwrap();
        assert_eq!(key.in_flight(), 0, "every admission was dropped");
    }
}
