//! Continuous batching seen from outside: many streams at once, clients that leave, a full queue.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::common::{
    SERIAL, TestServer, chat_body, client, content, post, server, sse_events, start_server,
    test_config,
};

fn question(i: usize) -> String {
    let topics = [
        "cats",
        "the moon",
        "rivers",
        "bread",
        "music",
        "trees",
        "the ocean",
        "winter",
    ];
    format!(
        "Write one sentence about {} and the number {i}.",
        topics[i % topics.len()]
    )
}

async fn stream_text(server: &TestServer, body: &Value) -> (String, Value) {
    let mut body = body.clone();
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let response = client()
        .post(server.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let events = sse_events(response).await;
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let text = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    let finish = chunks[chunks.len() - 2]["choices"][0]["finish_reason"].clone();
    (text, finish)
}

#[tokio::test]
async fn sixteen_concurrent_streams_complete_independently() {
    let _serial = SERIAL.lock().await;
    let server = server();
    let bodies: Vec<Value> = (0..16)
        .map(|i| chat_body(&server.model, &question(i), 48))
        .collect();
    let batched =
        futures_util::future::join_all(bodies.iter().map(|b| stream_text(server, b))).await;
    for (text, finish) in &batched {
        assert!(!text.trim().is_empty(), "every stream produced text");
        assert!(finish == "stop" || finish == "length", "{finish}");
    }
    // Independent: each output belongs to its own prompt. Batched numerics may differ slightly
    // from a solo run, so compare the opening of each answer with the same prompt run alone.
    let mut agree = 0;
    for (i, body) in bodies.iter().enumerate() {
        let (_, alone) = post(server, "/v1/chat/completions", body).await;
        let alone = content(&alone);
        let prefix: String = alone.chars().take(16).collect();
        if batched[i].0.starts_with(&prefix) {
            agree += 1;
        }
    }
    assert!(
        agree >= 12,
        "only {agree}/16 batched answers match their solo run"
    );
    let distinct: std::collections::HashSet<&String> = batched.iter().map(|(t, _)| t).collect();
    assert!(
        distinct.len() >= 12,
        "answers are not independent: {batched:?}"
    );
}

/// Opens a long streaming request and returns it once its first chunk has arrived.
async fn open_long_stream(server: &TestServer, max_tokens: u32) -> reqwest::Response {
    let mut body = chat_body(
        &server.model,
        "Count upwards from one, forever.",
        max_tokens,
    );
    body["stream"] = json!(true);
    body["ignore_eos"] = json!(true);
    let mut response = client()
        .post(server.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.chunk().await.unwrap().expect("first chunk");
    response
}

#[tokio::test]
async fn a_client_leaving_mid_stream_frees_its_slot() {
    // One slot: if the abandoned request kept it, the next request would wait for ~4000 tokens.
    let config = inferno::config::Config {
        parallel: 1,
        ctx_size: 4096,
        ..test_config()
    };
    let server = start_server(config);
    let response = open_long_stream(&server, 4000).await;
    let mut stream = response.bytes_stream();
    for _ in 0..5 {
        stream.next().await.expect("stream continues").unwrap();
    }
    drop(stream);
    let (status, body) = tokio::time::timeout(
        Duration::from_secs(60),
        post(
            &server,
            "/v1/chat/completions",
            &chat_body(&server.model, "Say hi.", 5),
        ),
    )
    .await
    .expect("the freed slot serves the next request instead of the abandoned one");
    assert_eq!(status, 200, "{body}");
    crate::common::wait_idle(&server).await;
}

#[tokio::test]
async fn a_full_queue_answers_503_at_once_with_retry_after() {
    let config = inferno::config::Config {
        parallel: 1,
        queue_capacity: 1,
        ..test_config()
    };
    let server = start_server(config);
    let running = open_long_stream(&server, 600).await;
    // A second request waits in the (one-place) queue; its response starts once admitted.
    let body = chat_body(&server.model, "Wait for me.", 5);
    let queued = tokio::spawn({
        let server = server.clone();
        let body = body.clone();
        async move { post(&server, "/v1/chat/completions", &body).await }
    });
    for _ in 0..400 {
        if crate::common::engine_status(&server).await["queue_length"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let rejected = client()
        .post(server.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(rejected.status(), 503);
    assert_eq!(rejected.headers()["retry-after"], "1");
    let error: Value = rejected.json().await.unwrap();
    assert_eq!(error["error"]["code"], "overloaded");
    drop(running);
    let (status, reply) = queued.await.unwrap();
    assert_eq!(
        status, 200,
        "the queued request ran once the slot was free: {reply}"
    );
    crate::common::wait_idle(&server).await;
}

#[tokio::test]
async fn streamed_and_whole_answers_agree_under_load() {
    let _serial = SERIAL.lock().await;
    let server = server();
    let body = chat_body(&server.model, "What is the capital of France?", 20);
    let (text, finish) = stream_text(server, &body).await;
    assert!(text.contains("Paris"), "{text}");
    assert_eq!(finish, "stop");
}
