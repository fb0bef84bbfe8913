//! The live capacity state of this control plane: which keys are limited (from the store),
//! each connected replica's demand (from its reports), budgets, the other control planes'
//! sums, and the task that grants leases.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use aurora_core::{KeyLimits, effective_limits, window_start};
use aurora_proto::PreEncoded;
use aurora_proto::v1::{DemandReport, SubscribeResponse, subscribe_response};
use tokio::sync::{Notify, watch};

use super::budget::Budget;
use super::demand::Demand;
use super::grant::{KeyGrant, PeerSum, grant};
use super::{CapacityConfig, Clock, KeyId};
use crate::store::key_limits::from_config;
use crate::store::{Store, UsageQuery};

/// The least time between two grants: a burst of refusals costs one grant, not one each.
const MIN_GRANT_GAP_MS: i64 = 50;
/// How often committed usage is re-read for budgets.
const USAGE_REFRESH_MS: i64 = 1_000;

/// The capacity board; one per control plane.
#[derive(Debug)]
pub struct Capacity {
    // A std mutex: held only to update or copy a few maps, never across an `.await`, and
    // never on any request path.
    state: Mutex<State>,
    wake: Notify,
    config: CapacityConfig,
    clock: Arc<dyn Clock>,
    /// Unix ms until which this control plane only listens (see `CapacityConfig::lease_learning`).
    learning_until_ms: i64,
}

#[derive(Debug, Default)]
struct State {
    /// The limits in force of every enabled limited key.
    keys: HashMap<KeyId, KeyLimits>,
    budgets: HashMap<KeyId, Budget>,
    replicas: HashMap<u64, Slot>,
    peers: HashMap<KeyId, PeerSum>,
    /// Data planes the other control planes serve (PostgreSQL).
    peer_replicas: u32,
    /// Something changed that every replica must hear at once (limits, a new replica).
    urgent: bool,
    /// Committed usage was read at (Unix ms).
    usage_read_ms: i64,
}

#[derive(Debug)]
struct Slot {
    demand: HashMap<KeyId, Demand>,
    sender: watch::Sender<Option<PreEncoded>>,
    last_sent_ms: i64,
    fresh: bool,
}

/// A replica's feed of leases; leaving the board when dropped (the stream ended).
#[derive(Debug)]
pub struct LeaseFeed {
    board: Arc<Capacity>,
    registration: u64,
    pub receiver: watch::Receiver<Option<PreEncoded>>,
}

impl Drop for LeaseFeed {
    fn drop(&mut self) {
        self.board.lock().replicas.remove(&self.registration);
    }
}

/// What `keys get` shows of a key's limits now, fleet-wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyCounts {
    pub window_start: i64,
    pub requests_admitted: u64,
    pub tokens_charged: u64,
    pub in_flight: u64,
    pub budget_used: u64,
    /// Unix seconds (real clock) when the budget period ends; 0: never.
    pub budget_period_end: i64,
    pub replicas: u32,
}

