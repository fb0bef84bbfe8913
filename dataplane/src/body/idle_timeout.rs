//! A response body that fails once its upstream has been silent for longer than the idle
//! timeout. The clock only runs while the body is actually waiting: a frame that is ready when
//! asked for costs nothing, and the body's one deadline (in its worker's [`Deadlines`],
//! registered on the first wait) is moved when a wait follows progress. That is no work at all
//! for a body read in one go (nearly every non-streamed answer), and one clock read and one
//! update per wait for a stream, where a fresh `Sleep` per frame (tower-http's `TimeoutBody`)
//! registered and cancelled a timer every time.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::Instant;

use crate::deadline::{Deadlines, Timer};

/// The upstream was silent for longer than the idle timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the upstream response body was idle for longer than the timeout")]
pub struct IdleTimedOut;

pin_project! {
    #[derive(Debug)]
    pub struct IdleTimeout<B> {
        #[pin]
        body: B,
        timeout: Duration,
        deadlines: Deadlines,
        // Made on the body's first wait: most bodies never wait.
        timer: Option<Timer>,
        // A frame arrived since the deadline was last set.
        progressed: bool,
    }
}

impl<B> IdleTimeout<B> {
    pub fn new(body: B, timeout: Duration, deadlines: Deadlines) -> Self {
        IdleTimeout { body, timeout, deadlines, timer: None, progressed: false }
    }
}

impl<B> Body for IdleTimeout<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        if let Poll::Ready(frame) = this.body.poll_frame(cx) {
            *this.progressed = true;
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        // Waiting: the silence is counted from now if anything came since the deadline was set.
        let timer = match this.timer {
            Some(timer) => {
                if *this.progressed {
                    timer.reset(Instant::now() + *this.timeout);
                }
                timer
            }
            None => this.timer.insert(Timer::new(this.deadlines.clone(), Instant::now() + *this.timeout)),
        };
        *this.progressed = false;
        ready!(timer.poll_passed(cx));
        Poll::Ready(Some(Err(Box::new(IdleTimedOut))))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use http_body_util::BodyExt;
    use http_body_util::StreamBody;
    use tokio_stream::wrappers::ReceiverStream;

    use super::*;

    type Channel = StreamBody<ReceiverStream<Result<Frame<Bytes>, std::convert::Infallible>>>;

    fn channel() -> (tokio::sync::mpsc::Sender<Result<Frame<Bytes>, std::convert::Infallible>>, Channel) {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        (tx, StreamBody::new(ReceiverStream::new(rx)))
    }

    fn send(tx: &tokio::sync::mpsc::Sender<Result<Frame<Bytes>, std::convert::Infallible>>, data: &'static str) {
        tx.try_send(Ok(Frame::data(Bytes::from_static(data.as_bytes())))).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_is_ready_passes_without_a_timer() {
        let (tx, body) = channel();
        send(&tx, "a");
        drop(tx);
        let mut body = IdleTimeout::new(body, Duration::from_secs(10), Deadlines::default());
        assert_eq!(body.frame().await.unwrap().unwrap().into_data().unwrap(), "a");
        assert!(body.timer.is_none(), "no wait, no timer");
        assert!(body.frame().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn silence_counts_from_the_last_frame() {
        let (tx, body) = channel();
        let mut body = Box::pin(IdleTimeout::new(body, Duration::from_secs(10), Deadlines::default()));
        let start = Instant::now();
        let feeder = tokio::spawn(async move {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_secs(7)).await;
                send(&tx, "x");
            }
            // Then silent until the body gives up; the sender stays alive.
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(tx);
        });
        for _ in 0..3 {
            let frame = poll_fn(|cx| body.as_mut().poll_frame(cx)).await.unwrap().unwrap();
            assert_eq!(frame.into_data().unwrap(), "x");
        }
        let err = poll_fn(|cx| body.as_mut().poll_frame(cx)).await.unwrap().unwrap_err();
        assert!(err.is::<IdleTimedOut>());
        // Three gaps of 7 s never tripped a 10 s timeout; the fourth wait did, 10 s after the
        // last frame (noticed within a tick of the worker's deadline sweep).
        let elapsed = start.elapsed();
        assert!(
            elapsed >= Duration::from_secs(31) && elapsed <= Duration::from_secs(31) + crate::deadline::TICK,
            "{elapsed:?}"
        );
        feeder.abort();
    }
}
