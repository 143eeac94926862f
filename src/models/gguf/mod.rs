//! GGUF model files: what a file holds, read from its header alone (metadata and tensor infos,
//! never the tensor data) so that sizing a multi-GB model takes milliseconds; plus a small
//! writer ([`write`]) for building test files.

mod read;
pub mod types;
pub mod write;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::{Path, PathBuf};

use serde::Serialize;

pub use self::types::{GgmlType, MetaValue, Omitted, file_type_name};
pub use self::write::{GgufWriteError, GgufWriter};

/// Why a GGUF header could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be opened or read.
    #[error("cannot read GGUF file {}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file does not start with the GGUF magic.
    #[error("{} is not a GGUF file: it starts with \"{found}\", not \"GGUF\"", .path.display())]
    NotGguf {
        /// The file.
        path: PathBuf,
        /// Its first bytes, escaped.
        found: String,
    },
    /// A GGUF version other than 2 or 3.
    #[error(
        "{}: unsupported GGUF version {version}{} (this reader accepts 2 and 3)",
        .path.display(),
        if *.big_endian { ", a big-endian file" } else { "" }
    )]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version field as read (little-endian).
        version: u32,
        /// Whether the field reads as 2 or 3 byte-swapped.
        big_endian: bool,
    },
    /// The file ends before its header or its tensor data does.
    #[error("{}: truncated: expected {expected} bytes, file has {actual}", .path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Bytes the header and tensors need.
        expected: u64,
        /// Bytes the file has.
        actual: u64,
    },
    /// A metadata value of a type GGUF does not define.
    #[error("{}: metadata key '{key}' has unknown value type {type_id}", .path.display())]
    UnknownValueType {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// The type id found.
        type_id: u32,
    },
    /// A tensor of a type this build does not know.
    #[error("{}: tensor '{tensor}' has unknown ggml type {type_id}", .path.display())]
    UnknownGgmlType {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// The type id found.
        type_id: u32,
    },
    /// The header is inconsistent or absurd (counts, lengths, shapes, offsets).
    #[error("{}: malformed GGUF header at byte {offset}: {reason}", .path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Where reading stood when the problem showed.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
}

/// One tensor as the header describes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TensorInfo {
    /// Its name, e.g. "blk.0.attn_q.weight".
    pub name: String,
    /// Dimensions in ggml order (`shape[0]` is the row length).
    pub shape: Vec<u64>,
    /// Its element type.
    pub ggml_type: GgmlType,
    /// Bytes of its data.
    pub bytes: u64,
    /// Absolute byte offset of its data in the file.
    pub offset: u64,
}

/// What a GGUF file holds, from its header: raw metadata and tensors, and the model shape
/// derived from them. Chat templates are kept out of the serialized form (only their size).
#[derive(Debug, Clone, Serialize)]
pub struct GgufInfo {
    /// The file read.
    pub path: PathBuf,
    /// Its size in bytes.
    pub file_size: u64,
    /// GGUF version (2 or 3).
    pub version: u32,
    /// Tensor data alignment (`general.alignment`, default 32).
    pub alignment: u64,
    /// Absolute offset of the tensor data region.
    pub data_offset: u64,
    /// Number of tensors.
    pub tensor_count: u64,
    /// Metadata by key; long arrays and chat templates are [`MetaValue::Omitted`] summaries.
    pub metadata: BTreeMap<String, MetaValue>,
    /// Tensors in file order.
    pub tensors: Vec<TensorInfo>,
    /// `general.architecture`, e.g. "llama".
    pub architecture: Option<String>,
    /// `general.name`.
    pub name: Option<String>,
    /// `general.file_type` as llama.cpp names it ("Q4_K_M"), or "unknown (N)".
    pub file_type: Option<String>,
    /// Total elements over all tensors.
    pub parameter_count: u64,
    /// `{arch}.context_length`: the training context.
    pub context_length: Option<u64>,
    /// `{arch}.block_count`: the number of repeating layers.
    pub block_count: Option<u64>,
    /// `{arch}.embedding_length`.
    pub embedding_length: Option<u64>,
    /// `{arch}.attention.head_count` (the largest, when given per layer).
    pub head_count: Option<u64>,
    /// `{arch}.attention.head_count_kv` (the largest, when given per layer); defaults to
    /// `head_count` as in llama.cpp.
    pub head_count_kv: Option<u64>,
    /// KV heads of each layer (the scalar repeated when not given per layer).
    pub head_count_kv_per_layer: Vec<u64>,
    /// Width of one K head: `{arch}.attention.key_length`, else embedding / heads.
    pub head_dim_k: Option<u64>,
    /// Width of one V head: `{arch}.attention.value_length`, else embedding / heads.
    pub head_dim_v: Option<u64>,
    /// `{arch}.vocab_size`, else the token list length, else `token_embd.weight`'s rows.
    pub vocab_size: Option<u64>,
    /// Whether `tokenizer.chat_template` is present.
    pub has_chat_template: bool,
    /// Whether the output projection reuses `token_embd.weight` (no `output.weight` tensor).
    pub tied_embeddings: bool,
    /// Bytes of all tensor data.
    pub tensor_bytes: u64,
    /// Bytes of each repeating layer (`blk.<N>.*`), indexed by N.
    pub layer_bytes: Vec<u64>,
    /// Bytes of the input embedding (`token_embd.*`).
    pub input_bytes: u64,
    /// Bytes of everything else outside the layers (`output.*`, `output_norm.*`, ...).
    pub output_bytes: u64,
    #[serde(skip)]
    chat_template: Option<String>,
}