impl Capacity {
    pub fn new(config: CapacityConfig, clock: Arc<dyn Clock>) -> Arc<Self> {
        let learning_ms = i64::try_from(config.lease_learning.as_millis()).unwrap_or(i64::MAX);
        let learning_until_ms = clock.now_ms().saturating_add(learning_ms);
        Arc::new(Capacity {
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            config,
            clock,
            learning_until_ms,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a replica's stream; its first leases follow at once.
    pub fn join(self: &Arc<Self>, registration: u64) -> LeaseFeed {
        let (sender, receiver) = watch::channel(None);
        let slot = Slot { demand: HashMap::new(), sender, last_sent_ms: 0, fresh: true };
        self.lock().replicas.insert(registration, slot);
        self.wake.notify_one();
        LeaseFeed { board: self.clone(), registration, receiver }
    }

    /// Takes a replica's demand report. Keys that are not limited are ignored (the report's
    /// size is bounded by the stream's message limit; the board keeps only limited keys).
    pub fn report(&self, registration: u64, report: &DemandReport) {
        let now = self.clock.now_ms();
        let mut state = self.lock();
        let state = &mut *state;
        let Some(slot) = state.replicas.get_mut(&registration) else { return };
        let mut seen = HashSet::with_capacity(report.keys.len());
        let mut refused = false;
        for key in &report.keys {
            let Ok(id) = KeyId::try_from(key.key_id.as_slice()) else { continue };
            if !state.keys.contains_key(&id) || !seen.insert(id) {
                continue;
            }
            let demand = slot.demand.entry(id).or_default();
            // New refusals since this replica's last report: it wants more now.
            let before = if report.window_start == demand.window_start { demand.refused } else { 0 };
            refused |= key.refused_requests > before;
            demand.update(report.window_start, key, now);
            if key.tokens_since_last_report > 0 {
                if let Some(budget) = state.budgets.get_mut(&id) {
                    budget.report(key.tokens_since_last_report);
                }
            }
        }
        for (id, demand) in slot.demand.iter_mut() {
            if !seen.contains(id) {
                demand.absent(report.window_start);
            }
        }
        if refused {
            state.urgent = true;
            self.wake.notify_one();
        }
    }

    /// The limits in force changed (or were read for the first time).
    fn set_limits(&self, keys: HashMap<KeyId, KeyLimits>) {
        let mut state = self.lock();
        if state.keys == keys {
            return;
        }
        state.budgets.retain(|id, _| keys.get(id).is_some_and(|l| l.budget_tokens > 0));
        for slot in state.replicas.values_mut() {
            slot.demand.retain(|id, _| keys.contains_key(id));
        }
        state.keys = keys;
        state.urgent = true;
    }

    /// The counts of `key` now, fleet-wide, for `keys get`; `limits` are those in force.
    pub fn counts(&self, key: KeyId, limits: &KeyLimits) -> KeyCounts {
        let now = self.clock.now_ms();
        let window = window_start(now.div_euclid(1000));
        let state = self.lock();
        let peer = state.peers.get(&key).copied().unwrap_or_default();
        let mut counts = KeyCounts {
            window_start: window,
            requests_admitted: peer.admitted,
            tokens_charged: peer.tokens,
            in_flight: peer.in_flight,
            replicas: u32::try_from(state.replicas.len()).unwrap_or(u32::MAX).saturating_add(state.peer_replicas),
            ..KeyCounts::default()
        };
        for slot in state.replicas.values() {
            if let Some(demand) = slot.demand.get(&key) {
                counts.requests_admitted += demand.admitted_in(window);
                counts.tokens_charged += demand.tokens_in(window);
                counts.in_flight += u64::from(demand.in_flight);
            }
        }
        if limits.budget_tokens > 0 {
            let offset = self.config.budget_offset_secs();
            let period = limits.budget_period.bounds(now.div_euclid(1000) + offset);
            counts.budget_period_end = period.map_or(0, |(_, end)| end - offset);
            if let Some(budget) = state.budgets.get(&key).filter(|b| b.period == period) {
                counts.budget_used = budget.used(peer.uncommitted_budget);
            }
        }
        counts
    }

    /// Grants leases until the task is aborted: at every interval while some key is active,
    /// at once when woken (a replica joined, a refusal, new limits).
    pub async fn run(self: Arc<Self>, store: Arc<dyn Store>) {
        if !self.config.leases {
            tracing::warn!("capacity leases are off (AURORA_CAPACITY_LEASES=false): every data plane counts alone");
            return;
        }
        let mut head = store.watch_head();
        let mut tick = tokio::time::interval(self.config.lease_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut limits_read = false;
        let mut failing = false;
        let mut last_grant = 0i64;
        loop {
            if !limits_read {
                match read_limits(store.as_ref()).await {
                    Ok(keys) => {
                        self.set_limits(keys);
                        limits_read = true;
                        failing = false;
                    }
                    Err(err) if !failing => {
                        tracing::warn!(error = %err, "cannot read key limits; leases keep the last ones");
                        failing = true;
                    }
                    Err(_) => {}
                }
            }
            self.refresh_usage(store.as_ref()).await;
            let now = self.clock.now_ms();
            if now - last_grant >= MIN_GRANT_GAP_MS {
                self.grant_and_send(now);
                last_grant = now;
            }
            tokio::select! {
                _ = tick.tick() => {}
                () = self.wake.notified() => {
                    // Let a burst of wake-ups (refusals from several replicas) settle.
                    tokio::time::sleep(Duration::from_millis(u64::try_from(MIN_GRANT_GAP_MS).unwrap_or(50))).await;
                }
                changed = head.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    limits_read = false;
                }
            }
        }
    }

    /// Re-reads committed usage for the keys with a budget, about every second.
    async fn refresh_usage(&self, store: &dyn Store) {
        let now = self.clock.now_ms();
        let offset = self.config.budget_offset_secs();
        let starts: Vec<(i64, Vec<KeyId>)> = {
            let mut state = self.lock();
            let state = &mut *state;
            // Budgets roll over here (and in `grant_and_send`), whatever the store does.
            for (id, limits) in &state.keys {
                if limits.budget_tokens == 0 {
                    continue;
                }
                let period = limits.budget_period.bounds(now.div_euclid(1000) + offset);
                state.budgets.entry(*id).or_insert_with(|| Budget::new(period)).roll(period);
            }
            let unread = state.budgets.values().any(|b| !b.has_read());
            if state.budgets.is_empty() || (!unread && now - state.usage_read_ms < USAGE_REFRESH_MS) {
                return;
            }
            state.usage_read_ms = now;
            let mut starts: HashMap<i64, Vec<KeyId>> = HashMap::new();
            for (id, budget) in &state.budgets {
                // The period's start on the real clock; a budget that never renews counts all.
                let start = budget.period.map_or(0, |(start, _)| start - offset);
                starts.entry(start).or_default().push(*id);
            }
            starts.into_iter().collect()
        };
        for (start, ids) in starts {
            let query = UsageQuery {
                since_ms: start.saturating_mul(1000),
                until_ms: i64::MAX,
                by_key: true,
                limit: u32::MAX,
                ..UsageQuery::default()
            };
            let totals = match store.query_usage(&query).await {
                Ok(totals) => totals,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot read usage for budgets; reports alone count until it can");
                    return;
                }
            };
            let by_key: HashMap<String, u64> = totals
                .into_iter()
                .map(|t| (t.key_id, t.counts.input_tokens.saturating_add(t.counts.output_tokens)))
                .collect();
            let mut state = self.lock();
            for id in ids {
                let text = uuid::Uuid::from_bytes(id).to_string();
                if let Some(budget) = state.budgets.get_mut(&id) {
                    // Only if the period did not roll over while the store was read.
                    if budget.period.map_or(0, |(s, _)| s - offset) == start {
                        budget.committed(by_key.get(&text).copied().unwrap_or(0));
                    }
                }
            }
        }
    }

    /// Computes every replica's leases at `now` and sends those that are due.
    fn grant_and_send(&self, now: i64) {
        // Learning: the replicas keep what they hold (their last leases, then the fallback
        // share of the replica count those leases named) while their reports come in; an
        // empty `Leases` now would name too few replicas and widen every fallback share.
        if now < self.learning_until_ms {
            return;
        }
        let offset = self.config.budget_offset_secs();
        let mut state = self.lock();
        let state = &mut *state;
        let urgent = std::mem::take(&mut state.urgent);
        let mut keys: Vec<(KeyId, KeyGrant)> = Vec::with_capacity(state.keys.len());
        for (id, limits) in &state.keys {
            let peers = state.peers.get(id).copied().unwrap_or_else(|| super::peers::idle_only(state.peer_replicas));
            let budget = (limits.budget_tokens > 0).then(|| {
                let period = limits.budget_period.bounds(now.div_euclid(1000) + offset);
                let budget = state.budgets.entry(*id).or_insert_with(|| Budget::new(period));
                budget.roll(period);
                let end = period.map_or(0, |(_, end)| end - offset);
                (budget.remaining(limits.budget_tokens, peers.uncommitted_budget), end)
            });
            keys.push((*id, KeyGrant { limits: *limits, budget, peers }));
        }
        // Stable order: the same state always grants the same leases.
        keys.sort_unstable_by_key(|(id, _)| *id);
        let active =
            state.replicas.values().any(|slot| slot.demand.values().any(|d| d.weight(now) > 0 || d.in_flight > 0));
        let refresh_ms = i64::try_from(self.config.lease_ttl.as_millis() / 3).unwrap_or(1_000);
        let mut registrations: Vec<u64> = state.replicas.keys().copied().collect();
        registrations.sort_unstable();
        let demands: Vec<&HashMap<KeyId, Demand>> = registrations.iter().map(|r| &state.replicas[r].demand).collect();
        let fleet = u32::try_from(registrations.len()).unwrap_or(u32::MAX).saturating_add(state.peer_replicas);
        let ttl = i64::try_from(self.config.lease_ttl.as_millis()).unwrap_or(3_000);
        let leases = grant(now, &keys, &demands, ttl, fleet);
        for (registration, lease) in registrations.iter().zip(leases) {
            let Some(slot) = state.replicas.get_mut(registration) else { continue };
            // Without limited keys nothing is sent, except once after the last limited key went
            // (so no replica keeps a stale lease); a replica that never saw one gets nothing.
            let due = if keys.is_empty() {
                urgent && slot.last_sent_ms > 0
            } else {
                slot.fresh || urgent || active || now - slot.last_sent_ms >= refresh_ms
            };
            if !due {
                continue;
            }
            slot.fresh = false;
            slot.last_sent_ms = now;
            let message = subscribe_response::Message::Leases(lease);
            slot.sender.send_replace(Some(PreEncoded::encode(&SubscribeResponse { message: Some(message) })));
        }
    }

    /// This control plane's sums per key, for the other control planes (`peers.rs`).
    pub(crate) fn local_sums(&self) -> (u64, Vec<(KeyId, PeerSum, i64)>) {
        let now = self.clock.now_ms();
        let window = window_start(now.div_euclid(1000));
        let state = self.lock();
        let replicas = state.replicas.len() as u64;
        let mut sums = Vec::new();
        for id in state.keys.keys() {
            let mut sum = PeerSum::default();
            let mut busy = 0u64;
            for slot in state.replicas.values() {
                let Some(demand) = slot.demand.get(id) else { continue };
                sum.admitted += demand.admitted_in(window);
                sum.tokens += demand.tokens_in(window);
                sum.in_flight += u64::from(demand.in_flight);
                let weight = demand.weight(now);
                sum.weight += weight;
                busy += u64::from(weight > 0);
            }
            sum.idle = replicas - busy;
            sum.uncommitted_budget = state.budgets.get(id).map_or(0, Budget::uncommitted);
            if sum != (PeerSum { idle: replicas, ..PeerSum::default() }) {
                sums.push((*id, sum, window));
            }
        }
        (replicas, sums)
    }

    /// The other control planes' sums, as last read.
    pub(crate) fn set_peers(&self, replicas: u32, peers: HashMap<KeyId, PeerSum>) {
        let mut state = self.lock();
        state.peer_replicas = replicas;
        state.peers = peers;
    }
}

/// The limits in force of every enabled key that has any, from one consistent snapshot.
async fn read_limits(store: &dyn Store) -> Result<HashMap<KeyId, KeyLimits>, crate::store::StoreError> {
    let snapshot = store.load_snapshot().await?;
    let default = snapshot.settings.default_key_limits.as_ref().map(from_config);
    let mut keys = HashMap::new();
    for key in &snapshot.keys {
        let Ok(id) = KeyId::try_from(key.id.as_slice()) else { continue };
        let own = key.limits.as_ref().map(from_config);
        if let Some(limits) = effective_limits(own.as_ref(), default.as_ref()).filter(|_| key.enabled) {
            keys.insert(id, limits);
        }
    }
    Ok(keys)
}

#[cfg(test)]
#[path = "board_tests.rs"]
mod tests;
