//! The continuous-batching loop, one step per [`EngineCore::tick`].

use std::sync::mpsc::{Receiver, TryRecvError};

use super::scheduler::{Demand, Scheduler};
use super::sequence::Sequence;
use super::{EngineError, EngineSettings, Event, Submission};
use crate::backend::{Backend, BatchEntry, SharedTokenizer};
use crate::metrics;

/// Owns the backend and the running sequences; single-threaded by construction.
pub(crate) struct EngineCore<B: Backend> {
    backend: B,
    tokenizer: SharedTokenizer,
    settings: EngineSettings,
    scheduler: Scheduler,
    commands: Receiver<Submission>,
    /// Running sequences in admission order; their slots are always `0..running.len()`.
    running: Vec<Sequence>,
    /// No more submissions can arrive.
    closed: bool,
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
            closed: false,
        }
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
        // Retire first so a slot freed by a departed client is refilled in this same step.
        self.retire_cancelled();
        self.admit(block);
        if self.running.is_empty() {
            return !self.closed;
        }
        self.step();
        metrics::gauge_running(self.running.len());
        true
    }

    fn admit(&mut self, block: bool) {
        while self.running.len() < self.settings.parallel && !self.closed {
            let next = if block && self.running.is_empty() {
                self.commands.recv().map_err(|_| TryRecvError::Disconnected)
            } else {
                self.commands.try_recv()
            };
            let submission = match next {
                Ok(submission) => submission,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    self.closed = true;
                    break;
                }
            };
            if submission.reply.is_closed() {
                continue;
            }
            let slot = self.running.len();
            if let Err(err) = self.backend.begin(slot, &submission.request.sampling) {
                let _ = submission.reply.send(Event::Failed(err.into()));
                continue;
            }
            self.running
                .push(Sequence::new(slot, submission.request, submission.reply));
        }
    }

    fn retire_cancelled(&mut self) {
        let mut index = 0;
        while index < self.running.len() {
            if self.running[index].client_left() {
                let sequence = self.remove(index);
                tracing::debug!(slot = sequence.slot, "client left; sequence retired");
                metrics::count_cancelled();
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
        let last = self.running.len();
        if sequence.slot != last
            && let Some(moved) = self.running.iter_mut().find(|s| s.slot == last)
        {
            self.backend.relocate(last, sequence.slot);
            moved.slot = sequence.slot;
        }
        sequence
    }

    fn step(&mut self) {
        let demands: Vec<Demand> = self.running.iter().map(Sequence::demand).collect();
        let plan = self.scheduler.plan(&demands);
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
        metrics::count_batch(batch_tokens);

        let tokens = match result {
            Ok(tokens) if tokens.len() == samples.len() => tokens,
            Ok(tokens) => {
                let message = format!(
                    "backend sampled {} tokens for {} sequences",
                    tokens.len(),
                    samples.len()
                );
                self.fail_planned(&plan, EngineError::Backend(message));
                return;
            }
            Err(err) => {
                tracing::error!(error = %err, "batch failed");
                self.fail_planned(&plan, err.into());
                return;
            }
        };
        for work in &plan {
            self.running[work.index].advance(work.tokens);
        }
        let mut finished = Vec::new();
        for (&index, &token) in samples.iter().zip(&tokens) {
            if let Some(reason) = self.running[index].accept(token, self.tokenizer.as_ref()) {
                finished.push((index, reason));
            }
        }
        metrics::count_generated(tokens.len());
        // Remove from the back so earlier indices stay valid.
        finished.sort_unstable_by_key(|&(index, _)| std::cmp::Reverse(index));
        for (index, reason) in finished {
            self.remove(index).finish(reason);
        }
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
