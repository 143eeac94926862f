//! Parsing of a GGUF header (magic, version, metadata, tensor infos) from a buffered reader,
//! with every count and length checked against the bytes the file still has before anything
//! is allocated for it.

use std::collections::HashSet;
use std::io::{BufReader, Read, Seek};
use std::path::Path;

use super::GgufError;
use super::types::{GgmlType, MetaValue, Omitted, value_type_name};

/// Arrays longer than this are summarised (type and length) instead of kept; per-layer arrays
/// stay whole, vocabularies do not.
pub const ARRAY_KEEP_MAX: u64 = 1024;

/// Longest string value kept in memory; longer ones are refused as hostile.
const STRING_MAX: u64 = 64 << 20;

/// Deepest array-of-array nesting accepted.
const NESTING_MAX: u32 = 4;

/// ggml tensors have at most four dimensions.
const DIMS_MAX: u32 = 4;

/// Smallest encoding of one metadata entry: key length, value type, a one-byte value.
const KV_MIN_BYTES: u64 = 8 + 4 + 1;

/// Smallest encoding of one tensor info: name length, dims count, type, offset.
const TENSOR_INFO_MIN_BYTES: u64 = 8 + 4 + 4 + 8;

/// One tensor info as stored: `offset` is relative to the start of the data region.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct RawTensor {
    pub name: String,
    pub shape: Vec<u64>,
    pub ggml_type: GgmlType,
    pub offset: u64,
    pub bytes: u64,
}

/// Everything before the tensor data.
#[derive(Debug, Clone)]
pub(super) struct Header {
    pub version: u32,
    pub metadata: Vec<(String, MetaValue)>,
    pub tensors: Vec<RawTensor>,
    /// Byte just after the last tensor info (the data region starts at the next alignment).
    pub end: u64,
}

/// A position-tracking reader over a file of known length.
struct Source<'a, R> {
    reader: BufReader<R>,
    pos: u64,
    len: u64,
    path: &'a Path,
}

