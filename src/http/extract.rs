//! A JSON extractor whose every failure (content type, size, syntax, shape) is an [`ApiError`].

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header;
use serde::de::DeserializeOwned;

use super::ApiError;
use super::AppState;

/// Parses the body as JSON into `T`, answering bad input in OpenAI's error shape.
#[derive(Debug, Clone)]
pub struct Json<T>(pub T);

fn is_json(request: &Request) -> bool {
    let Some(value) = request.headers().get(header::CONTENT_TYPE) else {
        return false;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let mime = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

impl<T: DeserializeOwned> FromRequest<AppState> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        if !is_json(&request) {
            return Err(ApiError::unsupported_media_type());
        }
        let limit = state.max_body_bytes();
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::payload_too_large(limit)
                } else {
                    ApiError::bad_request(format!("Could not read the request body: {rejection}"))
                }
            })?;
        serde_json::from_slice(&bytes).map(Json).map_err(|err| {
            let message = match err.classify() {
                serde_json::error::Category::Data => format!("Invalid request: {err}"),
                _ => format!("The request body is not valid JSON: {err}"),
            };
            ApiError::bad_request(message).with_code("invalid_json")
        })
    }
}
