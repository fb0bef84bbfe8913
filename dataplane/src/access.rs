//! One record per request: the access-log line and the request metrics, written once, when the
//! response is over.
//!
//! An [`Exchange`] is created the moment a request arrives and travels with it: first as a
//! local of the proxy's handler, then inside the response body ([`crate::body::Metered`]).
//! Whichever way the request ends (the body finished, the upstream failed mid-stream, the
//! client hung up before or after the headers), the exchange is dropped exactly once, and its
//! `Drop` moves out its `Record`, with the total duration and the bytes each way, to be written.
//! Nothing here ever holds a key secret: the log names a key by its id. A request that reached
//! an upstream also carries the response's [`Meter`]: the exchange feeds it the frames sent and
//! the record ends it, so each upstream response yields exactly one [`crate::usage::Usage`]. A
//! request of a limited key also carries its [`Admission`], and its response's rate-limit
//! headers for the server to write with the head ([`crate::server::Handler::late_fields`]). Its
//! record is written in the `Drop` itself, which charges the metered tokens and then frees the
//! concurrency slot, whichever way the request ended, so the tokens are spent before the client
//! can read the answer and ask again. Every other record is written after the answer's last
//! bytes are flushed to the client ([`after_flush`]): reading the usage and writing the log need
//! not delay them.

pub mod after_flush;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aurora_core::ProviderKind;
use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};

use crate::auth::Principal;
use crate::limits::{Admission, RateHeaders};
use crate::metering::Meter;
use crate::metrics::labels::Source;
use crate::metrics::{Completed, RequestMetrics};
use crate::usage::{TokenCounts, UsageOutcome, UsageSink};

/// How the response ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The whole body reached the client.
    Complete,
    /// The upstream body failed mid-way (reset, or silent past the idle timeout).
    UpstreamError,
    /// The client went away before the end.
    ClientGone,
}

impl End {
    fn as_str(self) -> &'static str {
        match self {
            End::Complete => "complete",
            End::UpstreamError => "upstream_error",
            End::ClientGone => "client_gone",
        }
    }
}

/// The status logged when the client left before any response: nginx's convention.
const CLIENT_CLOSED_REQUEST: u16 = 499;

/// The access log's `tracing` target (`AURORA_LOG=info,aurora::access=off` turns it off).
const ACCESS_LOG: &str = "aurora::access";

/// Where finished requests are recorded: the request metrics and the usage sink. One per
/// serving worker (it travels with every [`Exchange`], and a count on a cache line the other
/// cores never write is free).
#[derive(Debug, Clone)]
pub struct Recorder {
    pub metrics: Arc<RequestMetrics>,
    pub usage: Arc<dyn UsageSink>,
}

#[derive(Debug)]
pub struct Exchange {
    /// What is learned of the request as it goes, written as its record when it is over.
    record: Record,
    bytes_in: Arc<AtomicU64>,
    /// A limited key's hold on its limits; dropped (freeing its slot) with the exchange.
    admission: Option<Admission>,
    /// The rate-limit headers of a limited key's response, written with its head by the server.
    rate_headers: Option<RateHeaders>,
}

/// What an [`Exchange`] learns of its request, from its arrival to its end.
#[derive(Debug)]
struct Record {
    recorder: Arc<Recorder>,
    started: Instant,
    request_id: HeaderValue,
    method: Method,
    /// The request's path, for the access log (the query may carry anything, so it is not
    /// kept); `None` while that log is off, so a gateway that does not log keeps nothing. A
    /// record without the whole `Uri` is about 70 bytes smaller and moves that much less on its
    /// way to the log (with the log off: 500 fewer instructions per request).
    path: Option<Box<str>>,
    provider: Option<ProviderKind>,
    principal: Option<Principal>,
    response: Option<(StatusCode, Source)>,
    stream: bool,
    bytes_out: u64,
    end: Option<End>,
    meter: Option<Meter>,
}

impl Record {
    fn new(
        recorder: Arc<Recorder>,
        started: Instant,
        request_id: HeaderValue,
        method: Method,
        path: Option<Box<str>>,
    ) -> Self {
        Record {
            recorder,
            started,
            request_id,
            method,
            path,
            provider: None,
            principal: None,
            response: None,
            stream: false,
            bytes_out: 0,
            end: None,
            meter: None,
        }
    }
}

impl Exchange {
    /// A request arrived; it counts as in flight until this is dropped.
    pub fn start(
        recorder: Arc<Recorder>,
        started: Instant,
        request_id: HeaderValue,
        method: Method,
        path: &str,
    ) -> Self {
        recorder.metrics.started();
        let path = tracing::enabled!(target: ACCESS_LOG, tracing::Level::INFO).then(|| path.into());
        Exchange {
            record: Record::new(recorder, started, request_id, method, path),
            bytes_in: Arc::default(),
            admission: None,
            rate_headers: None,
        }
    }

    pub fn started(&self) -> Instant {
        self.record.started
    }

    /// The counter the request body adds its bytes to.
    pub fn bytes_in(&self) -> Arc<AtomicU64> {
        self.bytes_in.clone()
    }

    pub fn set_provider(&mut self, provider: ProviderKind) {
        self.record.provider = Some(provider);
    }

    pub fn set_principal(&mut self, principal: Principal) {
        self.record.principal = Some(principal);
    }

