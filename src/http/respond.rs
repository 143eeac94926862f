//! The path every generation request takes after its endpoint-specific parsing: admission
//! (concurrency, rate limits, the engine queue with its timeout), then a streamed or whole
//! response within the request deadline.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

use super::access::{AccessControl, InFlight};
use super::stream::{ChunkFormat, collect, sse_response};
use super::{ApiError, AppState};
use crate::auth::Identity;
use crate::engine::{EngineError, Event, GenerateRequest};
use crate::models::registry::Lease;

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

/// Lives as long as an admitted request's response: holds the identity's concurrency slot and,
/// when dropped (finished, failed, timed out, or the client left), debits the tokens generated
/// so far from its token budget — exactly once, whatever the ending.
struct Accounting {
    access: Arc<AccessControl>,
    identity: Arc<Identity>,
    generated: Arc<AtomicUsize>,
    _in_flight: InFlight,
    /// Keeps the model loaded until the response ends.
    _model: Lease,
}

impl Drop for Accounting {
    fn drop(&mut self) {
        let tokens = self.generated.load(Ordering::Relaxed);
        self.access.record_completion(&self.identity, tokens);
    }
}

/// Admits `request` for `identity` on `model` and answers it in `format`.
pub(crate) async fn respond<F: ChunkFormat>(
    state: &AppState,
    model: Lease,
    identity: Arc<Identity>,
    request: GenerateRequest,
    delivery: Delivery,
    format: F,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let settings = state.settings();
    let access = state.access().clone();
    let in_flight = access.acquire(&identity)?;
    let prompt_tokens = request.prompt.len();
    let rate = access.admit(&identity, prompt_tokens)?;
    // A request that is never served gives its rate-limit charge back, so a client retrying
    // after a 503 as told does not burn its budget.
    let refund = |err: ApiError| {
        access.refund(&identity, prompt_tokens);
        err
    };
    let generation = model
        .engine
        .submit(request.with_owner(&identity.id))
        .map_err(|err| refund(err.into()))?;
    let mut events = generation.events;

    // Wait for a sequence slot; past the queue timeout, give up (dropping `events` removes the
    // request from the queue) and tell the client to retry.
    let queue_deadline = started + settings.queue_timeout;
    match tokio::time::timeout_at(queue_deadline, events.recv()).await {
        Err(_) => {
            return Err(refund(ApiError::queue_timeout(
                settings.queue_timeout.as_secs(),
            )));
        }
        Ok(Some(Event::Admitted)) => {}
        Ok(Some(Event::Failed(err))) => return Err(refund(err.into())),
        Ok(Some(other)) => {
            return Err(ApiError::internal(format!(
                "event {other:?} before admission"
            )));
        }
        Ok(None) => return Err(refund(EngineError::Stopped.into())),
    }

    let accounting = Accounting {
        access: access.clone(),
        identity,
        generated: generation.generated,
        _in_flight: in_flight,
        _model: model,
    };
    let deadline = started + settings.request_timeout;
    let timeout_secs = settings.request_timeout.as_secs();
    let mut response = match delivery {
        Delivery::Stream { include_usage } => sse_response(
            events,
            format,
            include_usage,
            (deadline, timeout_secs),
            Box::new(accounting),
        ),
        Delivery::Whole => {
            let result = collect(events, deadline, timeout_secs).await;
            drop(accounting);
            let (text, completion) = result?;
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
