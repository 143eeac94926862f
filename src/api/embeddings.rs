//! `POST /v1/embeddings` request and response.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ExtraFields;

/// An embeddings request.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct EmbeddingsRequest {
    /// The embedding model.
    pub model: String,
    /// A string, an array of strings, an array of token ids, or an array of such arrays.
    pub input: Value,
    /// `float` (default) or `base64` (little-endian f32 bytes).
    pub encoding_format: Option<String>,
    /// Output dimensions; only the model's own number is accepted.
    pub dimensions: Option<u64>,
    /// End-user id (logged).
    pub user: Option<String>,
    /// Anything else, rejected by name.
    #[serde(flatten)]
    pub extra: ExtraFields,
}

/// One vector, as a JSON array of floats or a base64 string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingVector {
    /// `encoding_format: float`.
    Float(Vec<f32>),
    /// `encoding_format: base64`.
    Base64(String),
}

/// One entry of `data`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Embedding {
    /// Always `embedding`.
    pub object: String,
    /// Position of the input.
    pub index: usize,
    /// The vector.
    pub embedding: EmbeddingVector,
}

/// Token accounting of an embeddings response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbeddingsUsage {
    /// Tokens in all inputs.
    pub prompt_tokens: usize,
    /// The same (nothing is generated).
    pub total_tokens: usize,
}

/// The response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingsResponse {
    /// Always `list`.
    pub object: String,
    /// One entry per input, in order.
    pub data: Vec<Embedding>,
    /// The model that answered.
    pub model: String,
    /// Token accounting.
    pub usage: EmbeddingsUsage,
}
