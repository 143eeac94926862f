//! Text embeddings with ONNX Runtime: sentence-transformers models exported to ONNX
//! (e.g. all-MiniLM-L6-v2), for `/v1/embeddings`.
//!
//! The runtime library is loaded at run time (`ort` with `load-dynamic`), the tokenizer comes
//! from the model's `tokenizer.json`, and [`EmbeddingService`] batches concurrent requests on a
//! dedicated thread.

mod embedder;
mod encoder;
mod error;
mod info;
mod pooling;
mod runtime;
mod service;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use embedder::OnnxEmbedder;
pub use encoder::{Sequence, TextEncoder};
pub use error::OnnxError;
pub use info::{Dimension, ModelInfo, TensorInfo};
pub use pooling::Pooling;
pub(crate) use pooling::normalize;
pub use runtime::{RUNTIME_ENV_VAR, RUNTIME_SOURCE};
pub use service::{BatchEmbedder, BatchLimits, EmbeddingService, SequenceEncoder, Worker};

/// Sequence limit of all-MiniLM-L6-v2 (its `sentence_bert_config.json`), also a safe default
/// for BERT-sized models.
pub const DEFAULT_MAX_SEQ_LEN: usize = 256;

/// How to load one ONNX embedding model.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedderConfig {
    /// The `.onnx` file.
    pub model: PathBuf,
    /// The model's `tokenizer.json`.
    pub tokenizer: PathBuf,
    /// `libonnxruntime.so`; when `None`, `ORT_DYLIB_PATH` names it.
    pub runtime: Option<PathBuf>,
    /// Threads ONNX Runtime uses inside one operator; `None` lets it pick (one per core).
    pub intra_threads: Option<usize>,
    /// How token states become one vector.
    pub pooling: Pooling,
    /// Scale vectors to unit length (sentence-transformers models with a Normalize module).
    pub normalize: bool,
    /// Longest input in tokens, special tokens included.
    pub max_seq_len: usize,
    /// Cut longer inputs to `max_seq_len` instead of rejecting them with
    /// [`OnnxError::InputTooLong`] (OpenAI rejects).
    pub truncate: bool,
}

impl EmbedderConfig {
    /// Defaults that fit all-MiniLM-L6-v2: mean pooling, normalized, 256 tokens, rejecting
    /// longer inputs, runtime from `ORT_DYLIB_PATH`.
    pub fn new(model: impl Into<PathBuf>, tokenizer: impl Into<PathBuf>) -> Self {
        Self {
            model: model.into(),
            tokenizer: tokenizer.into(),
            runtime: None,
            intra_threads: None,
            pooling: Pooling::Mean,
            normalize: true,
            max_seq_len: DEFAULT_MAX_SEQ_LEN,
            truncate: false,
        }
    }
}

/// The vectors for one request, in input order, with what usage accounting needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    /// One vector per input.
    pub vectors: Vec<Vec<f32>>,
    /// Tokens per input, special tokens included (after truncation, when enabled).
    pub token_counts: Vec<usize>,
    /// Sum of `token_counts`: OpenAI's `usage.prompt_tokens`.
    pub prompt_tokens: usize,
}

impl Embeddings {
    fn new(vectors: Vec<Vec<f32>>, token_counts: Vec<usize>) -> Self {
        let prompt_tokens = token_counts.iter().sum();
        Self {
            vectors,
            token_counts,
            prompt_tokens,
        }
    }
}
