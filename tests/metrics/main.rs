//! Metrics, in their own test binary: the Prometheus recorder is process-global, so exact
//! counts need a process where nothing else sends requests.

#[path = "../api/common.rs"]
#[allow(dead_code)]
mod common;

use std::collections::HashMap;

use inferno::models::LocalModel;
use serde_json::json;

use common::{
    TestServer, chat_body, client, engine_status, model, post, start_server_with, test_config,
    wait_idle,
};

const MODEL: &str = "metrics-model";

fn scrape_text(server: &TestServer) -> String {
    let url = server.url("/metrics");
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            client()
                .get(url)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        })
    })
    .join()
    .unwrap()
}

/// Parsed samples: (name, sorted labels) -> value; histogram buckets keep their `le`.
/// Samples by (metric name, sorted labels).
type Samples = HashMap<(String, Vec<(String, String)>), f64>;

fn scrape(server: &TestServer) -> (String, Samples) {
    let text = scrape_text(server);
    let parsed = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("valid exposition format");
    let mut samples = HashMap::new();
    for sample in parsed.samples {
        let mut labels: Vec<(String, String)> = sample
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.sort();
        let value = match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(buckets) => {
                let count = buckets.iter().map(|b| b.count).fold(0.0, f64::max);
                samples.insert(
                    (
                        format!("{}_count_from_buckets", sample.metric),
                        labels.clone(),
                    ),
                    count,
                );
                continue;
            }
            prometheus_parse::Value::Summary(_) => continue,
        };
        samples.insert((sample.metric, labels), value);
    }
    (text, samples)
}

fn get(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut key: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    key.sort();
    *samples
        .get(&(name.to_owned(), key.clone()))
        .unwrap_or_else(|| panic!("no sample {name}{key:?}"))
}

