//! The board with an injected clock: leases at connect, rebalancing after refusals, budgets
//! from reports and committed usage, and period roll-over.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicI64, Ordering};

use aurora_core::BudgetPeriod;
use aurora_proto::v1::{KeyDemand, Leases};
use prost::Message;

use super::*;

#[derive(Debug)]
struct ManualClock(AtomicI64);

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

const KEY: KeyId = [9; 16];
/// 2026-12-02T00:00:00Z minus 30 s: close to a day's end.
const START: i64 = 1_796_256_000_000 - 30_000;

/// A configuration with no learning period: the board grants from its first instant.
fn learned() -> CapacityConfig {
    CapacityConfig { lease_learning: Duration::ZERO, ..CapacityConfig::default() }
}

/// A board that has learned already (see `learning_holds_leases_until_the_replicas_reported`).
fn board(limits: KeyLimits) -> (Arc<Capacity>, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock(AtomicI64::new(START)));
    let board = Capacity::new(learned(), clock.clone());
    board.set_limits(HashMap::from([(KEY, limits)]));
    (board, clock)
}

fn leases(feed: &mut LeaseFeed) -> Option<Leases> {
    let bytes = feed.receiver.borrow_and_update().clone()?;
    match SubscribeResponse::decode(bytes.0).unwrap().message {
        Some(subscribe_response::Message::Leases(leases)) => Some(leases),
        other => panic!("{other:?}"),
    }
}

fn demand(window: i64, admitted: u64, refused: u64, since: u64) -> DemandReport {
    DemandReport {
        window_start: window,
        keys: vec![KeyDemand {
            key_id: KEY.to_vec(),
            admitted_requests: admitted,
            refused_requests: refused,
            tokens_since_last_report: since,
            tokens: since,
            ..Default::default()
        }],
    }
}

#[test]
fn learning_holds_leases_until_the_replicas_reported() {
    // A control plane restarted mid-window: replica 1 reconnects at once, replica 2 a moment
    // later; both kept counting on their fallback share (10 of 30 each) meanwhile.
    let clock = Arc::new(ManualClock(AtomicI64::new(START)));
    let board = Capacity::new(CapacityConfig::default(), clock.clone());
    board.set_limits(HashMap::from([(KEY, KeyLimits { requests_per_minute: 30, ..Default::default() })]));
    let window = window_start(START / 1000);
    let mut a = board.join(1);
    board.report(1, &demand(window, 10, 3, 0));
    board.grant_and_send(START + 100);
    assert!(leases(&mut a).is_none(), "no lease while learning: it would give `a` what `b` used");

    let mut b = board.join(2);
    board.report(2, &demand(window, 10, 0, 0));
    let learned = START + i64::try_from(CapacityConfig::default().lease_learning.as_millis()).unwrap();
    clock.0.store(learned, Ordering::SeqCst);
    board.grant_and_send(learned);
    let (cap_a, cap_b) = (leases(&mut a).unwrap().keys[0].request_cap, leases(&mut b).unwrap().keys[0].request_cap);
    assert!(cap_a >= 10 && cap_b >= 10 && cap_a + cap_b <= 30, "what both admitted is counted: {cap_a} {cap_b}");
}

#[test]
fn replicas_get_leases_at_connect_and_shares_follow_refusals() {
    let (board, clock) = board(KeyLimits { requests_per_minute: 30, ..Default::default() });
    let (mut a, mut b) = (board.join(1), board.join(2));
    board.grant_and_send(START);
    let (first_a, first_b) = (leases(&mut a).unwrap(), leases(&mut b).unwrap());
    assert_eq!((first_a.keys[0].request_cap, first_b.keys[0].request_cap), (15, 15), "idle keys, even shares");
    assert_eq!(first_a.replicas, 2);

    // All the traffic lands on `a`: it admits its 15, refuses 5, and says so at once.
    let window = window_start(START / 1000);
    board.report(1, &demand(window, 15, 5, 0));
    assert!(board.lock().urgent, "a refusal asks for a grant now");
    clock.0.store(START + 100, Ordering::SeqCst);
    board.grant_and_send(START + 100);
    let (now_a, now_b) = (leases(&mut a).unwrap(), leases(&mut b).unwrap());
    let (cap_a, cap_b) = (now_a.keys[0].request_cap, now_b.keys[0].request_cap);
    assert!(cap_a >= 15 && cap_a + cap_b <= 30, "{cap_a} {cap_b}");
    assert!(cap_a >= 27, "the busy replica gets nearly all that is left: {cap_a}");
    assert_eq!(board.counts(KEY, &KeyLimits { requests_per_minute: 30, ..Default::default() }).requests_admitted, 15);

    // A replica that leaves is no holder any more.
    drop(b);
    board.grant_and_send(START + 200);
    assert_eq!(leases(&mut a).unwrap().replicas, 1);
}

