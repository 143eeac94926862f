//! What `inferno models info` shows about an ONNX embedding model.

use std::fmt;
use std::path::PathBuf;

use ort::value::{Outlet, ValueType};
use serde::Serialize;

use super::Pooling;

/// One dimension of a model input or output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Dimension {
    /// A size fixed in the graph, like the 384 of a hidden state.
    Fixed(i64),
    /// A size chosen at run time that the graph names, like `batch` or `sequence`.
    Named(String),
    /// A size chosen at run time without a name.
    Dynamic,
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fixed(size) => write!(f, "{size}"),
            Self::Named(name) => f.write_str(name),
            Self::Dynamic => f.write_str("?"),
        }
    }
}

/// Name, element type and shape of a model input or output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TensorInfo {
    /// The graph's name for it, e.g. `input_ids`.
    pub name: String,
    /// Element type in ort's short spelling (`i64`, `f32`); non-tensors are spelled out whole.
    pub element_type: String,
    /// Dimensions; empty for non-tensor values.
    pub shape: Vec<Dimension>,
}

impl fmt::Display for TensorInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} [", self.name, self.element_type)?;
        for (i, dim) in self.shape.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{dim}")?;
        }
        f.write_str("]")
    }
}

impl TensorInfo {
    /// Describes a session input or output.
    pub(crate) fn from_outlet(outlet: &Outlet) -> Self {
        Self::from_value_type(outlet.name(), outlet.dtype())
    }

    fn from_value_type(name: &str, dtype: &ValueType) -> Self {
        let name = name.to_string();
        match dtype {
            ValueType::Tensor {
                ty,
                shape,
                dimension_symbols,
            } => Self {
                name,
                element_type: ty.to_string(),
                shape: shape
                    .iter()
                    .enumerate()
                    .map(|(i, &size)| match dimension_symbols.get(i) {
                        _ if size >= 0 => Dimension::Fixed(size),
                        Some(symbol) if !symbol.is_empty() => Dimension::Named(symbol.clone()),
                        _ => Dimension::Dynamic,
                    })
                    .collect(),
            },
            other => Self {
                name,
                element_type: other.to_string(),
                shape: Vec::new(),
            },
        }
    }
}

/// A loaded ONNX embedding model as `inferno models info` reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelInfo {
    /// The .onnx file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub file_size: u64,
    /// The tool that exported it (e.g. `pytorch`), when recorded.
    pub producer: Option<String>,
    /// The graph's name, when recorded.
    pub graph_name: Option<String>,
    /// Version of the default (`ai.onnx`) operator set, when the runtime can tell.
    pub opset: Option<u32>,
    /// Graph inputs.
    pub inputs: Vec<TensorInfo>,
    /// Graph outputs.
    pub outputs: Vec<TensorInfo>,
    /// Length of the embedding vectors, when the graph fixes it.
    pub dimensions: Option<usize>,
    /// Longest accepted input in tokens, special tokens included.
    pub max_seq_len: usize,
    /// How token states are pooled.
    pub pooling: Pooling,
    /// Whether vectors are scaled to unit length.
    pub normalize: bool,
}

impl fmt::Display for ModelInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "file:        {} ({} bytes)",
            self.path.display(),
            self.file_size
        )?;
        if let Some(producer) = &self.producer {
            writeln!(f, "producer:    {producer}")?;
        }
        if let Some(opset) = self.opset {
            writeln!(f, "opset:       {opset}")?;
        }
        for input in &self.inputs {
            writeln!(f, "input:       {input}")?;
        }
        for output in &self.outputs {
            writeln!(f, "output:      {output}")?;
        }
        if let Some(dimensions) = self.dimensions {
            writeln!(f, "dimensions:  {dimensions}")?;
        }
        writeln!(f, "max tokens:  {}", self.max_seq_len)?;
        write!(
            f,
            "pooling:     {}{}",
            self.pooling,
            if self.normalize {
                ", L2-normalized"
            } else {
                ""
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use ort::value::{Shape, SymbolicDimensions, TensorElementType};

    use super::*;

    #[test]
    fn tensor_outlets_keep_fixed_named_and_anonymous_dimensions() {
        // Built directly: an Outlet would call into the runtime library, absent in unit tests.
        let dtype = ValueType::Tensor {
            ty: TensorElementType::Float32,
            shape: Shape::new([-1, -1, 384]),
            dimension_symbols: SymbolicDimensions::new([
                "batch".to_string(),
                String::new(),
                String::new(),
            ]),
        };
        let info = TensorInfo::from_value_type("last_hidden_state", &dtype);
        assert_eq!(
            info.shape,
            vec![
                Dimension::Named("batch".into()),
                Dimension::Dynamic,
                Dimension::Fixed(384)
            ]
        );
        assert_eq!(info.to_string(), "last_hidden_state: f32 [batch, ?, 384]");
        assert_eq!(
            serde_json::to_value(&info).expect("serialize"),
            serde_json::json!({"name": "last_hidden_state", "element_type": "f32",
                               "shape": ["batch", null, 384]})
        );
    }
}
