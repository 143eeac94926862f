//! Every metric name, spelled once, the Prometheus recorder, and per-engine metric handles.
//!
//! Recording goes through the `metrics` facade: without an installed recorder the calls are
//! no-ops, so the engine records unconditionally. Labels carry only bounded, non-secret values:
//! model ids of loaded models, endpoint paths, status codes, error kinds, identity ids.

use std::sync::OnceLock;

use metrics::{
    Counter, Gauge, Histogram, counter, describe_counter, describe_gauge, describe_histogram,
    gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// HTTP requests by model, endpoint and status code (counter).
pub const REQUESTS: &str = "inferno_requests_total";
/// End-to-end inference time, submission to last token (histogram, seconds).
pub const INFERENCE_DURATION: &str = "inferno_inference_duration_seconds";
/// Submission to first generated token (histogram, seconds).
pub const TIME_TO_FIRST_TOKEN: &str = "inferno_time_to_first_token_seconds";
/// Time between consecutive generated tokens of one request (histogram, seconds).
pub const INTER_TOKEN_LATENCY: &str = "inferno_inter_token_latency_seconds";
/// Submission to admission into a sequence slot (histogram, seconds).
pub const QUEUE_WAIT: &str = "inferno_queue_wait_seconds";
/// Prompt tokens admitted (counter).
pub const PROMPT_TOKENS: &str = "inferno_prompt_tokens_total";
/// Tokens generated (counter).
pub const GENERATION_TOKENS: &str = "inferno_generation_tokens_total";
/// Requests holding a sequence slot (gauge).
pub const REQUESTS_RUNNING: &str = "inferno_requests_running";
/// Requests waiting for a slot (gauge).
pub const REQUESTS_WAITING: &str = "inferno_requests_waiting";
/// Share of KV-cache cells in use, 0..1 (gauge).
pub const KV_CACHE_USAGE: &str = "inferno_kv_cache_usage_ratio";
/// Sequences per engine step (histogram).
pub const BATCH_SIZE: &str = "inferno_batch_size";
/// Tokens per engine step (histogram).
pub const BATCH_TOKENS: &str = "inferno_batch_tokens";
/// Prompt tokens served from a prompt cache instead of computed (counter).
pub const PROMPT_CACHE_HITS: &str = "inferno_prompt_cache_hits_total";
/// Prompt tokens looked up in the prompt cache (counter).
pub const PROMPT_CACHE_QUERIES: &str = "inferno_prompt_cache_queries_total";
/// Time to load a model (histogram, seconds).
pub const MODEL_LOAD_DURATION: &str = "inferno_model_load_duration_seconds";
/// 1 while a model is loaded and serving (gauge).
pub const MODEL_LOADED: &str = "inferno_model_loaded";
/// Models unloaded, by reason: `idle`, `lru`, `admin`, `shutdown` (counter).
pub const MODEL_EVICTIONS: &str = "inferno_model_evictions_total";
/// Failed requests by model and error kind (counter).
pub const ERRORS: &str = "inferno_errors_total";
/// Requests cancelled because the client left (counter).
pub const CANCELLED: &str = "inferno_cancelled_requests_total";
/// Build information; the value is always 1 (gauge).
pub const BUILD_INFO: &str = "inferno_build_info";
/// Requests rejected by a rate limit, by identity id (counter).
pub const RATE_LIMITED: &str = "inferno_rate_limited_total";
/// vLLM-compatible name scraped by the Gateway API Inference Extension and KEDA recipes.
pub const VLLM_WAITING: &str = "vllm:num_requests_waiting";
/// vLLM-compatible name of the running-requests gauge.
pub const VLLM_RUNNING: &str = "vllm:num_requests_running";
/// vLLM-compatible name of the KV-cache usage gauge (0..1).
pub const VLLM_KV_USAGE: &str = "vllm:kv_cache_usage_perc";

/// Latency buckets from milliseconds to minutes.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
];
/// Buckets for per-step sequence counts.
const BATCH_SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
/// Buckets for per-step token counts.
const BATCH_TOKEN_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
];

/// Features compiled in, for `inferno_build_info`.
fn features() -> &'static str {
    if cfg!(feature = "cuda") {
        "llama,cuda"
    } else if cfg!(feature = "metal") {
        "llama,metal"
    } else if cfg!(feature = "rocm") {
        "llama,rocm"
    } else if cfg!(feature = "vulkan") {
        "llama,vulkan"
    } else if cfg!(feature = "llama") {
        "llama"
    } else {
        "none"
    }
}

