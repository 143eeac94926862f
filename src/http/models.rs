//! `GET /v1/models`, `GET /v1/models/{id}`, and the fallbacks.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::{Extension, Json};

use super::{ApiError, AppState};
use crate::api::{ModelCard, ModelList};
use crate::auth::Identity;

/// Lists the models ready to serve that the caller may use (others are not revealed).
pub async fn list_models(
    State(state): State<AppState>,
    Extension(identity): Extension<Arc<Identity>>,
) -> Json<ModelList> {
    Json(ModelList {
        object: "list".to_owned(),
        data: visible_models(&state, &identity),
    })
}

fn visible_models(state: &AppState, identity: &Identity) -> Vec<ModelCard> {
    let mut cards = state.registry().list();
    #[cfg(feature = "onnx")]
    cards.extend(state.embedders().cards());
    cards.retain(|card| identity.may_use(&card.id));
    cards
}

/// One model's card; ids may contain `/` (e.g. `org/model`). 404 also for models the caller
/// may not use.
pub async fn get_model(
    State(state): State<AppState>,
    Extension(identity): Extension<Arc<Identity>>,
    Path(id): Path<String>,
) -> Result<Json<ModelCard>, ApiError> {
    visible_models(&state, &identity)
        .into_iter()
        .find(|card| card.id == id)
        .map(Json)
        .ok_or_else(|| ApiError::model_not_found(&id))
}

/// 404 in OpenAI's shape for unknown paths.
pub async fn unknown_route(request: Request) -> ApiError {
    ApiError::unknown_route(request.method().as_str(), request.uri().path())
}

/// 405 in OpenAI's shape for a known path with the wrong method.
pub async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::method_not_allowed(request.method().as_str(), request.uri().path())
}
