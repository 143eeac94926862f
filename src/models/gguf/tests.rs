//! Reader tests over files built with [`GgufWriter`], valid and damaged.

use std::io::Cursor;

use super::*;

const LABEL: &str = "/models/test.gguf";

fn parse(bytes: &[u8]) -> Result<GgufInfo, GgufError> {
    GgufInfo::from_reader(Cursor::new(bytes), bytes.len() as u64, Path::new(LABEL))
}

fn zeros(n: u64) -> Vec<f32> {
    vec![0.0; n as usize]
}

/// A two-layer llama-shaped model: embd 8, 2 heads, 1 KV head, vocab 2000 (a summarised list).
fn tiny_model() -> GgufWriter {
    let mut w = GgufWriter::new();
    let tokens: Vec<String> = (0..2000).map(|i| format!("tok{i}")).collect();
    w.metadata("general.architecture", "llama").unwrap();
    w.metadata("general.name", "Tiny").unwrap();
    w.metadata("general.file_type", 0u32).unwrap();
    w.metadata("llama.context_length", 128u32).unwrap();
    w.metadata("llama.block_count", 2u32).unwrap();
    w.metadata("llama.embedding_length", 8u32).unwrap();
    w.metadata("llama.attention.head_count", 2u32).unwrap();
    w.metadata("llama.attention.head_count_kv", 1u32).unwrap();
    w.metadata("llama.rope.freq_base", 10000.0f32).unwrap();
    w.metadata("tokenizer.ggml.tokens", tokens).unwrap();
    w.metadata("tokenizer.ggml.add_bos_token", true).unwrap();
    w.metadata("tokenizer.chat_template", "{{ messages }}")
        .unwrap();
    w.tensor_f32("token_embd.weight", &[8, 2000], &zeros(16000))
        .unwrap();
    for layer in 0..2 {
        w.tensor_f32(format!("blk.{layer}.attn_q.weight"), &[8, 8], &zeros(64))
            .unwrap();
        w.tensor_f32(format!("blk.{layer}.attn_k.weight"), &[8, 4], &zeros(32))
            .unwrap();
        w.tensor_f32(format!("blk.{layer}.attn_norm.weight"), &[8], &zeros(8))
            .unwrap();
    }
    w.tensor_f32("output_norm.weight", &[8], &zeros(8)).unwrap();
    w.tensor_f32("output.weight", &[8, 2000], &zeros(16000))
        .unwrap();
    w
}

/// A file with one metadata entry `a` of `value`, for patching its encoding.
fn one_entry(value: impl Into<MetaValue>) -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.metadata("a", value).unwrap();
    w.to_bytes()
}

/// Byte offsets in [`one_entry`]: counts, then key "a" (8 + 1 bytes), value type, value.
const TENSOR_COUNT_AT: usize = 8;
const KV_COUNT_AT: usize = 16;
const VALUE_TYPE_AT: usize = 33;
const VALUE_AT: usize = 37;

fn patch(bytes: &mut [u8], at: usize, with: &[u8]) {
    bytes[at..at + with.len()].copy_from_slice(with);
}