impl<R: Read + Seek> Source<'_, R> {
    fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    fn malformed(&self, reason: String) -> GgufError {
        GgufError::Malformed {
            path: self.path.to_path_buf(),
            offset: self.pos,
            reason,
        }
    }

    /// Fails unless `n` more bytes exist.
    fn require(&self, n: u64) -> Result<(), GgufError> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                path: self.path.to_path_buf(),
                expected: self.pos.saturating_add(n),
                actual: self.len,
            });
        }
        Ok(())
    }

    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], GgufError> {
        let mut buf = [0u8; N];
        self.require(N as u64)?;
        self.reader
            .read_exact(&mut buf)
            .map_err(|source| GgufError::Io {
                path: self.path.to_path_buf(),
                source,
            })?;
        self.pos += N as u64;
        Ok(buf)
    }

    fn u32(&mut self) -> Result<u32, GgufError> {
        self.bytes().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, GgufError> {
        self.bytes().map(u64::from_le_bytes)
    }

    fn skip(&mut self, n: u64) -> Result<(), GgufError> {
        self.require(n)?;
        let step = i64::try_from(n).map_err(|_| self.malformed(format!("skip of {n} bytes")))?;
        self.reader
            .seek_relative(step)
            .map_err(|source| GgufError::Io {
                path: self.path.to_path_buf(),
                source,
            })?;
        self.pos += n;
        Ok(())
    }

    /// A length-prefixed string; `what` names it in errors.
    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let len = self.u64()?;
        if len > STRING_MAX {
            return Err(self.malformed(format!(
                "{what}: string of {len} bytes exceeds the {STRING_MAX}-byte limit"
            )));
        }
        self.require(len)?;
        let mut buf = vec![0u8; usize::try_from(len).expect("len <= STRING_MAX fits usize")];
        self.reader
            .read_exact(&mut buf)
            .map_err(|source| GgufError::Io {
                path: self.path.to_path_buf(),
                source,
            })?;
        self.pos += len;
        Ok(String::from_utf8(buf)
            .unwrap_or_else(|err| String::from_utf8_lossy(err.as_bytes()).into_owned()))
    }

    /// A scalar, string or array value of GGUF type `type_id`, for metadata key `key`.
    fn value(&mut self, type_id: u32, key: &str, depth: u32) -> Result<MetaValue, GgufError> {
        Ok(match type_id {
            0 => MetaValue::U8(u8::from_le_bytes(self.bytes()?)),
            1 => MetaValue::I8(i8::from_le_bytes(self.bytes()?)),
            2 => MetaValue::U16(u16::from_le_bytes(self.bytes()?)),
            3 => MetaValue::I16(i16::from_le_bytes(self.bytes()?)),
            4 => MetaValue::U32(self.u32()?),
            5 => MetaValue::I32(i32::from_le_bytes(self.bytes()?)),
            6 => MetaValue::F32(f32::from_le_bytes(self.bytes()?)),
            7 => match self.bytes::<1>()?[0] {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                other => return Err(self.malformed(format!("key '{key}': bool byte {other}"))),
            },
            8 => MetaValue::String(self.string(&format!("key '{key}'"))?),
            9 => self.array(key, depth)?,
            10 => MetaValue::U64(self.u64()?),
            11 => MetaValue::I64(i64::from_le_bytes(self.bytes()?)),
            12 => MetaValue::F64(f64::from_le_bytes(self.bytes()?)),
            _ => return Err(self.unknown_type(key, type_id)),
        })
    }

    fn unknown_type(&self, key: &str, type_id: u32) -> GgufError {
        GgufError::UnknownValueType {
            path: self.path.to_path_buf(),
            key: key.to_owned(),
            type_id,
        }
    }

    /// An array: kept when short, otherwise skipped and summarised by its length.
    fn array(&mut self, key: &str, depth: u32) -> Result<MetaValue, GgufError> {
        if depth >= NESTING_MAX {
            return Err(self.malformed(format!(
                "key '{key}': arrays nested deeper than {NESTING_MAX}"
            )));
        }
        let element = self.u32()?;
        let count = self.u64()?;
        let min_bytes =
            element_min_bytes(element).ok_or_else(|| self.unknown_type(key, element))?;
        if count
            .checked_mul(min_bytes)
            .is_none_or(|b| b > self.remaining())
        {
            return Err(self.malformed(format!(
                "key '{key}': array of {count} {} elements cannot fit in the remaining {} bytes",
                value_type_name(element),
                self.remaining()
            )));
        }
        if count <= ARRAY_KEEP_MAX {
            let mut items = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
            for _ in 0..count {
                items.push(self.value(element, key, depth + 1)?);
            }
            return Ok(MetaValue::Array(items));
        }
        match element {
            8 | 9 => {
                for _ in 0..count {
                    self.skip_value(element, key, depth + 1)?;
                }
            }
            // Fixed-size elements: `count * min_bytes` was checked against the file above.
            _ => self.skip(count * min_bytes)?,
        }
        Ok(MetaValue::Omitted(Omitted {
            kind: format!("array of {}", value_type_name(element)),
            len: count,
        }))
    }

    /// Moves past one value without keeping it.
    fn skip_value(&mut self, type_id: u32, key: &str, depth: u32) -> Result<(), GgufError> {
        match type_id {
            8 => {
                let len = self.u64()?;
                self.skip(len)
            }
            9 => self.array(key, depth).map(drop),
            _ => {
                let size =
                    element_min_bytes(type_id).ok_or_else(|| self.unknown_type(key, type_id))?;
                self.skip(size)
            }
        }
    }

    /// One tensor info; `alignment` is the data alignment its offset must respect.
    fn tensor(&mut self, alignment: u64) -> Result<RawTensor, GgufError> {
        let name = self.string("tensor name")?;
        let n_dims = self.u32()?;
        if n_dims > DIMS_MAX {
            return Err(self.malformed(format!(
                "tensor '{name}': {n_dims} dimensions (ggml allows at most {DIMS_MAX})"
            )));
        }
        let mut shape = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            shape.push(self.u64()?);
        }
        let elements = shape
            .iter()
            .try_fold(1u64, |acc, &dim| acc.checked_mul(dim))
            .filter(|&n| i64::try_from(n).is_ok())
            .ok_or_else(|| self.malformed(format!("tensor '{name}': shape {shape:?} overflows")))?;
        let type_id = self.u32()?;
        let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| GgufError::UnknownGgmlType {
            path: self.path.to_path_buf(),
            tensor: name.clone(),
            type_id,
        })?;
        let bytes = ggml_type.tensor_bytes(&shape).ok_or_else(|| {
            self.malformed(format!(
                "tensor '{name}': shape {shape:?} ({elements} elements) does not split into {} blocks of {}",
                ggml_type.name(),
                ggml_type.block_size()
            ))
        })?;
        let offset = self.u64()?;
        if !offset.is_multiple_of(alignment) {
            return Err(self.malformed(format!(
                "tensor '{name}': data offset {offset} is not a multiple of the alignment {alignment}"
            )));
        }
        Ok(RawTensor {
            name,
            shape,
            ggml_type,
            offset,
            bytes,
        })
    }
}

