//! Accepting connections: HTTP/1.1 and h2c on one port, at most a configured number at once,
//! with a graceful drain on shutdown. What happens on each connection is in [`connection`]
//! (HTTP/1.1's plain API calls by the own codec in [`http1`], everything else by hyper);
//! how the passthrough listener is spread over one single-threaded runtime per core is in
//! [`workers`].

mod activity;
mod client_body;
mod connection;
mod http1;
pub mod workers;

pub use self::client_body::ClientBody;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::{HeaderName, Request, Response};
use http_body::Body;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::config::{ConnectionConfig, Limits};
use crate::headers;
use crate::metrics::ConnectionMetrics;

/// Refusals past the connection cap are logged at most this often, so that a flood of
/// connections cannot flood the log too.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(30);

/// Something that answers a request; implemented by the proxy and the admin endpoints.
pub trait Handler: Send + Sync + 'static {
    type Body: Body<Data = bytes::Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>> + Unpin + Send + 'static;

    fn call(self: Arc<Self>, request: Request<ClientBody>) -> impl Future<Output = Response<Self::Body>> + Send;

    /// Header fields `response` carries beside its header map (none by default), handed to
    /// `field` as a name and a value of visible ASCII when its head is written: the own
    /// HTTP/1.1 codec writes them straight into the head's bytes, hyper's paths insert them into
    /// the map first. For fields made per response, which would cost a map insert each (the
    /// rate-limit headers of a limited key). They are ordinary fields, never framing or
    /// `Connection`, and the map holds none of their names.
    fn late_fields(_response: &Response<Self::Body>, _field: &mut dyn FnMut(&HeaderName, &[u8])) {}

    /// The handler a serving worker uses: by default this one. A handler whose requests clone
    /// its `Arc` (every one does: the request's future must own it) can give each worker its
    /// own allocation, so that the reference count does not bounce between cores.
    fn for_worker(self: &Arc<Self>) -> Arc<Self> {
        self.clone()
    }
}

/// A bound listener and how many connections it may hold.
#[derive(Debug)]
pub struct Listener {
    pub name: &'static str,
    pub tcp: TcpListener,
    pub cap: ConnectionCap,
    pub metrics: ConnectionMetrics,
}

/// A connection cap, shared by every listener socket of one logical listener (the workers'
/// `SO_REUSEPORT` sockets), so the cap holds for the process whichever worker accepts.
#[derive(Debug, Clone)]
pub struct ConnectionCap {
    max: u32,
    permits: Arc<Semaphore>,
    refusals: Arc<Refusals>,
}

impl ConnectionCap {
    pub fn new(max: u32) -> Self {
        ConnectionCap {
            max,
            permits: Arc::new(Semaphore::new(usize::try_from(max).unwrap_or(usize::MAX))),
            refusals: Arc::new(Refusals::new()),
        }
    }
}

/// What every connection of a listener is served with.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub limits: Limits,
    pub connections: ConnectionConfig,
    /// On shutdown, how long open connections may finish their in-flight requests.
    pub grace: Duration,
}

