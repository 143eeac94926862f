//! The served models and their load state; the one owner of every [`Engine`].

use std::sync::{Arc, RwLock};

use crate::api::ModelCard;
use crate::engine::Engine;
use crate::models::chat_template::ChatTemplate;

/// Why a model cannot serve a request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RegistryError {
    /// No such model is configured.
    #[error("model '{0}' is not served here")]
    NotFound(String),
    /// The model is still loading.
    #[error("model '{0}' is loading; retry shortly")]
    Loading(String),
    /// The model failed to load.
    #[error("model '{model}' failed to load: {message}")]
    Failed {
        /// The model id.
        model: String,
        /// Why.
        message: String,
    },
}

/// A loaded model ready to serve.
#[derive(Debug)]
pub struct ServedModel {
    /// The id clients put in `model`.
    pub id: String,
    /// Its engine thread.
    pub engine: Engine,
    /// Its chat template (from GGUF metadata, or ChatML).
    pub template: ChatTemplate,
    /// Unix time it finished loading.
    pub created: u64,
}

#[derive(Debug)]
enum LoadState {
    Loading,
    Ready(Arc<ServedModel>),
    Failed(String),
}

/// The model(s) this server serves. Today one model, loaded in the background at start-up.
#[derive(Debug)]
pub struct Registry {
    id: String,
    state: RwLock<LoadState>,
}

impl Registry {
    /// A registry for model `id`, in the loading state.
    pub fn new(id: impl Into<String>) -> Self {
        Registry {
            id: id.into(),
            state: RwLock::new(LoadState::Loading),
        }
    }

    /// The id of the configured model.
    pub fn model_id(&self) -> &str {
        &self.id
    }

    /// Marks the model loaded.
    pub fn set_ready(&self, model: ServedModel) {
        *self.state.write().expect("registry lock is never poisoned") =
            LoadState::Ready(Arc::new(model));
    }

    /// Marks the model failed.
    pub fn set_failed(&self, message: impl Into<String>) {
        *self.state.write().expect("registry lock is never poisoned") =
            LoadState::Failed(message.into());
    }

    /// The model named `id`, if it is ready.
    pub fn get(&self, id: &str) -> Result<Arc<ServedModel>, RegistryError> {
        if id != self.id {
            return Err(RegistryError::NotFound(id.to_owned()));
        }
        match &*self.state.read().expect("registry lock is never poisoned") {
            LoadState::Ready(model) => Ok(model.clone()),
            LoadState::Loading => Err(RegistryError::Loading(id.to_owned())),
            LoadState::Failed(message) => Err(RegistryError::Failed {
                model: id.to_owned(),
                message: message.clone(),
            }),
        }
    }

    /// Whether every configured model is loaded and its engine running.
    pub fn readiness(&self) -> Result<(), RegistryError> {
        let model = self.get(&self.id)?;
        if model.engine.is_running() {
            Ok(())
        } else {
            Err(RegistryError::Failed {
                model: self.id.clone(),
                message: "engine thread stopped".to_owned(),
            })
        }
    }

    /// Cards of the models ready to serve.
    pub fn list(&self) -> Vec<ModelCard> {
        match &*self.state.read().expect("registry lock is never poisoned") {
            LoadState::Ready(model) => vec![ModelCard {
                id: model.id.clone(),
                object: "model".to_owned(),
                created: model.created,
                owned_by: "inferno".to_owned(),
            }],
            LoadState::Loading | LoadState::Failed(_) => Vec::new(),
        }
    }

    /// Takes the loaded model out (for shutdown); in-flight requests keep their `Arc`.
    pub fn take(&self) -> Option<Arc<ServedModel>> {
        let mut state = self.state.write().expect("registry lock is never poisoned");
        match std::mem::replace(&mut *state, LoadState::Failed("shutting down".to_owned())) {
            LoadState::Ready(model) => Some(model),
            LoadState::Loading | LoadState::Failed(_) => None,
        }
    }
}
