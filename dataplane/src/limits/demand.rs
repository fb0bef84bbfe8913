//! Demand reports: what this replica's limited keys asked for in the current window, sent on
//! the config stream so the control plane can size each replica's leases.
//!
//! [`DemandReporter`] runs on the subscription task, never on the request path. It looks every
//! [`URGENT_INTERVAL`]: a report goes out at most every [`REPORT_INTERVAL`] while some limited
//! key's counts moved, and at once (but at most every [`URGENT_INTERVAL`]) after a refusal for
//! want of capacity, so the control plane can grow this replica's share within moments.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use aurora_proto::v1::{DemandReport, KeyDemand};
use tokio::time::Instant;

use super::Limiters;
use super::window;

pub(super) const REPORT_INTERVAL: Duration = Duration::from_millis(250);
pub(super) const URGENT_INTERVAL: Duration = Duration::from_millis(50);

/// The report to send at `now_ms`: every key active in the window, if any key's counts moved
/// since the last report (or `force`). Taking it resets each key's tokens-since-last-report.
pub(super) fn report(limiters: &Limiters, now_ms: i64, force: bool) -> Option<DemandReport> {
    let minute = window::minute(now_ms);
    let states = limiters.states();
    let mut keys = Vec::new();
    let mut moved = force;
    for key in states.values() {
        let admitted = key.requests.get(minute);
        let refused = key.refused.get(minute);
        let tokens = key.tokens.get(minute);
        let in_flight = key.in_flight();
        let since = key.tokens_since_report.load(Ordering::Relaxed);
        if admitted == 0 && refused == 0 && tokens == 0 && in_flight == 0 && since == 0 {
            continue;
        }
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (minute, admitted, refused, tokens, in_flight).hash(&mut hasher);
        let fingerprint = hasher.finish();
        moved |= since > 0 || key.last_reported.load(Ordering::Relaxed) != fingerprint;
        keys.push((
            key,
            fingerprint,
            KeyDemand {
                key_id: key.id.0.to_vec(),
                admitted_requests: admitted,
                refused_requests: refused,
                tokens,
                in_flight,
                tokens_since_last_report: 0,
            },
        ));
    }
    if !moved || keys.is_empty() {
        return None;
    }
    let keys = keys
        .into_iter()
        .map(|(key, fingerprint, mut demand)| {
            key.last_reported.store(fingerprint, Ordering::Relaxed);
            demand.tokens_since_last_report = key.tokens_since_report.swap(0, Ordering::Relaxed);
            demand
        })
        .collect();
    Some(DemandReport { window_start: window::window_start(now_ms), keys })
}

/// Decides when a demand report is due, and builds it.
#[derive(Debug)]
pub struct DemandReporter {
    limiters: Arc<Limiters>,
    last_sent: Option<Instant>,
    last_prune_minute: i64,
    /// A new session's control plane knows nothing of this window yet (it may be another
    /// replica, or one that restarted): the first report names every active key.
    fresh: bool,
}

impl DemandReporter {
    /// One per config-stream session.
    pub fn new(limiters: Arc<Limiters>) -> Self {
        DemandReporter { limiters, last_sent: None, last_prune_minute: 0, fresh: true }
    }

    /// Resolves with the next report that is due. Cancel-safe: it only sleeps and reads.
    pub async fn next(&mut self) -> DemandReport {
        loop {
            tokio::time::sleep(URGENT_INTERVAL).await;
            if let Some(report) = self.due(Instant::now()) {
                return report;
            }
        }
    }

    /// The report to send now, if one is due.
    pub fn due(&mut self, now: Instant) -> Option<DemandReport> {
        let now_ms = self.limiters.now_ms();
        let minute = window::minute(now_ms);
        if minute != self.last_prune_minute {
            self.last_prune_minute = minute;
            self.limiters.prune(now_ms);
        }
        let since = self.last_sent.map(|sent| now.saturating_duration_since(sent));
        let urgent = self.limiters.urgent.load(Ordering::Acquire);
        let regular_due = since.is_none_or(|since| since >= REPORT_INTERVAL);
        let urgent_due = urgent && since.is_none_or(|since| since >= URGENT_INTERVAL);
        if !regular_due && !urgent_due {
            return None;
        }
        if urgent {
            self.limiters.urgent.store(false, Ordering::Release);
        }
        let report = report(&self.limiters, now_ms, urgent || self.fresh)?;
        self.last_sent = Some(now);
        self.fresh = false;
        Some(report)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicI64;

    use super::*;
    use crate::limits::KeyLimits;
    use crate::limits::config::Fallback;
    use crate::snapshot::KeyId;

    const NOW_MS: i64 = 1_796_143_262_000;

    fn limiters() -> (Arc<Limiters>, Arc<AtomicI64>) {
        let now = Arc::new(AtomicI64::new(NOW_MS));
        let clock = now.clone();
        (Arc::new(Limiters::new(Arc::new(move || clock.load(Ordering::Relaxed)))), now)
    }

    #[test]
    fn reports_go_out_while_counts_move_and_at_once_after_a_refusal() {
        let (limiters, now_ms) = limiters();
        let mut reporter = DemandReporter::new(limiters.clone());
        let start = Instant::now();
        assert_eq!(reporter.due(start), None, "no limited key saw traffic");

        let key = limiters.state(KeyId([5; 16]));
        let limits = KeyLimits { requests_per_minute: 1, ..Default::default() };
        let admitted = limiters.admit(&key, &limits, Fallback::Share, NOW_MS).unwrap();
        admitted.charge(40, NOW_MS);
        let report = reporter.due(start).unwrap();
        assert_eq!(report.window_start, NOW_MS / 60_000 * 60);
        let demand = &report.keys[0];
        assert_eq!(demand.key_id, vec![5; 16]);
        assert_eq!((demand.admitted_requests, demand.refused_requests, demand.tokens, demand.in_flight), (1, 0, 40, 1));
        assert_eq!(demand.tokens_since_last_report, 40);
        // Nothing moved: nothing to say, even once the interval has passed.
        assert_eq!(reporter.due(start + REPORT_INTERVAL), None);

        // A refusal is reported at once, not after the regular interval.
        assert!(limiters.admit(&key, &limits, Fallback::Share, NOW_MS).is_err());
        assert_eq!(reporter.due(start + Duration::from_millis(10)), None, "rate-limited to one per 50 ms");
        let report = reporter.due(start + URGENT_INTERVAL).unwrap();
        assert_eq!((report.keys[0].refused_requests, report.keys[0].tokens_since_last_report), (1, 0));

        // A new session (a control plane that may know nothing) hears of every active key at
        // once, though nothing moved.
        let mut next_session = DemandReporter::new(limiters.clone());
        assert_eq!(next_session.due(start).unwrap().keys.len(), 1);
        assert_eq!(next_session.due(start + REPORT_INTERVAL), None);

        // The slot is freed and the window rolls over: the key has nothing left to report.
        drop(admitted);
        now_ms.store(NOW_MS + 60_000, Ordering::Relaxed);
        assert_eq!(reporter.due(start + Duration::from_secs(1)), None);
        assert_eq!(limiters.states().len(), 1);
        // Two idle minutes later, the unused state is dropped.
        now_ms.store(NOW_MS + 180_000, Ordering::Relaxed);
        drop(key);
        assert_eq!(reporter.due(start + Duration::from_secs(2)), None);
        assert_eq!(limiters.states().len(), 0);
    }
}
