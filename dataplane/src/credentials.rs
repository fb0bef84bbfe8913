//! Credential sets on the request path: which upstream credential a request goes out with.
//!
//! A provider's [`CredentialSet`] is built once per snapshot (header values pre-built and
//! marked sensitive) and holds, per credential, an [`Arc<CredentialHealth>`] of atomics: the
//! counters, the cooldown end and the failing flag. Picking a credential reads those atomics
//! and bumps one counter: no lock, no allocation (the cost is walking a set of a few entries).
//!
//! - Selection is weighted over the enabled credentials that are not cooling down. The n-th
//!   pick of a set draws `n · φ mod 1` (a Weyl sequence, φ the golden ratio), which spreads
//!   picks over the weights evenly enough that any run of a thousand requests lands within a
//!   fraction of a percent of the weights, with one relaxed `fetch_add` per request.
//! - When every enabled credential is cooling down, the one whose cooldown ends first is used:
//!   the provider then answers with its own 429 and `retry-after`, which reach the client
//!   unchanged. Aurora never retries a request and never rewrites a body.
//! - A 429 puts the credential in cooldown (see [`throttle`] for the headers read); a 401 or
//!   403 marks it failing, which is shown to the operator but does not take it out of rotation
//!   (the operator decides; a credential that answers again clears the flag).
//!
//! Health survives new revisions: a snapshot that keeps a credential (same name, same secret)
//! adopts the previous revision's health ([`Snapshot::adopt_credential_health`]), so a config
//! change neither forgets a cooldown nor resets the Prometheus counters.
//!
//! [`Snapshot::adopt_credential_health`]: crate::snapshot::Snapshot::adopt_credential_health

pub mod metrics;
pub mod report;
pub mod throttle;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aurora_core::{AuthStyle, ProviderKind};
use http::{HeaderMap, HeaderValue, StatusCode};

/// The credential cannot be sent as an HTTP header value, or its name or weight is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the credential for provider {0} contains characters not allowed in an HTTP header")]
pub struct InvalidCredential(pub ProviderKind);

/// The longest cooldown any header can impose (a wrong clock or header must not park a
/// credential for a day).
pub const MAX_COOLDOWN: Duration = Duration::from_secs(3600);

/// Runtime health of one credential, shared by every snapshot that holds it.
#[derive(Debug, Default)]
pub struct CredentialHealth {
    pub(crate) requests: AtomicU64,
    pub(crate) throttled: AtomicU64,
    pub(crate) auth_failures: AtomicU64,
    /// Unix milliseconds; 0 or past: not cooling down.
    pub(crate) cooldown_until_ms: AtomicI64,
    pub(crate) failing: AtomicBool,
    /// 429s in a row without a provider-given reset: the exponent of the default cooldown.
    streak: AtomicU32,
    /// The cooldown end last sent to (or received from) the control plane, so each new one is
    /// reported at once and exactly those.
    pub(crate) reported_cooldown_ms: AtomicI64,
}

impl CredentialHealth {
    pub fn cooling_down(&self, now_ms: i64) -> bool {
        self.cooldown_until_ms.load(Ordering::Relaxed) > now_ms
    }

    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    /// Whether the credential is cooling down, reading the clock only if it ever has been.
    fn cooling_down_lazily(&self, now_ms: impl FnOnce() -> i64) -> bool {
        let until = self.cooldown_until_ms.load(Ordering::Relaxed);
        until != 0 && until > now_ms()
    }

    /// [`CredentialHealth::observe`], reading the clock only for a 429 (the only answer whose
    /// handling needs it): the request path calls this for every response.
    pub fn observe_lazily(&self, status: StatusCode, headers: &HeaderMap, now: impl FnOnce() -> SystemTime) {
        let now = if status == StatusCode::TOO_MANY_REQUESTS { now() } else { SystemTime::UNIX_EPOCH };
        self.observe(status, headers, now);
    }

    /// Records the upstream's answer to a request sent with this credential.
    pub fn observe(&self, status: StatusCode, headers: &HeaderMap, now: SystemTime) {
        match status.as_u16() {
            429 => {
                self.throttled.fetch_add(1, Ordering::Relaxed);
                let streak = self.streak.fetch_add(1, Ordering::Relaxed);
                let cooldown = throttle::cooldown(headers, now).unwrap_or_else(|| throttle::default_cooldown(streak));
                self.cool_down_until(unix_ms(now + cooldown.min(MAX_COOLDOWN)));
            }
            401 | 403 => {
                self.auth_failures.fetch_add(1, Ordering::Relaxed);
                self.failing.store(true, Ordering::Relaxed);
            }
            // Written only when they change: a store on every success would pull the cache
            // line away from the other workers, which read it on every pick.
            code if code < 400 => {
                if self.streak.load(Ordering::Relaxed) != 0 {
                    self.streak.store(0, Ordering::Relaxed);
                }
                if self.failing.load(Ordering::Relaxed) {
                    self.failing.store(false, Ordering::Relaxed);
                }
            }
            _ => {}
        }
    }