/// Serves `handler` on `listener` until `shutdown` resolves, then stops accepting and lets
/// open connections finish their in-flight requests for up to the grace period.
///
/// At the connection cap, new connections are accepted and closed at once rather than left in
/// the kernel's backlog: the client learns immediately that it should retry (elsewhere), and
/// the connections already open are served as before.
pub async fn serve<H: Handler>(
    listener: Listener,
    handler: Arc<H>,
    settings: Settings,
    shutdown: impl Future<Output = ()>,
) {
    let Listener { name, tcp, cap, metrics } = listener;
    let ConnectionCap { max: max_connections, permits, refusals } = cap;
    let builders = builders(&settings);
    let (stop, stopped) = watch::channel(false);
    // Connection tasks, so that those still open when the grace period ends can be closed.
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);

    loop {
        // Reap finished connections so the set only holds open ones.
        while connections.try_join_next().is_some() {}
        let (stream, peer) = tokio::select! {
            accepted = tcp.accept() => match accepted {
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
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics.refused();
            refusals.note(name, max_connections);
            drop(stream);
            continue;
        };
        let open = metrics.accepted();
        let _ = stream.set_nodelay(true);
        let connection = connection::Connection {
            listener: name,
            peer,
            builders: builders.clone(),
            settings: settings.connections,
            stop: stopped.clone(),
        };
        let handler = handler.clone();
        connections.spawn(async move {
            // Both released when the connection ends or its task is aborted.
            let _held = (permit, open);
            connection.serve(stream, handler).await;
        });
    }

    drop(tcp);
    tracing::info!(listener = name, "stopped accepting; draining open connections");
    stop.send_replace(true);
    let drained = tokio::time::timeout(settings.grace, async { while connections.join_next().await.is_some() {} });
    if drained.await.is_err() {
        tracing::warn!(listener = name, open = connections.len(), "grace period over; closing remaining connections");
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}

/// The HTTP/1.1 and HTTP/2 settings every connection of a listener shares.
fn builders(settings: &Settings) -> connection::Builders {
    let max_header_bytes = settings.limits.max_header_bytes;
    let max_buf_size = usize::try_from(max_header_bytes).unwrap_or(usize::MAX);
    let max_headers = headers::field_ceiling(max_header_bytes);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // No HTTP/1.1 timer: hyper's header read timeout arms a timer for every request head (a
    // boxed sleep registered and cancelled per request); the connection's idle watch, which
    // closes a connection with no request in flight after the idle timeout, bounds a head that
    // never completes just as well (see `connection`).
    // One buffer per write rather than a vectored write of head and body: the kernel takes a
    // single segment (about 0.3 us less system time per proxied request, measured on a minimal
    // hyper proxy), and the copy into the buffer is nothing next to the syscall.
    builder.http1().writev(false).max_buf_size(max_buf_size).max_headers(max_headers);
    // hyper enforces `max_buf_size` only while a head is incomplete, so a head read whole in
    // one go could pass it; `max_header_size` also checks every complete head (hyper-util's
    // auto builder does not offer it, so its rare HTTP/1.1 connections keep the former bound).
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1.writev(false).max_buf_size(max_buf_size).max_header_size(max_buf_size).max_headers(max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(max_header_bytes)
        // Finds clients that vanished without closing (their connection would stay forever);
        // idle but live ones are closed by the idle timeout instead.
        .keep_alive_interval(settings.connections.keepalive_interval)
        .keep_alive_timeout(settings.connections.keepalive_timeout);
    connection::Builders { auto: builder, http1, max_head_bytes: max_buf_size }
}

/// Logs reaching the connection cap at most once per [`REFUSAL_LOG_INTERVAL`], with how many
/// connections were refused since the previous line. Shared by the workers (atomics: whichever
/// worker refuses first after the interval writes the line).
#[derive(Debug)]
struct Refusals {
    since: Instant,
    /// When the last line was written, in milliseconds after `since` plus one; 0: never.
    logged_at: AtomicU64,
    unlogged: AtomicU64,
}

impl Refusals {
    fn new() -> Self {
        Refusals { since: Instant::now(), logged_at: AtomicU64::new(0), unlogged: AtomicU64::new(0) }
    }

    fn note(&self, listener: &'static str, max_connections: u32) {
        self.unlogged.fetch_add(1, Ordering::Relaxed);
        let now = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX).saturating_add(1);
        let logged_at = self.logged_at.load(Ordering::Relaxed);
        let interval = u64::try_from(REFUSAL_LOG_INTERVAL.as_millis()).unwrap_or(u64::MAX);
        if logged_at != 0 && now.saturating_sub(logged_at) < interval {
            return;
        }
        // Another worker won the race to write this line; this refusal is in its count or the next.
        if self.logged_at.compare_exchange(logged_at, now, Ordering::AcqRel, Ordering::Relaxed).is_err() {
            return;
        }
        tracing::warn!(
            listener,
            max_connections,
            refused = self.unlogged.swap(0, Ordering::Relaxed),
            "connection limit reached; new connections are closed unserved (see aurora_dataplane_connections_refused_total)"
        );
    }
}

/// Binds `addr`, logging the bound address (tests and operators binding port 0 read it there).
pub async fn bind(name: &'static str, addr: SocketAddr) -> std::io::Result<TcpListener> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tracing::info!(listener = name, addr = %local, "listening");
    Ok(listener)
}

/// Binds `count` sockets to `addr` with `SO_REUSEPORT`, so the kernel spreads incoming
/// connections over them (by a hash of the connection's addresses), one per worker. Port 0 is
/// resolved by the first socket and the others join its port. Logs the bound address once.
/// Returned unregistered (`std`), for each worker to register with its own runtime.
pub fn bind_shared(name: &'static str, addr: SocketAddr, count: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    let mut bound = Vec::with_capacity(count);
    let mut addr = addr;
    for _ in 0..count.max(1) {
        let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        // What `TcpListener::bind` sets too: a restart may rebind while old connections linger.
        socket.set_reuseaddr(true)?;
        #[cfg(unix)]
        socket.set_reuseport(count > 1)?;
        socket.bind(addr)?;
        // tokio's own default backlog; `listen` registers with the current runtime, so the
        // listener is taken back out (`into_std`) for the worker that will serve it.
        let listener = socket.listen(1024)?.into_std()?;
        addr = listener.local_addr()?;
        bound.push(listener);
    }
    tracing::info!(listener = name, addr = %addr, sockets = bound.len(), "listening");
    Ok(bound)
}
