//! [`ApiError`]: the one place errors become OpenAI-shaped HTTP responses.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::api::{ErrorBody, ErrorDetail};
use crate::engine::{EngineError, ValidationError};
use crate::models::chat_template::TemplateError;
use crate::models::registry::RegistryError;

/// An error response: status, OpenAI error object, and an optional `Retry-After`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// OpenAI `type`.
    pub kind: &'static str,
    /// Message for the client.
    pub message: String,
    /// The parameter at fault.
    pub param: Option<String>,
    /// Machine-readable code.
    pub code: Option<String>,
    /// Extra response headers (`Retry-After`, `x-ratelimit-*`, `x-should-retry`).
    pub headers: Vec<(&'static str, String)>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
            param: None,
            code: None,
            headers: Vec::new(),
        }
    }

    /// Sets the parameter at fault.
    #[must_use]
    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    /// Sets the machine-readable code.
    #[must_use]
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// 400 `invalid_request_error`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    /// 400 for a parameter (or value) Inferno does not support yet; names the parameter.
    pub fn unsupported(param: &str, detail: &str) -> Self {
        ApiError::bad_request(format!("'{param}' is not supported: {detail}"))
            .with_param(param)
            .with_code("unsupported_parameter")
    }

    /// 400 for a field OpenAI's API does not have (or we do not know).
    pub fn unrecognized(param: &str) -> Self {
        ApiError::bad_request(format!("Unrecognized request argument supplied: {param}"))
            .with_param(param)
            .with_code("unrecognized_argument")
    }

    /// 404 `model_not_found`.
    pub fn model_not_found(model: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("The model '{model}' does not exist or is not served here"),
        )
        .with_param("model")
        .with_code("model_not_found")
    }

    /// 404 for an unknown path.
    pub fn unknown_route(method: &str, path: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("Unknown request URL: {method} {path}"),
        )
        .with_code("unknown_url")
    }

    /// 405 for a known path with the wrong method.
    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            format!("Method {method} is not allowed for {path}"),
        )
        .with_code("method_not_allowed")
    }

    /// 413 for a body over the limit.
    pub fn payload_too_large(limit: usize) -> Self {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("The request body is larger than the limit of {limit} bytes"),
        )
        .with_code("payload_too_large")
    }

    /// 415 for a body that is not JSON.
    pub fn unsupported_media_type() -> Self {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request_error",
            "Expected a JSON body with 'Content-Type: application/json'",
        )
        .with_code("unsupported_media_type")
    }

    /// 503 with `Retry-After`: overloaded or still loading.
    pub fn unavailable(message: impl Into<String>, code: &str, retry_after: u64) -> Self {
        let mut err =
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message).with_code(code);
        err.headers.push(("retry-after", retry_after.to_string()));
        err
    }

    /// 401 `invalid_api_key`.
    pub fn unauthorized(message: &str) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "invalid_request_error", message)
            .with_code("invalid_api_key")
    }

    /// 403: a valid identity asking for a model it may not use.
    pub fn model_not_allowed(model: &str) -> Self {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "invalid_request_error",
            format!("This API key may not use the model '{model}'"),
        )
        .with_param("model")
        .with_code("model_not_allowed")
    }

    /// 403: the admin API for an identity without admin rights.
    pub fn admin_required() -> Self {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "invalid_request_error",
            "This API key may not use the admin API",
        )
        .with_code("admin_required")
    }

    /// 429 `rate_limit_exceeded` with `Retry-After` and the `x-ratelimit-*` headers.
    pub fn rate_limited(
        message: String,
        retry_after: u64,
        headers: Vec<(&'static str, String)>,
    ) -> Self {
        let mut err = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", message)
            .with_code("rate_limit_exceeded");
        err.headers = headers;
        err.headers.push(("retry-after", retry_after.to_string()));
        err
    }

    /// 503 when a request waited longer than the queue timeout; safe to retry.
    pub fn queue_timeout(seconds: u64) -> Self {
        let mut err = ApiError::unavailable(
            format!("The server is busy: no capacity became free within {seconds} s"),
            "queue_timeout",
            2,
        );
        err.headers.push(("x-should-retry", "true".to_owned()));
        err
    }

    /// 504: the request ran past its deadline.
    pub fn timeout(seconds: u64) -> Self {
        ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "server_error",
            format!("The request did not finish within the server's limit of {seconds} s"),
        )
        .with_code("timeout")
    }

    /// 500: the detail is logged, the client gets a generic message.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "The server had an error while processing your request",
        )
        .with_code("internal_error")
    }

    /// The `Retry-After` seconds, if any.
    pub fn retry_after(&self) -> Option<u64> {
        self.headers
            .iter()
            .find(|(name, _)| *name == "retry-after")
            .and_then(|(_, v)| v.parse().ok())
    }

    /// The JSON body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                message: self.message.clone(),
                kind: self.kind.to_owned(),
                param: self.param.clone(),
                code: self.code.clone(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        for (name, value) in &self.headers {
            if let Ok(value) = HeaderValue::from_str(value) {
                response.headers_mut().insert(*name, value);
            }
        }
        response
    }
}