struct Exporter {
    handle: PrometheusHandle,
    process: metrics_process::Collector,
}

static EXPORTER: OnceLock<Option<Exporter>> = OnceLock::new();

/// Installs the Prometheus recorder once per process (later calls are no-ops). Returns false when
/// another recorder was installed first.
pub fn install() -> bool {
    EXPORTER
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(BATCH_SIZE.to_owned()),
                        BATCH_SIZE_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(BATCH_TOKENS.to_owned()),
                        BATCH_TOKEN_BUCKETS,
                    )
                })
                .expect("bucket lists are non-empty");
            let handle = builder.install_recorder().ok()?;
            let process = metrics_process::Collector::default();
            process.describe();
            describe();
            gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "features" => features())
                .set(1.0);
            Some(Exporter { handle, process })
        })
        .is_some()
}

/// The Prometheus text exposition of every metric (process metrics refreshed first).
pub fn render() -> Option<String> {
    let exporter = EXPORTER.get()?.as_ref()?;
    exporter.process.collect();
    exporter.handle.run_upkeep();
    Some(exporter.handle.render())
}

fn describe() {
    describe_counter!(REQUESTS, "HTTP requests by model, endpoint and status code");
    describe_histogram!(
        INFERENCE_DURATION,
        metrics::Unit::Seconds,
        "Submission to last token"
    );
    describe_histogram!(
        TIME_TO_FIRST_TOKEN,
        metrics::Unit::Seconds,
        "Submission to first generated token"
    );
    describe_histogram!(
        INTER_TOKEN_LATENCY,
        metrics::Unit::Seconds,
        "Time between generated tokens of a request"
    );
    describe_histogram!(
        QUEUE_WAIT,
        metrics::Unit::Seconds,
        "Submission to admission into a sequence slot"
    );
    describe_counter!(PROMPT_TOKENS, "Prompt tokens admitted");
    describe_counter!(GENERATION_TOKENS, "Tokens generated");
    describe_gauge!(REQUESTS_RUNNING, "Requests holding a sequence slot");
    describe_gauge!(REQUESTS_WAITING, "Requests waiting for a sequence slot");
    describe_gauge!(KV_CACHE_USAGE, "Share of KV-cache cells in use (0-1)");
    describe_histogram!(BATCH_SIZE, "Sequences per engine step");
    describe_histogram!(BATCH_TOKENS, "Tokens per engine step");
    describe_counter!(
        PROMPT_CACHE_HITS,
        "Prompt tokens reused from a prompt cache"
    );
    describe_counter!(
        PROMPT_CACHE_QUERIES,
        "Prompt tokens looked up in the prompt cache"
    );
    describe_histogram!(
        MODEL_LOAD_DURATION,
        metrics::Unit::Seconds,
        "Time to load a model"
    );
    describe_gauge!(MODEL_LOADED, "1 while the model is loaded");
    describe_counter!(
        MODEL_EVICTIONS,
        "Models unloaded, by reason (idle, lru, admin, shutdown)"
    );
    describe_counter!(ERRORS, "Failed requests by model and error kind");
    describe_counter!(CANCELLED, "Requests cancelled because the client left");
    describe_gauge!(BUILD_INFO, "Build information (value 1)");
    describe_counter!(
        RATE_LIMITED,
        "Requests rejected by a rate limit, by identity id"
    );
    describe_gauge!(VLLM_WAITING, "Requests waiting (vLLM-compatible name)");
    describe_gauge!(VLLM_RUNNING, "Requests running (vLLM-compatible name)");
    describe_gauge!(VLLM_KV_USAGE, "KV-cache usage 0-1 (vLLM-compatible name)");
}

/// Metric handles of one model's engine, registered once so the hot path does no lookups.
#[derive(Debug, Clone)]
pub struct EngineMetrics {
    running: [Gauge; 2],
    waiting: [Gauge; 2],
    kv_usage: [Gauge; 2],
    /// Submission to first token.
    pub time_to_first_token: Histogram,
    /// Between tokens.
    pub inter_token_latency: Histogram,
    /// Submission to admission.
    pub queue_wait: Histogram,
    /// Submission to finish.
    pub inference_duration: Histogram,
    /// Prompt tokens admitted.
    pub prompt_tokens: Counter,
    /// Tokens generated.
    pub generation_tokens: Counter,
    /// Sequences per step.
    pub batch_size: Histogram,
    /// Tokens per step.
    pub batch_tokens: Histogram,
    /// Prompt tokens reused from a cache.
    pub prompt_cache_hits: Counter,
    /// Prompt tokens looked up.
    pub prompt_cache_queries: Counter,
    /// Requests whose client left.
    pub cancelled: Counter,
}

