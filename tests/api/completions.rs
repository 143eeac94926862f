//! Text completions, models, health, request ids.

use serde_json::{Value, json};

use crate::common::{SERIAL, client, post, server, sse_events};

#[tokio::test]
async fn completes_raw_text() {
    let _serial = SERIAL.lock().await;
    let server = server();
    let body = json!({"model": server.model, "prompt": "The capital of France is", "max_tokens": 8, "temperature": 0});
    let (status, got) = post(server, "/v1/completions", &body).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["object"], "text_completion");
    let text = got["choices"][0]["text"].as_str().unwrap();
    assert!(text.contains("Paris"), "{got}");
    assert_eq!(got["usage"]["prompt_tokens"], 5);
    assert_eq!(got["usage"]["completion_tokens"], 8);
    assert_eq!(got["choices"][0]["finish_reason"], "length");
}

#[tokio::test]
async fn echo_prepends_the_prompt_and_token_prompts_work() {
    let _serial = SERIAL.lock().await;
    let server = server();
    let prompt = "The capital of France is";
    let body = json!({"model": server.model, "prompt": prompt, "max_tokens": 4, "temperature": 0, "echo": true});
    let (_, echoed) = post(server, "/v1/completions", &body).await;
    let text = echoed["choices"][0]["text"].as_str().unwrap();
    assert!(
        text.starts_with(prompt) && text.len() > prompt.len(),
        "{echoed}"
    );

    // Token ids in, same tokens echoed back as text.
    let ids = json!([504, 3575, 282, 4649, 314]);
    let body = json!({"model": server.model, "prompt": ids, "max_tokens": 4, "temperature": 0, "echo": true});
    let (status, got) = post(server, "/v1/completions", &body).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["usage"]["prompt_tokens"], 5);
    assert_eq!(
        got["choices"][0]["text"], echoed["choices"][0]["text"],
        "ids of the same prompt give the same result"
    );
}

#[tokio::test]
async fn streaming_completions_with_usage() {
    let _serial = SERIAL.lock().await;
    let server = server();
    let body = json!({"model": server.model, "prompt": "One, two, three,", "max_tokens": 6, "temperature": 0,
        "stream": true, "stream_options": {"include_usage": true}});
    let response = client()
        .post(server.url("/v1/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let events = sse_events(response).await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens"], 6);
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "length");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["text"].as_str())
        .collect();
    assert!(!text.trim().is_empty());
}

#[tokio::test]
async fn models_are_listed_and_found() {
    let server = server();
    let list: Value = client()
        .get(server.url("/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["object"], "list");
    assert_eq!(list["data"][0]["id"], server.model.as_str());
    assert_eq!(list["data"][0]["object"], "model");
    let one = client()
        .get(server.url(&format!("/v1/models/{}", server.model)))
        .send()
        .await
        .unwrap();
    assert_eq!(one.status(), 200);
    let missing = client()
        .get(server.url("/v1/models/no-such-model"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["code"], "model_not_found");
}

#[tokio::test]
async fn health_is_ok_when_ready() {
    let server = server();
    let response = client().get(server.url("/health")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ok");
}

#[tokio::test]
async fn status_reports_engine_state() {
    let server = server();
    let status: Value = client()
        .get(server.url("/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let model = &status["models"][0];
    assert_eq!(model["id"], server.model.as_str());
    assert_eq!(model["state"], "loaded");
    assert_eq!(model["engine"]["slots_total"], 8);
    assert_eq!(model["engine"]["kv_cells_total"], 8 * 1024);
    assert!(
        model["engine"]["generation_tokens_total"].as_u64().unwrap() >= 1,
        "the warm-up generated one"
    );
    let ready = client().get(server.url("/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated() {
    let server = server();
    let given = client()
        .get(server.url("/health"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(given.headers()["x-request-id"], "abc-123");
    let generated = client().get(server.url("/v1/models")).send().await.unwrap();
    let id = generated.headers()["x-request-id"].to_str().unwrap();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    let error = client().get(server.url("/nope")).send().await.unwrap();
    assert!(
        error.headers().contains_key("x-request-id"),
        "errors carry the id too"
    );
}

#[tokio::test]
async fn a_prompt_list_of_one_is_accepted() {
    let _serial = SERIAL.lock().await;
    let server = server();
    let body = json!({"model": server.model, "prompt": ["Hello"], "max_tokens": 2});
    let (status, got) = post(server, "/v1/completions", &body).await;
    assert_eq!(status, 200, "{got}");
}
