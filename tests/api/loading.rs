//! Before a pinned model is ready: `/health` is alive, `/ready` is 503, requests wait for the
//! load; a failed load is reported to requests for that model only.

use std::path::Path;
use std::sync::{Arc, Mutex};

use inferno::backend::fake;
use inferno::config::Config;
use inferno::engine::EngineSettings;
use inferno::http::AppState;
use inferno::models::LocalModel;
use inferno::models::chat_template::ChatTemplate;
use inferno::models::registry::{Loader, Registry, ServedModel};
use inferno::models::spec::ModelSpec;
use serde_json::{Value, json};

use crate::common::{client, test_config};

/// Fake engines; `pending` holds every load until released, `fail` makes loads fail.
struct GatedLoader {
    pending: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    fail: Option<&'static str>,
}

impl Loader for GatedLoader {
    fn footprint(&self, _spec: &ModelSpec, _path: &Path) -> Result<u64, String> {
        Ok(1)
    }

    fn load(&self, spec: &ModelSpec, _path: &Path) -> Result<ServedModel, String> {
        if let Some(gate) = self.pending.lock().unwrap().take() {
            let _ = gate.recv();
        }
        if let Some(message) = self.fail {
            return Err(message.to_owned());
        }
        let settings = EngineSettings {
            parallel: 2,
            batch_tokens: 64,
            ctx_size: 256,
            queue_capacity: 4,
            max_tokens: None,
            max_prompt_tokens: None,
            max_stop: 4,
        };
        let engine = fake::spawn_engine(&spec.id, settings).map_err(|err| err.to_string())?;
        Ok(ServedModel {
            id: spec.id.clone(),
            engine,
            template: ChatTemplate::chatml(),
            created: 0,
        })
    }
}

/// A server whose one pinned model `m` loads through `loader`.
async fn serve(loader: GatedLoader) -> (String, Arc<Registry>) {
    let dir = tempfile::tempdir().unwrap().keep();
    let file = dir.join("m.gguf");
    std::fs::write(&file, b"GGUF").unwrap();
    let config = Config {
        models_dir: dir.join("empty"),
        ..test_config()
    };
    let primary = LocalModel {
        id: "m".into(),
        path: file,
    };
    let registry = Arc::new(
        inferno::models::registry_with_loader(&config, Some(&primary), Arc::new(loader)).unwrap(),
    );
    registry.start();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(inferno::http::serve(
        listener,
        AppState::from_config(registry.clone(), &config).unwrap(),
        std::future::pending(),
    ));
    (base, registry)
}

async fn get_json(url: String) -> (u16, Value) {
    let response = client().get(url).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn requests_wait_for_a_loading_model() {
    let (release, gate) = std::sync::mpsc::channel();
    let loader = GatedLoader {
        pending: Mutex::new(Some(gate)),
        fail: None,
    };
    let (base, _registry) = serve(loader).await;
    let (status, health) = get_json(format!("{base}/health")).await;
    assert_eq!((status, health["status"].as_str()), (200, Some("loading")));
    let ready = client().get(format!("{base}/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 503, "not ready while loading");
    assert_eq!(ready.headers()["retry-after"], "5");
    assert_eq!(ready.json::<Value>().await.unwrap()["reason"], "loading");
    let (status, _) = get_json(format!("{base}/live")).await;
    assert_eq!(status, 200);
    let (_, state) = get_json(format!("{base}/status")).await;
    assert_eq!(state["models"][0]["state"], "loading");
    let (_, models) = get_json(format!("{base}/v1/models")).await;
    assert_eq!(models["data"][0]["id"], "m");
    assert_eq!(models["data"][0]["loaded"], false);

    let body = json!({"model": "m", "prompt": "hi", "max_tokens": 3});
    let request = tokio::spawn(
        client()
            .post(format!("{base}/v1/completions"))
            .json(&body)
            .send(),
    );
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(!request.is_finished(), "the request waits for the load");
    release.send(()).unwrap();
    let response = request.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    let reply: Value = response.json().await.unwrap();
    assert_eq!(reply["usage"]["completion_tokens"], 3, "{reply}");
    let ready = client().get(format!("{base}/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let (_, models) = get_json(format!("{base}/v1/models")).await;
    assert_eq!(models["data"][0]["loaded"], true);
}

#[tokio::test]
async fn failed_model_is_reported_by_health_and_to_its_requests() {
    let loader = GatedLoader {
        pending: Mutex::new(None),
        fail: Some("out of memory"),
    };
    let (base, registry) = serve(loader).await;
    for _ in 0..500 {
        if registry
            .readiness()
            .is_err_and(|err| err.to_string().contains("out of memory"))
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let (status, body) = get_json(format!("{base}/health")).await;
    assert_eq!(status, 503);
    assert_eq!(body["status"], "error");
    assert!(body["message"].as_str().unwrap().contains("out of memory"));
    let ready = client().get(format!("{base}/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let (_, state) = get_json(format!("{base}/status")).await;
    assert_eq!(state["models"][0]["state"], "failed");
    assert!(
        state["models"][0]["error"]
            .as_str()
            .unwrap()
            .contains("out of memory")
    );
    let request = json!({"model": "m", "prompt": "hi"});
    let response = client()
        .post(format!("{base}/v1/completions"))
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "model_load_failed");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("out of memory"),
        "the client learns why: {error}"
    );
}
