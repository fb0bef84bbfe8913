//! What one data-plane replica asked of each limited key, from its demand reports: the
//! counts of the current window and a smoothed rate that weighs its share of what is left.

use aurora_proto::v1::KeyDemand;

/// A replica that sent no report for a key for this long shows no demand for it: replicas
/// report every 250 ms while a limited key sees traffic.
pub(crate) const IDLE_AFTER_MS: i64 = 1_000;

/// One replica's demand for one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Demand {
    /// The window the counts below belong to (Unix seconds of its start).
    pub window_start: i64,
    pub admitted: u64,
    pub refused: u64,
    pub tokens: u64,
    pub in_flight: u32,
    /// Smoothed requests asked for (admitted + refused) per second, times 1000.
    rate_milli: u64,
    /// When the last report naming the key came (Unix ms).
    last_report_ms: i64,
}

impl Demand {
    /// Takes a report's counts for the key (totals for `window_start` so far).
    pub(crate) fn update(&mut self, window_start: i64, report: &KeyDemand, now_ms: i64) {
        let total = report.admitted_requests.saturating_add(report.refused_requests);
        let before = if window_start == self.window_start { self.admitted.saturating_add(self.refused) } else { 0 };
        let asked = total.saturating_sub(before);
        let elapsed = (now_ms - self.last_report_ms).clamp(50, 5_000);
        let elapsed = u64::try_from(elapsed).unwrap_or(50);
        let instant = asked.saturating_mul(1_000_000) / elapsed;
        // Half the old rate, half the new: follows a move of traffic within a few reports.
        self.rate_milli = if self.last_report_ms == 0 { instant } else { self.rate_milli / 2 + instant / 2 };
        self.window_start = window_start;
        self.admitted = report.admitted_requests;
        self.refused = report.refused_requests;
        self.tokens = report.tokens;
        self.in_flight = report.in_flight;
        self.last_report_ms = now_ms;
    }

    /// A report without the key: nothing in this window, nothing in flight.
    pub(crate) fn absent(&mut self, window_start: i64) {
        if window_start != self.window_start {
            *self = Demand {
                window_start,
                rate_milli: self.rate_milli,
                last_report_ms: self.last_report_ms,
                ..Demand::default()
            };
        }
        self.in_flight = 0;
    }

    /// Requests admitted in `window` (0 when its counts are of another window).
    pub(crate) fn admitted_in(&self, window: i64) -> u64 {
        if self.window_start == window { self.admitted } else { 0 }
    }

    pub(crate) fn tokens_in(&self, window: i64) -> u64 {
        if self.window_start == window { self.tokens } else { 0 }
    }

    /// The weight of this replica's claim on what is left at `now_ms`: its recent rate, or
    /// the least weight when it only holds requests in flight; 0 when idle.
    pub(crate) fn weight(&self, now_ms: i64) -> u64 {
        if now_ms - self.last_report_ms > IDLE_AFTER_MS {
            return 0;
        }
        if self.rate_milli > 0 { self.rate_milli } else { u64::from(self.in_flight > 0) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(admitted: u64, refused: u64) -> KeyDemand {
        KeyDemand { admitted_requests: admitted, refused_requests: refused, ..Default::default() }
    }

    #[test]
    fn rates_follow_reports_and_fade_when_they_stop() {
        let mut demand = Demand::default();
        demand.update(60, &report(10, 0), 1_000);
        demand.update(60, &report(20, 5), 1_250);
        // 15 asked in 250 ms: 60/s, averaged with the first report's.
        assert!(demand.weight(1_250) > 30_000, "{demand:?}");
        assert_eq!(demand.admitted_in(60), 20);
        assert_eq!(demand.admitted_in(120), 0, "another window's counts are not this one's");
        assert_eq!(demand.weight(1_250 + IDLE_AFTER_MS + 1), 0, "no report for a second: idle");
        // Unchanged counts halve the rate.
        let before = demand.weight(1_500);
        demand.update(60, &report(20, 5), 1_500);
        assert!(demand.weight(1_500) <= before / 2 + 1);
    }

    #[test]
    fn a_new_window_starts_from_zero() {
        let mut demand = Demand::default();
        demand.update(60, &report(50, 0), 1_000);
        demand.update(120, &report(3, 0), 1_250);
        assert_eq!(demand.admitted_in(120), 3);
        demand.absent(180);
        assert_eq!((demand.admitted_in(180), demand.in_flight), (0, 0));
    }
}
