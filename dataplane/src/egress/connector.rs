//! The TCP connector under the upstream client's TLS: direct, or through an egress proxy.
//!
//! HTTPS destinations go through hyper-util's `CONNECT` [`Tunnel`], so the TLS session (and its
//! ALPN, hence HTTP/2) is negotiated with the provider through the tunnel. Plain-HTTP
//! destinations connect to the proxy itself and the stream is marked proxied, which makes the
//! client send requests in absolute form. Without proxy rules every connection is direct and
//! costs what hyper-util's `HttpConnector` costs alone.

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use http::uri::Scheme;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower::Service;

use super::ProxyRules;

type BoxError = Box<dyn StdError + Send + Sync>;

/// hyper-util does not export its tunnel error type by name; this is that type.
type TunnelError = <Tunnel<HttpConnector> as Service<Uri>>::Error;

/// Why a connection could not be opened. Boxed by the client; `proxy.rs` finds it again in the
/// error's causes to answer with the precise error.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect to the upstream")]
    Direct(#[source] BoxError),
    #[error("cannot connect to the egress proxy")]
    ProxyUnreachable(#[source] BoxError),
    #[error("the egress proxy refused the tunnel: {0}")]
    ProxyRefused(ProxyRefusal),
}

/// How an egress proxy turned a `CONNECT` down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyRefusal {
    #[error("it requires authentication (407); put credentials in the proxy URL")]
    AuthenticationRequired,
    #[error("it answered CONNECT with an error status")]
    Refused,
    #[error("it closed the connection without answering CONNECT")]
    Closed,
}

impl ConnectError {
    fn from_tunnel(err: TunnelError) -> ConnectError {
        match err {
            TunnelError::ProxyAuthRequired => ConnectError::ProxyRefused(ProxyRefusal::AuthenticationRequired),
            TunnelError::TunnelUnsuccessful | TunnelError::ProxyHeadersTooLong => {
                ConnectError::ProxyRefused(ProxyRefusal::Refused)
            }
            TunnelError::TunnelUnexpectedEof => ConnectError::ProxyRefused(ProxyRefusal::Closed),
            other => ConnectError::ProxyUnreachable(Box::new(other)),
        }
    }
}

#[derive(Clone)]
pub struct EgressConnector {
    direct: HttpConnector,
    proxy: Option<Arc<ProxyRules>>,
}

impl EgressConnector {
    pub fn new(direct: HttpConnector, proxy: Option<Arc<ProxyRules>>) -> Self {
        EgressConnector { direct, proxy }
    }
}

impl std::fmt::Debug for EgressConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EgressConnector").field("proxied", &self.proxy.is_some()).finish()
    }
}

impl Service<Uri> for EgressConnector {
    type Response = EgressStream;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<EgressStream, ConnectError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Service::<Uri>::poll_ready(&mut self.direct, cx).map_err(|e| ConnectError::Direct(e.into()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let route = self.proxy.as_ref().and_then(|rules| rules.intercept(&dst));
        let mut direct = self.direct.clone();
        Box::pin(async move {
            let Some(proxy) = route else {
                let io = direct.call(dst).await.map_err(|e| ConnectError::Direct(e.into()))?;
                return Ok(EgressStream { io, proxied: false });
            };
            if dst.scheme() == Some(&Scheme::HTTPS) {
                let mut tunnel = Tunnel::new(proxy.uri().clone(), direct);
                if let Some(auth) = proxy.basic_auth() {
                    tunnel = tunnel.with_auth(auth.clone());
                }
                let io = tunnel.call(dst).await.map_err(ConnectError::from_tunnel)?;
                Ok(EgressStream { io, proxied: false })
            } else {
                let io =
                    direct.call(proxy.uri().clone()).await.map_err(|e| ConnectError::ProxyUnreachable(e.into()))?;
                Ok(EgressStream { io, proxied: true })
            }
        })
    }
}

/// A TCP stream to the provider, a tunnel to it, or a connection to a plain-HTTP proxy.
#[derive(Debug)]
pub struct EgressStream {
    io: TokioIo<TcpStream>,
    /// Requests on this connection go to the proxy itself, so in absolute form.
    proxied: bool,
}

impl Connection for EgressStream {
    fn connected(&self) -> Connected {
        self.io.connected().proxy(self.proxied)
    }
}

impl Read for EgressStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl Write for EgressStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
}
