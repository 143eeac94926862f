//! Per-request observability: the tracing span, the request and error counters.

use std::sync::{Arc, OnceLock};

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use tower_http::request_id::RequestId;
use tracing::Span;

use crate::engine::Completion;
use crate::metrics;

/// The served model a request resolved to, filled in by the handler so metrics can label by
/// model without ever using a client-supplied (unbounded) string.
#[derive(Debug, Clone, Default)]
pub(crate) struct ModelLabel(Arc<OnceLock<String>>);

impl ModelLabel {
    /// Records the model this request uses.
    pub fn set(&self, model: &str) {
        let _ = self.0.set(model.to_owned());
        Span::current().record("gen_ai.request.model", model);
    }
}

/// The span every request runs in; completion fields are recorded as they become known, under
/// OpenTelemetry's GenAI semantic-convention names.
pub(crate) fn request_span(request: &Request) -> Span {
    let id = request
        .extensions()
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
        .unwrap_or("-");
    tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        request_id = %id,
        identity = tracing::field::Empty,
        gen_ai.operation.name = tracing::field::Empty,
        gen_ai.request.model = tracing::field::Empty,
        gen_ai.usage.input_tokens = tracing::field::Empty,
        gen_ai.usage.output_tokens = tracing::field::Empty,
        gen_ai.response.finish_reasons = tracing::field::Empty,
        ttft_ms = tracing::field::Empty,
        duration_ms = tracing::field::Empty,
    )
}

/// Logs one line per finished generation, inside the request's span.
pub(crate) fn log_completion(completion: &Completion, finish_reason: &str) {
    let span = Span::current();
    // i64: the OpenTelemetry bridge exports unsigned integers as strings.
    span.record("gen_ai.usage.input_tokens", completion.prompt_tokens as i64);
    span.record(
        "gen_ai.usage.output_tokens",
        completion.completion_tokens as i64,
    );
    if let Some(first) = completion.timings.first_token {
        span.record("ttft_ms", first.as_millis() as u64);
    }
    span.record("duration_ms", completion.timings.total.as_millis() as u64);
    span.record("gen_ai.response.finish_reasons", finish_reason);
    tracing::info!("generation finished");
}

/// A fixed vocabulary of error kinds for the `kind` label, derived from the status.
fn error_kind(status: u16) -> &'static str {
    match status {
        400 => "invalid_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        408 | 504 => "timeout",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        429 => "rate_limited",
        503 => "unavailable",
        _ if status >= 500 => "internal",
        _ => "other",
    }
}

/// Counts every request by model, endpoint and status, and every failure by kind.
pub(crate) async fn track(mut request: Request, next: Next) -> Response {
    let endpoint = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let label = ModelLabel::default();
    request.extensions_mut().insert(label.clone());
    let operation = match endpoint.as_deref() {
        Some("/v1/chat/completions") => Some("chat"),
        Some("/v1/completions") => Some("text_completion"),
        Some("/v1/embeddings") => Some("embeddings"),
        _ => None,
    };
    if let Some(operation) = operation {
        Span::current().record("gen_ai.operation.name", operation);
    }
    let response = next.run(request).await;
    if endpoint.as_deref() == Some("/metrics") {
        return response;
    }
    let status = response.status().as_u16();
    let model = label.0.get().map_or("none", String::as_str);
    let endpoint = endpoint_label(endpoint.as_deref());
    metrics::record_request(model, endpoint, status);
    if status >= 400 {
        metrics::record_error(model, error_kind(status));
    }
    response
}

/// Known endpoints as static labels; anything else is `unmatched`.
fn endpoint_label(path: Option<&str>) -> &'static str {
    const KNOWN: &[&str] = &[
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/models",
        "/v1/models/{*id}",
        "/health",
        "/live",
        "/ready",
        "/status",
        "/admin/models",
        "/admin/models/{id}",
        "/admin/models/{id}/load",
        "/admin/models/{id}/unload",
        "/",
    ];
    path.and_then(|p| KNOWN.iter().find(|k| **k == p).copied())
        .unwrap_or("unmatched")
}
