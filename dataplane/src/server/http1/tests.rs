//! The own codec end to end over real sockets: what it serves itself, what it hands to hyper,
//! and how a connection ends.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, Either, Full, StreamBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use crate::config::{ConnectionConfig, Limits};
use crate::metrics::ConnectionMetrics;
use crate::server::{ClientBody, ConnectionCap, Handler, Listener, Settings};

const DEADLINE: Duration = Duration::from_secs(10);

type Stream = StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

/// Answers `<method> <path> <body length> <x-test>`; `/hang` never answers (and reports when
/// its future is dropped); `/stream` answers in two frames of unknown total length. A request's
/// `x-late` comes back as a late field of the same name, with `x-late-count` after it.
struct Echo {
    dropped: mpsc::UnboundedSender<()>,
}

struct Guard(mpsc::UnboundedSender<()>);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

impl Handler for Echo {
    type Body = Either<Full<Bytes>, Stream>;

    async fn call(self: Arc<Self>, request: Request<ClientBody>) -> Response<Self::Body> {
        let (parts, body) = request.into_parts();
        match parts.uri.path() {
            "/hang" => {
                let _guard = Guard(self.dropped.clone());
                std::future::pending::<()>().await;
                unreachable!()
            }
            "/no-content" => {
                let mut response = Response::new(Either::Left(Full::new(Bytes::from_static(b"not for the wire"))));
                *response.status_mut() = http::StatusCode::NO_CONTENT;
                response
            }
            "/stream" => {
                let frames = vec![
                    Ok(Frame::data(Bytes::from_static(b"first,"))),
                    Ok(Frame::data(Bytes::from_static(b"second"))),
                ];
                Response::new(Either::Right(StreamBody::new(futures_util::stream::iter(frames))))
            }
            path => {
                let length = body.collect().await.map(|body| body.to_bytes().len()).unwrap_or(usize::MAX);
                let test = parts.headers.get("x-test").and_then(|v| v.to_str().ok()).unwrap_or("-");
                let text = format!("{} {path} {length} {test}", parts.method);
                let mut response = Response::new(Either::Left(Full::new(Bytes::from(text))));
                if let Some(late) = parts.headers.get("x-late") {
                    response.extensions_mut().insert(Late(late.as_bytes().to_vec()));
                }
                response
            }
        }
    }

    fn late_fields(response: &Response<Self::Body>, field: &mut dyn FnMut(&http::HeaderName, &[u8])) {
        if let Some(Late(value)) = response.extensions().get::<Late>() {
            field(&http::HeaderName::from_static("x-late"), value);
            field(&http::HeaderName::from_static("x-late-count"), b"1");
        }
    }
}

/// The value of a response's `x-late` late field.
#[derive(Clone)]
struct Late(Vec<u8>);