/// Bytes of one element of GGUF type `type_id` (the length prefix for strings and arrays),
/// `None` for an unknown type.
fn element_min_bytes(type_id: u32) -> Option<u64> {
    Some(match type_id {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 | 10..=12 => 8,
        9 => 12,
        _ => return None,
    })
}

/// The data alignment the metadata asks for (`general.alignment`, default 32).
pub(super) fn alignment(metadata: &[(String, MetaValue)], path: &Path) -> Result<u64, GgufError> {
    match metadata.iter().find(|(key, _)| key == "general.alignment") {
        None => Ok(32),
        Some((_, MetaValue::U32(a))) if a.is_power_of_two() => Ok(u64::from(*a)),
        Some((_, other)) => Err(GgufError::Malformed {
            path: path.to_path_buf(),
            offset: 0,
            reason: format!("general.alignment must be a power-of-two u32, found {other:?}"),
        }),
    }
}

/// Reads the header of the GGUF file `len` bytes long behind `reader`; `path` names it in errors.
pub(super) fn header<R: Read + Seek>(
    reader: BufReader<R>,
    len: u64,
    path: &Path,
) -> Result<Header, GgufError> {
    let mut src = Source {
        reader,
        pos: 0,
        len,
        path,
    };
    let mut magic = Vec::with_capacity(4);
    (&mut src.reader)
        .take(4)
        .read_to_end(&mut magic)
        .map_err(|source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    if magic != b"GGUF" {
        return Err(GgufError::NotGguf {
            path: path.to_path_buf(),
            found: String::from_utf8_lossy(&magic).escape_debug().to_string(),
        });
    }
    src.pos = 4;
    let version = src.u32()?;
    if version != 2 && version != 3 {
        return Err(GgufError::UnsupportedVersion {
            path: path.to_path_buf(),
            version,
            big_endian: matches!(version.swap_bytes(), 2 | 3),
        });
    }
    let tensor_count = src.u64()?;
    let kv_count = src.u64()?;
    for (count, min, what) in [
        (kv_count, KV_MIN_BYTES, "metadata entries"),
        (tensor_count, TENSOR_INFO_MIN_BYTES, "tensor infos"),
    ] {
        if count.checked_mul(min).is_none_or(|b| b > src.remaining()) {
            return Err(src.malformed(format!(
                "{count} {what} cannot fit in the remaining {} bytes",
                src.remaining()
            )));
        }
    }
    let mut keys = HashSet::new();
    let mut metadata = Vec::new();
    for _ in 0..kv_count {
        let key = src.string("metadata key")?;
        if !keys.insert(key.clone()) {
            return Err(src.malformed(format!("duplicate metadata key '{key}'")));
        }
        let type_id = src.u32()?;
        let value = src.value(type_id, &key, 0)?;
        metadata.push((key, value));
    }
    let alignment = alignment(&metadata, path)?;
    let mut names = HashSet::new();
    let mut tensors = Vec::new();
    for _ in 0..tensor_count {
        let tensor = src.tensor(alignment)?;
        if !names.insert(tensor.name.clone()) {
            return Err(src.malformed(format!("duplicate tensor name '{}'", tensor.name)));
        }
        tensors.push(tensor);
    }
    Ok(Header {
        version,
        metadata,
        tensors,
        end: src.pos,
    })
}
