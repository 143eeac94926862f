//! `inferno serve`: resolve (and if needed download) the model, bind, load, serve, shut down.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::config::{Config, ServeOptions};
use crate::http::{self, AppState};

/// Arguments of `inferno serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Serving options (each also `INFERNO_<NAME>` and a key in the `--config` file).
    #[command(flatten)]
    pub options: ServeOptions,
    /// TOML file with the same keys as the flags (kebab-case).
    #[arg(long, env = "INFERNO_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// llama.cpp's OpenMP threads busy-wait by default, which collapses decode speed when cores are
/// shared; the policy is read at process start, so re-exec once with it set (DESIGN.md).
pub fn ensure_passive_openmp() -> anyhow::Result<()> {
    if std::env::var_os("OMP_WAIT_POLICY").is_some() {
        return Ok(());
    }
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("cannot find the inferno executable to re-exec")?;
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("OMP_WAIT_POLICY", "passive")
        .exec();
    Err(err).context("re-exec with OMP_WAIT_POLICY=passive failed")
}

/// Runs the server until SIGTERM/SIGINT, then drains in-flight requests within the grace period.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::resolve(args.options, args.config.as_deref())?;
    if args.print_config {
        print!("{}", config.to_toml());
        return Ok(());
    }
    crate::metrics::install();
    // `--model`, or the default model when nothing else is configured, is pulled before the
    // listener opens (with a progress bar); `[[models]]` sources are pulled when they load.
    let primary = if config.model.is_some() || config.models.is_none() {
        let pull_options = config.pull_options(true);
        Some(
            crate::models::resolve(config.model.as_deref(), &config.models_dir, &pull_options)
                .await?,
        )
    } else {
        None
    };
    let registry = Arc::new(
        crate::models::registry_for(&config, primary.as_ref()).map_err(anyhow::Error::msg)?,
    );
    let address = format!("{}:{}", config.host, config.port);
    let listener = tokio::net::TcpListener::bind(&address)
        .await
        .with_context(|| format!("cannot listen on {address}"))?;
    let served: Vec<String> = registry.list().into_iter().map(|card| card.id).collect();
    tracing::info!(address = %listener.local_addr()?, models = ?served, "listening; loading pinned models");
    registry.start();
    let state = AppState::from_config(registry.clone(), &config)?;
    state.start_embedders(&config).map_err(anyhow::Error::msg)?;
    if state.access().requires_auth() {
        tracing::info!("authentication required on /v1/*");
    } else if !config.listens_on_loopback() {
        tracing::warn!(host = %config.host, "listening on a non-loopback address WITHOUT authentication: anyone who can reach this port can use the model; set --api-keys-file or [jwt]");
    }
    spawn_reload_on_sighup(state.clone());
    let ops = state.clone();
    let stop = Arc::new(tokio::sync::Notify::new());
    let server = http::serve(listener, state, {
        let stop = stop.clone();
        async move { stop.notified().await }
    });
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => result?,
        signal = shutdown_signal() => {
            ops.begin_shutdown();
            if config.shutdown_delay_secs > 0 {
                tracing::info!(signal, delay_secs = config.shutdown_delay_secs, "shutting down: /ready now answers 503; still serving");
                // Keep serving (new requests too) while load balancers notice `/ready`.
                let _ = tokio::time::timeout(Duration::from_secs(config.shutdown_delay_secs), &mut server).await;
            }
            tracing::info!(signal, grace_secs = config.shutdown_grace_secs, "shutting down: no new connections; finishing in-flight requests");
            stop.notify_one();
            match tokio::time::timeout(Duration::from_secs(config.shutdown_grace_secs), &mut server).await {
                Ok(result) => result?,
                Err(_) => {
                    tracing::warn!("grace period over; ending the requests still in flight");
                    registry.abort_all();
                    // The aborted streams send their error event and close.
                    let _ = tokio::time::timeout(Duration::from_secs(2), &mut server).await;
                }
            }
        }
    }
    // Clients that stopped reading could hold a model forever; do not wait for them long.
    if tokio::time::timeout(Duration::from_secs(5), registry.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some responses were never read to the end; exiting anyway");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Re-reads the API keys file on SIGHUP (revocation without a restart), and prunes idle
/// rate-limit state now and then.
fn spawn_reload_on_sighup(state: AppState) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; API keys are not reloadable");
        return;
    };
    tokio::spawn(async move {
        let mut prune = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = hangup.recv() => match state.access().reload() {
                    Ok(keys) => tracing::info!(keys, "SIGHUP: API keys reloaded"),
                    Err(err) => tracing::error!(error = %err, "SIGHUP: reload failed; keeping the previous keys"),
                },
                _ = prune.tick() => state.access().prune(),
            }
        }
    });
}

/// Resolves on SIGINT or SIGTERM with the signal's name.
async fn shutdown_signal() -> &'static str {
    let mut terminate = match tokio::signal::unix::signal(
        tokio::signal::unix::SignalKind::terminate(),
    ) {
        Ok(signal) => signal,
        Err(err) => {
            tracing::warn!(error = %err, "cannot listen for SIGTERM; only SIGINT stops the server");
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    }
}
