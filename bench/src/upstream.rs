//! The fake provider: a minimal hyper server that answers like Anthropic's Messages API.
//!
//! It answers every request at once with a small Anthropic-shaped JSON message, or, when the
//! request carries `x-bench-events: N` (and optionally `x-bench-gap-us`), with an SSE stream of
//! N `content_block_delta` events spaced by the gap. Each event carries the moment the upstream
//! wrote it (nanoseconds since [`epoch`], shared with the client in this process), so the
//! client measures each event's delivery delay exactly rather than inferring it from gaps.
//!
//! It also counts what reaches it: every request, and every request that arrived without one of
//! the bench's provider credentials or still carrying the client's `Authorization` (a leak), so
//! the report can show that rejected tokens never reach the provider. The bench's credentials
//! are [`CREDENTIAL`] (every gateway's) and the three of [`SET_CREDENTIALS`] (the credential set
//! of the feature-cost row), each of those counted apart, so that row can show which
//! credentials its requests went out with.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// The provider credential the gateways inject; the upstream checks it arrives.
pub(crate) const CREDENTIAL: &str = "sk-ant-bench-upstream-credential";

/// A credential set of three, with their weights: the credential-selection feature row's.
pub(crate) const SET_CREDENTIALS: [(&str, &str, u32); 3] = [
    ("bench-a", "sk-ant-bench-set-credential-a", 1),
    ("bench-b", "sk-ant-bench-set-credential-b", 2),
    ("bench-c", "sk-ant-bench-set-credential-c", 3),
];

const JSON_BODY: &str = r#"{"id":"msg_bench","type":"message","role":"assistant","model":"claude-bench","content":[{"type":"text","text":"Hello from the bench upstream."}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":12,"output_tokens":8}}"#;

/// The instant every timestamp in an SSE event counts from.
pub(crate) fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// What reached the upstream.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    /// Requests without a bench credential, or still carrying a client `Authorization`.
    pub(crate) leaks: AtomicU64,
    /// Requests that came with each of [`SET_CREDENTIALS`], in its order.
    pub(crate) set_credentials: [AtomicU64; 3],
}

impl Counters {
    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
    pub(crate) fn leaks(&self) -> u64 {
        self.leaks.load(Ordering::Relaxed)
    }
    /// How many requests came with each of [`SET_CREDENTIALS`] so far.
    pub(crate) fn set_credentials(&self) -> [u64; 3] {
        self.set_credentials.each_ref().map(|count| count.load(Ordering::Relaxed))
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Upstream {
    pub(crate) addr: SocketAddr,
    pub(crate) counters: Arc<Counters>,
}

/// Binds on 127.0.0.1:0 and serves on the current runtime until the process ends.
pub(crate) async fn start() -> anyhow::Result<Upstream> {
    epoch();
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let counters = Arc::new(Counters::default());
    let shared = counters.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            let counters = shared.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| answer(request, counters.clone()));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(Upstream { addr, counters })
}

type Body = BoxBody<Bytes, Infallible>;

async fn answer(request: Request<Incoming>, counters: Arc<Counters>) -> Result<Response<Body>, Infallible> {
    counters.requests.fetch_add(1, Ordering::Relaxed);
    let headers = request.headers();
    let credential = headers.get("x-api-key");
    let in_set = SET_CREDENTIALS.iter().position(|(_, secret, _)| credential.is_some_and(|v| v == *secret));
    if let Some(index) = in_set {
        counters.set_credentials[index].fetch_add(1, Ordering::Relaxed);
    }
    let credential_ok = in_set.is_some() || credential.is_some_and(|v| v == CREDENTIAL);
    if !credential_ok || headers.contains_key(http::header::AUTHORIZATION) {
        counters.leaks.fetch_add(1, Ordering::Relaxed);
    }
    let number = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let events = number("x-bench-events");
    let gap = Duration::from_micros(number("x-bench-gap-us").unwrap_or(10_000));
    // Read the whole request body, as a provider would before answering.
    let _ = request.into_body().collect().await;

    let response = match events {
        None => Response::builder()
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("request-id", "req_bench")
            .body(Full::new(Bytes::from_static(JSON_BODY.as_bytes())).boxed()),
        Some(count) => {
            let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
            tokio::spawn(stream_events(sender, count, gap));
            Response::builder()
                .header(http::header::CONTENT_TYPE, "text/event-stream")
                .header(http::header::CACHE_CONTROL, "no-cache")
                .body(StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(receiver)).boxed())
        }
    };
    Ok(response.unwrap_or_else(|_| {
        let mut response = Response::new(Full::new(Bytes::new()).boxed());
        *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        response
    }))
}

/// Sends `count` events on an absolute schedule (start + i × gap), so timer lateness in one
/// gap does not push every later event back.
async fn stream_events(sender: tokio::sync::mpsc::Sender<Result<Frame<Bytes>, Infallible>>, count: u64, gap: Duration) {
    let start = tokio::time::Instant::now();
    for index in 0..count {
        if index > 0 {
            tokio::time::sleep_until(start + gap * u32::try_from(index).unwrap_or(u32::MAX)).await;
        }
        let sent_ns = epoch().elapsed().as_nanos();
        let event = format!(
            "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"token {index}\"}},\"sent_ns\":{sent_ns}}}\n\n"
        );
        if sender.send(Ok(Frame::data(Bytes::from(event)))).await.is_err() {
            return;
        }
    }
    let _ = sender
        .send(Ok(Frame::data(Bytes::from_static(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"))))
        .await;
}
