//! The client against a scripted upstream on a loopback socket: framing, reuse, and the ways
//! an exchange can fail.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full, StreamBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::ReceiverStream;

use super::*;

/// An upstream that answers each connection's requests with `answer(connection, request)`,
/// byte by byte when `trickle`, and closes the connection when `answer` says so.
struct Script {
    url: String,
    connections: Arc<AtomicUsize>,
    requests: tokio::sync::mpsc::UnboundedReceiver<String>,
}

type Answer = fn(usize, &str) -> (Vec<u8>, bool);

async fn scripted(answer: Answer, trickle: bool) -> Script {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let (seen, requests) = tokio::sync::mpsc::unbounded_channel();
    let accepted = connections.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let connection = accepted.fetch_add(1, Ordering::SeqCst);
            let seen = seen.clone();
            tokio::spawn(async move {
                while let Some(request) = read_request(&mut stream).await {
                    let (bytes, close) = answer(connection, &request);
                    seen.send(request).unwrap();
                    if trickle {
                        for byte in bytes {
                            if stream.write_all(&[byte]).await.is_err() {
                                return;
                            }
                        }
                    } else if stream.write_all(&bytes).await.is_err() {
                        return;
                    }
                    if close {
                        return;
                    }
                }
            });
        }
    });
    Script { url, connections, requests }
}

/// One request off the stream, head and body (by `content-length` or chunked), as text.
async fn read_request(stream: &mut TcpStream) -> Option<String> {
    let mut bytes = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut head_end = None;
    loop {
        head_end = head_end.or_else(|| bytes.windows(4).position(|w| w == b"\r\n\r\n"));
        if let Some(end) = head_end {
            let head = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length: "))
                .map_or(0, |n| n.parse::<usize>().unwrap());
            let complete = if head.contains("transfer-encoding: chunked") {
                bytes.ends_with(b"0\r\n\r\n")
            } else {
                bytes.len() >= end + 4 + length
            };
            if complete {
                return Some(String::from_utf8_lossy(&bytes).into_owned());
            }
        }
        let read = stream.read(&mut buf).await.ok()?;
        if read == 0 {
            return None;
        }
        bytes.extend_from_slice(&buf[..read]);
    }
}

fn client() -> Http1Client {
    Http1Client::new(8192, 256, Duration::from_secs(5), Duration::from_secs(60))
}

fn post(url: &str, body: &'static str) -> Request<Full<Bytes>> {
    Request::post(format!("{url}/v1/messages")).body(Full::new(Bytes::from_static(body.as_bytes()))).unwrap()
}

async fn text(response: Response<PooledBody>) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let bytes = response.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8(bytes.to_vec()).unwrap())
}

const CHUNKED: &str = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=\"a b\"\r\nhello\r\n7\r\n, world\r\n0\r\nx-trailer: t\r\n\r\n";

#[tokio::test]
async fn a_chunked_response_trickled_byte_by_byte_is_read_whole_and_its_connection_reused() {
    let mut upstream = scripted(|_, _| (CHUNKED.into(), false), true).await;
    let client = client();
    for _ in 0..2 {
        let response = client.request(post(&upstream.url, "{}")).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(!response.headers().contains_key("content-length"));
        assert_eq!(text(response).await.unwrap(), "hello, world");
    }
    assert_eq!(upstream.connections.load(Ordering::SeqCst), 1);
    let first = upstream.requests.recv().await.unwrap();
    assert!(first.starts_with("POST /v1/messages HTTP/1.1\r\nhost: 127.0.0.1:"), "{first}");
    assert!(first.ends_with("content-length: 2\r\n\r\n{}"), "{first}");
}

#[tokio::test]
async fn a_length_response_is_exact_and_ends_with_its_last_byte() {
    let upstream = scripted(
        |_, _| (b"HTTP/1.1 200 OK\r\ncontent-length: 12\r\nx-one: 1\r\n\r\nhello, world".to_vec(), false),
        false,
    )
    .await;
    let response = client().request(post(&upstream.url, "{}")).await.unwrap();
    assert_eq!(response.headers()["x-one"], "1");
    let mut body = response.into_body();
    assert_eq!(body.size_hint().exact(), Some(12));
    let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(frame, "hello, world");
    assert!(body.is_end_stream(), "the last byte ends the body");
}