impl GgufInfo {
    /// Reads the header of the GGUF file at `path` (version 2 or 3) and checks that the file
    /// is long enough for every tensor it declares.
    pub fn read(path: &Path) -> Result<GgufInfo, GgufError> {
        let io = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        Self::from_reader(file, len, path)
    }

    /// Like [`GgufInfo::read`], from any seekable source `len` bytes long; `path` names it.
    pub fn from_reader<R: Read + Seek>(
        source: R,
        len: u64,
        path: &Path,
    ) -> Result<GgufInfo, GgufError> {
        let header = read::header(BufReader::with_capacity(64 << 10, source), len, path)?;
        let alignment = read::alignment(&header.metadata, path)?;
        let data_offset = header.end.div_ceil(alignment) * alignment;
        let mut expected = data_offset;
        let mut tensors = Vec::with_capacity(header.tensors.len());
        for raw in header.tensors {
            let end = data_offset
                .checked_add(raw.offset)
                .and_then(|start| start.checked_add(raw.bytes))
                .ok_or_else(|| GgufError::Malformed {
                    path: path.to_path_buf(),
                    offset: header.end,
                    reason: format!("tensor '{}': data end overflows", raw.name),
                })?;
            expected = expected.max(end);
            tensors.push(TensorInfo {
                offset: data_offset + raw.offset,
                name: raw.name,
                shape: raw.shape,
                ggml_type: raw.ggml_type,
                bytes: raw.bytes,
            });
        }
        if expected > len {
            return Err(GgufError::Truncated {
                path: path.to_path_buf(),
                expected,
                actual: len,
            });
        }
        let mut metadata = BTreeMap::new();
        let mut chat_template = None;
        for (key, value) in header.metadata {
            let value = match value {
                MetaValue::String(text) if key.starts_with("tokenizer.chat_template") => {
                    let summary = MetaValue::Omitted(Omitted {
                        kind: "string".into(),
                        len: text.len() as u64,
                    });
                    if key == "tokenizer.chat_template" {
                        chat_template = Some(text);
                    }
                    summary
                }
                other => other,
            };
            metadata.insert(key, value);
        }
        let mut info = GgufInfo {
            path: path.to_path_buf(),
            file_size: len,
            version: header.version,
            alignment,
            data_offset,
            tensor_count: tensors.len() as u64,
            metadata,
            tensors,
            architecture: None,
            name: None,
            file_type: None,
            parameter_count: 0,
            context_length: None,
            block_count: None,
            embedding_length: None,
            head_count: None,
            head_count_kv: None,
            head_count_kv_per_layer: Vec::new(),
            head_dim_k: None,
            head_dim_v: None,
            vocab_size: None,
            has_chat_template: chat_template.is_some(),
            tied_embeddings: false,
            tensor_bytes: 0,
            layer_bytes: Vec::new(),
            input_bytes: 0,
            output_bytes: 0,
            chat_template,
        };
        info.derive_shape();
        info.split_bytes()?;
        Ok(info)
    }

    /// The chat template text (`tokenizer.chat_template`), when present.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// The metadata value at `key`.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }

    /// The metadata value at `{architecture}.{suffix}`.
    fn arch_value(&self, suffix: &str) -> Option<&MetaValue> {
        let arch = self.architecture.as_deref()?;
        self.metadata.get(&format!("{arch}.{suffix}"))
    }

    fn arch_u64(&self, suffix: &str) -> Option<u64> {
        self.arch_value(suffix).and_then(MetaValue::as_u64)
    }

