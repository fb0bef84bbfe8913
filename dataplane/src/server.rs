//! Accepting connections: HTTP/1.1 and h2c on one port, with a graceful drain on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::config::Limits;
use crate::headers;

/// How long a new connection may stay silent before its first byte; then, hyper's own header
/// read timeout (30 s) bounds the rest of each HTTP/1.1 request head.
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(30);

/// Something that answers a request; implemented by the proxy and the admin endpoints.
pub trait Handler: Send + Sync + 'static {
    type Body: Body<Data = bytes::Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>> + Send + 'static;

    fn call(self: Arc<Self>, request: Request<Incoming>) -> impl Future<Output = Response<Self::Body>> + Send;
}

/// Serves `handler` on `listener` until `shutdown` resolves, then stops accepting and lets
/// open connections finish their in-flight requests for up to `grace`.
pub async fn serve<H: Handler>(
    name: &'static str,
    listener: TcpListener,
    handler: Arc<H>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .max_buf_size(usize::try_from(limits.max_header_bytes).unwrap_or(usize::MAX))
        .max_headers(headers::field_ceiling(limits.max_header_bytes));
    builder.http2().timer(TokioTimer::new()).max_header_list_size(limits.max_header_bytes);
    let graceful = GracefulShutdown::new();
    // Connection tasks, so that those still open when the grace period ends can be closed.
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);

    loop {
        // Reap finished connections so the set only holds open ones.
        while connections.try_join_next().is_some() {}
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Usually EMFILE: back off briefly instead of spinning on the error.
                    tracing::warn!(listener = name, error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let service = hyper::service::service_fn(move |request| {
            let handler = handler.clone();
            async move { Ok::<_, Infallible>(handler.call(request).await) }
        });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        connections.spawn(async move {
            // The auto builder waits for the first bytes to tell HTTP/1.1 from h2c with no
            // timeout of its own: a client that connects and says nothing is dropped here.
            let mut first = [0u8; 1];
            match tokio::time::timeout(FIRST_BYTE_TIMEOUT, stream.peek(&mut first)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
            let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
            if let Err(err) = watcher.watch(connection).await {
                tracing::debug!(listener = name, %peer, error = %err, "connection ended with an error");
            }
        });
    }

    drop(listener);
    tracing::info!(listener = name, "stopped accepting; draining open connections");
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(listener = name, open = connections.len(), "grace period over; closing remaining connections");
    }
    // Whatever is left: connections past the grace period, and silent ones never served.
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}

/// Binds `addr`, logging the bound address (tests and operators binding port 0 read it there).
pub async fn bind(name: &'static str, addr: SocketAddr) -> std::io::Result<TcpListener> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tracing::info!(listener = name, addr = %local, "listening");
    Ok(listener)
}
