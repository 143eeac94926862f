//! Before the model is ready: `/health` is alive, `/ready` is 503, requests get 503 with Retry-After.

use std::sync::Arc;

use inferno::http::AppState;
use inferno::models::registry::Registry;
use serde_json::{Value, json};

use crate::common::{client, test_config};

async fn serve_registry(registry: Arc<Registry>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(inferno::http::serve(
        listener,
        AppState::from_config(registry, &test_config()).unwrap(),
        std::future::pending(),
    ));
    base
}

#[tokio::test]
async fn loading_model_is_503_with_retry_after() {
    let base = serve_registry(Arc::new(Registry::new("m"))).await;
    let health = client().get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(health.status(), 200, "alive while loading");
    assert_eq!(health.json::<Value>().await.unwrap()["status"], "loading");
    let ready = client().get(format!("{base}/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 503, "not ready while loading");
    assert_eq!(ready.headers()["retry-after"], "5");
    assert_eq!(ready.json::<Value>().await.unwrap()["reason"], "loading");
    let live = client().get(format!("{base}/live")).send().await.unwrap();
    assert_eq!(live.status(), 200);
    let status: Value = client()
        .get(format!("{base}/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["models"][0]["state"], "loading");
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    let response = client()
        .post(format!("{base}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"]["code"],
        "model_loading"
    );
    let models: Value = client()
        .get(format!("{base}/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"], json!([]), "only ready models are listed");
}

#[tokio::test]
async fn failed_model_is_reported_by_health() {
    let registry = Arc::new(Registry::new("m"));
    registry.set_failed("out of memory");
    let base = serve_registry(registry).await;
    let health = client().get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(health.status(), 503);
    let body: Value = health.json().await.unwrap();
    assert_eq!(body["status"], "error");
    assert!(body["message"].as_str().unwrap().contains("out of memory"));
    let ready = client().get(format!("{base}/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let status: Value = client()
        .get(format!("{base}/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["models"][0]["state"], "failed");
    assert_eq!(status["models"][0]["error"], "out of memory");
    let request = json!({"model": "m", "prompt": "hi"});
    let response = client()
        .post(format!("{base}/v1/completions"))
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500, "details stay in the log");
}
