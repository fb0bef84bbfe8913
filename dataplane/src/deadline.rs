//! Request-path deadlines (the upstream's response-header timeout, a response body's idle
//! timeout), checked by one sweep per serving worker instead of a timer per request.
//!
//! Every proxied request waits for its upstream's headers under a deadline that nearly never
//! passes. A tokio timer costs a registration in the runtime's timer wheel (under the wheel's
//! lock) when the request starts waiting and a removal when the answer comes: about 1,000
//! instructions per request. Here a waiting request takes a slot in its worker's [`Book`] (a
//! slab entry and its task's waker), and one task per worker sweeps the book every [`TICK`]
//! while anything is in it, waking whatever has run past its deadline. A deadline is therefore
//! noticed at most one tick late, and never early; the sweep stops when the book empties, so an
//! idle worker has no timer at all.
//!
//! Each serving worker has its own book (see `Proxy::for_worker`), so the lock is only ever
//! taken by that worker's thread and its sweep (the same thread); it is a `Mutex` rather than a
//! thread-local so that a future polled on another thread (tests, a multi-threaded runtime)
//! stays correct, only less cheap.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Instant;

/// How often a worker's deadlines are checked while any is pending: the most a deadline can be
/// overrun by.
pub const TICK: Duration = Duration::from_millis(50);

/// A worker's pending deadlines.
#[derive(Debug, Clone, Default)]
pub struct Deadlines {
    book: Arc<Mutex<Book>>,
}

#[derive(Debug, Default)]
struct Book {
    slots: Vec<Option<Entry>>,
    /// Indexes of empty slots, reused first.
    free: Vec<usize>,
    live: usize,
    /// A sweep task is running for this book.
    sweeping: bool,
}

#[derive(Debug)]
struct Entry {
    deadline: Instant,
    waker: Waker,
    passed: bool,
}

/// The deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Passed;

impl Deadlines {
    /// `future`, failing with [`Passed`] if it is still pending once `deadline` has passed.
    pub fn bound<F: Future>(&self, deadline: Instant, future: F) -> Bounded<F> {
        Bounded { future, timer: Timer::new(self.clone(), deadline) }
    }

    fn lock(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One deadline in a book, registered only once its owner actually waits; its slot is freed
/// when it is dropped.
#[derive(Debug)]
pub struct Timer {
    deadlines: Deadlines,
    deadline: Instant,
    slot: Option<usize>,
}

impl Timer {
    pub fn new(deadlines: Deadlines, deadline: Instant) -> Self {
        Timer { deadlines, deadline, slot: None }
    }

    /// Moves the deadline (later or earlier); a deadline that had passed is pending again.
    pub fn reset(&mut self, deadline: Instant) {
        self.deadline = deadline;
        if let Some(slot) = self.slot {
            if let Some(entry) = self.deadlines.lock().slots.get_mut(slot).and_then(Option::as_mut) {
                entry.deadline = deadline;
                entry.passed = false;
            }
        }
    }

    /// Ready once the deadline has passed (noticed by the sweep); registers the calling task
    /// to be woken then.
    pub fn poll_passed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut book = self.deadlines.lock();
        match self.slot {
            None => {
                self.slot =
                    Some(book.insert(Entry { deadline: self.deadline, waker: cx.waker().clone(), passed: false }));
                if !book.sweeping {
                    book.sweeping = true;
                    tokio::spawn(sweep(self.deadlines.clone()));
                }
                Poll::Pending
            }
            Some(slot) => match book.slots.get_mut(slot).and_then(Option::as_mut) {
                Some(entry) if entry.passed => Poll::Ready(()),
                Some(entry) => {
                    if !entry.waker.will_wake(cx.waker()) {
                        entry.waker = cx.waker().clone();
                    }
                    Poll::Pending
                }
                None => Poll::Ready(()),
            },
        }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.deadlines.lock().remove(slot);
        }
    }
}

