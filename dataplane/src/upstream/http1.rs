//! Plain-HTTP/1.1 upstream connections, spoken by the forwarding task itself, from a pool per
//! serving worker.
//!
//! A plain-HTTP upstream needs none of hyper-util's generality (ALPN, HTTP/2, proxies), and
//! hyper's client connection costs, on every request, a channel to the connection's own task,
//! a wake-up of that task and one back, and a second channel for every body frame (about 14,600
//! of a proxied request's 51,600 instructions, measured with callgrind). Here the task that
//! forwards a request writes it and reads the answer on a connection it holds for the exchange
//! ([`exchange`]): heads are written from the prepared header map and parsed by `httparse` (as
//! hyper does, [`head`]), and the response body is read off the socket by the body itself
//! ([`body`]), as the client's connection polls it.
//!
//! Each worker keeps, in a thread-local, a small stack of idle connections per upstream
//! authority (no lock: a worker is one thread) with the `Host` value computed once, so a
//! request never leaves its thread. A connection goes back on the stack only once its response
//! body has been read to the end, with nothing after it, on a connection both sides keep open;
//! otherwise it is dropped, which closes it. A connection taken from the stack is checked for
//! a close the upstream sent meanwhile (its keep-alive timeout), from the readiness the
//! worker's reactor recorded: a response is read until a read comes back short, which clears
//! that readiness, so a live connection's check costs no system call. Idle
//! connections older than the idle timeout are discarded when the stack is next used and by a
//! sweep task per pool and worker (so an idle worker closes them too), and at most
//! [`MAX_IDLE_PER_AUTHORITY`] are kept. TLS, HTTP/2 and egress proxies stay on the general
//! client ([`super::WorkerClients`]).

use std::cell::RefCell;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Response, Uri};
use tokio::net::TcpStream;

use crate::egress::connector::ConnectError;

mod body;
mod exchange;
mod head;

pub use self::body::{Http1Body, PooledBody};
pub use self::exchange::SendBody;
pub(crate) use self::exchange::Sender;
use self::head::HeadLimits;
pub(crate) use self::head::SendFraming;

/// Idle connections kept per upstream authority and worker; more are closed when they go idle.
pub const MAX_IDLE_PER_AUTHORITY: usize = 256;

/// Tells one [`Http1Client`]'s connections from another's in the thread-local pools (tests run
/// several gateways in one process).
static NEXT_CLIENT: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static POOLS: RefCell<Vec<Pool>> = const { RefCell::new(Vec::new()) };
}

/// One authority's idle connections on this thread, the most recently used on top.
struct Pool {
    client: u64,
    authority: Authority,
    host: HeaderValue,
    idle: Vec<Idle>,
}

impl Pool {
    /// Whether this is `client`'s pool for `authority`.
    fn is(&self, client: u64, authority: &Authority) -> bool {
        self.client == client && self.authority == *authority
    }
}

struct Idle {
    connection: Connection,
    since: Instant,
}

/// An open upstream connection and what has been read from it but not yet consumed.
#[derive(Debug)]
pub(crate) struct Connection {
    io: TcpStream,
    read: BytesMut,
}

impl Connection {
    /// Bytes read at a time by a response body.
    const READ_SIZE: usize = 8 * 1024;

    fn new(io: TcpStream) -> Self {
        Connection { io, read: BytesMut::new() }
    }

    /// Whether an idle connection can carry a request: the upstream has neither closed it nor
    /// sent anything unasked. tokio answers from the readiness its reactor recorded: no system
    /// call if the socket was last read dry, else one `recv` that normally finds nothing.
    fn is_usable(&self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.io.try_read(&mut byte), Err(err) if err.kind() == std::io::ErrorKind::WouldBlock)
    }

    /// Reads more of the response into the buffer; `Ok(0)` at the end of the stream.
    ///
    /// Through `AsyncRead`, not `try_read_buf`: tokio's `poll_read` forgets the socket's
    /// recorded readiness when a read comes back short (the socket is dry), so the next
    /// [`is_usable`](Self::is_usable) answers without a system call. `try_read_buf` keeps the
    /// readiness until a read fails with `WouldBlock`, which cost every reuse a `recv`.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        if self.read.capacity() - self.read.len() < Self::READ_SIZE / 2 {
            self.read.reserve(Self::READ_SIZE);
        }
        loop {
            match std::task::ready!(tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read)) {
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                read => return Poll::Ready(read),
            }
        }
    }
}