#[test]
fn quiet_keys_are_refreshed_before_their_leases_expire() {
    let (board, _clock) = board(KeyLimits { max_concurrent: 2, ..Default::default() });
    let mut a = board.join(1);
    board.grant_and_send(START);
    assert!(leases(&mut a).is_some());
    board.grant_and_send(START + 250);
    assert!(!a.receiver.has_changed().unwrap(), "idle: no lease every tick");
    board.grant_and_send(START + 1_000);
    assert!(a.receiver.has_changed().unwrap(), "a third of the 3 s validity later");
}

#[test]
fn budgets_count_reports_and_committed_usage_once_and_renew_at_the_period_end() {
    let limits = KeyLimits { budget_tokens: 1_000, budget_period: BudgetPeriod::Day, ..Default::default() };
    let (board, clock) = board(limits);
    let mut a = board.join(1);
    let window = window_start(START / 1000);
    board.grant_and_send(START);
    let lease = leases(&mut a).unwrap();
    assert_eq!((lease.keys[0].budget_remaining, lease.keys[0].budget_period_end), (1_000, 1_796_256_000));

    board.report(1, &demand(window, 1, 0, 400));
    board.lock().budgets.get_mut(&KEY).unwrap().committed(0);
    board.report(1, &demand(window, 2, 0, 700));
    board.grant_and_send(START + 250);
    assert_eq!(leases(&mut a).unwrap().keys[0].budget_remaining, -100, "overspent: every replica refuses");
    let counts = board.counts(KEY, &limits);
    assert_eq!((counts.budget_used, counts.budget_period_end), (1_100, 1_796_256_000));
    // The usage report carrying those tokens is committed: nothing counts twice.
    board.lock().budgets.get_mut(&KEY).unwrap().committed(1_100);
    assert_eq!(board.counts(KEY, &limits).budget_used, 1_100);

    // Midnight UTC: the budget renews.
    let next_day = 1_796_256_000_000 + 1_000;
    clock.0.store(next_day, Ordering::SeqCst);
    board.grant_and_send(next_day);
    let lease = leases(&mut a).unwrap();
    assert_eq!((lease.keys[0].budget_remaining, lease.keys[0].budget_period_end), (1_000, 1_796_342_400));
}

#[test]
fn unlimited_keys_in_reports_are_ignored() {
    let (board, _clock) = board(KeyLimits { requests_per_minute: 5, ..Default::default() });
    let _a = board.join(1);
    let mut report = demand(0, 3, 0, 0);
    report.keys[0].key_id = vec![1; 16];
    report.keys.push(KeyDemand { key_id: vec![1; 3], ..Default::default() });
    board.report(1, &report);
    assert!(board.lock().replicas[&1].demand.is_empty());
}

#[tokio::test]
async fn the_lease_task_follows_the_store_and_grants_new_keys_at_once() {
    let db = crate::store::test_db::TestDb::sqlite();
    let store = db.open().await;
    let clock = Arc::new(ManualClock(AtomicI64::new(START)));
    let board = Capacity::new(learned(), clock.clone());
    let mut a = board.join(1);
    let task = tokio::spawn(board.clone().run(store.clone()));
    let (mut key, _) = crate::store::suite::new_key("limited");
    key.limits = Some(KeyLimits { budget_tokens: 16, budget_period: BudgetPeriod::Day, ..Default::default() });
    let (record, _) = store.create_key(key, &crate::store::suite::actor()).await.unwrap();
    let id = *record.id.as_bytes();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        // The clock moves on as the task runs (it grants at most every 50 ms of it).
        clock.0.fetch_add(100, Ordering::SeqCst);
        let _ = tokio::time::timeout(Duration::from_millis(100), a.receiver.changed()).await;
        if let Some(leases) = leases(&mut a) {
            if let Some(lease) = leases.keys.iter().find(|k| k.key_id == id) {
                assert_eq!((lease.budget_remaining, lease.budget_period_end), (16, 1_796_256_000));
                break;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no lease for the new key");
    }
    task.abort();
}

#[test]
fn without_limited_keys_no_leases_are_sent_but_the_last_one_is_withdrawn() {
    let clock = Arc::new(ManualClock(AtomicI64::new(START)));
    let board = Capacity::new(learned(), clock);
    let mut a = board.join(1);
    board.grant_and_send(START);
    assert!(leases(&mut a).is_none(), "no limited key: the stream carries no leases at all");
    board.set_limits(HashMap::from([(KEY, KeyLimits { requests_per_minute: 5, ..Default::default() })]));
    board.grant_and_send(START + 100);
    assert_eq!(leases(&mut a).unwrap().keys.len(), 1);
    board.set_limits(HashMap::new());
    board.grant_and_send(START + 200);
    assert!(leases(&mut a).unwrap().keys.is_empty(), "the last limited key went: its lease is withdrawn");
    board.grant_and_send(START + 5_000);
    assert!(!a.receiver.has_changed().unwrap());
}
