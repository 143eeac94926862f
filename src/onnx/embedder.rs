//! One ONNX text embedding model: its session, tokenizer and pooling.

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;

use ort::session::{Session, SessionInputValue};
use ort::value::{Tensor, TensorElementType, ValueType};

use super::encoder::{Sequence, TextEncoder};
use super::info::{ModelInfo, TensorInfo};
use super::pooling::{normalize, pool};
use super::{EmbedderConfig, Embeddings, OnnxError, runtime};

const INPUT_IDS: &str = "input_ids";
const ATTENTION_MASK: &str = "attention_mask";
const TOKEN_TYPE_IDS: &str = "token_type_ids";
/// The name Hugging Face exports give the per-token states; preferred when several outputs fit.
const HIDDEN_STATE: &str = "last_hidden_state";

/// A loaded embedding model. Running it needs `&mut self` (ONNX Runtime sessions are run by one
/// caller at a time here), so servers share it through [`super::EmbeddingService`].
pub struct OnnxEmbedder {
    session: Session,
    encoder: Arc<TextEncoder>,
    config: EmbedderConfig,
    feeds_token_types: bool,
    output: String,
    dimensions: Option<usize>,
}

impl std::fmt::Debug for OnnxEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxEmbedder")
            .field("config", &self.config)
            .field("output", &self.output)
            .field("dimensions", &self.dimensions)
            .finish_non_exhaustive()
    }
}

impl OnnxEmbedder {
    /// Loads the runtime (once per process), the tokenizer and the model, and checks that the
    /// model has the inputs and output a text embedding model needs.
    pub fn load(config: EmbedderConfig) -> Result<Self, OnnxError> {
        if config.intra_threads == Some(0) {
            return Err(OnnxError::InvalidConfig(
                "intra_threads must be at least 1 (leave it unset for ONNX Runtime's default)"
                    .into(),
            ));
        }
        // Cheap file checks first, so a wrong path is reported before the runtime is needed.
        let encoder = TextEncoder::load(&config.tokenizer, config.max_seq_len, config.truncate)?;
        if !config.model.is_file() {
            return Err(OnnxError::ModelMissing {
                path: config.model.clone(),
            });
        }
        let environment = runtime::environment(config.runtime.as_deref())?;
        let session = open_session(&environment, &config)?;
        let feeds_token_types = check_inputs(&session, &config.model)?;
        let (output, dimensions) = choose_output(&session, &config.model)?;
        Ok(Self {
            session,
            encoder: Arc::new(encoder),
            config,
            feeds_token_types,
            output,
            dimensions,
        })
    }

    /// Length of the vectors, when the graph fixes it (it does for MiniLM: 384).
    pub fn dimensions(&self) -> Option<usize> {
        self.dimensions
    }

    /// The configuration this model was loaded with.
    pub fn config(&self) -> &EmbedderConfig {
        &self.config
    }

    /// The tokenizer, shared so that token counting need not wait for inference.
    pub fn encoder(&self) -> Arc<TextEncoder> {
        Arc::clone(&self.encoder)
    }

    /// Tokens per input, as usage accounting should bill them.
    pub fn count_tokens(&self, texts: &[String]) -> Result<Vec<usize>, OnnxError> {
        self.encoder.count_tokens(texts)
    }

    /// Embeds `texts` as one padded batch; the caller bounds its size. Servers should go through
    /// [`super::EmbeddingService`], which also batches concurrent requests together.
    pub fn embed(&mut self, texts: &[String]) -> Result<Embeddings, OnnxError> {
        let sequences = self.encoder.encode(texts)?;
        let refs: Vec<&Sequence> = sequences.iter().collect();
        let vectors = self.run_batch(&refs)?;
        Ok(Embeddings::new(
            vectors,
            sequences.iter().map(Sequence::len).collect(),
        ))
    }

    /// Runs tokenized inputs as one right-padded batch and returns one vector per input.
    pub(crate) fn run_batch(
        &mut self,
        sequences: &[&Sequence],
    ) -> Result<Vec<Vec<f32>>, OnnxError> {
        let rows = sequences.len();
        let Some(padded) = sequences.iter().map(|s| s.len()).max() else {
            return Ok(Vec::new());
        };
        let mut ids = vec![0i64; rows * padded];
        let mut mask = vec![0i64; rows * padded];
        let mut types = vec![0i64; rows * padded];
        for (row, sequence) in sequences.iter().enumerate() {
            let start = row * padded;
            let end = start + sequence.len();
            ids[start..end].copy_from_slice(&sequence.ids);
            mask[start..end].fill(1);
            types[start..end].copy_from_slice(&sequence.type_ids);
        }
        let shape = [rows, padded];
        let tensor = |name: &'static str, data: Vec<i64>| {
            Tensor::from_array((shape, data))
                .map(|t| (Cow::Borrowed(name), SessionInputValue::from(t)))
                .map_err(|e| OnnxError::Inference(e.to_string()))
        };
        let mut inputs = vec![tensor(INPUT_IDS, ids)?, tensor(ATTENTION_MASK, mask)?];
        if self.feeds_token_types {
            inputs.push(tensor(TOKEN_TYPE_IDS, types)?);
        }

