//! The server's own HTTP/1.1, for the plain API call: a request with a small body (at most
//! [`request::MAX_WHOLE_BODY`], read whole before the handler is called; an API call's JSON is
//! a few KiB), answered on a keep-alive connection. The connection's task reads the head
//! with `httparse` ([`request`]), calls the handler, and writes the response head
//! ([`response`]) and body with the upstream client's [`Sender`] (small frames gathered, large
//! ones written from their own buffers, the head in the same write as the first frames).
//!
//! hyper's server connection is a generic state machine polled several times per request,
//! with a body channel for every request that has a body and two arrays of `max_headers` slots
//! allocated for every head. This path does the same work in the one poll loop that reads and
//! writes the socket: about 3,900 fewer instructions per proxied request, and 2,100 fewer per
//! refused one (callgrind, `scripts/bench-instructions`).
//!
//! Everything else is hyper's, unchanged: a head this codec does not take ([`request::Head`]
//! lists them: every head hyper refuses, and `Expect`, `Upgrade`, chunked or larger bodies,
//! HTTP/1.0, unusual methods) hands the connection to hyper's HTTP/1.1 server from that
//! request on, with the bytes already read replayed first ([`replay`]). hyper then answers it
//! (a 400, a 431, a `100 Continue`, a streamed upload) as it always did.
//!
//! While a request is in flight the connection is still read, as hyper reads it: the first
//! bytes a client pipelines wait in the buffer for their turn, and a client that closes its
//! side with nothing pipelined abandons the request (the handler's future is dropped, which
//! cancels the upstream exchange).

mod replay;
mod request;
mod response;

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use http_body::Body;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

pub(super) use self::replay::Replay;
use self::request::Head;
use self::response::Written;
use super::Handler;
use super::activity::Streams;
use super::connection::Signal;
use crate::upstream::http1::{Http1Error, SendBody, SendFraming, Sender};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Bytes read from the client at a time.
const READ_SIZE: usize = 8 * 1024;
/// Room for a typical response head.
const RESPONSE_HEAD_SIZE: usize = 1024;

/// How the own codec's part of a connection ended.
pub(super) enum Served {
    /// The connection is over.
    Closed,
    /// A request this codec does not take came: hyper serves the connection from it on.
    HandedOff(Replay),
}

/// Serves `stream` until the client closes it, the watcher's signal says to close it while
/// idle, or a request must be handed to hyper.
pub(super) async fn serve<H: Handler>(
    stream: TcpStream,
    handler: &Arc<H>,
    streams: &Streams,
    signal: &Signal,
    max_head_bytes: usize,
) -> Result<Served, ServeError> {
    let mut client = Client { io: stream, read: BytesMut::new(), max_buffered: max_head_bytes };
    // Each response head is written into this buffer, which the next one reuses (unless a
    // streamed body grew it: an idle connection keeps no more than a head's worth).
    let mut out = Vec::with_capacity(RESPONSE_HEAD_SIZE);
    loop {
        let (request, keep_alive) = match poll_fn(|cx| client.poll_head(cx, signal)).await {
            Next::Request(Head::Ready { request, keep_alive }) => (request, keep_alive),
            Next::Request(Head::Partial) => continue,
            Next::Request(Head::Invalid) => {
                // Best effort, as hyper's: the connection closes either way.
                let _ = client.io.try_write(response::BAD_REQUEST);
                return Ok(Served::Closed);
            }
            Next::Request(Head::Handoff) => return Ok(Served::HandedOff(Replay::new(client.read.freeze(), client.io))),
            Next::Closed => return Ok(Served::Closed),
            Next::Failed(err) => return Err(ServeError::Read(err)),
        };
        let large = request.body().size_hint().exact().is_some_and(|length| length > READ_SIZE as u64);
        let open = streams.open();
        let mut answer = pin!(handler.clone().call(request));
        let Some(response) = client.while_in_flight(|cx, _| answer.as_mut().poll(cx)).await else {
            return Ok(Served::Closed);
        };
        let close = !keep_alive || signal.closing();
        // A body already over is exactly empty, whatever its size hint or a stated length say.
        let body = response.body();
        let length = if body.is_end_stream() { Some(0) } else { body.size_hint().exact() };
        let late = |field: &mut dyn FnMut(&_, &_)| H::late_fields(&response, field);
        let Written { framing, close } =
            response::write_head(&mut out, response.status(), response.headers(), late, length, close);
        let body = response.into_body();
        // The body goes (in `send`, or here) before the count: its request has ended.
        let sent;
        (sent, out) = match framing {
            Some(framing) => client.send(out, framing, body).await,
            // A status without a body (204, 304): the head alone, whatever the body holds.
            None => {
                drop(body);
                client.send(out, SendFraming::Length(0), http_body_util::Empty::new()).await
            }
        };
        if out.capacity() > 4 * RESPONSE_HEAD_SIZE {
            out = Vec::with_capacity(RESPONSE_HEAD_SIZE);
        }
        // Nor a large body's read buffer, which the rest of the buffer still shares.
        if large && client.read.is_empty() {
            client.read = BytesMut::new();
        }
        drop(open);
        match sent {
            Some(Ok(())) if !close => {}
            Some(Ok(())) => {
                // The end of the stream follows the response, before the socket closes.
                let _ = client.io.shutdown().await;
                return Ok(Served::Closed);
            }
            None => return Ok(Served::Closed),
            Some(Err(err)) => return Err(err.into()),
        }
    }
}

