//! The passthrough request path: route, authenticate, rewrite headers, forward, stream back.
//!
//! Everything that can refuse a request is checked against one snapshot, loaded once, before a
//! byte goes upstream; the snapshot guard is dropped before the first `.await`. Bodies stream
//! in both directions. Dropping the response (the client went away) drops the upstream
//! response future or body, which closes or resets the upstream stream: an abandoned LLM call
//! stops costing money at once. Each request carries an [`Exchange`] from arrival to the end
//! of its response, which writes the access-log line and the request metrics once it is over.

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aurora_core::{ErrorShape, ProviderKind};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::request::Parts;
use http::{HeaderName, HeaderValue, Request, Response, Uri, Version};
use http_body::Body as _;
use http_body_util::{Either, LengthLimitError, Limited};

use crate::access::{Exchange, Recorder};
use crate::auth;
use crate::body::{Counted, IdleTimeout, Metered, ProxyBody, ResponseBody};
use crate::config::{Limits, UpstreamConfig};
use crate::deadline::{Deadlines, Passed};
use crate::egress::connector::ConnectError;
use crate::error::{GatewayError, InvalidResponse};
use crate::headers::BodyFraming;
use crate::limits::{Admission, Limiters, RateHeaders};
use crate::metering::Metering;
use crate::metrics::labels::Source;
use crate::server::ClientBody;
use crate::snapshot::{ManagedKey, ProviderTls, Snapshot};
use crate::state::ConfigState;
use crate::upstream::Upstreams;
use crate::upstream::http1::{Http1Client, Http1Error, PooledBody};
use crate::upstream::tls::TlsFailure;
use crate::{headers, request_id, route};

/// The passthrough handler. Each serving worker has its own (see [`Handler::for_worker`]):
/// a request holds a reference to its worker's `Proxy` and [`Recorder`] for its whole life, and
/// counting those references on a cache line no other core writes costs nothing, where one
/// `Arc` shared by every worker had its count bounce between cores twice per request.
#[derive(Debug, Clone)]
pub struct Proxy {
    state: Arc<ConfigState>,
    upstreams: Arc<Upstreams>,
    recorder: Arc<Recorder>,
    /// The worker's deadlines (response headers, body idleness): a sweep per worker rather
    /// than a timer per request.
    deadlines: Deadlines,
    metering: Metering,
    /// Per-key limits' state on this replica (issue 13).
    limiters: Arc<Limiters>,
    response_header_timeout: Duration,
    idle_timeout: Duration,
    max_request_body_bytes: u64,
    upstream_max_header_bytes: u32,
}

/// A request that passed every check, ready to go upstream.
struct Forward {
    uri: Uri,
    shape: ErrorShape,
    provider: ProviderKind,
    /// The provider's own TLS material, when it has some (rare: cloning the `Arc` is the cost).
    tls: Option<Arc<ProviderTls>>,
    /// Whether the worker's plain-HTTP/1.1 client sends it (decided once, in `check`, since the
    /// headers are prepared for the client that sends them).
    own_client: bool,
    /// The credential the request carries, whose health is told about the upstream's answer.
    credential: Option<CredentialRef>,
    /// The key's hold on its limits, when it has any.
    admission: Option<Admission>,
}

/// Which credential a request went out with, found again when its answer comes.
///
/// Not an `Arc` of the credential's health: that count would be incremented and decremented by
/// every worker for every request, on one cache line. The health's address identifies it, and
/// the answer's snapshot has it at the same address (a new revision adopts the health of every
/// credential it keeps); a credential removed meanwhile is no longer found, and its health no
/// longer matters. Should a credential added meanwhile have had its health allocated at the
/// freed address, this one answer is told to it instead: at worst one cooldown or one success
/// misattributed, never a secret exposed.
#[derive(Debug, Clone, Copy)]
struct CredentialRef {
    provider: ProviderKind,
    health: usize,
}

