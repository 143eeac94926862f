//! Generation requests, validated into a type that is valid by construction.

use std::hash::{BuildHasher, Hasher};

use crate::backend::{SamplingParams, TokenId};

/// Most stop strings one request may carry, unless configured otherwise.
pub const MAX_STOP_STRINGS: usize = 16;
/// Longest stop string, in bytes.
pub const MAX_STOP_BYTES: usize = 256;

/// A parameter that is out of range; `param` names it as the client sent it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ValidationError {
    /// The request field at fault (OpenAI's `param`).
    pub param: &'static str,
    /// What is wrong, for the client.
    pub message: String,
    /// A machine-readable code, e.g. `context_length_exceeded`.
    pub code: Option<&'static str>,
}

impl ValidationError {
    fn new(param: &'static str, message: impl Into<String>) -> Self {
        ValidationError {
            param,
            message: message.into(),
            code: None,
        }
    }
}

/// Limits a request is checked against; they come from the loaded model and the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineLimits {
    /// Tokens per sequence (prompt + completion).
    pub ctx_size: u32,
    /// Vocabulary size (for `logit_bias` token ids).
    pub vocab_size: usize,
    /// Largest `max_tokens` allowed, and the default (else: the room left in the context).
    pub max_tokens: Option<u32>,
    /// Largest prompt allowed, in tokens (else: the context).
    pub max_prompt_tokens: Option<u32>,
    /// Most stop strings.
    pub max_stop: usize,
}

impl EngineLimits {
    /// Limits imposed only by the context and the vocabulary.
    pub fn new(ctx_size: u32, vocab_size: usize) -> Self {
        EngineLimits {
            ctx_size,
            vocab_size,
            max_tokens: None,
            max_prompt_tokens: None,
            max_stop: MAX_STOP_STRINGS,
        }
    }
}

/// Generation options as the client gave them; `None` means "use the default".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerationOptions {
    /// Most tokens to generate; default: as many as the context allows.
    pub max_tokens: Option<u32>,
    /// Fewest tokens to generate before end-of-generation is allowed.
    pub min_tokens: Option<u32>,
    /// 0..=2; 0 is greedy; default 1.
    pub temperature: Option<f32>,
    /// (0, 1]; default 1.
    pub top_p: Option<f32>,
    /// >= 0; 0 disables; default 0.
    pub top_k: Option<i64>,
    /// [0, 1]; default 0.
    pub min_p: Option<f32>,
    /// Random seed; default: random.
    pub seed: Option<i64>,
    /// [-2, 2]; default 0.
    pub presence_penalty: Option<f32>,
    /// [-2, 2]; default 0.
    pub frequency_penalty: Option<f32>,
    /// (0, 10]; default 1.
    pub repetition_penalty: Option<f32>,
    /// Token id to bias in [-100, 100].
    pub logit_bias: Vec<(i64, f32)>,
    /// Stop strings; never part of the output.
    pub stop: Vec<String>,
    /// Keep generating past end-of-generation tokens.
    pub ignore_eos: bool,
}

/// A validated generation request, ready for [`crate::engine::Engine::submit`].
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    /// Prompt tokens (non-empty).
    pub prompt: Vec<TokenId>,
    /// Sampler settings.
    pub sampling: SamplingParams,
    /// Most tokens to generate (>= 1, and prompt + max_tokens fits the context).
    pub max_tokens: u32,
    /// End-of-generation is suppressed until this many tokens were generated.
    pub min_tokens: u32,
    /// Stop strings.
    pub stop: Vec<String>,
    /// End-of-generation tokens are suppressed.
    pub ignore_eos: bool,
    /// Who asked (an identity id); the engine admits owners round-robin.
    pub owner: String,
}

fn check_range(
    param: &'static str,
    value: Option<f32>,
    default: f32,
    valid: impl Fn(f32) -> bool,
    range: &str,
) -> Result<f32, ValidationError> {
    match value {
        None => Ok(default),
        Some(v) if v.is_finite() && valid(v) => Ok(v),
        Some(v) => Err(ValidationError::new(
            param,
            format!("{param} must be {range}, got {v}"),
        )),
    }
}

fn random_seed() -> u32 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish() as u32
}

