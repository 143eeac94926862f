//! `inferno bench`: load-test an OpenAI-compatible server and print latency/throughput.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

use crate::bench::{BenchConfig, BenchReport, Endpoint, LevelReport};

/// Command-line options of `inferno bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Base URL of the server, including the API prefix.
    #[arg(long, default_value = "http://127.0.0.1:8080/v1")]
    pub url: String,

    /// Model id to request [default: the first model listed by {url}/models].
    #[arg(long)]
    pub model: Option<String>,

    /// API endpoint to drive.
    #[arg(long, value_enum, default_value_t = Endpoint::Chat)]
    pub endpoint: Endpoint,

    /// Comma-separated concurrency levels, run in order.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    pub concurrency: Vec<usize>,

    /// Requests per concurrency level.
    #[arg(long, default_value_t = 32)]
    pub requests: usize,

    /// Approximate prompt length in tokens.
    #[arg(long, default_value_t = 64)]
    pub prompt_tokens: usize,

    /// Maximum tokens to generate per request.
    #[arg(long, default_value_t = 128)]
    pub max_tokens: u32,

    /// Send `"ignore_eos": true` so every request generates exactly --max-tokens.
    #[arg(long)]
    pub ignore_eos: bool,

    /// Sampling temperature.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,

    /// API key sent as a Bearer token.
    #[arg(long, env = "INFERNO_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Wall-time limit per level in seconds; requests still running then count as errors.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,

    /// Also write the full report as JSON to this path (`-` for stdout; the table then
    /// goes to stderr).
    #[arg(long)]
    pub json: Option<PathBuf>,

    /// Unmeasured requests sent before the first level.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
}

impl BenchArgs {
    /// The library configuration these options describe.
    pub fn to_config(&self) -> BenchConfig {
        BenchConfig {
            base_url: self.url.clone(),
            model: self.model.clone(),
            endpoint: self.endpoint,
            concurrency: self.concurrency.clone(),
            requests: self.requests,
            prompt_tokens: self.prompt_tokens,
            max_tokens: self.max_tokens,
            ignore_eos: self.ignore_eos,
            temperature: self.temperature,
            api_key: self.api_key.clone().filter(|key| !key.is_empty()),
            level_timeout: Duration::from_secs(self.timeout),
            warmup: self.warmup,
        }
    }
}

/// Runs the benchmark, printing progress to stderr and the report to stdout (and JSON).
/// Fails if no request at all succeeded, so scripts notice a dead or misconfigured server.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let cfg = args.to_config();
    eprintln!(
        "bench: {} ({}), levels {:?}, {} requests each",
        cfg.base_url,
        cfg.endpoint.as_str(),
        cfg.concurrency,
        cfg.requests
    );
    let report = crate::bench::run_bench_observed(&cfg, print_progress)
        .await
        .context("benchmark failed")?;

    let json_to_stdout = args.json.as_deref().is_some_and(|p| p.as_os_str() == "-");
    if json_to_stdout {
        eprint!("{}", report.render_table());
        println!("{}", to_json(&report)?);
    } else {
        print!("{}", report.render_table());
        if let Some(path) = &args.json {
            std::fs::write(path, to_json(&report)? + "\n")
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("bench: report written to {}", path.display());
        }
    }

    if report.levels.iter().all(|level| level.ok == 0) {
        anyhow::bail!("no request succeeded");
    }
    Ok(())
}

fn print_progress(level: &LevelReport) {
    eprintln!(
        "bench: c={} done: {}/{} ok in {:.1}s, {:.1} gen tok/s",
        level.concurrency, level.ok, level.requests, level.wall_s, level.gen_tokens_per_s
    );
}

fn to_json(report: &BenchReport) -> anyhow::Result<String> {
    serde_json::to_string_pretty(report).context("cannot serialize the report")
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn parse(args: &[&str]) -> BenchArgs {
        let argv = std::iter::once("bench").chain(args.iter().copied());
        Cli::try_parse_from(argv).expect("valid arguments").bench
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let cfg = parse(&[]).to_config();
        let default = BenchConfig::default();
        assert_eq!(cfg.base_url, default.base_url);
        assert_eq!(cfg.concurrency, [1, 8]);
        assert_eq!(
            (cfg.requests, cfg.prompt_tokens, cfg.max_tokens),
            (32, 64, 128)
        );
        assert_eq!(cfg.endpoint, Endpoint::Chat);
        assert_eq!(cfg.level_timeout, Duration::from_secs(300));
        assert_eq!(
            (cfg.warmup, cfg.ignore_eos, cfg.temperature),
            (1, false, 0.0)
        );
        assert!(cfg.model.is_none());
    }

    #[test]
    fn options_reach_the_config() {
        let args = parse(&[
            "--url=http://127.0.0.1:9000/v1",
            "--model=m",
            "--endpoint=completions",
            "--concurrency=1,4,16",
            "--requests=8",
            "--ignore-eos",
            "--api-key=secret",
            "--timeout=5",
            "--json=-",
        ]);
        let cfg = args.to_config();
        assert_eq!(cfg.concurrency, [1, 4, 16]);
        assert_eq!(cfg.endpoint, Endpoint::Completions);
        assert_eq!(cfg.model.as_deref(), Some("m"));
        assert_eq!(cfg.api_key.as_deref(), Some("secret"));
        assert_eq!(cfg.level_timeout, Duration::from_secs(5));
        assert!(cfg.ignore_eos);
        assert_eq!(args.json, Some(PathBuf::from("-")));
    }

    #[test]
    fn bad_values_are_rejected() {
        assert!(Cli::try_parse_from(["bench", "--endpoint=embeddings"]).is_err());
        assert!(Cli::try_parse_from(["bench", "--concurrency=1,x"]).is_err());
    }
}