    /// Extends the cooldown to `until_ms` (never shortens it).
    pub fn cool_down_until(&self, until_ms: i64) {
        self.cooldown_until_ms.fetch_max(until_ms, Ordering::Relaxed);
    }
}

/// One credential of a provider, as the request path uses it.
pub struct UpstreamCredential {
    pub name: Arc<str>,
    pub weight: u32,
    pub enabled: bool,
    /// Ready to send, marked sensitive so hyper never logs it or adds it to an HPACK table.
    header: HeaderValue,
    /// The secret as configured, kept only to write the last-known-good cache.
    plain: Arc<str>,
    pub health: Arc<CredentialHealth>,
}

impl UpstreamCredential {
    pub fn new(
        kind: ProviderKind,
        name: &str,
        secret: &str,
        weight: u32,
        enabled: bool,
    ) -> Result<Self, InvalidCredential> {
        let header = match kind.auth_style() {
            AuthStyle::XApiKey => HeaderValue::from_str(secret),
            AuthStyle::Bearer => HeaderValue::from_str(&format!("Bearer {secret}")),
        };
        let mut header = header.map_err(|_| InvalidCredential(kind))?;
        header.set_sensitive(true);
        Ok(UpstreamCredential {
            name: name.into(),
            weight: weight.max(1),
            enabled,
            header,
            plain: secret.into(),
            health: Arc::default(),
        })
    }

    pub fn header(&self) -> &HeaderValue {
        &self.header
    }

    pub(crate) fn plain(&self) -> &str {
        &self.plain
    }
}

/// Hand-written: the secret must never reach a log line.
impl fmt::Debug for UpstreamCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamCredential")
            .field("name", &self.name)
            .field("weight", &self.weight)
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

/// A provider's credentials, in the control plane's order.
#[derive(Debug, Default)]
pub struct CredentialSet {
    credentials: Box<[UpstreamCredential]>,
    /// How many picks this set has made: the index into the Weyl sequence.
    picks: AtomicU64,
}

/// 2^64 / φ: adding it modulo 2^64 walks the golden-ratio Weyl sequence.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

impl CredentialSet {
    pub fn new(credentials: Vec<UpstreamCredential>) -> Self {
        CredentialSet { credentials: credentials.into_boxed_slice(), picks: AtomicU64::new(0) }
    }

