//! What a connection has in flight, so that one idle for too long can be closed.
//!
//! hyper closes neither an HTTP/2 connection without streams nor (before its header read
//! timeout) an idle HTTP/1.1 one, so the connection counts its requests itself: each counts
//! from the moment hyper hands it to the service until its response body has been sent or
//! dropped, which for HTTP/2 is the life of its stream. A long LLM stream keeps its
//! connection busy however quiet it is.
//!
//! The watch is lazy: starting and ending a request only update two atomics (the count and
//! when the last request ended), and the watcher's one timer is re-armed only when it fires,
//! from those two. A timer per request (armed when the count fell to zero, cancelled when the
//! next began) and the wake-up of the connection's task on every change cost more than the
//! rest of the connection's bookkeeping together.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::Instant;

/// A connection's request counter, and the watcher that tells when it has stayed at zero.
pub(super) fn track() -> (Streams, Idle) {
    let activity = Arc::new(Activity { open: AtomicUsize::new(0), ended: AtomicU64::new(0), since: Instant::now() });
    (Streams(activity.clone()), Idle(activity))
}

/// What the connection has in flight, shared by its service and its watcher.
#[derive(Debug)]
struct Activity {
    open: AtomicUsize,
    /// When the last request ended (or the connection opened), in nanoseconds after `since`.
    ended: AtomicU64,
    since: Instant,
}

impl Activity {
    fn ended_at(&self) -> Instant {
        self.since + Duration::from_nanos(self.ended.load(Ordering::Relaxed))
    }
}

/// Opens a count for each request; shared by the connection's service.
#[derive(Debug, Clone)]
pub(super) struct Streams(Arc<Activity>);

impl Streams {
    pub(super) fn open(&self) -> Open {
        self.0.open.fetch_add(1, Ordering::Relaxed);
        Open(self.0.clone())
    }
}

/// One request in flight; dropping it (the request future or response body gone) ends it.
#[derive(Debug)]
pub(super) struct Open(Arc<Activity>);

impl Open {
    /// Keeps the request counted until `body` is done.
    pub(super) fn attach<B>(self, body: B) -> Tracked<B> {
        Tracked { body, _open: self }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        let activity = &self.0;
        let elapsed = Instant::now().saturating_duration_since(activity.since);
        activity.ended.store(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
        // Release: a watcher that sees the count drop also sees when it did.
        activity.open.fetch_sub(1, Ordering::Release);
    }
}

pin_project! {
    /// A response body that holds its request's count.
    #[derive(Debug)]
    pub(super) struct Tracked<B> {
        #[pin]
        body: B,
        _open: Open,
    }
}

impl<B: Body> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Watches a connection's request count.
#[derive(Debug)]
pub(super) struct Idle(Arc<Activity>);

impl Idle {
    /// Resolves once no request has been in flight for `quiet` without interruption (counted
    /// from when the last one ended, or from now if none has yet).
    pub(super) async fn wait(&mut self, quiet: Duration) {
        let activity = &self.0;
        let mut deadline = activity.ended_at().max(Instant::now()) + quiet;
        loop {
            tokio::time::sleep_until(deadline).await;
            let now = Instant::now();
            if activity.open.load(Ordering::Acquire) > 0 {
                // Busy: look again in `quiet`; the request ending re-arms nothing by itself.
                deadline = now + quiet;
                continue;
            }
            let idle_until = activity.ended_at() + quiet;
            if idle_until <= now {
                return;
            }
            deadline = idle_until;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUIET: Duration = Duration::from_secs(30);

    fn within_a_tick(elapsed: Duration, expected: Duration) -> bool {
        elapsed >= expected && elapsed < expected + Duration::from_millis(5)
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_without_requests_is_idle_after_the_quiet_period() {
        let (_streams, mut idle) = track();
        let start = Instant::now();
        idle.wait(QUIET).await;
        assert!(within_a_tick(start.elapsed(), QUIET), "{:?}", start.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn the_quiet_period_counts_from_the_end_of_the_last_request() {
        let (streams, mut idle) = track();
        let start = Instant::now();
        // In flight when the watcher first looks (at 30 s), over at 45 s.
        let open = streams.open();
        let ender = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(45)).await;
            drop(open);
        });
        idle.wait(QUIET).await;
        assert!(within_a_tick(start.elapsed(), Duration::from_secs(75)), "{:?}", start.elapsed());
        ender.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_that_came_and_went_restarts_the_wait() {
        let (streams, mut idle) = track();
        let start = Instant::now();
        let requester = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(20)).await;
            drop(streams.open());
        });
        idle.wait(QUIET).await;
        assert!(within_a_tick(start.elapsed(), Duration::from_secs(50)), "{:?}", start.elapsed());
        requester.await.unwrap();
    }
}
