//! Every error the data plane itself answers with, and the one place each becomes a response.
//!
//! Gateway-made errors carry the provider's native error schema, so SDKs raise their usual
//! exception classes, and `x-aurora-error: gateway`, so an operator can tell them from upstream
//! errors (which are passed through untouched and never come through here).

use std::sync::OnceLock;

use aurora_core::{ErrorShape, ProviderKind, ProviderSet};
use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Method, Response, StatusCode};
use serde::Serialize;

use crate::auth::AuthError;
use crate::body::{ProxyBody, full};
use crate::egress::connector::ProxyRefusal;
use crate::headers::X_AURORA_ERROR;
use crate::limits::{EndpointNotAllowed, Refusal};
use crate::route::{self, PathError};
use crate::upstream::tls::TlsFailure;

/// Longest part of a client-chosen method name repeated in an error message.
const SHOWN_METHOD_CHARS: usize = 24;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("the gateway has not received its configuration yet; retry shortly")]
    NotReady,
    #[error("no route for this path; passthrough routes look like /p/{{provider}}/{{endpoint}}")]
    NoRoute,
    #[error("passthrough routes are disabled (ENABLE_PASSTHROUGH_ROUTES=false); enabled providers: {0}")]
    PassthroughDisabled(ProviderSet),
    #[error("passthrough provider {name:?} is not enabled; enabled providers: {enabled}")]
    ProviderNotEnabled { name: String, enabled: ProviderSet },
    #[error("method {} is not forwarded; passthrough routes accept {}", shown(.0), route::FORWARDED_METHODS)]
    MethodNotAllowed(Method),
    #[error("{0}")]
    Path(#[from] PathError),
    #[error("{0}")]
    Auth(#[from] AuthError),
    #[error("{0}")]
    EndpointNotAllowed(#[from] EndpointNotAllowed),
    /// A gateway key's limit (rate, tokens, concurrency, budget) refused the request.
    #[error("{0}")]
    Limited(#[from] Refusal),
    #[error("provider {0} has no upstream credential configured (set {env} or use `aurora providers set`)", env = .0.credential_env())]
    CredentialMissing(ProviderKind),
    #[error("every credential of provider {0} is disabled (see `aurora providers credentials list {0}`)")]
    CredentialsDisabled(ProviderKind),
    #[error("request body exceeds the limit of {0} bytes")]
    BodyTooLarge(u64),
    #[error("the request body could not be read")]
    RequestBody,
    #[error("the upstream provider could not be reached")]
    UpstreamUnreachable,
    #[error("the egress proxy could not be reached")]
    ProxyUnreachable,
    #[error("the egress proxy refused the tunnel to the upstream provider: {0}")]
    ProxyRefused(ProxyRefusal),
    #[error("{0}")]
    UpstreamTls(TlsFailure),
    #[error("the upstream provider did not respond in time")]
    UpstreamTimeout,
    #[error("{0}")]
    UpstreamResponseInvalid(InvalidResponse),
}

/// Why a response from the provider was refused (it never reaches the client).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidResponse {
    #[error("the upstream response headers exceed the gateway's limit of {0} bytes (AURORA_UPSTREAM_MAX_HEADER_BYTES)")]
    HeadersTooLarge(u32),
    #[error("the upstream response is not valid HTTP")]
    Malformed,
}

/// A method name as an error message repeats it: extension methods are client-chosen tokens
/// of any length, so only a prefix.
fn shown(method: &Method) -> String {
    let name = method.as_str();
    match name.char_indices().nth(SHOWN_METHOD_CHARS) {
        Some((end, _)) => format!("{}…", &name[..end]),
        None => name.to_owned(),
    }
}

impl GatewayError {
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::NoRoute | GatewayError::PassthroughDisabled(_) | GatewayError::ProviderNotEnabled { .. } => {
                StatusCode::NOT_FOUND
            }
            GatewayError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::Path(_) | GatewayError::RequestBody => StatusCode::BAD_REQUEST,
            GatewayError::Auth(AuthError::ProviderNotAllowed(_)) | GatewayError::EndpointNotAllowed(_) => {
                StatusCode::FORBIDDEN
            }
            GatewayError::Auth(_) => StatusCode::UNAUTHORIZED,
            GatewayError::Limited(_) => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::CredentialMissing(_) => StatusCode::INTERNAL_SERVER_ERROR,
            GatewayError::CredentialsDisabled(_) => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::UpstreamUnreachable
            | GatewayError::ProxyUnreachable
            | GatewayError::ProxyRefused(_)
            | GatewayError::UpstreamTls(_)
            | GatewayError::UpstreamResponseInvalid(_) => StatusCode::BAD_GATEWAY,
            GatewayError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// A stable machine-readable code (the OpenAI-style `code` field, and a metrics label).
    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::NotReady => "not_ready",
            GatewayError::NoRoute => "no_route",
            GatewayError::PassthroughDisabled(_) => "passthrough_disabled",
            GatewayError::ProviderNotEnabled { .. } => "provider_not_enabled",
            GatewayError::MethodNotAllowed(_) => "method_not_allowed",
            GatewayError::Path(PathError::V1AliasDisabled) => "v1_alias_disabled",
            GatewayError::Path(_) => "invalid_path",
            GatewayError::Auth(AuthError::ProviderNotAllowed(_)) => "provider_not_allowed",
            GatewayError::Auth(_) => "invalid_api_key",
            GatewayError::EndpointNotAllowed(_) => "endpoint_not_allowed",
            GatewayError::Limited(refusal) => refusal.code(),
            GatewayError::CredentialMissing(_) => "provider_credential_missing",
            GatewayError::CredentialsDisabled(_) => "provider_credentials_disabled",
            GatewayError::BodyTooLarge(_) => "request_too_large",
            GatewayError::RequestBody => "invalid_request_body",
            GatewayError::UpstreamUnreachable => "upstream_unreachable",
            GatewayError::ProxyUnreachable => "proxy_unreachable",
            GatewayError::ProxyRefused(_) => "proxy_refused",
            GatewayError::UpstreamTls(_) => "upstream_tls_failed",
            GatewayError::UpstreamTimeout => "upstream_timeout",
            GatewayError::UpstreamResponseInvalid(_) => "upstream_response_invalid",
        }
    }

    /// The `error.type` an Anthropic SDK maps to its exception classes.
    fn anthropic_type(&self) -> &'static str {
        match self.status() {
            StatusCode::BAD_REQUEST | StatusCode::METHOD_NOT_ALLOWED => "invalid_request_error",
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::FORBIDDEN => "permission_error",
            StatusCode::NOT_FOUND => "not_found_error",
            StatusCode::PAYLOAD_TOO_LARGE => "request_too_large",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            StatusCode::SERVICE_UNAVAILABLE => "overloaded_error",
            _ => "api_error",
        }
    }

    /// The `error.type` OpenAI-style APIs use.
    fn openai_type(&self) -> &'static str {
        if let GatewayError::Limited(refusal) = self {
            return refusal.openai_type();
        }
        match self.status() {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::FORBIDDEN => "permission_error",
            status if status.is_client_error() => "invalid_request_error",
            _ => "server_error",
        }
    }

    /// The response for this error, shaped for `shape`.
    pub fn into_response(self, shape: ErrorShape) -> Response<ProxyBody> {
        let mut response = Response::new(full(self.body(shape)));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(X_AURORA_ERROR, HeaderValue::from_static("gateway"));
        match self {
            GatewayError::NotReady => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            GatewayError::MethodNotAllowed(_) => {
                headers.insert(ALLOW, HeaderValue::from_static(route::FORWARDED_METHODS));
            }
            GatewayError::Limited(refusal) => {
                headers.insert(RETRY_AFTER, HeaderValue::from(refusal.retry_after_secs));
                crate::limits::RateHeaders::new(&refusal.view, shape, || refusal.now_ms).insert_into(headers);
            }
            _ => {}
        }
        response
    }

    /// The JSON body in `shape`. Refused tokens come in floods (a misconfigured client, a
    /// scanner), so their bodies, whose text never varies, are built once per process; the
    /// rest are serialized from borrowed fields, without an intermediate `Value`.
    fn body(&self, shape: ErrorShape) -> Bytes {
        match self {
            GatewayError::Auth(
                err @ (AuthError::Missing | AuthError::Unknown | AuthError::Disabled | AuthError::Expired),
            ) => {
                static BODIES: OnceLock<[[Bytes; 2]; 4]> = OnceLock::new();
                let bodies = BODIES.get_or_init(|| {
                    [AuthError::Missing, AuthError::Unknown, AuthError::Disabled, AuthError::Expired].map(|err| {
                        [ErrorShape::Anthropic, ErrorShape::OpenAi]
                            .map(|shape| GatewayError::Auth(err).serialize(shape))
                    })
                });
                let index = match err {
                    AuthError::Missing => 0,
                    AuthError::Unknown => 1,
                    AuthError::Disabled => 2,
                    _ => 3,
                };
                bodies[index][usize::from(shape == ErrorShape::OpenAi)].clone()
            }
            _ => self.serialize(shape),
        }
    }

    fn serialize(&self, shape: ErrorShape) -> Bytes {
        let message = self.to_string();
        let body = match shape {
            ErrorShape::Anthropic => serde_json::to_vec(&AnthropicBody {
                kind: "error",
                error: AnthropicError { kind: self.anthropic_type(), message: &message },
            }),
            ErrorShape::OpenAi => serde_json::to_vec(&OpenAiBody {
                error: OpenAiError { message: &message, kind: self.openai_type(), param: None, code: self.code() },
            }),
        };
        // Serializing borrowed strings into a Vec cannot fail.
        Bytes::from(body.unwrap_or_default())
    }
}