fn malformed_reason(result: Result<GgufInfo, GgufError>) -> String {
    match result {
        Err(GgufError::Malformed { reason, .. }) => reason,
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[test]
fn reads_shape_and_sizes() {
    let info = parse(&tiny_model().to_bytes()).unwrap();
    assert_eq!(info.version, 3);
    assert_eq!(info.tensor_count, 9);
    assert_eq!(info.architecture.as_deref(), Some("llama"));
    assert_eq!(info.name.as_deref(), Some("Tiny"));
    assert_eq!(info.file_type.as_deref(), Some("F32"));
    assert_eq!(info.context_length, Some(128));
    assert_eq!(info.block_count, Some(2));
    assert_eq!(info.embedding_length, Some(8));
    assert_eq!((info.head_count, info.head_count_kv), (Some(2), Some(1)));
    assert_eq!(info.head_count_kv_per_layer, vec![1, 1]);
    assert_eq!((info.head_dim_k, info.head_dim_v), (Some(4), Some(4)));
    assert_eq!(info.vocab_size, Some(2000));
    assert!(info.has_chat_template);
    assert_eq!(info.chat_template(), Some("{{ messages }}"));
    assert!(!info.tied_embeddings);
    assert_eq!(info.parameter_count, 16000 * 2 + 2 * (64 + 32 + 8) + 8);
    assert_eq!(info.layer_bytes, vec![(64 + 32 + 8) * 4; 2]);
    assert_eq!(info.input_bytes, 64000);
    assert_eq!(info.output_bytes, 64000 + 32);
    assert_eq!(info.tensor_bytes, 64000 * 2 + 32 + 2 * 416);
    assert_eq!(info.data_offset % 32, 0);
    let q = info
        .tensors
        .iter()
        .find(|t| t.name == "blk.0.attn_q.weight")
        .unwrap();
    assert_eq!(
        (q.shape.clone(), q.bytes, q.ggml_type.name()),
        (vec![8, 8], 256, "F32")
    );
    assert_eq!(
        q.offset,
        info.data_offset + 64000,
        "after token_embd (64000 is aligned)"
    );
    assert_eq!(
        info.get("tokenizer.ggml.add_bos_token"),
        Some(&MetaValue::Bool(true))
    );
    assert_eq!(
        info.get("llama.rope.freq_base"),
        Some(&MetaValue::F32(10000.0))
    );
}

#[test]
fn serialization_summarises_vocab_and_hides_template() {
    let info = parse(&tiny_model().to_bytes()).unwrap();
    let json = serde_json::to_value(&info).unwrap();
    assert_eq!(
        json["metadata"]["tokenizer.ggml.tokens"],
        serde_json::json!({"omitted": "array of string", "len": 2000})
    );
    assert_eq!(
        json["metadata"]["tokenizer.chat_template"],
        serde_json::json!({"omitted": "string", "len": 14})
    );
    assert_eq!(json["has_chat_template"], true);
    assert_eq!(json["tensors"][0]["ggml_type"], "F32");
    assert!(!json.to_string().contains("{{ messages }}"));
}

#[test]
fn per_layer_kv_heads_and_explicit_head_dims() {
    let mut w = GgufWriter::new();
    w.metadata("general.architecture", "x").unwrap();
    w.metadata("x.block_count", 3u32).unwrap();
    w.metadata("x.embedding_length", 64u32).unwrap();
    w.metadata("x.attention.head_count", vec![4u32, 4, 4])
        .unwrap();
    w.metadata("x.attention.head_count_kv", vec![2u32, 0, 4])
        .unwrap();
    w.metadata("x.attention.key_length", 32u32).unwrap();
    w.metadata("x.attention.value_length", 24u32).unwrap();
    w.metadata("x.vocab_size", 77u32).unwrap();
    w.tensor_f32("token_embd.weight", &[4, 3], &zeros(12))
        .unwrap();
    let info = parse(&w.to_bytes()).unwrap();
    assert_eq!(info.head_count, Some(4));
    assert_eq!(info.head_count_kv, Some(4));
    assert_eq!(info.head_count_kv_per_layer, vec![2, 0, 4]);
    assert_eq!((info.head_dim_k, info.head_dim_v), (Some(32), Some(24)));
    assert_eq!(info.vocab_size, Some(77));
    assert!(info.tied_embeddings);
    assert_eq!(
        info.get("x.attention.head_count_kv"),
        Some(&MetaValue::from(vec![2u32, 0, 4]))
    );
}

#[test]
fn file_type_unknown_is_named() {
    let mut w = GgufWriter::new();
    w.metadata("general.file_type", 999u32).unwrap();
    assert_eq!(
        parse(&w.to_bytes()).unwrap().file_type.as_deref(),
        Some("unknown (999)")
    );
}

#[test]
fn truncated_data_is_reported_with_sizes() {
    let bytes = tiny_model().to_bytes();
    let info = parse(&bytes).unwrap();
    let last = info.tensors.last().unwrap();
    let needed = last.offset + last.bytes;
    let cut = &bytes[..(needed - 1) as usize];
    let err = parse(cut).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{LABEL}: truncated: expected {needed} bytes, file has {}",
            needed - 1
        )
    );
    // Cut inside the last tensor info (53 bytes long, ending under 32 bytes before the data).
    let cut = info.data_offset - 40;
    match parse(&bytes[..cut as usize]) {
        Err(GgufError::Truncated {
            expected, actual, ..
        }) if actual == cut => {
            assert!(expected > cut && expected <= info.data_offset, "{expected}")
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
}

#[test]
fn wrong_magic_and_versions_are_refused() {
    let mut bytes = one_entry(1u32);
    bytes[..4].copy_from_slice(b"GGML");
    let err = parse(&bytes).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{LABEL} is not a GGUF file: it starts with \"GGML\", not \"GGUF\"")
    );
    assert!(matches!(parse(b"GG"), Err(GgufError::NotGguf { .. })));
    let mut bytes = one_entry(1u32);
    patch(&mut bytes, 4, &4u32.to_le_bytes());
    let err = parse(&bytes).unwrap_err();
    assert!(
        err.to_string().contains("unsupported GGUF version 4"),
        "{err}"
    );
    patch(&mut bytes, 4, &3u32.to_be_bytes());
    let err = parse(&bytes).unwrap_err();
    assert!(err.to_string().contains("big-endian"), "{err}");
    patch(&mut bytes, 4, &2u32.to_le_bytes());
    assert_eq!(parse(&bytes).unwrap().version, 2);
}

