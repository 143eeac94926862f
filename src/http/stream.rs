//! Engine events to HTTP: one JSON body, or server-sent events ending in `data: [DONE]`.

use std::convert::Infallible;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use serde::Serialize;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

use super::ApiError;
use super::observe::log_completion;
use crate::api::Usage;
use crate::engine::{Completion, EngineError, Event, FinishReason};

/// The wire format of one endpoint: its stream chunks and its whole response.
pub(crate) trait ChunkFormat: Send + 'static {
    /// The wire type of one chunk.
    type Chunk: Serialize;
    /// The wire type of a non-streaming response.
    type Whole: Serialize;
    /// A chunk sent before any text (chat: the role), if any.
    fn opening(&self) -> Option<Self::Chunk>;
    /// A chunk carrying new text.
    fn text(&self, text: String) -> Self::Chunk;
    /// The last content chunk, carrying the finish reason.
    fn finish(&self, reason: FinishReason) -> Self::Chunk;
    /// The usage chunk (`stream_options.include_usage`).
    fn usage(&self, usage: Usage) -> Self::Chunk;
    /// The whole response of a non-streaming request.
    fn whole(&self, text: String, completion: &Completion) -> Self::Whole;
}

/// Whatever must live exactly as long as the response (a concurrency slot, the accounting of
/// generated tokens): dropped when the stream ends, fails, times out, or the client leaves.
pub(crate) type Hold = Box<dyn Send>;

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

/// The next event, or `None` once `deadline` passed.
async fn next_event(
    events: &mut UnboundedReceiver<Event>,
    deadline: Instant,
) -> Option<Option<Event>> {
    tokio::time::timeout_at(deadline, events.recv()).await.ok()
}

/// Waits for the whole generation (non-streaming responses); 504 past `deadline`.
pub(crate) async fn collect(
    mut events: UnboundedReceiver<Event>,
    deadline: Instant,
    timeout_secs: u64,
) -> Result<(String, Completion), ApiError> {
    let mut text = String::new();
    loop {
        match next_event(&mut events, deadline).await {
            None => return Err(ApiError::timeout(timeout_secs)),
            Some(None) => return Err(EngineError::Stopped.into()),
            Some(Some(Event::Admitted)) => {}
            Some(Some(Event::Text(piece))) => text.push_str(&piece),
            Some(Some(Event::Done(completion))) => {
                log_completion(&completion, finish_reason_name(completion.finish_reason));
                return Ok((text, completion));
            }
            Some(Some(Event::Failed(err))) => return Err(err.into()),
        }
    }
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
    deadline: Instant,
    timeout_secs: u64,
    hold: Option<Hold>,
}

impl<F> StreamState<F> {
    /// Ends the generation now: the engine sees the closed channel before its next step, and
    /// the held resources are released without waiting for the client to read the last event.
    fn release(&mut self) {
        self.events.close();
        self.hold = None;
    }
}

fn data(chunk: &impl Serialize) -> Result<SseEvent, Infallible> {
    let json = serde_json::to_string(chunk).expect("wire types always serialize");
    Ok(SseEvent::default().data(json))
}

fn error_event(err: ApiError) -> Result<SseEvent, Infallible> {
    data(&err.body())
}

/// Streams `events` as SSE. Dropping the response (client gone) drops `events`, which cancels
/// the request in the engine before its next step. A mid-stream failure or the deadline is sent
/// as one `{"error": ...}` event and ends the stream.
pub(crate) fn sse_response<F: ChunkFormat>(
    events: UnboundedReceiver<Event>,
    format: F,
    include_usage: bool,
    (deadline, timeout_secs): (Instant, u64),
    hold: Hold,
) -> Response {
    let state = StreamState {
        phase: Phase::Opening,
        events,
        format,
        include_usage,
        deadline,
        timeout_secs,
        hold: Some(hold),
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
                    let item = match next_event(&mut state.events, state.deadline).await {
                        Some(Some(Event::Admitted)) => {
                            state.phase = Phase::Streaming;
                            continue;
                        }
                        Some(Some(Event::Text(text))) => {
                            state.phase = Phase::Streaming;
                            data(&state.format.text(text))
                        }
                        Some(Some(Event::Done(completion))) => {
                            log_completion(
                                &completion,
                                finish_reason_name(completion.finish_reason),
                            );
                            state.release();
                            state.phase = if state.include_usage {
                                Phase::Usage(usage_of(&completion))
                            } else {
                                Phase::Closing
                            };
                            data(&state.format.finish(completion.finish_reason))
                        }
                        Some(Some(Event::Failed(err))) => {
                            state.release();
                            error_event(err.into())
                        }
                        Some(None) => {
                            state.release();
                            error_event(EngineError::Stopped.into())
                        }
                        None => {
                            state.release();
                            error_event(ApiError::timeout(state.timeout_secs))
                        }
                    };
                    return Some((item, state));
                }
                Phase::Usage(usage) => {
                    state.phase = Phase::Closing;
                    return Some((data(&state.format.usage(usage)), state));
                }
                Phase::Closing => {
                    return Some((Ok(SseEvent::default().data("[DONE]")), state));
                }
                Phase::Ended => return None,
            }
        }
    });
    Sse::new(chunks)
        .keep_alive(KeepAlive::default())
        .into_response()
}
