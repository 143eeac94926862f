//! Live engine state shared with the HTTP side (`/status`), written by the engine thread.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

/// How far back the tokens/s figure looks.
const RATE_WINDOW: Duration = Duration::from_secs(60);

/// Counters and gauges of one engine; cheap to read from any thread.
#[derive(Debug)]
pub struct EngineStats {
    slots_total: usize,
    kv_cells_total: usize,
    running: AtomicUsize,
    waiting: AtomicUsize,
    kv_cells_used: AtomicUsize,
    prompt_tokens: AtomicU64,
    generated_tokens: AtomicU64,
    /// (when, tokens generated in that step) for the last minute.
    recent: Mutex<VecDeque<(Instant, usize)>>,
}

/// A point-in-time view of an engine, served by `GET /status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EngineSnapshot {
    /// Sequence slots in use.
    pub slots_busy: usize,
    /// Sequence slots in all (`--parallel`).
    pub slots_total: usize,
    /// Requests waiting for a slot.
    pub queue_length: usize,
    /// KV-cache cells holding tokens.
    pub kv_cells_used: usize,
    /// KV-cache cells in all.
    pub kv_cells_total: usize,
    /// `kv_cells_used / kv_cells_total`.
    pub kv_usage: f64,
    /// Generated tokens per second over the last minute.
    pub generation_tokens_per_second: f64,
    /// Prompt tokens admitted since start.
    pub prompt_tokens_total: u64,
    /// Tokens generated since start.
    pub generation_tokens_total: u64,
}

impl EngineStats {
    /// Stats of an engine with `slots_total` slots of `cells_per_slot` KV cells each.
    pub fn new(slots_total: usize, cells_per_slot: usize) -> Self {
        EngineStats {
            slots_total,
            kv_cells_total: slots_total * cells_per_slot,
            running: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            kv_cells_used: AtomicUsize::new(0),
            prompt_tokens: AtomicU64::new(0),
            generated_tokens: AtomicU64::new(0),
            recent: Mutex::new(VecDeque::new()),
        }
    }

    /// A request entered the queue; returns the new queue length.
    pub(crate) fn queued(&self) -> usize {
        self.waiting.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// A request left the queue (admitted, dropped or rejected); returns the new queue length.
    pub(crate) fn dequeued(&self) -> usize {
        let previous = self
            .waiting
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(1))
            })
            .unwrap_or(0);
        previous.saturating_sub(1)
    }

    /// Records the state after an engine step.
    pub(crate) fn record_step(
        &self,
        running: usize,
        kv_cells_used: usize,
        generated: usize,
        now: Instant,
    ) {
        self.running.store(running, Ordering::Relaxed);
        self.kv_cells_used.store(kv_cells_used, Ordering::Relaxed);
        self.generated_tokens
            .fetch_add(generated as u64, Ordering::Relaxed);
        let mut recent = self.recent.lock().expect("stats lock is never poisoned");
        if generated > 0 {
            recent.push_back((now, generated));
        }
        while recent
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW)
        {
            recent.pop_front();
        }
    }

    /// Records admitted prompt tokens.
    pub(crate) fn record_prompt(&self, tokens: usize) {
        self.prompt_tokens
            .fetch_add(tokens as u64, Ordering::Relaxed);
    }

    /// Sequences running now.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Relaxed)
    }

    /// Records how many sequences hold a slot (at admission, before the step runs).
    pub(crate) fn set_running(&self, running: usize) {
        self.running.store(running, Ordering::Relaxed);
    }

    /// Share of KV cells in use.
    pub fn kv_usage(&self) -> f64 {
        if self.kv_cells_total == 0 {
            return 0.0;
        }
        self.kv_cells_used.load(Ordering::Relaxed) as f64 / self.kv_cells_total as f64
    }

    /// The current state.
    pub fn snapshot(&self, now: Instant) -> EngineSnapshot {
        let recent = self.recent.lock().expect("stats lock is never poisoned");
        let window: usize = recent
            .iter()
            .filter(|(t, _)| now.duration_since(*t) <= RATE_WINDOW)
            .map(|(_, n)| n)
            .sum();
        EngineSnapshot {
            slots_busy: self.running.load(Ordering::Relaxed),
            slots_total: self.slots_total,
            queue_length: self.waiting.load(Ordering::Relaxed),
            kv_cells_used: self.kv_cells_used.load(Ordering::Relaxed),
            kv_cells_total: self.kv_cells_total,
            kv_usage: self.kv_usage(),
            generation_tokens_per_second: window as f64 / RATE_WINDOW.as_secs_f64(),
            prompt_tokens_total: self.prompt_tokens.load(Ordering::Relaxed),
            generation_tokens_total: self.generated_tokens.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_counts_only_the_last_minute() {
        let stats = EngineStats::new(2, 100);
        let start = Instant::now();
        stats.record_step(2, 50, 30, start);
        stats.record_step(2, 60, 30, start + Duration::from_secs(30));
        let snapshot = stats.snapshot(start + Duration::from_secs(61));
        assert_eq!(
            snapshot.generation_tokens_per_second, 0.5,
            "only the second step is in the window"
        );
        assert_eq!(snapshot.generation_tokens_total, 60);
        assert_eq!((snapshot.kv_cells_used, snapshot.kv_cells_total), (60, 200));
        assert_eq!(snapshot.kv_usage, 0.3);
    }

    #[test]
    fn queue_length_follows_queued_and_dequeued() {
        let stats = EngineStats::new(1, 1);
        assert_eq!(stats.queued(), 1);
        assert_eq!(stats.queued(), 2);
        assert_eq!(stats.dequeued(), 1);
        assert_eq!(stats.snapshot(Instant::now()).queue_length, 1);
    }
}
