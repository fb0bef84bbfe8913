//! One client connection: wait for its first byte, serve it, and close it when it has been
//! idle too long or the listener shuts down.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::Handler;
use super::activity;
use crate::config::ConnectionConfig;

/// How long a new connection may stay silent before its first byte; then, hyper's own header
/// read timeout (30 s) bounds the rest of each HTTP/1.1 request head.
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(30);

/// An accepted connection and what it is served with.
#[derive(Debug)]
pub(super) struct Connection {
    pub(super) listener: &'static str,
    pub(super) peer: SocketAddr,
    pub(super) builder: auto::Builder<TokioExecutor>,
    pub(super) settings: ConnectionConfig,
    /// Turns true when the listener shuts down.
    pub(super) stop: watch::Receiver<bool>,
}

/// Why the server started closing a connection.
enum Closing {
    Idle,
    Shutdown,
}

impl Connection {
    pub(super) async fn serve<H: Handler>(self, stream: TcpStream, handler: Arc<H>) {
        let Connection { listener, peer, builder, settings, mut stop } = self;
        // The auto builder waits for the first bytes to tell HTTP/1.1 from h2c with no
        // timeout of its own: a client that connects and says nothing is dropped here.
        let mut first = [0u8; 1];
        tokio::select! {
            peeked = tokio::time::timeout(FIRST_BYTE_TIMEOUT, stream.peek(&mut first)) => {
                if !matches!(peeked, Ok(Ok(n)) if n > 0) {
                    return;
                }
            }
            () = stopping(&mut stop) => return,
        }

        let (streams, mut idle) = activity::track();
        let service = hyper::service::service_fn(move |request| {
            let handler = handler.clone();
            let open = streams.open();
            async move { Ok::<_, Infallible>(handler.call(request).await.map(|body| open.attach(body))) }
        });
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        tokio::pin!(connection);
        let ended = |result: Result<(), Box<dyn std::error::Error + Send + Sync>>| {
            if let Err(err) = result {
                tracing::debug!(listener, %peer, error = %err, "connection ended with an error");
            }
        };

        let closing = tokio::select! {
            // In this order, without drawing a random number per wake-up: the connection is
            // what wakes this task nearly every time.
            biased;
            result = connection.as_mut() => return ended(result),
            () = idle.wait(settings.idle_timeout) => Closing::Idle,
            () = stopping(&mut stop) => Closing::Shutdown,
        };
        // HTTP/1.1: close now if idle, else after the current response. HTTP/2: GOAWAY, then
        // close once the streams already started are done.
        connection.as_mut().graceful_shutdown();
        match closing {
            // HTTP/2's goodbye waits for the client to answer a ping. A request that raced the
            // GOAWAY is still served; a client that stays silent is dropped.
            Closing::Idle => tokio::select! {
                result = connection.as_mut() => ended(result),
                () = idle.wait(settings.keepalive_timeout) => {
                    tracing::debug!(listener, %peer, "idle connection did not say goodbye in time; dropped");
                }
            },
            // Bounded by the grace period: `serve` aborts whatever is still open then.
            Closing::Shutdown => ended(connection.await),
        }
    }
}

/// Resolves once the listener shuts down (or is gone).
async fn stopping(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}
