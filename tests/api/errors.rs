//! Every bad input gets an OpenAI-shaped error, and the server keeps serving after each.

use serde_json::{Value, json};

use crate::common::{SERIAL, assert_error, chat_body, client, post, server};

/// A small normal request that must still succeed.
async fn still_serves() {
    let server = server();
    let (status, body) = post(
        server,
        "/v1/chat/completions",
        &chat_body(&server.model, "Hi", 3),
    )
    .await;
    assert_eq!(status, 200, "the server keeps serving: {body}");
}

async fn send_raw(
    path: &str,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> (u16, Value) {
    let mut request = client().post(server().url(path)).body(body);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn malformed_json_wrong_content_type_and_oversized_bodies() {
    let _serial = SERIAL.lock().await;
    let (status, body) = send_raw(
        "/v1/chat/completions",
        Some("application/json"),
        "{\"model\": ",
    )
    .await;
    assert_eq!(assert_error(status, &body, 400)["code"], "invalid_json");
    still_serves().await;
    let (status, body) = send_raw("/v1/chat/completions", Some("text/plain"), "{}").await;
    assert_error(status, &body, 415);
    still_serves().await;
    let (status, body) = send_raw("/v1/chat/completions", None, "{}").await;
    assert_error(status, &body, 415);
    still_serves().await;
    let huge = format!(
        "{{\"model\": \"x\", \"messages\": [], \"pad\": \"{}\"}}",
        "a".repeat(300 * 1024)
    );
    let (status, body) = send_raw("/v1/chat/completions", Some("application/json"), huge).await;
    assert_error(status, &body, 413);
    still_serves().await;
    let (status, body) = send_raw("/v1/chat/completions", Some("application/json"), "[1, 2]").await;
    assert_error(status, &body, 400);
    still_serves().await;
}

#[tokio::test]
async fn invalid_and_unsupported_parameters_are_named() {
    let _serial = SERIAL.lock().await;
    let server = server();
    let base = chat_body(&server.model, "Hi", 3);
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({"n": 2}), 400, "n"),
        (json!({"logprobs": true}), 400, "logprobs"),
        (json!({"top_logprobs": 2}), 400, "top_logprobs"),
        (
            json!({"tools": [{"type": "function", "function": {"name": "f"}}]}),
            400,
            "tools",
        ),
        (json!({"tool_choice": "required"}), 400, "tool_choice"),
        (
            json!({"response_format": {"type": "json_object"}}),
            400,
            "response_format",
        ),
        (json!({"frobnicate": 1}), 400, "frobnicate"),
        (json!({"temperature": 5}), 400, "temperature"),
        (json!({"top_p": 0}), 400, "top_p"),
        (json!({"top_k": -2}), 400, "top_k"),
        (json!({"presence_penalty": 9}), 400, "presence_penalty"),
        (json!({"max_tokens": 0}), 400, "max_tokens"),
        (json!({"max_tokens": 2000}), 400, "max_tokens"),
        (
            json!({"max_completion_tokens": 5}),
            400,
            "max_completion_tokens",
        ),
        (json!({"logit_bias": {"999999": 1}}), 400, "logit_bias"),
        (json!({"logit_bias": {"abc": 1}}), 400, "logit_bias"),
        (
            json!({"stop": ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p", "q"]}),
            400,
            "stop",
        ),
        (
            json!({"stream_options": {"include_usage": true}}),
            400,
            "stream_options",
        ),
        (json!({"model": "no-such-model"}), 404, "model"),
        (json!({"messages": []}), 400, "messages"),
        (
            json!({"messages": [{"role": "wizard", "content": "x"}]}),
            400,
            "messages[0].role",
        ),
        (
            json!({"messages": [{"role": "tool", "content": "x"}]}),
            400,
            "messages[0].role",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}),
            400,
            "messages[0].content",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x", "name": "bob"}]}),
            400,
            "messages[0].name",
        ),
        (
            json!({"messages": [{"role": "user"}]}),
            400,
            "messages[0].content",
        ),
    ];
    for (patch, expected_status, param) in cases {
        let mut body = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, got) = post(server, "/v1/chat/completions", &body).await;
        let error = assert_error(status, &got, expected_status);
        assert_eq!(error["param"], param, "{patch} -> {got}");
        still_serves().await;
    }
}

#[tokio::test]
async fn missing_required_fields_are_400() {
    let _serial = SERIAL.lock().await;
    let server = server();
    for body in [
        json!({"messages": [{"role": "user", "content": "x"}]}),
        json!({"model": server.model}),
        json!({"model": 5, "messages": []}),
    ] {
        let (status, got) = post(server, "/v1/chat/completions", &body).await;
        assert_error(status, &got, 400);
        still_serves().await;
    }
    let (status, got) = post(server, "/v1/completions", &json!({"model": server.model})).await;
    assert_error(status, &got, 400);
}

#[tokio::test]
async fn prompts_longer_than_the_context_are_context_length_exceeded() {
    let _serial = SERIAL.lock().await;
    let server = server();
    let long = "hello ".repeat(1500);
    let (status, got) = post(
        server,
        "/v1/chat/completions",
        &chat_body(&server.model, &long, 5),
    )
    .await;
    assert_eq!(
        assert_error(status, &got, 400)["code"],
        "context_length_exceeded"
    );
    still_serves().await;
    let body = json!({"model": server.model, "prompt": long});
    let (status, got) = post(server, "/v1/completions", &body).await;
    assert_eq!(
        assert_error(status, &got, 400)["code"],
        "context_length_exceeded"
    );
    still_serves().await;
}

#[tokio::test]
async fn completions_reject_what_they_cannot_honour() {
    let _serial = SERIAL.lock().await;
    let server = server();
    let base = json!({"model": server.model, "prompt": "Hi", "max_tokens": 2});
    let cases: Vec<(Value, &str)> = vec![
        (json!({"prompt": ["a", "b"]}), "prompt"),
        (json!({"prompt": [1, -5]}), "prompt"),
        (json!({"prompt": [1, 99_999_999]}), "prompt"),
        (json!({"prompt": ""}), "prompt"),
        (json!({"logprobs": 2}), "logprobs"),
        (json!({"suffix": "x"}), "suffix"),
        (json!({"best_of": 3}), "best_of"),
        (json!({"n": 3}), "n"),
        (json!({"messages": []}), "messages"),
    ];
    for (patch, param) in cases {
        let mut body = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, got) = post(server, "/v1/completions", &body).await;
        assert_eq!(
            assert_error(status, &got, 400)["param"],
            param,
            "{patch} -> {got}"
        );
    }
    still_serves().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_are_openai_shaped() {
    let server = server();
    let response = client()
        .get(server.url("/v1/nothing"))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    assert_error(status, &response.json().await.unwrap(), 404);
    let response = client()
        .get(server.url("/v1/chat/completions"))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    assert_error(status, &response.json().await.unwrap(), 405);
}
