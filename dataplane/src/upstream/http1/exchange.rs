//! One request and its response head on an upstream connection, driven by the forwarding task
//! itself. The request body is written while the response head is awaited, so an upstream that
//! answers early (a 413 before the whole upload) is heard, and the head and the first body
//! frames go out in one write when they are ready together (nearly every API call).

use std::future::poll_fn;
use std::io::Write as _;
use std::pin::Pin;
use std::task::Poll;

use bytes::{Buf, Bytes};
use http::Method;
use http_body::Body;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::head::{self, HeadLimits, Parsed, RequestFraming, ResponseHead};
use super::{Connection, Http1Error};

/// Pending output is written once it reaches this size, even if more frames are ready.
const WRITE_AT: usize = 64 * 1024;
/// A data frame at least this large is written from its own buffer instead of being copied.
const WRITE_DIRECT: usize = 16 * 1024;
/// Bytes read at a time while the head is awaited.
const READ_SIZE: usize = 8 * 1024;

/// A request body this client can send: the data plane's (the client's body, counted and
/// limited), or any other in tests.
pub trait SendBody: Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>> + Unpin {}

impl<B> SendBody for B where B: Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>> + Unpin {}

/// What came of an exchange that got a response head.
#[derive(Debug)]
pub(super) struct Answered {
    pub(super) head: ResponseHead,
    /// Whether the whole request went out (otherwise the connection cannot be reused).
    pub(super) sent: bool,
}

/// Sends the request whose head is `out` (the body follows, framed as `framing`) and reads the
/// response head.
pub(super) async fn exchange<B: SendBody>(
    connection: &mut Connection,
    out: Vec<u8>,
    framing: RequestFraming,
    body: B,
    method: &Method,
    limits: HeadLimits,
) -> Result<Answered, Http1Error> {
    let Connection { io, read } = connection;
    let (mut reader, mut writer) = io.split();
    let send = send(&mut writer, out, framing, body);
    let answer = async {
        loop {
            if !read.is_empty() {
                match head::parse_response(read, method, limits)? {
                    Parsed::Final(head) => return Ok(head),
                    Parsed::Interim => continue,
                    Parsed::Partial => {}
                }
            }
            read.reserve(READ_SIZE);
            if reader.read_buf(read).await.map_err(Http1Error::Read)? == 0 {
                return Err(if read.is_empty() { Http1Error::Closed } else { Http1Error::Incomplete });
            }
        }
    };
    tokio::pin!(send, answer);
    let mut sending = true;
    let mut send_failed = None;
    loop {
        tokio::select! {
            biased;
            sent = &mut send, if sending => {
                sending = false;
                match sent {
                    Ok(()) => {}
                    // The client's body failed: the exchange is over.
                    Err(err @ Http1Error::RequestBody(_)) => return Err(err),
                    // The upstream may have answered and closed early: read what it said.
                    Err(err) => send_failed = Some(err),
                }
            }
            head = &mut answer => {
                return match head {
                    Ok(head) => Ok(Answered { head, sent: !sending && send_failed.is_none() }),
                    Err(err) => Err(send_failed.unwrap_or(err)),
                };
            }
        }
    }
}

/// Writes the head in `out` and the body, coalescing what is ready into as few writes as it
/// can.
async fn send<W: AsyncWrite + Unpin, B: SendBody>(
    writer: &mut W,
    mut out: Vec<u8>,
    framing: RequestFraming,
    mut body: B,
) -> Result<(), Http1Error> {
    let chunked = framing == RequestFraming::Chunked;
    let mut ended = body.is_end_stream();
    while !ended {
        // Whatever frames are ready join the pending output; waiting starts only when nothing
        // is pending.
        let frame = if out.is_empty() {
            poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        } else {
            match poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await {
                Poll::Ready(frame) => frame,
                Poll::Pending => {
                    write(writer, &mut out).await?;
                    continue;
                }
            }
        };
        match frame {
            None => ended = true,
            Some(Err(err)) => return Err(Http1Error::RequestBody(err.into())),
            Some(Ok(frame)) => {
                // Trailers are not forwarded: a request's trailers carry nothing an API reads.
                if let Ok(data) = frame.into_data() {
                    append(writer, &mut out, data, chunked).await?;
                }
                ended = body.is_end_stream();
            }
        }
        if out.len() >= WRITE_AT {
            write(writer, &mut out).await?;
        }
    }
    if chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    write(writer, &mut out).await
}

/// Adds one data frame to the output, framed as a chunk if the body is chunked.
async fn append<W: AsyncWrite + Unpin>(
    writer: &mut W,
    out: &mut Vec<u8>,
    mut data: Bytes,
    chunked: bool,
) -> Result<(), Http1Error> {
    if data.is_empty() {
        return Ok(());
    }
    if chunked {
        // Writing to a vector cannot fail.
        let _ = write!(out, "{:x}\r\n", data.len());
    }
    if data.len() >= WRITE_DIRECT {
        write(writer, out).await?;
        while data.has_remaining() {
            let written = writer.write(&data).await.map_err(Http1Error::Write)?;
            if written == 0 {
                return Err(Http1Error::Write(std::io::ErrorKind::WriteZero.into()));
            }
            data.advance(written);
        }
    } else {
        out.extend_from_slice(&data);
    }
    if chunked {
        out.extend_from_slice(b"\r\n");
    }
    Ok(())
}

async fn write<W: AsyncWrite + Unpin>(writer: &mut W, out: &mut Vec<u8>) -> Result<(), Http1Error> {
    if !out.is_empty() {
        writer.write_all(out).await.map_err(Http1Error::Write)?;
        out.clear();
    }
    Ok(())
}
