//! Plain-HTTP/1.1 upstream connections, driven by hyper's `client::conn::http1` from a pool per
//! serving worker.
//!
//! hyper-util's pooled client costs about 14% of a proxied request's instructions (its pool's
//! checkout and return through a `HashMap` keyed by scheme and authority, a `Host` header
//! formatted per request, a channel to the connection's task). A plain-HTTP upstream needs none
//! of its generality (ALPN, HTTP/2, proxies), so its requests go here instead: each worker
//! keeps, in a thread-local, a small stack of idle connections per upstream authority (no lock:
//! a worker is one thread) with the `Host` value computed once. A connection is handshaken over
//! the worker's own TCP stream and its task spawned on the worker's runtime, so a request never
//! leaves its thread. A connection goes back on the stack only once its response body has been
//! read to the end without an error; otherwise it is dropped, which closes it. Idle connections
//! older than the idle timeout are discarded when the stack is next used and by a sweep task
//! per pool and worker (so an idle worker closes them too), and at most
//! [`MAX_IDLE_PER_AUTHORITY`] are kept. TLS, HTTP/2 and egress proxies stay on the general
//! client ([`super::WorkerClients`]).

use std::cell::RefCell;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HOST;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{Builder, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::body::RequestBody;
use crate::egress::connector::ConnectError;

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
    sender: SendRequest<RequestBody>,
    since: Instant,
}

/// Why a plain-HTTP/1.1 exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum Http1Error {
    #[error("upstream connection failed")]
    Connect(#[source] ConnectError),
    #[error("upstream request failed")]
    Request(#[source] hyper::Error),
    #[error("the upstream URI has no authority")]
    NoAuthority,
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
    builder: Builder,
    connect_timeout: Duration,
    idle_timeout: Duration,
}

impl Http1Client {
    pub fn new(builder: Builder, connect_timeout: Duration, idle_timeout: Duration) -> Self {
        Http1Client { id: NEXT_CLIENT.fetch_add(1, Ordering::Relaxed), builder, connect_timeout, idle_timeout }
    }

    /// Whether `uri` is one this client serves: plain HTTP.
    pub fn handles(uri: &Uri) -> bool {
        uri.scheme() == Some(&Scheme::HTTP)
    }

    /// Sends `request` (an absolute `http://` URI) in origin form with the authority's `Host`.
    pub async fn request(&self, mut request: Request<RequestBody>) -> Result<Response<PooledBody>, Http1Error> {
        let parts = std::mem::take(request.uri_mut()).into_parts();
        let authority = parts.authority.ok_or(Http1Error::NoAuthority)?;
        if let Some(origin) = parts.path_and_query {
            *request.uri_mut() = Uri::from(origin);
        }
        let (host, mut pooled) = self.checkout(&authority);
        // Replaces the client's `Host`, which `headers::prepare_request` leaves in place.
        request.headers_mut().insert(HOST, host);

        loop {
            let reused = pooled.is_some();
            let mut sender = match pooled.take() {
                Some(sender) => sender,
                None => self.connect(&authority).await?,
            };
            if let Err(err) = sender.ready().await {
                if reused {
                    // Closed while idle (the upstream's keep-alive timeout): try the next.
                    pooled = self.checkout(&authority).1;
                    continue;
                }
                return Err(Http1Error::Request(err));
            }
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let checkin = Checkin { client: self.id, authority, sender, idle_timeout: self.idle_timeout };
                    return Ok(response.map(|body| PooledBody::new(body, Some(checkin))));
                }
                Err(mut err) => match err.take_message() {
                    // Not sent at all on a connection that had been idle: the legacy client's
                    // retry, on a new connection.
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(Http1Error::Request(err.into_error())),
                },
            }
        }
    }

    /// The authority's `Host` value and an idle connection if one is still open.
    fn checkout(&self, authority: &Authority) -> (HeaderValue, Option<SendRequest<RequestBody>>) {
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
            let sender = std::iter::from_fn(|| pool.idle.pop()).map(|idle| idle.sender).find(|s| !s.is_closed());
            (pool.host.clone(), sender)
        })
    }

    async fn connect(&self, authority: &Authority) -> Result<SendRequest<RequestBody>, Http1Error> {
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
        let (sender, connection) = self.builder.handshake(TokioIo::new(stream)).await.map_err(Http1Error::Request)?;
        // On the calling worker's runtime: the connection's I/O stays on this thread.
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "upstream connection ended with an error");
            }
        });
        Ok(sender)
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

/// A connection to give back to its worker's pool once its response has been read.
struct Checkin {
    client: u64,
    authority: Authority,
    sender: SendRequest<RequestBody>,
    idle_timeout: Duration,
}

impl Checkin {
    fn put_back(self) {
        if self.sender.is_closed() {
            return;
        }
        POOLS.with(|pools| {
            let mut pools = pools.borrow_mut();
            let Some(pool) = pools.iter_mut().find(|pool| pool.is(self.client, &self.authority)) else {
                return;
            };
            let now = Instant::now();
            expire_at(&mut pool.idle, self.idle_timeout, now);
            if pool.idle.len() < MAX_IDLE_PER_AUTHORITY {
                pool.idle.push(Idle { sender: self.sender, since: now });
            }
        });
    }
}

/// An upstream response body that returns its connection to the pool once read to the end.
pub struct PooledBody {
    inner: Incoming,
    checkin: Option<Checkin>,
}

impl std::fmt::Debug for PooledBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBody").field("pooled", &self.checkin.is_some()).finish_non_exhaustive()
    }
}

impl PooledBody {
    fn new(inner: Incoming, checkin: Option<Checkin>) -> Self {
        let mut body = PooledBody { inner, checkin };
        // An empty body (HEAD, 204, 304) is never polled: the connection is free already.
        if body.inner.is_end_stream() {
            body.release();
        }
        body
    }

    /// A body whose connection is not this module's (the general client's).
    pub fn unpooled(inner: Incoming) -> Self {
        PooledBody { inner, checkin: None }
    }

    fn release(&mut self) {
        if let Some(checkin) = self.checkin.take() {
            checkin.put_back();
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            // The server stops polling once `is_end_stream` says so, so the last frame releases.
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.release(),
            Poll::Ready(None) => self.release(),
            // Not reusable: dropping the sender closes the connection.
            Poll::Ready(Some(Err(_))) => self.checkin = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_omits_the_default_port() {
        assert_eq!(host_value(&Authority::from_static("example.com")), "example.com");
        assert_eq!(host_value(&Authority::from_static("example.com:80")), "example.com");
        assert_eq!(host_value(&Authority::from_static("127.0.0.1:8080")), "127.0.0.1:8080");
        assert_eq!(host_value(&Authority::from_static("[::1]:9000")), "[::1]:9000");
    }

    #[test]
    fn only_plain_http_is_served() {
        assert!(Http1Client::handles(&Uri::from_static("http://127.0.0.1:1/v1/messages")));
        assert!(!Http1Client::handles(&Uri::from_static("https://api.anthropic.com/v1/messages")));
    }
}