impl CredentialRef {
    /// Tells the credential's health, found in the current snapshot, about the upstream's
    /// answer (synchronously: the snapshot guard is not held across an `.await`).
    fn observe(self, state: &ConfigState, status: http::StatusCode, headers: &http::HeaderMap) {
        let guard = state.load();
        let Some(upstream) = guard.as_deref().and_then(|snapshot| snapshot.provider(self.provider)) else { return };
        if let Some(credential) = upstream.credentials().iter().find(|c| Arc::as_ptr(&c.health) as usize == self.health)
        {
            credential.health.observe_lazily(status, headers, SystemTime::now);
        }
    }
}

/// A refused request and the error shape its provider's SDK understands.
type Rejection = (GatewayError, ErrorShape);

impl Proxy {
    pub fn new(
        state: Arc<ConfigState>,
        upstreams: Upstreams,
        recorder: Recorder,
        upstream: &UpstreamConfig,
        limits: &Limits,
        metering: Metering,
        limiters: Arc<Limiters>,
    ) -> Self {
        Proxy {
            state,
            upstreams: Arc::new(upstreams),
            recorder: Arc::new(recorder),
            deadlines: Deadlines::default(),
            metering,
            limiters,
            response_header_timeout: upstream.response_header_timeout,
            idle_timeout: upstream.idle_timeout,
            max_request_body_bytes: limits.max_request_body_bytes,
            upstream_max_header_bytes: upstream.max_header_bytes,
        }
    }

