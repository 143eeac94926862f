//! Tests against the real all-MiniLM-L6-v2 int8 model and ONNX Runtime. They are ignored by
//! default and fail (never skip) when the files are missing; `make test-onnx` fetches them
//! with `inferno pull minilm`: `INFERNO_ONNX_MODEL` names `model.onnx`, `INFERNO_ONNX_TOKENIZER`
//! its `tokenizer.json`, `ORT_DYLIB_PATH` `libonnxruntime.so`. Reference vectors come from `tests/fixtures/onnx/make_reference.py`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::*;

#[derive(Deserialize)]
struct Reference {
    sentences: Vec<String>,
    token_counts: Vec<usize>,
    paraphrases: Vec<[usize; 2]>,
    unrelated: Vec<[usize; 2]>,
    embeddings: Vec<Vec<f32>>,
}

fn reference() -> Reference {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/onnx/reference.json"
    );
    let text = std::fs::read_to_string(path).expect("tests/fixtures/onnx/reference.json");
    serde_json::from_str(&text).expect("reference.json parses")
}

fn required_file(var: &str) -> PathBuf {
    let path = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        panic!("{var} is not set; run these tests via `make test-onnx`, which fetches the files")
    });
    assert!(
        path.is_file(),
        "{} (from {var}) does not exist",
        path.display()
    );
    path
}

fn config() -> EmbedderConfig {
    let mut config = EmbedderConfig::new(
        required_file("INFERNO_ONNX_MODEL"),
        required_file("INFERNO_ONNX_TOKENIZER"),
    );
    config.runtime = Some(required_file(RUNTIME_ENV_VAR));
    config
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
#[ignore = "needs the MiniLM ONNX model and onnxruntime; run via make test-onnx"]
fn matches_the_python_reference() {
    let reference = reference();
    let mut embedder = OnnxEmbedder::load(config()).expect("load model");
    assert_eq!(embedder.dimensions(), Some(384));
    let embeddings = embedder.embed(&reference.sentences).expect("embed");
    assert_eq!(embeddings.token_counts, reference.token_counts);
    assert_eq!(
        embeddings.prompt_tokens,
        reference.token_counts.iter().sum::<usize>()
    );
    for (i, (got, want)) in embeddings
        .vectors
        .iter()
        .zip(&reference.embeddings)
        .enumerate()
    {
        assert_eq!(got.len(), 384);
        let distance = 1.0 - cosine(got, want);
        assert!(distance <= 1e-3, "sentence {i}: cosine distance {distance}");
        let norm = got.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "sentence {i}: norm {norm}");
    }
}

#[test]
#[ignore = "needs the MiniLM ONNX model and onnxruntime; run via make test-onnx"]
fn paraphrases_are_closer_than_unrelated_sentences() {
    let reference = reference();
    let mut embedder = OnnxEmbedder::load(config()).expect("load model");
    let v = embedder.embed(&reference.sentences).expect("embed").vectors;
    let similarity = |[a, b]: [usize; 2]| cosine(&v[a], &v[b]);
    let weakest_paraphrase = reference
        .paraphrases
        .iter()
        .map(|&p| similarity(p))
        .fold(1.0, f32::min);
    let closest_unrelated = reference
        .unrelated
        .iter()
        .map(|&p| similarity(p))
        .fold(-1.0, f32::max);
    assert!(
        weakest_paraphrase > closest_unrelated + 0.3,
        "paraphrase {weakest_paraphrase} vs unrelated {closest_unrelated}"
    );
}

