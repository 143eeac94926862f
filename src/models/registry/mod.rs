//! The servable models and their life cycle; the one owner of every loaded [`Engine`].
//!
//! Models come from the config (`--model`, `[[models]]`) and from GGUF files in the models
//! dir. Pinned models load in the background at start-up and stay; others load when a request
//! names them (concurrent requests share one load) and leave after their keep-alive idle time,
//! or least recently used first when a load needs room under `--max-loaded-models` or the
//! memory budget. An unload never interrupts a request: it waits for the model's leases.

mod entry;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::FutureExt as _;
use serde::Serialize;

pub use self::entry::Lease;
use self::entry::{Entry, Loaded, State};
use crate::api::ModelCard;
use crate::engine::Engine;
use crate::models::chat_template::ChatTemplate;
use crate::models::pull::PullOptions;
use crate::models::spec::{ModelSpec, SpecDefaults, human_bytes};

/// Why a model cannot serve a request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RegistryError {
    /// No such model is configured or in the models dir.
    #[error("model '{0}' is not served here")]
    NotFound(String),
    /// The model is still loading (readiness only: requests wait for loads).
    #[error("model '{0}' is loading; retry shortly")]
    Loading(String),
    /// The model failed to load.
    #[error("model '{model}' failed to load: {message}")]
    Failed {
        /// The model id.
        model: String,
        /// Why.
        message: String,
    },
    /// Loading it would exceed the memory budget or the loaded-model limit, and nothing can be
    /// evicted to make room.
    #[error("model '{model}' cannot be loaded now: {message}")]
    NoRoom {
        /// The model id.
        model: String,
        /// The numbers behind the refusal.
        message: String,
    },
    /// The admin API refused: the model is pinned.
    #[error("model '{0}' is pinned; it is never unloaded while the server runs")]
    Pinned(String),
    /// The server is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// A loaded model ready to serve.
#[derive(Debug)]
pub struct ServedModel {
    /// The id clients put in `model`.
    pub id: String,
    /// Its engine thread.
    pub engine: Engine,
    /// Its chat template (from GGUF metadata, or ChatML).
    pub template: ChatTemplate,
    /// Unix time it finished loading.
    pub created: u64,
}

/// Loads model files; the llama.cpp loader in production, a fake one in tests.
pub trait Loader: Send + Sync + 'static {
    /// Bytes the model will occupy once loaded (weights, KV cache, compute buffers), from its
    /// header; also rejects files that are not loadable models.
    fn footprint(&self, spec: &ModelSpec, path: &Path) -> Result<u64, String>;
    /// Loads the model and starts its engine. Blocking.
    fn load(&self, spec: &ModelSpec, path: &Path) -> Result<ServedModel, String>;
}

/// Limits and defaults of the registry.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Most models in memory at once.
    pub max_loaded: usize,
    /// Most bytes all loaded models may occupy together.
    pub memory_budget: u64,
    /// Directory scanned for GGUF files, and where sources are pulled to.
    pub models_dir: PathBuf,
    /// Settings of models found by the scan.
    pub defaults: SpecDefaults,
    /// How sources are pulled.
    pub pull: PullOptions,
}

/// One model as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ModelStatus {
    /// Its id.
    pub id: String,
    /// Other names.
    pub aliases: Vec<String>,
    /// `available`, `loading`, `loaded`, `unloading` or `failed`.
    pub state: &'static str,
    /// Loaded at start-up and never evicted.
    pub pinned: bool,
    /// Where it comes from.
    pub source: String,
    /// The local file, once known.
    pub path: Option<PathBuf>,
    /// Bytes it occupies (estimated from its header) while loaded.
    pub memory_bytes: Option<u64>,
    /// Unix time of the last request start or end.
    pub last_used: Option<u64>,
    /// Unix time it finished loading.
    pub loaded_at: Option<u64>,
    /// Seconds loading took.
    pub load_seconds: Option<f64>,
    /// Requests using it now.
    pub in_flight: usize,
    /// Idle seconds before it is unloaded (none when pinned).
    pub keep_alive_secs: Option<u64>,
    /// Why it failed to load.
    pub error: Option<String>,
}

