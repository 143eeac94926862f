//! `GET /v1/models`, `GET /v1/models/{id}`, and the fallbacks.

use axum::Json;
use axum::extract::{Path, Request, State};

use super::{ApiError, AppState};
use crate::api::{ModelCard, ModelList};

/// Lists the models ready to serve.
pub async fn list_models(State(state): State<AppState>) -> Json<ModelList> {
    Json(ModelList {
        object: "list".to_owned(),
        data: state.registry().list(),
    })
}

/// One model's card; ids may contain `/` (e.g. `org/model`).
pub async fn get_model(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ModelCard>, ApiError> {
    state
        .registry()
        .list()
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
