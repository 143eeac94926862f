//! The llama.cpp backend (feature `llama`): every llama.cpp call of Inferno lives here.
//!
//! One context holds all sequences: `n_ctx = ctx_size * parallel` with the per-sequence KV
//! layout (each slot gets exactly `ctx_size` cells), so one request can never starve another of
//! cache. Sampling uses a llama.cpp sampler chain per slot, seeded per request.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::{KvCacheType, LlamaContextParams};
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::token::logit_bias::LlamaLogitBias;

use super::{
    Backend, BackendError, BatchEntry, ModelInfo, SamplingParams, SlotId, TokenId, Tokenizer,
};
use crate::engine::{Engine, EngineError, EngineSettings};
use crate::models::planner::KvType;

/// Thread counts for llama.cpp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Threads {
    /// Threads for single-token batches.
    pub decode: usize,
    /// Threads for larger batches.
    pub batch: usize,
}

/// llama.cpp's process-wide initialisation, done once (also before quantizing, as llama.cpp's
/// own `llama-quantize` does).
pub(crate) fn llama_backend() -> Result<&'static LlamaBackend, BackendError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            LlamaBackend::init().map_err(|err| err.to_string())
        })
        .as_ref()
        .map_err(|message| BackendError::Context(format!("llama.cpp init failed: {message}")))
}

/// Where a model's weights and cache live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Layers offloaded to the GPU (ignored by CPU-only builds, which have no GPU device).
    pub gpu_layers: u32,
    /// KV cache element type.
    pub kv_type: KvType,
}

/// Free memory of the first GPU llama.cpp sees, if any.
pub fn gpu_free_memory() -> Option<u64> {
    llama_backend().ok()?;
    llama_cpp_2::list_llama_ggml_backend_devices()
        .into_iter()
        .find(|device| {
            matches!(
                device.device_type,
                llama_cpp_2::LlamaBackendDeviceType::Gpu
                    | llama_cpp_2::LlamaBackendDeviceType::IntegratedGpu
            )
        })
        .map(|device| device.memory_free as u64)
}

fn cache_type(kv_type: KvType) -> KvCacheType {
    match kv_type {
        KvType::F16 => KvCacheType::F16,
        KvType::Q8_0 => KvCacheType::Q8_0,
        KvType::Q4_0 => KvCacheType::Q4_0,
    }
}

/// Loads the GGUF at `path` on a new engine thread and returns its handle once ready.
pub fn spawn_engine(
    name: &str,
    path: &Path,
    settings: EngineSettings,
    threads: Threads,
    placement: Placement,
) -> Result<Engine, EngineError> {
    let path: PathBuf = path.to_owned();
    Engine::spawn(name, settings, move |runner| {
        let backend = llama_backend()?;
        let model_params = LlamaModelParams::default().with_n_gpu_layers(placement.gpu_layers);
        let model = LlamaModel::load_from_file(backend, &path, &model_params).map_err(|err| {
            BackendError::Load {
                path: path.display().to_string(),
                message: err.to_string(),
            }
        })?;
        let model = Arc::new(model);
        let n_ctx = settings.ctx_size.saturating_mul(settings.parallel as u32);
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(n_ctx))
            .with_n_batch(settings.batch_tokens as u32)
            .with_n_ubatch(settings.batch_tokens.min(256) as u32)
            .with_n_seq_max(settings.parallel as u32)
            .with_kv_unified(false)
            .with_n_threads(threads.decode as i32)
            .with_n_threads_batch(threads.batch as i32)
            .with_type_k(cache_type(placement.kv_type))
            .with_type_v(cache_type(placement.kv_type));
        let context = model.new_context(backend, params).map_err(|err| {
            BackendError::Context(format!(
                "{err} (n_ctx {n_ctx}); try a smaller --ctx-size or --parallel"
            ))
        })?;
        let tokenizer = Arc::new(LlamaTokenizer {
            model: model.clone(),
        });
        let info = model_info(&model);
        tracing::info!(
            path = %path.display(),
            n_ctx,
            parallel = settings.parallel,
            n_ctx_train = info.n_ctx_train,
            vocab = info.vocab_size,
            "model loaded"
        );
        let backend = LlamaCppBackend {
            batch: LlamaBatch::new(settings.batch_tokens, 1),
            samplers: (0..settings.parallel).map(|_| None).collect(),
            eog_tokens: (0..model.n_vocab())
                .map(LlamaToken)
                .filter(|t| model.vocab().is_eog(*t))
                .collect(),
            n_vocab: model.n_vocab(),
            context,
        };
        runner.run(backend, tokenizer, info);
        Ok(())
    })
}

fn model_info(model: &LlamaModel) -> ModelInfo {
    let vocab = model.vocab();
    let token_text = |token: LlamaToken| {
        if token.0 < 0 {
            return String::new();
        }
        String::from_utf8_lossy(&vocab.token_to_piece(token, true, None)).into_owned()
    };
    ModelInfo {
        n_ctx_train: model.n_ctx_train(),
        vocab_size: usize::try_from(model.n_vocab()).unwrap_or(0),
        chat_template: model
            .chat_template(None)
            .ok()
            .and_then(|t| t.to_string().ok()),
        bos_text: token_text(vocab.bos()),
        eos_text: token_text(vocab.eos()),
    }
}

/// Tokenizer over a loaded model's vocabulary; llama.cpp's tokenizer is thread-safe.
struct LlamaTokenizer {
    model: Arc<LlamaModel>,
}

impl Tokenizer for LlamaTokenizer {
    fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<TokenId> {
        let tokens = self
            .model
            .vocab()
            .tokenize(text.as_bytes(), add_special, parse_special);
        tokens.into_iter().map(|t| t.0).collect()
    }