/// The models this server serves.
pub struct Registry {
    entries: RwLock<Vec<Arc<Entry>>>,
    policy: Policy,
    loader: Arc<dyn Loader>,
    /// Loads (and the evictions that make room for them) happen one at a time, so two loads
    /// never both count on the same free memory.
    lifecycle: tokio::sync::Mutex<()>,
    closed: AtomicBool,
    started: u64,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// A registry of `specs` plus the GGUF files in the models dir; nothing is loaded yet
    /// (see [`Registry::start`]). Fails on duplicate ids or aliases.
    pub fn new(
        specs: Vec<ModelSpec>,
        policy: Policy,
        loader: Arc<dyn Loader>,
    ) -> Result<Self, String> {
        let mut names = std::collections::HashSet::new();
        for spec in &specs {
            for name in std::iter::once(&spec.id).chain(&spec.aliases) {
                if !names.insert(name.clone()) {
                    return Err(format!("model name '{name}' is used twice"));
                }
            }
        }
        let registry = Registry {
            entries: RwLock::new(
                specs
                    .into_iter()
                    .map(|spec| Arc::new(Entry::new(spec, false)))
                    .collect(),
            ),
            policy,
            loader,
            lifecycle: tokio::sync::Mutex::new(()),
            closed: AtomicBool::new(false),
            started: unix_secs(SystemTime::now()),
        };
        registry.rescan();
        Ok(registry)
    }

    /// Starts loading the pinned models and the keep-alive reaper. Call once, inside the
    /// runtime.
    pub fn start(self: &Arc<Self>) {
        for entry in self.snapshot() {
            if entry.spec.pinned {
                let registry = self.clone();
                tokio::spawn(async move {
                    match registry.acquire(&entry.spec.id).await {
                        Ok(_) => tracing::info!(model = %entry.spec.id, "pinned model ready"),
                        Err(err) => tracing::error!(error = %err, "pinned model failed to load"),
                    }
                });
            }
        }
        let registry = Arc::downgrade(self);
        tokio::spawn(reap_idle(registry));
    }

    /// The loaded model `name` (an id or alias) for one request, loading it first if needed.
    pub async fn acquire(self: &Arc<Self>, name: &str) -> Result<Lease, RegistryError> {
        let entry = self.find(name)?;
        loop {
            if self.closed.load(Ordering::Acquire) {
                return Err(RegistryError::ShuttingDown);
            }
            let waiting_for_load = {
                let mut state = entry.state();
                match &*state {
                    State::Ready(loaded) => return Ok(entry.lease(loaded.model.clone())),
                    State::Failed(err) => return Err(err.clone()),
                    State::Loading(task) => Ok(task.clone()),
                    State::Unloading(task) => Err(task.clone()),
                    State::Available => {
                        let task = self.clone().load_task(entry.clone());
                        *state = State::Loading(task.clone());
                        Ok(task)
                    }
                }
            };
            match waiting_for_load {
                Ok(load) => {
                    load.await?;
                }
                Err(unload) => unload.await,
            }
        }
    }

    /// Loads `name` now if it is not loaded (clearing an earlier failure first).
    pub async fn load(self: &Arc<Self>, name: &str) -> Result<(), RegistryError> {
        let entry = self.find(name)?;
        {
            let mut state = entry.state();
            if matches!(&*state, State::Failed(_)) {
                *state = State::Available;
            }
        }
        self.acquire(name).await.map(drop)
    }

    /// Unloads `name` once its in-flight requests end. Pinned models refuse.
    pub async fn unload(&self, name: &str) -> Result<(), RegistryError> {
        let entry = self.find(name)?;
        if entry.spec.pinned {
            return Err(RegistryError::Pinned(entry.spec.id.clone()));
        }
        self.evict(&entry, "admin").await;
        Ok(())
    }

