//! Load generator for OpenAI-compatible completion servers (`inferno bench`).
//!
//! Runs a fixed number of streamed requests at each of several concurrency levels and
//! reports latency percentiles (TTFT, inter-token, end-to-end) and throughput. Comparing
//! aggregate generation throughput across levels shows whether a server batches
//! concurrent requests. Works against any server speaking the OpenAI streaming protocol.

mod client;
mod prompt;
mod report;
pub mod sse;
pub mod stats;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;

use client::{RequestSpec, Sample};

pub use prompt::build_prompt;
pub use report::{BenchReport, ErrorCount, LevelReport, Scaling};
pub use sse::{SseEvent, SseParser};
pub use stats::Percentiles;

/// Which OpenAI endpoint the benchmark drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Endpoint {
    /// `POST /chat/completions` with a single user message.
    Chat,
    /// `POST /completions` with a raw prompt.
    Completions,
}

impl Endpoint {
    /// Lowercase name, as on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat",
            Endpoint::Completions => "completions",
        }
    }

    /// Path appended to the base URL.
    fn path(self) -> &'static str {
        match self {
            Endpoint::Chat => "/chat/completions",
            Endpoint::Completions => "/completions",
        }
    }
}

/// What to benchmark and how hard.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Base URL including the API prefix, e.g. `http://127.0.0.1:8080/v1`.
    pub base_url: String,
    /// Model id; `None` asks `{base_url}/models` and takes the first.
    pub model: Option<String>,
    /// API shape to use.
    pub endpoint: Endpoint,
    /// Concurrency levels, run in order.
    pub concurrency: Vec<usize>,
    /// Requests per level.
    pub requests: usize,
    /// Approximate prompt length in tokens.
    pub prompt_tokens: usize,
    /// `max_tokens` of each request.
    pub max_tokens: u32,
    /// Send `ignore_eos: true` so each request generates exactly `max_tokens`.
    pub ignore_eos: bool,
    /// Sampling temperature.
    pub temperature: f32,
    /// Bearer token for servers that require one.
    pub api_key: Option<String>,
    /// Wall-time budget per level (and for the warmup); unfinished requests are aborted.
    pub level_timeout: Duration,
    /// Unmeasured requests sent one by one before the first level.
    pub warmup: usize,
}

impl Default for BenchConfig {
    fn default() -> Self {
        Self {
            base_url: "http://127.0.0.1:8080/v1".to_owned(),
            model: None,
            endpoint: Endpoint::Chat,
            concurrency: vec![1, 8],
            requests: 32,
            prompt_tokens: 64,
            max_tokens: 128,
            ignore_eos: false,
            temperature: 0.0,
            api_key: None,
            level_timeout: Duration::from_secs(300),
            warmup: 1,
        }
    }
}

