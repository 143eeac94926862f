//! OpenAI wire types: serde only, no axum, shared with tests and clients.
//!
//! Requests keep unknown fields in `extra` so the HTTP layer can reject them by name instead of
//! silently ignoring them (OpenAI answers "Unrecognized request argument supplied").

pub mod chat;
pub mod completions;
pub mod embeddings;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `{"error": {...}}`, the body of every error response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// OpenAI's error object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Human-readable message.
    pub message: String,
    /// Error class, e.g. `invalid_request_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The request parameter at fault, if any.
    pub param: Option<String>,
    /// Machine-readable code, e.g. `context_length_exceeded`.
    pub code: Option<String>,
}

/// Token accounting of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub completion_tokens: usize,
    /// Sum of both.
    pub total_tokens: usize,
}

/// `stream_options` of a streaming request.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    /// Send a last chunk with `usage` (and empty `choices`).
    #[serde(default)]
    pub include_usage: bool,
}

/// `stop`: one string or a list.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// A single stop string.
    One(String),
    /// Several stop strings.
    Many(Vec<String>),
}

impl Stop {
    /// The stop strings as a list.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s],
            Stop::Many(v) => v,
        }
    }
}

/// Sampling and length parameters shared by chat and text completions.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct SamplingFields {
    /// Most tokens to generate.
    pub max_tokens: Option<u32>,
    /// 0..=2; 0 is greedy.
    pub temperature: Option<f32>,
    /// Nucleus sampling.
    pub top_p: Option<f32>,
    /// Top-k sampling (extension).
    pub top_k: Option<i64>,
    /// Min-p sampling (extension).
    pub min_p: Option<f32>,
    /// Seed for reproducible sampling.
    pub seed: Option<i64>,
    /// -2..=2.
    pub presence_penalty: Option<f32>,
    /// -2..=2.
    pub frequency_penalty: Option<f32>,
    /// Multiplicative repetition penalty (extension).
    pub repetition_penalty: Option<f32>,
    /// Token id (as a string) to bias in -100..=100.
    pub logit_bias: Option<std::collections::BTreeMap<String, f32>>,
    /// Stop strings.
    pub stop: Option<Stop>,
    /// Keep generating past end-of-generation tokens (extension).
    pub ignore_eos: Option<bool>,
    /// Fewest tokens before end-of-generation is allowed (extension).
    pub min_tokens: Option<u32>,
    /// Stream the response as server-sent events.
    pub stream: Option<bool>,
    /// Options of the stream.
    pub stream_options: Option<StreamOptions>,
    /// Number of choices; only 1 is supported yet.
    pub n: Option<u32>,
    /// A caller-chosen end-user id; logged with the request.
    pub user: Option<String>,
}

/// Unknown request fields, kept to be rejected by name.
pub type ExtraFields = serde_json::Map<String, Value>;

/// `GET /v1/models` response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    /// Always `list`.
    pub object: String,
    /// The served models.
    pub data: Vec<ModelCard>,
}

/// One model in `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// The id clients put in `model`.
    pub id: String,
    /// Always `model`.
    pub object: String,
    /// Unix time the model was loaded.
    pub created: u64,
    /// Who publishes it.
    pub owned_by: String,
    /// Extension: whether it is in memory now (others load on first use).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loaded: Option<bool>,
}
