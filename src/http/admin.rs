//! The admin API: model life cycle by hand. `GET /admin/models`, `GET /admin/models/{id}`,
//! `POST /admin/models/{id}/load`, `POST /admin/models/{id}/unload`. Needs an admin identity
//! (`admin = true` on the key, or an `admin: true` JWT claim) when authentication is on.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::json;

use super::{ApiError, AppState};
use crate::auth::Identity;

/// Lets only admin identities through.
pub async fn require_admin(
    Extension(identity): Extension<Arc<Identity>>,
    request: Request,
    next: Next,
) -> Response {
    if identity.admin {
        next.run(request).await
    } else {
        ApiError::admin_required().into_response()
    }
}

/// Every model: state, memory, last use, load time.
pub async fn list(State(state): State<AppState>) -> Response {
    Json(json!({"object": "list", "data": state.registry().status()})).into_response()
}

/// One model's state, plus what its GGUF header says when the file is local.
pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let registry = state.registry();
    let spec = registry.spec(&id)?;
    let status = registry
        .status()
        .into_iter()
        .find(|model| model.id == spec.id)
        .ok_or_else(|| ApiError::model_not_found(&id))?;
    let header = match status.path.clone() {
        Some(path) => crate::models::inspect(path)
            .await
            .map_or_else(|err| json!({"error": err}), |info| json!(info)),
        None => {
            json!({"error": "the model file is not known until the model is first loaded (it may still need downloading)"})
        }
    };
    Ok(Json(json!({"model": status, "gguf": header})).into_response())
}

/// Loads a model now (retrying an earlier failure); answers when it is loaded.
pub async fn load(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    state.registry().load(&id).await?;
    Ok(Json(json!({"id": id, "state": "loaded"})).into_response())
}

/// Unloads a model once its in-flight requests end; answers when it is gone.
pub async fn unload(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    state.registry().unload(&id).await?;
    Ok(Json(json!({"id": id, "state": "available"})).into_response())
}
