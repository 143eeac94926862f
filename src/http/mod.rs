//! The HTTP layer: one [`router`] used by `inferno serve` and by the tests, and [`serve`],
//! which takes a bound listener so tests can bind port 0 without races.

mod access;
mod admin;
mod chat;
mod completions;
#[cfg(feature = "onnx")]
mod embeddings;
mod error;
pub mod extract;
mod models;
mod observe;
mod ops;
mod params;
mod respond;
mod stream;
mod webui;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub use access::{AccessControl, InFlight};
pub use error::ApiError;

use crate::auth::{AuthError, Authenticator, Limits};
use crate::config::Config;
#[cfg(feature = "onnx")]
use crate::models::embedders::Embedders;
use crate::models::registry::Registry;

/// Request handling limits of the HTTP layer, from the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpSettings {
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Wall-clock limit of a request.
    pub request_timeout: Duration,
    /// Longest wait for a sequence slot.
    pub queue_timeout: Duration,
    /// Most messages in a chat request.
    pub max_messages: usize,
    /// Origins allowed by CORS; `None` disables CORS.
    pub cors_origins: Option<Vec<String>>,
    /// Serve the chat page at `/`.
    pub web_ui: bool,
}

impl HttpSettings {
    /// The HTTP part of `config`.
    pub fn from_config(config: &Config) -> Self {
        HttpSettings {
            max_body_bytes: config.max_body_bytes,
            request_timeout: Duration::from_secs(config.request_timeout_secs),
            queue_timeout: Duration::from_secs(config.queue_timeout_secs),
            max_messages: config.max_messages,
            cors_origins: config.cors_origin_list(),
            web_ui: config.web_ui_enabled(),
        }
    }
}

/// Shared state of every handler.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<StateInner>,
}

#[derive(Debug)]
struct StateInner {
    registry: Arc<Registry>,
    settings: HttpSettings,
    access: Arc<AccessControl>,
    shutting_down: AtomicBool,
    /// The ONNX embedding models, once [`AppState::set_embedders`] was called.
    #[cfg(feature = "onnx")]
    embedders: std::sync::OnceLock<Arc<Embedders>>,
}

impl AppState {
    /// State over `registry` with `settings` and `access` control.
    pub fn new(
        registry: Arc<Registry>,
        settings: HttpSettings,
        access: Arc<AccessControl>,
    ) -> Self {
        AppState {
            inner: Arc::new(StateInner {
                registry,
                settings,
                access,
                shutting_down: AtomicBool::new(false),
                #[cfg(feature = "onnx")]
                embedders: std::sync::OnceLock::new(),
            }),
        }
    }

    /// State for `config`: loads the API keys and JWT keys it names.
    pub fn from_config(registry: Arc<Registry>, config: &Config) -> Result<Self, AuthError> {
        let authenticator = Authenticator::load(&config.auth())?;
        let defaults = Limits {
            requests_per_minute: config.rate_limit_rpm,
            tokens_per_minute: config.rate_limit_tpm,
            max_concurrent: config.max_concurrent_per_identity,
        };
        let window = Duration::from_secs(config.rate_limit_window_secs);
        let access = Arc::new(AccessControl::new(Some(authenticator), defaults, window));
        Ok(AppState::new(
            registry,
            HttpSettings::from_config(config),
            access,
        ))
    }

    /// The served models.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.inner.registry
    }

    /// Starts loading the embedding models `config` names and serves them once loaded (call
    /// once, inside the runtime; without the `onnx` feature, config validation has already
    /// refused embedding models).
    pub fn start_embedders(&self, config: &Config) -> Result<(), String> {
        let specs = config.embedding_specs()?;
        #[cfg(feature = "onnx")]
        {
            let embedders = Embedders::start(
                specs,
                config.onnx_runtime.clone(),
                &config.models_dir,
                &config.pull_options(false),
            );
            let _ = self.inner.embedders.set(embedders);
        }
        #[cfg(not(feature = "onnx"))]
        let _ = specs;
        Ok(())
    }

    /// The embedding models (none until set).
    #[cfg(feature = "onnx")]
    pub fn embedders(&self) -> &Embedders {
        static NONE: std::sync::LazyLock<Embedders> = std::sync::LazyLock::new(Embedders::default);
        self.inner.embedders.get().map_or(&NONE, |e| e.as_ref())
    }

    /// Ready when the pinned models and the embedding models have loaded.
    pub fn readiness(&self) -> Result<(), crate::models::registry::RegistryError> {
        self.registry().readiness()?;
        #[cfg(feature = "onnx")]
        self.embedders().readiness()?;
        Ok(())
    }

    /// Request limits.
    pub fn settings(&self) -> &HttpSettings {
        &self.inner.settings
    }

    /// Authentication and per-identity limits.
    pub fn access(&self) -> &Arc<AccessControl> {
        &self.inner.access
    }

    /// The body size limit.
    pub fn max_body_bytes(&self) -> usize {
        self.inner.settings.max_body_bytes
    }

    /// Marks the server as shutting down: `/ready` answers 503 from now on.
    pub fn begin_shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::SeqCst)
    }
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The full application: OpenAI routes, health, and the layers every request passes.
pub fn router(state: AppState) -> Router {
    let limit = state.max_body_bytes();
    let api = Router::new()
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/v1/completions", post(completions::completions))
        .route("/v1/models", get(models::list_models))
        .route("/v1/models/{*id}", get(models::get_model));
    #[cfg(feature = "onnx")]
    let api = api.route("/v1/embeddings", post(embeddings::embeddings));
    let api = api.route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        access::authenticate,
    ));
    let admin = Router::new()
        .route("/admin/models", get(admin::list))
        .route("/admin/models/{id}", get(admin::show))
        .route("/admin/models/{id}/load", post(admin::load))
        .route("/admin/models/{id}/unload", post(admin::unload))
        .route_layer(axum::middleware::from_fn(admin::require_admin))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            access::authenticate,
        ));
    let cors = state.settings().cors_origins.clone().map(cors_layer);
    let page = if state.settings().web_ui {
        webui::routes()
    } else {
        Router::new()
    };
    Router::new()
        .merge(page)
        .merge(api)
        .merge(admin)
        .route("/health", get(ops::health))
        .route("/live", get(ops::live))
        .route("/ready", get(ops::ready))
        .route("/metrics", get(ops::metrics))
        .route("/status", get(ops::status))
        .fallback(models::unknown_route)
        .method_not_allowed_fallback(models::method_not_allowed)
        .layer(axum::middleware::from_fn(observe::track))
        .layer(DefaultBodyLimit::max(limit))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http().make_span_with(observe::request_span))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(tower::util::option_layer(cors))
        .with_state(state)
}

/// CORS for the configured origins (`*` allows any); off unless configured.
fn cors_layer(origins: Vec<String>) -> CorsLayer {
    let layer = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("x-api-key"),
        ])
        .expose_headers([HeaderName::from_static("x-request-id"), header::RETRY_AFTER]);
    if origins.iter().any(|o| o == "*") {
        layer.allow_origin(AllowOrigin::any())
    } else {
        let values = origins.iter().filter_map(|o| HeaderValue::from_str(o).ok());
        layer.allow_origin(AllowOrigin::list(values))
    }
}

/// Serves `state` on `listener` until `shutdown` resolves, then waits for in-flight requests.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Seconds since the Unix epoch, for `created` fields.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
