//! A small GGUF v3 writer: metadata plus tensors, laid out and aligned as llama.cpp expects.
//! Used to build test models (valid, truncated, corrupt) and inputs for quantization.

use std::io::Write;
use std::path::Path;

use super::types::{GgmlType, MetaValue};

/// Why a GGUF file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum GgufWriteError {
    /// The file could not be created or written.
    #[error("cannot write GGUF file {}: {source}", .path.display())]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A tensor's data does not match its shape and type.
    #[error("tensor '{name}': shape {shape:?} of {ggml_type} needs {expected} bytes, got {actual}")]
    TensorSize {
        /// The tensor.
        name: String,
        /// Its shape (ggml order).
        shape: Vec<u64>,
        /// Its type.
        ggml_type: GgmlType,
        /// Bytes the shape needs (`None` printed as absent when it does not split into blocks).
        expected: String,
        /// Bytes given.
        actual: usize,
    },
    /// The same key or tensor name was added twice.
    #[error("duplicate {what} '{name}'")]
    Duplicate {
        /// "metadata key" or "tensor".
        what: &'static str,
        /// The name.
        name: String,
    },
    /// A value GGUF cannot encode: a reader summary, or an array mixing element types.
    #[error("metadata '{key}': {reason}")]
    Value {
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// `general.alignment` is not a power-of-two u32.
    #[error("general.alignment must be a power-of-two u32, got {0:?}")]
    Alignment(MetaValue),
}

/// One tensor to write.
#[derive(Debug, Clone)]
struct TensorEntry {
    name: String,
    shape: Vec<u64>,
    ggml_type: GgmlType,
    data: Vec<u8>,
}

/// Collects metadata and tensors, then writes them as one GGUF v3 file.
#[derive(Debug, Clone, Default)]
pub struct GgufWriter {
    metadata: Vec<(String, MetaValue)>,
    tensors: Vec<TensorEntry>,
}

impl GgufWriter {
    /// An empty file: no metadata, no tensors.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds metadata `key` = `value` (`general.alignment`, a u32, sets the data alignment).
    pub fn metadata(
        &mut self,
        key: impl Into<String>,
        value: impl Into<MetaValue>,
    ) -> Result<&mut Self, GgufWriteError> {
        let key = key.into();
        let value = value.into();
        if self.metadata.iter().any(|(k, _)| *k == key) {
            return Err(GgufWriteError::Duplicate {
                what: "metadata key",
                name: key,
            });
        }
        check_value(&key, &value)?;
        if key == "general.alignment" && !matches!(value, MetaValue::U32(a) if a.is_power_of_two())
        {
            return Err(GgufWriteError::Alignment(value));
        }
        self.metadata.push((key, value));
        Ok(self)
    }

    /// Adds an F32 tensor; `shape` is in ggml order (`shape[0]` is the row length).
    pub fn tensor_f32(
        &mut self,
        name: impl Into<String>,
        shape: &[u64],
        values: &[f32],
    ) -> Result<&mut Self, GgufWriteError> {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensor_raw(name, shape, GgmlType::F32, data)
    }

    /// Adds a tensor of any type from its encoded bytes, which must match the shape exactly.
    pub fn tensor_raw(
        &mut self,
        name: impl Into<String>,
        shape: &[u64],
        ggml_type: GgmlType,
        data: Vec<u8>,
    ) -> Result<&mut Self, GgufWriteError> {
        let name = name.into();
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(GgufWriteError::Duplicate {
                what: "tensor",
                name,
            });
        }
        let expected = ggml_type.tensor_bytes(shape);
        if expected != u64::try_from(data.len()).ok() {
            return Err(GgufWriteError::TensorSize {
                name,
                shape: shape.to_vec(),
                ggml_type,
                expected: expected
                    .map_or_else(|| "a whole number of blocks".into(), |b| b.to_string()),
                actual: data.len(),
            });
        }
        self.tensors.push(TensorEntry {
            name,
            shape: shape.to_vec(),
            ggml_type,
            data,
        });
        Ok(self)
    }

    fn alignment(&self) -> u64 {
        self.metadata
            .iter()
            .find_map(|(key, value)| match value {
                MetaValue::U32(a) if key == "general.alignment" => Some(u64::from(*a)),
                _ => None,
            })
            .unwrap_or(32)
    }

    /// The whole file as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(b"GGUF");
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            put_string(&mut out, key);
            let type_id = value.type_id().expect("check_value refused omitted values");
            out.extend_from_slice(&type_id.to_le_bytes());
            put_value(&mut out, value);
        }
        let alignment = self.alignment();
        let mut offset = 0u64;
        for tensor in &self.tensors {
            put_string(&mut out, &tensor.name);
            out.extend_from_slice(&(tensor.shape.len() as u32).to_le_bytes());
            for dim in &tensor.shape {
                out.extend_from_slice(&dim.to_le_bytes());
            }
            out.extend_from_slice(&tensor.ggml_type.id().to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offset = align(offset + tensor.data.len() as u64, alignment);
        }
        pad(&mut out, alignment);
        for tensor in &self.tensors {
            out.extend_from_slice(&tensor.data);
            pad(&mut out, alignment);
        }
        out
    }

    /// Writes the file to `path`, replacing it.
    pub fn write(&self, path: &Path) -> Result<(), GgufWriteError> {
        std::fs::File::create(path)
            .and_then(|mut file| file.write_all(&self.to_bytes()))
            .map_err(|source| GgufWriteError::Io {
                path: path.to_path_buf(),
                source,
            })
    }
}