        let outputs = self
            .session
            .run(inputs)
            .map_err(|e| OnnxError::Inference(e.to_string()))?;
        let value = outputs.get(&self.output).ok_or_else(|| {
            OnnxError::Inference(format!("the model produced no `{}` output", self.output))
        })?;
        let (out_shape, data) = value
            .try_extract_tensor::<f32>()
            .map_err(|e| OnnxError::Inference(e.to_string()))?;
        let hidden = match **out_shape {
            [r, p, h] if r as usize == rows && p as usize == padded && h > 0 => h as usize,
            _ => {
                return Err(OnnxError::Inference(format!(
                    "output `{}` has shape {out_shape:?}, expected [{rows}, {padded}, hidden]",
                    self.output
                )));
            }
        };
        Ok(sequences
            .iter()
            .zip(data.chunks_exact(padded * hidden))
            .map(|(sequence, states)| {
                let mut vector = pool(states, hidden, sequence.len(), self.config.pooling);
                if self.config.normalize {
                    normalize(&mut vector);
                }
                vector
            })
            .collect())
    }

    /// Describes the model for `inferno models info`.
    pub fn info(&self) -> Result<ModelInfo, OnnxError> {
        let path = self.config.model.clone();
        let file_size = std::fs::metadata(&path)
            .map_err(|_| OnnxError::ModelMissing { path: path.clone() })?
            .len();
        let metadata = self.session.metadata().ok();
        Ok(ModelInfo {
            file_size,
            producer: metadata.as_ref().and_then(|m| m.producer()),
            graph_name: metadata.as_ref().and_then(|m| m.name()),
            opset: self.session.opset_for_domain(ort::editor::ONNX_DOMAIN),
            inputs: self
                .session
                .inputs()
                .iter()
                .map(TensorInfo::from_outlet)
                .collect(),
            outputs: self
                .session
                .outputs()
                .iter()
                .map(TensorInfo::from_outlet)
                .collect(),
            dimensions: self.dimensions,
            max_seq_len: self.encoder.max_seq_len(),
            pooling: self.config.pooling,
            normalize: self.config.normalize,
            path,
        })
    }
}

fn open_session(
    environment: &ort::environment::Environment,
    config: &EmbedderConfig,
) -> Result<Session, OnnxError> {
    let option = |e: ort::Error<_>| OnnxError::InvalidConfig(format!("session option: {e}"));
    let mut builder = Session::builder(environment)
        .map_err(|e| OnnxError::InvalidConfig(format!("session options: {e}")))?
        // Spinning threads burn the cores that tokenization, HTTP and other models need
        // between batches; wake-up latency is small next to a forward pass.
        .with_intra_op_spinning(false)
        .map_err(option)?
        .with_inter_op_spinning(false)
        .map_err(option)?;
    if let Some(threads) = config.intra_threads {
        builder = builder.with_intra_threads(threads).map_err(option)?;
    }
    builder
        .commit_from_file(&config.model)
        .map_err(|e| OnnxError::ModelInvalid {
            path: config.model.clone(),
            reason: e.to_string(),
        })
}

/// Checks the model's inputs; returns whether it takes `token_type_ids`.
fn check_inputs(session: &Session, path: &Path) -> Result<bool, OnnxError> {
    let inputs = session.inputs();
    for required in [INPUT_IDS, ATTENTION_MASK] {
        if !inputs.iter().any(|i| i.name() == required) {
            return Err(OnnxError::MissingInput {
                path: path.to_path_buf(),
                name: required,
                available: inputs
                    .iter()
                    .map(|i| i.name())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    for input in inputs {
        let known = [INPUT_IDS, ATTENTION_MASK, TOKEN_TYPE_IDS].contains(&input.name());
        let int64_matrix = matches!(
            input.dtype(),
            ValueType::Tensor { ty: TensorElementType::Int64, shape, .. } if shape.len() == 2
        );
        if !known || !int64_matrix {
            return Err(OnnxError::UnsupportedInput {
                path: path.to_path_buf(),
                name: input.name().to_string(),
                found: input.dtype().to_string(),
            });
        }
    }
    Ok(inputs.iter().any(|i| i.name() == TOKEN_TYPE_IDS))
}

/// Picks the float [batch, sequence, hidden] output to pool, preferring `last_hidden_state`.
fn choose_output(session: &Session, path: &Path) -> Result<(String, Option<usize>), OnnxError> {
    let candidates: Vec<(&str, Option<usize>)> = session
        .outputs()
        .iter()
        .filter_map(|output| match output.dtype() {
            ValueType::Tensor {
                ty: TensorElementType::Float32,
                shape,
                ..
            } if shape.len() == 3 => Some((output.name(), usize::try_from(shape[2]).ok())),
            _ => None,
        })
        .collect();
    let chosen = candidates
        .iter()
        .find(|(name, _)| *name == HIDDEN_STATE)
        .or(candidates.first());
    match chosen {
        Some((name, dimensions)) => Ok((name.to_string(), *dimensions)),
        None => Err(OnnxError::UnsupportedOutput {
            path: path.to_path_buf(),
            available: session
                .outputs()
                .iter()
                .map(|o| format!("{}: {}", o.name(), o.dtype()))
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}
