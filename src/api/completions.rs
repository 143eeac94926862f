//! `POST /v1/completions` wire types.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ExtraFields, SamplingFields, Usage};

/// A text completion request.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CompletionRequest {
    /// The model id.
    pub model: String,
    /// The prompt: text, token ids, or a list of one of those.
    pub prompt: Prompt,
    /// Sampling and streaming parameters.
    #[serde(flatten)]
    pub sampling: SamplingFields,
    /// Prepend the prompt to the completion.
    pub echo: Option<bool>,
    /// Log probabilities; not supported yet.
    pub logprobs: Option<Value>,
    /// Text after the completion; not supported.
    pub suffix: Option<String>,
    /// Server-side best-of; only 1 is supported.
    pub best_of: Option<u32>,
    /// Everything else: rejected by name.
    #[serde(flatten)]
    pub extra: ExtraFields,
}

/// The `prompt` field in its accepted shapes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    /// One text prompt.
    Text(String),
    /// One prompt as token ids.
    Tokens(Vec<i64>),
    /// Several text prompts.
    Texts(Vec<String>),
    /// Several prompts as token ids.
    TokenLists(Vec<Vec<i64>>),
}

/// A non-streaming text completion (also the shape of each streamed chunk).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextCompletion {
    /// `cmpl-...`.
    pub id: String,
    /// Always `text_completion`.
    pub object: String,
    /// Unix time.
    pub created: u64,
    /// The model id.
    pub model: String,
    /// One choice (none in a streamed usage chunk).
    pub choices: Vec<TextChoice>,
    /// Token accounting (streams: only in the usage chunk).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// A choice of a text completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextChoice {
    /// Choice index.
    pub index: u32,
    /// Generated text (for a chunk: the new text).
    pub text: String,
    /// Always null.
    pub logprobs: Option<Value>,
    /// `stop` or `length`; null in chunks before the last.
    pub finish_reason: Option<String>,
}
