//! The body types of the passthrough path.
//!
//! Responses are either a small gateway-made JSON body or the upstream's body streamed frame by
//! frame. `Either` keeps this a plain enum: no boxing, no buffering. Both directions are wrapped
//! once more to count bytes as frames pass ([`Counted`], [`Metered`]); the frames themselves are
//! forwarded as they come, never copied or held back.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Full};

use crate::access::{End, Exchange};
use crate::server::ClientBody;

mod idle_timeout;

pub use self::idle_timeout::{IdleTimedOut, IdleTimeout};

/// The upstream response body, failing if the provider goes silent for longer than the idle
/// timeout. The timer restarts with every frame, so a long stream is never cut.
pub type UpstreamBody = IdleTimeout<crate::upstream::http1::PooledBody>;

pub type ProxyBody = Either<Full<Bytes>, UpstreamBody>;

/// What the passthrough listener sends: a [`ProxyBody`] that reports the request's end.
pub type ResponseBody = Metered<ProxyBody>;

/// The client's request body, counted, failing with `LengthLimitError` past the configured size.
pub type RequestBody = http_body_util::Limited<Counted<ClientBody>>;

pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Either::Left(Full::new(bytes.into()))
}

/// Adds the size of every data frame to a shared counter (the request's bytes in).
#[derive(Debug)]
pub struct Counted<B> {
    inner: B,
    bytes: Arc<AtomicU64>,
}

impl<B> Counted<B> {
    pub fn new(inner: B, bytes: Arc<AtomicU64>) -> Self {
        Counted { inner, bytes }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Counted<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// A response body that owns its request's [`Exchange`]: it counts the bytes sent and, when
    /// dropped (the body ended, failed, or the client went away), the exchange records the
    /// request. Dropped unfinished, the exchange records the client as gone.
    #[derive(Debug)]
    pub struct Metered<B> {
        #[pin]
        inner: B,
        exchange: Box<Exchange>,
        // The exact body length, when known up front.
        expected: Option<u64>,
        sent: u64,
    }
}

impl<B: Body> Metered<B> {
    /// `content_length` is the response's declared length, if any: hyper stops polling a body
    /// once it has written that many bytes, so it is how a complete body is recognised.
    pub fn new(inner: B, mut exchange: Box<Exchange>, content_length: Option<u64>) -> Self {
        // An empty body (a HEAD answer, a 204) may never be polled: it is complete as it is.
        if inner.is_end_stream() {
            exchange.end(End::Complete);
        }
        let expected = inner.size_hint().exact().or(content_length);
        Metered { inner, exchange, expected, sent: 0 }
    }

