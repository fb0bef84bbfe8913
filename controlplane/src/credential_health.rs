//! Fleet-wide health of provider credentials: what every data plane reports, summed, and the
//! cooldowns that must reach every data plane within a second.
//!
//! Each data plane sends a [`CredentialReport`] on its config stream about once a second and at
//! once when a credential starts cooling down after a 429. The board keeps each replica's
//! latest report (totals since that replica started) and sums them per credential for
//! `GetProvider`. A cooldown that ends later than any this board has already fanned out is
//! published at once on a broadcast channel every config-stream session forwards to its
//! replica as `CredentialCooldowns`. Cooldowns are runtime state: they never become a revision.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aurora_core::{ProviderKind, validate_credential_name};
use aurora_proto::v1::{CredentialCooldown, CredentialCooldowns, CredentialHealth, CredentialReport};
use tokio::sync::broadcast;

/// The most entries one report may carry: every provider's full set.
pub const MAX_REPORT_ENTRIES: usize = ProviderKind::ALL.len() * crate::store::MAX_CREDENTIALS;

/// A cooldown further ahead than this is cut to it: a replica's clock or a provider's header
/// must not take a credential out of rotation for a day.
pub const MAX_COOLDOWN: Duration = Duration::from_secs(3600);

type CredentialKey = (ProviderKind, String);

/// One credential's summed health as replicas share it through the store.
pub type CredentialRow = (ProviderKind, String, FleetCredentialHealth);

/// One credential's health summed over the replicas that reported on it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetCredentialHealth {
    pub requests: u64,
    pub throttled: u64,
    pub auth_failures: u64,
    /// The latest cooldown end any replica reported, if it is still ahead.
    pub cooldown_until: Option<SystemTime>,
    pub failing: bool,
    pub replicas: u32,
}

#[derive(Debug)]
pub struct CredentialBoard {
    // A std mutex: held only to copy a few counters, never across an `.await`, never on a data
    // plane's request path.
    state: Mutex<State>,
    cooldowns: broadcast::Sender<CredentialCooldowns>,
}

#[derive(Debug, Default)]
struct State {
    /// By stream (registration id): its node's latest report.
    reports: HashMap<u64, HashMap<CredentialKey, CredentialHealth>>,
    /// The latest cooldown end fanned out per credential, so each is sent once.
    announced: HashMap<CredentialKey, i64>,
    /// What the other control-plane replicas on this store publish, summed per credential.
    remote: HashMap<CredentialKey, FleetCredentialHealth>,
}

/// A report that cannot be kept; the stream is refused with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error("a credential report holds at most {MAX_REPORT_ENTRIES} entries")]
    TooLarge,
    #[error("credential report: unknown provider")]
    UnknownProvider,
    #[error("credential report: invalid credential name: {0}")]
    Name(aurora_core::CredentialNameError),
}

impl Default for CredentialBoard {
    fn default() -> Self {
        CredentialBoard { state: Mutex::default(), cooldowns: broadcast::channel(64).0 }
    }
}