impl From<ValidationError> for ApiError {
    fn from(err: ValidationError) -> Self {
        let api = ApiError::bad_request(err.message).with_param(err.param);
        match err.code {
            Some(code) => api.with_code(code),
            None => api,
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(err: EngineError) -> Self {
        match err {
            EngineError::QueueFull { .. } => {
                ApiError::unavailable(err.to_string(), "overloaded", 1)
            }
            EngineError::Stopped => {
                tracing::error!("the model's engine has stopped");
                ApiError::unavailable(
                    "The model is not available right now",
                    "model_unavailable",
                    5,
                )
            }
            EngineError::Aborted => ApiError::unavailable(err.to_string(), "shutting_down", 1),
            EngineError::Backend(_) | EngineError::Load(_) => ApiError::internal(err),
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(err: RegistryError) -> Self {
        match err {
            RegistryError::NotFound(model) => ApiError::model_not_found(&model),
            RegistryError::Loading(_) => ApiError::unavailable(err.to_string(), "model_loading", 5),
            RegistryError::Failed { .. } => {
                tracing::warn!(error = %err, "request for a model that failed to load");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    err.to_string(),
                )
                .with_code("model_load_failed")
            }
            RegistryError::NoRoom { .. } => {
                ApiError::unavailable(err.to_string(), "model_capacity", 10)
            }
            RegistryError::ShuttingDown => {
                ApiError::unavailable(err.to_string(), "shutting_down", 5)
            }
            RegistryError::Pinned(_) => ApiError::new(
                StatusCode::CONFLICT,
                "invalid_request_error",
                err.to_string(),
            )
            .with_code("model_pinned"),
        }
    }
}

impl From<TemplateError> for ApiError {
    fn from(err: TemplateError) -> Self {
        ApiError::bad_request(format!(
            "The chat template could not render these messages: {err}"
        ))
        .with_param("messages")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_errors_keep_param_and_code() {
        let err = ApiError::from(ValidationError {
            param: "max_tokens",
            message: "too long".into(),
            code: Some("context_length_exceeded"),
        });
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        let body = serde_json::to_value(err.body()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"error": {"message": "too long", "type": "invalid_request_error",
                "param": "max_tokens", "code": "context_length_exceeded"}})
        );
    }

    #[test]
    fn full_queue_is_503_with_retry_after() {
        let response = ApiError::from(EngineError::QueueFull { queued: 3 }).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[axum::http::header::RETRY_AFTER], "1");
    }

    #[test]
    fn rate_limited_carries_retry_after_and_the_ratelimit_headers() {
        let headers = vec![("x-ratelimit-remaining-requests", "0".to_owned())];
        let response = ApiError::rate_limited("slow down".into(), 3, headers).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()["retry-after"], "3");
        assert_eq!(response.headers()["x-ratelimit-remaining-requests"], "0");
    }

    #[test]
    fn internal_errors_do_not_leak_details() {
        let err = ApiError::from(EngineError::Backend("secret path /x".into()));
        assert_eq!(err.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!err.message.contains("secret"));
    }

    #[test]
    fn registry_errors_map_to_404_and_503() {
        assert_eq!(
            ApiError::from(RegistryError::NotFound("x".into())).status,
            StatusCode::NOT_FOUND
        );
        let loading = ApiError::from(RegistryError::Loading("x".into()));
        assert_eq!(
            (loading.status, loading.retry_after()),
            (StatusCode::SERVICE_UNAVAILABLE, Some(5))
        );
    }
}
