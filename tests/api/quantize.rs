//! `inferno quantize`: a tiny random F32 llama model, quantized by the CLI, then served.

use std::path::Path;
use std::process::{Command, Output};

use inferno::models::LocalModel;
use inferno::models::gguf::{GgufInfo, GgufWriter};
use serde_json::json;

use crate::common::{post, start_server_with, test_config};

const BIN: &str = env!("CARGO_BIN_EXE_inferno");

const N_EMBD: u64 = 64;
const N_LAYER: u32 = 2;
const N_HEAD: u32 = 4;
const N_FF: u64 = 128;

/// Deterministic weights in [-0.1, 0.1) (xorshift; the exact values do not matter).
struct Weights(u64);

impl Weights {
    fn take(&mut self, n: u64) -> Vec<f32> {
        (0..n)
            .map(|_| {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                ((self.0 >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
            })
            .collect()
    }
}

/// A SentencePiece-style vocabulary: `<unk>`, `<s>`, `</s>`, the 256 byte tokens, then words,
/// 288 tokens in all (a multiple of 32). Returns (tokens, scores, token types).
fn vocabulary() -> (Vec<String>, Vec<f32>, Vec<i32>) {
    let mut tokens: Vec<String> = ["<unk>", "<s>", "</s>"].map(String::from).to_vec();
    let mut types = vec![2, 3, 3]; // unknown, control, control
    for byte in 0..=255u8 {
        tokens.push(format!("<0x{byte:02X}>"));
        types.push(6); // byte
    }
    let words = [
        "▁", "▁the", "▁a", "▁to", "▁of", "▁and", "▁in", "▁is", "▁it", "▁hello", "▁world", "e", "t",
        "a", "o", "i", "n", "s", "r", "h", "l", "d", "c", "u", "m", "w", "f", "g", "y",
    ];
    for word in words {
        tokens.push(word.to_owned());
        types.push(1); // normal
    }
    assert_eq!(tokens.len(), 288);
    let scores = (0..tokens.len())
        .map(|i| if types[i] == 1 { -(i as f32) } else { 0.0 })
        .collect();
    (tokens, scores, types)
}

/// Writes an F32 llama model with random weights that llama.cpp loads.
fn write_tiny_llama(path: &Path) {
    let (tokens, scores, types) = vocabulary();
    let n_vocab = tokens.len() as u64;
    let mut w = GgufWriter::new();
    w.metadata("general.architecture", "llama").unwrap();
    w.metadata("general.name", "tiny-random-llama").unwrap();
    w.metadata("general.file_type", 0u32).unwrap();
    w.metadata("llama.context_length", 2048u32).unwrap();
    w.metadata("llama.embedding_length", N_EMBD as u32).unwrap();
    w.metadata("llama.block_count", N_LAYER).unwrap();
    w.metadata("llama.feed_forward_length", N_FF as u32)
        .unwrap();
    w.metadata("llama.attention.head_count", N_HEAD).unwrap();
    w.metadata("llama.attention.head_count_kv", N_HEAD).unwrap();
    w.metadata("llama.attention.layer_norm_rms_epsilon", 1e-5f32)
        .unwrap();
    w.metadata("llama.rope.dimension_count", N_EMBD as u32 / N_HEAD)
        .unwrap();
    w.metadata("tokenizer.ggml.model", "llama").unwrap();
    w.metadata("tokenizer.ggml.tokens", tokens).unwrap();
    w.metadata("tokenizer.ggml.scores", scores).unwrap();
    w.metadata("tokenizer.ggml.token_type", types).unwrap();
    w.metadata("tokenizer.ggml.unknown_token_id", 0u32).unwrap();
    w.metadata("tokenizer.ggml.bos_token_id", 1u32).unwrap();
    w.metadata("tokenizer.ggml.eos_token_id", 2u32).unwrap();

    let mut rng = Weights(0x9E37_79B9_7F4A_7C15);
    let ones = vec![1.0f32; N_EMBD as usize];
    let mut matrix = |w: &mut GgufWriter, name: &str, cols: u64, rows: u64| {
        w.tensor_f32(name, &[cols, rows], &rng.take(cols * rows))
            .unwrap();
    };
    matrix(&mut w, "token_embd.weight", N_EMBD, n_vocab);
    for layer in 0..N_LAYER {
        let name = |tensor: &str| format!("blk.{layer}.{tensor}.weight");
        w.tensor_f32(name("attn_norm"), &[N_EMBD], &ones).unwrap();
        for tensor in ["attn_q", "attn_k", "attn_v", "attn_output"] {
            matrix(&mut w, &name(tensor), N_EMBD, N_EMBD);
        }
        w.tensor_f32(name("ffn_norm"), &[N_EMBD], &ones).unwrap();
        matrix(&mut w, &name("ffn_gate"), N_EMBD, N_FF);
        matrix(&mut w, &name("ffn_up"), N_EMBD, N_FF);
        matrix(&mut w, &name("ffn_down"), N_FF, N_EMBD);
    }
    w.tensor_f32("output_norm.weight", &[N_EMBD], &ones)
        .unwrap();
    matrix(&mut w, "output.weight", N_EMBD, n_vocab);
    w.write(path).unwrap();
}

fn quantize(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(BIN)
        .arg("quantize")
        .args(args)
        .args(["--threads", "2"])
        .output()
        .unwrap()
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

#[tokio::test]
async fn quantized_models_are_smaller_and_still_generate() {
    let dir = tempfile::tempdir().unwrap();
    let f32_path = dir.path().join("tiny-f32.gguf");
    write_tiny_llama(&f32_path);
    assert_eq!(
        GgufInfo::read(&f32_path).unwrap().file_type.as_deref(),
        Some("F32")
    );

    let mut sizes = vec![size(&f32_path)];
    for (quant, file_type) in [("q8_0", "Q8_0"), ("q4_0", "Q4_0")] {
        let out = dir.path().join(format!("tiny-{quant}.gguf"));
        let output = quantize(&[
            f32_path.as_os_str(),
            out.as_os_str(),
            "--type".as_ref(),
            quant.as_ref(),
        ]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{quant}: {stderr}");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            stdout.contains(file_type) && stdout.contains("smaller"),
            "{stdout}"
        );
        assert!(
            !dir.path()
                .join(format!("tiny-{quant}.gguf.partial"))
                .exists(),
            "the partial file was renamed"
        );
        let info = GgufInfo::read(&out).unwrap();
        assert_eq!(info.file_type.as_deref(), Some(file_type), "{stdout}");
        sizes.push(size(&out));

        let server = start_server_with(
            LocalModel {
                id: format!("tiny-{quant}"),
                path: out.clone(),
            },
            test_config(),
        );
        let body = json!({
            "model": server.model,
            "prompt": "hello world",
            "max_tokens": 4,
            "ignore_eos": true,
            "temperature": 0,
        });
        let (status, got) = post(&server, "/v1/completions", &body).await;
        assert_eq!(status, 200, "{quant}: {got}");
        assert_eq!(got["usage"]["completion_tokens"], 4, "{quant}: {got}");
        eprintln!("{quant}: {stdout}generated {:?}", got["choices"][0]["text"]);
    }
    eprintln!("sizes f32, q8_0, q4_0: {sizes:?}");
    assert!(
        sizes[0] > sizes[1] && sizes[1] > sizes[2],
        "q4_0 < q8_0 < f32: {sizes:?}"
    );
}

#[test]
fn bad_inputs_and_outputs_are_refused_without_leaving_files() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.gguf");
    std::fs::write(&text, "this is not a model, just some text").unwrap();
    let out = dir.path().join("out.gguf");
    let output = quantize(&[
        text.as_os_str(),
        out.as_os_str(),
        "--type".as_ref(),
        "q4_0".as_ref(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("not a GGUF file"), "{stderr}");
    assert!(!out.exists() && !dir.path().join("out.gguf.partial").exists());

    let model = dir.path().join("tiny.gguf");
    write_tiny_llama(&model);
    let cases: [(&Path, &str, &str); 3] = [
        (model.as_path(), "q4_0", "is the input"),
        (text.as_path(), "q4_0", "--force"),
        (out.as_path(), "f32", "invalid value"),
    ];
    for (target, quant, expected) in cases {
        let output = quantize(&[
            model.as_os_str(),
            target.as_os_str(),
            "--type".as_ref(),
            quant.as_ref(),
        ]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{stderr}");
        assert!(stderr.contains(expected), "{expected}: {stderr}");
    }
    assert_eq!(
        std::fs::read_to_string(&text).unwrap(),
        "this is not a model, just some text",
        "an existing output is left alone without --force"
    );
    assert!(!out.exists());

    // A GGUF header that reads fine but that llama.cpp cannot load: llama.cpp's error.
    let alien = dir.path().join("alien.gguf");
    let mut w = GgufWriter::new();
    w.metadata("general.architecture", "no-such-architecture")
        .unwrap()
        .tensor_f32("token_embd.weight", &[32, 2], &[0.5; 64])
        .unwrap();
    w.write(&alien).unwrap();
    let output = quantize(&[
        alien.as_os_str(),
        out.as_os_str(),
        "--type".as_ref(),
        "q8_0".as_ref(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("could not quantize"), "{stderr}");
    assert!(!out.exists() && !dir.path().join("out.gguf.partial").exists());
}