    fn piece(&self, token: TokenId) -> Vec<u8> {
        self.model
            .vocab()
            .token_to_piece(LlamaToken(token), false, None)
    }

    fn is_eog(&self, token: TokenId) -> bool {
        self.model.vocab().is_eog(LlamaToken(token))
    }

    fn vocab_size(&self) -> usize {
        usize::try_from(self.model.n_vocab()).unwrap_or(0)
    }
}

/// The engine thread's llama.cpp state.
struct LlamaCppBackend<'model> {
    context: LlamaContext<'model>,
    batch: LlamaBatch<'static>,
    samplers: Vec<Option<LlamaSampler>>,
    eog_tokens: Vec<LlamaToken>,
    n_vocab: i32,
}

fn sampler_chain(params: &SamplingParams, n_vocab: i32) -> LlamaSampler {
    let mut chain = Vec::new();
    if !params.logit_bias.is_empty() {
        let biases: Vec<LlamaLogitBias> = params
            .logit_bias
            .iter()
            .map(|&(t, b)| LlamaLogitBias::new(LlamaToken(t), b))
            .collect();
        chain.push(LlamaSampler::logit_bias(n_vocab, &biases));
    }
    let penalised = params.repetition_penalty != 1.0
        || params.frequency_penalty != 0.0
        || params.presence_penalty != 0.0;
    if penalised {
        chain.push(LlamaSampler::penalties(
            n_vocab,
            params.penalty_last_n,
            params.repetition_penalty,
            params.frequency_penalty,
            params.presence_penalty,
        ));
    }
    if params.temperature <= 0.0 {
        chain.push(LlamaSampler::greedy());
    } else {
        if params.top_k > 0 {
            chain.push(LlamaSampler::top_k(params.top_k));
        }
        if params.top_p < 1.0 {
            chain.push(LlamaSampler::top_p(params.top_p, 1));
        }
        if params.min_p > 0.0 {
            chain.push(LlamaSampler::min_p(params.min_p, 1));
        }
        chain.push(LlamaSampler::temp(params.temperature));
        chain.push(LlamaSampler::dist(params.seed));
    }
    LlamaSampler::chain_simple(chain)
}

impl LlamaCppBackend<'_> {
    /// Samples with end-of-generation tokens masked out (for `ignore_eos` / `min_tokens`).
    fn sample_without_eog(&mut self, slot: SlotId, index: i32) -> Result<LlamaToken, BackendError> {
        let mut candidates = self.context.token_data_array_ith(index);
        for token in &self.eog_tokens {
            // The array is in vocabulary order, so a token's id is its index.
            if let Some(data) = candidates.data.get_mut(token.0 as usize) {
                data.set_logit(f32::NEG_INFINITY);
            }
        }
        let sampler = self.samplers[slot]
            .as_mut()
            .ok_or_else(|| BackendError::Decode(format!("slot {slot} has no sampler")))?;
        candidates.apply_sampler(sampler);
        let token = candidates
            .selected_token()
            .ok_or_else(|| BackendError::Decode("sampler selected no token".to_owned()))?;
        sampler.accept(token);
        Ok(token)
    }
}

impl Backend for LlamaCppBackend<'_> {
    fn begin(&mut self, slot: SlotId, params: &SamplingParams) -> Result<(), BackendError> {
        let cell = self
            .samplers
            .get_mut(slot)
            .ok_or_else(|| BackendError::Decode(format!("slot {slot} out of range")))?;
        *cell = Some(sampler_chain(params, self.n_vocab));
        Ok(())
    }

    fn step(&mut self, batch: &[BatchEntry<'_>]) -> Result<Vec<TokenId>, BackendError> {
        self.batch.clear();
        let mut outputs = Vec::new();
        for entry in batch {
            let seq_id = [entry.slot as i32];
            for (offset, &token) in entry.tokens.iter().enumerate() {
                let logits = entry.sample && offset + 1 == entry.tokens.len();
                let pos = (entry.first_pos + offset) as i32;
                self.batch
                    .add(LlamaToken(token), pos, &seq_id, logits)
                    .map_err(|err| BackendError::Decode(format!("batch overflow: {err}")))?;
                if logits {
                    outputs.push((entry.slot, self.batch.n_tokens() - 1, entry.suppress_eog));
                }
            }
        }
        self.context
            .decode(&mut self.batch)
            .map_err(|err| BackendError::Decode(err.to_string()))?;
        let mut sampled = Vec::with_capacity(outputs.len());
        for (slot, index, suppress_eog) in outputs {
            let token = if suppress_eog {
                self.sample_without_eog(slot, index)?
            } else {
                let sampler = self.samplers[slot]
                    .as_mut()
                    .ok_or_else(|| BackendError::Decode(format!("slot {slot} has no sampler")))?;
                sampler.sample(&self.context, index)
            };
            sampled.push(token.0);
        }
        Ok(sampled)
    }

    fn end(&mut self, slot: SlotId) {
        if let Err(err) = self
            .context
            .clear_kv_cache_seq(Some(slot as u32), None, None)
        {
            tracing::warn!(slot, error = %err, "clearing KV cells failed");
        }
        if let Some(cell) = self.samplers.get_mut(slot) {
            *cell = None;
        }
    }

    fn relocate(&mut self, from: SlotId, to: SlotId) {
        if let Err(err) = self
            .context
            .copy_kv_cache_seq(from as i32, to as i32, None, None)
        {
            tracing::warn!(from, to, error = %err, "moving KV cells failed");
        }
        if let Err(err) = self
            .context
            .clear_kv_cache_seq(Some(from as u32), None, None)
        {
            tracing::warn!(slot = from, error = %err, "clearing KV cells failed");
        }
        self.samplers.swap(from, to);
    }
}