/// A server with an [`Echo`] handler and an 8 KiB head limit; its address, the stream of
/// dropped `/hang` futures, and the shutdown trigger.
async fn start() -> (std::net::SocketAddr, mpsc::UnboundedReceiver<()>, oneshot::Sender<()>) {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let (dropped, drops) = mpsc::unbounded_channel();
    let listener = Listener { name: "test", tcp, cap: ConnectionCap::new(16), metrics: ConnectionMetrics::default() };
    let settings = Settings {
        limits: Limits { max_request_body_bytes: 1 << 20, max_header_bytes: 8192 },
        connections: ConnectionConfig {
            max_connections: 16,
            idle_timeout: Duration::from_secs(60),
            keepalive_interval: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(60),
        },
        grace: Duration::from_secs(5),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(crate::server::serve(listener, Arc::new(Echo { dropped }), settings, async {
        let _ = stopped.await;
    }));
    (addr, drops, stop)
}

/// A client reading whole responses off one connection.
struct Client {
    stream: TcpStream,
    read: Vec<u8>,
}

impl Client {
    async fn connect(addr: std::net::SocketAddr) -> Client {
        Client { stream: TcpStream::connect(addr).await.unwrap(), read: Vec::new() }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Reads more; false at the end of the stream.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(DEADLINE, self.stream.read(&mut chunk)).await.expect("no answer").unwrap_or(0);
        self.read.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// The next response: its head (as text) and its body, decoded from its framing.
    async fn response(&mut self) -> (String, Vec<u8>) {
        let head_len = loop {
            if let Some(at) = self.read.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            assert!(self.fill().await, "closed before a head: {:?}", String::from_utf8_lossy(&self.read));
        };
        let head = String::from_utf8(self.read.drain(..head_len).collect()).unwrap();
        let lower = head.to_ascii_lowercase();
        if let Some(length) = lower.lines().find_map(|line| line.strip_prefix("content-length: ")) {
            let length: usize = length.trim().parse().unwrap();
            while self.read.len() < length {
                assert!(self.fill().await, "closed inside a body");
            }
            return (head, self.read.drain(..length).collect());
        }
        if lower.contains("transfer-encoding: chunked") {
            let mut body = Vec::new();
            loop {
                let line_end = loop {
                    if let Some(at) = self.read.windows(2).position(|w| w == b"\r\n") {
                        break at;
                    }
                    assert!(self.fill().await, "closed inside a chunked body");
                };
                let size = usize::from_str_radix(std::str::from_utf8(&self.read[..line_end]).unwrap(), 16).unwrap();
                while self.read.len() < line_end + 2 + size + 2 {
                    assert!(self.fill().await, "closed inside a chunk");
                }
                body.extend_from_slice(&self.read[line_end + 2..line_end + 2 + size]);
                self.read.drain(..line_end + 2 + size + 2);
                if size == 0 {
                    return (head, body);
                }
            }
        }
        (head, Vec::new())
    }

    /// Whether the server closes the connection (with nothing more to read).
    async fn closed(&mut self) -> bool {
        !self.fill().await && self.read.is_empty()
    }
}

fn text(body: &[u8]) -> &str {
    std::str::from_utf8(body).unwrap()
}

/// Whether the own codec wrote this response head rather than hyper: for the same response,
/// hyper writes its `content-length` before the `date` it adds, the own codec after.
fn by_own_codec(head: &str) -> bool {
    match (head.find("\r\ndate: "), head.find("\r\ncontent-length: ")) {
        (Some(date), Some(length)) => date < length,
        _ => panic!("no date or length to tell by: {head}"),
    }
}

#[tokio::test]
async fn plain_calls_are_answered_in_order_on_one_connection_even_pipelined() {
    let (addr, _drops, _stop) = start().await;
    let mut client = Client::connect(addr).await;
    // Two requests in one write: the second waits in the buffer for the first's answer.
    client
        .send(b"POST /v1/messages HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\nx-test: one\r\n\r\nhelloGET /v1/models?limit=2 HTTP/1.1\r\nhost: t\r\n\r\n")
        .await;
    let (head, body) = client.response().await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && by_own_codec(&head), "{head}");
    assert_eq!(text(&body), "POST /v1/messages 5 one");
    let (head, body) = client.response().await;
    assert!(by_own_codec(&head), "{head}");
    assert_eq!(text(&body), "GET /v1/models 0 -");
    // And the connection stays open for more.
    client.send(b"DELETE /v1/files/f1 HTTP/1.1\r\nhost: t\r\n\r\n").await;
    assert_eq!(text(&client.response().await.1), "DELETE /v1/files/f1 0 -");
}

#[tokio::test]
async fn a_head_split_over_several_writes_is_put_together() {
    let (addr, _drops, _stop) = start().await;
    let mut client = Client::connect(addr).await;
    client.send(b"POST /a HTTP/1.1\r\nhost: t\r\ncont").await;
    client.stream.flush().await.unwrap();
    tokio::task::yield_now().await;
    client.send(b"ent-length: 2\r\n\r\nhi").await;
    let (head, body) = client.response().await;
    assert!(by_own_codec(&head), "{head}");
    assert_eq!(text(&body), "POST /a 2 -");
}

#[tokio::test]
async fn a_small_body_written_apart_from_its_head_is_waited_for_and_a_large_one_streams_through_hyper() {
    let (addr, _drops, _stop) = start().await;
    let mut client = Client::connect(addr).await;
    client.send(b"POST /small HTTP/1.1\r\nhost: t\r\ncontent-length: 10\r\nx-test: p\r\n\r\n").await;
    client.stream.flush().await.unwrap();
    tokio::task::yield_now().await;
    client.send(b"hello").await;
    client.stream.flush().await.unwrap();
    tokio::task::yield_now().await;
    client.send(b"world").await;
    let (head, body) = client.response().await;
    assert!(by_own_codec(&head), "{head}");
    assert_eq!(text(&body), "POST /small 10 p");

    // Past the bound, the body is not waited for: hyper streams it to the handler.
    let length = super::request::MAX_WHOLE_BODY + 1;
    client.send(format!("POST /large HTTP/1.1\r\nhost: t\r\ncontent-length: {length}\r\n\r\n").as_bytes()).await;
    client.send(&vec![b'x'; length]).await;
    let (head, body) = client.response().await;
    assert!(!by_own_codec(&head), "{head}");
    assert_eq!(text(&body), format!("POST /large {length} -"));
}

#[tokio::test]
async fn what_the_codec_does_not_take_is_served_by_hyper_with_the_bytes_already_read() {
    let (addr, _drops, _stop) = start().await;
    let mut client = Client::connect(addr).await;
    client.send(b"GET /first HTTP/1.1\r\nhost: t\r\n\r\n").await;
    assert_eq!(text(&client.response().await.1), "GET /first 0 -");

    // `Expect: 100-continue`: hyper's interim answer, then the body.
    client.send(b"POST /upload HTTP/1.1\r\nhost: t\r\nexpect: 100-continue\r\ncontent-length: 4\r\n\r\n").await;
    let (head, _) = client.response().await;
    assert!(head.starts_with("HTTP/1.1 100 Continue"), "{head}");
    client.send(b"data").await;
    let (head, body) = client.response().await;
    assert!(!by_own_codec(&head), "{head}");
    assert_eq!(text(&body), "POST /upload 4 -");
    // A chunked upload and then a plain call, on the same (now hyper's) connection.
    client.send(b"POST /chunked HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n").await;
    assert_eq!(text(&client.response().await.1), "POST /chunked 3 -");
    client.send(b"GET /after HTTP/1.1\r\nhost: t\r\n\r\n").await;
    assert_eq!(text(&client.response().await.1), "GET /after 0 -");

    // HTTP/1.0 and HEAD.
    let mut client = Client::connect(addr).await;
    client.send(b"GET /old HTTP/1.0\r\n\r\n").await;
    let (head, body) = client.response().await;
    assert!(head.starts_with("HTTP/1.0 200 OK"), "{head}");
    assert_eq!(text(&body), "GET /old 0 -");
}

#[tokio::test]
async fn malformed_and_oversized_heads_get_hyper_answers() {
    let (addr, _drops, _stop) = start().await;
    let mut client = Client::connect(addr).await;
    client.send(b"GET / HTTP/1.1\r\nbad header\r\n\r\n").await;
    let (head, _) = client.response().await;
    assert!(head.starts_with("HTTP/1.1 400 Bad Request"), "{head}");
    assert!(client.closed().await);

    // Past the 8 KiB limit, whether it arrives whole or keeps coming.
    let mut client = Client::connect(addr).await;
    let big = format!("GET / HTTP/1.1\r\nhost: t\r\nx-big: {}\r\n\r\n", "a".repeat(9000));
    client.send(big.as_bytes()).await;
    let (head, _) = client.response().await;
    assert!(head.starts_with("HTTP/1.1 431"), "{head}");

    // Conflicting lengths, and a list of lengths (which hyper's server refuses even when equal).
    for lengths in ["content-length: 1\r\ncontent-length: 2", "content-length: 2, 2"] {
        let mut client = Client::connect(addr).await;
        client.send(format!("POST / HTTP/1.1\r\nhost: t\r\n{lengths}\r\n\r\nab").as_bytes()).await;
        let (head, _) = client.response().await;
        assert!(head.starts_with("HTTP/1.1 400"), "{lengths}: {head}");
    }
    // Repeated equal lengths are one length, as hyper reads them.
    let mut client = Client::connect(addr).await;
    client.send(b"POST /same HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\ncontent-length: 2\r\n\r\nab").await;
    assert_eq!(text(&client.response().await.1), "POST /same 2 -");
}

#[tokio::test]
async fn pipelined_requests_are_all_answered_after_the_client_half_closes() {
    let (addr, _drops, _stop) = start().await;
    let mut client = Client::connect(addr).await;
    client.send(b"GET /a HTTP/1.1\r\nhost: t\r\n\r\nGET /b HTTP/1.1\r\nhost: t\r\n\r\n").await;
    client.stream.shutdown().await.unwrap();
    assert_eq!(text(&client.response().await.1), "GET /a 0 -");
    assert_eq!(text(&client.response().await.1), "GET /b 0 -");
    assert!(client.closed().await);
}

#[tokio::test]
async fn a_bodiless_status_goes_out_without_its_body_and_the_connection_goes_on() {
    let (addr, _drops, _stop) = start().await;
    let mut client = Client::connect(addr).await;
    client.send(b"GET /no-content HTTP/1.1\r\nhost: t\r\n\r\n").await;
    let (head, body) = client.response().await;
    assert!(head.starts_with("HTTP/1.1 204 No Content\r\n"), "{head}");
    assert!(!head.contains("content-length") && !head.contains("transfer-encoding") && body.is_empty(), "{head}");
    client.send(b"GET /next HTTP/1.1\r\nhost: t\r\n\r\n").await;
    let (head, body) = client.response().await;
    assert!(head.starts_with("HTTP/1.1 200 OK"), "the 204's body was not sent: {head}");
    assert_eq!(text(&body), "GET /next 0 -");
}

#[tokio::test]
async fn a_request_handed_to_hyper_while_the_listener_stops_is_still_answered() {
    let (addr, _drops, stop) = start().await;
    let mut client = Client::connect(addr).await;
    // A first answer: the connection is accepted and served by the own codec.
    client.send(b"GET /first HTTP/1.1\r\nhost: t\r\n\r\n").await;
    client.response().await;
    // The next head is incomplete when the listener stops; it completes as a request the own
    // codec hands over (a chunked upload). The test's runtime is the server's, one thread: a
    // yield lets the server read what was sent before the stop is sent.
    client.send(b"POST /late HTTP/1.1\r\nhost: t\r\n").await;
    for _ in 0..3 {
        tokio::task::yield_now().await;
    }
    let _ = stop.send(());
    // The listener's socket closes before its connections are told to close.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while TcpStream::connect(addr).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "the listener did not stop");
        tokio::task::yield_now().await;
    }
    client.send(b"transfer-encoding: chunked\r\n\r\n4\r\ndata\r\n0\r\n\r\n").await;
    let (head, body) = client.response().await;
    assert!(head.starts_with("HTTP/1.1 200 OK") && head.contains("connection: close"), "{head}");
    assert_eq!(text(&body), "POST /late 4 -");
}

