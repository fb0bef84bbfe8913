//! One request and its response head on an upstream connection, driven by the forwarding task
//! itself. The request body is written while the response head is awaited, so an upstream that
//! answers early (a 413 before the whole upload) is heard, and the head and the first body
//! frames go out in one write when they are ready together (nearly every API call). A body
//! still going out when the head arrives goes on with the response body ([`super::Http1Body`]),
//! as hyper's client does: an upstream may answer first and read the rest of the upload after.
//! Small frames are copied into one buffer and gathered; a frame of 16 KiB or more is written
//! from its own buffer, in the same vectored write as what precedes it, so the bulk of a large
//! upload is never copied.

use std::future::poll_fn;
use std::io::{IoSlice, Write as _};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http::Method;
use http_body::Body;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use tokio::net::TcpStream;

use super::head::{self, HeadLimits, Parsed, ResponseHead, SendFraming};
use super::{Connection, Http1Error};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body this client can send: the data plane's (the client's body, counted and
/// limited), or any other in tests.
pub trait SendBody: Body<Data = Bytes, Error: Into<BoxError>> + Unpin + Send + 'static {}

impl<B> SendBody for B where B: Body<Data = Bytes, Error: Into<BoxError>> + Unpin + Send + 'static {}

/// A request body that outlived its exchange, boxed once for the response body to drive.
pub(super) type PendingBody = UnsyncBoxBody<Bytes, BoxError>;

/// Pending output is written once it reaches this size, even if more frames are ready.
const WRITE_AT: usize = 64 * 1024;
/// A data frame at least this large is written from its own buffer instead of being copied.
const WRITE_DIRECT: usize = 16 * 1024;

/// A request on its way out: the bytes not yet written, then the body's frames as they come.
pub(crate) struct Sender<B> {
    body: B,
    /// Output gathered for the next write (the head, chunk framing, small frames); written from
    /// `written` on.
    out: Vec<u8>,
    written: usize,
    /// A large frame, written after `out` and before anything else: nothing is added to `out`
    /// until it has gone, then its chunk's CRLF (and the body's terminator, if the body ended).
    direct: Bytes,
    framing: SendFraming,
    /// Every frame of the body has been taken (its terminator is in `out` or follows `direct`).
    ended: bool,
}

impl<B> std::fmt::Debug for Sender<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender").field("framing", &self.framing).field("ended", &self.ended).finish_non_exhaustive()
    }
}

impl<B: SendBody> Sender<B> {
    /// A request whose head is `head`, its body framed as `framing`.
    pub(crate) fn new(head: Vec<u8>, framing: SendFraming, body: B) -> Self {
        let ended = body.is_end_stream();
        let mut sender = Sender { body, out: head, written: 0, direct: Bytes::new(), framing, ended: false };
        if ended {
            sender.end();
        }
        sender
    }

    /// The output buffer back, emptied, for the next message on the same connection.
    pub(crate) fn into_buffer(self) -> Vec<u8> {
        let mut out = self.out;
        out.clear();
        out
    }

    /// The same request with its body boxed, to be driven by a response body.
    pub(super) fn boxed(self) -> Sender<PendingBody> {
        Sender {
            body: self.body.map_err(Into::into).boxed_unsync(),
            out: self.out,
            written: self.written,
            direct: self.direct,
            framing: self.framing,
            ended: self.ended,
        }
    }

    /// Writes what is ready, gathering the frames the body has ready into as few writes as it
    /// can; ready once the whole request has been written.
    pub(crate) fn poll_send(&mut self, io: &TcpStream, cx: &mut Context<'_>) -> Poll<Result<(), Http1Error>> {
        loop {
            while !self.ended && self.direct.is_empty() && self.out.len() < WRITE_AT {
                match Pin::new(&mut self.body).poll_frame(cx) {
                    Poll::Pending if self.out.is_empty() => return Poll::Pending,
                    Poll::Pending => break,
                    Poll::Ready(None) => self.end_checked()?,
                    Poll::Ready(Some(Err(err))) => return Poll::Ready(Err(Http1Error::RequestBody(err.into()))),
                    Poll::Ready(Some(Ok(frame))) => {
                        // Trailers are not forwarded: a request's trailers carry nothing an API
                        // reads.
                        if let Ok(data) = frame.into_data() {
                            self.append(data)?;
                        }
                        if self.body.is_end_stream() {
                            self.end_checked()?;
                        }
                    }
                }
            }
            ready!(self.poll_write_out(io, cx))?;
            if self.ended {
                return Poll::Ready(Ok(()));
            }
        }
    }