impl CredentialBoard {
    /// Every cooldown announced from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<CredentialCooldowns> {
        self.cooldowns.subscribe()
    }

    /// Keeps `report` as stream `stream`'s latest and fans out the cooldowns it starts.
    pub fn report(&self, stream: u64, report: &CredentialReport, now: SystemTime) -> Result<(), ReportError> {
        if report.credentials.len() > MAX_REPORT_ENTRIES {
            return Err(ReportError::TooLarge);
        }
        let now_ms = unix_ms(now);
        let ceiling = now_ms.saturating_add(i64::try_from(MAX_COOLDOWN.as_millis()).unwrap_or(i64::MAX));
        let mut entries = HashMap::with_capacity(report.credentials.len());
        for health in &report.credentials {
            let kind: ProviderKind = health.provider.parse().map_err(|_| ReportError::UnknownProvider)?;
            validate_credential_name(&health.credential).map_err(ReportError::Name)?;
            let mut health = health.clone();
            health.cooldown_until_ms = health.cooldown_until_ms.min(ceiling);
            entries.insert((kind, health.credential.clone()), health);
        }
        let fresh = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let fresh = state.announce(entries.iter().map(|(key, h)| (key, h.cooldown_until_ms)), now_ms);
            state.reports.insert(stream, entries);
            fresh
        };
        self.fan_out(fresh);
        Ok(())
    }

    /// Every local stream's report summed per credential: what this replica shares.
    pub fn local_rows(&self, now: SystemTime) -> Vec<CredentialRow> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut keys: Vec<&CredentialKey> = state.reports.values().flat_map(HashMap::keys).collect();
        keys.sort();
        keys.dedup();
        keys.into_iter().map(|key| (key.0, key.1.clone(), state.local_health(key, now))).collect()
    }

    /// Replaces what the other replicas share, and fans out the cooldowns they started.
    pub fn set_remote(&self, rows: Vec<CredentialRow>, now: SystemTime) {
        let now_ms = unix_ms(now);
        let fresh = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let mut remote: HashMap<CredentialKey, FleetCredentialHealth> = HashMap::new();
            for (kind, name, health) in rows {
                let sum = remote.entry((kind, name)).or_default();
                sum.add(&health);
            }
            let cooldowns: Vec<(CredentialKey, i64)> =
                remote.iter().filter_map(|(key, h)| Some((key.clone(), unix_ms(h.cooldown_until?)))).collect();
            let fresh = state.announce(cooldowns.iter().map(|(key, until)| (key, *until)), now_ms);
            state.remote = remote;
            fresh
        };
        self.fan_out(fresh);
    }

    fn fan_out(&self, fresh: Vec<CredentialCooldown>) {
        if !fresh.is_empty() {
            for cooldown in &fresh {
                tracing::info!(provider = %cooldown.provider, credential = %cooldown.credential, until_ms = cooldown.until_ms, "credential cooling down fleet-wide");
            }
            // No receiver (no other stream) is fine: nobody needs telling.
            let _ = self.cooldowns.send(CredentialCooldowns { cooldowns: fresh });
        }
    }

    /// Forgets a stream's report once it ends: its counters leave the sums.
    pub fn forget(&self, stream: u64) {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).reports.remove(&stream);
    }

    /// One credential's health over every reporting replica.
    pub fn health(&self, kind: ProviderKind, name: &str, now: SystemTime) -> FleetCredentialHealth {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (kind, name.to_owned());
        let mut sum = state.local_health(&key, now);
        if let Some(remote) = state.remote.get(&key) {
            sum.add(remote);
        }
        if sum.cooldown_until.is_some_and(|until| until <= now) {
            sum.cooldown_until = None;
        }
        sum
    }
}

impl FleetCredentialHealth {
    fn add(&mut self, other: &FleetCredentialHealth) {
        self.requests = self.requests.saturating_add(other.requests);
        self.throttled = self.throttled.saturating_add(other.throttled);
        self.auth_failures = self.auth_failures.saturating_add(other.auth_failures);
        self.failing |= other.failing;
        self.replicas = self.replicas.saturating_add(other.replicas);
        self.cooldown_until = self.cooldown_until.max(other.cooldown_until);
    }
}

impl State {
    /// The local streams' reports on `key`, summed.
    fn local_health(&self, key: &CredentialKey, now: SystemTime) -> FleetCredentialHealth {
        let mut sum = FleetCredentialHealth::default();
        let mut until = 0i64;
        for report in self.reports.values() {
            let Some(health) = report.get(key) else { continue };
            sum.requests = sum.requests.saturating_add(health.requests);
            sum.throttled = sum.throttled.saturating_add(health.throttled);
            sum.auth_failures = sum.auth_failures.saturating_add(health.auth_failures);
            sum.failing |= health.failing;
            sum.replicas += 1;
            until = until.max(health.cooldown_until_ms);
        }
        if until > unix_ms(now) {
            sum.cooldown_until = Some(UNIX_EPOCH + Duration::from_millis(u64::try_from(until).unwrap_or(0)));
        }
        sum
    }

    /// The cooldowns among `cooldowns` that end later than any announced for their credential;
    /// records them as announced.
    fn announce<'k>(
        &mut self,
        cooldowns: impl Iterator<Item = (&'k CredentialKey, i64)>,
        now_ms: i64,
    ) -> Vec<CredentialCooldown> {
        let mut fresh = Vec::new();
        for (key, until) in cooldowns {
            if until <= now_ms {
                continue;
            }
            let announced = self.announced.entry(key.clone()).or_insert(0);
            if until > *announced {
                *announced = until;
                fresh.push(CredentialCooldown {
                    provider: key.0.as_str().to_owned(),
                    credential: key.1.clone(),
                    until_ms: until,
                });
            }
        }
        self.announced.retain(|_, until| *until > now_ms);
        fresh
    }
}

