//! Several real models in one server: SmolLM2 pinned, Gemma 3 270M on demand; eviction by
//! idle time and by LRU; unload waiting for a running stream; broken files failing alone; the
//! admin API and its authorization.

use std::time::Duration;

use inferno::config::Config;
use inferno::models::spec::ModelEntry;
use serde_json::{Value, json};

use crate::common::{
    SERIAL, TestServer, chat_body, client, content, gemma, get_json, model, post, start_server_in,
    test_config, wait_idle,
};

fn entry(name: &str, path: &std::path::Path, pinned: bool) -> ModelEntry {
    ModelEntry {
        name: Some(name.to_owned()),
        path: Some(path.display().to_string()),
        pinned,
        ..Default::default()
    }
}

/// A server with SmolLM2 as `smol` and Gemma as `gemma`, models dir `dir`.
fn two_models(dir: &std::path::Path, tweak: impl FnOnce(&mut Config)) -> TestServer {
    let mut config = Config {
        models_dir: dir.to_owned(),
        parallel: 2,
        models: Some(vec![
            entry("smol", &model().path, false),
            entry("gemma", &gemma().path, false),
        ]),
        ..test_config()
    };
    tweak(&mut config);
    start_server_in(None, config)
}

async fn admin_models(server: &TestServer) -> Vec<Value> {
    get_json(server, "/admin/models").await["data"]
        .as_array()
        .unwrap()
        .clone()
}

async fn state_of(server: &TestServer, id: &str) -> String {
    admin_models(server)
        .await
        .into_iter()
        .find(|m| m["id"] == id)
        .map(|m| m["state"].as_str().unwrap().to_owned())
        .unwrap_or_else(|| panic!("{id} is not listed"))
}

/// Polls (bounded) until `id` is in `state`: unloads finish on background tasks.
async fn wait_state(server: &TestServer, id: &str, state: &str) {
    for _ in 0..500 {
        if state_of(server, id).await == state {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "{id} never became {state}: {:?}",
        admin_models(server).await
    );
}

async fn complete(server: &TestServer, model: &str) -> Value {
    let body = json!({"model": model, "prompt": "The capital of France is", "max_tokens": 6, "temperature": 0});
    let (status, reply) = post(server, "/v1/completions", &body).await;
    assert_eq!(status, 200, "{reply}");
    reply
}

#[tokio::test]
async fn two_models_answer_each_with_its_own_weights() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let server = two_models(dir.path(), |_| {});
    let models = get_json(&server, "/v1/models").await;
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["smol", "gemma"]);
    assert!(
        models["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["loaded"] == false)
    );

    let smol = complete(&server, "smol").await;
    let gemma = complete(&server, "gemma").await;
    assert_eq!(smol["model"], "smol");
    assert_eq!(gemma["model"], "gemma");
    let (smol_text, gemma_text) = (
        smol["choices"][0]["text"].as_str().unwrap(),
        gemma["choices"][0]["text"].as_str().unwrap(),
    );
    assert_ne!(
        smol_text, gemma_text,
        "different weights, different greedy text"
    );
    // Different tokenizers count the same prompt differently.
    assert_ne!(
        smol["usage"]["prompt_tokens"], gemma["usage"]["prompt_tokens"],
        "{smol} {gemma}"
    );
    // Each answers the same again: requests reach their own model, loaded once.
    assert_eq!(
        complete(&server, "smol").await["choices"][0]["text"],
        smol_text
    );
    assert_eq!(
        complete(&server, "gemma").await["choices"][0]["text"],
        gemma_text
    );
    let admin = admin_models(&server).await;
    assert!(admin.iter().all(|m| m["state"] == "loaded"), "{admin:?}");
    assert!(
        admin
            .iter()
            .all(|m| m["memory_bytes"].as_u64().unwrap() > 50_000_000),
        "{admin:?}"
    );
    let chat = chat_body("smol", "What is the capital of France?", 8);
    let (status, reply) = post(&server, "/v1/chat/completions", &chat).await;
    assert_eq!(status, 200);
    assert!(content(&reply).contains("Paris"), "{reply}");
}

#[tokio::test]
async fn least_recently_used_model_leaves_for_the_next() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let server = two_models(dir.path(), |config| config.max_loaded_models = 1);
    complete(&server, "smol").await;
    assert_eq!(state_of(&server, "smol").await, "loaded");
    complete(&server, "gemma").await;
    assert_eq!(state_of(&server, "gemma").await, "loaded");
    assert_eq!(
        state_of(&server, "smol").await,
        "available",
        "evicted for gemma"
    );
    complete(&server, "smol").await;
    assert_eq!(state_of(&server, "gemma").await, "available", "and back");
}

