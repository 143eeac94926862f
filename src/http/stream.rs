//! Engine events to HTTP: one JSON body, or server-sent events ending in `data: [DONE]`.

use std::convert::Infallible;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use serde::Serialize;
use tokio::sync::mpsc::UnboundedReceiver;

use super::ApiError;
use super::observe::log_completion;
use crate::api::Usage;
use crate::engine::{Completion, EngineError, Event, FinishReason};

/// The wire format of one endpoint's stream chunks.
pub(crate) trait ChunkFormat: Send + 'static {
    /// The wire type of one chunk.
    type Chunk: Serialize;
    /// A chunk sent before any text (chat: the role), if any.
    fn opening(&self) -> Option<Self::Chunk>;
    /// A chunk carrying new text.
    fn text(&self, text: String) -> Self::Chunk;
    /// The last content chunk, carrying the finish reason.
    fn finish(&self, reason: FinishReason) -> Self::Chunk;
    /// The usage chunk (`stream_options.include_usage`).
    fn usage(&self, usage: Usage) -> Self::Chunk;
}

/// OpenAI's name of a finish reason.
pub(crate) fn finish_reason_name(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
    }
}

/// Usage from the engine's accounting.
pub(crate) fn usage_of(completion: &Completion) -> Usage {
    Usage {
        prompt_tokens: completion.prompt_tokens,
        completion_tokens: completion.completion_tokens,
        total_tokens: completion.prompt_tokens + completion.completion_tokens,
    }
}

/// Waits for the whole generation (non-streaming responses).
pub(crate) async fn collect(
    mut events: UnboundedReceiver<Event>,
) -> Result<(String, Completion), ApiError> {
    let mut text = String::new();
    while let Some(event) = events.recv().await {
        match event {
            Event::Text(piece) => text.push_str(&piece),
            Event::Done(completion) => {
                log_completion(&completion, finish_reason_name(completion.finish_reason));
                return Ok((text, completion));
            }
            Event::Failed(err) => return Err(err.into()),
        }
    }
    Err(EngineError::Stopped.into())
}

enum Phase {
    Opening,
    Streaming,
    Usage(Usage),
    Closing,
    Ended,
}

struct StreamState<F> {
    phase: Phase,
    events: UnboundedReceiver<Event>,
    format: F,
    include_usage: bool,
}

fn data(chunk: &impl Serialize) -> Result<SseEvent, Infallible> {
    let json = serde_json::to_string(chunk).expect("wire types always serialize");
    Ok(SseEvent::default().data(json))
}

fn error_event(err: EngineError) -> Result<SseEvent, Infallible> {
    data(&ApiError::from(err).body())
}

/// Streams `events` as SSE. Dropping the response (client gone) drops `events`, which cancels
/// the request in the engine before its next step. A mid-stream failure is sent as one
/// `{"error": ...}` event and ends the stream.
pub(crate) fn sse_response<F: ChunkFormat>(
    events: UnboundedReceiver<Event>,
    format: F,
    include_usage: bool,
) -> Response {
    let state = StreamState {
        phase: Phase::Opening,
        events,
        format,
        include_usage,
    };
    let chunks = stream::unfold(state, |mut state| async move {
        loop {
            match std::mem::replace(&mut state.phase, Phase::Ended) {
                Phase::Opening => {
                    state.phase = Phase::Streaming;
                    if let Some(chunk) = state.format.opening() {
                        return Some((data(&chunk), state));
                    }
                }
                Phase::Streaming => {
                    let item = match state.events.recv().await {
                        Some(Event::Text(text)) => {
                            state.phase = Phase::Streaming;
                            data(&state.format.text(text))
                        }
                        Some(Event::Done(completion)) => {
                            log_completion(
                                &completion,
                                finish_reason_name(completion.finish_reason),
                            );
                            state.phase = if state.include_usage {
                                Phase::Usage(usage_of(&completion))
                            } else {
                                Phase::Closing
                            };
                            data(&state.format.finish(completion.finish_reason))
                        }
                        Some(Event::Failed(err)) => error_event(err),
                        None => error_event(EngineError::Stopped),
                    };
                    return Some((item, state));
                }
                Phase::Usage(usage) => {
                    state.phase = Phase::Closing;
                    return Some((data(&state.format.usage(usage)), state));
                }
                Phase::Closing => return Some((Ok(SseEvent::default().data("[DONE]")), state)),
                Phase::Ended => return None,
            }
        }
    });
    Sse::new(chunks)
        .keep_alive(KeepAlive::default())
        .into_response()
}
