//! Chat completions against the real model: answers, sampling parameters, streaming.

use serde_json::{Value, json};

use crate::common::{SERIAL, chat_body, content, post, server, sse_events};

#[tokio::test]
async fn answers_a_factual_question_sensibly() {
    let _serial = SERIAL.lock().await;
    let server = server();
    let (status, body) = post(
        server,
        "/v1/chat/completions",
        &chat_body(&server.model, "What is the capital of France?", 40),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(content(&body).contains("Paris"), "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], server.model.as_str());
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        body["choices"][0]["finish_reason"], "stop",
        "the model ends its short answer itself"
    );
    let usage = &body["usage"];
    let (prompt, completion) = (
        usage["prompt_tokens"].as_u64().unwrap(),
        usage["completion_tokens"].as_u64().unwrap(),
    );
    assert!(prompt > 10 && completion > 0 && completion < 40, "{usage}");
    assert_eq!(usage["total_tokens"].as_u64().unwrap(), prompt + completion);
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
}

#[tokio::test]
async fn content_parts_are_joined_like_a_string() {
    let _serial = SERIAL.lock().await;
    let server = server();
    let plain = chat_body(&server.model, "Name a color of the sky.", 12);
    let mut parts = plain.clone();
    parts["messages"][1]["content"] =
        json!([{"type": "text", "text": "Name a color "}, {"type": "text", "text": "of the sky."}]);
    let (_, a) = post(server, "/v1/chat/completions", &plain).await;
    let (_, b) = post(server, "/v1/chat/completions", &parts).await;
    assert_eq!(content(&a), content(&b));
    assert_eq!(a["usage"]["prompt_tokens"], b["usage"]["prompt_tokens"]);
}

#[tokio::test]
async fn max_tokens_and_max_completion_tokens_end_with_length() {
    let _serial = SERIAL.lock().await;
    let server = server();
    let mut body = chat_body(&server.model, "Write a long story about a dragon.", 7);
    let (_, a) = post(server, "/v1/chat/completions", &body).await;
    assert_eq!(a["choices"][0]["finish_reason"], "length");
    assert_eq!(a["usage"]["completion_tokens"], 7);
    body.as_object_mut().unwrap().remove("max_tokens");
    body["max_completion_tokens"] = json!(7);
    let (_, b) = post(server, "/v1/chat/completions", &body).await;
    assert_eq!(content(&a), content(&b));
}

#[tokio::test]
async fn stop_strings_cut_the_output_and_never_appear() {
    let _serial = SERIAL.lock().await;
    let server = server();
    let body = chat_body(&server.model, "What is the capital of France?", 40);
    let (_, full) = post(server, "/v1/chat/completions", &body).await;
    let full = content(&full);
    let cut = full.find("Paris").expect("the answer names Paris");
    for stop in [json!("Paris"), json!(["zzz", "Paris"])] {
        let mut with_stop = body.clone();
        with_stop["stop"] = stop;
        let (status, stopped) = post(server, "/v1/chat/completions", &with_stop).await;
        assert_eq!(status, 200);
        assert_eq!(content(&stopped), full[..cut]);
        assert_eq!(stopped["choices"][0]["finish_reason"], "stop");
    }
}

#[tokio::test]
async fn top_k_1_min_p_1_and_tiny_top_p_all_equal_greedy() {
    let _serial = SERIAL.lock().await;
    let server = server();
    let greedy = chat_body(&server.model, "Tell me a fun fact about cats.", 16);
    let (_, expected) = post(server, "/v1/chat/completions", &greedy).await;
    for extra in [
        json!({"top_k": 1}),
        json!({"min_p": 1.0}),
        json!({"top_p": 0.000001}),
    ] {
        let mut body = greedy.clone();
        body["temperature"] = json!(1.0);
        body["seed"] = json!(7);
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (_, got) = post(server, "/v1/chat/completions", &body).await;
        assert_eq!(content(&got), content(&expected), "{extra}");
    }
}

#[tokio::test]
async fn a_seed_makes_sampling_reproducible() {
    let _serial = SERIAL.lock().await;
    let server = server();
    let mut body = chat_body(&server.model, "Write a one-line poem about the sea.", 24);
    body["temperature"] = json!(1.2);
    let mut outputs = Vec::new();
    for seed in [11, 11, 12, 13, 14] {
        body["seed"] = json!(seed);
        let (_, got) = post(server, "/v1/chat/completions", &body).await;
        outputs.push(content(&got));
    }
    assert_eq!(outputs[0], outputs[1], "same seed, same output");
    assert!(
        outputs[1..].iter().any(|o| *o != outputs[0]),
        "other seeds sample differently: {outputs:?}"
    );
}

#[tokio::test]
async fn logit_bias_forces_a_token() {
    let _serial = SERIAL.lock().await;
    let server = server();
    let mut body = chat_body(&server.model, "Say hello.", 5);
    body["logit_bias"] = json!({"1000": 100});
    let (status, got) = post(server, "/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{got}");
    let text = content(&got);
    let piece = &text[..text.len() / 5];
    assert!(
        !piece.is_empty() && text == piece.repeat(5),
        "one token repeated five times: {text:?}"
    );
}

async fn complete(prompt: &str, max_tokens: u32, extra: Value) -> String {
    let server = server();
    let mut body = json!({"model": server.model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (status, got) = post(server, "/v1/completions", &body).await;
    assert_eq!(status, 200, "{got}");
    got["choices"][0]["text"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn penalties_change_repetitive_output() {
    let _serial = SERIAL.lock().await;
    // Greedy continuation of this prompt repeats "hello"; penalties on the generated tokens
    // must steer away from the repeats.
    let prompt = "Repeat after me: hello hello hello hello hello hello";
    let plain = complete(prompt, 12, json!({})).await;
    assert!(plain.matches("hello").count() >= 8, "{plain:?}");
    for penalty in [
        json!({"frequency_penalty": 2.0}),
        json!({"repetition_penalty": 2.0}),
    ] {
        let text = complete(prompt, 12, penalty.clone()).await;
        assert!(
            text.matches("hello").count() < plain.matches("hello").count(),
            "{penalty}: {text:?} vs {plain:?}"
        );
    }
    let story = "Once upon a time, in a small village,";
    let plain = complete(story, 40, json!({})).await;
    let penalised = complete(story, 40, json!({"presence_penalty": 2.0})).await;
    let encouraged = complete(story, 40, json!({"presence_penalty": -2.0})).await;
    assert_ne!(penalised, plain);
    assert_ne!(encouraged, plain);
}

#[tokio::test]
async fn ignore_eos_and_min_tokens_extend_generation() {
    let _serial = SERIAL.lock().await;
    let server = server();
    let body = chat_body(&server.model, "What is the capital of France?", 40);
    let (_, natural) = post(server, "/v1/chat/completions", &body).await;
    let natural_tokens = natural["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(natural_tokens < 30, "{natural}");
    let mut ignore = body.clone();
    ignore["ignore_eos"] = json!(true);
    let (_, got) = post(server, "/v1/chat/completions", &ignore).await;
    assert_eq!(
        (
            got["usage"]["completion_tokens"].as_u64(),
            got["choices"][0]["finish_reason"].as_str()
        ),
        (Some(40), Some("length"))
    );
    let mut min = body.clone();
    min["min_tokens"] = json!(30);
    let (_, got) = post(server, "/v1/chat/completions", &min).await;
    assert!(
        got["usage"]["completion_tokens"].as_u64().unwrap() >= 30,
        "{got}"
    );
}

#[tokio::test]
async fn streaming_sends_role_content_finish_usage_and_done() {
    let _serial = SERIAL.lock().await;
    let server = server();
    let mut body = chat_body(&server.model, "What is the capital of France?", 40);
    let (_, whole) = post(server, "/v1/chat/completions", &body).await;
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let response = crate::common::client()
        .post(server.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = sse_events(response).await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let id = chunks[0]["id"].clone();
    assert!(
        chunks
            .iter()
            .all(|c| c["id"] == id && c["object"] == "chat.completion.chunk")
    );
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        text,
        content(&whole),
        "streamed and whole answers agree (both ran alone)"
    );
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let usage_chunk = &chunks[chunks.len() - 1];
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"], whole["usage"]);
}

#[tokio::test]
async fn streaming_without_include_usage_has_no_usage_chunk() {
    let _serial = SERIAL.lock().await;
    let server = server();
    let mut body = chat_body(&server.model, "Say hi.", 5);
    body["stream"] = json!(true);
    let response = crate::common::client()
        .post(server.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let events = sse_events(response).await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert!(
        events.iter().all(|e| !e.contains("\"usage\"")),
        "{events:?}"
    );
    let finish: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "length");
}
