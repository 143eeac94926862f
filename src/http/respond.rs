//! The path every generation request takes after its endpoint-specific parsing: admission
//! (concurrency, rate limits, the engine queue with its timeout), then a streamed or whole
//! response within the request deadline.

use std::sync::Arc;

use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

use super::stream::{ChunkFormat, OnDone, collect, sse_response};
use super::{ApiError, AppState};
use crate::auth::Identity;
use crate::engine::{Event, GenerateRequest};
use crate::models::registry::ServedModel;

/// How the client wants the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// One JSON body.
    Whole,
    /// Server-sent events, optionally ending with a usage chunk.
    Stream {
        /// `stream_options.include_usage`.
        include_usage: bool,
    },
}

/// Admits `request` for `identity` on `model` and answers it in `format`.
pub(crate) async fn respond<F: ChunkFormat>(
    state: &AppState,
    model: &ServedModel,
    identity: Arc<Identity>,
    request: GenerateRequest,
    delivery: Delivery,
    format: F,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let settings = state.settings();
    let access = state.access().clone();
    let in_flight = access.acquire(&identity)?;
    let rate = access.admit(&identity, request.prompt.len())?;
    let mut events = model.engine.submit(request.with_owner(&identity.id))?;

    // Wait for a sequence slot; past the queue timeout, give up (dropping `events` removes the
    // request from the queue) and tell the client to retry.
    let queue_deadline = started + settings.queue_timeout;
    match tokio::time::timeout_at(queue_deadline, events.recv()).await {
        Err(_) => return Err(ApiError::queue_timeout(settings.queue_timeout.as_secs())),
        Ok(Some(Event::Admitted)) => {}
        Ok(Some(Event::Failed(err))) => return Err(err.into()),
        Ok(Some(other)) => {
            return Err(ApiError::internal(format!(
                "event {other:?} before admission"
            )));
        }
        Ok(None) => return Err(crate::engine::EngineError::Stopped.into()),
    }

    let on_done: OnDone = {
        let identity = identity.clone();
        Box::new(move |completion| {
            access.record_completion(&identity, completion.completion_tokens);
            drop(in_flight);
        })
    };
    let deadline = started + settings.request_timeout;
    let timeout_secs = settings.request_timeout.as_secs();
    let mut response = match delivery {
        Delivery::Stream { include_usage } => sse_response(
            events,
            format,
            include_usage,
            (deadline, timeout_secs),
            on_done,
        ),
        Delivery::Whole => {
            let (text, completion) = collect(events, deadline, timeout_secs, on_done).await?;
            axum::Json(format.whole(text, &completion)).into_response()
        }
    };
    for (name, value) in rate.headers() {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    Ok(response)
}
