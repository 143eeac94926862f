//! `POST /v1/chat/completions` wire types.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ExtraFields, SamplingFields, Usage};

/// A chat completion request.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ChatCompletionRequest {
    /// The model id.
    pub model: String,
    /// The conversation so far.
    pub messages: Vec<ChatMessage>,
    /// OpenAI's newer name for `max_tokens`.
    pub max_completion_tokens: Option<u32>,
    /// Sampling and streaming parameters.
    #[serde(flatten)]
    pub sampling: SamplingFields,
    /// Log probabilities; not supported yet (only `false`).
    pub logprobs: Option<bool>,
    /// Top log probabilities; not supported yet.
    pub top_logprobs: Option<u32>,
    /// Tool definitions; not supported yet.
    pub tools: Option<Value>,
    /// Tool choice; only `"none"` is supported.
    pub tool_choice: Option<Value>,
    /// Structured output; only `{"type":"text"}` is supported yet.
    pub response_format: Option<Value>,
    /// Everything else: rejected by name.
    #[serde(flatten)]
    pub extra: ExtraFields,
}

/// One message of the conversation.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ChatMessage {
    /// `system`, `developer`, `user` or `assistant`.
    pub role: String,
    /// Text, or a list of content parts.
    #[serde(default)]
    pub content: Option<MessageContent>,
    /// Everything else (`name`, `tool_calls`, ...): rejected by name.
    #[serde(flatten)]
    pub extra: ExtraFields,
}

/// Message content: a string or an array of parts.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    /// Plain text.
    Text(String),
    /// Content parts; only `text` parts are supported.
    Parts(Vec<ContentPart>),
}

/// One content part.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ContentPart {
    /// The part's type, e.g. `text` or `image_url`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` part.
    pub text: Option<String>,
}

/// A non-streaming chat completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletion {
    /// `chatcmpl-...`.
    pub id: String,
    /// Always `chat.completion`.
    pub object: String,
    /// Unix time.
    pub created: u64,
    /// The model id.
    pub model: String,
    /// One choice.
    pub choices: Vec<ChatChoice>,
    /// Token accounting.
    pub usage: Usage,
}

/// A choice of a chat completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatChoice {
    /// Choice index.
    pub index: u32,
    /// The assistant's message.
    pub message: AssistantMessage,
    /// Always null (log probabilities are not supported yet).
    pub logprobs: Option<Value>,
    /// `stop` or `length`.
    pub finish_reason: String,
}

/// The generated message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssistantMessage {
    /// Always `assistant`.
    pub role: String,
    /// The generated text.
    pub content: String,
}

/// One streamed chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionChunk {
    /// Same id in every chunk of a stream.
    pub id: String,
    /// Always `chat.completion.chunk`.
    pub object: String,
    /// Unix time.
    pub created: u64,
    /// The model id.
    pub model: String,
    /// Zero (usage chunk) or one choice.
    pub choices: Vec<ChunkChoice>,
    /// Only in the final usage chunk (with `stream_options.include_usage`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// A choice of a chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    /// Choice index.
    pub index: u32,
    /// What is new.
    pub delta: Delta,
    /// Always null.
    pub logprobs: Option<Value>,
    /// Set in the last content chunk.
    pub finish_reason: Option<String>,
}

/// The new part of the message.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    /// `assistant`, in the first chunk only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// New text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}
