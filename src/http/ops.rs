//! Operational endpoints: liveness, readiness, Prometheus metrics, engine status.

use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use crate::models::registry::RegistryError;

/// Liveness and load state: 200 while the process serves (`status` is `loading` or `ok`),
/// 503 only when the model failed to load or its engine stopped.
pub async fn health(State(state): State<AppState>) -> Response {
    match state.readiness() {
        Ok(()) => (StatusCode::OK, Json(json!({"status": "ok"}))).into_response(),
        Err(RegistryError::Loading(model)) => (
            StatusCode::OK,
            Json(json!({"status": "loading", "model": model})),
        )
            .into_response(),
        Err(err) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "error", "message": err.to_string()})),
        )
            .into_response(),
    }
}

/// Liveness only: 200 whenever the HTTP server answers.
pub async fn live() -> Response {
    (StatusCode::OK, Json(json!({"status": "alive"}))).into_response()
}

/// Readiness: 200 once the model is loaded and warmed; 503 before, after a failure, and from
/// the moment shutdown begins (so load balancers stop sending traffic while requests drain).
pub async fn ready(State(state): State<AppState>) -> Response {
    let not_ready = |reason: &str| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            Json(json!({"status": "not_ready", "reason": reason})),
        )
            .into_response()
    };
    if state.is_shutting_down() {
        return not_ready("shutting_down");
    }
    match state.readiness() {
        Ok(()) => (StatusCode::OK, Json(json!({"status": "ready"}))).into_response(),
        Err(RegistryError::Loading(_)) => not_ready("loading"),
        Err(_) => not_ready("failed"),
    }
}

/// Prometheus text exposition.
pub async fn metrics() -> Response {
    match crate::metrics::render() {
        Some(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        None => (StatusCode::NOT_FOUND, "metrics recorder not installed\n").into_response(),
    }
}

/// Every model's life-cycle state, with live engine counters for the loaded ones.
pub async fn status(State(state): State<AppState>) -> Response {
    let registry = state.registry();
    let now = Instant::now();
    let models: Vec<_> = registry
        .status()
        .into_iter()
        .map(|model| {
            let engine = registry
                .loaded(&model.id)
                .map(|served| served.engine.stats().snapshot(now));
            json!({
                "id": model.id,
                "state": model.state,
                "pinned": model.pinned,
                "in_flight": model.in_flight,
                "error": model.error,
                "engine": engine,
            })
        })
        .collect();
    #[cfg(feature = "onnx")]
    let models: Vec<_> = models
        .into_iter()
        .chain(state.embedders().states().into_iter().map(|(id, model_state, error)| {
            json!({"id": id, "state": model_state, "kind": "embedding", "error": error, "engine": null})
        }))
        .collect();
    Json(json!({
        "models": models,
        "shutting_down": state.is_shutting_down(),
    }))
    .into_response()
}