#[test]
fn absurd_counts_and_lengths_fail_before_allocating() {
    let base = one_entry("text");
    let mut bytes = base.clone();
    patch(&mut bytes, KV_COUNT_AT, &u64::MAX.to_le_bytes());
    assert!(malformed_reason(parse(&bytes)).contains("metadata entries cannot fit"));
    let mut bytes = base.clone();
    patch(&mut bytes, TENSOR_COUNT_AT, &(1u64 << 60).to_le_bytes());
    assert!(malformed_reason(parse(&bytes)).contains("tensor infos cannot fit"));
    let mut bytes = base.clone();
    patch(&mut bytes, VALUE_AT, &(1u64 << 40).to_le_bytes());
    assert!(malformed_reason(parse(&bytes)).contains("exceeds the"));
    let mut bytes = base;
    patch(&mut bytes, VALUE_AT, &1000u64.to_le_bytes());
    let err = parse(&bytes).unwrap_err();
    assert!(
        matches!(err, GgufError::Truncated { expected: 1045, .. }),
        "{err}"
    );

    let mut bytes = one_entry(vec![1u32, 2, 3]);
    patch(&mut bytes, VALUE_AT + 4, &(u64::MAX / 2).to_le_bytes());
    assert!(malformed_reason(parse(&bytes)).contains("cannot fit in the remaining"));
}

#[test]
fn unknown_types_are_named() {
    let mut bytes = one_entry(1u32);
    patch(&mut bytes, VALUE_TYPE_AT, &13u32.to_le_bytes());
    let err = parse(&bytes).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{LABEL}: metadata key 'a' has unknown value type 13")
    );
    let mut bytes = one_entry(vec![1u32]);
    patch(&mut bytes, VALUE_AT, &99u32.to_le_bytes());
    assert!(matches!(
        parse(&bytes),
        Err(GgufError::UnknownValueType { type_id: 99, .. })
    ));

    let mut w = GgufWriter::new();
    w.tensor_f32("t", &[2], &[1.0, 2.0]).unwrap();
    let mut bytes = w.to_bytes();
    // Header (24) + name (8 + 1) + n_dims (4) + one dim (8) = the type field.
    patch(&mut bytes, 45, &31u32.to_le_bytes());
    let err = parse(&bytes).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{LABEL}: tensor 't' has unknown ggml type 31")
    );
}

#[test]
fn inconsistent_tensors_are_refused() {
    let mut w = GgufWriter::new();
    w.tensor_f32("t", &[2], &[1.0, 2.0]).unwrap();
    let good = w.to_bytes();
    let mut bytes = good.clone();
    patch(&mut bytes, 49, &4u64.to_le_bytes());
    assert!(malformed_reason(parse(&bytes)).contains("not a multiple of the alignment 32"));
    let mut bytes = good.clone();
    patch(&mut bytes, 45, &2u32.to_le_bytes());
    assert!(malformed_reason(parse(&bytes)).contains("does not split into Q4_0 blocks of 32"));
    let mut bytes = good.clone();
    patch(&mut bytes, 33, &5u32.to_le_bytes());
    assert!(malformed_reason(parse(&bytes)).contains("5 dimensions"));
    let mut bytes = good;
    patch(&mut bytes, 49, &(u64::MAX - 31).to_le_bytes());
    assert!(matches!(parse(&bytes), Err(GgufError::Malformed { .. })));

    let mut w = GgufWriter::new();
    w.metadata("general.architecture", "llama").unwrap();
    w.metadata("llama.block_count", u64::MAX).unwrap();
    w.tensor_f32("blk.4000000000.x", &[1], &[1.0]).unwrap();
    assert!(malformed_reason(parse(&w.to_bytes())).contains("layer 4000000000"));
}