    /// The model `name` if it is loaded now (no load, no lease), for status pages.
    pub fn loaded(&self, name: &str) -> Option<Arc<ServedModel>> {
        let entry = self.find(name).ok()?;
        match &*entry.state() {
            State::Ready(loaded) => Some(loaded.model.clone()),
            _ => None,
        }
    }

    /// Ready when every pinned model is loaded and its engine running.
    pub fn readiness(&self) -> Result<(), RegistryError> {
        for entry in self.snapshot().iter().filter(|e| e.spec.pinned) {
            let id = entry.spec.id.clone();
            match &*entry.state() {
                State::Ready(loaded) if loaded.model.engine.is_running() => {}
                State::Ready(_) => {
                    return Err(RegistryError::Failed {
                        model: id,
                        message: "engine thread stopped".to_owned(),
                    });
                }
                State::Failed(err) => return Err(err.clone()),
                _ => return Err(RegistryError::Loading(id)),
            }
        }
        Ok(())
    }

    /// Cards of every servable model, loaded or not.
    pub fn list(&self) -> Vec<ModelCard> {
        self.rescan();
        self.snapshot()
            .iter()
            .map(|entry| {
                let state = entry.state();
                let (loaded, created) = match &*state {
                    State::Ready(loaded) => (true, loaded.model.created),
                    _ => (false, self.started),
                };
                ModelCard {
                    id: entry.spec.id.clone(),
                    object: "model".to_owned(),
                    created,
                    owned_by: entry.spec.owned_by.clone(),
                    loaded: Some(loaded),
                }
            })
            .collect()
    }

    /// The admin view of every model.
    pub fn status(&self) -> Vec<ModelStatus> {
        self.rescan();
        self.snapshot()
            .iter()
            .map(|entry| {
                let state = entry.state();
                let loaded = match &*state {
                    State::Ready(loaded) => Some(loaded),
                    _ => None,
                };
                ModelStatus {
                    id: entry.spec.id.clone(),
                    aliases: entry.spec.aliases.clone(),
                    state: state.name(),
                    pinned: entry.spec.pinned,
                    source: entry.spec.location.clone(),
                    path: entry.path(),
                    memory_bytes: loaded.map(|l| l.footprint),
                    last_used: entry.last_used_wall().map(unix_secs),
                    loaded_at: loaded.map(|l| l.model.created),
                    load_seconds: loaded.map(|l| l.load_time.as_secs_f64()),
                    in_flight: entry.in_flight(),
                    keep_alive_secs: (!entry.spec.pinned).then(|| entry.spec.keep_alive.as_secs()),
                    error: match &*state {
                        State::Failed(err) => Some(err.to_string()),
                        _ => None,
                    },
                }
            })
            .collect()
    }

    /// Where models are stored.
    pub fn models_dir(&self) -> &Path {
        &self.policy.models_dir
    }

    /// The spec of `name` (an id or alias).
    pub fn spec(&self, name: &str) -> Result<ModelSpec, RegistryError> {
        self.find(name).map(|entry| entry.spec.clone())
    }

    /// Ends every running request of every loaded model now (the shutdown grace is over); a
    /// following [`Registry::shutdown`] then finds nothing to wait for.
    pub fn abort_all(&self) {
        self.closed.store(true, Ordering::Release);
        for entry in self.snapshot() {
            if let State::Ready(loaded) = &*entry.state() {
                loaded.model.engine.abort();
            }
        }
    }

    /// Refuses new requests, waits for in-flight ones, and stops every engine.
    pub async fn shutdown(&self) {
        self.closed.store(true, Ordering::Release);
        for entry in self.snapshot() {
            self.evict(&entry, "shutdown").await;
        }
    }

    fn snapshot(&self) -> Vec<Arc<Entry>> {
        self.entries
            .read()
            .expect("registry lock is never poisoned")
            .clone()
    }

