//! Load generation: what a request looks like, and the three ways the harness sends them.
//!
//! [`open_loop`] sends at a fixed rate and measures from each request's scheduled time
//! (coordinated omission accounted for); [`saturation`] drives established closed-loop
//! generators (wrk, and [`oha`]) for maximum throughput; [`sse`] opens streams and times every
//! event.

pub(crate) mod oha;
pub(crate) mod open_loop;
pub(crate) mod saturation;
pub(crate) mod sse;

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// A small Messages API request body, the same for every target.
pub(crate) const REQUEST_BODY: &str =
    r#"{"model":"claude-bench","max_tokens":16,"messages":[{"role":"user","content":"Say hello."}]}"#;

/// How a request authenticates.
#[derive(Debug, Clone)]
pub(crate) enum Auth {
    /// Straight to the provider with its credential (the direct baseline).
    Provider(String),
    /// A gateway token as `Authorization: Bearer`.
    Gateway(String),
}

/// Where a load run sends its requests.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) name: &'static str,
    pub(crate) addr: SocketAddr,
    pub(crate) path: String,
    pub(crate) auth: Auth,
}

impl Target {
    /// The same target with another credential (a bad token, a probe key).
    pub(crate) fn with_auth(&self, auth: Auth) -> Target {
        Target { auth, ..self.clone() }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}{}", self.addr, self.path)
    }

    /// The header that carries this target's credential.
    pub(crate) fn auth_header(&self) -> (&'static str, String) {
        match &self.auth {
            Auth::Provider(credential) => ("x-api-key", credential.clone()),
            Auth::Gateway(token) => ("authorization", format!("Bearer {token}")),
        }
    }

    pub(crate) fn request(&self, extra: &[(&str, String)]) -> anyhow::Result<Request<Full<Bytes>>> {
        let (name, value) = self.auth_header();
        let mut builder = Request::post(self.path.as_str())
            .header(http::header::HOST, self.addr.to_string())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("anthropic-version", "2023-06-01")
            .header(name, value);
        for (name, value) in extra {
            builder = builder.header(*name, value.as_str());
        }
        Ok(builder.body(Full::new(Bytes::from_static(REQUEST_BODY.as_bytes())))?)
    }
}

/// One HTTP/1.1 keep-alive connection.
#[derive(Debug)]
pub(crate) struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Conn {
    pub(crate) async fn open(addr: SocketAddr) -> anyhow::Result<Conn> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(Conn { sender })
    }

    /// Sends a request and reads the whole response; returns its status and whether the
    /// gateway itself answered (`x-aurora-error: gateway`).
    pub(crate) async fn send(&mut self, request: Request<Full<Bytes>>) -> anyhow::Result<(StatusCode, bool)> {
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let gateway = response.headers().contains_key("x-aurora-error");
        response.into_body().collect().await?;
        Ok((status, gateway))
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// The underlying sender, for streaming responses.
    pub(crate) fn sender(&mut self) -> &mut hyper::client::conn::http1::SendRequest<Full<Bytes>> {
        &mut self.sender
    }
}

/// A latency histogram in nanoseconds, 1 µs to 100 s at 3 significant digits.
pub(crate) fn histogram() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1_000, 100_000_000_000, 3)
        .unwrap_or_else(|_| hdrhistogram::Histogram::new(3).unwrap_or_else(|_| unreachable!("3 digits is valid")))
}