#[test]
fn bad_alignment_and_duplicates_are_refused() {
    let mut w = GgufWriter::new();
    w.metadata("general.alignment", 64u32).unwrap();
    w.tensor_f32("t", &[1], &[1.0]).unwrap();
    let aligned = parse(&w.to_bytes()).unwrap();
    assert_eq!((aligned.alignment, aligned.data_offset % 64), (64, 0));
    let mut odd = w.to_bytes();
    let value_at = 24 + 8 + "general.alignment".len() + 4;
    patch(&mut odd, value_at, &48u32.to_le_bytes());
    assert!(malformed_reason(parse(&odd)).contains("power-of-two"));

    // Two entries both keyed "a": patch a second key "b" into "a".
    let mut w = GgufWriter::new();
    w.metadata("a", 1u32).unwrap();
    w.metadata("b", 2u32).unwrap();
    let mut bytes = w.to_bytes();
    patch(&mut bytes, VALUE_AT + 4 + 8, b"a");
    assert!(malformed_reason(parse(&bytes)).contains("duplicate metadata key 'a'"));
}

#[test]
fn reads_from_disk_and_names_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    tiny_model().write(&path).unwrap();
    let info = GgufInfo::read(&path).unwrap();
    assert_eq!(info.file_size, std::fs::metadata(&path).unwrap().len());
    assert_eq!(info.path, path);
    let missing = dir.path().join("missing.gguf");
    let err = GgufInfo::read(&missing).unwrap_err();
    assert!(matches!(err, GgufError::Io { .. }));
    assert!(err.to_string().contains("missing.gguf"), "{err}");
}

/// Counts the bytes read through it.
struct Counting<R> {
    inner: R,
    read: std::rc::Rc<std::cell::Cell<u64>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }
}

impl<R: Seek> Seek for Counting<R> {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(pos)
    }
}

#[test]
fn tensor_data_is_never_read() {
    let mut w = tiny_model();
    w.tensor_f32("big", &[1024, 1024], &zeros(1 << 20)).unwrap();
    let bytes = w.to_bytes();
    let read = std::rc::Rc::default();
    let source = Counting {
        inner: Cursor::new(&bytes),
        read: std::rc::Rc::clone(&read),
    };
    let info = GgufInfo::from_reader(source, bytes.len() as u64, Path::new(LABEL)).unwrap();
    assert!(bytes.len() > 4 << 20);
    // At most one buffer fill (64 KiB) past the header.
    assert!(
        read.get() <= info.data_offset + (64 << 10),
        "read {} bytes",
        read.get()
    );
}

#[test]
fn no_single_byte_corruption_panics() {
    let mut w = GgufWriter::new();
    w.metadata("general.architecture", "llama").unwrap();
    w.metadata("llama.block_count", 1u32).unwrap();
    w.metadata("llama.attention.head_count_kv", vec![1u32])
        .unwrap();
    w.metadata("tokenizer.ggml.tokens", vec!["a", "b"]).unwrap();
    w.tensor_f32("token_embd.weight", &[2, 2], &zeros(4))
        .unwrap();
    w.tensor_f32("blk.0.w", &[2], &zeros(2)).unwrap();
    let good = w.to_bytes();
    let header_end = parse(&good).unwrap().data_offset as usize;
    let mut failures = 0;
    for at in 0..header_end {
        for byte in [0x00, 0x01, 0x7f, 0xff] {
            let mut bytes = good.clone();
            bytes[at] = byte;
            failures += usize::from(parse(&bytes).is_err());
        }
    }
    assert!(
        failures > header_end,
        "most corruptions are detected: {failures}"
    );
}