    /// The response headers are ready; `stream` marks a server-sent-event response.
    pub fn respond(&mut self, status: StatusCode, source: Source, stream: bool) {
        self.record.response = Some((status, source));
        if stream && !self.record.stream {
            self.record.stream = true;
            self.record.recorder.metrics.stream_opened();
        }
    }

    /// The upstream's response is metered: every frame sent from now on is fed to `meter`.
    pub fn meter(&mut self, meter: Meter) {
        self.record.meter = Some(meter);
    }

    /// The request was admitted under its key's limits.
    pub fn admit(&mut self, admission: Admission) {
        self.admission = Some(admission);
    }

    pub fn admission(&self) -> Option<&Admission> {
        self.admission.as_ref()
    }

    /// The response's head is to carry these rate-limit headers.
    pub fn set_rate_headers(&mut self, headers: RateHeaders) {
        self.rate_headers = Some(headers);
    }

    pub fn rate_headers(&self) -> Option<&RateHeaders> {
        self.rate_headers.as_ref()
    }

    /// A data frame is on its way to the client.
    pub fn sent(&mut self, data: &Bytes) {
        self.record.bytes_out += data.len() as u64;
        if let Some(meter) = &mut self.record.meter {
            meter.sent(data);
        }
    }

    /// Records how the response ended; the first call wins.
    pub fn end(&mut self, end: End) {
        self.record.end.get_or_insert(end);
    }
}

/// The tokens a response costs a key's token limits: input plus output, with Anthropic's cache
/// reads and writes, which it reports apart from `input_tokens` (OpenAI-style providers count
/// cached tokens inside the prompt tokens already).
pub fn charged_tokens(provider: ProviderKind, tokens: &TokenCounts) -> u64 {
    let cache = match provider {
        ProviderKind::Anthropic => tokens.cache_read_input.saturating_add(tokens.cache_creation_input),
        _ => 0,
    };
    tokens.input.saturating_add(tokens.output).saturating_add(cache)
}

impl Drop for Exchange {
    fn drop(&mut self) {
        if self.record.stream {
            self.record.recorder.metrics.stream_closed();
        }
        // The exchange's own record is moved out; what stays behind is only dropped.
        let (recorder, started) = (self.record.recorder.clone(), self.record.started);
        let left = Record::new(recorder, started, HeaderValue::from_static(""), Method::default(), None);
        let finished = Finished {
            duration: started.elapsed(),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            record: std::mem::replace(&mut self.record, left),
        };
        match &self.admission {
            // Charged now: the key's next request must see these tokens spent.
            Some(admission) => finished.write(Some(admission)),
            None => after_flush::write(finished),
        }
    }
}

/// A request that is over: its record, with what was measured at its end.
#[derive(Debug)]
struct Finished {
    record: Record,
    duration: Duration,
    bytes_in: u64,
}

impl Finished {
    /// Ends the meter (yielding the response's usage), charges `admission` the tokens, and
    /// writes the metrics and the access-log line.
    fn write(self, admission: Option<&Admission>) {
        let Finished { record, duration, bytes_in } = self;
        let Record {
            recorder,
            started: _,
            request_id,
            method,
            path,
            provider,
            principal,
            response,
            stream,
            bytes_out,
            end,
            meter,
        } = record;
        let end = end.unwrap_or(End::ClientGone);
        let (status, source) = response.unwrap_or((
            StatusCode::from_u16(CLIENT_CLOSED_REQUEST).unwrap_or(StatusCode::BAD_REQUEST),
            Source::Client,
        ));
        let usage = meter.zip(provider).map(|(meter, provider)| {
            let principal = principal.unwrap_or(Principal::Anonymous);
            let usage = meter.end(end == End::Complete, principal, provider, &*recorder.usage);
            recorder.metrics.usage(provider, &usage);
            usage
        });
        let known = usage.as_ref().filter(|u| u.outcome != UsageOutcome::Unknown);
        if let (Some(admission), Some(usage), Some(provider)) = (admission, known, provider) {
            admission.charge(
                charged_tokens(provider, &usage.tokens),
                crate::credentials::unix_ms(std::time::SystemTime::now()),
            );
        }
        recorder.metrics.completed(&Completed {
            provider,
            method: &method,
            status,
            source,
            duration,
            bytes_in,
            bytes_out,
        });
        tracing::info!(
            target: ACCESS_LOG,
            request_id = request_id.to_str().unwrap_or_default(),
            provider = provider.map_or("-", ProviderKind::as_str),
            method = method.as_str(),
            path = path.as_deref().unwrap_or("-"),
            status = status.as_u16(),
            source = source.as_str(),
            outcome = end.as_str(),
            stream,
            duration_ms = duration.as_secs_f64() * 1000.0,
            bytes_in,
            bytes_out,
            key_id = principal.map(|p| match p {
                Principal::Key(id) => id.to_string(),
                Principal::MasterKey => "master".to_owned(),
                Principal::Anonymous => "-".to_owned(),
            }),
            usage = usage.as_ref().map(|u| u.outcome.as_str()),
            model = usage.as_ref().and_then(|u| u.model.as_deref()),
            input_tokens = known.map(|u| u.tokens.input),
            output_tokens = known.map(|u| u.tokens.output),
            cache_read_input_tokens = known.map(|u| u.tokens.cache_read_input),
            cache_creation_input_tokens = known.map(|u| u.tokens.cache_creation_input),
            "request"
        );
    }
}
