//! `POST /v1/embeddings`: text in, vectors out, from the ONNX embedding models.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::Value;

use super::extract::Json;
use super::observe::ModelLabel;
use super::params::reject_unknown;
use super::{ApiError, AppState};
use crate::api::embeddings::{
    Embedding, EmbeddingVector, EmbeddingsRequest, EmbeddingsResponse, EmbeddingsUsage,
};
use crate::auth::Identity;
use crate::onnx::OnnxError;

/// Most inputs in one request (OpenAI's limit).
const MAX_INPUTS: usize = 2048;

/// Embeds every input of the request, in order.
pub async fn embeddings(
    State(state): State<AppState>,
    Extension(label): Extension<ModelLabel>,
    Extension(identity): Extension<Arc<Identity>>,
    Json(request): Json<EmbeddingsRequest>,
) -> Result<Response, ApiError> {
    reject_unknown(&request.extra)?;
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "encoding_format must be 'float' or 'base64', got '{other}'"
            ))
            .with_param("encoding_format"));
        }
    };
    let texts = inputs(request.input)?;
    let service = match state.embedders().get(&request.model) {
        Some(service) => service?,
        None if state.registry().spec(&request.model).is_ok() => {
            return Err(ApiError::bad_request(format!(
                "The model '{}' generates text; /v1/embeddings needs an embedding model (see GET /v1/models)",
                request.model
            ))
            .with_param("model")
            .with_code("model_not_embedding"));
        }
        None => return Err(ApiError::model_not_found(&request.model)),
    };
    label.set(&request.model);
    if !identity.may_use(&request.model) {
        return Err(ApiError::model_not_allowed(&request.model));
    }
    if let Some(dimensions) = request.dimensions
        && Some(dimensions) != service.dimensions().map(|d| d as u64)
    {
        return Err(ApiError::unsupported(
            "dimensions",
            &format!(
                "this model's vectors have {} dimensions and cannot be shortened",
                service
                    .dimensions()
                    .map_or_else(|| "a fixed number of".to_owned(), |d| d.to_string())
            ),
        ));
    }
    if let Some(user) = &request.user {
        tracing::info!(user = %user, "embeddings for end user");
    }
    // Tokenizing up to a 4 MB body is CPU work: keep it off the async threads.
    let (counts, texts) = tokio::task::spawn_blocking({
        let service = service.clone();
        move || (service.count_tokens(&texts), texts)
    })
    .await
    .map_err(ApiError::internal)?;
    let prompt_tokens: usize = counts.map_err(embedding_error)?.iter().sum();
    let access = state.access();
    let _in_flight = access.acquire(&identity)?;
    let rate = access.admit(&identity, prompt_tokens)?;
    let embeddings = match service.embed(texts).await {
        Ok(embeddings) => embeddings,
        Err(err) => {
            access.refund(&identity, prompt_tokens);
            return Err(embedding_error(err));
        }
    };
    access.record_completion(&identity, 0);
    let data = embeddings
        .vectors
        .into_iter()
        .enumerate()
        .map(|(index, vector)| Embedding {
            object: "embedding".to_owned(),
            index,
            embedding: if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
                EmbeddingVector::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                EmbeddingVector::Float(vector)
            },
        })
        .collect();
    let body = EmbeddingsResponse {
        object: "list".to_owned(),
        data,
        model: request.model,
        usage: EmbeddingsUsage {
            prompt_tokens: embeddings.prompt_tokens,
            total_tokens: embeddings.prompt_tokens,
        },
    };
    let mut response = axum::Json(body).into_response();
    for (name, value) in rate.headers() {
        if let Ok(value) = axum::http::HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    Ok(response)
}

/// The texts of `input`: a string or an array of strings. Token-id arrays are refused: the
/// ONNX models take text through their own tokenizer.
fn inputs(input: Value) -> Result<Vec<String>, ApiError> {
    let invalid = |message: &str| ApiError::bad_request(message).with_param("input");
    let texts = match input {
        Value::String(text) => vec![text],
        Value::Array(items) if items.is_empty() => {
            return Err(invalid("'input' must not be an empty array"));
        }
        Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Value::String(text) => Ok(text),
                Value::Number(_) | Value::Array(_) => Err(ApiError::unsupported(
                    "input",
                    "token-id input: these embedding models take text",
                )),
                _ => Err(invalid("'input' must be a string or an array of strings")),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(invalid("'input' must be a string or an array of strings")),
    };
    if texts.len() > MAX_INPUTS {
        return Err(invalid(&format!(
            "'input' has {} items; at most {MAX_INPUTS} are allowed",
            texts.len()
        )));
    }
    if texts.iter().any(String::is_empty) {
        return Err(invalid("'input' must not contain empty strings"));
    }
    Ok(texts)
}

fn embedding_error(err: OnnxError) -> ApiError {
    match err {
        OnnxError::InputTooLong {
            index,
            tokens,
            limit,
        } => ApiError::bad_request(format!(
            "input[{index}] has {tokens} tokens; this model takes at most {limit}"
        ))
        .with_param("input")
        .with_code("context_length_exceeded"),
        OnnxError::Tokenize { .. } => ApiError::bad_request(err.to_string()).with_param("input"),
        other => ApiError::internal(other),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn inputs_are_strings_or_arrays_of_strings() {
        assert_eq!(inputs(json!("a")).unwrap(), ["a"]);
        assert_eq!(inputs(json!(["a", "b"])).unwrap(), ["a", "b"]);
        for bad in [
            json!([]),
            json!([""]),
            json!(7),
            json!([1, 2]),
            json!([[1]]),
            json!([null]),
        ] {
            let err = inputs(bad.clone()).unwrap_err();
            assert_eq!(err.status, axum::http::StatusCode::BAD_REQUEST, "{bad}");
        }
        let many = Value::Array(vec![json!("x"); MAX_INPUTS + 1]);
        assert!(inputs(many).is_err());
    }
}