/// Why the own codec ended a connection early (logged by the connection, at debug level).
#[derive(Debug, thiserror::Error)]
pub(super) enum ServeError {
    #[error("reading from the client failed")]
    Read(#[source] std::io::Error),
    #[error("writing the response failed")]
    Write(#[source] std::io::Error),
    #[error("the response body failed")]
    Body(#[source] BoxError),
    #[error("the response body's length differs from the length its head declared")]
    BodyLength,
}

impl From<Http1Error> for ServeError {
    /// The sender's errors, named for the direction it sends in here.
    fn from(err: Http1Error) -> Self {
        match err {
            Http1Error::Write(err) => ServeError::Write(err),
            Http1Error::RequestBody(err) => ServeError::Body(err),
            Http1Error::BodyLength => ServeError::BodyLength,
            other => ServeError::Body(other.into()),
        }
    }
}

/// What the connection's reads came to.
#[expect(clippy::large_enum_variant, reason = "matched as soon as returned; a box would allocate for every request")]
enum Next {
    /// A whole head, or one for hyper (never [`Head::Partial`]).
    Request(Head),
    /// The client closed the connection between requests, or it was told to close while idle.
    Closed,
    Failed(std::io::Error),
}

/// The client's connection and what has been read from it but not yet used.
struct Client {
    io: TcpStream,
    read: BytesMut,
    /// The most bytes buffered ahead while a request is in flight.
    max_buffered: usize,
}

impl Client {
    /// Reads until the buffer holds a whole request head (and its body), or the connection
    /// ends; an idle connection ends when the signal says to close.
    fn poll_head(&mut self, cx: &mut Context<'_>, signal: &Signal) -> Poll<Next> {
        loop {
            if !self.read.is_empty() {
                match request::parse(&mut self.read, self.max_buffered) {
                    Head::Partial => {}
                    head => return Poll::Ready(Next::Request(head)),
                }
            } else if signal.closing() {
                return Poll::Ready(Next::Closed);
            }
            match ready!(self.poll_fill(cx)) {
                // A head cut short is dropped, as hyper drops it.
                Ok(0) => return Poll::Ready(Next::Closed),
                Ok(_) => {}
                Err(err) => return Poll::Ready(Next::Failed(err)),
            }
        }
    }

    /// Sends a response whose head is in `out`, and gives the buffer back emptied: `None` if
    /// the client left first.
    async fn send<B: SendBody>(
        &mut self,
        out: Vec<u8>,
        framing: SendFraming,
        body: B,
    ) -> (Option<Result<(), Http1Error>>, Vec<u8>) {
        let mut sender = Sender::new(out, framing, body);
        let sent = self.while_in_flight(|cx, io| sender.poll_send(io, cx)).await;
        (sent, sender.into_buffer())
    }

    /// Runs `work` (the handler, then the response's sending) to its end while watching the
    /// client: `None` if it closed its side first, or the connection failed.
    async fn while_in_flight<T>(&mut self, mut work: impl FnMut(&mut Context<'_>, &TcpStream) -> Poll<T>) -> Option<T> {
        poll_fn(|cx| {
            if let Poll::Ready(done) = work(cx, &self.io) {
                return Poll::Ready(Some(done));
            }
            // Watched only while nothing is buffered, as hyper does: once a client has pipelined
            // its next request, its end of the stream (a half-close after the last request)
            // must not abandon the requests it is waiting for. Those bytes wait their turn.
            if self.read.is_empty() {
                match ready!(self.poll_fill(cx)) {
                    Ok(0) | Err(_) => return Poll::Ready(None),
                    Ok(_) => {}
                }
            }
            Poll::Pending
        })
        .await
    }

    /// Reads more into the buffer; `Ok(0)` at the end of the stream. A read that does not fill
    /// the space offered tells tokio the socket is drained, so the next poll waits for
    /// readiness without a system call.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        if self.read.capacity() - self.read.len() < READ_SIZE / 2 {
            self.read.reserve(READ_SIZE);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read)
    }
}

#[cfg(test)]
mod tests;