#[tokio::test]
async fn idle_models_are_unloaded_and_pinned_ones_stay() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let server = two_models(dir.path(), |config| {
        config.keep_alive_secs = 1;
        if let Some(models) = config.models.as_mut() {
            models[0].pinned = true;
        }
    });
    assert_eq!(
        state_of(&server, "smol").await,
        "loaded",
        "pinned: loaded at start"
    );
    complete(&server, "gemma").await;
    complete(&server, "smol").await;
    wait_state(&server, "gemma", "available").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        state_of(&server, "smol").await,
        "loaded",
        "pinned never evicted"
    );
    let response = client()
        .post(server.url("/admin/models/smol/unload"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "model_pinned");
}

#[tokio::test]
async fn unload_waits_for_the_running_stream() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let server = two_models(dir.path(), |_| {});
    let mut body = chat_body("smol", "Count to one hundred.", 60);
    body["stream"] = json!(true);
    body["ignore_eos"] = json!(true);
    let mut stream = client()
        .post(server.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let mut text = String::from_utf8_lossy(&stream.chunk().await.unwrap().unwrap()).into_owned();
    let unload = tokio::spawn(
        client()
            .post(server.url("/admin/models/smol/unload"))
            .send(),
    );
    wait_state(&server, "smol", "unloading").await;
    while let Some(chunk) = stream.chunk().await.unwrap() {
        assert!(!unload.is_finished(), "the unload waits for the stream");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.contains("\"finish_reason\":\"length\""), "{text}");
    assert!(
        text.trim_end().ends_with("data: [DONE]"),
        "the stream ran to its end"
    );
    let response = unload.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(state_of(&server, "smol").await, "available");
    // The next request loads it again.
    complete(&server, "smol").await;
    wait_idle(&server).await;
}

#[tokio::test]
async fn broken_files_fail_alone_with_clear_errors() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let real = std::fs::read(&model().path).unwrap();
    std::fs::write(dir.path().join("truncated.gguf"), &real[..real.len() / 2]).unwrap();
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(dir.path().join("noise.gguf"), noise).unwrap();
    let server = two_models(dir.path(), |_| {});
    for (name, expected) in [("truncated", "truncated"), ("noise", "GGUF")] {
        let body = json!({"model": name, "prompt": "hi", "max_tokens": 2});
        let (status, reply) = post(&server, "/v1/completions", &body).await;
        assert_eq!(status, 500, "{reply}");
        assert_eq!(reply["error"]["code"], "model_load_failed");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{name}: {message}");
        assert_eq!(state_of(&server, name).await, "failed");
    }
    complete(&server, "smol").await;
    let health = client().get(server.url("/health")).send().await.unwrap();
    assert_eq!(
        health.status(),
        200,
        "on-demand failures do not fail the server"
    );
    let info = get_json(&server, "/admin/models/gemma").await;
    assert_eq!(info["gguf"]["architecture"], "gemma3", "{info}");
    assert_eq!(info["model"]["state"], "available");
}

#[tokio::test]
async fn the_admin_api_needs_an_admin_key() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.toml");
    std::fs::write(
        &keys,
        "[[keys]]\nid = \"ops\"\nsecret = \"sk-inf-ops-0123456789abcdef0123456789\"\nadmin = true\n\n[[keys]]\nid = \"app\"\nsecret = \"sk-inf-app-0123456789abcdef0123456789\"\n",
    )
    .unwrap();
    let models_dir = dir.path().join("models");
    std::fs::create_dir(&models_dir).unwrap();
    let server = two_models(&models_dir, |config| config.api_keys_file = Some(keys));
    let load = |key: &'static str| {
        client()
            .post(server.url("/admin/models/smol/load"))
            .bearer_auth(key)
            .send()
    };
    assert_eq!(
        load("sk-inf-wrong-0123456789abcdef0123456789")
            .await
            .unwrap()
            .status(),
        401
    );
    let denied = load("sk-inf-app-0123456789abcdef0123456789").await.unwrap();
    assert_eq!(denied.status(), 403);
    let error: Value = denied.json().await.unwrap();
    assert_eq!(error["error"]["code"], "admin_required");
    let granted = load("sk-inf-ops-0123456789abcdef0123456789").await.unwrap();
    assert_eq!(granted.status(), 200);
    let list = client()
        .get(server.url("/admin/models"))
        .bearer_auth("sk-inf-ops-0123456789abcdef0123456789")
        .send()
        .await
        .unwrap();
    let list: Value = list.json().await.unwrap();
    let smol = &list["data"][0];
    assert_eq!(
        (smol["id"].as_str(), smol["state"].as_str()),
        (Some("smol"), Some("loaded"))
    );
    assert!(smol["load_seconds"].as_f64().unwrap() > 0.0);
}

