//! The vocabulary of a GGUF file: ggml tensor types with their block layouts, llama.cpp file
//! types, and metadata values.

use serde::{Serialize, Serializer};

/// A ggml tensor element type, as stored in a GGUF tensor info.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GgmlType {
    id: u32,
    name: &'static str,
    block_size: u64,
    block_bytes: u64,
}

/// Every type a GGUF file may hold: (id, name, elements per block, bytes per block), after
/// ggml's `ggml.h` and `ggml-common.h`. Ids 4, 5, 31-33 and 36-38 were retired from files.
const GGML_TYPES: &[(u32, &str, u64, u64)] = &[
    (0, "F32", 1, 4),
    (1, "F16", 1, 2),
    (2, "Q4_0", 32, 18),
    (3, "Q4_1", 32, 20),
    (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24),
    (8, "Q8_0", 32, 34),
    // Two f16 (d, s) and 32 int8: ggml static_asserts 36 (gguf-py's table says 40).
    (9, "Q8_1", 32, 36),
    (10, "Q2_K", 256, 84),
    (11, "Q3_K", 256, 110),
    (12, "Q4_K", 256, 144),
    (13, "Q5_K", 256, 176),
    (14, "Q6_K", 256, 210),
    (15, "Q8_K", 256, 292),
    (16, "IQ2_XXS", 256, 66),
    (17, "IQ2_XS", 256, 74),
    (18, "IQ3_XXS", 256, 98),
    (19, "IQ1_S", 256, 50),
    (20, "IQ4_NL", 32, 18),
    (21, "IQ3_S", 256, 110),
    (22, "IQ2_S", 256, 82),
    (23, "IQ4_XS", 256, 136),
    (24, "I8", 1, 1),
    (25, "I16", 1, 2),
    (26, "I32", 1, 4),
    (27, "I64", 1, 8),
    (28, "F64", 1, 8),
    (29, "IQ1_M", 256, 56),
    (30, "BF16", 1, 2),
    (34, "TQ1_0", 256, 54),
    (35, "TQ2_0", 256, 66),
    (39, "MXFP4", 32, 17),
    (40, "NVFP4", 64, 36),
    (41, "Q1_0", 128, 18),
];

impl GgmlType {
    /// 32-bit float, the type the writer stores.
    pub const F32: GgmlType = GgmlType {
        id: 0,
        name: "F32",
        block_size: 1,
        block_bytes: 4,
    };

    /// The type with ggml id `id`, or `None` for an id no ggml release stores in files.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        GGML_TYPES.iter().find(|(known, ..)| *known == id).map(
            |&(id, name, block_size, block_bytes)| GgmlType {
                id,
                name,
                block_size,
                block_bytes,
            },
        )
    }

    /// The type named `name` (ggml spelling, case-insensitive, e.g. "q4_k").
    pub fn from_name(name: &str) -> Option<GgmlType> {
        GGML_TYPES
            .iter()
            .find(|(_, known, ..)| known.eq_ignore_ascii_case(name))
            .and_then(|&(id, ..)| GgmlType::from_id(id))
    }

    /// The ggml enum value.
    pub fn id(self) -> u32 {
        self.id
    }

    /// The ggml name, e.g. "Q4_K".
    pub fn name(self) -> &'static str {
        self.name
    }

    /// Elements per quantization block (1 for plain types).
    pub fn block_size(self) -> u64 {
        self.block_size
    }

    /// Bytes per quantization block.
    pub fn block_bytes(self) -> u64 {
        self.block_bytes
    }

    /// Bytes of a tensor of this type with `shape` (ggml order, `shape[0]` the row length), or
    /// `None` when rows do not split into whole blocks or the size overflows.
    pub fn tensor_bytes(self, shape: &[u64]) -> Option<u64> {
        let row = *shape.first().unwrap_or(&1);
        if !row.is_multiple_of(self.block_size) {
            return None;
        }
        let rows = shape
            .iter()
            .skip(1)
            .try_fold(1u64, |acc, &dim| acc.checked_mul(dim))?;
        (row / self.block_size)
            .checked_mul(self.block_bytes)?
            .checked_mul(rows)
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl Serialize for GgmlType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name)
    }
}

/// The name of llama.cpp's `general.file_type` value (`llama_ftype`), e.g. 15 -> "Q4_K_M".
pub fn file_type_name(file_type: u32) -> Option<&'static str> {
    let name = match file_type {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        4 => "Q4_1_SOME_F16",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        38 => "MXFP4_MOE",
        39 => "NVFP4",
        40 => "Q1_0",
        _ => return None,
    };
    Some(name)
}

/// One metadata value. Serializes as plain JSON (numbers, strings, bools, arrays); what the
/// reader chose not to keep serializes as an [`Omitted`] summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum MetaValue {
    /// GGUF type 0.
    U8(u8),
    /// GGUF type 1.
    I8(i8),
    /// GGUF type 2.
    U16(u16),
    /// GGUF type 3.
    I16(i16),
    /// GGUF type 4.
    U32(u32),
    /// GGUF type 5.
    I32(i32),
    /// GGUF type 6.
    F32(f32),
    /// GGUF type 7.
    Bool(bool),
    /// GGUF type 8.
    String(String),
    /// GGUF type 9; every element has the same type.
    Array(Vec<MetaValue>),
    /// GGUF type 10.
    U64(u64),
    /// GGUF type 11.
    I64(i64),
    /// GGUF type 12.
    F64(f64),
    /// A value the reader skipped to stay small (a vocabulary, a chat template).
    Omitted(Omitted),
}

