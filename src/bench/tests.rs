//! End-to-end runs of the benchmark against a stand-in OpenAI server on 127.0.0.1.
//!
//! The stand-in's first path segment picks its behaviour: `ok` streams three content
//! chunks plus a usage chunk, `nousage` omits the usage chunk, `fail` answers 503, and
//! `stall` never finishes its stream.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{Value, json};

use super::*;

/// Request bodies the stand-in received, for asserting what the client sent.
#[derive(Clone, Default)]
struct StandIn {
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl StandIn {
    fn bodies(&self) -> Vec<Value> {
        self.bodies
            .lock()
            .expect("no test thread panicked holding the lock")
            .clone()
    }
}

/// Starts the stand-in on an ephemeral port and returns its `http://127.0.0.1:port` root.
async fn start_stand_in() -> (String, StandIn) {
    let state = StandIn::default();
    let app = Router::new()
        .route("/{variant}/v1/models", get(models))
        .route("/{variant}/v1/chat/completions", post(chat))
        .route("/{variant}/v1/completions", post(completions))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("bound socket has an address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), state)
}

fn overloaded() -> Response {
    let body =
        json!({"error": {"message": "model overloaded", "type": "unavailable", "code": 503}});
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

async fn models(Path(variant): Path<String>) -> Response {
    if variant == "fail" {
        return overloaded();
    }
    Json(json!({"object": "list", "data": [{"id": "stand-in", "object": "model"}]})).into_response()
}

async fn chat(state: State<StandIn>, variant: Path<String>, body: Json<Value>) -> Response {
    respond(state, variant, body, Endpoint::Chat)
}

async fn completions(state: State<StandIn>, variant: Path<String>, body: Json<Value>) -> Response {
    respond(state, variant, body, Endpoint::Completions)
}

fn respond(
    State(state): State<StandIn>,
    Path(variant): Path<String>,
    Json(body): Json<Value>,
    endpoint: Endpoint,
) -> Response {
    state
        .bodies
        .lock()
        .expect("no test thread panicked holding the lock")
        .push(body.clone());
    if variant == "fail" {
        return overloaded();
    }
    let prompt = match endpoint {
        Endpoint::Chat => body["messages"][0]["content"].as_str(),
        Endpoint::Completions => body["prompt"].as_str(),
    };
    let prompt_words = prompt.unwrap_or_default().split_whitespace().count();
    let chunk = |piece: Value| match endpoint {
        Endpoint::Chat => json!({"object": "chat.completion.chunk", "choices": [piece]}),
        Endpoint::Completions => json!({"object": "text_completion", "choices": [piece]}),
    };
    let content = |text: &str| match endpoint {
        Endpoint::Chat => chunk(json!({"index": 0, "delta": {"content": text}})),
        Endpoint::Completions => chunk(json!({"index": 0, "text": text, "finish_reason": null})),
    };

    let mut events = vec![
        ": keep-alive\n\n".to_owned(),
        format!(
            "data: {}\r\n\r\n",
            chunk(json!({"index": 0, "delta": {"role": "assistant"}}))
        ),
    ];
    events.extend(["Hel", "lo", " world"].map(|t| format!("data: {}\n\n", content(t))));
    if variant == "stall" {
        events.truncate(3);
    } else {
        let finish = json!({"index": 0, "delta": {}, "text": "", "finish_reason": "length"});
        events.push(format!("data: {}\n\n", chunk(finish)));
        if variant != "nousage" {
            let usage = json!({"prompt_tokens": prompt_words, "completion_tokens": 3});
            events.push(format!(
                "data: {}\n\n",
                json!({"choices": [], "usage": usage})
            ));
        }
        events.push("data: [DONE]\n\n".to_owned());
    }

    // Split every event in two so the client sees events straddling network writes.
    let pieces: Vec<Bytes> = events
        .into_iter()
        .flat_map(|event| {
            let cut = event.len() / 2;
            [
                Bytes::from(event[..cut].to_owned()),
                Bytes::from(event[cut..].to_owned()),
            ]
        })
        .collect();
    let paced = futures_util::stream::iter(pieces).then(|piece| async move {
        tokio::time::sleep(Duration::from_millis(1)).await;
        Ok::<_, Infallible>(piece)
    });
    let stream = if variant == "stall" {
        paced.chain(futures_util::stream::pending()).boxed()
    } else {
        paced.boxed()
    };
    (
        [(header::CONTENT_TYPE, "text/event-stream")],
        Body::from_stream(stream),
    )
        .into_response()
}

fn config(base: &str, variant: &str) -> BenchConfig {
    BenchConfig {
        base_url: format!("{base}/{variant}/v1/"),
        model: None,
        endpoint: Endpoint::Chat,
        concurrency: vec![1, 2],
        requests: 4,
        prompt_tokens: 32,
        max_tokens: 3,
        ignore_eos: true,
        temperature: 0.0,
        api_key: None,
        level_timeout: Duration::from_secs(20),
        warmup: 1,
    }
}

#[tokio::test]
async fn streams_are_measured_at_each_level() {
    let (base, stand_in) = start_stand_in().await;
    let mut seen_levels = Vec::new();
    let report = run_bench_observed(&config(&base, "ok"), |l| seen_levels.push(l.concurrency))
        .await
        .expect("bench runs");
    assert_eq!(seen_levels, [1, 2]);
    assert_eq!(report.model, "stand-in", "model discovered from /models");
    assert_eq!(report.url, format!("{base}/ok/v1"));

    // Warmup used prompt 0; the levels used prompts 1..=4 and 5..=8.
    let words = |range: std::ops::RangeInclusive<usize>| -> u64 {
        range
            .map(|i| build_prompt(i, 32).split_whitespace().count() as u64)
            .sum()
    };
    for (level, expected_prompt) in report.levels.iter().zip([words(1..=4), words(5..=8)]) {
        assert_eq!(
            (level.ok, level.errors),
            (4, 0),
            "{:?}",
            level.error_reasons
        );
        assert_eq!(level.completion_tokens, 12);
        assert_eq!(level.prompt_tokens, expected_prompt);
        assert_eq!(level.usage_missing, 0);
        let ttft = level.ttft_ms.expect("ttft measured");
        let itl = level.itl_ms.expect("itl measured");
        let e2e = level.e2e_ms.expect("e2e measured");
        assert_eq!((ttft.count, itl.count, e2e.count), (4, 8, 4));
        assert!(ttft.p50 > 0.0 && ttft.p50 <= ttft.p95 && ttft.p95 <= ttft.p99);
        assert!(e2e.p50 >= ttft.p50);
        assert!(level.stream_tokens_per_s_p50.is_some_and(|r| r > 0.0));
        assert!(level.gen_tokens_per_s > 0.0);
        assert!(level.total_tokens_per_s > level.gen_tokens_per_s);
    }
    assert_eq!(report.scaling.len(), 2);
    assert_eq!(report.scaling[0].ratio, Some(1.0));

    let bodies = stand_in.bodies();
    assert_eq!(bodies.len(), 9, "1 warmup + 2 levels x 4");
    let prompts: HashSet<&str> = bodies
        .iter()
        .filter_map(|b| b["messages"][0]["content"].as_str())
        .collect();
    assert_eq!(prompts.len(), 9, "every request has its own prompt");
    for body in &bodies {
        assert_eq!(body["model"], "stand-in");
        assert_eq!(body["stream"], true);
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert_eq!(body["ignore_eos"], true);
        assert_eq!(body["max_tokens"], 3);
    }

    let json = serde_json::to_value(&report).expect("report serializes");
    assert_eq!(json["endpoint"], "chat");
    assert!(json["levels"][1]["ttft_ms"]["p99"].is_number());
    assert!(report.render_table().contains("c=2: "));
}

#[tokio::test]
async fn http_errors_are_counted_with_their_message() {
    let (base, _) = start_stand_in().await;
    let cfg = BenchConfig {
        model: Some("any".to_owned()),
        concurrency: vec![2],
        warmup: 0,
        ..config(&base, "fail")
    };
    let report = run_bench(&cfg)
        .await
        .expect("bench runs despite failing requests");
    let level = &report.levels[0];
    assert_eq!((level.ok, level.errors), (0, 4));
    let expected = vec![ErrorCount {
        message: "HTTP 503: model overloaded".to_owned(),
        count: 4,
    }];
    assert_eq!(level.error_reasons, expected);
    assert!(level.ttft_ms.is_none() && level.e2e_ms.is_none());
    assert!(
        report.scaling.is_empty(),
        "one level has nothing to compare"
    );
}

#[tokio::test]
async fn failing_warmup_and_discovery_stop_the_run() {
    let (base, _) = start_stand_in().await;
    let warmup = BenchConfig {
        model: Some("any".to_owned()),
        ..config(&base, "fail")
    };
    let err = run_bench(&warmup).await.expect_err("warmup fails");
    assert!(
        matches!(&err, BenchError::Warmup(m) if m == "HTTP 503: model overloaded"),
        "{err}"
    );
    let err = run_bench(&config(&base, "fail"))
        .await
        .expect_err("discovery fails");
    assert!(matches!(err, BenchError::ModelDiscovery { .. }), "{err}");
}

#[tokio::test]
async fn completions_without_usage_count_content_chunks() {
    let (base, stand_in) = start_stand_in().await;
    let cfg = BenchConfig {
        endpoint: Endpoint::Completions,
        concurrency: vec![2],
        ignore_eos: false,
        ..config(&base, "nousage")
    };
    let report = run_bench(&cfg).await.expect("bench runs");
    let level = &report.levels[0];
    assert_eq!((level.ok, level.errors), (4, 0));
    assert_eq!(level.completion_tokens, 12);
    assert_eq!((level.prompt_tokens, level.usage_missing), (0, 4));
    assert!(report.render_table().contains("sent no usage chunk"));
    let bodies = stand_in.bodies();
    assert!(
        bodies
            .iter()
            .all(|b| b["prompt"].is_string() && b.get("ignore_eos").is_none())
    );
}

#[tokio::test]
async fn level_deadline_aborts_stalled_streams() {
    let (base, _) = start_stand_in().await;
    let cfg = BenchConfig {
        concurrency: vec![2],
        warmup: 0,
        level_timeout: Duration::from_millis(300),
        ..config(&base, "stall")
    };
    let report = run_bench(&cfg).await.expect("bench runs");
    let level = &report.levels[0];
    assert_eq!((level.ok, level.errors), (0, 4));
    let reasons: Vec<(&str, usize)> = level
        .error_reasons
        .iter()
        .map(|e| (e.message.as_str(), e.count))
        .collect();
    // Equal counts are ordered by message.
    assert_eq!(
        reasons,
        [
            (report::NOT_ISSUED, 2),
            ("timed out at the level deadline", 2)
        ]
    );
    assert!(level.wall_s < 10.0, "the level stopped at its deadline");
}

#[tokio::test]
async fn invalid_configs_are_rejected() {
    for cfg in [
        BenchConfig {
            concurrency: vec![],
            ..BenchConfig::default()
        },
        BenchConfig {
            concurrency: vec![1, 0],
            ..BenchConfig::default()
        },
        BenchConfig {
            requests: 0,
            ..BenchConfig::default()
        },
        BenchConfig {
            base_url: "127.0.0.1:8080/v1".to_owned(),
            ..BenchConfig::default()
        },
    ] {
        let err = run_bench(&cfg)
            .await
            .expect_err("rejected before any request");
        assert!(matches!(err, BenchError::InvalidConfig(_)), "{err}");
    }
}
