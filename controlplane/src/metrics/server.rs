//! The plaintext HTTP listener for `/metrics` and `/healthz` (hyper, HTTP/1.1 and h2c).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use super::Metrics;

/// Serves until the task is aborted (the control plane drops it when it stops).
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    let builder = auto::Builder::new(TokioExecutor::new());
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
        let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(listener = "metrics", error = %err, "connection ended with an error");
            }
        });
    }
}

fn respond<B>(metrics: &Metrics, request: &Request<B>) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match request.uri().path() {
        "/metrics" => (StatusCode::OK, super::CONTENT_TYPE, Bytes::from(metrics.encode())),
        "/healthz" => (StatusCode::OK, "text/plain; charset=utf-8", Bytes::from_static(b"ok\n")),
        _ => (StatusCode::NOT_FOUND, "text/plain; charset=utf-8", Bytes::from_static(b"not found\n")),
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