#[tokio::test]
async fn closing_and_unframed_responses_are_not_reused() {
    let upstream =
        scripted(|_, _| (b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok".to_vec(), true), false)
            .await;
    let client = client();
    for _ in 0..2 {
        assert_eq!(text(client.request(post(&upstream.url, "{}")).await.unwrap()).await.unwrap(), "ok");
    }
    assert_eq!(upstream.connections.load(Ordering::SeqCst), 2);

    // No length: the body is everything until the close.
    let upstream = scripted(|_, _| (b"HTTP/1.0 200 OK\r\n\r\nuntil the end".to_vec(), true), false).await;
    for _ in 0..2 {
        assert_eq!(text(client.request(post(&upstream.url, "{}")).await.unwrap()).await.unwrap(), "until the end");
    }
    assert_eq!(upstream.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_connection_the_upstream_closed_while_idle_is_not_used_again() {
    let mut upstream = scripted(|_, _| (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(), true), false).await;
    let client = client();
    assert_eq!(text(client.request(post(&upstream.url, "{}")).await.unwrap()).await.unwrap(), "ok");
    upstream.requests.recv().await.unwrap();
    // The upstream closed without saying so in the head (its keep-alive timeout). Once the
    // reactor has seen the close, the connection is not taken from the pool again.
    tokio::task::yield_now().await;
    assert_eq!(text(client.request(post(&upstream.url, "{}")).await.unwrap()).await.unwrap(), "ok");
    assert_eq!(upstream.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_connection_read_dry_goes_back_without_readiness_so_its_reuse_costs_no_recv() {
    let upstream = scripted(|_, _| (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(), false), false).await;
    let client = client();
    assert_eq!(text(client.request(post(&upstream.url, "{}")).await.unwrap()).await.unwrap(), "ok");
    // The short read that took the answer forgot the socket's readiness, so `is_usable` will
    // answer from the reactor alone; had it kept it, the check would cost a `recv`.
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let ready = POOLS.with(|pools| {
        let pools = pools.borrow();
        let pool = pools.iter().find(|pool| pool.client == client.id).expect("the client's pool");
        let idle = pool.idle.last().expect("the connection went back to the pool");
        idle.connection.io.poll_read_ready(&mut cx).is_ready()
    });
    assert!(!ready, "the pooled connection still has its readiness recorded");
    assert_eq!(text(client.request(post(&upstream.url, "{}")).await.unwrap()).await.unwrap(), "ok");
    assert_eq!(upstream.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn truncated_and_malformed_responses_are_errors() {
    let cut = scripted(|_, _| (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello".to_vec(), true), false).await;
    let response = client().request(post(&cut.url, "{}")).await.unwrap();
    let err = text(response).await.unwrap_err();
    assert!(matches!(err.downcast_ref::<Http1Error>(), Some(Http1Error::Incomplete)), "{err}");

    let bad_chunk =
        scripted(|_, _| (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n".to_vec(), false), false).await;
    let err = text(client().request(post(&bad_chunk.url, "{}")).await.unwrap()).await.unwrap_err();
    assert!(matches!(err.downcast_ref::<Http1Error>(), Some(Http1Error::Malformed("chunk size"))), "{err}");

    let bad_head = scripted(|_, _| (b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n".to_vec(), false), false).await;
    let err = client().request(post(&bad_head.url, "{}")).await.unwrap_err();
    assert!(matches!(err, Http1Error::Malformed("content-length")), "{err}");

    let silent = scripted(|_, _| (Vec::new(), true), false).await;
    let err = client().request(post(&silent.url, "{}")).await.unwrap_err();
    assert!(matches!(err, Http1Error::Closed), "{err}");
}

#[tokio::test]
async fn an_early_answer_is_heard_while_the_body_is_still_being_sent() {
    // The upstream answers as soon as it has the head, and never reads the body.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = stream.read(&mut buf).await.unwrap();
        stream.write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 3\r\n\r\nbig").await.unwrap();
        // Held open, unread, until the test ends.
        std::future::pending::<()>().await;
    });
    let (frames, receiver) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
    frames.send(Ok(Frame::data(Bytes::from_static(b"{\"start\":")))).await.unwrap();
    let body = StreamBody::new(ReceiverStream::new(receiver));
    let request = Request::post(format!("{url}/v1/files")).body(body).unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(text(response).await.unwrap(), "big");
    drop(frames);
}

#[tokio::test]
async fn a_body_of_unknown_length_goes_chunked() {
    let mut upstream = scripted(|_, _| (b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(), false), false).await;
    let frames = futures_util::stream::iter([
        Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"{\"a\":"))),
        Ok(Frame::data(Bytes::from_static(b"1}"))),
    ]);
    let request = Request::builder()
        .method(Method::PUT)
        .uri(format!("{}/v1/x?y=1", upstream.url))
        .body(StreamBody::new(frames))
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(response.body().is_end_stream());
    let seen = upstream.requests.recv().await.unwrap();
    assert!(seen.starts_with("PUT /v1/x?y=1 HTTP/1.1\r\n"), "{seen}");
    assert!(seen.ends_with("transfer-encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n2\r\n1}\r\n0\r\n\r\n"), "{seen}");
}

#[tokio::test]
async fn a_failing_request_body_ends_the_exchange_with_its_error() {
    let upstream = scripted(|_, _| (b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec(), false), false).await;
    let frames = futures_util::stream::iter([
        Ok(Frame::data(Bytes::from_static(b"{"))),
        Err(std::io::Error::other("the client went away")),
    ]);
    let request = Request::post(format!("{}/v1/x", upstream.url)).body(StreamBody::new(frames)).unwrap();
    let err = client().request(request).await.unwrap_err();
    assert!(matches!(err, Http1Error::RequestBody(_)), "{err}");
}

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

#[tokio::test]
async fn a_stray_line_where_a_chunk_size_belongs_is_malformed_not_the_end() {
    // An extra CRLF after a chunk: read as the last chunk, it would end the body early and
    // leave the rest on a pooled connection.
    let upstream = scripted(
        |_, _| {
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n\r\n5\r\nworld\r\n0\r\n\r\n"
                    .to_vec(),
                false,
            )
        },
        false,
    )
    .await;
    let err = text(client().request(post(&upstream.url, "{}")).await.unwrap()).await.unwrap_err();
    assert!(matches!(err.downcast_ref::<Http1Error>(), Some(Http1Error::Malformed("chunk size"))), "{err}");

    let upstream = scripted(
        |_, _| {
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nnot a field\r\n\r\n".to_vec(),
                false,
            )
        },
        false,
    )
    .await;
    let err = text(client().request(post(&upstream.url, "{}")).await.unwrap()).await.unwrap_err();
    assert!(matches!(err.downcast_ref::<Http1Error>(), Some(Http1Error::Malformed("trailers"))), "{err}");
}

#[tokio::test]
async fn an_upload_goes_on_after_an_early_head_and_the_connection_is_reused_once_done() {
    // The upstream sends its head at once, reads the whole (chunked) upload, then ends its body.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        count.fetch_add(1, Ordering::SeqCst);
        let mut seen = Vec::new();
        let mut buf = [0u8; 1024];
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            let read = stream.read(&mut buf).await.unwrap();
            seen.extend_from_slice(&buf[..read]);
        }
        stream.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").await.unwrap();
        while !seen.ends_with(b"0\r\n\r\n") {
            let read = stream.read(&mut buf).await.unwrap();
            assert_ne!(read, 0, "the upload was cut short");
            seen.extend_from_slice(&buf[..read]);
        }
        stream.write_all(b"4\r\ndone\r\n0\r\n\r\n").await.unwrap();
        // The next request comes on the same connection.
        read_request(&mut stream).await.unwrap();
        stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.unwrap();
        std::future::pending::<()>().await;
    });
    let (frames, receiver) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
    frames.send(Ok(Frame::data(Bytes::from_static(b"first,")))).await.unwrap();
    let request =
        Request::post(format!("{url}/v1/upload")).body(StreamBody::new(ReceiverStream::new(receiver))).unwrap();
    let client = client();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // The rest of the upload is sent while the response body is read.
    frames.send(Ok(Frame::data(Bytes::from_static(b"second")))).await.unwrap();
    drop(frames);
    // Dropping the upload at the head would leave both sides waiting.
    let body = tokio::time::timeout(Duration::from_secs(10), text(response)).await;
    assert_eq!(body.expect("the upload went on").unwrap(), "done");
    assert_eq!(text(client.request(post(&url, "{}")).await.unwrap()).await.unwrap(), "ok");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

/// A body of ready frames that knows when it has ended, whose exact size hint (if any) says
/// `hint`, its length or not.
struct Frames {
    frames: std::collections::VecDeque<Bytes>,
    hint: Option<u64>,
}

impl Frames {
    fn new(frames: impl IntoIterator<Item = Bytes>, hint: Option<u64>) -> Self {
        Frames { frames: frames.into_iter().collect(), hint }
    }
}

impl Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        std::task::Poll::Ready(self.frames.pop_front().map(|data| Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.hint.map_or_else(http_body::SizeHint::default, http_body::SizeHint::with_exact)
    }
}

#[tokio::test]
async fn a_body_longer_or_shorter_than_its_declared_length_is_not_sent_as_is() {
    let upstream = scripted(|_, _| (b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec(), false), false).await;
    for (data, hint) in [("{\"a\":1}", 3), ("{}", 5)] {
        let body = Frames::new([Bytes::from_static(data.as_bytes())], Some(hint));
        let request = Request::post(format!("{}/v1/x", upstream.url)).body(body).unwrap();
        let err = client().request(request).await.unwrap_err();
        assert!(matches!(err, Http1Error::BodyLength), "{err}");
    }
}

#[tokio::test]
async fn large_frames_go_out_in_order_with_their_framing_whatever_the_body_length() {
    let mut upstream = scripted(|_, _| (b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec(), false), false).await;
    // Small frames are gathered, frames of 16 KiB and more are written from their own buffers:
    // between them, after one another, and as the last frame, whose chunk terminator must
    // follow it (the body knows it has ended as that frame is taken). The 8 MiB frame fills
    // the socket's buffers, so its writes are partial and resume where they stopped.
    let sizes = [10, 20 * 1024, 5, 8 * 1024 * 1024, 16 * 1024, 3, 16 * 1024 - 1, 100 * 1024];
    let frames: Vec<Bytes> =
        sizes.iter().enumerate().map(|(index, &size)| Bytes::from(vec![b'a' + index as u8; size])).collect();
    let total = frames.iter().map(Bytes::len).sum::<usize>() as u64;
    let plain: String = frames.iter().map(|frame| std::str::from_utf8(frame).unwrap()).collect();
    let chunked: String = frames
        .iter()
        .map(|frame| format!("{:x}\r\n{}\r\n", frame.len(), std::str::from_utf8(frame).unwrap()))
        .collect();

    let request =
        Request::post(format!("{}/v1/x", upstream.url)).body(Frames::new(frames.clone(), Some(total))).unwrap();
    assert_eq!(client().request(request).await.unwrap().status(), StatusCode::OK);
    let seen = upstream.requests.recv().await.unwrap();
    assert!(seen.contains(&format!("content-length: {total}\r\n")), "{}", &seen[..seen.len().min(200)]);
    assert!(seen.ends_with(&format!("\r\n\r\n{plain}")), "the length-framed body differs");

    let request = Request::post(format!("{}/v1/x", upstream.url)).body(Frames::new(frames, None)).unwrap();
    assert_eq!(client().request(request).await.unwrap().status(), StatusCode::OK);
    let seen = upstream.requests.recv().await.unwrap();
    assert!(
        seen.ends_with(&format!("transfer-encoding: chunked\r\n\r\n{chunked}0\r\n\r\n")),
        "the chunked body differs"
    );
}