pub(crate) fn unix_ms(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(credential: &str, requests: u64, cooldown_until_ms: i64) -> CredentialHealth {
        CredentialHealth {
            provider: "anthropic".into(),
            credential: credential.into(),
            requests,
            throttled: 1,
            auth_failures: 0,
            cooldown_until_ms,
            failing: false,
        }
    }

    #[test]
    fn sums_replicas_and_fans_each_cooldown_out_once() {
        let board = CredentialBoard::default();
        let mut cooldowns = board.subscribe();
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let until = unix_ms(now) + 2_000;
        let report = CredentialReport { credentials: vec![health("a", 3, until), health("b", 4, 0)] };
        board.report(1, &report, now).unwrap();
        let sent = cooldowns.try_recv().unwrap();
        assert_eq!(sent.cooldowns.len(), 1);
        assert_eq!((sent.cooldowns[0].credential.as_str(), sent.cooldowns[0].until_ms), ("a", until));

        // Another replica reporting the same cooldown (it learnt it from us) starts nothing new.
        board.report(2, &CredentialReport { credentials: vec![health("a", 5, until)] }, now).unwrap();
        assert!(cooldowns.try_recv().is_err());
        let a = board.health(ProviderKind::Anthropic, "a", now);
        assert_eq!((a.requests, a.throttled, a.replicas), (8, 2, 2));
        assert!(a.cooldown_until.is_some());
        assert!(board.health(ProviderKind::Anthropic, "a", now + Duration::from_secs(3)).cooldown_until.is_none());

        board.forget(1);
        assert_eq!(board.health(ProviderKind::Anthropic, "a", now).requests, 5);
    }

    #[test]
    fn other_control_planes_add_to_the_sums_and_their_cooldowns_fan_out_here() {
        let board = CredentialBoard::default();
        let mut cooldowns = board.subscribe();
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        board.report(1, &CredentialReport { credentials: vec![health("a", 3, 0)] }, now).unwrap();
        let local = board.local_rows(now);
        assert_eq!(local.len(), 1);
        assert_eq!((local[0].2.requests, local[0].2.replicas), (3, 1));

        let until = now + Duration::from_secs(2);
        let remote = FleetCredentialHealth {
            requests: 4,
            cooldown_until: Some(until),
            replicas: 2,
            ..FleetCredentialHealth::default()
        };
        board.set_remote(vec![(ProviderKind::Anthropic, "a".into(), remote.clone())], now);
        let sent = cooldowns.try_recv().unwrap();
        assert_eq!(sent.cooldowns[0].until_ms, unix_ms(until));
        let a = board.health(ProviderKind::Anthropic, "a", now);
        assert_eq!((a.requests, a.replicas, a.cooldown_until), (7, 3, Some(until)));
        // Read again a moment later: nothing new to fan out.
        board.set_remote(vec![(ProviderKind::Anthropic, "a".into(), remote)], now);
        assert!(cooldowns.try_recv().is_err());
        assert_eq!(board.local_rows(now)[0].2.requests, 3, "only local streams are shared");
    }

    #[test]
    fn refuses_what_it_cannot_keep_and_caps_cooldowns() {
        let board = CredentialBoard::default();
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let mut bad = health("a b", 1, 0);
        assert!(matches!(
            board.report(1, &CredentialReport { credentials: vec![bad.clone()] }, now),
            Err(ReportError::Name(_))
        ));
        bad.credential = "a".into();
        bad.provider = "nope".into();
        assert_eq!(
            board.report(1, &CredentialReport { credentials: vec![bad] }, now),
            Err(ReportError::UnknownProvider)
        );
        board.report(1, &CredentialReport { credentials: vec![health("a", 1, i64::MAX)] }, now).unwrap();
        let until = board.health(ProviderKind::Anthropic, "a", now).cooldown_until.unwrap();
        assert_eq!(until, now + MAX_COOLDOWN);
    }
}