#[tokio::test]
async fn streamed_answers_are_chunked_and_close_is_honoured() {
    let (addr, _drops, _stop) = start().await;
    let mut client = Client::connect(addr).await;
    client.send(b"GET /stream HTTP/1.1\r\nhost: t\r\n\r\n").await;
    let (head, body) = client.response().await;
    assert!(head.contains("transfer-encoding: chunked\r\n"), "{head}");
    assert_eq!(text(&body), "first,second");

    client.send(b"GET /last HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n").await;
    let (head, body) = client.response().await;
    assert!(head.contains("connection: close\r\n"), "{head}");
    assert_eq!(text(&body), "GET /last 0 -");
    assert!(client.closed().await, "the server closes after a `Connection: close` request");
}

#[tokio::test]
async fn a_client_that_closes_its_side_abandons_its_request() {
    let (addr, mut drops, _stop) = start().await;
    let mut client = Client::connect(addr).await;
    client.send(b"GET /hang HTTP/1.1\r\nhost: t\r\n\r\n").await;
    // However soon: the server reads the head before the end of the stream.
    drop(client);
    tokio::time::timeout(DEADLINE, drops.recv()).await.expect("the handler's future was not dropped").unwrap();
}

#[tokio::test]
async fn an_idle_connection_closes_on_shutdown() {
    let (addr, _drops, stop) = start().await;
    let mut client = Client::connect(addr).await;
    client.send(b"GET /one HTTP/1.1\r\nhost: t\r\n\r\n").await;
    client.response().await;
    let _ = stop.send(());
    assert!(client.closed().await, "an idle keep-alive connection closes when the listener stops");
}