/// What is known of a value the reader did not keep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Omitted {
    /// "string", or "array of <element type>".
    #[serde(rename = "omitted")]
    pub kind: String,
    /// Bytes of a string, elements of an array.
    pub len: u64,
}

impl MetaValue {
    /// The value as an unsigned integer, when it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U8(v) => Some(v.into()),
            MetaValue::U16(v) => Some(v.into()),
            MetaValue::U32(v) => Some(v.into()),
            MetaValue::U64(v) => Some(v),
            MetaValue::I8(v) => u64::try_from(v).ok(),
            MetaValue::I16(v) => u64::try_from(v).ok(),
            MetaValue::I32(v) => u64::try_from(v).ok(),
            MetaValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as text, when it is a kept string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The number of elements of an array, kept or omitted.
    pub fn array_len(&self) -> Option<u64> {
        match self {
            MetaValue::Array(items) => u64::try_from(items.len()).ok(),
            MetaValue::Omitted(o) if o.kind.starts_with("array") => Some(o.len),
            _ => None,
        }
    }

    /// The GGUF value type id, `None` for [`MetaValue::Omitted`].
    pub fn type_id(&self) -> Option<u32> {
        Some(match self {
            MetaValue::U8(_) => 0,
            MetaValue::I8(_) => 1,
            MetaValue::U16(_) => 2,
            MetaValue::I16(_) => 3,
            MetaValue::U32(_) => 4,
            MetaValue::I32(_) => 5,
            MetaValue::F32(_) => 6,
            MetaValue::Bool(_) => 7,
            MetaValue::String(_) => 8,
            MetaValue::Array(_) => 9,
            MetaValue::U64(_) => 10,
            MetaValue::I64(_) => 11,
            MetaValue::F64(_) => 12,
            MetaValue::Omitted(_) => return None,
        })
    }
}

/// The GGUF spelling of value type `id`, for messages and summaries.
pub fn value_type_name(id: u32) -> &'static str {
    match id {
        0 => "u8",
        1 => "i8",
        2 => "u16",
        3 => "i16",
        4 => "u32",
        5 => "i32",
        6 => "f32",
        7 => "bool",
        8 => "string",
        9 => "array",
        10 => "u64",
        11 => "i64",
        12 => "f64",
        _ => "unknown",
    }
}

impl From<&str> for MetaValue {
    fn from(value: &str) -> Self {
        MetaValue::String(value.to_owned())
    }
}

impl From<String> for MetaValue {
    fn from(value: String) -> Self {
        MetaValue::String(value)
    }
}

impl From<u32> for MetaValue {
    fn from(value: u32) -> Self {
        MetaValue::U32(value)
    }
}

impl From<u64> for MetaValue {
    fn from(value: u64) -> Self {
        MetaValue::U64(value)
    }
}

impl From<i32> for MetaValue {
    fn from(value: i32) -> Self {
        MetaValue::I32(value)
    }
}

impl From<f32> for MetaValue {
    fn from(value: f32) -> Self {
        MetaValue::F32(value)
    }
}

impl From<bool> for MetaValue {
    fn from(value: bool) -> Self {
        MetaValue::Bool(value)
    }
}

impl<T: Into<MetaValue>> From<Vec<T>> for MetaValue {
    fn from(values: Vec<T>) -> Self {
        MetaValue::Array(values.into_iter().map(Into::into).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_layouts_match_ggml() {
        let q4_k = GgmlType::from_name("q4_k").unwrap();
        assert_eq!(
            (q4_k.id(), q4_k.block_size(), q4_k.block_bytes()),
            (12, 256, 144)
        );
        assert_eq!(GgmlType::from_id(8).unwrap().name(), "Q8_0");
        assert_eq!(GgmlType::from_id(9).unwrap().block_bytes(), 36);
        assert_eq!(GgmlType::from_id(4), None);
        assert_eq!(GgmlType::from_id(42), None);
        // 576 x 1536 Q4_1: 18 blocks of 20 bytes per row.
        assert_eq!(
            GgmlType::from_name("Q4_1")
                .unwrap()
                .tensor_bytes(&[576, 1536]),
            Some(18 * 20 * 1536)
        );
        assert_eq!(GgmlType::F32.tensor_bytes(&[3, 2]), Some(24));
        assert_eq!(q4_k.tensor_bytes(&[100, 2]), None, "partial block");
        assert_eq!(GgmlType::F32.tensor_bytes(&[u64::MAX, 2]), None, "overflow");
    }

    #[test]
    fn file_types_have_llama_cpp_names() {
        assert_eq!(file_type_name(3), Some("Q4_1"));
        assert_eq!(file_type_name(15), Some("Q4_K_M"));
        assert_eq!(file_type_name(1), Some("F16"));
        assert_eq!(file_type_name(5), None);
    }

    #[test]
    fn values_serialize_as_plain_json() {
        let value = MetaValue::from(vec![1u32, 2]);
        assert_eq!(serde_json::to_string(&value).unwrap(), "[1,2]");
        let omitted = MetaValue::Omitted(Omitted {
            kind: "array of string".into(),
            len: 7,
        });
        assert_eq!(
            serde_json::to_string(&omitted).unwrap(),
            r#"{"omitted":"array of string","len":7}"#
        );
        assert_eq!(omitted.array_len(), Some(7));
        assert_eq!(MetaValue::I32(-1).as_u64(), None);
        assert_eq!(MetaValue::U8(3).as_u64(), Some(3));
    }
}