    /// Adds one data frame, framed as a chunk if the body is chunked: copied into `out` if it
    /// is small, else held as the direct frame. A body longer than the length its head declared
    /// is refused: the excess would read as another request.
    fn append(&mut self, data: Bytes) -> Result<(), Http1Error> {
        if data.is_empty() {
            return Ok(());
        }
        match &mut self.framing {
            SendFraming::Length(remaining) => {
                *remaining = remaining.checked_sub(data.len() as u64).ok_or(Http1Error::BodyLength)?;
            }
            SendFraming::Chunked => {
                // Writing to a vector cannot fail.
                let _ = write!(self.out, "{:x}\r\n", data.len());
            }
        }
        if data.len() >= WRITE_DIRECT {
            self.direct = data;
            return Ok(());
        }
        self.out.extend_from_slice(&data);
        if self.framing == SendFraming::Chunked {
            self.out.extend_from_slice(b"\r\n");
        }
        Ok(())
    }

    /// The body ended: it must have been as long as its head said.
    fn end_checked(&mut self) -> Result<(), Http1Error> {
        if matches!(self.framing, SendFraming::Length(remaining) if remaining > 0) {
            return Err(Http1Error::BodyLength);
        }
        self.end();
        Ok(())
    }

    /// Every frame has been taken; a chunked body's terminator follows the direct frame, if
    /// there is one, else what `out` holds.
    fn end(&mut self) {
        self.ended = true;
        if self.direct.is_empty() && self.framing == SendFraming::Chunked {
            self.out.extend_from_slice(b"0\r\n\r\n");
        }
    }

    /// The direct frame has gone (and `out` with it): its chunk's CRLF, and the terminator if
    /// the body ended meanwhile, come next.
    fn direct_written(&mut self) {
        self.out.clear();
        self.written = 0;
        if self.framing == SendFraming::Chunked {
            self.out.extend_from_slice(b"\r\n");
            if self.ended {
                self.out.extend_from_slice(b"0\r\n\r\n");
            }
        }
    }

    /// Writes `out`, then the direct frame, in one vectored write when both are pending.
    fn poll_write_out(&mut self, io: &TcpStream, cx: &mut Context<'_>) -> Poll<Result<(), Http1Error>> {
        while self.written < self.out.len() || !self.direct.is_empty() {
            let gathered = &self.out[self.written..];
            let attempt = if self.direct.is_empty() {
                io.try_write(gathered)
            } else {
                io.try_write_vectored(&[IoSlice::new(gathered), IoSlice::new(&self.direct)])
            };
            match attempt {
                Ok(0) => return Poll::Ready(Err(Http1Error::Write(std::io::ErrorKind::WriteZero.into()))),
                Ok(written) => {
                    let from_out = written.min(gathered.len());
                    self.written += from_out;
                    if written > from_out {
                        self.direct.advance(written - from_out);
                        if self.direct.is_empty() {
                            self.direct_written();
                        }
                    }
                }
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                    ready!(io.poll_write_ready(cx)).map_err(Http1Error::Write)?;
                }
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(err) => return Poll::Ready(Err(Http1Error::Write(err))),
            }
        }
        self.out.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

/// What came of an exchange that got a response head.
#[derive(Debug)]
pub(super) struct Answered<B> {
    pub(super) head: ResponseHead,
    /// The request body still going out when the head arrived.
    pub(super) unsent: Option<Sender<B>>,
    /// Whether writing the request failed (the connection cannot be reused).
    pub(super) send_failed: bool,
}

/// Sends the request `sender` holds and reads the response head.
pub(super) async fn exchange<B: SendBody>(
    connection: &mut Connection,
    sender: Sender<B>,
    method: &Method,
    limits: HeadLimits,
) -> Result<Answered<B>, Http1Error> {
    let mut sender = Some(sender);
    let mut send_failed = None;
    let head = poll_fn(|cx| {
        if let Some(sending) = sender.as_mut() {
            match sending.poll_send(&connection.io, cx) {
                Poll::Pending => {}
                Poll::Ready(Ok(())) => sender = None,
                // The client's body failed: the exchange is over.
                Poll::Ready(Err(err @ (Http1Error::RequestBody(_) | Http1Error::BodyLength))) => {
                    return Poll::Ready(Err(err));
                }
                // The upstream may have answered and closed early: read what it said.
                Poll::Ready(Err(err)) => {
                    sender = None;
                    send_failed = Some(err);
                }
            }
        }
        let failed = |err, send_failed: &mut Option<Http1Error>| Poll::Ready(Err(send_failed.take().unwrap_or(err)));
        loop {
            if !connection.read.is_empty() {
                match head::parse_response(&mut connection.read, method, limits) {
                    Ok(Parsed::Final(head)) => return Poll::Ready(Ok(head)),
                    Ok(Parsed::Interim) => continue,
                    Ok(Parsed::Partial) => {}
                    Err(err) => return failed(err, &mut send_failed),
                }
            }
            match ready!(connection.poll_fill(cx)) {
                Ok(0) if connection.read.is_empty() => return failed(Http1Error::Closed, &mut send_failed),
                Ok(0) => return failed(Http1Error::Incomplete, &mut send_failed),
                Ok(_) => {}
                Err(err) => return failed(Http1Error::Read(err), &mut send_failed),
            }
        }
    })
    .await?;
    Ok(Answered { head, unsent: sender, send_failed: send_failed.is_some() })
}