    pub async fn handle(&self, request: Request<ClientBody>) -> Response<ResponseBody> {
        let started = Instant::now();
        let request_id = request_id::for_request(request.headers());
        // Dropped with this future if the client goes away before the response: the exchange
        // then records the request as abandoned.
        // Boxed: the exchange rides in the response body, which is moved several times on its
        // way to the client, and a pointer moves cheaper than its few hundred bytes.
        let mut exchange = Box::new(Exchange::start(
            self.recorder.clone(),
            started,
            request_id.clone(),
            request.method().clone(),
            request.uri().path(),
        ));

        let response = match self.forward(request, &request_id, &mut exchange).await {
            Ok(response) => {
                exchange.respond(response.status(), Source::Upstream, is_event_stream(&response));
                // The metering stage reads a copy of every frame sent (see `metering`).
                let body_length = response.body().size_hint().exact();
                exchange.meter(self.metering.start(response.status(), response.headers(), body_length));
                response
            }
            Err((err, shape)) => {
                let mut response = err.into_response(shape);
                response.headers_mut().insert(headers::X_REQUEST_ID, request_id);
                exchange.respond(response.status(), Source::Gateway, false);
                response
            }
        };
        let (parts, body) = response.into_parts();
        // Parsed only when the body does not know its own length (an HTTP/2 upstream's may not).
        let content_length = body
            .size_hint()
            .exact()
            .or_else(|| parts.headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok()));
        Response::from_parts(parts, Metered::new(body, exchange, content_length))
    }

    async fn forward(
        &self,
        request: Request<ClientBody>,
        request_id: &HeaderValue,
        exchange: &mut Exchange,
    ) -> Result<Response<ProxyBody>, Rejection> {
        let (mut parts, body) = request.into_parts();
        let Forward { uri, shape, provider, tls, own_client, credential, admission } =
            self.check(&mut parts, body.size_hint().exact(), request_id, exchange)?;
        if let Some(admission) = admission {
            exchange.admit(admission);
        }

        let body = Counted::new(body, exchange.bytes_in());
        let body = Limited::new(body, usize::try_from(self.max_request_body_bytes).unwrap_or(usize::MAX));
        // The client's method and (prepared) headers go on in its own parts, which saves building
        // and dropping an empty header map; what the server attached to it (extensions) does not.
        parts.uri = uri;
        // The client library picks HTTP/1.1 or HTTP/2 per connection (ALPN); the version the
        // client spoke to us has no bearing on it.
        parts.version = Version::HTTP_11;
        parts.extensions.clear();
        let mut upstream_request = Request::from_parts(parts, body);
        if let Some(auth) = self.upstreams.proxy.as_ref().and_then(|p| p.http_authorization(upstream_request.uri())) {
            upstream_request.headers_mut().insert(http::header::PROXY_AUTHORIZATION, auth);
        }

        let sent = Instant::now();
        self.recorder.metrics.overhead(provider, sent.duration_since(exchange.started()));
        let deadline = tokio::time::Instant::from_std(sent + self.response_header_timeout);
        let answered = match &self.upstreams.http1 {
            Some(http1) if own_client => match self.deadlines.bound(deadline, http1.request(upstream_request)).await {
                Ok(Ok(response)) => Ok(response),
                Ok(Err(err)) => Err(self.classify(&err, err.is_connect())),
                Err(Passed) => Err(GatewayError::UpstreamTimeout),
            },
            _ => {
                // hyper-util's client sets `Host` only when there is none: the client's must go.
                upstream_request.headers_mut().remove(http::header::HOST);
                let pending = match &tls {
                    None => self.upstreams.client.request(upstream_request),
                    Some(tls) => match self.upstreams.dedicated.client(provider, tls) {
                        Ok(client) => client.request(upstream_request),
                        Err(err) => {
                            tracing::warn!(provider = %provider, error = %err, "cannot set up the provider's TLS");
                            return Err((GatewayError::UpstreamTls(TlsFailure::Other), shape));
                        }
                    },
                };
                match self.deadlines.bound(deadline, pending).await {
                    Ok(Ok(response)) => Ok(response.map(PooledBody::unpooled)),
                    Ok(Err(err)) => Err(self.classify(&err, err.is_connect())),
                    Err(Passed) => Err(GatewayError::UpstreamTimeout),
                }
            }
        };
        let response = answered.map_err(|err| (err, shape))?;
        self.recorder.metrics.upstream_headers(provider, sent.elapsed());
        let (mut parts, body) = response.into_parts();
        if let Some(credential) = credential {
            // A 429 starts this credential's cooldown; the response itself passes unchanged.
            credential.observe(&self.state, parts.status, &parts.headers);
        }
        // hyper bounds the head it reads only roughly (by read buffer and field count); this is
        // the exact limit, the same for HTTP/1.1 and HTTP/2. Dropping the body ends the exchange.
        if headers::section_size(&parts.headers) > usize::try_from(self.upstream_max_header_bytes).unwrap_or(usize::MAX)
        {
            tracing::warn!(status = parts.status.as_u16(), "upstream response refused: its headers are too large");
            let invalid = InvalidResponse::HeadersTooLarge(self.upstream_max_header_bytes);
            return Err((GatewayError::UpstreamResponseInvalid(invalid), shape));
        }
        headers::prepare_response(&mut parts.headers, request_id);
        if let Some(admission) = exchange.admission() {
            // A limited key's own limits, so its clients can pace themselves before a refusal:
            // the server writes them with the head (`late_fields`), where the provider's went.
            let rate_headers = RateHeaders::new(admission.view(), shape, || self.limiters.now_ms());
            rate_headers.remove_replaced(&mut parts.headers);
            exchange.set_rate_headers(rate_headers);
        }
        Ok(Response::from_parts(
            parts,
            Either::Right(IdleTimeout::new(body, self.idle_timeout, self.deadlines.clone())),
        ))
    }

    /// Every check that can refuse the request, against one snapshot. Synchronous on purpose:
    /// the snapshot guard must not live across an `.await`.
    fn check(
        &self,
        parts: &mut Parts,
        body_length: Option<u64>,
        request_id: &HeaderValue,
        exchange: &mut Exchange,
    ) -> Result<Forward, Rejection> {
        let default_shape = ErrorShape::OpenAi;
        let guard = self.state.load();
        let snapshot: &Snapshot = guard.as_deref().ok_or((GatewayError::NotReady, default_shape))?;

        let (name, endpoint) = route::split(parts.uri.path()).ok_or((GatewayError::NoRoute, default_shape))?;
        if !snapshot.settings.passthrough_enabled {
            return Err((GatewayError::PassthroughDisabled(snapshot.enabled_providers()), default_shape));
        }
        let not_enabled =
            || GatewayError::ProviderNotEnabled { name: name.to_owned(), enabled: snapshot.enabled_providers() };
        let kind: ProviderKind = name.parse().map_err(|_| (not_enabled(), default_shape))?;
        let shape = kind.error_shape();
        let upstream = snapshot.provider(kind).filter(|u| u.enabled).ok_or_else(|| (not_enabled(), shape))?;
        exchange.set_provider(kind);
        if !route::forwards(&parts.method) {
            return Err((GatewayError::MethodNotAllowed(parts.method.clone()), shape));
        }

        let (principal, key) = auth::authenticate_key(snapshot, &parts.headers, kind, unix_now).map_err(|err| {
            self.recorder.metrics.auth_failure(kind, err);
            (err.into(), shape)
        })?;
        exchange.set_principal(principal);

        let endpoint = route::normalize_endpoint(endpoint, snapshot.settings.v1_alias_enabled)
            .map_err(|err| (err.into(), shape))?;
        if let Some(policy) = key.and_then(|key| key.policy.as_deref()) {
            policy.check_endpoint(kind, &parts.method, endpoint).map_err(|err| (err.into(), shape))?;
        }
        let credential = upstream.credentials().pick_lazily(|| crate::credentials::unix_ms(SystemTime::now()));
        if credential.is_none() && !upstream.credentials().is_empty() {
            return Err((GatewayError::CredentialsDisabled(kind), shape));
        }
        if credential.is_none() && !kind.credential_optional() {
            return Err((GatewayError::CredentialMissing(kind), shape));
        }
        // The body's exact length is its `Content-Length`, already read by the server (a
        // chunked body has none: hyper drops a `Content-Length` sent beside chunked framing).
        if body_length.is_some_and(|len| len > self.max_request_body_bytes) {
            return Err((GatewayError::BodyTooLarge(self.max_request_body_bytes), shape));
        }
        let uri = upstream
            .uri(endpoint, parts.uri.query())
            .ok_or((GatewayError::Path(route::PathError::InvalidEncoding), shape))?;
        // Last of the checks, so a request refused for anything else uses none of the key's
        // capacity.
        let admission = match key {
            Some(key) => self.admit(snapshot, key).map_err(|err| (err, shape))?,
            None => None,
        };
        let tls = upstream.tls().cloned();
        let own_client = tls.is_none() && self.upstreams.http1.is_some() && Http1Client::handles(&uri);
        let framing = if own_client { BodyFraming::BySender } else { BodyFraming::ByLength(body_length) };
        headers::prepare_request(&mut parts.headers, upstream, credential.map(|c| c.header()), request_id, framing);
        let credential = credential.map(|c| CredentialRef { provider: kind, health: Arc::as_ptr(&c.health) as usize });
        Ok(Forward { uri, shape, provider: kind, tls, own_client, credential, admission })
    }

    /// Admits the request under the key's limits: its own, else the snapshot's defaults. A key
    /// with neither costs one branch and touches no shared state.
    fn admit(&self, snapshot: &Snapshot, key: &ManagedKey) -> Result<Option<Admission>, GatewayError> {
        let policy = key.policy.as_deref();
        let Some(limits) = crate::limits::effective(policy, &snapshot.limits) else { return Ok(None) };
        let found;
        let state = match policy {
            Some(policy) => policy.limiter(|| self.limiters.state(key.id)),
            // A key without a policy (under the default limits) has nowhere to keep its state:
            // the registry's lock-free lookup.
            None => {
                found = self.limiters.state(key.id);
                &found
            }
        };
        let now_ms = self.limiters.now_ms();
        Ok(Some(self.limiters.admit(state, limits, snapshot.limits.fallback, now_ms)?))
    }

    /// Maps a failed upstream exchange to the error the client sees.
    fn classify(&self, root: &(dyn StdError + 'static), is_connect: bool) -> GatewayError {
        let err = root;
        let causes = || std::iter::successors(Some(root), |e: &&(dyn StdError + 'static)| (*e).source());
        if causes().any(|cause| cause.is::<LengthLimitError>()) {
            return GatewayError::BodyTooLarge(self.max_request_body_bytes);
        }
        if causes().any(|cause| {
            cause.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        }) {
            return GatewayError::UpstreamTimeout;
        }
        match causes().find_map(|cause| cause.downcast_ref::<ConnectError>()) {
            Some(ConnectError::ProxyRefused(refusal)) => {
                tracing::warn!(error = %DisplayChain(err), "upstream request refused by the egress proxy");
                return GatewayError::ProxyRefused(*refusal);
            }
            Some(ConnectError::ProxyUnreachable(_)) => {
                tracing::warn!(error = %DisplayChain(err), "egress proxy unreachable");
                return GatewayError::ProxyUnreachable;
            }
            Some(ConnectError::Direct(_)) | None => {}
        }
        if let Some(failure) = causes().find_map(TlsFailure::of) {
            tracing::warn!(error = %DisplayChain(err), "upstream TLS failed");
            return GatewayError::UpstreamTls(failure);
        }
        // This gateway's own HTTP/1.1 client: a response it refused, or the client's body.
        match causes().find_map(|cause| cause.downcast_ref::<Http1Error>()) {
            Some(Http1Error::Malformed(_)) => {
                tracing::warn!(error = %DisplayChain(err), "upstream response refused");
                return GatewayError::UpstreamResponseInvalid(InvalidResponse::Malformed);
            }
            Some(Http1Error::HeadTooLarge) => {
                tracing::warn!(error = %DisplayChain(err), "upstream response refused");
                return GatewayError::UpstreamResponseInvalid(InvalidResponse::HeadersTooLarge(
                    self.upstream_max_header_bytes,
                ));
            }
            Some(Http1Error::RequestBody(_) | Http1Error::BodyLength) => return GatewayError::RequestBody,
            _ => {}
        }
        // The provider answered, but with a response hyper refused to parse.
        if let Some(parse) = causes().find_map(|cause| cause.downcast_ref::<hyper::Error>().filter(|e| e.is_parse())) {
            tracing::warn!(error = %DisplayChain(err), "upstream response refused");
            return GatewayError::UpstreamResponseInvalid(if parse.is_parse_too_large() {
                InvalidResponse::HeadersTooLarge(self.upstream_max_header_bytes)
            } else {
                InvalidResponse::Malformed
            });
        }
        // The client's own body failed mid-upload (it went away or sent garbage).
        if !is_connect && causes().any(|cause| cause.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_user))
        {
            return GatewayError::RequestBody;
        }
        tracing::warn!(error = %DisplayChain(err), "upstream request failed");
        GatewayError::UpstreamUnreachable
    }
}

impl crate::server::Handler for Proxy {
    type Body = ResponseBody;

    fn for_worker(self: &Arc<Self>) -> Arc<Self> {
        let mut proxy = Proxy::clone(self);
        proxy.recorder = Arc::new(Recorder::clone(&self.recorder));
        proxy.deadlines = Deadlines::default();
        Arc::new(proxy)
    }

    async fn call(self: Arc<Self>, request: Request<ClientBody>) -> Response<ResponseBody> {
        self.handle(request).await
    }

    fn late_fields(response: &Response<ResponseBody>, field: &mut dyn FnMut(&HeaderName, &[u8])) {
        if let Some(rate_headers) = response.body().exchange().rate_headers() {
            rate_headers.for_each(field);
        }
    }
}

/// Whether the response is a server-sent-event stream (counted in `streams_open`).
fn is_event_stream(response: &Response<ProxyBody>) -> bool {
    response.headers().get(CONTENT_TYPE).is_some_and(|value| value.as_bytes().starts_with(b"text/event-stream"))
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Formats an error with its causes on one line.
struct DisplayChain<'a>(&'a (dyn StdError + 'static));

impl std::fmt::Display for DisplayChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}
