//! Writing a finished request's record after its last bytes are on their way, not before.
//!
//! hyper drops a response's body (and with it the request's [`Exchange`](super::Exchange))
//! when the body's last frame is buffered, then writes the buffer to the socket in the same
//! poll of the connection. Writing the record in that drop put its cost (reading the
//! response's usage, the metrics, the access-log line: about 6,600 instructions for a small
//! JSON answer) between the upstream's answer and the client's, where at a low request rate,
//! with cold caches, each thousand instructions is most of a microsecond of added latency.
//! nginx writes its log after the response is sent; so does Aurora now.
//!
//! A connection's task polls hyper inside [`serve`]: records finished during that poll are
//! queued on the thread, and written when the poll returns, after hyper has flushed what the
//! poll produced. A record finished anywhere else (an HTTP/2 stream's task, a connection
//! dropped at shutdown, a test) is written at once. Either way every record is written exactly
//! once, on the thread that finished it, before the poll that finished it is over: nothing is
//! left pending when a worker stops.

use std::cell::RefCell;

use super::Finished;

thread_local! {
    /// The records finished during the poll in progress on this thread; `None` outside one.
    static PENDING: RefCell<Option<Vec<Finished>>> = const { RefCell::new(None) };
    /// A spare queue, kept between polls so that queuing allocates only on a thread's first
    /// requests.
    static SPARE: RefCell<Vec<Finished>> = const { RefCell::new(Vec::new()) };
}

/// Runs one poll of a connection (`poll`); the records it finished are written when it
/// returns, or unwinds. A poll inside another (which the server never does) writes its
/// records with the outer one.
pub fn serve<T>(poll: impl FnOnce() -> T) -> T {
    let entered = PENDING.with(|pending| {
        let Ok(mut pending) = pending.try_borrow_mut() else { return false };
        if pending.is_some() {
            return false;
        }
        *pending = Some(SPARE.with(|spare| spare.take()));
        true
    });
    let _writer = Writer { entered };
    poll()
}

/// Writes `finished` when the poll in progress on this thread returns, or now if there is none.
pub(super) fn write(finished: Finished) {
    let outside = PENDING.with(|pending| match pending.try_borrow_mut().as_deref_mut() {
        Ok(Some(queue)) => {
            queue.push(finished);
            None
        }
        _ => Some(finished),
    });
    if let Some(finished) = outside {
        finished.write(None);
    }
}

/// Ends a [`serve`]: writes what was queued, once the queue is closed (so a record finished
/// while writing, which does not happen, would be written at once rather than lost).
struct Writer {
    entered: bool,
}

impl Drop for Writer {
    fn drop(&mut self) {
        if !self.entered {
            return;
        }
        let Some(mut queue) = PENDING.with(|pending| pending.borrow_mut().take()) else { return };
        for finished in queue.drain(..) {
            finished.write(None);
        }
        SPARE.with(|spare| *spare.borrow_mut() = queue);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use http::{HeaderValue, Method};

    use super::*;
    use crate::access::{Exchange, Recorder};
    use crate::metrics::Metrics;
    use crate::state::ConfigState;

    fn recorder() -> (Arc<Recorder>, Metrics) {
        let metrics = Metrics::new(Arc::new(ConfigState::new()), None);
        let recorder = Recorder { metrics: metrics.requests.clone(), usage: Arc::new(crate::usage::DiscardUsage) };
        (Arc::new(recorder), metrics)
    }

    fn exchange(recorder: &Arc<Recorder>) -> Exchange {
        let id = HeaderValue::from_static("req-1");
        Exchange::start(recorder.clone(), Instant::now(), id, Method::POST, "/p/openai/v1/x")
    }

    /// Requests whose record was written (each adds one to `requests_total`).
    fn completed(metrics: &Metrics) -> u64 {
        let text = metrics.encode();
        let series = text.lines().filter_map(|line| line.strip_prefix("aurora_dataplane_requests_total{"));
        series.filter_map(|rest| rest.rsplit(' ').next()?.parse::<u64>().ok()).sum()
    }

    #[test]
    fn a_record_finished_outside_a_poll_is_written_at_once() {
        let (recorder, metrics) = recorder();
        drop(exchange(&recorder));
        assert_eq!(completed(&metrics), 1);
    }

    #[test]
    fn a_record_finished_during_a_poll_is_written_when_the_poll_returns() {
        let (recorder, metrics) = recorder();
        let seen_inside = serve(|| {
            drop(exchange(&recorder));
            drop(exchange(&recorder));
            completed(&metrics)
        });
        assert_eq!(seen_inside, 0, "written only after the poll");
        assert_eq!(completed(&metrics), 2);
        // The next poll starts with an empty queue and writes only its own.
        serve(|| drop(exchange(&recorder)));
        assert_eq!(completed(&metrics), 3);
    }

    #[test]
    fn a_poll_that_panics_still_writes_what_it_finished() {
        let (recorder, metrics) = recorder();
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            serve(|| {
                drop(exchange(&recorder));
                panic!("a bug in the poll");
            })
        }));
        assert!(unwound.is_err());
        assert_eq!(completed(&metrics), 1);
        // And the thread is not left inside a poll.
        drop(exchange(&recorder));
        assert_eq!(completed(&metrics), 2);
    }

    #[test]
    fn a_limited_keys_record_is_written_in_the_drop_and_frees_its_slot_at_once() {
        use crate::limits::{Fallback, KeyLimits, Limiters};
        use crate::snapshot::KeyId;

        let (recorder, metrics) = recorder();
        let limiters = Limiters::new(Arc::new(|| 1_796_143_262_000));
        let limits = KeyLimits { max_concurrent: 1, ..Default::default() };
        let key = limiters.state(KeyId([7; 16]));
        let admit = || limiters.admit(&key, &limits, Fallback::Share, limiters.now_ms());
        serve(|| {
            let mut limited = exchange(&recorder);
            limited.admit(admit().expect("the first request is admitted"));
            assert!(admit().is_err(), "its one slot is taken");
            drop(limited);
            assert_eq!(completed(&metrics), 1, "written in the drop, inside the poll");
            assert!(admit().is_ok(), "the slot was freed with it");
        });
        assert_eq!(completed(&metrics), 1, "and written once");
    }

    #[test]
    fn a_nested_poll_leaves_the_writing_to_the_outer_one() {
        let (recorder, metrics) = recorder();
        serve(|| {
            serve(|| drop(exchange(&recorder)));
            assert_eq!(completed(&metrics), 0);
        });
        assert_eq!(completed(&metrics), 1);
    }
}