/// `{"type":"error","error":{"type":...,"message":...}}`, as Anthropic's API answers.
#[derive(Serialize)]
struct AnthropicBody<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: AnthropicError<'a>,
}

#[derive(Serialize)]
struct AnthropicError<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: &'a str,
}

/// `{"error":{"message":...,"type":...,"param":null,"code":...}}`, as OpenAI's API answers.
#[derive(Serialize)]
struct OpenAiBody<'a> {
    error: OpenAiError<'a>,
}

#[derive(Serialize)]
struct OpenAiError<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    param: Option<&'static str>,
    code: &'static str,
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;
    use serde_json::json;

    use super::*;

    async fn body_json(response: Response<ProxyBody>) -> serde_json::Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn anthropic_shape() {
        let response = GatewayError::Auth(AuthError::Unknown).into_response(ErrorShape::Anthropic);
        assert_eq!(response.status(), 401);
        assert_eq!(response.headers()["x-aurora-error"], "gateway");
        assert_eq!(
            body_json(response).await,
            json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid gateway token"}})
        );
    }

    #[tokio::test]
    async fn openai_shape() {
        let err = GatewayError::ProviderNotEnabled { name: "zai".into(), enabled: ProviderSet::all() };
        let response = err.into_response(ErrorShape::OpenAi);
        assert_eq!(response.status(), 404);
        let body = body_json(response).await;
        assert_eq!(body["error"]["code"], "provider_not_enabled");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert!(body["error"]["message"].as_str().unwrap().ends_with("openai, anthropic, openrouter, zai, vllm"));
    }

    #[tokio::test]
    async fn a_refused_method_lists_the_forwarded_ones() {
        let response = GatewayError::MethodNotAllowed(Method::TRACE).into_response(ErrorShape::Anthropic);
        assert_eq!(response.status(), 405);
        assert_eq!(response.headers()["allow"], "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS");
        let body = body_json(response).await;
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert!(body["error"]["message"].as_str().unwrap().starts_with("method TRACE is not forwarded"));

        let long = Method::from_bytes("X".repeat(5000).as_bytes()).unwrap();
        let message = GatewayError::MethodNotAllowed(long).to_string();
        assert!(message.len() < 200, "{message}");
    }

    #[tokio::test]
    async fn an_endpoint_outside_the_allow_list_is_forbidden_in_either_shape() {
        let err = || EndpointNotAllowed { provider: ProviderKind::Anthropic, method: Method::POST };
        let response = GatewayError::from(err()).into_response(ErrorShape::Anthropic);
        assert_eq!(response.status(), 403);
        assert_eq!(response.headers()["x-aurora-error"], "gateway");
        let body = body_json(response).await;
        assert_eq!(body["error"]["type"], "permission_error");
        assert!(body["error"]["message"].as_str().unwrap().contains("POST on provider anthropic"), "{body}");
        let body = body_json(GatewayError::from(err()).into_response(ErrorShape::OpenAi)).await;
        assert_eq!(body["error"]["code"], "endpoint_not_allowed");
        assert_eq!(body["error"]["type"], "permission_error");
    }

    #[tokio::test]
    async fn limit_refusals_are_provider_shaped_429s_with_retry_after() {
        use crate::limits::{BudgetPeriod, RateView, RefusalReason};
        let now_ms = 1_796_143_262_000;
        let refusal = |reason| Refusal {
            reason,
            retry_after_secs: 58,
            limit: 30,
            budget_period: BudgetPeriod::Month,
            view: RateView { requests: Some((30, 0)), tokens: None, reset_ms: now_ms + 58_000 },
            now_ms,
        };
        let response = GatewayError::from(refusal(RefusalReason::Requests)).into_response(ErrorShape::Anthropic);
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()["retry-after"], "58");
        assert_eq!(response.headers()["x-aurora-error"], "gateway");
        assert_eq!(response.headers()["anthropic-ratelimit-requests-remaining"], "0");
        assert_eq!(response.headers()["anthropic-ratelimit-requests-reset"], "2026-12-01T16:42:00Z");
        let body = body_json(response).await;
        assert_eq!(body["type"], "error");
        assert_eq!(body["error"]["type"], "rate_limit_error");
        assert!(body["error"]["message"].as_str().unwrap().contains("30 requests per minute"), "{body}");

        let response = GatewayError::from(refusal(RefusalReason::Requests)).into_response(ErrorShape::OpenAi);
        assert_eq!(response.headers()["x-ratelimit-limit-requests"], "30");
        assert_eq!(response.headers()["x-ratelimit-reset-requests"], "58s");
        let body = body_json(response).await;
        assert_eq!(body["error"]["code"], "rate_limit_exceeded");
        assert_eq!(body["error"]["type"], "requests");
        assert_eq!(body["error"]["param"], serde_json::Value::Null);

        let body =
            body_json(GatewayError::from(refusal(RefusalReason::Budget)).into_response(ErrorShape::OpenAi)).await;
        assert_eq!(body["error"]["code"], "insufficient_quota");
    }

    #[tokio::test]
    async fn not_ready_asks_to_retry() {
        let response = GatewayError::NotReady.into_response(ErrorShape::OpenAi);
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["retry-after"], "1");
    }
}
