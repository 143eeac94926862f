//! A deterministic fake backend for engine tests (never used to serve).
//!
//! Tokens are bytes (0..=255) plus an end-of-generation token and a BOS token. The "model"
//! continues a fixed reply text from an offset that depends only on the prompt (and the seed
//! when temperature > 0), so a sequence's output is the same alone or inside any batch. It
//! checks that the engine feeds every position exactly once and in order.

use std::collections::HashMap;

use super::{
    Backend, BackendError, BatchEntry, ModelInfo, SamplingParams, SlotId, TokenId, Tokenizer,
};

/// The end-of-generation token of the fake vocabulary.
pub const FAKE_EOG: TokenId = 256;
/// The beginning-of-sequence token of the fake vocabulary.
pub const FAKE_BOS: TokenId = 257;
/// The text the fake model "generates", cycled; it holds multi-byte characters on purpose.
pub const FAKE_REPLY: &str = "Hello, wörld! ✓ fake tokens ";

/// Byte-level tokenizer of the fake model.
#[derive(Debug, Clone, Copy, Default)]
pub struct FakeTokenizer;

impl Tokenizer for FakeTokenizer {
    fn encode(&self, text: &str, add_special: bool, _parse_special: bool) -> Vec<TokenId> {
        let bos = add_special.then_some(FAKE_BOS);
        bos.into_iter()
            .chain(text.bytes().map(TokenId::from))
            .collect()
    }

    fn piece(&self, token: TokenId) -> Vec<u8> {
        u8::try_from(token).map(|b| vec![b]).unwrap_or_default()
    }

    fn is_eog(&self, token: TokenId) -> bool {
        token == FAKE_EOG
    }

    fn vocab_size(&self) -> usize {
        258
    }
}

/// Behaviour knobs of the fake model.
#[derive(Debug, Clone, Default)]
pub struct FakeConfig {
    /// Emit end-of-generation after this many generated tokens (never when `None`).
    pub eog_after: Option<usize>,
}

#[derive(Debug)]
struct FakeSequence {
    /// Every token evaluated so far, by position (the fake KV cache).
    history: Vec<TokenId>,
    /// Length of the prompt, known at the first sample.
    prompt_len: Option<usize>,
    offset_salt: u64,
}

/// The fake backend: per-slot history standing in for KV cells.
#[derive(Debug, Default)]
pub struct FakeBackend {
    config: FakeConfig,
    slots: HashMap<SlotId, FakeSequence>,
    /// Number of `step` calls so far, for tests.
    pub steps: usize,
    /// Largest batch (in tokens) seen, for tests.
    pub max_batch_tokens: usize,
}

impl FakeBackend {
    /// A fake backend with the given behaviour.
    pub fn new(config: FakeConfig) -> Self {
        FakeBackend {
            config,
            ..Default::default()
        }
    }

    /// Model facts of the fake model.
    pub fn info() -> ModelInfo {
        ModelInfo {
            n_ctx_train: 4096,
            vocab_size: FakeTokenizer.vocab_size(),
            chat_template: None,
            bos_text: String::new(),
            eos_text: String::new(),
        }
    }

    /// Slots currently holding a sequence.
    pub fn occupied_slots(&self) -> Vec<SlotId> {
        let mut slots: Vec<SlotId> = self.slots.keys().copied().collect();
        slots.sort_unstable();
        slots
    }

    fn next_token(&self, seq: &FakeSequence, suppress_eog: bool) -> TokenId {
        let prompt_len = seq.prompt_len.unwrap_or(seq.history.len());
        let generated = seq.history.len() - prompt_len;
        if self.config.eog_after == Some(generated) && !suppress_eog {
            return FAKE_EOG;
        }
        let prompt_hash = seq.history[..prompt_len]
            .iter()
            .fold(seq.offset_salt, |h, &t| {
                h.wrapping_mul(31).wrapping_add(t as u64)
            });
        let reply = FAKE_REPLY.as_bytes();
        let index = (prompt_hash as usize).wrapping_add(generated) % reply.len();
        TokenId::from(reply[index])
    }
}

impl Backend for FakeBackend {
    fn begin(&mut self, slot: SlotId, params: &SamplingParams) -> Result<(), BackendError> {
        if self.slots.contains_key(&slot) {
            return Err(BackendError::Decode(format!(
                "slot {slot} is already in use"
            )));
        }
        let offset_salt = if params.temperature > 0.0 {
            u64::from(params.seed)
        } else {
            0
        };
        let sequence = FakeSequence {
            history: Vec::new(),
            prompt_len: None,
            offset_salt,
        };
        self.slots.insert(slot, sequence);
        Ok(())
    }

    fn step(&mut self, batch: &[BatchEntry<'_>]) -> Result<Vec<TokenId>, BackendError> {
        self.steps += 1;
        let total: usize = batch.iter().map(|e| e.tokens.len()).sum();
        self.max_batch_tokens = self.max_batch_tokens.max(total);
        // llama.cpp batches sequences efficiently only in ascending id order; hold the engine
        // to it.
        if batch.windows(2).any(|pair| pair[0].slot >= pair[1].slot) {
            let slots: Vec<SlotId> = batch.iter().map(|e| e.slot).collect();
            return Err(BackendError::Decode(format!(
                "batch not in slot order: {slots:?}"
            )));
        }
        let mut sampled = Vec::new();
        for entry in batch {
            let seq = self.slots.get_mut(&entry.slot).ok_or_else(|| {
                BackendError::Decode(format!("slot {} was not begun", entry.slot))
            })?;
            if entry.first_pos != seq.history.len() || entry.tokens.is_empty() {
                return Err(BackendError::Decode(format!(
                    "slot {}: got {} tokens at position {}, expected position {}",
                    entry.slot,
                    entry.tokens.len(),
                    entry.first_pos,
                    seq.history.len()
                )));
            }
            seq.history.extend_from_slice(entry.tokens);
            if entry.sample {
                if seq.prompt_len.is_none() {
                    seq.prompt_len = Some(seq.history.len());
                }
                let seq = &self.slots[&entry.slot];
                sampled.push(self.next_token(seq, entry.suppress_eog));
            }
        }
        Ok(sampled)
    }

    fn end(&mut self, slot: SlotId) {
        self.slots.remove(&slot);
    }

    fn relocate(&mut self, from: SlotId, to: SlotId) {
        if let Some(seq) = self.slots.remove(&from) {
            self.slots.insert(to, seq);
        }
    }
}
/// An engine thread running the fake backend, for registry and HTTP tests.
pub fn spawn_engine(
    name: &str,
    settings: crate::engine::EngineSettings,
) -> Result<crate::engine::Engine, crate::engine::EngineError> {
    crate::engine::Engine::spawn(name, settings, |runner| {
        runner.run(
            FakeBackend::new(FakeConfig::default()),
            std::sync::Arc::new(FakeTokenizer),
            FakeBackend::info(),
        );
        Ok(())
    })
}