/// Refuses what GGUF cannot encode: summaries and arrays mixing element types.
fn check_value(key: &str, value: &MetaValue) -> Result<(), GgufWriteError> {
    let refuse = |reason: &str| GgufWriteError::Value {
        key: key.to_owned(),
        reason: reason.to_owned(),
    };
    match value {
        MetaValue::Omitted(_) => Err(refuse("an omitted-value summary cannot be written")),
        MetaValue::Array(items) => {
            let first = items.first().and_then(MetaValue::type_id);
            if items.iter().any(|item| item.type_id() != first) {
                return Err(refuse("array elements must all have one type"));
            }
            items.iter().try_for_each(|item| check_value(key, item))
        }
        _ => Ok(()),
    }
}

fn align(offset: u64, alignment: u64) -> u64 {
    offset.div_ceil(alignment) * alignment
}

fn pad(out: &mut Vec<u8>, alignment: u64) {
    let len = align(out.len() as u64, alignment);
    out.resize(usize::try_from(len).expect("in-memory file fits usize"), 0);
}

fn put_string(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

fn put_value(out: &mut Vec<u8>, value: &MetaValue) {
    match value {
        MetaValue::U8(v) => out.push(*v),
        MetaValue::I8(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::Bool(v) => out.push(u8::from(*v)),
        MetaValue::String(v) => put_string(out, v),
        MetaValue::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::Array(items) => {
            // An empty array's element type is not recorded in MetaValue; u32 is as good as any.
            let element = items.first().and_then(MetaValue::type_id).unwrap_or(4);
            out.extend_from_slice(&element.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                put_value(out, item);
            }
        }
        MetaValue::Omitted(_) => unreachable!("check_value refuses omitted values"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_aligned_and_sized() {
        let mut writer = GgufWriter::new();
        writer
            .metadata("general.architecture", "llama")
            .unwrap()
            .tensor_f32("a", &[3], &[1.0, 2.0, 3.0])
            .unwrap()
            .tensor_f32("b", &[2, 2], &[4.0, 5.0, 6.0, 7.0])
            .unwrap();
        let bytes = writer.to_bytes();
        assert_eq!(&bytes[..4], b"GGUF");
        assert_eq!(u32::from_le_bytes(bytes[4..8].try_into().unwrap()), 3);
        assert_eq!(bytes.len() % 32, 0);
        // The second tensor starts 32 bytes into the data region: 12 bytes padded to 32.
        let tail = &bytes[bytes.len() - 64..];
        assert_eq!(&tail[..4], &1.0f32.to_le_bytes());
        assert_eq!(&tail[32..36], &4.0f32.to_le_bytes());
    }

    #[test]
    fn bad_inputs_are_refused() {
        let mut writer = GgufWriter::new();
        let err = writer.tensor_f32("t", &[4], &[1.0]).unwrap_err();
        assert!(err.to_string().contains("needs 16 bytes, got 4"), "{err}");
        writer.metadata("k", 1u32).unwrap();
        assert!(matches!(
            writer.metadata("k", 2u32),
            Err(GgufWriteError::Duplicate { .. })
        ));
        let mixed = MetaValue::Array(vec![MetaValue::U32(1), MetaValue::F32(1.0)]);
        assert!(matches!(
            writer.metadata("mixed", mixed),
            Err(GgufWriteError::Value { .. })
        ));
        assert!(matches!(
            writer.metadata("general.alignment", 24u32),
            Err(GgufWriteError::Alignment(_))
        ));
    }
}
