//! Admin API calls counted by method and gRPC status code.
//!
//! An interceptor sees only the request, so the admin service is wrapped in a small service
//! that reads the outcome from the response: a failed unary call is a trailers-only response
//! with `grpc-status` in its headers; a response without it succeeded (its `grpc-status: 0`
//! comes in the trailers). Calls refused by the master-key check are counted too, since the
//! wrapper sits outside the interceptor.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tonic::server::NamedService;

/// The admin RPCs; any other path is counted as `unknown`, so the label stays bounded.
const METHODS: &[&str] = &[
    "CreateKey",
    "GetKey",
    "ListKeys",
    "UpdateKey",
    "RevokeKey",
    "DeleteKey",
    "ListProviders",
    "UpsertProvider",
    "DeleteProvider",
    "GetSettings",
    "UpdateSettings",
    "ListDataPlanes",
    "WaitForRevision",
    "GetProvider",
    "AddProviderCredential",
    "UpdateProviderCredential",
    "RemoveProviderCredential",
    "ListProviderCredentials",
    "QueryUsage",
    "ListAudit",
    "VerifyAudit",
];

/// gRPC status codes by number, as the spec spells them.
const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

pub type AdminCallFamily = Family<[(&'static str, &'static str); 2], Counter>;

/// Wraps the admin service; see the module docs.
#[derive(Debug, Clone)]
pub struct AdminCalls<S> {
    inner: S,
    calls: AdminCallFamily,
}

impl<S> AdminCalls<S> {
    pub fn new(inner: S, calls: AdminCallFamily) -> Self {
        AdminCalls { inner, calls }
    }
}

impl<S: NamedService> NamedService for AdminCalls<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B, RB> tonic::codegen::Service<http::Request<B>> for AdminCalls<S>
where
    S: tonic::codegen::Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = method_label(request.uri().path());
        // The clone is the one that was not polled ready; call the ready one (tower's rule).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let calls = self.calls.clone();
        Box::pin(async move {
            let result = inner.call(request).await;
            let code = match &result {
                Ok(response) => code_label(response.headers().get("grpc-status").map(http::HeaderValue::as_bytes)),
                Err(_) => "UNKNOWN",
            };
            calls.get_or_create(&[("method", method), ("code", code)]).inc();
            result
        })
    }
}

fn method_label(path: &str) -> &'static str {
    let name = path.rsplit('/').next().unwrap_or_default();
    METHODS.iter().copied().find(|method| *method == name).unwrap_or("unknown")
}

fn code_label(grpc_status: Option<&[u8]>) -> &'static str {
    let Some(value) = grpc_status else { return "OK" };
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.parse::<usize>().ok())
        .and_then(|code| CODES.get(code).copied())
        .unwrap_or("UNKNOWN")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_stay_within_the_known_sets() {
        assert_eq!(method_label("/aurora.v1.AdminService/CreateKey"), "CreateKey");
        assert_eq!(method_label("/aurora.v1.AdminService/Nope"), "unknown");
        assert_eq!(code_label(None), "OK");
        assert_eq!(code_label(Some(b"16")), "UNAUTHENTICATED");
        assert_eq!(code_label(Some(b"5")), "NOT_FOUND");
        assert_eq!(code_label(Some(b"99")), "UNKNOWN");
    }
}
