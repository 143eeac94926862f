//! The HTTP layer: one [`router`] used by `inferno serve` and by the tests, and [`serve`],
//! which takes a bound listener so tests can bind port 0 without races.

mod chat;
mod completions;
mod error;
pub mod extract;
mod models;
mod observe;
mod ops;
mod params;
mod stream;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::HeaderName;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub use error::ApiError;

use crate::models::registry::Registry;

/// Shared state of every handler.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<StateInner>,
}

#[derive(Debug)]
struct StateInner {
    registry: Arc<Registry>,
    max_body_bytes: usize,
    shutting_down: AtomicBool,
}

impl AppState {
    /// State over `registry`, accepting bodies up to `max_body_bytes`.
    pub fn new(registry: Arc<Registry>, max_body_bytes: usize) -> Self {
        AppState {
            inner: Arc::new(StateInner {
                registry,
                max_body_bytes,
                shutting_down: AtomicBool::new(false),
            }),
        }
    }

    /// The served models.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The body size limit.
    pub fn max_body_bytes(&self) -> usize {
        self.inner.max_body_bytes
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
    Router::new()
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/v1/completions", post(completions::completions))
        .route("/v1/models", get(models::list_models))
        .route("/v1/models/{*id}", get(models::get_model))
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
        .with_state(state)
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