    /// A per-architecture count that may be one number or one per layer: (largest, per layer).
    fn arch_counts(&self, suffix: &str) -> Option<(u64, Option<Vec<u64>>)> {
        match self.arch_value(suffix)? {
            MetaValue::Array(items) => {
                let counts: Option<Vec<u64>> = items.iter().map(MetaValue::as_u64).collect();
                let counts = counts?;
                Some((counts.iter().copied().max()?, Some(counts)))
            }
            scalar => scalar.as_u64().map(|n| (n, None)),
        }
    }

    fn derive_shape(&mut self) {
        let text =
            |info: &GgufInfo, key: &str| info.get(key).and_then(|v| v.as_str()).map(str::to_owned);
        self.architecture = text(self, "general.architecture");
        self.name = text(self, "general.name");
        self.file_type = self
            .get("general.file_type")
            .and_then(MetaValue::as_u64)
            .map(|n| {
                u32::try_from(n)
                    .ok()
                    .and_then(file_type_name)
                    .map_or_else(|| format!("unknown ({n})"), str::to_owned)
            });
        self.parameter_count = self
            .tensors
            .iter()
            .map(|t| t.shape.iter().product::<u64>())
            .fold(0u64, u64::saturating_add);
        self.context_length = self.arch_u64("context_length");
        self.block_count = self.arch_u64("block_count");
        self.embedding_length = self.arch_u64("embedding_length");
        let heads = self.arch_counts("attention.head_count");
        self.head_count = heads.as_ref().map(|(max, _)| *max);
        let kv_heads = self.arch_counts("attention.head_count_kv").or(heads);
        self.head_count_kv = kv_heads.as_ref().map(|(max, _)| *max);
        self.head_count_kv_per_layer = match kv_heads {
            Some((_, Some(per_layer))) => per_layer,
            Some((n, None)) => {
                let layers = self.block_count.unwrap_or(0).min(self.tensor_count);
                vec![n; usize::try_from(layers).expect("bounded by the tensor count")]
            }
            None => Vec::new(),
        };
        let even_split = match (self.embedding_length, self.head_count) {
            (Some(embd), Some(heads)) if heads > 0 => Some(embd / heads),
            _ => None,
        };
        self.head_dim_k = self.arch_u64("attention.key_length").or(even_split);
        self.head_dim_v = self.arch_u64("attention.value_length").or(even_split);
        self.vocab_size = self
            .arch_u64("vocab_size")
            .or_else(|| {
                self.get("tokenizer.ggml.tokens")
                    .and_then(MetaValue::array_len)
            })
            .or_else(|| {
                let embd = self
                    .tensors
                    .iter()
                    .find(|t| t.name == "token_embd.weight")?;
                embd.shape.get(1).copied()
            });
        self.tied_embeddings = !self.tensors.iter().any(|t| t.name == "output.weight");
    }

    /// Splits tensor bytes into layers, input embedding and the rest.
    fn split_bytes(&mut self) -> Result<(), GgufError> {
        let mut layers = vec![
            0u64;
            usize::try_from(self.block_count.unwrap_or(0).min(self.tensor_count))
                .expect("bounded by the tensor count")
        ];
        for tensor in &self.tensors {
            self.tensor_bytes = self.tensor_bytes.saturating_add(tensor.bytes);
            if let Some(layer) = layer_index(&tensor.name) {
                // Layer numbers past the tensor count are hostile: they would size the vector.
                if layer >= self.tensor_count {
                    return Err(GgufError::Malformed {
                        path: self.path.clone(),
                        offset: tensor.offset,
                        reason: format!(
                            "tensor '{}': layer {layer} is beyond the tensor count",
                            tensor.name
                        ),
                    });
                }
                let layer = usize::try_from(layer).expect("below the tensor count");
                if layers.len() <= layer {
                    layers.resize(layer + 1, 0);
                }
                layers[layer] = layers[layer].saturating_add(tensor.bytes);
            } else if tensor.name.starts_with("token_embd.") {
                self.input_bytes = self.input_bytes.saturating_add(tensor.bytes);
            } else {
                self.output_bytes = self.output_bytes.saturating_add(tensor.bytes);
            }
        }
        self.layer_bytes = layers;
        Ok(())
    }
}

/// N of a tensor named `blk.<N>.*`.
fn layer_index(name: &str) -> Option<u64> {
    let rest = name.strip_prefix("blk.")?;
    let (digits, _) = rest.split_once('.')?;
    digits.parse().ok()
}

#[cfg(test)]
mod tests;