#[test]
fn models_info_reads_both_real_headers() {
    // Expected values: llama.cpp's own reader (the `gguf` Python package of the ggml project)
    // on the same files, and llama.cpp's load log (n_layer, n_head, n_embd, n_vocab).
    let expect = [
        (
            model().path.clone(),
            json!({"architecture": "llama", "file_type": "Q4_1", "parameter_count": 134515008u64,
                   "context_length": 8192, "block_count": 30, "embedding_length": 576,
                   "head_count": 9, "head_count_kv": 3, "head_dim_k": 64, "vocab_size": 49152,
                   "has_chat_template": true, "tensor_count": 272, "tensor_bytes": 96576768u64}),
        ),
        (
            gemma().path.clone(),
            json!({"architecture": "gemma3", "file_type": "Q4_K_M", "parameter_count": 268098176u64,
                   "context_length": 32768, "block_count": 18, "embedding_length": 640,
                   "head_count": 4, "head_count_kv": 1, "head_dim_k": 256, "vocab_size": 262144,
                   "has_chat_template": false, "tensor_count": 236, "tensor_bytes": 246587904u64}),
        ),
    ];
    for (path, expected) in expect {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_inferno"))
            .args(["models", "info", "--json"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let info: Value = serde_json::from_slice(&output.stdout).unwrap();
        for (key, value) in expected.as_object().unwrap() {
            assert_eq!(&info[key], value, "{}: {key}", path.display());
        }
        let layers = info["layer_bytes"].as_array().unwrap();
        assert_eq!(layers.len() as u64, info["block_count"].as_u64().unwrap());
        let human = std::process::Command::new(env!("CARGO_BIN_EXE_inferno"))
            .args(["models", "info"])
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&human.stdout);
        assert!(
            text.contains("architecture") && text.contains("per layer"),
            "{text}"
        );
    }
    let plan = std::process::Command::new(env!("CARGO_BIN_EXE_inferno"))
        .args([
            "plan",
            "--gpu-mem",
            "8GiB",
            "--ctx",
            "4096",
            "--parallel",
            "4",
            "--json",
        ])
        .arg(&model().path)
        .output()
        .unwrap();
    assert!(
        plan.status.success(),
        "{}",
        String::from_utf8_lossy(&plan.stderr)
    );
    let plan: Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(
        plan["n_gpu_layers"], 31,
        "a 98 MB model fits 8 GiB whole: {plan}"
    );
}

#[tokio::test]
async fn a_quantized_kv_cache_takes_less_memory_and_still_answers() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let q8 = ModelEntry {
        kv_type: Some("q8_0".parse().unwrap()),
        ..entry("smol-q8", &model().path, false)
    };
    let config = Config {
        models_dir: dir.path().to_owned(),
        parallel: 2,
        models: Some(vec![entry("smol-f16", &model().path, false), q8]),
        ..test_config()
    };
    let server = start_server_in(None, config);
    let mut texts = Vec::new();
    for id in ["smol-f16", "smol-q8"] {
        let body = chat_body(id, "What is the capital of France?", 8);
        let (status, reply) = post(&server, "/v1/chat/completions", &body).await;
        assert_eq!(status, 200, "{reply}");
        texts.push(content(&reply));
    }
    assert!(texts[0].contains("Paris"), "{texts:?}");
    // A quantized cache changes a 135M model's greedy answer (seen: French instead of
    // "Paris"); it must still answer.
    assert!(!texts[1].trim().is_empty(), "{texts:?}");
    let memory = |id: &'static str| {
        let server = server.clone();
        async move {
            admin_models(&server)
                .await
                .into_iter()
                .find(|m| m["id"] == id)
                .unwrap()["memory_bytes"]
                .as_u64()
                .unwrap()
        }
    };
    let (f16, q8) = (memory("smol-f16").await, memory("smol-q8").await);
    // 30 layers x 3 KV heads x 128 values x 1024 tokens x 2 sequences: 45 MiB in f16, 34/64 of
    // that in q8_0.
    let kv_f16 = 30 * 3 * 128 * 1024 * 2 * 2;
    assert_eq!(f16 - q8, kv_f16 - kv_f16 * 34 / 64, "f16 {f16}, q8_0 {q8}");
}

#[test]
fn models_list_and_rm_manage_the_models_dir() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = inferno::models::gguf::GgufWriter::new();
    writer.metadata("general.architecture", "llama").unwrap();
    writer
        .tensor_f32("token_embd.weight", &[4, 2], &[0.5; 8])
        .unwrap();
    writer.write(&dir.path().join("tiny.gguf")).unwrap();
    let inferno = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_inferno"))
            .args(args)
            .arg("--models-dir")
            .arg(dir.path())
            .output()
            .unwrap()
    };
    let listed = inferno(&["models", "list", "--json"]);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let models: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(models[0]["name"], "tiny", "{models}");
    let size = std::fs::metadata(dir.path().join("tiny.gguf"))
        .unwrap()
        .len();
    assert_eq!(models[0]["size"], size);
    let removed = inferno(&["models", "rm", "tiny"]);
    assert!(
        removed.status.success(),
        "{}",
        String::from_utf8_lossy(&removed.stderr)
    );
    assert!(!dir.path().join("tiny.gguf").exists());
    let again = inferno(&["models", "rm", "tiny"]);
    assert!(!again.status.success(), "removing a missing model fails");
    let empty: Value =
        serde_json::from_slice(&inferno(&["models", "list", "--json"]).stdout).unwrap();
    assert_eq!(empty, json!([]));
}
