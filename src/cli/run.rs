//! `inferno run [MODEL] [PROMPT]`: chat in the terminal. With a prompt it prints the answer and
//! exits (only the answer on stdout); without one it is an interactive chat. It talks to a
//! server with `--url`, or starts one in-process on a private loopback port, so both ways share
//! one client and every server feature (templates, validation, limits) applies.

mod client;
mod repl;

use std::io::{IsTerminal, Read, Write};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};

use self::client::{Client, Outcome, Settings};
use crate::config::{Config, ServeOptions};
use crate::http::AppState;
use crate::models::registry::RegistryError;

/// Arguments of `inferno run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The model: a path, a name in the models dir, a catalog name or a source (default: the
    /// default model); with `--url`, a model id of that server (default: its first).
    #[arg(value_name = "MODEL")]
    pub model_name: Option<String>,
    /// Ask this and exit (`-`, or no prompt with stdin not a terminal, reads it from stdin);
    /// without it, an interactive chat.
    pub prompt: Option<String>,
    /// Talk to this running server instead of starting one.
    #[arg(long, env = "INFERNO_URL")]
    pub url: Option<String>,
    /// API key for `--url`.
    #[arg(long, env = "INFERNO_API_KEY")]
    pub api_key: Option<String>,
    /// System prompt.
    #[arg(long, default_value = "You are a helpful assistant.")]
    pub system: String,
    /// Most tokens per answer.
    #[arg(long)]
    pub max_tokens: Option<u32>,
    /// Sampling temperature (0 = greedy).
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Seed for sampling.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print timings and tokens/s after each answer (on stderr).
    #[arg(long, short)]
    pub verbose: bool,
    /// Engine options for the in-process server (same as `inferno serve`).
    #[command(flatten)]
    pub serve: ServeOptions,
}

/// A chat session: which server and model, the conversation, the settings.
pub(crate) struct Session {
    client: Client,
    model: String,
    system: String,
    messages: Vec<Value>,
    settings: Settings,
    last: Option<client::Stats>,
    verbose: bool,
    /// Colours on stderr (a terminal, and `NO_COLOR` unset).
    color: bool,
}

impl Session {
    /// The messages to send for `user`: system, history, the new turn.
    fn turn(&self, user: &str) -> Vec<Value> {
        let mut messages = Vec::with_capacity(self.messages.len() + 2);
        if !self.system.is_empty() {
            messages.push(json!({"role": "system", "content": self.system}));
        }
        messages.extend(self.messages.iter().cloned());
        messages.push(json!({"role": "user", "content": user}));
        messages
    }

    /// Asks `user`, streaming the answer to stdout; Ctrl-C stops the answer only.
    async fn ask(&mut self, user: &str) -> anyhow::Result<()> {
        let messages = self.turn(user);
        let mut stdout = std::io::stdout();
        let stop = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        let outcome = self
            .client
            .chat(&self.model, &messages, &self.settings, &mut stdout, stop)
            .await?;
        let text = match outcome {
            Outcome::Done(text, stats) => {
                writeln!(stdout)?;
                if self.verbose {
                    self.note(&stats.to_string());
                }
                self.last = Some(stats);
                text
            }
            Outcome::Stopped(text) => {
                writeln!(stdout)?;
                self.note("(stopped)");
                text
            }
        };
        self.messages.push(json!({"role": "user", "content": user}));
        self.messages
            .push(json!({"role": "assistant", "content": text}));
        Ok(())
    }

    /// A line on stderr, dimmed on a colour terminal.
    fn note(&self, text: &str) {
        if self.color {
            eprintln!("\x1b[2m{text}\x1b[0m");
        } else {
            eprintln!("{text}");
        }
    }
}

/// Runs `inferno run`.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    // `-` reads the prompt from stdin, and so does a pipe when no prompt is given:
    // `echo hi | inferno run model` answers and exits.
    let from_stdin = match args.prompt.as_deref() {
        Some("-") => true,
        Some(_) => false,
        None => !std::io::stdin().is_terminal(),
    };
    let prompt = if from_stdin {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the prompt from stdin")?;
        anyhow::ensure!(!text.trim().is_empty(), "no prompt: stdin was empty");
        Some(text)
    } else {
        args.prompt.clone()
    };
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let (base, api_key, local_model) = match &args.url {
        Some(url) => (url.clone(), args.api_key.clone(), None),
        None => {
            let (base, id) = start_local(&args).await?;
            (base, None, Some(id))
        }
    };
    let client = Client::new(&base, api_key);
    let model = match (local_model, &args.model_name) {
        (Some(id), _) => id,
        (None, Some(name)) => name.clone(),
        (None, None) => client
            .models()
            .await?
            .into_iter()
            .next()
            .context("the server offers no models")?,
    };
    let mut session = Session {
        client,
        model,
        system: args.system.clone(),
        messages: Vec::new(),
        settings: Settings {
            temperature: args.temperature,
            max_tokens: args.max_tokens,
            seed: args.seed,
            ..Settings::default()
        },
        last: None,
        verbose: args.verbose,
        color,
    };
    match prompt {
        Some(prompt) => session.ask(prompt.trim_end()).await,
        None => repl::run(&mut session).await,
    }
}

/// Starts a server for `args` on a private loopback port (no chat page, no auth) and returns
/// its base URL and the model's id once it is loaded.
async fn start_local(args: &RunArgs) -> anyhow::Result<(String, String)> {
    let mut options = args.serve.clone();
    if args.model_name.is_some() {
        options.model = args.model_name.clone();
    }
    options.host = Some("127.0.0.1".to_owned());
    options.port = Some(0);
    options.web_ui = Some(false);
    let config = Config::from_options(options)?;
    let pull_options = config.pull_options(true);
    let local =
        crate::models::resolve(config.model.as_deref(), &config.models_dir, &pull_options).await?;
    let registry =
        Arc::new(crate::models::registry_for(&config, Some(&local)).map_err(anyhow::Error::msg)?);
    if std::io::stderr().is_terminal() {
        eprintln!("loading {} …", local.id);
    }
    registry.start();
    loop {
        match registry.readiness() {
            Ok(()) => break,
            Err(RegistryError::Loading(_)) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(err) => return Err(err.into()),
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let state = AppState::from_config(registry, &config)?;
    tokio::spawn(crate::http::serve(listener, state, std::future::pending()));
    Ok((base, local.id))
}
