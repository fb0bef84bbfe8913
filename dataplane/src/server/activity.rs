//! What a connection has in flight, so that one idle for too long can be closed.
//!
//! hyper closes neither an HTTP/2 connection without streams nor (before its header read
//! timeout) an idle HTTP/1.1 one, so the connection counts its requests itself: each counts
//! from the moment hyper hands it to the service until its response body has been sent or
//! dropped, which for HTTP/2 is the life of its stream. A long LLM stream keeps its
//! connection busy however quiet it is.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::sync::watch;

/// A connection's request counter, and the watcher that tells when it has stayed at zero.
pub(super) fn track() -> (Streams, Idle) {
    let (count, watch) = watch::channel(0usize);
    (Streams(Arc::new(count)), Idle(watch))
}

/// Opens a count for each request; shared by the connection's service.
#[derive(Debug, Clone)]
pub(super) struct Streams(Arc<watch::Sender<usize>>);

impl Streams {
    pub(super) fn open(&self) -> Open {
        self.0.send_modify(|open| *open += 1);
        Open(self.0.clone())
    }
}

/// One request in flight; dropping it (the request future or response body gone) ends it.
#[derive(Debug)]
pub(super) struct Open(Arc<watch::Sender<usize>>);

impl Open {
    /// Keeps the request counted until `body` is done.
    pub(super) fn attach<B>(self, body: B) -> Tracked<B> {
        Tracked { body, _open: self }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.send_modify(|open| *open = open.saturating_sub(1));
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
pub(super) struct Idle(watch::Receiver<usize>);

impl Idle {
    /// Resolves once no request has been in flight for `quiet` without interruption.
    pub(super) async fn wait(&mut self, quiet: Duration) {
        loop {
            if self.0.wait_for(|open| *open == 0).await.is_err() {
                // The service is gone, and with it the connection: nothing to wait for.
                return std::future::pending().await;
            }
            // Any change (a request starting, even one already over) restarts the wait.
            if tokio::time::timeout(quiet, self.0.changed()).await.is_err() {
                return;
            }
        }
    }
}