impl EngineMetrics {
    /// Handles that record nothing (an engine nobody observes, e.g. in unit tests).
    pub fn noop() -> Self {
        EngineMetrics {
            running: [Gauge::noop(), Gauge::noop()],
            waiting: [Gauge::noop(), Gauge::noop()],
            kv_usage: [Gauge::noop(), Gauge::noop()],
            time_to_first_token: Histogram::noop(),
            inter_token_latency: Histogram::noop(),
            queue_wait: Histogram::noop(),
            inference_duration: Histogram::noop(),
            prompt_tokens: Counter::noop(),
            generation_tokens: Counter::noop(),
            batch_size: Histogram::noop(),
            batch_tokens: Histogram::noop(),
            prompt_cache_hits: Counter::noop(),
            prompt_cache_queries: Counter::noop(),
            cancelled: Counter::noop(),
        }
    }

    /// Handles labelled with `model`.
    pub fn new(model: &str) -> Self {
        let m = model.to_owned();
        EngineMetrics {
            running: [
                gauge!(REQUESTS_RUNNING, "model" => m.clone()),
                gauge!(VLLM_RUNNING, "model_name" => m.clone()),
            ],
            waiting: [
                gauge!(REQUESTS_WAITING, "model" => m.clone()),
                gauge!(VLLM_WAITING, "model_name" => m.clone()),
            ],
            kv_usage: [
                gauge!(KV_CACHE_USAGE, "model" => m.clone()),
                gauge!(VLLM_KV_USAGE, "model_name" => m.clone()),
            ],
            time_to_first_token: histogram!(TIME_TO_FIRST_TOKEN, "model" => m.clone()),
            inter_token_latency: histogram!(INTER_TOKEN_LATENCY, "model" => m.clone()),
            queue_wait: histogram!(QUEUE_WAIT, "model" => m.clone()),
            inference_duration: histogram!(INFERENCE_DURATION, "model" => m.clone()),
            prompt_tokens: counter!(PROMPT_TOKENS, "model" => m.clone()),
            generation_tokens: counter!(GENERATION_TOKENS, "model" => m.clone()),
            batch_size: histogram!(BATCH_SIZE, "model" => m.clone()),
            batch_tokens: histogram!(BATCH_TOKENS, "model" => m.clone()),
            prompt_cache_hits: counter!(PROMPT_CACHE_HITS, "model" => m.clone()),
            prompt_cache_queries: counter!(PROMPT_CACHE_QUERIES, "model" => m.clone()),
            cancelled: counter!(CANCELLED, "model" => m),
        }
    }

    /// Sets the running-requests gauges.
    pub fn set_running(&self, n: usize) {
        self.running.iter().for_each(|g| g.set(n as f64));
    }

    /// Sets the waiting-requests gauges.
    pub fn set_waiting(&self, n: usize) {
        self.waiting.iter().for_each(|g| g.set(n as f64));
    }

    /// Sets the KV-usage gauges (0..1).
    pub fn set_kv_usage(&self, ratio: f64) {
        self.kv_usage.iter().for_each(|g| g.set(ratio));
    }
}

/// Records a finished HTTP request.
pub fn record_request(model: &str, endpoint: &'static str, status: u16) {
    counter!(REQUESTS, "model" => model.to_owned(), "endpoint" => endpoint, "status" => status.to_string()).increment(1);
}

/// Records a failed request by error kind (a fixed vocabulary, never a message).
pub fn record_error(model: &str, kind: &'static str) {
    counter!(ERRORS, "model" => model.to_owned(), "kind" => kind).increment(1);
}

/// Records a model load.
pub fn record_model_load(model: &str, seconds: f64, loaded: bool) {
    histogram!(MODEL_LOAD_DURATION, "model" => model.to_owned()).record(seconds);
    gauge!(MODEL_LOADED, "model" => model.to_owned()).set(if loaded { 1.0 } else { 0.0 });
}

/// Records that `model` is being unloaded for `reason`.
pub fn record_eviction(model: &str, reason: &'static str) {
    counter!(MODEL_EVICTIONS, "model" => model.to_owned(), "reason" => reason).increment(1);
}

/// Records that `model` left memory.
pub fn record_model_unloaded(model: &str) {
    gauge!(MODEL_LOADED, "model" => model.to_owned()).set(0.0);
}

/// Records a request rejected by a rate limit.
pub fn record_rate_limited(identity: &str) {
    counter!(RATE_LIMITED, "identity" => identity.to_owned()).increment(1);
}
