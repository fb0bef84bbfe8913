//! The upstream response body, read straight off its connection by the task that forwards it:
//! each frame is a slice of the connection's read buffer (no copy, no channel, no other task),
//! delimited by the framing its head announced. Chunk sizes are parsed by `httparse`.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};

use super::exchange::{PendingBody, Sender};
use super::head::ResponseFraming;
use super::{Checkin, Connection, Http1Error};

/// The most bytes a chunk-size line or a trailer section may take before the body is refused
/// as malformed: both are tiny in any real response.
const MAX_CHUNK_META: usize = 64 * 1024;
/// The most trailer fields a chunked body may end with.
const MAX_TRAILER_FIELDS: usize = 32;

/// Where the body's reader is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decoding {
    /// This many bytes of a `Content-Length` body are still to come.
    Length(u64),
    /// A chunk-size line comes next.
    ChunkSize,
    /// This many bytes of the current chunk are still to come, then its CRLF.
    ChunkData(u64),
    /// The CRLF that ends a chunk's data.
    ChunkEnd,
    /// After the last chunk: the trailer section (discarded) up to its empty line.
    Trailers,
    /// Everything until the upstream closes.
    UntilClose,
    /// The whole body has been read.
    Done,
}

/// What the decoder made of the buffered bytes.
enum Step {
    Data(Bytes),
    NeedMore,
    /// Moved on without output (a chunk's framing consumed).
    Moved,
}

/// A response body read from an upstream connection this module owns.
#[derive(Debug)]
pub struct Http1Body {
    connection: Option<Connection>,
    decoding: Decoding,
    /// Where the connection goes once the body has been read to the end, if it can be reused.
    checkin: Option<Checkin>,
    /// The request body, when the response began before it had all been sent: driven as this
    /// body is polled, and the connection is reusable only once it is done.
    sending: Option<Sender<PendingBody>>,
}

impl Http1Body {
    pub(super) fn new(
        connection: Connection,
        framing: ResponseFraming,
        checkin: Option<Checkin>,
        sending: Option<Sender<PendingBody>>,
    ) -> Self {
        let decoding = match framing {
            ResponseFraming::Empty => Decoding::Done,
            ResponseFraming::Length(length) => Decoding::Length(length),
            ResponseFraming::Chunked => Decoding::ChunkSize,
            ResponseFraming::UntilClose => Decoding::UntilClose,
        };
        let mut body = Http1Body { connection: Some(connection), decoding, checkin, sending };
        // An empty body is never polled: the connection is free already.
        if body.decoding == Decoding::Done {
            body.release();
        }
        body
    }

    /// Gives the connection back to its pool, if it can carry another exchange: the body was
    /// read to its end and nothing beyond it came.
    fn release(&mut self) {
        let connection = self.connection.take();
        let sent = self.sending.take().is_none();
        if let (Some(checkin), Some(connection)) = (self.checkin.take(), connection) {
            if sent && connection.read.is_empty() {
                checkin.put_back(connection);
            }
        }
    }

    /// Consumes what the buffer holds according to the framing.
    fn step(&mut self) -> Result<Step, Http1Error> {
        let Some(connection) = self.connection.as_mut() else { return Ok(Step::NeedMore) };
        let buf = &mut connection.read;
        match self.decoding {
            Decoding::Length(remaining) | Decoding::ChunkData(remaining) => {
                if buf.is_empty() {
                    return Ok(Step::NeedMore);
                }
                let take = usize::try_from(remaining).unwrap_or(usize::MAX).min(buf.len());
                let data = buf.split_to(take).freeze();
                let left = remaining - take as u64;
                self.decoding = match self.decoding {
                    Decoding::Length(_) if left == 0 => Decoding::Done,
                    Decoding::Length(_) => Decoding::Length(left),
                    _ if left == 0 => Decoding::ChunkEnd,
                    _ => Decoding::ChunkData(left),
                };
                Ok(Step::Data(data))
            }
            // `httparse` reads a line without digits (a stray CRLF) as the last chunk.
            Decoding::ChunkSize if buf.is_empty() => Ok(Step::NeedMore),
            Decoding::ChunkSize if !buf[0].is_ascii_hexdigit() => Err(Http1Error::Malformed("chunk size")),
            Decoding::ChunkSize => match httparse::parse_chunk_size(buf) {
                Ok(httparse::Status::Complete((used, 0))) => {
                    buf.advance(used);
                    self.decoding = Decoding::Trailers;
                    Ok(Step::Moved)
                }
                Ok(httparse::Status::Complete((used, size))) => {
                    buf.advance(used);
                    self.decoding = Decoding::ChunkData(size);
                    Ok(Step::Moved)
                }
                Ok(httparse::Status::Partial) if buf.len() > MAX_CHUNK_META => Err(Http1Error::Malformed("chunk size")),
                Ok(httparse::Status::Partial) => Ok(Step::NeedMore),
                Err(httparse::InvalidChunkSize) => Err(Http1Error::Malformed("chunk size")),
            },
            Decoding::ChunkEnd => match buf.get(..2) {
                None => Ok(Step::NeedMore),
                Some(b"\r\n") => {
                    buf.advance(2);
                    self.decoding = Decoding::ChunkSize;
                    Ok(Step::Moved)
                }
                Some(_) => Err(Http1Error::Malformed("chunk end")),
            },
            Decoding::Trailers => {
                // Field lines, then an empty line; none is forwarded (the client's framing is
                // the gateway's own), but they must be field lines.
                let mut fields = [httparse::EMPTY_HEADER; MAX_TRAILER_FIELDS];
                match httparse::parse_headers(buf, &mut fields) {
                    Ok(httparse::Status::Complete((used, _))) => {
                        buf.advance(used);
                        self.decoding = Decoding::Done;
                        Ok(Step::Moved)
                    }
                    Ok(httparse::Status::Partial) if buf.len() > MAX_CHUNK_META => {
                        Err(Http1Error::Malformed("trailers"))
                    }
                    Ok(httparse::Status::Partial) => Ok(Step::NeedMore),
                    Err(_) => Err(Http1Error::Malformed("trailers")),
                }
            }
            Decoding::UntilClose => {
                if buf.is_empty() {
                    return Ok(Step::NeedMore);
                }
                Ok(Step::Data(buf.split().freeze()))
            }
            Decoding::Done => Ok(Step::NeedMore),
        }
    }