    /// The request's exchange, for what the response's head carries beside its map.
    pub fn exchange(&self) -> &Exchange {
        &self.exchange
    }
}

impl<B: Body<Data = Bytes>> Body for Metered<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let mut inner = this.inner;
        let polled = inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.exchange.sent(data);
                    *this.sent += data.len() as u64;
                }
                // hyper stops polling once it has written a known length (or `is_end_stream`
                // says nothing is left), so the final `None` below may never come.
                if inner.is_end_stream() || this.expected.is_some_and(|expected| *this.sent >= expected) {
                    this.exchange.end(End::Complete);
                }
            }
            Poll::Ready(Some(Err(_))) => this.exchange.end(End::UpstreamError),
            Poll::Ready(None) => this.exchange.end(End::Complete),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use http::{HeaderValue, Method, StatusCode};
    use http_body_util::BodyExt;

    use super::*;
    use crate::metrics::Metrics;
    use crate::metrics::labels::Source;
    use crate::state::ConfigState;

    fn exchange(metrics: &Metrics) -> Exchange {
        let id = HeaderValue::from_static("req-1");
        let recorder =
            crate::access::Recorder { metrics: metrics.requests.clone(), usage: Arc::new(crate::usage::DiscardUsage) };
        Exchange::start(Arc::new(recorder), Instant::now(), id, Method::POST, "/p/openai/v1/x")
    }

    #[tokio::test]
    async fn a_body_read_to_the_end_records_its_bytes_once_and_leaves_nothing_in_flight() {
        let metrics = Metrics::new(Arc::new(ConfigState::new()), None);
        let mut exchange = exchange(&metrics);
        exchange.set_provider(aurora_core::ProviderKind::OpenAi);
        exchange.respond(StatusCode::OK, Source::Upstream, true);
        assert!(metrics.encode().contains("aurora_dataplane_streams_open 1\n"));
        let body = Metered::new(full("0123456789"), Box::new(exchange), Some(10));
        assert_eq!(body.collect().await.unwrap().to_bytes(), "0123456789");

        let text = metrics.encode();
        for expected in [
            "aurora_dataplane_response_body_bytes_total{provider=\"openai\"} 10\n",
            "aurora_dataplane_requests_total{provider=\"openai\",method=\"POST\",status_class=\"2xx\",source=\"upstream\"} 1\n",
            "aurora_dataplane_requests_in_flight 0\n",
            "aurora_dataplane_streams_open 0\n",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
    }

    #[test]
    fn a_request_abandoned_before_any_response_counts_as_the_clients() {
        let metrics = Metrics::new(Arc::new(ConfigState::new()), None);
        drop(exchange(&metrics));
        let text = metrics.encode();
        let series = "aurora_dataplane_requests_total{provider=\"unknown\",method=\"POST\",status_class=\"4xx\",source=\"client\"} 1\n";
        assert!(text.contains(series), "{text}");
        assert!(text.contains("aurora_dataplane_requests_in_flight 0\n"), "{text}");
    }

    #[tokio::test]
    async fn a_limited_request_is_charged_its_tokens_and_frees_its_slot_however_it_ends() {
        use crate::limits::{Fallback, KeyLimits, Limiters};
        let metrics = Metrics::new(Arc::new(ConfigState::new()), None);
        let limiters = Limiters::default();
        let state = limiters.state(crate::snapshot::KeyId([4; 16]));
        let limits = KeyLimits { max_concurrent: 1, tokens_per_minute: 1_000_000, ..Default::default() };
        let admit = || limiters.admit(&state, &limits, Fallback::Share, limiters.now_ms());
        let text = r#"{"model":"claude","usage":{"input_tokens":3,"output_tokens":4,"cache_read_input_tokens":5}}"#;
        let limited = |admission| {
            let mut exchange = exchange(&metrics);
            exchange.set_provider(aurora_core::ProviderKind::Anthropic);
            exchange.respond(StatusCode::OK, Source::Upstream, false);
            exchange.admit(admission);
            let mut headers = http::HeaderMap::new();
            headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            let metering = crate::metering::Metering::new(true);
            exchange.meter(metering.start(StatusCode::OK, &headers, None));
            Metered::new(full(text), Box::new(exchange), Some(text.len() as u64))
        };

        let body = limited(admit().unwrap());
        assert!(admit().is_err(), "the one slot is taken while the body is out");
        body.collect().await.unwrap();
        assert_eq!(state.in_flight(), 0, "the slot is freed when the body ends");
        // Charged input + output + Anthropic's cache reads.
        let next = admit().unwrap();
        assert_eq!(next.view().tokens, Some((1_000_000, 1_000_000 - 12)));
        drop(next);

        // The client went away mid-response: the slot is freed all the same.
        let abandoned = limited(admit().unwrap());
        assert_eq!(state.in_flight(), 1);
        drop(abandoned);
        assert_eq!(state.in_flight(), 0);
        assert!(admit().is_ok());
    }

    #[tokio::test]
    async fn counted_adds_every_data_frame() {
        let bytes = Arc::new(AtomicU64::new(0));
        let body = Counted::new(Full::new(Bytes::from_static(b"abcd")), bytes.clone());
        body.collect().await.unwrap();
        assert_eq!(bytes.load(Ordering::Relaxed), 4);
    }
}
