//! The HTTP layer: one [`router`] used by `inferno serve` and by the tests, and [`serve`],
//! which takes a bound listener so tests can bind port 0 without races.

mod chat;
mod completions;
mod error;
pub mod extract;
mod models;
mod params;
mod stream;

use std::future::Future;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::HeaderName;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tower_http::request_id::{
    MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
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
}

impl AppState {
    /// State over `registry`, accepting bodies up to `max_body_bytes`.
    pub fn new(registry: Arc<Registry>, max_body_bytes: usize) -> Self {
        AppState {
            inner: Arc::new(StateInner {
                registry,
                max_body_bytes,
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
        .route("/health", get(models::health))
        .fallback(models::unknown_route)
        .method_not_allowed_fallback(models::method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
            let id = request
                .extensions()
                .get::<RequestId>()
                .and_then(|id| id.header_value().to_str().ok())
                .unwrap_or("-");
            tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id = %id)
        }))
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
