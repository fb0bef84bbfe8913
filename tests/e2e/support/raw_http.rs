//! Raw HTTP/1.1 over TCP, for what ordinary clients refuse to do: send unnormalised paths, and
//! play an upstream that holds a stream open, watches for the client hanging up or answers
//! with more headers than usual.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};

/// Sends `request_line` plus `headers` verbatim and returns the status code and the raw
/// response text.
pub async fn send(addr: SocketAddr, request_line: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut request = format!("{request_line}\r\nhost: {addr}\r\nconnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

/// What a [`HeldUpstream`] does after reading a request.
#[derive(Debug, Clone, Copy)]
pub enum Behaviour {
    /// Sends SSE headers and `first`, then holds until released, then sends `rest` and ends.
    StreamThenHold,
    /// Reads the request and never answers.
    NeverAnswer,
    /// Answers `200 {}` with `count` extra headers `x-upstream-{i}`, each with a value of
    /// `value_len` bytes, and closes the connection.
    AnswerWithHeaders { count: usize, value_len: usize },
    /// Answers every request on the connection with `200 {}`, keeping it open.
    KeepAlive,
}

/// A one-connection-at-a-time upstream that can hold a response open and reports when the
/// gateway closes the connection.
#[derive(Debug)]
pub struct HeldUpstream {
    pub addr: SocketAddr,
    release: Arc<Notify>,
    closed: mpsc::UnboundedReceiver<()>,
    requests: mpsc::UnboundedReceiver<String>,
    accepted: Arc<AtomicUsize>,
}

/// Anthropic's first event, with the input side of the usage (which metering must keep when
/// the stream is cut after it).
pub const FIRST_EVENT: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-haiku-4-5\",\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n";
pub const REST_EVENTS: &str = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"ok\"}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

impl HeldUpstream {
    pub async fn start(behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let release = Arc::new(Notify::new());
        let (closed_tx, closed) = mpsc::unbounded_channel();
        let (requests_tx, requests) = mpsc::unbounded_channel();
        let task_release = release.clone();
        let accepted = Arc::new(AtomicUsize::new(0));
        let task_accepted = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                task_accepted.fetch_add(1, Ordering::SeqCst);
                let release = task_release.clone();
                let closed_tx = closed_tx.clone();
                let requests_tx = requests_tx.clone();
                tokio::spawn(async move {
                    serve(stream, behaviour, release, requests_tx).await;
                    let _ = closed_tx.send(());
                });
            }
        });
        HeldUpstream { addr, release, closed, requests, accepted }
    }

    /// How many connections the gateway has opened so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Lets a held stream send the rest of its events.
    pub fn release(&self) {
        self.release.notify_one();
    }

    /// Waits until a request head arrived and returns it.
    pub async fn next_request(&mut self) -> String {
        tokio::time::timeout(super::wait::DEADLINE, self.requests.recv()).await.expect("a request upstream").unwrap()
    }

    /// A request head that already arrived, if any (does not wait).
    pub fn arrived_request(&mut self) -> Option<String> {
        self.requests.try_recv().ok()
    }

    /// Waits until the gateway closed a connection.
    pub async fn wait_closed(&mut self) {
        tokio::time::timeout(super::wait::DEADLINE, self.closed.recv())
            .await
            .expect("the upstream connection was never closed")
            .unwrap();
    }
}

/// Serves one connection; returns once the peer has closed it.
async fn serve(
    mut stream: TcpStream,
    behaviour: Behaviour,
    release: Arc<Notify>,
    requests: mpsc::UnboundedSender<String>,
) {
    if let Behaviour::KeepAlive = behaviour {
        return keep_alive(stream, requests).await;
    }
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let _ = requests.send(String::from_utf8_lossy(&head).into_owned());
    if let Behaviour::AnswerWithHeaders { count, value_len } = behaviour {
        let value = "v".repeat(value_len);
        let mut response = String::from(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n",
        );
        for i in 0..count {
            response.push_str(&format!("x-upstream-{i}: {value}\r\n"));
        }
        response.push_str("\r\n{}");
        let _ = stream.write_all(response.as_bytes()).await;
        return;
    }
    if let Behaviour::StreamThenHold = behaviour {
        let start = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{FIRST_EVENT}\r\n",
            FIRST_EVENT.len()
        );
        if stream.write_all(start.as_bytes()).await.is_err() {
            return;
        }
        // Hold until released, but notice the gateway hanging up meanwhile.
        tokio::select! {
            () = release.notified() => {
                let rest = format!("{:x}\r\n{REST_EVENTS}\r\n0\r\n\r\n", REST_EVENTS.len());
                if stream.write_all(rest.as_bytes()).await.is_err() {
                    return;
                }
            }
            () = wait_for_eof(&mut stream) => return,
        }
    }
    wait_for_eof(&mut stream).await;
}

async fn wait_for_eof(stream: &mut TcpStream) {
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Answers bodiless requests one after another on one connection until the peer closes it.
async fn keep_alive(mut stream: TcpStream, requests: mpsc::UnboundedSender<String>) {
    let mut pending = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head: Vec<u8> = pending.drain(..end + 4).collect();
            let _ = requests.send(String::from_utf8_lossy(&head).into_owned());
            let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
            if stream.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
        }
    }
}