impl GenerateRequest {
    /// Validates `options` for `prompt` against `limits`.
    pub fn new(
        prompt: Vec<TokenId>,
        options: GenerationOptions,
        limits: &EngineLimits,
    ) -> Result<Self, ValidationError> {
        let ctx = limits.ctx_size as usize;
        if prompt.is_empty() {
            return Err(ValidationError::new("prompt", "the prompt is empty"));
        }
        if let Some(cap) = limits.max_prompt_tokens
            && prompt.len() > cap as usize
        {
            return Err(ValidationError {
                param: "messages",
                message: format!(
                    "Your prompt has {} tokens; this server accepts at most {cap}.",
                    prompt.len()
                ),
                code: Some("prompt_too_long"),
            });
        }
        if prompt.len() >= ctx {
            return Err(ValidationError {
                param: "messages",
                message: format!(
                    "This model's maximum context length is {ctx} tokens. However, your prompt has {} tokens, leaving no room for a completion.",
                    prompt.len()
                ),
                code: Some("context_length_exceeded"),
            });
        }
        let room = (ctx - prompt.len()) as u32;
        let max_tokens = match options.max_tokens {
            Some(n) if limits.max_tokens.is_some_and(|cap| n > cap) => {
                return Err(ValidationError::new(
                    "max_tokens",
                    format!(
                        "max_tokens ({n}) exceeds this server's limit of {}",
                        limits.max_tokens.unwrap_or(0)
                    ),
                ));
            }
            None => limits.max_tokens.map_or(room, |cap| cap.min(room)),
            Some(0) => {
                return Err(ValidationError::new(
                    "max_tokens",
                    "max_tokens must be at least 1",
                ));
            }
            Some(n) if n > room => {
                return Err(ValidationError {
                    param: "max_tokens",
                    message: format!(
                        "This model's maximum context length is {ctx} tokens. However, you requested {} tokens ({} in the prompt, {n} for the completion). Please reduce the prompt or max_tokens.",
                        prompt.len() as u64 + u64::from(n),
                        prompt.len()
                    ),
                    code: Some("context_length_exceeded"),
                });
            }
            Some(n) => n,
        };
        let min_tokens = options.min_tokens.unwrap_or(0);
        if min_tokens > max_tokens {
            return Err(ValidationError::new(
                "min_tokens",
                format!("min_tokens ({min_tokens}) must not exceed max_tokens ({max_tokens})"),
            ));
        }
        let temperature = check_range(
            "temperature",
            options.temperature,
            1.0,
            |v| (0.0..=2.0).contains(&v),
            "between 0 and 2",
        )?;
        let top_p = check_range(
            "top_p",
            options.top_p,
            1.0,
            |v| v > 0.0 && v <= 1.0,
            "in (0, 1]",
        )?;
        let min_p = check_range(
            "min_p",
            options.min_p,
            0.0,
            |v| (0.0..=1.0).contains(&v),
            "between 0 and 1",
        )?;
        let presence_penalty = check_range(
            "presence_penalty",
            options.presence_penalty,
            0.0,
            |v| (-2.0..=2.0).contains(&v),
            "between -2 and 2",
        )?;
        let frequency_penalty = check_range(
            "frequency_penalty",
            options.frequency_penalty,
            0.0,
            |v| (-2.0..=2.0).contains(&v),
            "between -2 and 2",
        )?;
        let repetition_penalty = check_range(
            "repetition_penalty",
            options.repetition_penalty,
            1.0,
            |v| v > 0.0 && v <= 10.0,
            "in (0, 10]",
        )?;
        let top_k = match options.top_k {
            None => 0,
            Some(k) if (0..=i64::from(i32::MAX)).contains(&k) => k as i32,
            Some(k) => {
                return Err(ValidationError::new(
                    "top_k",
                    format!("top_k must be >= 0, got {k}"),
                ));
            }
        };
        // llama.cpp seeds are 32-bit; fold the 64-bit OpenAI seed so every bit still matters.
        let seed = options
            .seed
            .map_or_else(random_seed, |s| (s as u64 ^ (s as u64 >> 32)) as u32);
        let mut logit_bias = Vec::with_capacity(options.logit_bias.len());
        for (token, bias) in options.logit_bias {
            if token < 0 || token as u64 >= limits.vocab_size as u64 {
                return Err(ValidationError::new(
                    "logit_bias",
                    format!(
                        "logit_bias token id {token} is not in the vocabulary (0..{})",
                        limits.vocab_size
                    ),
                ));
            }
            if !bias.is_finite() || !(-100.0..=100.0).contains(&bias) {
                return Err(ValidationError::new(
                    "logit_bias",
                    format!("logit_bias values must be between -100 and 100, got {bias}"),
                ));
            }
            logit_bias.push((token as TokenId, bias));
        }
        if options.stop.len() > limits.max_stop {
            return Err(ValidationError::new(
                "stop",
                format!("at most {} stop strings are allowed", limits.max_stop),
            ));
        }
        if let Some(bad) = options
            .stop
            .iter()
            .find(|s| s.is_empty() || s.len() > MAX_STOP_BYTES)
        {
            return Err(ValidationError::new(
                "stop",
                format!(
                    "stop strings must be 1..={MAX_STOP_BYTES} bytes, got {} bytes",
                    bad.len()
                ),
            ));
        }
        Ok(GenerateRequest {
            prompt,
            sampling: SamplingParams {
                temperature,
                top_p,
                top_k,
                min_p,
                seed,
                presence_penalty,
                frequency_penalty,
                repetition_penalty,
                penalty_last_n: 64,
                logit_bias,
            },
            max_tokens,
            min_tokens,
            stop: options.stop,
            ignore_eos: options.ignore_eos,
            owner: "anonymous".to_owned(),
        })
    }

