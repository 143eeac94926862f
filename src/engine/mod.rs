//! The backend-agnostic inference core.
//!
//! [`Engine`] is the handle the HTTP side holds: it tokenizes through the shared
//! [`Tokenizer`](crate::backend::Tokenizer) and submits [`GenerateRequest`]s on a bounded queue.
//! One OS thread per model runs [`EngineRunner::run`], which owns the [`Backend`] and does
//! continuous batching. Each request gets its own channel of [`Event`]s; dropping the receiver
//! cancels the request before the next step.

mod core;
pub mod detokenizer;
mod queue;
pub mod request;
pub mod scheduler;
mod sequence;
pub mod stats;
pub mod stop;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

pub use request::{EngineLimits, GenerateRequest, GenerationOptions, ValidationError};
pub use stats::{EngineSnapshot, EngineStats};

use crate::backend::{Backend, BackendError, ModelInfo, SharedTokenizer};

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-generation token or a stop string.
    Stop,
    /// `max_tokens` (or the context) was reached.
    Length,
}

/// Final accounting of a finished request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Tokens sampled, including a final end-of-generation token.
    pub completion_tokens: usize,
    /// Where the time went.
    pub timings: Timings,
}

/// Durations of one request inside the engine, measured from its submission.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timings {
    /// Waiting for a sequence slot.
    pub queued: Duration,
    /// Until the first generated token.
    pub first_token: Option<Duration>,
    /// Until the last token.
    pub total: Duration,
}

/// What the engine tells a request's receiver. Exactly one `Done` or `Failed` comes last.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The request left the queue and got a sequence slot.
    Admitted,
    /// Newly generated text (never empty, never part of a stop string).
    Text(String),
    /// Generation finished normally.
    Done(Completion),
    /// Generation failed; no more events follow.
    Failed(EngineError),
}

/// Errors of the engine boundary.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    /// The submit queue is full; the client should retry later.
    #[error("the server is overloaded: {queued} requests are already waiting")]
    QueueFull {
        /// Capacity of the queue.
        queued: usize,
    },
    /// The engine thread has stopped.
    #[error("the model's engine has stopped")]
    Stopped,
    /// The server ran out of shutdown grace time while this request was still running.
    #[error("the server is shutting down and could not finish this request in time")]
    Aborted,
    /// The backend failed while evaluating this request.
    #[error("inference failed: {0}")]
    Backend(String),
    /// The model could not be loaded.
    #[error("model failed to load: {0}")]
    Load(String),
}

impl From<BackendError> for EngineError {
    fn from(err: BackendError) -> Self {
        match err {
            BackendError::Load { .. } | BackendError::Context(_) => {
                EngineError::Load(err.to_string())
            }
            other => EngineError::Backend(other.to_string()),
        }
    }
}

/// Engine sizing, from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineSettings {
    /// Most sequences decoded at once (backend slots).
    pub parallel: usize,
    /// Token budget of one step.
    pub batch_tokens: usize,
    /// Tokens per sequence.
    pub ctx_size: u32,
    /// Requests that may wait for a slot.
    pub queue_capacity: usize,
    /// Cap on `max_tokens` (and its default).
    pub max_tokens: Option<u32>,
    /// Cap on prompt tokens.
    pub max_prompt_tokens: Option<u32>,
    /// Most stop strings per request.
    pub max_stop: usize,
}

/// A request on its way to the engine thread.
#[derive(Debug)]
pub(crate) struct Submission {
    request: GenerateRequest,
    reply: UnboundedSender<Event>,
    submitted: Instant,
    generated: Arc<AtomicUsize>,
}

/// A submitted request: its events, and a live count of the tokens generated so far (so
/// accounting still works when the request ends early, e.g. when its client leaves).
#[derive(Debug)]
pub struct Generation {
    /// The request's events; dropping this cancels the request.
    pub events: UnboundedReceiver<Event>,
    /// Tokens generated so far.
    pub generated: Arc<AtomicUsize>,
}

impl queue::Queued for Submission {
    fn owner(&self) -> &str {
        &self.request.owner
    }

    fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }
}

struct Ready {
    tokenizer: SharedTokenizer,
    info: ModelInfo,
}

/// Handed to the backend loader on the engine thread; [`EngineRunner::run`] drives the loop.
pub struct EngineRunner {
    name: String,
    settings: EngineSettings,
    stats: Arc<EngineStats>,
    commands: Receiver<Submission>,
    ready: SyncSender<Result<Ready, BackendError>>,
    abort: Arc<AtomicBool>,
}

impl EngineRunner {
    /// The settings the backend should size itself for.
    pub fn settings(&self) -> EngineSettings {
        self.settings
    }

    /// Reports readiness to [`Engine::spawn`] and runs continuous batching until every
    /// [`Engine`] handle is dropped and the last sequence finished.
    pub fn run<B: Backend>(self, backend: B, tokenizer: SharedTokenizer, info: ModelInfo) {
        let ready = Ready {
            tokenizer: tokenizer.clone(),
            info,
        };
        if self.ready.send(Ok(ready)).is_err() {
            return;
        }
        let metrics = crate::metrics::EngineMetrics::new(&self.name);
        let mut core = core::EngineCore::new(backend, tokenizer, self.settings, self.commands)
            .with_observers(metrics, self.stats)
            .with_abort(self.abort);
        while core.tick(true) {}
    }
}

