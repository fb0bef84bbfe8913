//! The data plane's side of fleet-wide credential health, on the config stream.
//!
//! [`Reporter`] looks at the current snapshot's credentials every [`CHECK_INTERVAL`]: a
//! cooldown not yet reported is sent at once (so the control plane can fan it out to every
//! other replica within a second), and counters that moved are sent at most every
//! [`REPORT_INTERVAL`]. [`apply_cooldowns`] applies the cooldowns other replicas reported. It
//! all runs on the subscription task, off the request path, and only reads and writes atomics.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use aurora_core::ProviderKind;
use aurora_proto::v1::{CredentialCooldowns, CredentialHealth, CredentialReport};
use tokio::time::Instant;

use super::unix_ms;
use crate::snapshot::Snapshot;
use crate::state::ConfigState;

pub const CHECK_INTERVAL: Duration = Duration::from_millis(100);
pub const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Decides when a report is due, and builds it.
#[derive(Debug)]
pub struct Reporter {
    last_sent: Option<Instant>,
    /// The counters' sum at the last report, to skip reports that would say nothing new.
    last_total: u64,
}

impl Default for Reporter {
    fn default() -> Self {
        Reporter::new()
    }
}

impl Reporter {
    pub fn new() -> Self {
        Reporter { last_sent: None, last_total: 0 }
    }

    /// Resolves with the next report that is due. Cancel-safe: it only sleeps and reads.
    pub async fn next(&mut self, state: &ConfigState) -> CredentialReport {
        loop {
            tokio::time::sleep(CHECK_INTERVAL).await;
            let Some(snapshot) = state.load_full() else { continue };
            if let Some(report) = self.due(&snapshot, Instant::now(), SystemTime::now()) {
                return report;
            }
        }
    }

    /// The report to send now, if one is due.
    pub fn due(&mut self, snapshot: &Snapshot, now: Instant, wall: SystemTime) -> Option<CredentialReport> {
        let now_ms = unix_ms(wall);
        let mut new_cooldown = false;
        let mut total = 0u64;
        for (_, credential) in credentials(snapshot) {
            let health = &credential.health;
            let until = health.cooldown_until_ms.load(Ordering::Relaxed);
            new_cooldown |= until > now_ms && until > health.reported_cooldown_ms.load(Ordering::Relaxed);
            total = total
                .wrapping_add(health.requests.load(Ordering::Relaxed))
                .wrapping_add(health.throttled.load(Ordering::Relaxed))
                .wrapping_add(health.auth_failures.load(Ordering::Relaxed));
        }
        let interval_passed = self.last_sent.is_none_or(|at| now.duration_since(at) >= REPORT_INTERVAL);
        let counters_moved = interval_passed && total != self.last_total;
        if !new_cooldown && !counters_moved {
            return None;
        }
        self.last_sent = Some(now);
        self.last_total = total;
        Some(report(snapshot))
    }
}

fn credentials(snapshot: &Snapshot) -> impl Iterator<Item = (ProviderKind, &super::UpstreamCredential)> {
    snapshot.providers().flat_map(|upstream| upstream.credentials().iter().map(move |c| (upstream.kind, c)))
}

/// Every credential's totals and cooldown; marks the cooldowns as reported.
pub fn report(snapshot: &Snapshot) -> CredentialReport {
    let credentials = credentials(snapshot)
        .map(|(kind, credential)| {
            let health = &credential.health;
            let until = health.cooldown_until_ms.load(Ordering::Relaxed);
            health.reported_cooldown_ms.fetch_max(until, Ordering::Relaxed);
            CredentialHealth {
                provider: kind.as_str().to_owned(),
                credential: credential.name.to_string(),
                requests: health.requests.load(Ordering::Relaxed),
                throttled: health.throttled.load(Ordering::Relaxed),
                auth_failures: health.auth_failures.load(Ordering::Relaxed),
                cooldown_until_ms: until,
                failing: health.is_failing(),
            }
        })
        .collect();
    CredentialReport { credentials }
}

