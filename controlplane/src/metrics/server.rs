//! The plaintext HTTP listener for `/metrics`, `/healthz`, `/readyz` and `/livez` (hyper,
//! HTTP/1.1 and h2c).
//!
//! It listens outside TLS and without authentication, so it must not let an idle or slow client
//! hold a connection (and its file descriptor) forever: a client has [`HEADER_READ_TIMEOUT`] to
//! send its first byte, and then again to finish each HTTP/1.1 request head.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use super::Metrics;
use crate::store::WriteStatus;

/// Generous for a scraper or a probe on a congested network, short enough to shed slowloris.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves until the task is aborted (the control plane drops it when it stops).
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    serve_with(listener, metrics, HEADER_READ_TIMEOUT).await;
}

async fn serve_with(listener: TcpListener, metrics: Arc<Metrics>, header_read_timeout: Duration) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Without a timer hyper enforces no header read timeout at all.
    builder.http1().timer(TokioTimer::new()).header_read_timeout(header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Usually EMFILE: back off briefly instead of spinning on the error.
                tracing::warn!(listener = "metrics", error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        let service = hyper::service::service_fn(move |request| {
            let metrics = metrics.clone();
            async move { Ok::<_, Infallible>(respond(&metrics, &request)) }
        });
        let builder = builder.clone();
        tokio::spawn(async move {
            // The auto builder waits for the first bytes to tell HTTP/1.1 from h2c, with no
            // timeout of its own: a client that connects and says nothing is dropped here.
            let mut first = [0u8; 1];
            match tokio::time::timeout(header_read_timeout, stream.peek(&mut first)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
            if let Err(err) = builder.serve_connection(TokioIo::new(stream), service).await {
                tracing::debug!(listener = "metrics", error = %err, "connection ended with an error");
            }
        });
    }
}

fn respond<B>(metrics: &Metrics, request: &Request<B>) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match request.uri().path() {
        "/metrics" => (StatusCode::OK, super::CONTENT_TYPE, Bytes::from(metrics.encode())),
        "/livez" => (StatusCode::OK, "text/plain; charset=utf-8", Bytes::from_static(b"ok\n")),
        "/healthz" | "/readyz" => match &*metrics.write_status.borrow() {
            WriteStatus::Writable => (StatusCode::OK, "text/plain; charset=utf-8", Bytes::from_static(b"ok\n")),
            WriteStatus::CannotWrite { reason } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain; charset=utf-8",
                Bytes::from(format!("the store cannot write: {reason}\n")),
            ),
        },
        _ => (StatusCode::NOT_FOUND, "text/plain; charset=utf-8", Bytes::from_static(b"not found\n")),
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;
    use crate::config_stream::feed::ChangeFeed;
    use crate::fleet::Fleet;
    use crate::store::{SqliteStore, Store};

    const SHORT: Duration = Duration::from_millis(200);
    /// Far longer than [`SHORT`]: reaching it means the server never closed the connection.
    const DEADLINE: Duration = Duration::from_secs(10);

    async fn server() -> (std::net::SocketAddr, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("cp.db").display());
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&url, crate::store::test_db::test_keyring()).await.unwrap());
        let feed = ChangeFeed::start(store.clone(), 100, Duration::from_secs(1)).await.unwrap();
        let metrics = Arc::new(Metrics::new(feed, Fleet::new(), store.write_status()));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve_with(listener, metrics, SHORT));
        (addr, dir)
    }

    /// Reads until the server closes the connection, or fails the test at [`DEADLINE`].
    async fn read_until_closed(stream: &mut TcpStream) -> String {
        let mut received = Vec::new();
        tokio::time::timeout(DEADLINE, stream.read_to_end(&mut received))
            .await
            .expect("the server must close a slow connection")
            .unwrap();
        String::from_utf8_lossy(&received).into_owned()
    }

    #[tokio::test]
    async fn a_request_is_answered() {
        let (addr, _dir) = server().await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.unwrap();
        let response = read_until_closed(&mut stream).await;
        assert!(response.starts_with("HTTP/1.1 200 OK") && response.ends_with("ok\n"), "{response}");
    }

    #[tokio::test]
    async fn a_slow_request_head_is_cut_off() {
        let (addr, _dir) = server().await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n").await.unwrap();
        let response = read_until_closed(&mut stream).await;
        assert!(!response.contains("200 OK"), "{response}");
    }

    #[tokio::test]
    async fn a_silent_client_is_cut_off() {
        let (addr, _dir) = server().await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        assert_eq!(read_until_closed(&mut stream).await, "");
    }
}
