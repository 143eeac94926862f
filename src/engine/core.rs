//! The continuous-batching loop, one step per [`EngineCore::tick`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::Instant;

use super::queue::FairQueue;
use super::scheduler::{Demand, Scheduler};
use super::sequence::Sequence;
use super::{EngineError, EngineSettings, EngineStats, Event, Submission};
use crate::backend::{Backend, BatchEntry, SharedTokenizer, SlotId};
use crate::metrics::EngineMetrics;

/// Owns the backend and the running sequences; single-threaded by construction.
pub(crate) struct EngineCore<B: Backend> {
    backend: B,
    tokenizer: SharedTokenizer,
    settings: EngineSettings,
    scheduler: Scheduler,
    commands: Receiver<Submission>,
    /// Running sequences in admission order; their slots are `0..running.len()` whenever no
    /// request waits (see `compact`).
    running: Vec<Sequence>,
    /// Requests waiting for a slot, served round-robin by owner.
    waiting: FairQueue<Submission>,
    /// No more submissions can arrive.
    closed: bool,
    metrics: EngineMetrics,
    stats: Arc<EngineStats>,
    /// Set when the server's shutdown grace is over: fail everything.
    abort: Arc<AtomicBool>,
}

impl<B: Backend> EngineCore<B> {
    pub fn new(
        backend: B,
        tokenizer: SharedTokenizer,
        settings: EngineSettings,
        commands: Receiver<Submission>,
    ) -> Self {
        EngineCore {
            backend,
            tokenizer,
            settings,
            scheduler: Scheduler::new(settings.batch_tokens),
            commands,
            running: Vec::with_capacity(settings.parallel),
            waiting: FairQueue::new(),
            closed: false,
            metrics: EngineMetrics::noop(),
            stats: Arc::new(EngineStats::new(
                settings.parallel,
                settings.ctx_size as usize,
            )),
            abort: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Watches `abort`: once set, every request fails at the next step.
    pub fn with_abort(mut self, abort: Arc<AtomicBool>) -> Self {
        self.abort = abort;
        self
    }

    /// Reports into `metrics` and `stats` (shared with the [`super::Engine`] handle).
    pub fn with_observers(mut self, metrics: EngineMetrics, stats: Arc<EngineStats>) -> Self {
        self.metrics = metrics;
        self.stats = stats;
        self
    }

    /// The backend, for tests.
    #[cfg(test)]
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Sequences currently holding a slot, for tests.
    #[cfg(test)]
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// One iteration: drop cancelled, admit, plan, step, emit. With `block`, waits for work
    /// when idle. Returns false once the queue is closed and nothing is left to do.
    pub fn tick(&mut self, block: bool) -> bool {
        if self.abort.load(Ordering::Acquire) {
            self.fail_all(EngineError::Aborted);
        }
        // Retire first so a slot freed by a departed client is refilled in this same step.
        self.retire_cancelled();
        if self.running.is_empty() {
            // Publish the idle state before `admit` blocks waiting for work.
            self.publish(0);
        }
        self.receive(block && self.running.is_empty() && self.waiting.is_empty());
        self.admit();
        if self.running.is_empty() {
            return !(self.closed && self.waiting.is_empty());
        }
        let generated = self.step();
        self.publish(generated);
        true
    }

    /// Updates the shared stats and gauges after a step (or after the last sequence left).
    fn publish(&mut self, generated: usize) {
        let kv_cells: usize = self.running.iter().map(Sequence::kv_cells).sum();
        self.stats
            .record_step(self.running.len(), kv_cells, generated, Instant::now());
        self.metrics.set_running(self.running.len());
        self.metrics.set_kv_usage(self.stats.kv_usage());
    }

    /// Moves submitted requests into the fair queue; with `block`, waits for the first one.
    fn receive(&mut self, block: bool) {
        let mut block = block;
        while !self.closed {
            let next = if block {
                self.commands.recv().map_err(|_| TryRecvError::Disconnected)
            } else {
                self.commands.try_recv()
            };
            block = false;
            match next {
                Ok(submission) => self.waiting.push(submission),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => self.closed = true,
            }
        }
        let abandoned = self.waiting.drop_abandoned();
        for _ in 0..abandoned {
            self.stats.dequeued();
            self.metrics.cancelled.increment(1);
        }
    }

    /// Fills free slots from the fair queue.
    fn admit(&mut self) {
        while self.running.len() < self.settings.parallel {
            let Some(submission) = self.waiting.pop() else {
                break;
            };
            self.metrics.set_waiting(self.stats.dequeued());
            let slot = self.free_slot();
            if let Err(err) = self.backend.begin(slot, &submission.request.sampling) {
                let _ = submission.reply.send(Event::Failed(err.into()));
                continue;
            }
            let queued = submission.submitted.elapsed();
            let prompt_tokens = submission.request.prompt.len();
            self.metrics.queue_wait.record(queued.as_secs_f64());
            self.metrics.prompt_tokens.increment(prompt_tokens as u64);
            self.metrics
                .prompt_cache_queries
                .increment(prompt_tokens as u64);
            self.stats.record_prompt(prompt_tokens);
            let _ = submission.reply.send(Event::Admitted);
            self.running.push(Sequence::new(slot, submission, queued));
        }
        self.metrics.set_waiting(self.waiting.len());
        self.stats.set_running(self.running.len());
        if self.waiting.is_empty() {
            self.compact();
        }
    }

    /// Ends every running and waiting request with `error`.
    fn fail_all(&mut self, error: EngineError) {
        while !self.running.is_empty() {
            self.remove(0).fail(error.clone());
        }
        self.receive(false);
        while let Some(submission) = self.waiting.pop() {
            self.stats.dequeued();
            let _ = submission.reply.send(Event::Failed(error.clone()));
        }
        self.metrics.set_waiting(0);
        self.stats.set_running(0);
    }

    fn retire_cancelled(&mut self) {
        let mut index = 0;
        while index < self.running.len() {
            if self.running[index].client_left() {
                let sequence = self.remove(index);
                tracing::debug!(slot = sequence.slot, "client left; sequence retired");
                self.metrics.cancelled.increment(1);
            } else {
                index += 1;
            }
        }
    }

    /// Removes `running[index]`, frees its slot, and moves the highest slot into the gap so
    /// active slots stay contiguous.
    fn remove(&mut self, index: usize) -> Sequence {
        let sequence = self.running.remove(index);
        self.backend.end(sequence.slot);
        sequence
    }

    /// The lowest slot no running sequence holds.
    fn free_slot(&self) -> SlotId {
        (0..)
            .find(|slot| self.running.iter().all(|s| s.slot != *slot))
            .expect("fewer sequences than slots")
    }

    /// Moves sequences from high slots into gaps so active slots are `0..running.len()`:
    /// llama.cpp batches consecutive sequence ids efficiently and gaps cost throughput
    /// (DESIGN.md). Only done when nothing waits, because a waiting request fills a gap for
    /// free while a move copies the slot's whole KV stream.
    fn compact(&mut self) {
        let n = self.running.len();
        while let Some(gap) = (0..n).find(|slot| self.running.iter().all(|s| s.slot != *slot)) {
            let Some(moved) = self
                .running
                .iter_mut()
                .filter(|s| s.slot >= n)
                .max_by_key(|s| s.slot)
            else {
                break;
            };
            self.backend.relocate(moved.slot, gap);
            moved.slot = gap;
        }
    }

    /// Runs one batch; returns how many tokens were generated.
    fn step(&mut self) -> usize {
        let demands: Vec<Demand> = self.running.iter().map(Sequence::demand).collect();
        let mut plan = self.scheduler.plan(&demands);
        // llama.cpp groups a batch's sequences only when their ids ascend by one, so hand it
        // the entries in slot order.
        plan.sort_by_key(|work| self.running[work.index].slot);
        let batch: Vec<BatchEntry<'_>> = plan
            .iter()
            .map(|work| {
                let sequence = &self.running[work.index];
                let (tokens, first_pos, sample) = sequence.next_tokens(work.tokens);
                BatchEntry {
                    slot: sequence.slot,
                    tokens,
                    first_pos,
                    sample,
                    suppress_eog: sample && sequence.suppress_eog(),
                }
            })
            .collect();
        let samples: Vec<usize> = plan
            .iter()
            .zip(&batch)
            .filter(|(_, entry)| entry.sample)
            .map(|(work, _)| work.index)
            .collect();
        let batch_tokens: usize = plan.iter().map(|w| w.tokens).sum();
        let result = self.backend.step(&batch);
        drop(batch);
        self.metrics.batch_size.record(plan.len() as f64);
        self.metrics.batch_tokens.record(batch_tokens as f64);

        let tokens = match result {
            Ok(tokens) if tokens.len() == samples.len() => tokens,
            Ok(tokens) => {
                let message = format!(
                    "backend sampled {} tokens for {} sequences",
                    tokens.len(),
                    samples.len()
                );
                self.fail_planned(&plan, EngineError::Backend(message));
                return 0;
            }
            Err(err) => {
                tracing::error!(error = %err, "batch failed");
                self.fail_planned(&plan, err.into());
                return 0;
            }
        };
        for work in &plan {
            self.running[work.index].advance(work.tokens);
        }
        let mut finished = Vec::new();
        let now = Instant::now();
        for (&index, &token) in samples.iter().zip(&tokens) {
            let sequence = &mut self.running[index];
            if let Some(reason) =
                sequence.accept(token, self.tokenizer.as_ref(), now, &self.metrics)
            {
                finished.push((index, reason));
            }
        }
        self.metrics
            .generation_tokens
            .increment(tokens.len() as u64);
        // Remove from the back so earlier indices stay valid.
        finished.sort_unstable_by_key(|&(index, _)| std::cmp::Reverse(index));
        for (index, reason) in finished {
            self.remove(index).finish(reason, now, &self.metrics);
        }
        tokens.len()
    }

    /// Fails every sequence that took part in a failed batch: their KV state is unknown.
    fn fail_planned(&mut self, plan: &[super::scheduler::Work], error: EngineError) {
        let mut indices: Vec<usize> = plan.iter().map(|w| w.index).collect();
        indices.sort_unstable_by(|a, b| b.cmp(a));
        for index in indices {
            self.remove(index).fail(error.clone());
        }
    }
}