/// Applies cooldowns other replicas ran into. Unknown providers or names (a revision this
/// replica has not applied yet) are skipped: the next 429 teaches it anyway. Cooldowns are
/// capped like local ones, and never echoed back as new.
pub fn apply_cooldowns(state: &ConfigState, cooldowns: &CredentialCooldowns, now: SystemTime) {
    let Some(snapshot) = state.load_full() else { return };
    let ceiling = unix_ms(now + super::MAX_COOLDOWN);
    for cooldown in &cooldowns.cooldowns {
        let Ok(kind) = cooldown.provider.parse::<ProviderKind>() else { continue };
        let Some(credential) = snapshot.provider(kind).and_then(|u| u.credentials().get(&cooldown.credential)) else {
            continue;
        };
        let until = cooldown.until_ms.min(ceiling);
        credential.health.reported_cooldown_ms.fetch_max(until, Ordering::Relaxed);
        credential.health.cool_down_until(until);
        tracing::debug!(provider = %kind, credential = %credential.name, until_ms = until, "credential cooling down (reported by another replica)");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use aurora_proto::v1::CredentialCooldown;

    use super::*;
    use crate::snapshot::{Settings, Upstream};

    fn snapshot() -> Snapshot {
        let kind = ProviderKind::Anthropic;
        let mut snapshot = Snapshot::new(1, Settings::default(), None);
        let upstream = Upstream::new(kind, true, kind.default_base_url_parsed(), None).unwrap().with_credentials(vec![
            super::super::UpstreamCredential::new(kind, "a", "sk-a", 1, true).unwrap(),
            super::super::UpstreamCredential::new(kind, "b", "sk-b", 1, true).unwrap(),
        ]);
        snapshot.set_provider(upstream);
        snapshot
    }

    #[test]
    fn a_new_cooldown_is_reported_at_once_and_counters_at_most_every_second() {
        let snapshot = snapshot();
        let mut reporter = Reporter::new();
        let start = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        assert!(reporter.due(&snapshot, start, wall).is_none(), "nothing happened yet");
        let a = snapshot.provider(ProviderKind::Anthropic).unwrap().credentials().get("a").unwrap();
        a.health.requests.fetch_add(1, Ordering::Relaxed);
        assert!(reporter.due(&snapshot, start, wall).is_some());
        a.health.requests.fetch_add(1, Ordering::Relaxed);
        assert!(reporter.due(&snapshot, start + Duration::from_millis(100), wall).is_none(), "within the second");
        a.health.cool_down_until(unix_ms(wall) + 2_000);
        let report = reporter.due(&snapshot, start + Duration::from_millis(200), wall).expect("cooldown: at once");
        let entry = report.credentials.iter().find(|c| c.credential == "a").unwrap();
        assert_eq!((entry.requests, entry.cooldown_until_ms), (2, unix_ms(wall) + 2_000));
        assert!(reporter.due(&snapshot, start + Duration::from_millis(300), wall).is_none(), "reported once");
    }

    #[test]
    fn cooldowns_from_other_replicas_apply_without_being_echoed() {
        let state = ConfigState::new();
        state.publish(Arc::new(snapshot()));
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let until = unix_ms(wall) + 2_000;
        let cooldowns = CredentialCooldowns {
            cooldowns: vec![
                CredentialCooldown { provider: "anthropic".into(), credential: "b".into(), until_ms: until },
                CredentialCooldown { provider: "nope".into(), credential: "b".into(), until_ms: until },
                CredentialCooldown { provider: "anthropic".into(), credential: "zz".into(), until_ms: until },
            ],
        };
        apply_cooldowns(&state, &cooldowns, wall);
        let snapshot = state.load_full().unwrap();
        let b = snapshot.provider(ProviderKind::Anthropic).unwrap().credentials().get("b").unwrap();
        assert!(b.health.cooling_down(unix_ms(wall)));
        assert!(Reporter::new().due(&snapshot, Instant::now(), wall).is_none(), "not reported back as new");
    }
}