/// 64 requests of one to three inputs each, of varied lengths so batches need padding.
fn requests(sentences: &[String]) -> Vec<Vec<String>> {
    (0..64)
        .map(|i| {
            (0..1 + i % 3)
                .map(|j| {
                    let base = &sentences[(i * 5 + j * 3) % sentences.len()];
                    if (i + j) % 4 == 0 {
                        format!("{base} {base}")
                    } else {
                        base.clone()
                    }
                })
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the MiniLM ONNX model and onnxruntime; run via make test-onnx"]
async fn concurrent_requests_get_the_same_vectors_as_sequential_ones() {
    let reference = reference();
    let embedder = OnnxEmbedder::load(config()).expect("load model");
    let limits = BatchLimits {
        max_tokens: 1024,
        max_batch: 16,
    };
    let service = EmbeddingService::spawn(embedder, limits).expect("spawn");
    let requests = requests(&reference.sentences);

    let mut sequential = Vec::new();
    for texts in &requests {
        sequential.push(
            service
                .embed(texts.clone())
                .await
                .expect("sequential embed"),
        );
    }
    let tasks: Vec<_> = requests
        .iter()
        .map(|texts| {
            let service = service.clone();
            let texts = texts.clone();
            tokio::spawn(async move { service.embed(texts).await })
        })
        .collect();
    for ((task, alone), texts) in tasks.into_iter().zip(&sequential).zip(&requests) {
        let together = task.await.expect("task").expect("concurrent embed");
        assert_eq!(together.vectors.len(), texts.len());
        assert_eq!(together.token_counts, alone.token_counts);
        let diff = max_abs_diff(&together.vectors, &alone.vectors);
        assert!(diff <= 1e-5, "batched vectors differ by {diff}");
    }
    assert_eq!(
        service.count_tokens(&requests[0]).expect("count"),
        sequential[0].token_counts
    );
}

#[tokio::test]
#[ignore = "needs the MiniLM ONNX model and onnxruntime; run via make test-onnx"]
async fn over_long_inputs_are_rejected_or_truncated() {
    let long = "token ".repeat(400);
    let texts = vec!["short".to_string(), long];
    let service = EmbeddingService::spawn(
        OnnxEmbedder::load(config()).expect("load"),
        BatchLimits::default(),
    )
    .expect("spawn");
    let err = service
        .embed(texts.clone())
        .await
        .expect_err("402 tokens > 256");
    assert_eq!(
        err,
        OnnxError::InputTooLong {
            index: 1,
            tokens: 402,
            limit: 256
        }
    );
    // The worker survives a rejected request.
    assert_eq!(
        service
            .embed(vec!["short".into()])
            .await
            .expect("still serving")
            .vectors
            .len(),
        1
    );

    let mut truncating = config();
    truncating.truncate = true;
    let mut embedder = OnnxEmbedder::load(truncating).expect("load");
    let embeddings = embedder.embed(&texts).expect("truncated");
    assert_eq!(embeddings.token_counts, vec![3, 256]);
}

#[test]
#[ignore = "needs the MiniLM ONNX model and onnxruntime; run via make test-onnx"]
fn load_errors_name_the_missing_or_broken_file() {
    let mut missing_runtime = config();
    missing_runtime.runtime = Some("/nonexistent/libonnxruntime.so.1.32.0".into());
    let err = OnnxEmbedder::load(missing_runtime).expect_err("no runtime");
    assert!(matches!(err, OnnxError::RuntimeMissing { .. }), "{err:?}");
    assert!(err.to_string().contains(RUNTIME_SOURCE), "{err}");

    let mut missing_tokenizer = config();
    missing_tokenizer.tokenizer = "/nonexistent/tokenizer.json".into();
    let err = OnnxEmbedder::load(missing_tokenizer).expect_err("no tokenizer");
    assert!(matches!(err, OnnxError::TokenizerMissing { .. }), "{err:?}");

    let dir = tempfile::tempdir().expect("temp dir");
    let model = std::fs::read(config().model).expect("read model");
    // A download cut short and a file that is not ONNX at all.
    for (name, bytes) in [
        ("truncated.onnx", &model[..model.len() / 3]),
        ("text.onnx", b"hello"),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).expect("write corrupt model");
        let mut corrupt = config();
        corrupt.model = path.clone();
        match OnnxEmbedder::load(corrupt).expect_err("corrupt model") {
            OnnxError::ModelInvalid {
                path: reported,
                reason,
            } => {
                assert_eq!(reported, path);
                assert!(!reason.is_empty());
            }
            other => panic!("{name}: unexpected {other:?}"),
        }
    }
}

#[test]
#[ignore = "needs the MiniLM ONNX model and onnxruntime; run via make test-onnx"]
fn info_describes_inputs_outputs_and_opset() {
    let config = config();
    let size = std::fs::metadata(&config.model)
        .expect("model metadata")
        .len();
    let info = OnnxEmbedder::load(config)
        .expect("load")
        .info()
        .expect("info");
    assert_eq!(info.file_size, size);
    let names: Vec<&str> = info.inputs.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["input_ids", "attention_mask", "token_type_ids"]);
    assert_eq!(
        info.inputs[0].to_string(),
        "input_ids: i64 [batch, sequence]"
    );
    assert_eq!(info.outputs.len(), 1);
    assert_eq!(info.outputs[0].shape.last(), Some(&Dimension::Fixed(384)));
    assert!(
        info.opset.is_some_and(|v| v >= 11),
        "opset {:?}",
        info.opset
    );
    assert_eq!(info.dimensions, Some(384));
    println!("{info}");
}

/// Embeddings per second; prints figures, asserts only that every call succeeded.
/// `cargo test --release --lib onnx::tests::throughput -- --ignored --nocapture`;
/// `INFERNO_ONNX_THREADS=n` sets ONNX Runtime's intra-op threads (default: one per core).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the MiniLM ONNX model and onnxruntime; run via make test-onnx"]
async fn throughput() {
    let sentences = reference().sentences;
    let budget = Duration::from_secs(3);
    let mut config = config();
    config.intra_threads = std::env::var("INFERNO_ONNX_THREADS")
        .ok()
        .map(|n| n.parse().expect("INFERNO_ONNX_THREADS is a number"));
    println!("intra-op threads: {:?}", config.intra_threads);
    let mut embedder = OnnxEmbedder::load(config).expect("load");
    for batch in [1usize, 32] {
        let texts: Vec<String> = sentences.iter().cycle().take(batch).cloned().collect();
        embedder.embed(&texts).expect("warm-up");
        let (start, mut done) = (Instant::now(), 0usize);
        while start.elapsed() < budget {
            done += embedder.embed(&texts).expect("embed").vectors.len();
        }
        let rate = done as f64 / start.elapsed().as_secs_f64();
        println!("direct, batch {batch:>2}: {rate:8.1} embeddings/s");
    }

    let service = EmbeddingService::spawn(embedder, BatchLimits::default()).expect("spawn");
    let (start, mut done) = (Instant::now(), 0usize);
    while start.elapsed() < budget {
        let calls: Vec<_> = sentences
            .iter()
            .cycle()
            .take(32)
            .map(|s| {
                let service = service.clone();
                let text = vec![s.clone()];
                tokio::spawn(async move { service.embed(text).await })
            })
            .collect();
        for call in calls {
            done += call.await.expect("task").expect("embed").vectors.len();
        }
    }
    let rate = done as f64 / start.elapsed().as_secs_f64();
    println!("service, 32 concurrent single-text requests: {rate:8.1} embeddings/s");
}