/// Handle to a model's engine thread.
pub struct Engine {
    commands: Option<Sender<Submission>>,
    tokenizer: SharedTokenizer,
    info: ModelInfo,
    settings: EngineSettings,
    stats: Arc<EngineStats>,
    thread: Option<JoinHandle<()>>,
    /// Set by [`Engine::abort`]; the engine fails every request at its next step.
    abort: Arc<AtomicBool>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Starts thread `engine-<name>`, runs `load` on it, and waits until the backend is ready
    /// (or failed to load: a clean error, never a panic). Blocking: call from a blocking context.
    pub fn spawn<F>(name: &str, settings: EngineSettings, load: F) -> Result<Engine, EngineError>
    where
        F: FnOnce(EngineRunner) -> Result<(), BackendError> + Send + 'static,
    {
        // Unbounded: the queue's capacity is enforced in `submit` through the waiting count,
        // because the engine moves submissions into its own fair queue.
        let (commands_tx, commands_rx) = std::sync::mpsc::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let stats = Arc::new(EngineStats::new(
            settings.parallel,
            settings.ctx_size as usize,
        ));
        let abort = Arc::new(AtomicBool::new(false));
        let runner = EngineRunner {
            name: name.to_owned(),
            settings,
            stats: stats.clone(),
            commands: commands_rx,
            ready: ready_tx.clone(),
            abort: abort.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("engine-{name}"))
            .spawn(move || {
                if let Err(err) = load(runner) {
                    tracing::error!(error = %err, "engine backend failed");
                    let _ = ready_tx.try_send(Err(err));
                }
            })
            .map_err(|err| EngineError::Load(format!("cannot start engine thread: {err}")))?;
        match ready_rx.recv() {
            Ok(Ok(ready)) => Ok(Engine {
                commands: Some(commands_tx),
                tokenizer: ready.tokenizer,
                info: ready.info,
                settings,
                stats,
                thread: Some(thread),
                abort,
            }),
            Ok(Err(err)) => Err(err.into()),
            Err(_) => Err(EngineError::Load(
                "engine thread ended during load".to_owned(),
            )),
        }
    }

    /// Queues `request`; returns its event stream. A full queue is reported at once.
    pub fn submit(&self, request: GenerateRequest) -> Result<Generation, EngineError> {
        let (reply, events) = tokio::sync::mpsc::unbounded_channel();
        let commands = self.commands.as_ref().ok_or(EngineError::Stopped)?;
        // Count first so the engine's decrement never runs before the increment.
        // Requests about to take a free slot do not count as waiting.
        let free_slots = self.settings.parallel.saturating_sub(self.stats.running());
        if self.stats.queued() > self.settings.queue_capacity + free_slots {
            self.stats.dequeued();
            return Err(EngineError::QueueFull {
                queued: self.settings.queue_capacity,
            });
        }
        let generated = Arc::new(AtomicUsize::new(0));
        let submission = Submission {
            request,
            reply,
            submitted: Instant::now(),
            generated: generated.clone(),
        };
        commands.send(submission).map_err(|_| {
            self.stats.dequeued();
            EngineError::Stopped
        })?;
        Ok(Generation { events, generated })
    }

    /// The tokenizer of the loaded model.
    pub fn tokenizer(&self) -> &SharedTokenizer {
        &self.tokenizer
    }

    /// Facts about the loaded model.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Limits requests are validated against.
    pub fn limits(&self) -> EngineLimits {
        EngineLimits {
            ctx_size: self.settings.ctx_size,
            vocab_size: self.info.vocab_size,
            max_tokens: self.settings.max_tokens,
            max_prompt_tokens: self.settings.max_prompt_tokens,
            max_stop: self.settings.max_stop,
        }
    }

    /// Runs one tiny generation so the first real request does not pay one-time costs
    /// (buffer allocation, thread start-up). Blocking.
    pub fn warm_up(&self) -> Result<(), EngineError> {
        let mut prompt = self.tokenizer.encode("Hello", true, false);
        if prompt.is_empty() {
            prompt.push(0);
        }
        let options = GenerationOptions {
            max_tokens: Some(1),
            temperature: Some(0.0),
            ..Default::default()
        };
        let request = GenerateRequest::new(prompt, options, &self.limits())
            .map_err(|err| EngineError::Load(format!("warm-up request invalid: {err}")))?;
        let mut events = self.submit(request)?.events;
        while let Some(event) = events.blocking_recv() {
            match event {
                Event::Admitted | Event::Text(_) => {}
                Event::Done(_) => return Ok(()),
                Event::Failed(err) => return Err(err),
            }
        }
        Err(EngineError::Stopped)
    }

    /// Live counters for `/status`.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Whether the engine thread is still running.
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Ends every running and waiting request now with [`EngineError::Aborted`] (at the
    /// engine's next step), for a shutdown whose grace period is over.
    pub fn abort(&self) {
        self.abort.store(true, Ordering::Release);
    }

    /// Stops accepting requests, lets running ones finish, and joins the thread.
    pub fn shutdown(mut self) {
        self.commands = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests;