/// Why a plain-HTTP/1.1 exchange failed. Also the error of its response body.
#[derive(Debug, thiserror::Error)]
pub enum Http1Error {
    #[error("upstream connection failed")]
    Connect(#[source] ConnectError),
    #[error("the upstream URI has no authority")]
    NoAuthority,
    #[error("writing the request upstream failed")]
    Write(#[source] std::io::Error),
    #[error("the client's request body failed")]
    RequestBody(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the request body's length differs from the length its head declared")]
    BodyLength,
    #[error("reading the upstream response failed")]
    Read(#[source] std::io::Error),
    #[error("the upstream closed the connection without answering")]
    Closed,
    #[error("the upstream closed the connection before its response was complete")]
    Incomplete,
    #[error("the upstream response is malformed: invalid {0}")]
    Malformed(&'static str),
    #[error("the upstream response head is too large")]
    HeadTooLarge,
}

impl Http1Error {
    /// Whether the request failed before a connection was established.
    pub fn is_connect(&self) -> bool {
        matches!(self, Http1Error::Connect(_))
    }
}

/// Sends plain-HTTP/1.1 requests on the calling worker's pooled connections.
#[derive(Debug)]
pub struct Http1Client {
    id: u64,
    limits: HeadLimits,
    connect_timeout: Duration,
    idle_timeout: Duration,
}

impl Http1Client {
    /// A client reading response heads of at most `max_header_bytes` and `max_header_fields`.
    pub fn new(
        max_header_bytes: usize,
        max_header_fields: usize,
        connect_timeout: Duration,
        idle_timeout: Duration,
    ) -> Self {
        Http1Client {
            id: NEXT_CLIENT.fetch_add(1, Ordering::Relaxed),
            limits: HeadLimits { max_bytes: max_header_bytes, max_fields: max_header_fields },
            connect_timeout,
            idle_timeout,
        }
    }

    /// Whether `uri` is one this client serves: plain HTTP.
    pub fn handles(uri: &Uri) -> bool {
        uri.scheme() == Some(&Scheme::HTTP)
    }

    /// Sends `request` (an absolute `http://` URI) in origin form with the authority's `Host`.
    pub async fn request<B: SendBody>(&self, request: Request<B>) -> Result<Response<PooledBody>, Http1Error> {
        let (parts, body) = request.into_parts();
        let authority = parts.uri.authority().ok_or(Http1Error::NoAuthority)?.clone();
        let target = parts.uri.path_and_query().map_or("/", |origin| origin.as_str());
        let (host, pooled) = self.checkout(&authority);
        let mut out = Vec::with_capacity(512);
        let framing =
            head::write_request(&mut out, &parts.method, target, &host, &parts.headers, body.size_hint().exact());
        let sender = Sender::new(out, framing, body);
        let mut connection = match pooled {
            Some(connection) => connection,
            None => self.connect(&authority).await?,
        };
        let answered = exchange::exchange(&mut connection, sender, &parts.method, self.limits).await?;
        let checkin = (!answered.send_failed && answered.head.keep_alive).then(|| Checkin {
            client: self.id,
            authority,
            idle_timeout: self.idle_timeout,
        });
        let unsent = answered.unsent.map(Sender::boxed);
        let body = Http1Body::new(connection, answered.head.framing, checkin, unsent);
        Ok(Response::from_parts(answered.head.parts, PooledBody::Own(Box::new(body))))
    }

    /// The authority's `Host` value and an idle connection if one is still open.
    fn checkout(&self, authority: &Authority) -> (HeaderValue, Option<Connection>) {
        POOLS.with(|pools| {
            let mut pools = pools.borrow_mut();
            let index = match pools.iter().position(|pool| pool.is(self.id, authority)) {
                Some(index) => index,
                None => {
                    pools.push(Pool {
                        client: self.id,
                        authority: authority.clone(),
                        host: host_value(authority),
                        idle: Vec::new(),
                    });
                    tokio::spawn(sweep(self.id, authority.clone(), self.idle_timeout));
                    pools.len() - 1
                }
            };
            let pool = &mut pools[index];
            expire(&mut pool.idle, self.idle_timeout);
            let connection =
                std::iter::from_fn(|| pool.idle.pop()).map(|idle| idle.connection).find(Connection::is_usable);
            (pool.host.clone(), connection)
        })
    }

    async fn connect(&self, authority: &Authority) -> Result<Connection, Http1Error> {
        let failed = |err: std::io::Error| Http1Error::Connect(ConnectError::Direct(Box::new(err)));
        let host = authority.host().trim_start_matches('[').trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(80);
        let stream = match tokio::time::timeout(self.connect_timeout, TcpStream::connect((host, port))).await {
            Ok(stream) => stream.map_err(failed)?,
            Err(_elapsed) => {
                return Err(failed(std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")));
            }
        };
        // LLM streams are many small writes; Nagle's algorithm would delay each token.
        stream.set_nodelay(true).map_err(failed)?;
        let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(60));
        socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive).map_err(failed)?;
        Ok(Connection::new(stream))
    }
}

/// `Host` as hyper-util's client wrote it: the port only when it is not the default.
fn host_value(authority: &Authority) -> HeaderValue {
    let value = match authority.port_u16() {
        Some(80) | None => HeaderValue::from_str(authority.host()),
        Some(_) => HeaderValue::from_str(authority.as_str()),
    };
    value.unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Closes one pool's connections once they have been idle too long, even on a worker that
/// gets no more requests: one timer per pool and worker (not per request), ticking at half
/// the idle timeout, so a connection is closed between one and one and a half timeouts after
/// it went idle. Ends with the worker's runtime.
async fn sweep(client: u64, authority: Authority, timeout: Duration) {
    let mut tick = tokio::time::interval((timeout / 2).max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        POOLS.with(|pools| {
            let mut pools = pools.borrow_mut();
            if let Some(pool) = pools.iter_mut().find(|pool| pool.is(client, &authority)) {
                expire(&mut pool.idle, timeout);
            }
        });
    }
}

/// Drops the idle connections (at the bottom of the stack) that have been idle too long.
fn expire(idle: &mut Vec<Idle>, timeout: Duration) {
    if !idle.is_empty() {
        expire_at(idle, timeout, Instant::now());
    }
}

/// [`expire`] as of `now` (one clock read for the whole stack).
fn expire_at(idle: &mut Vec<Idle>, timeout: Duration, now: Instant) {
    let fresh = idle.iter().position(|idle| now.saturating_duration_since(idle.since) < timeout).unwrap_or(idle.len());
    idle.drain(..fresh);
}

/// Where a connection goes back once its response has been read.
#[derive(Debug)]
pub(crate) struct Checkin {
    client: u64,
    authority: Authority,
    idle_timeout: Duration,
}

impl Checkin {
    fn put_back(self, connection: Connection) {
        POOLS.with(|pools| {
            let mut pools = pools.borrow_mut();
            let Some(pool) = pools.iter_mut().find(|pool| pool.is(self.client, &self.authority)) else {
                return;
            };
            let now = Instant::now();
            expire_at(&mut pool.idle, self.idle_timeout, now);
            if pool.idle.len() < MAX_IDLE_PER_AUTHORITY {
                pool.idle.push(Idle { connection, since: now });
            }
        });
    }
}

#[cfg(test)]
mod tests;
