//! One client connection: wait for its first byte, serve it, and close it when it has been
//! idle too long or the listener shuts down.
//!
//! The connection's task polls its connection (the own HTTP/1.1 codec, [`super::http1`], or
//! hyper's) and nothing else: on every wake-up it reads one atomic to learn whether it should
//! start closing. Each poll runs inside
//! [`crate::access::after_flush::serve`], so the records of the requests it finishes are written
//! once their answers are flushed, not before. The timers and the listener's
//! stop signal are watched by a second task per connection ([`watch`]), which raises that
//! signal and wakes the connection's task. Polling them beside hyper in one `select!` cost each
//! wake-up a timer poll and a `watch` channel poll, about 2,000 instructions per request; the
//! watcher costs a task per connection instead, which keep-alive connections amortize.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use pin_project_lite::pin_project;
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::activity::{self, Streams};
use super::http1::Served;
use super::{ClientBody, Handler};
use crate::config::ConnectionConfig;

/// How long a new connection may stay silent before its first byte. After that, a connection
/// with no request in flight is closed after the idle timeout, which therefore also bounds how
/// long a later request head may take to arrive. hyper counts a connection as busy until its
/// first request is read, so a first head that started but never finishes is not closed as
/// idle: it is dropped once the idle and keep-alive timeouts have both passed.
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(30);

/// The HTTP settings a listener's connections are served with: hyper-util's auto builder
/// (HTTP/1.1 or h2c, told apart by the first bytes) and the same HTTP/1.1 settings on hyper's
/// own builder, for a connection already known to be HTTP/1.1.
#[derive(Debug, Clone)]
pub(super) struct Builders {
    pub(super) auto: auto::Builder<TokioExecutor>,
    pub(super) http1: http1::Builder,
    /// The most bytes a request head may take (the own codec hands a larger one to hyper).
    pub(super) max_head_bytes: usize,
}

/// An accepted connection and what it is served with.
#[derive(Debug)]
pub(super) struct Connection {
    pub(super) listener: &'static str,
    pub(super) peer: SocketAddr,
    pub(super) builders: Builders,
    pub(super) settings: ConnectionConfig,
    /// Turns true when the listener shuts down.
    pub(super) stop: watch::Receiver<bool>,
}

impl Connection {
    pub(super) async fn serve<H: Handler>(self, stream: TcpStream, handler: Arc<H>) {
        let Connection { listener, peer, builders, settings, mut stop } = self;
        // The auto builder waits for the first bytes to tell HTTP/1.1 from h2c with no
        // timeout of its own: a client that connects and says nothing is dropped here.
        let mut first = [0u8; 2];
        let peeked = tokio::select! {
            peeked = tokio::time::timeout(FIRST_BYTE_TIMEOUT, stream.peek(&mut first)) => match peeked {
                Ok(Ok(n)) if n > 0 => n,
                _ => return,
            },
            () = stopping(&mut stop) => return,
        };
        // An h2c connection starts with the preface `PRI * HTTP/2.0`; two other bytes make it
        // HTTP/1.1 for certain, served by the own codec (and by hyper's HTTP/1.1 connection from
        // a hand-off on) rather than through hyper-util's version detection, which wraps every
        // read in its replay buffer.
        let http1 = peeked == first.len() && first != *b"PR";

        let (streams, idle) = activity::track();
        let signal = Arc::new(Signal::default());
        let watcher = tokio::spawn(watch(signal.clone(), idle, stop, settings));
        let ended = if http1 {
            // The own codec serves the plain API call and hands anything else to hyper.
            let own = super::http1::serve(stream, &handler, &streams, &signal, builders.max_head_bytes);
            let graceful = |_: Pin<&mut _>| {};
            let served = (Supervised { connection: own, graceful, signal: signal.clone(), closing: false }).await;
            match served {
                Some(Ok(Served::HandedOff(io))) => {
                    // Told to close already: hyper must still answer the request it is handed,
                    // which a graceful shutdown before its first read would drop unanswered.
                    let closing = signal.closing();
                    let connection = if closing {
                        builders.http1.clone().keep_alive(false).serve_connection(io, service(handler, streams))
                    } else {
                        builders.http1.serve_connection(io, service(handler, streams))
                    };
                    let graceful = |connection: Pin<&mut _>| http1::Connection::graceful_shutdown(connection);
                    ended((Supervised { connection, graceful, signal, closing }).await)
                }
                Some(Ok(Served::Closed)) => Ended::Served(Ok(())),
                Some(Err(err)) => Ended::Served(Err(err.into())),
                None => Ended::Dropped,
            }
        } else {
            let connection = builders.auto.serve_connection(TokioIo::new(stream), service(handler, streams));
            let graceful = |connection: Pin<&mut _>| auto::Connection::graceful_shutdown(connection);
            ended((Supervised { connection, graceful, signal, closing: false }).await)
        };
        watcher.abort();
        match ended {
            Ended::Served(Err(err)) => tracing::debug!(listener, %peer, error = %err, "connection ended with an error"),
            Ended::Served(Ok(())) => {}
            Ended::Dropped => tracing::debug!(listener, %peer, "idle connection did not say goodbye in time; dropped"),
        }
    }
}

