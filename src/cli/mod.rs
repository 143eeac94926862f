//! The command line: one file per subcommand. `anyhow` lives only here and in `main`.

pub mod bench;
pub mod keys;
pub mod models;
pub mod pull;
pub mod quantize;
pub mod run;
pub mod serve;

use clap::{Parser, Subcommand};

/// Inferno: an OpenAI-compatible LLM inference server for GGUF models.
#[derive(Debug, Parser)]
#[command(name = "inferno", version, about)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "INFERNO_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// Export request spans over OTLP/HTTP to this collector (e.g. http://127.0.0.1:4318;
    /// needs the `otel` feature).
    #[arg(long, global = true, env = "INFERNO_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve a model over the OpenAI API (downloads the default model when needed).
    Serve(Box<serve::ServeArgs>),
    /// Download a model into the models dir without serving it.
    Pull(pull::PullArgs),
    /// Load-test an OpenAI-compatible server (bounded in count and time).
    Bench(bench::BenchArgs),
    /// Make API keys.
    Keys(keys::KeysArgs),
    /// Chat in the terminal: one question with a PROMPT, else interactive.
    Run(Box<run::RunArgs>),
    /// Inspect and manage the models in the models dir.
    Models(models::ModelsArgs),
    /// Plan GPU offload for a model: how many layers fit in the given GPU memory, and why.
    Plan(models::PlanArgs),
    /// Quantize a GGUF model (F32/F16/BF16) to a smaller type with llama.cpp, e.g. `--type q4_k_m`.
    Quantize(quantize::QuantizeArgs),
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    if matches!(cli.command, Command::Serve(_) | Command::Run(_)) {
        serve::ensure_passive_openmp()?;
    }
    if let Command::Keys(args) = cli.command {
        return keys::run(args);
    }
    // A terminal chat shows answers, not the in-process server's log lines.
    let default_filter = if matches!(cli.command, Command::Run(_)) {
        "warn,llama-cpp-2=error"
    } else {
        "info,llama-cpp-2=warn"
    };
    let _trace_guard = init_tracing(cli.log_format, cli.otlp_endpoint.as_deref(), default_filter)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(*args).await,
            Command::Pull(args) => pull::run(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Keys(args) => keys::run(args),
            Command::Models(args) => models::run(args).await,
            Command::Run(args) => run::run(*args).await,
            Command::Plan(args) => models::plan(args).await,
            Command::Quantize(args) => quantize::run(args).await,
        }
    })
}

/// Keeps the trace exporter alive until the process ends (flushing it on drop).
#[cfg(feature = "otel")]
type TraceGuard = Option<crate::telemetry::TelemetryGuard>;
#[cfg(not(feature = "otel"))]
type TraceGuard = Option<std::convert::Infallible>;

/// Logs to stderr, filtered by `INFERNO_LOG` or else `RUST_LOG` (else `default_filter`); with
/// `--otlp-endpoint` (feature `otel`) also exports spans over OTLP/HTTP.
fn init_tracing(
    format: LogFormat,
    otlp_endpoint: Option<&str>,
    default_filter: &str,
) -> anyhow::Result<TraceGuard> {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let filter = EnvFilter::try_from_env("INFERNO_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new(default_filter));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let fmt = match format {
        LogFormat::Json => fmt.json().boxed(),
        LogFormat::Text => fmt.boxed(),
    };
    let registry = tracing_subscriber::registry().with(filter).with(fmt);
    #[cfg(feature = "otel")]
    {
        let Some(endpoint) = otlp_endpoint else {
            registry.init();
            return Ok(None);
        };
        let (layer, guard) = crate::telemetry::otlp_layer(endpoint, "inferno")?;
        registry.with(layer).init();
        Ok(Some(guard))
    }
    #[cfg(not(feature = "otel"))]
    {
        anyhow::ensure!(
            otlp_endpoint.is_none(),
            "--otlp-endpoint needs a build with the `otel` feature (make build FEATURES=\"--features otel\")"
        );
        registry.init();
        Ok(None)
    }
}
