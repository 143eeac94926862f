//! The command line: one file per subcommand. `anyhow` lives only here and in `main`.

pub mod bench;
pub mod pull;
pub mod serve;

use clap::{Parser, Subcommand};

/// Inferno: an OpenAI-compatible LLM inference server for GGUF models.
#[derive(Debug, Parser)]
#[command(name = "inferno", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve a model over the OpenAI API (downloads the default model when needed).
    Serve(serve::ServeArgs),
    /// Download a model into the models dir without serving it.
    Pull(pull::PullArgs),
    /// Load-test an OpenAI-compatible server (bounded in count and time).
    Bench(bench::BenchArgs),
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    if matches!(cli.command, Command::Serve(_)) {
        serve::ensure_passive_openmp()?;
    }
    init_tracing();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Pull(args) => pull::run(args).await,
            Command::Bench(args) => bench::run(args).await,
        }
    })
}

/// Logs to stderr; `INFERNO_LOG` filters (default `info`), `INFERNO_LOG_FORMAT=json` for JSON lines.
fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("INFERNO_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,llama-cpp-2=warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    if std::env::var("INFERNO_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}