#[tokio::test]
async fn late_fields_are_written_once_by_the_codec_and_by_hyper() {
    let (addr, _drops, _stop) = start().await;
    let mut client = Client::connect(addr).await;
    client.send(b"GET /own HTTP/1.1\r\nhost: t\r\nx-late: a\r\n\r\n").await;
    let (head, body) = client.response().await;
    assert!(by_own_codec(&head), "{head}");
    assert_eq!((head.matches("\r\nx-late: a\r\n").count(), head.matches("x-late-count: 1").count()), (1, 1), "{head}");
    assert_eq!(text(&body), "GET /own 0 -");
    client.send(b"GET /none HTTP/1.1\r\nhost: t\r\n\r\n").await;
    let (head, _) = client.response().await;
    assert!(!head.contains("x-late"), "a response without late fields has none: {head}");

    // A connection hyper serves: the same fields, from the map.
    let mut client = Client::connect(addr).await;
    client.send(b"GET /hyper HTTP/1.0\r\nx-late: b\r\n\r\n").await;
    let (head, body) = client.response().await;
    assert!(head.starts_with("HTTP/1.0 200 OK"), "{head}");
    assert_eq!((head.matches("\r\nx-late: b\r\n").count(), head.matches("x-late-count: 1").count()), (1, 1), "{head}");
    assert_eq!(text(&body), "GET /hyper 0 -");
}
