//! The client's request body, as either of the server's two HTTP/1.1 paths delivers it.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// A request body: streamed by hyper (h2c, and the HTTP/1.1 connections the own codec hands
/// to it), or read whole with its head by the server's own HTTP/1.1 ([`super::http1`]), which
/// does so only for a small body.
#[derive(Debug)]
pub enum ClientBody {
    Streamed(Incoming),
    /// The body, until it has been taken; `None` for an empty one.
    Whole(Option<Bytes>),
}

impl ClientBody {
    /// A body already read with its head (empty when `bytes` is).
    pub fn whole(bytes: Bytes) -> Self {
        ClientBody::Whole(Some(bytes).filter(|bytes| !bytes.is_empty()))
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ClientBody::Streamed(body) => Pin::new(body).poll_frame(cx),
            ClientBody::Whole(bytes) => Poll::Ready(bytes.take().map(|bytes| Ok(Frame::data(bytes)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Streamed(body) => body.is_end_stream(),
            ClientBody::Whole(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Streamed(body) => body.size_hint(),
            ClientBody::Whole(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |bytes| bytes.len() as u64)),
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn a_whole_body_is_one_frame_of_its_exact_length() {
        let body = ClientBody::whole(Bytes::from_static(b"{\"a\":1}"));
        assert_eq!(body.size_hint().exact(), Some(7));
        assert!(!body.is_end_stream());
        assert_eq!(body.collect().await.unwrap().to_bytes(), Bytes::from_static(b"{\"a\":1}"));

        let empty = ClientBody::whole(Bytes::new());
        assert!(empty.is_end_stream());
        assert_eq!(empty.size_hint().exact(), Some(0));
    }
}