/// Opens a long stream and returns once it carried generated text (not just the role chunk).
async fn open_stream(server: &TestServer, prompt: &str) -> reqwest::Response {
    let mut body = chat_body(MODEL, prompt, 400);
    body["stream"] = json!(true);
    body["ignore_eos"] = json!(true);
    let mut response = client()
        .post(server.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut seen = String::new();
    while seen.matches("\"content\":").count() < 2 {
        let chunk = response
            .chunk()
            .await
            .unwrap()
            .expect("the stream continues");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    response
}

#[tokio::test]
async fn a_known_sequence_of_requests_gives_exact_metrics() {
    assert!(inferno::metrics::install());
    let local = LocalModel {
        id: MODEL.to_owned(),
        path: model().path.clone(),
    };
    let server = start_server_with(local, test_config());
    let warm = engine_status(&server).await;
    let prompt = "What is the capital of France?";

    // Two successes of exactly 5 tokens, a 400 after the model was resolved, a 404.
    let mut body = chat_body(MODEL, prompt, 5);
    body["ignore_eos"] = json!(true);
    let mut prompt_tokens = 0;
    for _ in 0..2 {
        let (status, reply) = post(&server, "/v1/chat/completions", &body).await;
        assert_eq!(status, 200, "{reply}");
        prompt_tokens = reply["usage"]["prompt_tokens"].as_u64().unwrap();
    }
    let mut bad = body.clone();
    bad["temperature"] = json!(9);
    assert_eq!(post(&server, "/v1/chat/completions", &bad).await.0, 400);
    assert_eq!(
        post(
            &server,
            "/v1/chat/completions",
            &chat_body("nope", prompt, 5)
        )
        .await
        .0,
        404
    );

    // Gauges move while streams run.
    let first = open_stream(&server, prompt).await;
    let second = open_stream(&server, prompt).await;
    let (during_text, during) = scrape(&server);
    assert_eq!(
        get(&during, "inferno_requests_running", &[("model", MODEL)]),
        2.0
    );
    // prometheus-parse skips names with a colon; check the vLLM-compatible line as text.
    let vllm_running = format!("vllm:num_requests_running{{model_name=\"{MODEL}\"}} 2");
    assert!(during_text.contains(&vllm_running), "{during_text}");
    assert!(get(&during, "inferno_kv_cache_usage_ratio", &[("model", MODEL)]) > 0.0);
    // Both clients leave mid-stream.
    drop(first);
    drop(second);
    wait_idle(&server).await;

    let (text, after) = scrape(&server);
    let status = engine_status(&server).await;
    let chat = [("model", MODEL), ("endpoint", "/v1/chat/completions")];
    assert_eq!(
        get(
            &after,
            "inferno_requests_total",
            &[chat[0], chat[1], ("status", "200")]
        ),
        4.0
    );
    assert_eq!(
        get(
            &after,
            "inferno_requests_total",
            &[chat[0], chat[1], ("status", "400")]
        ),
        1.0
    );
    assert_eq!(
        get(
            &after,
            "inferno_requests_total",
            &[("model", "none"), chat[1], ("status", "404")]
        ),
        1.0,
        "an unknown model is never used as a label value"
    );
    assert_eq!(
        get(
            &after,
            "inferno_errors_total",
            &[("model", MODEL), ("kind", "invalid_request")]
        ),
        1.0
    );
    assert_eq!(
        get(
            &after,
            "inferno_errors_total",
            &[("model", "none"), ("kind", "not_found")]
        ),
        1.0
    );
    assert_eq!(
        get(
            &after,
            "inferno_cancelled_requests_total",
            &[("model", MODEL)]
        ),
        2.0
    );
    // Warm-up + 2 finished + 2 cancelled were admitted; warm-up + 2 finished completed.
    let m = [("model", MODEL)];
    assert_eq!(get(&after, "inferno_queue_wait_seconds_count", &m), 5.0);
    assert_eq!(
        get(&after, "inferno_time_to_first_token_seconds_count", &m),
        5.0
    );
    assert_eq!(
        get(&after, "inferno_inference_duration_seconds_count", &m),
        3.0
    );
    let admitted = get(&after, "inferno_prompt_tokens_total", &m)
        - warm["prompt_tokens_total"].as_f64().unwrap();
    assert_eq!(
        admitted as u64,
        4 * prompt_tokens,
        "four requests with the same prompt"
    );
    let generated = get(&after, "inferno_generation_tokens_total", &m);
    assert_eq!(
        generated,
        status["generation_tokens_total"].as_f64().unwrap()
    );
    assert!(
        generated >= 1.0 + 10.0 + 2.0,
        "warm-up, 2 x 5, and at least one per stream: {generated}"
    );
    assert_eq!(get(&after, "inferno_requests_running", &m), 0.0);
    assert_eq!(get(&after, "inferno_requests_waiting", &m), 0.0);
    assert!(text.contains(&format!(
        "vllm:num_requests_waiting{{model_name=\"{MODEL}\"}} 0"
    )));
    assert!(text.contains(&format!(
        "vllm:kv_cache_usage_perc{{model_name=\"{MODEL}\"}} 0"
    )));
    assert!(!text.contains("unnamed"), "no placeholder series");
    assert_eq!(get(&after, "inferno_model_loaded", &m), 1.0);
    assert_eq!(
        get(&after, "inferno_prompt_cache_hits_total", &m),
        0.0,
        "no prompt cache yet"
    );
    assert!(get(&after, "inferno_batch_size_count", &m) > 0.0);
    assert!(get(&after, "inferno_inter_token_latency_seconds_count", &m) > 0.0);
    assert_eq!(
        get(&after, "inferno_model_load_duration_seconds_count", &m),
        1.0
    );
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        get(
            &after,
            "inferno_build_info",
            &[("version", version), ("features", "llama")]
        ),
        1.0
    );
    assert!(
        text.contains("process_resident_memory_bytes"),
        "process metrics are exported"
    );
    assert!(
        !text.contains("capital of France"),
        "no label carries a prompt"
    );
}

#[tokio::test]
async fn identities_appear_as_ids_never_as_secrets() {
    assert!(inferno::metrics::install() || inferno::metrics::render().is_some());
    let secret = "sk-inf-metrics-secret-0123456789abcdef01";
    let wrong = "sk-inf-wrong-secret-0123456789abcdef0123";
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.toml");
    std::fs::write(
        &keys,
        format!("[[keys]]\nid = \"metered\"\nsecret = \"{secret}\"\nrequests-per-minute = 1\n"),
    )
    .unwrap();
    let local = LocalModel {
        id: "metrics-auth-model".to_owned(),
        path: model().path.clone(),
    };
    let config = inferno::config::Config {
        api_keys_file: Some(keys),
        ..test_config()
    };
    let server = start_server_with(local, config);
    let body = chat_body("metrics-auth-model", "Hi", 2);
    let send = |key: &'static str| {
        client()
            .post(server.url("/v1/chat/completions"))
            .bearer_auth(key)
            .json(&body)
            .send()
    };
    assert_eq!(send(secret).await.unwrap().status(), 200);
    assert_eq!(send(secret).await.unwrap().status(), 429);
    assert_eq!(send(wrong).await.unwrap().status(), 401);
    let (text, samples) = scrape(&server);
    assert_eq!(
        get(
            &samples,
            "inferno_rate_limited_total",
            &[("identity", "metered")]
        ),
        1.0
    );
    assert!(
        !text.contains(secret) && !text.contains(wrong),
        "no secret in any label"
    );
    assert!(!text.contains("sk-inf-"), "nothing that looks like a key");
}