    /// The entry called `name`, rescanning the models dir once on a miss.
    fn find(&self, name: &str) -> Result<Arc<Entry>, RegistryError> {
        let lookup = || {
            self.snapshot()
                .into_iter()
                .find(|e| e.spec.id == name || e.spec.aliases.iter().any(|a| a == name))
        };
        lookup()
            .or_else(|| {
                self.rescan();
                lookup()
            })
            .ok_or_else(|| RegistryError::NotFound(name.to_owned()))
    }

    /// Adds GGUF files that appeared in the models dir and forgets scanned ones that vanished
    /// (unless loaded).
    fn rescan(&self) {
        let found: Vec<PathBuf> = std::fs::read_dir(&self.policy.models_dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|dirent| dirent.path())
            .filter(|path| {
                path.extension().is_some_and(|ext| ext == "gguf")
                    && path.is_file()
                    && !path
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        let mut entries = self
            .entries
            .write()
            .expect("registry lock is never poisoned");
        entries.retain(|entry| {
            !entry.scanned
                || Path::new(&entry.spec.location).is_file()
                || !matches!(&*entry.state(), State::Available | State::Failed(_))
        });
        for path in found {
            let spec = self.policy.defaults.scanned(&path);
            let taken = entries.iter().any(|entry| {
                entry.spec.id == spec.id
                    || entry.spec.aliases.contains(&spec.id)
                    || Path::new(&entry.spec.location) == path
                    || entry.path().as_deref() == Some(path.as_path())
            });
            if !taken {
                entries.push(Arc::new(Entry::new(spec, true)));
            }
        }
    }

    /// Spawns the load of `entry`; the returned task sets its final state.
    fn load_task(self: Arc<Self>, entry: Arc<Entry>) -> entry::LoadTask {
        let task = tokio::spawn(async move {
            let result = self.load_now(&entry).await;
            *entry.state() = match &result {
                Ok(loaded) => State::Ready(loaded.clone()),
                Err(RegistryError::NoRoom { .. } | RegistryError::ShuttingDown) => State::Available,
                Err(err) => State::Failed(err.clone()),
            };
            result.map(|loaded| loaded.model)
        });
        async move {
            task.await.unwrap_or_else(|join| {
                Err(RegistryError::Failed {
                    model: String::new(),
                    message: format!("load task ended abnormally: {join}"),
                })
            })
        }
        .boxed()
        .shared()
    }

    async fn load_now(&self, entry: &Arc<Entry>) -> Result<Loaded, RegistryError> {
        let spec = entry.spec.clone();
        let failed = |message: String| RegistryError::Failed {
            model: spec.id.clone(),
            message,
        };
        let local = crate::models::resolve(
            Some(&spec.location),
            &self.policy.models_dir,
            &self.policy.pull,
        )
        .await
        .map_err(|err| failed(err.to_string()))?;
        entry.set_path(local.path.clone());
        let _one_at_a_time = self.lifecycle.lock().await;
        if self.closed.load(Ordering::Acquire) {
            return Err(RegistryError::ShuttingDown);
        }
        let footprint = self.loader.footprint(&spec, &local.path).map_err(&failed)?;
        self.make_room(entry, footprint).await?;
        let loader = self.loader.clone();
        let started = Instant::now();
        let path = local.path.clone();
        let load_spec = spec.clone();
        let model = tokio::task::spawn_blocking(move || loader.load(&load_spec, &path))
            .await
            .map_err(|err| failed(format!("load panicked: {err}")))?
            .map_err(&failed)?;
        tracing::info!(model = %spec.id, path = %local.path.display(), footprint, seconds = started.elapsed().as_secs_f64(), "model loaded");
        Ok(Loaded {
            model: Arc::new(model),
            footprint,
            load_time: started.elapsed(),
        })
    }

    /// Evicts least recently used unpinned models until `needed` more bytes and one more model
    /// fit; waits for each victim's requests to finish.
    async fn make_room(&self, loading: &Arc<Entry>, needed: u64) -> Result<(), RegistryError> {
        let no_room = |message: String| RegistryError::NoRoom {
            model: loading.spec.id.clone(),
            message,
        };
        if needed > self.policy.memory_budget {
            return Err(no_room(format!(
                "it needs {} but the memory budget is {}",
                human_bytes(needed),
                human_bytes(self.policy.memory_budget)
            )));
        }
        loop {
            let loaded: Vec<(Arc<Entry>, u64)> = self
                .snapshot()
                .into_iter()
                .filter(|e| !Arc::ptr_eq(e, loading))
                .filter_map(|e| {
                    let footprint = match &*e.state() {
                        State::Ready(loaded) => loaded.footprint,
                        _ => return None,
                    };
                    Some((e, footprint))
                })
                .collect();
            let in_use: u64 = loaded.iter().map(|(_, bytes)| bytes).sum();
            if loaded.len() < self.policy.max_loaded
                && in_use.saturating_add(needed) <= self.policy.memory_budget
            {
                return Ok(());
            }
            let victim = loaded
                .iter()
                .filter(|(e, _)| !e.spec.pinned)
                .min_by_key(|(e, _)| e.last_used())
                .map(|(e, _)| e.clone());
            let Some(victim) = victim else {
                return Err(no_room(format!(
                    "it needs {}; {} loaded pinned model(s) use {} of the {} budget (max {} loaded)",
                    human_bytes(needed),
                    loaded.len(),
                    human_bytes(in_use),
                    human_bytes(self.policy.memory_budget),
                    self.policy.max_loaded
                )));
            };
            tracing::info!(victim = %victim.spec.id, for_model = %loading.spec.id, "evicting the least recently used model to make room");
            self.evict(&victim, "lru").await;
        }
    }

    /// Takes `entry` out of service and waits until it is unloaded (no-op unless loaded).
    async fn evict(&self, entry: &Arc<Entry>, reason: &'static str) {
        let task = {
            let mut state = entry.state();
            match std::mem::replace(&mut *state, State::Available) {
                State::Ready(loaded) => {
                    let task = unload_task(entry.clone(), loaded.model);
                    *state = State::Unloading(task.clone());
                    crate::metrics::record_eviction(&entry.spec.id, reason);
                    task
                }
                State::Unloading(task) => {
                    *state = State::Unloading(task.clone());
                    task
                }
                other => {
                    *state = other;
                    return;
                }
            }
        };
        task.await;
    }
}

/// Waits for `entry`'s leases to end, then stops the engine and frees its memory.
fn unload_task(entry: Arc<Entry>, model: Arc<ServedModel>) -> entry::UnloadTask {
    let task = tokio::spawn(async move {
        entry.drained().await;
        // A lease decrements the count just before it drops its `Arc`; give it a moment.
        let mut model = model;
        for _ in 0..100 {
            match Arc::try_unwrap(model) {
                Ok(owned) => {
                    let _ = tokio::task::spawn_blocking(move || owned.engine.shutdown()).await;
                    break;
                }
                Err(shared) => {
                    model = shared;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        tracing::info!(model = %entry.spec.id, "model unloaded");
        crate::metrics::record_model_unloaded(&entry.spec.id);
        let mut state = entry.state();
        if matches!(&*state, State::Unloading(_)) {
            *state = State::Available;
        }
    });
    async move {
        let _ = task.await;
    }
    .boxed()
    .shared()
}

/// Unloads models idle past their keep-alive, until the registry is dropped.
async fn reap_idle(registry: Weak<Registry>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(registry) = registry.upgrade() else {
            return;
        };
        let now = Instant::now();
        for entry in registry.snapshot() {
            let expired = matches!(&*entry.state(), State::Ready(_)) && entry.idle_expired(now);
            if expired {
                tracing::info!(model = %entry.spec.id, keep_alive_secs = entry.spec.keep_alive.as_secs(), "unloading idle model");
                registry.evict(&entry, "idle").await;
            }
        }
    }
}

fn unix_secs(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
