//! Reconnect delays: exponential backoff with full jitter.
//!
//! Full jitter (a uniform delay between zero and the exponential cap) spreads a fleet that lost
//! its control plane at the same instant, so the replicas do not reconnect in lockstep.

use std::time::Duration;

use rand::Rng;

const BASE: Duration = Duration::from_millis(25);
const CAP: Duration = Duration::from_secs(3);

/// The delay before reconnect attempt `attempt` (0 after a healthy session).
pub(super) fn full_jitter(attempt: u32) -> Duration {
    let ceiling = BASE.saturating_mul(2u32.saturating_pow(attempt.min(16))).min(CAP);
    rand::rng().random_range(Duration::ZERO..=ceiling)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_up_to_the_cap() {
        for attempt in 0..40 {
            let ceiling = BASE.saturating_mul(2u32.saturating_pow(attempt.min(16))).min(CAP);
            for _ in 0..50 {
                assert!(full_jitter(attempt) <= ceiling);
            }
        }
        assert!((0..200).map(|_| full_jitter(30)).any(|d| d > Duration::from_secs(1)), "reaches towards the cap");
        assert!((0..200).map(|_| full_jitter(0)).all(|d| d <= BASE));
    }
}