/// Why a benchmark could not run (individual request failures are reported, not raised).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The configuration cannot describe a benchmark.
    #[error("invalid benchmark configuration: {0}")]
    InvalidConfig(String),
    /// The HTTP client could not be built.
    #[error("cannot build HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    /// No model was given and the server did not name one.
    #[error("cannot determine the model from {url}/models: {reason}")]
    ModelDiscovery {
        /// Base URL that was asked.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// A warmup request failed, so measuring would only collect the same failure.
    #[error("warmup request failed: {0}")]
    Warmup(String),
    /// A worker task panicked or was cancelled.
    #[error("benchmark worker failed: {0}")]
    Worker(#[from] tokio::task::JoinError),
}

/// Runs the benchmark described by `cfg` and returns its report.
pub async fn run_bench(cfg: &BenchConfig) -> Result<BenchReport, BenchError> {
    run_bench_observed(cfg, |_| {}).await
}

/// Like [`run_bench`], calling `on_level` as each level finishes (for progress output).
pub async fn run_bench_observed(
    cfg: &BenchConfig,
    mut on_level: impl FnMut(&LevelReport),
) -> Result<BenchReport, BenchError> {
    validate(cfg)?;
    let base_url = cfg.base_url.trim_end_matches('/').to_owned();
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .build()?;
    let model = match &cfg.model {
        Some(model) => model.clone(),
        None => client::discover_model(&http, &base_url, cfg.api_key.as_deref())
            .await
            .map_err(|reason| BenchError::ModelDiscovery {
                url: base_url.clone(),
                reason,
            })?,
    };
    let spec = Arc::new(RequestSpec {
        url: format!("{base_url}{}", cfg.endpoint.path()),
        endpoint: cfg.endpoint,
        model: model.clone(),
        max_tokens: cfg.max_tokens,
        temperature: cfg.temperature,
        ignore_eos: cfg.ignore_eos,
        api_key: cfg.api_key.clone(),
    });

    // Prompt indices run on across warmup and levels so no two requests share a prompt.
    let mut next_index = 0;
    let warmup_deadline = Instant::now() + cfg.level_timeout;
    for _ in 0..cfg.warmup {
        let prompt = build_prompt(next_index, cfg.prompt_tokens);
        next_index += 1;
        tokio::time::timeout_at(warmup_deadline, client::send(&http, &spec, &prompt))
            .await
            .map_err(|_| BenchError::Warmup("timed out".to_owned()))?
            .map_err(BenchError::Warmup)?;
    }

    let mut levels = Vec::with_capacity(cfg.concurrency.len());
    for &concurrency in &cfg.concurrency {
        let level = Level {
            concurrency,
            first_index: next_index,
        };
        let report = run_level(&http, &spec, cfg, level).await?;
        next_index += cfg.requests;
        on_level(&report);
        levels.push(report);
    }

    let report = BenchReport {
        url: base_url,
        model,
        endpoint: cfg.endpoint,
        prompt_tokens: cfg.prompt_tokens,
        max_tokens: cfg.max_tokens,
        ignore_eos: cfg.ignore_eos,
        levels,
        scaling: Vec::new(),
    };
    Ok(report.with_scaling())
}

fn validate(cfg: &BenchConfig) -> Result<(), BenchError> {
    let invalid = |why: &str| Err(BenchError::InvalidConfig(why.to_owned()));
    if cfg.concurrency.is_empty() {
        return invalid("at least one concurrency level is needed");
    }
    if cfg.concurrency.contains(&0) {
        return invalid("concurrency levels must be at least 1");
    }
    if cfg.requests == 0 {
        return invalid("requests per level must be at least 1");
    }
    if cfg.level_timeout.is_zero() {
        return invalid("the level timeout must be positive");
    }
    if !(cfg.base_url.starts_with("http://") || cfg.base_url.starts_with("https://")) {
        return invalid("the URL must start with http:// or https://");
    }
    Ok(())
}

/// Which level to run and where its prompt indices start.
#[derive(Debug, Clone, Copy)]
struct Level {
    concurrency: usize,
    first_index: usize,
}

/// Runs one level: `concurrency` workers take request numbers from a shared counter until
/// `cfg.requests` have been issued or the level deadline passes; requests still running at
/// the deadline are dropped (which closes their connections) and recorded as timeouts.
async fn run_level(
    http: &reqwest::Client,
    spec: &Arc<RequestSpec>,
    cfg: &BenchConfig,
    level: Level,
) -> Result<LevelReport, BenchError> {
    let start = Instant::now();
    let deadline = start + cfg.level_timeout;
    let issued = Arc::new(AtomicUsize::new(0));
    let mut workers = JoinSet::new();
    for _ in 0..level.concurrency.min(cfg.requests) {
        let http = http.clone();
        let spec = Arc::clone(spec);
        let issued = Arc::clone(&issued);
        let (requests, prompt_tokens) = (cfg.requests, cfg.prompt_tokens);
        workers.spawn(async move {
            let mut outcomes: Vec<Result<Sample, String>> = Vec::new();
            while Instant::now() < deadline {
                let n = issued.fetch_add(1, Ordering::Relaxed);
                if n >= requests {
                    break;
                }
                let prompt = build_prompt(level.first_index + n, prompt_tokens);
                let outcome =
                    tokio::time::timeout_at(deadline, client::send(&http, &spec, &prompt))
                        .await
                        .unwrap_or_else(|_| Err("timed out at the level deadline".to_owned()));
                outcomes.push(outcome);
            }
            outcomes
        });
    }
    let mut outcomes = Vec::with_capacity(cfg.requests);
    while let Some(worker) = workers.join_next().await {
        outcomes.extend(worker?);
    }
    let wall = start.elapsed();
    Ok(LevelReport::from_outcomes(
        level.concurrency,
        cfg.requests,
        &outcomes,
        wall,
    ))
}
