//! Registry life cycle on fake engines: shared loads, LRU and idle eviction, pinning, memory
//! budget, draining, failures.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use super::*;
use crate::backend::fake;
use crate::engine::EngineSettings;
use crate::models::planner::KvType;
use crate::models::spec::GpuLayers;

/// Loads fake engines; the footprint of a model is its file's length in bytes, and files
/// starting with `bad` fail to load.
#[derive(Default)]
struct FakeLoader {
    loads: Mutex<HashMap<String, usize>>,
    /// Holds every load until released, to make loads overlap.
    gate: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

impl FakeLoader {
    fn loads(&self, id: &str) -> usize {
        self.loads.lock().unwrap().get(id).copied().unwrap_or(0)
    }
}

impl Loader for FakeLoader {
    fn footprint(&self, _spec: &ModelSpec, path: &Path) -> Result<u64, String> {
        let bytes = std::fs::read(path).map_err(|err| err.to_string())?;
        if bytes.starts_with(b"bad") {
            return Err(format!("{}: not a GGUF file", path.display()));
        }
        Ok(bytes.len() as u64)
    }

    fn load(&self, spec: &ModelSpec, _path: &Path) -> Result<ServedModel, String> {
        if let Some(gate) = self.gate.lock().unwrap().as_ref() {
            gate.recv().map_err(|err| err.to_string())?;
        }
        *self
            .loads
            .lock()
            .unwrap()
            .entry(spec.id.clone())
            .or_default() += 1;
        let settings = EngineSettings {
            parallel: spec.parallel,
            batch_tokens: 64,
            ctx_size: spec.ctx_size,
            queue_capacity: 8,
            max_tokens: None,
            max_prompt_tokens: None,
            max_stop: 4,
        };
        let engine = fake::spawn_engine(&spec.id, settings).map_err(|err| err.to_string())?;
        Ok(ServedModel {
            id: spec.id.clone(),
            engine,
            template: ChatTemplate::chatml(),
            created: 0,
        })
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    loader: Arc<FakeLoader>,
}

impl Fixture {
    /// Model files `(name, size)` in a fresh models dir.
    fn new(files: &[(&str, usize)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for (name, size) in files {
            std::fs::write(dir.path().join(format!("{name}.gguf")), vec![b'G'; *size]).unwrap();
        }
        Fixture {
            dir,
            loader: Arc::new(FakeLoader::default()),
        }
    }

    fn defaults() -> SpecDefaults {
        SpecDefaults {
            ctx_size: 64,
            parallel: 2,
            gpu_layers: GpuLayers::Auto,
            kv_type: KvType::F16,
            keep_alive: Duration::from_secs(3600),
        }
    }

    fn spec(&self, name: &str) -> ModelSpec {
        Self::defaults().scanned(&self.dir.path().join(format!("{name}.gguf")))
    }

    fn registry(&self, specs: Vec<ModelSpec>, max_loaded: usize, budget: u64) -> Arc<Registry> {
        let policy = Policy {
            max_loaded,
            memory_budget: budget,
            models_dir: self.dir.path().to_owned(),
            defaults: Self::defaults(),
            pull: PullOptions {
                pypi_url: "http://127.0.0.1:9".into(),
                progress: false,
                ..PullOptions::default()
            },
        };
        let registry = Registry::new(specs, policy, self.loader.clone()).unwrap();
        Arc::new(registry)
    }
}

fn state_of(registry: &Registry, id: &str) -> &'static str {
    registry
        .status()
        .into_iter()
        .find(|m| m.id == id)
        .map(|m| m.state)
        .unwrap()
}

/// Polls until `id` reaches `state` (bounded; unload happens on background tasks).
async fn wait_state(registry: &Registry, id: &str, state: &str) {
    for _ in 0..500 {
        if state_of(registry, id) == state {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{id} never reached {state}: {:?}", registry.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_dir_files_are_listed_and_load_on_demand_once() {
    let fx = Fixture::new(&[("a", 10), ("b", 10)]);
    let (release, gate) = std::sync::mpsc::channel();
    *fx.loader.gate.lock().unwrap() = Some(gate);
    let registry = fx.registry(Vec::new(), 4, 1000);
    let cards = registry.list();
    let mut ids: Vec<_> = cards.iter().map(|c| c.id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["a", "b"]);
    assert!(cards.iter().all(|c| c.loaded == Some(false)));

    let first = tokio::spawn({
        let registry = registry.clone();
        async move { registry.acquire("a").await.map(|l| l.id.clone()) }
    });
    let second = tokio::spawn({
        let registry = registry.clone();
        async move { registry.acquire("a").await.map(|l| l.id.clone()) }
    });
    wait_state(&registry, "a", "loading").await;
    release.send(()).unwrap();
    assert_eq!(first.await.unwrap().unwrap(), "a");
    assert_eq!(second.await.unwrap().unwrap(), "a");
    assert_eq!(
        fx.loader.loads("a"),
        1,
        "concurrent requests share one load"
    );
    assert_eq!(state_of(&registry, "a"), "loaded");
    assert_eq!(
        registry.readiness(),
        Ok(()),
        "no pinned models: ready at once"
    );

    assert_eq!(
        registry.acquire("c").await.unwrap_err(),
        RegistryError::NotFound("c".into())
    );
    std::fs::write(fx.dir.path().join("c.gguf"), b"GGUF").unwrap();
    drop(release);
    *fx.loader.gate.lock().unwrap() = None;
    assert_eq!(
        registry.acquire("c").await.unwrap().id,
        "c",
        "new files are found"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_recently_used_model_makes_room_and_pinned_ones_stay() {
    let fx = Fixture::new(&[("a", 10), ("b", 10), ("c", 10)]);
    let mut pinned = fx.spec("p");
    std::fs::write(fx.dir.path().join("p.gguf"), vec![b'G'; 10]).unwrap();
    pinned.pinned = true;
    let registry = fx.registry(vec![pinned], 3, 1000);
    registry.start();
    wait_state(&registry, "p", "loaded").await;
    assert_eq!(registry.readiness(), Ok(()));

    drop(registry.acquire("a").await.unwrap());
    drop(registry.acquire("b").await.unwrap());
    // Touch `a` again so `b` is the least recently used.
    drop(registry.acquire("a").await.unwrap());
    drop(registry.acquire("c").await.unwrap());
    assert_eq!(state_of(&registry, "b"), "available", "LRU evicted");
    assert_eq!(state_of(&registry, "a"), "loaded");
    assert_eq!(state_of(&registry, "c"), "loaded");
    assert_eq!(state_of(&registry, "p"), "loaded", "pinned never evicted");
    assert_eq!(
        registry.unload("p").await,
        Err(RegistryError::Pinned("p".into()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_budget_evicts_and_refuses_what_cannot_fit() {
    let fx = Fixture::new(&[("small", 40), ("big", 70), ("huge", 200)]);
    let registry = fx.registry(Vec::new(), 8, 100);
    drop(registry.acquire("small").await.unwrap());
    drop(registry.acquire("big").await.unwrap());
    assert_eq!(
        state_of(&registry, "small"),
        "available",
        "40 + 70 > 100: small made room"
    );
    let err = registry.acquire("huge").await.unwrap_err();
    assert!(
        matches!(&err, RegistryError::NoRoom { message, .. } if message.contains("budget")),
        "{err}"
    );
    assert_eq!(
        state_of(&registry, "huge"),
        "available",
        "no room is not a failure"
    );
    assert_eq!(
        state_of(&registry, "big"),
        "loaded",
        "nothing evicted in vain"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unload_waits_for_in_flight_requests() {
    let fx = Fixture::new(&[("a", 10)]);
    let registry = fx.registry(Vec::new(), 4, 1000);
    let lease = registry.acquire("a").await.unwrap();
    let unload = tokio::spawn({
        let registry = registry.clone();
        async move { registry.unload("a").await }
    });
    wait_state(&registry, "a", "unloading").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!unload.is_finished(), "the lease is still held");
    assert!(lease.engine.is_running(), "the engine keeps serving it");
    drop(lease);
    unload.await.unwrap().unwrap();
    assert_eq!(state_of(&registry, "a"), "available");
    // A request after the unload loads it again.
    assert_eq!(registry.acquire("a").await.unwrap().id, "a");
    assert_eq!(fx.loader.loads("a"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_models_leave_after_keep_alive_but_busy_ones_stay() {
    let fx = Fixture::new(&[("a", 10), ("b", 10)]);
    let mut a = fx.spec("a");
    a.keep_alive = Duration::from_millis(100);
    let mut b = fx.spec("b");
    b.keep_alive = Duration::from_millis(100);
    let registry = fx.registry(vec![a, b], 4, 1000);
    registry.start();
    drop(registry.acquire("a").await.unwrap());
    let busy = registry.acquire("b").await.unwrap();
    wait_state(&registry, "a", "available").await;
    assert_eq!(state_of(&registry, "b"), "loaded", "a request holds it");
    drop(busy);
    wait_state(&registry, "b", "available").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_model_fails_alone_and_admin_load_retries() {
    let fx = Fixture::new(&[("good", 10)]);
    std::fs::write(fx.dir.path().join("broken.gguf"), b"bad bytes").unwrap();
    let mut alias = fx.spec("good");
    alias.aliases = vec!["nice".into()];
    let registry = fx.registry(vec![alias], 4, 1000);
    let err = registry.acquire("broken").await.unwrap_err();
    assert!(
        matches!(&err, RegistryError::Failed { message, .. } if message.contains("not a GGUF")),
        "{err}"
    );
    assert_eq!(state_of(&registry, "broken"), "failed");
    assert_eq!(registry.acquire("nice").await.unwrap().id, "good");
    std::fs::write(fx.dir.path().join("broken.gguf"), b"GGUF fixed").unwrap();
    assert!(
        registry.acquire("broken").await.is_err(),
        "failure is sticky"
    );
    registry.load("broken").await.unwrap();
    assert_eq!(state_of(&registry, "broken"), "loaded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_failure_makes_the_server_unready_and_shutdown_unloads() {
    let fx = Fixture::new(&[("a", 10)]);
    let mut missing = fx.spec("missing");
    missing.pinned = true;
    let registry = fx.registry(vec![missing], 4, 1000);
    assert!(matches!(
        registry.readiness(),
        Err(RegistryError::Loading(_))
    ));
    registry.start();
    wait_state(&registry, "missing", "failed").await;
    assert!(matches!(
        registry.readiness(),
        Err(RegistryError::Failed { .. })
    ));
    drop(registry.acquire("a").await.unwrap());
    registry.shutdown().await;
    assert_eq!(state_of(&registry, "a"), "available");
    assert_eq!(
        registry.acquire("a").await.unwrap_err(),
        RegistryError::ShuttingDown
    );
}

#[test]
fn duplicate_names_are_rejected() {
    let fx = Fixture::new(&[]);
    let a = fx.spec("a");
    let mut b = fx.spec("b");
    b.aliases = vec!["a".into()];
    let policy = Policy {
        max_loaded: 1,
        memory_budget: 1,
        models_dir: fx.dir.path().to_owned(),
        defaults: Fixture::defaults(),
        pull: PullOptions::default(),
    };
    assert!(Registry::new(vec![a, b], policy, fx.loader.clone()).is_err());
}
