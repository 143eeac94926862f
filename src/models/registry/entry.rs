//! One servable model's life cycle state, and the [`Lease`] a request holds on it.

use std::ops::Deref;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use futures_util::future::{BoxFuture, Shared};
use tokio::sync::watch;

use super::{RegistryError, ServedModel};
use crate::models::spec::ModelSpec;

/// A load in progress; every request for the model awaits the same one.
pub(super) type LoadTask = Shared<BoxFuture<'static, Result<Arc<ServedModel>, RegistryError>>>;
/// An unload in progress (waiting for in-flight requests to finish).
pub(super) type UnloadTask = Shared<BoxFuture<'static, ()>>;

/// Where a model is in its life cycle.
pub(super) enum State {
    /// Known, not in memory.
    Available,
    /// Being pulled and loaded.
    Loading(LoadTask),
    /// In memory and serving.
    Ready(Loaded),
    /// Leaving memory once its in-flight requests end; new requests wait, then load it again.
    Unloading(UnloadTask),
    /// Failed to load for a reason retrying will not fix (missing or corrupt file); requests
    /// get the error until an admin load retries.
    Failed(RegistryError),
}

/// A model in memory, with what the memory budget and the admin API need to know of it.
#[derive(Clone)]
pub(super) struct Loaded {
    pub(super) model: Arc<ServedModel>,
    /// Estimated bytes it occupies.
    pub(super) footprint: u64,
    /// How long loading took.
    pub(super) load_time: Duration,
}

impl State {
    /// The name the admin API and `/status` show.
    pub(super) fn name(&self) -> &'static str {
        match self {
            State::Available => "available",
            State::Loading(_) => "loading",
            State::Ready(_) => "loaded",
            State::Unloading(_) => "unloading",
            State::Failed(_) => "failed",
        }
    }
}

/// A servable model: its spec and state; the registry owns one per model.
pub(super) struct Entry {
    pub(super) spec: ModelSpec,
    /// Found by scanning the models dir (forgotten when its file goes away).
    pub(super) scanned: bool,
    state: Mutex<State>,
    /// Requests holding a [`Lease`]; an unload waits for zero.
    in_flight: watch::Sender<usize>,
    /// When the last request started or ended: monotonic (keep-alive, LRU) and wall-clock
    /// (admin API).
    last_used: Mutex<Option<(Instant, SystemTime)>>,
    /// The local file, once resolved (sources are pulled at first load).
    path: Mutex<Option<PathBuf>>,
}

impl Entry {
    pub(super) fn new(spec: ModelSpec, scanned: bool) -> Self {
        Entry {
            scanned,
            state: Mutex::new(State::Available),
            in_flight: watch::Sender::new(0),
            last_used: Mutex::new(None),
            path: Mutex::new(Some(PathBuf::from(&spec.location)).filter(|path| path.is_file())),
            spec,
        }
    }

    pub(super) fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .expect("registry entry lock is never poisoned")
    }

    /// A lease on `model`; call with the state lock held and the state `Ready`, so an unload
    /// (which switches the state first) never misses it.
    pub(super) fn lease(self: &Arc<Self>, model: Arc<ServedModel>) -> Lease {
        self.in_flight.send_modify(|n| *n += 1);
        self.touch();
        Lease {
            model,
            entry: self.clone(),
        }
    }

    pub(super) fn path(&self) -> Option<PathBuf> {
        self.path.lock().expect("lock is never poisoned").clone()
    }

    pub(super) fn set_path(&self, path: PathBuf) {
        *self.path.lock().expect("lock is never poisoned") = Some(path);
    }

    pub(super) fn in_flight(&self) -> usize {
        *self.in_flight.borrow()
    }

    /// Resolves once no request holds a lease.
    pub(super) async fn drained(&self) {
        let mut watcher = self.in_flight.subscribe();
        // `wait_for` only fails when the sender is gone, and `self` owns it.
        let _ = watcher.wait_for(|n| *n == 0).await;
    }

    fn touch(&self) {
        *self.last_used.lock().expect("lock is never poisoned") =
            Some((Instant::now(), SystemTime::now()));
    }

    pub(super) fn last_used(&self) -> Option<Instant> {
        self.last_used
            .lock()
            .expect("lock is never poisoned")
            .map(|(at, _)| at)
    }

    pub(super) fn last_used_wall(&self) -> Option<SystemTime> {
        self.last_used
            .lock()
            .expect("lock is never poisoned")
            .map(|(_, wall)| wall)
    }

    /// Unused for at least its keep-alive (never true for pinned models or busy ones).
    pub(super) fn idle_expired(&self, now: Instant) -> bool {
        !self.spec.pinned
            && self.in_flight() == 0
            && self
                .last_used()
                .is_some_and(|used| now.duration_since(used) >= self.spec.keep_alive)
    }
}

/// A request's hold on a loaded model: while any lease lives, the model is not unloaded.
pub struct Lease {
    model: Arc<ServedModel>,
    entry: Arc<Entry>,
}

impl Deref for Lease {
    type Target = ServedModel;

    fn deref(&self) -> &ServedModel {
        &self.model
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("model", &self.model.id)
            .finish()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.entry.touch();
        self.entry.in_flight.send_modify(|n| *n -= 1);
    }
}
