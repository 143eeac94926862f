//! One request's life inside the engine: prefill, decode, finish.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use super::detokenizer::Detokenizer;
use super::scheduler::Demand;
use super::stop::StopMatcher;
use super::{Completion, Event, FinishReason, GenerateRequest, Submission, Timings};
use crate::backend::{SlotId, TokenId, Tokenizer};
use crate::metrics::EngineMetrics;

/// A request admitted into a backend slot.
#[derive(Debug)]
pub(crate) struct Sequence {
    /// KV sequence id in the backend.
    pub slot: SlotId,
    request: GenerateRequest,
    /// Prompt tokens evaluated so far.
    prefilled: usize,
    /// Tokens held in the KV cache (prompt and generated).
    n_past: usize,
    /// The last sampled token, not yet evaluated; `Some` while decoding.
    pending: Option<TokenId>,
    generated: u32,
    detokenizer: Detokenizer,
    stop: StopMatcher,
    reply: UnboundedSender<Event>,
    submitted: Instant,
    queued: Duration,
    first_token: Option<Duration>,
    last_token_at: Option<Instant>,
    /// Shared with the submitter, who may need the count if the request ends early.
    generated_count: Arc<AtomicUsize>,
}

impl Sequence {
    /// Admits `submission` into `slot` after it waited `queued`.
    pub fn new(slot: SlotId, submission: Submission, queued: Duration) -> Self {
        let Submission {
            request,
            reply,
            submitted,
            generated,
        } = submission;
        let stop = StopMatcher::new(request.stop.clone());
        Sequence {
            slot,
            request,
            prefilled: 0,
            n_past: 0,
            pending: None,
            generated: 0,
            detokenizer: Detokenizer::new(),
            stop,
            reply,
            submitted,
            queued,
            first_token: None,
            last_token_at: None,
            generated_count: generated,
        }
    }

    /// KV cells this sequence occupies.
    pub fn kv_cells(&self) -> usize {
        self.n_past
    }

    /// Whether the client is gone (its receiver was dropped).
    pub fn client_left(&self) -> bool {
        self.reply.is_closed()
    }

    /// What this sequence wants from the next step.
    pub fn demand(&self) -> Demand {
        match self.pending {
            Some(_) => Demand::Decode,
            None => Demand::Prefill {
                remaining: self.request.prompt.len() - self.prefilled,
            },
        }
    }

    /// The next `n` tokens to evaluate, their first position, and whether a sample follows.
    pub fn next_tokens(&self, n: usize) -> (&[TokenId], usize, bool) {
        match &self.pending {
            Some(token) => (std::slice::from_ref(token), self.n_past, true),
            None => {
                let end = self.prefilled + n;
                let sample = end == self.request.prompt.len();
                (
                    &self.request.prompt[self.prefilled..end],
                    self.n_past,
                    sample,
                )
            }
        }
    }

    /// Whether end-of-generation must not be sampled now.
    pub fn suppress_eog(&self) -> bool {
        self.request.ignore_eos || self.generated < self.request.min_tokens
    }

    /// Records that `n` tokens from [`Sequence::next_tokens`] were evaluated.
    pub fn advance(&mut self, n: usize) {
        if self.pending.take().is_none() {
            self.prefilled += n;
        }
        self.n_past += n;
    }

    /// Takes a sampled token; returns how the sequence finished, if it did.
    pub fn accept(
        &mut self,
        token: TokenId,
        tokenizer: &dyn Tokenizer,
        now: Instant,
        metrics: &EngineMetrics,
    ) -> Option<FinishReason> {
        self.generated += 1;
        self.generated_count.fetch_add(1, Ordering::Relaxed);
        match self.last_token_at.replace(now) {
            Some(previous) => metrics
                .inter_token_latency
                .record(now.duration_since(previous).as_secs_f64()),
            None => {
                let first = now.duration_since(self.submitted);
                self.first_token = Some(first);
                metrics.time_to_first_token.record(first.as_secs_f64());
            }
        }
        if tokenizer.is_eog(token) && !self.request.ignore_eos {
            self.release_tail();
            return Some(FinishReason::Stop);
        }
        let text = self.detokenizer.push(&tokenizer.piece(token));
        let outcome = self.stop.push(&text);
        self.send_text(outcome.emit);
        if outcome.stopped {
            return Some(FinishReason::Stop);
        }
        if self.generated >= self.request.max_tokens {
            let stopped = self.release_tail();
            return Some(if stopped {
                FinishReason::Stop
            } else {
                FinishReason::Length
            });
        }
        self.pending = Some(token);
        None
    }

    /// Sends the final event; consumes the sequence.
    pub fn finish(self, reason: FinishReason, now: Instant, metrics: &EngineMetrics) {
        let total = now.duration_since(self.submitted);
        metrics.inference_duration.record(total.as_secs_f64());
        let completion = Completion {
            finish_reason: reason,
            prompt_tokens: self.request.prompt.len(),
            completion_tokens: self.generated as usize,
            timings: Timings {
                queued: self.queued,
                first_token: self.first_token,
                total,
            },
        };
        let _ = self.reply.send(Event::Done(completion));
    }

    /// Sends a failure as the final event; consumes the sequence.
    pub fn fail(self, error: super::EngineError) {
        let _ = self.reply.send(Event::Failed(error));
    }

    /// Flushes text held back by the detokenizer and the stop matcher; true if that completed
    /// a stop string.
    fn release_tail(&mut self) -> bool {
        let rest = self.detokenizer.finish();
        let outcome = self.stop.push(&rest);
        let mut text = outcome.emit;
        if !outcome.stopped {
            text.push_str(&self.stop.flush());
        }
        self.send_text(text);
        outcome.stopped
    }

    fn send_text(&self, text: String) {
        if !text.is_empty() {
            // A closed channel is noticed by `client_left` before the next step.
            let _ = self.reply.send(Event::Text(text));
        }
    }
}
