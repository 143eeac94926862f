//! The narrow interface between the engine and an inference library.
//!
//! A [`Backend`] lives on its engine thread (llama.cpp's context is not `Send`) and does one
//! thing per call: run a batch and sample. A [`Tokenizer`] is shared with the HTTP side so
//! prompts are tokenized outside the engine thread.

pub mod fake;
#[cfg(feature = "llama")]
pub mod llama_cpp;
#[cfg(all(feature = "llama", feature = "onnx"))]
pub mod llama_embed;

use std::sync::Arc;

/// A token id in the model's vocabulary.
pub type TokenId = i32;

/// Index of a sequence slot in the backend (a KV-cache sequence id), `0..parallel`.
pub type SlotId = usize;

/// Errors raised by a backend.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    /// The model file could not be loaded.
    #[error("failed to load model {path}: {message}")]
    Load {
        /// The model file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The inference context could not be created (e.g. not enough memory for the KV cache).
    #[error("failed to create inference context: {0}")]
    Context(String),
    /// A batch could not be evaluated.
    #[error("decode failed: {0}")]
    Decode(String),
    /// The sampler could not be built from the request's parameters.
    #[error("invalid sampler configuration: {0}")]
    Sampler(String),
}

/// Per-request sampling parameters, already validated by the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// Nucleus sampling mass; 1 disables.
    pub top_p: f32,
    /// Keep the k most likely tokens; 0 disables.
    pub top_k: i32,
    /// Drop tokens below `min_p` times the top probability; 0 disables.
    pub min_p: f32,
    /// Seed of the random number generator.
    pub seed: u32,
    /// OpenAI presence penalty; 0 disables.
    pub presence_penalty: f32,
    /// OpenAI frequency penalty; 0 disables.
    pub frequency_penalty: f32,
    /// Multiplicative repetition penalty; 1 disables.
    pub repetition_penalty: f32,
    /// How many recent tokens the penalties look at.
    pub penalty_last_n: i32,
    /// Additive logit biases.
    pub logit_bias: Vec<(TokenId, f32)>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            seed: 0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            repetition_penalty: 1.0,
            penalty_last_n: 64,
            logit_bias: Vec::new(),
        }
    }
}

/// One sequence's share of a batch: consecutive tokens starting at KV position `first_pos`.
#[derive(Debug, Clone, Copy)]
pub struct BatchEntry<'a> {
    /// The sequence slot the tokens belong to.
    pub slot: SlotId,
    /// Tokens to evaluate (a prompt chunk, or the last sampled token).
    pub tokens: &'a [TokenId],
    /// Position of `tokens[0]` in the sequence.
    pub first_pos: usize,
    /// Sample a next token after the last of `tokens`.
    pub sample: bool,
    /// Forbid end-of-generation tokens for this sample (`ignore_eos`, `min_tokens`).
    pub suppress_eog: bool,
}

/// What the engine needs to know about a loaded model.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// Context length the model was trained with.
    pub n_ctx_train: u32,
    /// Number of tokens in the vocabulary.
    pub vocab_size: usize,
    /// The Jinja chat template from the model's metadata, if any.
    pub chat_template: Option<String>,
    /// Text of the beginning-of-sequence token ("" if none).
    pub bos_text: String,
    /// Text of the end-of-sequence token ("" if none).
    pub eos_text: String,
}

/// Turns text into tokens and tokens into bytes; shared by the HTTP handlers and the engine.
pub trait Tokenizer: Send + Sync {
    /// Tokenizes `text`; `add_special` adds BOS/EOS as the model wants, `parse_special` turns
    /// special-token text (e.g. `<|im_start|>`) into those tokens.
    fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<TokenId>;
    /// The raw bytes of one token (may be part of a UTF-8 character).
    fn piece(&self, token: TokenId) -> Vec<u8>;
    /// Whether `token` ends generation (EOS, EOT, ...).
    fn is_eog(&self, token: TokenId) -> bool;
    /// Number of tokens in the vocabulary.
    fn vocab_size(&self) -> usize;
}

/// A loaded model as the engine drives it. Runs on the engine thread only.
pub trait Backend {
    /// Prepares `slot` for a new sequence sampled with `params` (its KV cells are empty).
    fn begin(&mut self, slot: SlotId, params: &SamplingParams) -> Result<(), BackendError>;
    /// Evaluates one batch; returns one sampled token per entry with `sample`, in order.
    fn step(&mut self, batch: &[BatchEntry<'_>]) -> Result<Vec<TokenId>, BackendError>;
    /// Frees `slot`: clears its KV cells and sampler.
    fn end(&mut self, slot: SlotId);
    /// Moves the sequence in slot `from` (KV cells and sampler) to the free slot `to`.
    ///
    /// The engine keeps active slots contiguous because llama.cpp batches consecutive
    /// sequence ids efficiently and gaps cost throughput (DESIGN.md).
    fn relocate(&mut self, from: SlotId, to: SlotId);
}

/// A tokenizer handle that can be cloned across threads.
pub type SharedTokenizer = Arc<dyn Tokenizer>;