    pub fn iter(&self) -> impl Iterator<Item = &UpstreamCredential> {
        self.credentials.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.credentials.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&UpstreamCredential> {
        self.credentials.iter().find(|c| &*c.name == name)
    }

    /// The credential for the next request at `now_ms` (Unix milliseconds), counted as sent;
    /// `None` when no credential is enabled.
    pub fn pick(&self, now_ms: i64) -> Option<&UpstreamCredential> {
        self.pick_lazily(|| now_ms)
    }

    /// [`CredentialSet::pick`], reading the clock (`now_ms`) at most once, and only if one of
    /// the credentials has ever cooled down: the request path picks for every request.
    pub fn pick_lazily(&self, now_ms: impl FnOnce() -> i64) -> Option<&UpstreamCredential> {
        let now = std::cell::OnceCell::new();
        let clock = std::cell::Cell::new(Some(now_ms));
        let now_ms = || *now.get_or_init(|| clock.take().map_or(0, |read| read()));
        let available = |c: &&UpstreamCredential| c.enabled && !c.health.cooling_down_lazily(now_ms);
        // One credential (most providers): nothing to draw.
        if let [only] = &*self.credentials {
            if available(&only) {
                only.health.requests.fetch_add(1, Ordering::Relaxed);
                return Some(only);
            }
        }
        let total: u64 = self.credentials.iter().filter(available).map(|c| u64::from(c.weight)).sum();
        let chosen = if total == 0 {
            // Everything is throttled: the earliest to recover carries the request, and the
            // provider's own 429 goes back to the client.
            self.credentials
                .iter()
                .filter(|c| c.enabled)
                .min_by_key(|c| c.health.cooldown_until_ms.load(Ordering::Relaxed))?
        } else {
            let draw = self.picks.fetch_add(1, Ordering::Relaxed).wrapping_mul(GOLDEN);
            // The draw scaled to [0, total): the high bits of a 64x64-bit product.
            let mut target = ((u128::from(draw) * u128::from(total)) >> 64) as u64;
            let mut chosen = None;
            for credential in self.credentials.iter().filter(available) {
                let weight = u64::from(credential.weight);
                if target < weight {
                    chosen = Some(credential);
                    break;
                }
                target -= weight;
            }
            chosen?
        };
        chosen.health.requests.fetch_add(1, Ordering::Relaxed);
        Some(chosen)
    }

    /// Takes over `previous`'s health for every credential both hold with the same name and
    /// secret: their cooldowns and counters carry over to the new revision.
    pub fn adopt_health(&mut self, previous: &CredentialSet) {
        for credential in self.credentials.iter_mut() {
            if let Some(old) = previous.get(&credential.name).filter(|old| old.header == credential.header) {
                credential.health = Arc::clone(&old.health);
            }
        }
    }
}

pub(crate) fn unix_ms(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(weights: &[(&str, u32, bool)]) -> CredentialSet {
        CredentialSet::new(
            weights
                .iter()
                .map(|(name, weight, enabled)| {
                    UpstreamCredential::new(ProviderKind::OpenAi, name, &format!("sk-{name}"), *weight, *enabled)
                        .unwrap()
                })
                .collect(),
        )
    }

    fn counts(set: &CredentialSet, picks: usize, now_ms: i64) -> Vec<usize> {
        let mut counts = vec![0; set.credentials.len()];
        for _ in 0..picks {
            let picked = set.pick(now_ms).unwrap();
            counts[set.credentials.iter().position(|c| Arc::ptr_eq(&c.health, &picked.health)).unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn picks_follow_the_weights_closely_and_skip_disabled() {
        let set = set(&[("a", 3, true), ("b", 1, true), ("off", 50, false), ("c", 6, true)]);
        let counts = counts(&set, 1000, 0);
        assert_eq!(counts[2], 0, "a disabled credential is never picked");
        for (got, want) in [(counts[0], 300), (counts[1], 100), (counts[3], 600)] {
            assert!(got.abs_diff(want) <= 5, "{counts:?}");
        }
        assert_eq!(set.credentials[0].health.requests.load(Ordering::Relaxed), counts[0] as u64);
    }

    #[test]
    fn cooling_down_credentials_are_skipped_until_their_cooldown_ends() {
        let set = set(&[("a", 1, true), ("b", 1, true)]);
        set.credentials[0].health.cool_down_until(2_000);
        assert_eq!(counts(&set, 100, 1_000), [0, 100]);
        let after = counts(&set, 100, 2_000);
        assert!(after[0].abs_diff(50) <= 2, "cooldown over at its end: {after:?}");
    }

    #[test]
    fn all_throttled_goes_out_with_the_earliest_to_recover() {
        let set = set(&[("a", 1, true), ("b", 1, true), ("c", 1, false)]);
        set.credentials[0].health.cool_down_until(5_000);
        set.credentials[1].health.cool_down_until(3_000);
        assert_eq!(&*set.pick(1_000).unwrap().name, "b");
        let none =
            CredentialSet::new(vec![UpstreamCredential::new(ProviderKind::OpenAi, "x", "sk", 1, false).unwrap()]);
        assert!(none.pick(0).is_none(), "nothing enabled: nothing to send");
    }

    #[test]
    fn a_429_cools_down_and_auth_failures_mark_failing() {
        let health = CredentialHealth::default();
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("2"));
        health.observe(StatusCode::TOO_MANY_REQUESTS, &headers, now);
        assert_eq!(health.cooldown_until_ms.load(Ordering::Relaxed), unix_ms(now) + 2_000);
        health.observe(StatusCode::UNAUTHORIZED, &HeaderMap::new(), now);
        assert!(health.is_failing());
        health.observe(StatusCode::OK, &HeaderMap::new(), now);
        assert!(!health.is_failing());
        assert_eq!((health.throttled.load(Ordering::Relaxed), health.auth_failures.load(Ordering::Relaxed)), (1, 1));
    }

    #[test]
    fn health_carries_over_only_for_the_same_name_and_secret() {
        let old = set(&[("a", 1, true), ("b", 1, true)]);
        old.credentials[0].health.cool_down_until(9);
        let mut new = CredentialSet::new(vec![
            UpstreamCredential::new(ProviderKind::OpenAi, "a", "sk-a", 2, true).unwrap(),
            UpstreamCredential::new(ProviderKind::OpenAi, "b", "sk-rotated", 1, true).unwrap(),
        ]);
        new.adopt_health(&old);
        assert!(Arc::ptr_eq(&new.credentials[0].health, &old.credentials[0].health));
        assert!(!Arc::ptr_eq(&new.credentials[1].health, &old.credentials[1].health));
        assert!(!format!("{new:?}").contains("sk-a"));
    }
}
