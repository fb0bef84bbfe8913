//! What one client can make the gRPC server hold: connections, streams, bytes and time.
//!
//! The gRPC port answers health checks and reflection without a token, so its memory must be
//! bounded by configuration, not by what a client chooses to open. The bounds, together:
//!
//! - at most [`GrpcLimits::max_connections`] connections; one more is accepted and closed at
//!   once (counted, and logged at most every [`REFUSAL_LOG_INTERVAL`]), and the connections
//!   already open keep being served;
//! - at most [`GrpcLimits::max_streams_per_connection`] concurrent streams per connection,
//!   advertised as HTTP/2's `SETTINGS_MAX_CONCURRENT_STREAMS`;
//! - per stream, at most one request message of [`ADMIN_MAX_MESSAGE`],
//!   [`CONFIG_STREAM_MAX_MESSAGE`] or [`PROBE_MAX_MESSAGE`] bytes buffered, with HTTP/2 receive
//!   windows of [`STREAM_WINDOW`] per stream and [`CONNECTION_WINDOW`] per connection;
//! - every call except the config stream must have received its whole request within
//!   [`GrpcLimits::request_timeout`]; a stream that stays silent is failed with
//!   `DEADLINE_EXCEEDED`, freeing what it held. The config stream has its own bounds: a `Hello`
//!   within 10 s, then HTTP/2 keep-alive pings.
//!
//! So buffered request bytes stay below `max_connections × max_streams_per_connection ×
//! ADMIN_MAX_MESSAGE` (4096 × 64 × 256 KiB with the defaults; one hostile connection holds at
//! most 16 MiB, for at most `request_timeout`). Lower either setting to tighten it.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use http::Request;
use http_body::{Body as HttpBody, Frame, SizeHint};
use pin_project_lite::pin_project;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::body::Body;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// The largest admin request: a key with its description and providers, a provider with its
/// credential. Far above any real one, far below tonic's 4 MiB default, and large enough that
/// an oversized field is refused by validation, naming the field, rather than by the transport.
pub const ADMIN_MAX_MESSAGE: usize = 256 * 1024;
/// The largest message a data plane sends on its config stream (`Hello`, `Ack`, `Nack`).
pub const CONFIG_STREAM_MAX_MESSAGE: usize = 64 * 1024;
/// The largest health-check or reflection request.
pub const PROBE_MAX_MESSAGE: usize = 4 * 1024;
/// HTTP/2 receive window per stream: what a client may send before the server reads.
pub const STREAM_WINDOW: u32 = 64 * 1024;
/// HTTP/2 receive window per connection, shared by its streams.
pub const CONNECTION_WINDOW: u32 = 256 * 1024;
/// How often a refused connection is logged while the cap holds.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The config stream is long-lived by design; its request never ends.
const CONFIG_STREAM_PATH: &str = "/aurora.v1.ConfigService/";

/// The gRPC listener's bounds (see the module documentation for what they add up to).
#[derive(Args, Debug, Clone)]
pub struct GrpcLimits {
    /// Connections the gRPC port holds at once (data planes, CLI calls, probes); one more is
    /// closed at once. Each data plane holds one: size it above the fleet.
    #[arg(long, env = "AURORA_GRPC_MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Concurrent HTTP/2 streams per connection.
    #[arg(long, env = "AURORA_GRPC_MAX_STREAMS_PER_CONNECTION", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_streams_per_connection: u32,

    /// How long any call but the config stream may take to send its whole request.
    #[arg(long, env = "AURORA_GRPC_REQUEST_TIMEOUT", default_value = "10s", value_parser = aurora_core::parse_positive_duration)]
    pub request_timeout: Duration,
}

impl Default for GrpcLimits {
    fn default() -> Self {
        GrpcLimits { max_connections: 4096, max_streams_per_connection: 64, request_timeout: Duration::from_secs(10) }
    }
}

/// Connection counts for the metrics.
#[derive(Debug, Clone, Default)]
pub struct ConnectionMetrics {
    pub open: Gauge,
    pub refused: Counter,
}

/// Accepts connections from `listener`, at most `max` open at once.
pub(crate) fn limit_connections(
    listener: TcpListener,
    max: u32,
    metrics: ConnectionMetrics,
) -> impl futures_util::Stream<Item = std::io::Result<LimitedConnection>> {
    let permits = Arc::new(Semaphore::new(usize::try_from(max).unwrap_or(usize::MAX)));
    let state = (listener, permits, metrics, None::<Instant>);
    futures_util::stream::unfold(state, move |(listener, permits, metrics, mut last_log)| async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Usually EMFILE: back off briefly instead of spinning on the error.
                    tracing::warn!(listener = "grpc", error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                // Closing at once tells the client, instead of leaving it in the backlog.
                metrics.refused.inc();
                if last_log.is_none_or(|at| at.elapsed() >= REFUSAL_LOG_INTERVAL) {
                    last_log = Some(Instant::now());
                    tracing::warn!(
                        listener = "grpc",
                        max_connections = max,
                        "connection refused: at the connection limit (AURORA_GRPC_MAX_CONNECTIONS)"
                    );
                }
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let connection = LimitedConnection::new(stream, permit, metrics.open.clone());
            return Some((Ok(connection), (listener, permits, metrics, last_log)));
        }
    })
}

/// A TCP connection holding one of the listener's permits until it is dropped.
#[derive(Debug)]
pub(crate) struct LimitedConnection {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    open: Gauge,
}

impl LimitedConnection {
    fn new(stream: TcpStream, permit: OwnedSemaphorePermit, open: Gauge) -> Self {
        open.inc();
        LimitedConnection { stream, _permit: permit, open }
    }
}

impl Drop for LimitedConnection {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl Connected for LimitedConnection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for LimitedConnection {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for LimitedConnection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Gives every request but the config stream's `timeout` to arrive in full (see the module
/// documentation); used as a `map_request` layer in front of every service.
pub(crate) fn request_deadline(timeout: Duration) -> impl Fn(Request<Body>) -> Request<Body> + Clone {
    move |request: Request<Body>| {
        if request.uri().path().starts_with(CONFIG_STREAM_PATH) {
            return request;
        }
        request.map(|body| Body::new(DeadlineBody::new(body, timeout)))
    }
}

pin_project! {
    /// A request body that fails once `timeout` has passed before it ended.
    struct DeadlineBody {
        #[pin]
        inner: Body,
        #[pin]
        deadline: tokio::time::Sleep,
        timeout: Duration,
        ended: bool,
    }
}

impl DeadlineBody {
    fn new(inner: Body, timeout: Duration) -> Self {
        DeadlineBody { inner, deadline: tokio::time::sleep(timeout), timeout, ended: false }
    }
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = self.project();
        if *this.ended {
            return Poll::Ready(None);
        }
        match this.inner.poll_frame(cx) {
            Poll::Ready(None) => {
                *this.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(frame)) => Poll::Ready(Some(frame)),
            Poll::Pending => match this.deadline.poll(cx) {
                Poll::Ready(()) => {
                    *this.ended = true;
                    Poll::Ready(Some(Err(tonic::Status::deadline_exceeded(format!(
                        "the request did not arrive within {} (AURORA_GRPC_REQUEST_TIMEOUT)",
                        humantime::format_duration(*this.timeout)
                    )))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
#[path = "grpc_limits_tests.rs"]
mod tests;
