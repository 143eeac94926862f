//! `POST /v1/embeddings` against the real all-MiniLM-L6-v2 (ONNX, pulled from PyPI with the
//! runtime library by Inferno's own pull code) and SmolLM2 in embedding mode (GGUF, llama.cpp),
//! side by side with SmolLM2 generating text.

use std::sync::OnceLock;

use base64::Engine as _;
use inferno::config::Config;
use inferno::models::embedding_spec::EmbeddingEntry;
use serde_json::{Value, json};

use crate::common::{TestServer, client, get_json, model, post, start_server_in, test_config};

/// SmolLM2 (pinned), `minilm`, `smol-embed` (SmolLM2 in embedding mode), and `broken`, an
/// embedding model whose tokenizer is missing.
fn server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let broken = EmbeddingEntry {
            name: Some("broken".into()),
            catalog: Some("minilm".into()),
            tokenizer: Some(dir.join("missing-tokenizer.json").display().to_string()),
            ..Default::default()
        };
        let smol_embed = EmbeddingEntry {
            name: Some("smol-embed".into()),
            gguf: Some(model().path.display().to_string()),
            ..Default::default()
        };
        let config = Config {
            models_dir: crate::common::models_dir(),
            embedding_model: Some("minilm".into()),
            embedding_models: Some(vec![broken, smol_embed]),
            ..test_config()
        };
        start_server_in(Some(model().clone()), config)
    })
}

fn vectors(body: &Value) -> Vec<Vec<f32>> {
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            item["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect()
        })
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

const SENTENCES: [&str; 4] = [
    "A man is playing a guitar.",
    "Someone plays an acoustic guitar.",
    "The stock market fell sharply today.",
    "Shares dropped steeply on the exchange.",
];

#[tokio::test]
async fn paraphrases_are_closer_than_unrelated_sentences() {
    let server = server();
    let (status, body) = post(
        server,
        "/v1/embeddings",
        &json!({"model": "minilm", "input": SENTENCES}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "minilm");
    let v = vectors(&body);
    assert_eq!(v.len(), 4);
    assert!(v.iter().all(|x| x.len() == 384));
    let norm: f32 = v[0].iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "normalized: {norm}");
    for (para, unrelated) in [((0, 1), (0, 2)), ((2, 3), (1, 3))] {
        let close = cosine(&v[para.0], &v[para.1]);
        let far = cosine(&v[unrelated.0], &v[unrelated.1]);
        assert!(close > far + 0.3, "paraphrase {close} vs unrelated {far}");
    }
    let usage = &body["usage"];
    assert!(usage["prompt_tokens"].as_u64().unwrap() >= 4 * 5);
    assert_eq!(usage["prompt_tokens"], usage["total_tokens"]);
    let models = get_json(server, "/v1/models").await;
    let minilm = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "minilm")
        .expect("listed");
    assert_eq!(minilm["loaded"], true);
}

#[tokio::test]
async fn base64_carries_the_same_floats() {
    let server = server();
    let request =
        |format: &str| json!({"model": "minilm", "input": SENTENCES[0], "encoding_format": format});
    let (_, floats) = post(server, "/v1/embeddings", &request("float")).await;
    let (status, encoded) = post(server, "/v1/embeddings", &request("base64")).await;
    assert_eq!(status, 200, "{encoded}");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let decoded: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(decoded, vectors(&floats)[0]);
}