/// hyper's service for a connection: the handler, each request counted while in flight.
fn service<H: Handler>(
    handler: Arc<H>,
    streams: Streams,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<activity::Tracked<H::Body>>,
    Error = Infallible,
    Future: Send,
> + Clone {
    hyper::service::service_fn(move |request: Request<Incoming>| {
        let handler = handler.clone();
        let open = streams.open();
        async move {
            let mut response = handler.call(request.map(ClientBody::Streamed)).await;
            insert_late_fields::<H>(&mut response);
            Ok::<_, Infallible>(response.map(|body| open.attach(body)))
        }
    })
}

/// Moves the response's late fields into its header map, for hyper to write.
fn insert_late_fields<H: Handler>(response: &mut Response<H::Body>) {
    let mut fields = Vec::new();
    H::late_fields(response, &mut |name, value| {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            fields.push((name.clone(), value));
        }
    });
    for (name, value) in fields {
        response.headers_mut().insert(name, value);
    }
}

/// What the watcher tells the connection's task.
#[derive(Debug)]
pub(super) struct Signal {
    /// One of the `SERVING`, `CLOSE` or `DROP` constants; it only ever grows.
    state: AtomicU8,
    task: AtomicWaker,
}

/// Nothing to do but serve.
const SERVING: u8 = 0;
/// Idle too long, or the listener is shutting down: HTTP/1.1 closes now if idle, else after the
/// current response; HTTP/2 sends GOAWAY and closes once the streams already started are done.
const CLOSE: u8 = 1;
/// An idle connection did not finish closing within the keep-alive timeout (an HTTP/2 client
/// that never answers the goodbye's ping): drop it.
const DROP: u8 = 2;

impl Default for Signal {
    fn default() -> Self {
        Signal { state: AtomicU8::new(SERVING), task: AtomicWaker::new() }
    }
}

impl Signal {
    /// Whether the connection should close: now if idle, else after the current response.
    pub(super) fn closing(&self) -> bool {
        self.state.load(Ordering::Acquire) >= CLOSE
    }

    fn raise(&self, state: u8) {
        self.state.fetch_max(state, Ordering::AcqRel);
        self.task.wake();
    }
}

/// Times the connection and listens for the listener's shutdown, raising [`Signal`] for the
/// connection's task. Aborted when the connection ends.
async fn watch(
    signal: Arc<Signal>,
    mut idle: activity::Idle,
    mut stop: watch::Receiver<bool>,
    settings: ConnectionConfig,
) {
    let idled = tokio::select! {
        () = idle.wait(settings.idle_timeout) => true,
        () = stopping(&mut stop) => false,
    };
    signal.raise(CLOSE);
    // A shutdown's closing is bounded by the grace period: `serve` aborts whatever is still
    // open then. An idle connection's is bounded here: a request that raced the goodbye is
    // still served, a client that stays silent is dropped.
    if idled {
        idle.wait(settings.keepalive_timeout).await;
        signal.raise(DROP);
    }
}

/// How hyper's connection ended: served, or dropped by the watcher.
fn ended<E: Into<Box<dyn std::error::Error + Send + Sync>>>(served: Option<Result<(), E>>) -> Ended {
    served.map_or(Ended::Dropped, |served| Ended::Served(served.map_err(Into::into)))
}

/// How a connection's task ended.
enum Ended {
    Served(Result<(), Box<dyn std::error::Error + Send + Sync>>),
    Dropped,
}

pin_project! {
    /// hyper's connection, closed gracefully (`graceful`) when the watcher says so.
    struct Supervised<C, G> {
        #[pin]
        connection: C,
        graceful: G,
        signal: Arc<Signal>,
        // `graceful` was called.
        closing: bool,
    }
}

impl<C, G> Future for Supervised<C, G>
where
    C: Future,
    G: FnMut(Pin<&mut C>),
{
    /// `None` when the watcher dropped the connection.
    type Output = Option<C::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<C::Output>> {
        let mut this = self.project();
        // Registered before reading the state, so a signal raised in between still wakes us.
        this.signal.task.register(cx.waker());
        let state = this.signal.state.load(Ordering::Acquire);
        if state == DROP {
            return Poll::Ready(None);
        }
        if state == CLOSE && !*this.closing {
            *this.closing = true;
            (this.graceful)(this.connection.as_mut());
        }
        // The requests this poll finishes are recorded once hyper has flushed their answers.
        crate::access::after_flush::serve(|| this.connection.poll(cx)).map(Some)
    }
}

/// Resolves once the listener shuts down (or is gone).
async fn stopping(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}