    /// Sets who asked (for fair admission across identities).
    #[must_use]
    pub fn with_owner(mut self, owner: &str) -> Self {
        owner.clone_into(&mut self.owner);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: EngineLimits = EngineLimits {
        ctx_size: 100,
        vocab_size: 1000,
        max_tokens: None,
        max_prompt_tokens: None,
        max_stop: MAX_STOP_STRINGS,
    };

    fn build(
        prompt_len: usize,
        options: GenerationOptions,
    ) -> Result<GenerateRequest, ValidationError> {
        GenerateRequest::new(vec![1; prompt_len], options, &LIMITS)
    }

    #[test]
    fn defaults_fill_the_context() {
        let request = build(10, GenerationOptions::default()).unwrap();
        assert_eq!(request.max_tokens, 90);
        assert_eq!(request.sampling.temperature, 1.0);
    }

    #[test]
    fn prompt_that_fills_the_context_is_context_length_exceeded() {
        let err = build(100, GenerationOptions::default()).unwrap_err();
        assert_eq!(err.code, Some("context_length_exceeded"));
        let err = build(
            50,
            GenerationOptions {
                max_tokens: Some(51),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(
            (err.param, err.code),
            ("max_tokens", Some("context_length_exceeded"))
        );
        assert!(
            build(
                50,
                GenerationOptions {
                    max_tokens: Some(50),
                    ..Default::default()
                }
            )
            .is_ok()
        );
    }

    #[test]
    fn out_of_range_parameters_name_themselves() {
        let cases: Vec<(GenerationOptions, &str)> = vec![
            (
                GenerationOptions {
                    temperature: Some(2.5),
                    ..Default::default()
                },
                "temperature",
            ),
            (
                GenerationOptions {
                    temperature: Some(f32::NAN),
                    ..Default::default()
                },
                "temperature",
            ),
            (
                GenerationOptions {
                    top_p: Some(0.0),
                    ..Default::default()
                },
                "top_p",
            ),
            (
                GenerationOptions {
                    top_k: Some(-1),
                    ..Default::default()
                },
                "top_k",
            ),
            (
                GenerationOptions {
                    min_p: Some(1.5),
                    ..Default::default()
                },
                "min_p",
            ),
            (
                GenerationOptions {
                    presence_penalty: Some(-3.0),
                    ..Default::default()
                },
                "presence_penalty",
            ),
            (
                GenerationOptions {
                    frequency_penalty: Some(2.1),
                    ..Default::default()
                },
                "frequency_penalty",
            ),
            (
                GenerationOptions {
                    repetition_penalty: Some(0.0),
                    ..Default::default()
                },
                "repetition_penalty",
            ),
            (
                GenerationOptions {
                    max_tokens: Some(0),
                    ..Default::default()
                },
                "max_tokens",
            ),
            (
                GenerationOptions {
                    min_tokens: Some(95),
                    max_tokens: Some(10),
                    ..Default::default()
                },
                "min_tokens",
            ),
            (
                GenerationOptions {
                    logit_bias: vec![(1000, 1.0)],
                    ..Default::default()
                },
                "logit_bias",
            ),
            (
                GenerationOptions {
                    logit_bias: vec![(5, 101.0)],
                    ..Default::default()
                },
                "logit_bias",
            ),
            (
                GenerationOptions {
                    stop: vec![String::new()],
                    ..Default::default()
                },
                "stop",
            ),
            (
                GenerationOptions {
                    stop: vec!["x".into(); 17],
                    ..Default::default()
                },
                "stop",
            ),
        ];
        for (options, param) in cases {
            let err =
                build(10, options.clone()).expect_err(&format!("{options:?} must be rejected"));
            assert_eq!(err.param, param, "{options:?}");
        }
    }

    #[test]
    fn empty_prompt_is_rejected() {
        assert_eq!(
            build(0, GenerationOptions::default()).unwrap_err().param,
            "prompt"
        );
    }

    #[test]
    fn seeds_are_deterministic_and_use_all_bits() {
        let a = build(
            1,
            GenerationOptions {
                seed: Some(1),
                ..Default::default()
            },
        )
        .unwrap();
        let b = build(
            1,
            GenerationOptions {
                seed: Some(1),
                ..Default::default()
            },
        )
        .unwrap();
        let c = build(
            1,
            GenerationOptions {
                seed: Some(1 << 40),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(a.sampling.seed, b.sampling.seed);
        assert_ne!(a.sampling.seed, c.sampling.seed);
    }
}