#[tokio::test]
async fn concurrent_requests_get_the_vectors_sequential_ones_get() {
    let server = server();
    let texts: Vec<String> = (0..64)
        .map(|i| {
            format!(
                "Sentence number {i} is about {}.",
                ["cats", "rain", "trains", "maths"][i % 4]
            )
        })
        .collect();
    let mut sequential = Vec::new();
    for text in &texts {
        let (status, body) = post(
            server,
            "/v1/embeddings",
            &json!({"model": "minilm", "input": text}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        sequential.push(vectors(&body).remove(0));
    }
    let handles: Vec<_> = texts
        .iter()
        .map(|text| {
            let url = server.url("/v1/embeddings");
            let body = json!({"model": "minilm", "input": text});
            tokio::spawn(async move {
                let body: Value = client()
                    .post(url)
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                vectors(&body).remove(0)
            })
        })
        .collect();
    for (handle, expected) in handles.into_iter().zip(&sequential) {
        let got = handle.await.unwrap();
        let diff = got
            .iter()
            .zip(expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(diff <= 1e-5, "batched result differs by {diff}");
    }
}

#[tokio::test]
async fn bad_requests_get_clear_errors() {
    let server = server();
    let long = "word ".repeat(600);
    for (body, status, param_or_code) in [
        (json!({"model": "minilm", "input": []}), 400, "input"),
        (json!({"model": "minilm", "input": [""]}), 400, "input"),
        (
            json!({"model": "minilm", "input": [[1, 2, 3]]}),
            400,
            "input",
        ),
        (
            json!({"model": "minilm", "input": "x", "dimensions": 128}),
            400,
            "dimensions",
        ),
        (
            json!({"model": "minilm", "input": "x", "encoding_format": "hex"}),
            400,
            "encoding_format",
        ),
        (
            json!({"model": "minilm", "input": "x", "temperature": 1}),
            400,
            "temperature",
        ),
        (
            json!({"model": "minilm", "input": long}),
            400,
            "context_length_exceeded",
        ),
        (
            json!({"model": server.model, "input": "x"}),
            400,
            "model_not_embedding",
        ),
        (
            json!({"model": "nope", "input": "x"}),
            404,
            "model_not_found",
        ),
        (
            json!({"model": "broken", "input": "x"}),
            500,
            "model_load_failed",
        ),
    ] {
        let (got, reply) = post(server, "/v1/embeddings", &body).await;
        assert_eq!(got, status, "{body} -> {reply}");
        let error = &reply["error"];
        assert!(
            error["param"] == param_or_code || error["code"] == param_or_code,
            "{body} -> {reply}"
        );
    }
    let (_, broken) = post(
        server,
        "/v1/embeddings",
        &json!({"model": "broken", "input": "x"}),
    )
    .await;
    assert!(
        broken["error"]["message"]
            .as_str()
            .unwrap()
            .contains("missing-tokenizer.json"),
        "{broken}"
    );
    // The rest keeps serving.
    let (status, _) = post(
        server,
        "/v1/embeddings",
        &json!({"model": "minilm", "input": "ok"}),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_gguf_model_embeds_beside_the_onnx_one() {
    let server = server();
    let request =
        json!({"model": "smol-embed", "input": [SENTENCES[0], SENTENCES[2], SENTENCES[0]]});
    let (status, body) = post(server, "/v1/embeddings", &request).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "smol-embed");
    let v = vectors(&body);
    assert_eq!(v.len(), 3);
    assert!(v.iter().all(|x| x.len() == 576), "SmolLM2's n_embd");
    let norm: f32 = v[1].iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "normalized: {norm}");
    assert!(
        cosine(&v[0], &v[2]) > 0.9999,
        "the same text twice, the same vector"
    );
    assert!(
        cosine(&v[0], &v[1]) < 0.999,
        "different texts, different vectors"
    );
    // Alone, a text gets the vector it got inside the batch.
    let (_, alone) = post(
        server,
        "/v1/embeddings",
        &json!({"model": "smol-embed", "input": SENTENCES[2]}),
    )
    .await;
    assert!(cosine(&vectors(&alone)[0], &v[1]) > 0.999);
    assert!(body["usage"]["prompt_tokens"].as_u64().unwrap() >= 3 * 5);
    let long = "word ".repeat(600);
    let (status, reply) = post(
        server,
        "/v1/embeddings",
        &json!({"model": "smol-embed", "input": long}),
    )
    .await;
    assert_eq!(status, 400, "{reply}");
    assert_eq!(reply["error"]["code"], "context_length_exceeded");
    // The same weights still generate text as the pinned chat model.
    let chat = crate::common::chat_body(&server.model, "What is the capital of France?", 8);
    let (status, _) = post(server, "/v1/chat/completions", &chat).await;
    assert_eq!(status, 200);
}
