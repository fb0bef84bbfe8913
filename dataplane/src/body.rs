//! The body types of the passthrough path.
//!
//! Responses are either a small gateway-made JSON body or the upstream's body streamed frame by
//! frame. `Either` keeps this a plain enum: no boxing, no buffering.

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;

/// The upstream response body, failing if the provider goes silent for longer than the idle
/// timeout. The timer restarts with every frame, so a long stream is never cut.
pub type UpstreamBody = tower_http::timeout::TimeoutBody<Incoming>;

pub type ProxyBody = Either<Full<Bytes>, UpstreamBody>;

/// The client's request body, failing with `LengthLimitError` past the configured size.
pub type RequestBody = http_body_util::Limited<Incoming>;

pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Either::Left(Full::new(bytes.into()))
}
