//! The one error type of the ONNX embedding backend.

use std::path::PathBuf;

use super::runtime::{RUNTIME_ENV_VAR, RUNTIME_SOURCE};

/// Everything that can go wrong while loading an ONNX embedding model or running it.
///
/// `Clone` so that one failed batch can report the same error to every request in it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OnnxError {
    /// Neither the configuration nor the environment names the runtime library.
    #[error(
        "the ONNX Runtime library is not configured: set the embedder's `runtime` path or \
         {RUNTIME_ENV_VAR} to libonnxruntime.so; download it with `inferno pull {RUNTIME_SOURCE}`"
    )]
    RuntimeNotConfigured,
    /// The configured runtime library path does not exist.
    #[error(
        "the ONNX Runtime library {path} does not exist; download it with \
         `inferno pull {RUNTIME_SOURCE}` and point the `runtime` path or {RUNTIME_ENV_VAR} at it"
    )]
    RuntimeMissing {
        /// The path that was configured.
        path: PathBuf,
    },
    /// The runtime library exists but could not be loaded (wrong file, too old, wrong architecture).
    #[error("could not load the ONNX Runtime library {path}: {reason}")]
    RuntimeLoad {
        /// The library that failed to load.
        path: PathBuf,
        /// What the loader reported.
        reason: String,
    },
    /// The tokenizer.json file does not exist.
    #[error(
        "tokenizer file {path} does not exist; an ONNX embedding model needs its tokenizer.json"
    )]
    TokenizerMissing {
        /// The path that was configured.
        path: PathBuf,
    },
    /// The tokenizer.json file exists but is not a valid Hugging Face tokenizer.
    #[error("could not read the tokenizer {path}: {reason}")]
    TokenizerInvalid {
        /// The tokenizer file.
        path: PathBuf,
        /// What the parser reported.
        reason: String,
    },
    /// The .onnx file does not exist.
    #[error("ONNX model file {path} does not exist")]
    ModelMissing {
        /// The path that was configured.
        path: PathBuf,
    },
    /// ONNX Runtime refused the .onnx file (truncated download, not an ONNX model, unsupported opset).
    #[error(
        "could not load the ONNX model {path} (is the file complete and a valid .onnx?): {reason}"
    )]
    ModelInvalid {
        /// The model file.
        path: PathBuf,
        /// What ONNX Runtime reported.
        reason: String,
    },
    /// The model lacks an input that a text embedding model must have.
    #[error(
        "the ONNX model {path} has no input `{name}` (its inputs: {available}); it is not a text embedding model this backend can run"
    )]
    MissingInput {
        /// The model file.
        path: PathBuf,
        /// The input that is required.
        name: &'static str,
        /// The inputs the model does have, comma separated.
        available: String,
    },
    /// The model has an input this backend does not know how to fill.
    #[error(
        "the ONNX model {path} has an input `{name}` of type {found} that this backend cannot provide (it feeds int64 input_ids, attention_mask and token_type_ids)"
    )]
    UnsupportedInput {
        /// The model file.
        path: PathBuf,
        /// The input's name.
        name: String,
        /// The input's type as the model declares it.
        found: String,
    },
    /// The model has no float output shaped [batch, sequence, hidden] to pool.
    #[error(
        "the ONNX model {path} has no float output shaped [batch, sequence, hidden] (its outputs: {available})"
    )]
    UnsupportedOutput {
        /// The model file.
        path: PathBuf,
        /// The outputs the model does have, with their types.
        available: String,
    },
    /// An input is longer than the model's maximum sequence length and truncation is off.
    #[error("input {index} is {tokens} tokens long, over this model's limit of {limit} tokens")]
    InputTooLong {
        /// Position of the input in the request.
        index: usize,
        /// Its length in tokens, special tokens included.
        tokens: usize,
        /// The model's maximum sequence length.
        limit: usize,
    },
    /// The tokenizer failed on an input.
    #[error("could not tokenize input {index}: {reason}")]
    Tokenize {
        /// Position of the input in the request.
        index: usize,
        /// What the tokenizer reported.
        reason: String,
    },
    /// ONNX Runtime failed while running a batch.
    #[error("ONNX inference failed: {0}")]
    Inference(String),
    /// The batching thread is gone (it panicked or could not start).
    #[error("the embedding worker thread has stopped")]
    WorkerStopped,
    /// A configuration value is out of range.
    #[error("invalid ONNX embedder configuration: {0}")]
    InvalidConfig(String),
}
