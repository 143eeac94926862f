//! GGUF models in embedding mode: a llama.cpp context with pooled embeddings, serving
//! `/v1/embeddings` through the same batching service as the ONNX models.
//!
//! Each input is its own sequence of one batch; llama.cpp pools each sequence's states (mean,
//! CLS or last token, as configured) and the vectors are L2-normalized on request. The cache is
//! cleared after every batch: embeddings keep nothing between requests.

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;

use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::token::LlamaToken;

use super::llama_cpp::llama_backend;
use crate::onnx::{
    BatchEmbedder, BatchLimits, EmbeddingService, OnnxError, Sequence, SequenceEncoder, normalize,
};

/// How a GGUF embedding model is run.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufEmbedding {
    /// `mean`, `cls` or `last`.
    pub pooling: String,
    /// Scale vectors to unit length.
    pub normalize: bool,
    /// Longest input in tokens; longer ones are rejected (or cut with `truncate`).
    pub max_seq_len: usize,
    /// Cut long inputs instead of rejecting them.
    pub truncate: bool,
    /// llama.cpp threads.
    pub threads: usize,
}

/// Tokenizes with the model's own vocabulary (BOS added as the model wants).
struct GgufEncoder {
    model: Arc<LlamaModel>,
    max_seq_len: usize,
    truncate: bool,
}

impl SequenceEncoder for GgufEncoder {
    fn encode(&self, texts: &[String]) -> Result<Vec<Sequence>, OnnxError> {
        texts
            .iter()
            .enumerate()
            .map(|(index, text)| {
                let mut ids: Vec<i64> = self
                    .model
                    .vocab()
                    .tokenize(text.as_bytes(), true, false)
                    .into_iter()
                    .map(|t| i64::from(t.0))
                    .collect();
                if ids.len() > self.max_seq_len {
                    if !self.truncate {
                        return Err(OnnxError::InputTooLong {
                            index,
                            tokens: ids.len(),
                            limit: self.max_seq_len,
                        });
                    }
                    ids.truncate(self.max_seq_len);
                }
                Ok(Sequence {
                    type_ids: vec![0; ids.len()],
                    ids,
                })
            })
            .collect()
    }

    fn max_seq_len(&self) -> usize {
        self.max_seq_len
    }
}

/// Loads the GGUF at `path` for embeddings and starts its batching thread.
pub fn spawn_gguf_embedder(
    path: &Path,
    options: &GgufEmbedding,
    limits: BatchLimits,
) -> Result<EmbeddingService, OnnxError> {
    let failed = |err: &dyn std::fmt::Display| OnnxError::ModelInvalid {
        path: path.to_owned(),
        reason: err.to_string(),
    };
    let backend = llama_backend().map_err(|err| failed(&err))?;
    let model = LlamaModel::load_from_file(backend, path, &LlamaModelParams::default())
        .map_err(|err| failed(&err))?;
    let model = Arc::new(model);
    let dimensions = usize::try_from(model.n_embd()).ok();
    let encoder = Arc::new(GgufEncoder {
        model: model.clone(),
        max_seq_len: options.max_seq_len,
        truncate: options.truncate,
    });
    let pooling = match options.pooling.as_str() {
        "cls" => LlamaPoolingType::Cls,
        "last" => LlamaPoolingType::Last,
        _ => LlamaPoolingType::Mean,
    };
    let (normalize_vectors, threads) = (options.normalize, options.threads.max(1) as i32);
    let path = path.to_owned();
    EmbeddingService::spawn_worker("gguf-embed", encoder, dimensions, limits, move |worker| {
        let tokens = limits.max_tokens as u32;
        let params = LlamaContextParams::default()
            .with_embeddings(true)
            .with_pooling_type(pooling)
            .with_n_ctx(NonZeroU32::new(tokens))
            .with_n_batch(tokens)
            .with_n_ubatch(tokens)
            .with_n_seq_max(limits.max_batch as u32)
            .with_kv_unified(true)
            .with_n_threads(threads)
            .with_n_threads_batch(threads);
        let context =
            model
                .new_context(backend, params)
                .map_err(|err| OnnxError::ModelInvalid {
                    path: path.clone(),
                    reason: err.to_string(),
                })?;
        let mut embedder = GgufEmbedder {
            context,
            batch: LlamaBatch::new(limits.max_tokens, limits.max_batch as i32),
            normalize: normalize_vectors,
        };
        worker.serve(&mut embedder);
        Ok(())
    })
}

struct GgufEmbedder<'model> {
    context: llama_cpp_2::context::LlamaContext<'model>,
    batch: LlamaBatch<'static>,
    normalize: bool,
}

impl BatchEmbedder for GgufEmbedder<'_> {
    fn run_batch(&mut self, sequences: &[&Sequence]) -> Result<Vec<Vec<f32>>, OnnxError> {
        let inference = |err: &dyn std::fmt::Display| OnnxError::Inference(err.to_string());
        self.batch.clear();
        for (seq_id, sequence) in (0..).zip(sequences) {
            let tokens: Vec<LlamaToken> = sequence
                .ids
                .iter()
                .map(|&id| LlamaToken(id as i32))
                .collect();
            self.batch
                .add_sequence(&tokens, seq_id, true)
                .map_err(|err| inference(&err))?;
        }
        self.context.clear_kv_cache();
        let decoded = self.context.decode(&mut self.batch);
        let vectors = decoded.map_err(|err| inference(&err)).and_then(|()| {
            (0..sequences.len() as i32)
                .map(|seq_id| {
                    let mut vector = self
                        .context
                        .embeddings_seq_ith(seq_id)
                        .map_err(|err| inference(&err))?
                        .to_vec();
                    if self.normalize {
                        normalize(&mut vector);
                    }
                    Ok(vector)
                })
                .collect()
        });
        self.context.clear_kv_cache();
        vectors
    }
}