impl Book {
    fn insert(&mut self, entry: Entry) -> usize {
        self.live += 1;
        match self.free.pop() {
            Some(slot) => {
                self.slots[slot] = Some(entry);
                slot
            }
            None => {
                self.slots.push(Some(entry));
                self.slots.len() - 1
            }
        }
    }

    fn remove(&mut self, slot: usize) {
        if let Some(entry) = self.slots.get_mut(slot).and_then(Option::take) {
            drop(entry);
            self.live -= 1;
            self.free.push(slot);
        }
    }
}

/// Wakes every entry whose deadline has passed, every tick, until the book is empty.
async fn sweep(deadlines: Deadlines) {
    let mut tick = tokio::time::interval_at(Instant::now() + TICK, TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut book = deadlines.lock();
        if book.live == 0 {
            book.sweeping = false;
            // Nothing pending: give the slots back rather than keep a burst's worth forever.
            book.slots = Vec::new();
            book.free = Vec::new();
            return;
        }
        let now = Instant::now();
        for entry in book.slots.iter_mut().flatten() {
            if !entry.passed && entry.deadline <= now {
                entry.passed = true;
                entry.waker.wake_by_ref();
            }
        }
    }
}

pin_project! {
    /// A future under a deadline (see [`Deadlines::bound`]).
    #[derive(Debug)]
    pub struct Bounded<F> {
        #[pin]
        future: F,
        timer: Timer,
    }
}

impl<F: Future> Future for Bounded<F> {
    type Output = Result<F::Output, Passed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(output) = this.future.poll(cx) {
            return Poll::Ready(Ok(output));
        }
        this.timer.poll_passed(cx).map(|()| Err(Passed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_future_that_answers_in_time_registers_once_and_leaves_nothing_behind() {
        let deadlines = Deadlines::default();
        let start = Instant::now();
        let answered =
            deadlines.bound(start + Duration::from_secs(10), tokio::time::sleep(Duration::from_secs(3))).await;
        assert_eq!(answered, Ok(()));
        let book = deadlines.lock();
        assert_eq!(book.live, 0, "the slot is freed with the future");
    }

    #[tokio::test(start_paused = true)]
    async fn a_passed_deadline_is_noticed_within_a_tick() {
        let deadlines = Deadlines::default();
        let start = Instant::now();
        let outcome = deadlines.bound(start + Duration::from_secs(1), std::future::pending::<()>()).await;
        assert_eq!(outcome, Err(Passed));
        let late = start.elapsed() - Duration::from_secs(1);
        assert!(late <= TICK, "{late:?} late");
    }

    #[tokio::test(start_paused = true)]
    async fn the_sweep_stops_when_the_book_empties_and_starts_again() {
        let deadlines = Deadlines::default();
        let start = Instant::now();
        assert_eq!(deadlines.bound(start + TICK, std::future::pending::<()>()).await, Err(Passed));
        tokio::time::sleep(TICK * 3).await;
        assert!(!deadlines.lock().sweeping, "idle: no sweep running");
        let again = Instant::now();
        assert_eq!(deadlines.bound(again + TICK * 2, std::future::pending::<()>()).await, Err(Passed));
        assert!(again.elapsed() <= TICK * 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reset_moves_a_pending_deadline() {
        let deadlines = Deadlines::default();
        let start = Instant::now();
        let mut timer = Timer::new(deadlines.clone(), start + Duration::from_secs(1));
        let waited = std::future::poll_fn(|cx| {
            if start.elapsed() < Duration::from_millis(500) {
                // First poll registers; then move the deadline out before it passes.
                let polled = timer.poll_passed(cx);
                timer.reset(start + Duration::from_secs(5));
                return polled;
            }
            timer.poll_passed(cx)
        });
        waited.await;
        assert!(start.elapsed() >= Duration::from_secs(5), "{:?}", start.elapsed());
        assert!(start.elapsed() <= Duration::from_secs(5) + TICK);
    }
}