    /// Steps over what the buffer holds until there is data or the body ends, without reading.
    /// A chunk's closing framing that is already buffered is consumed with its data, so the
    /// body knows it has ended when its last data goes out.
    fn decode(&mut self) -> Result<Option<Bytes>, Http1Error> {
        loop {
            match self.step()? {
                Step::Data(data) => {
                    // Run ahead over framing only, never over the next data. An error here is
                    // met again by the next poll, after this data has gone out.
                    while matches!(self.decoding, Decoding::ChunkEnd | Decoding::ChunkSize | Decoding::Trailers) {
                        if !matches!(self.step(), Ok(Step::Moved)) {
                            break;
                        }
                    }
                    return Ok(Some(data));
                }
                Step::Moved => {}
                Step::NeedMore => return Ok(None),
            }
        }
    }

    fn fail(&mut self, err: Http1Error) -> Poll<Option<Result<Frame<Bytes>, Http1Error>>> {
        // Not reusable: dropping the connection closes it.
        self.checkin = None;
        self.sending = None;
        self.connection = None;
        self.decoding = Decoding::Done;
        Poll::Ready(Some(Err(err)))
    }
}

impl Body for Http1Body {
    type Data = Bytes;
    type Error = Http1Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Http1Error>>> {
        let this = &mut *self;
        if let (Some(sending), Some(connection)) = (this.sending.as_mut(), this.connection.as_ref()) {
            match sending.poll_send(&connection.io, cx) {
                Poll::Pending => {}
                Poll::Ready(Ok(())) => this.sending = None,
                // The upstream answers anyway; the connection is not reused.
                Poll::Ready(Err(err)) => {
                    tracing::debug!(error = %err, "the rest of the request could not be sent upstream");
                    this.sending = None;
                    this.checkin = None;
                }
            }
        }
        loop {
            match self.decode() {
                Ok(Some(data)) => {
                    if self.decoding == Decoding::Done {
                        self.release();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(None) if self.decoding == Decoding::Done => {
                    self.release();
                    return Poll::Ready(None);
                }
                Ok(None) => {}
                Err(err) => return self.fail(err),
            }
            let Some(connection) = self.connection.as_mut() else { return Poll::Ready(None) };
            match ready!(connection.poll_fill(cx)) {
                Ok(0) if self.decoding == Decoding::UntilClose => {
                    self.checkin = None;
                    self.connection = None;
                    self.decoding = Decoding::Done;
                    return Poll::Ready(None);
                }
                Ok(0) => return self.fail(Http1Error::Incomplete),
                Ok(_) => {}
                Err(err) => return self.fail(Http1Error::Read(err)),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decoding == Decoding::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoding {
            Decoding::Length(remaining) => SizeHint::with_exact(remaining),
            Decoding::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// The upstream response body of either upstream path: this module's own connections, or the
/// general (hyper-util) client's.
///
/// Ours is boxed: the response it rides in is moved about ten times on its way to hyper (out of
/// each layer's future, into each wrapping body), and with the connection and its buffer inline
/// each move copied some 400 bytes, which cost more than the allocation.
#[derive(Debug)]
pub enum PooledBody {
    Own(Box<Http1Body>),
    General(hyper::body::Incoming),
}

impl PooledBody {
    /// A body from the general client, whose connections it pools itself.
    pub fn unpooled(inner: hyper::body::Incoming) -> Self {
        PooledBody::General(inner)
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            PooledBody::Own(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            PooledBody::General(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            PooledBody::Own(body) => body.is_end_stream(),
            PooledBody::General(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            PooledBody::Own(body) => body.size_hint(),
            PooledBody::General(body) => body.size_hint(),
        }
    }
}
