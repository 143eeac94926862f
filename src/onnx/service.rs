//! Dynamic batching: one OS thread owns the model and runs whatever requests have queued up
//! as padded batches, so concurrent callers share forward passes.
//!
//! The thread blocks for a request, then drains everything else already queued, sorts those
//! inputs by length (little padding) and runs them in batches bounded by [`BatchLimits`].
//! Requests arriving meanwhile form the next round, so batching needs no timers: under load,
//! rounds grow; when idle, a lone request runs at once.

use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};

use tokio::sync::oneshot;

use super::encoder::{Sequence, TextEncoder};
use super::{Embeddings, OnnxEmbedder, OnnxError};

/// The tokenizer side of an embedding model, shared by request handlers (token counting) and
/// the batching thread.
pub trait SequenceEncoder: Send + Sync {
    /// Tokenizes every text, failing on the first one over the limit (unless truncating).
    fn encode(&self, texts: &[String]) -> Result<Vec<Sequence>, OnnxError>;
    /// The longest sequence the model is given.
    fn max_seq_len(&self) -> usize;
    /// Token counts per text, as usage accounting bills them.
    fn count_tokens(&self, texts: &[String]) -> Result<Vec<usize>, OnnxError> {
        Ok(self.encode(texts)?.iter().map(Sequence::len).collect())
    }
}

impl SequenceEncoder for TextEncoder {
    fn encode(&self, texts: &[String]) -> Result<Vec<Sequence>, OnnxError> {
        TextEncoder::encode(self, texts)
    }

    fn max_seq_len(&self) -> usize {
        TextEncoder::max_seq_len(self)
    }
}

/// The model side: runs tokenized inputs as one batch, one vector per input. ONNX models and
/// GGUF models in embedding mode (llama.cpp) both serve through [`EmbeddingService`].
pub trait BatchEmbedder {
    /// One vector per sequence, in order.
    fn run_batch(&mut self, sequences: &[&Sequence]) -> Result<Vec<Vec<f32>>, OnnxError>;
}

impl BatchEmbedder for OnnxEmbedder {
    fn run_batch(&mut self, sequences: &[&Sequence]) -> Result<Vec<Vec<f32>>, OnnxError> {
        OnnxEmbedder::run_batch(self, sequences)
    }
}

/// The batching loop, handed to the closure that [`EmbeddingService::spawn_worker`] runs on
/// the new thread, so a model that must live on that thread (a llama.cpp context) can be built
/// there first.
pub struct Worker {
    limits: BatchLimits,
    queue: Receiver<Job>,
    encoder: Arc<dyn SequenceEncoder>,
    ready: SyncSender<Result<(), OnnxError>>,
}

impl Worker {
    /// Reports the model ready, then serves requests until every service handle is dropped.
    pub fn serve<E: BatchEmbedder>(self, embedder: &mut E) {
        if self.ready.send(Ok(())).is_err() {
            return;
        }
        serve(embedder, self.encoder.as_ref(), self.limits, &self.queue);
    }
}

/// Bounds on one padded batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Padded length × batch size may not exceed this (it bounds activation memory).
    pub max_tokens: usize,
    /// At most this many inputs per batch.
    pub max_batch: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        Self {
            max_tokens: 8192,
            max_batch: 64,
        }
    }
}

/// A cloneable handle to the batching thread; the thread ends when the last handle is dropped.
#[derive(Clone)]
pub struct EmbeddingService {
    jobs: Sender<Job>,
    encoder: Arc<dyn SequenceEncoder>,
    dimensions: Option<usize>,
}

impl std::fmt::Debug for EmbeddingService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddingService")
            .field("dimensions", &self.dimensions)
            .finish_non_exhaustive()
    }
}

struct Job {
    texts: Vec<String>,
    reply: oneshot::Sender<Result<Embeddings, OnnxError>>,
}

impl EmbeddingService {
    /// Moves `embedder` onto a new thread named `onnx-embed` that serves [`Self::embed`] calls.
    pub fn spawn(mut embedder: OnnxEmbedder, limits: BatchLimits) -> Result<Self, OnnxError> {
        let encoder: Arc<dyn SequenceEncoder> = embedder.encoder();
        let dimensions = embedder.dimensions();
        Self::spawn_worker("onnx-embed", encoder, dimensions, limits, move |worker| {
            worker.serve(&mut embedder);
            Ok(())
        })
    }

    /// Starts thread `name`, runs `run` on it (which builds its model and calls
    /// [`Worker::serve`]), and returns once the model is ready or `run` failed.
    pub fn spawn_worker<F>(
        name: &str,
        encoder: Arc<dyn SequenceEncoder>,
        dimensions: Option<usize>,
        limits: BatchLimits,
        run: F,
    ) -> Result<Self, OnnxError>
    where
        F: FnOnce(Worker) -> Result<(), OnnxError> + Send + 'static,
    {
        let longest = encoder.max_seq_len();
        if limits.max_batch == 0 || limits.max_tokens < longest {
            return Err(OnnxError::InvalidConfig(format!(
                "batch limits {limits:?} must allow one input of the maximum length {longest}"
            )));
        }
        let (jobs, queue) = mpsc::channel();
        let (ready, started) = mpsc::sync_channel(1);
        let worker = Worker {
            limits,
            queue,
            encoder: encoder.clone(),
            ready: ready.clone(),
        };
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                if let Err(err) = run(worker) {
                    let _ = ready.try_send(Err(err));
                }
            })
            .map_err(|e| {
                OnnxError::InvalidConfig(format!("cannot start the worker thread: {e}"))
            })?;
        match started.recv() {
            Ok(Ok(())) => Ok(Self {
                jobs,
                encoder,
                dimensions,
            }),
            Ok(Err(err)) => Err(err),
            Err(_) => Err(OnnxError::WorkerStopped),
        }
    }

    /// Embeds `texts`, batched with whatever other requests are waiting; vectors come back in
    /// input order. An input over the model's limit fails the whole request (as OpenAI's 400).
    pub async fn embed(&self, texts: Vec<String>) -> Result<Embeddings, OnnxError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { texts, reply })
            .map_err(|_| OnnxError::WorkerStopped)?;
        answer.await.map_err(|_| OnnxError::WorkerStopped)?
    }

    /// Tokens per input without running the model, for usage limits checked before queueing.
    pub fn count_tokens(&self, texts: &[String]) -> Result<Vec<usize>, OnnxError> {
        self.encoder.count_tokens(texts)
    }

    /// Length of the vectors, when the graph fixes it.
    pub fn dimensions(&self) -> Option<usize> {
        self.dimensions
    }

    /// The longest accepted input in tokens, special tokens included.
    pub fn max_seq_len(&self) -> usize {
        self.encoder.max_seq_len()
    }
}

/// A tokenized request waiting for its vectors.
struct Pending {
    sequences: Vec<Sequence>,
    vectors: Vec<Vec<f32>>,
    failure: Option<OnnxError>,
    reply: oneshot::Sender<Result<Embeddings, OnnxError>>,
}

fn serve<E: BatchEmbedder>(
    embedder: &mut E,
    encoder: &dyn SequenceEncoder,
    limits: BatchLimits,
    queue: &Receiver<Job>,
) {
    // recv() fails once every handle is gone: that is the shutdown signal.
    while let Ok(first) = queue.recv() {
        let mut round = Vec::new();
        for job in std::iter::once(first).chain(queue.try_iter()) {
            // A caller that gave up (dropped its future) needs no work done.
            if job.reply.is_closed() {
                continue;
            }
            match encoder.encode(&job.texts) {
                Ok(sequences) if sequences.is_empty() => {
                    let _ = job.reply.send(Ok(Embeddings::new(Vec::new(), Vec::new())));
                }
                Ok(sequences) => round.push(Pending {
                    vectors: vec![Vec::new(); sequences.len()],
                    sequences,
                    failure: None,
                    reply: job.reply,
                }),
                Err(e) => {
                    let _ = job.reply.send(Err(e));
                }
            }
        }
        run_round(embedder, limits, &mut round);
        for pending in round {
            let result = match pending.failure {
                Some(e) => Err(e),
                None => Ok(Embeddings::new(
                    pending.vectors,
                    pending.sequences.iter().map(Sequence::len).collect(),
                )),
            };
            // The caller may have gone away meanwhile; nothing to do then.
            let _ = pending.reply.send(result);
        }
    }
}

fn run_round<E: BatchEmbedder>(embedder: &mut E, limits: BatchLimits, round: &mut [Pending]) {
    let slots: Vec<(usize, usize)> = round
        .iter()
        .enumerate()
        .flat_map(|(job, p)| (0..p.sequences.len()).map(move |seq| (job, seq)))
        .collect();
    let lengths: Vec<usize> = slots
        .iter()
        .map(|&(job, seq)| round[job].sequences[seq].len())
        .collect();
    for batch in plan_batches(&lengths, limits) {
        let result = {
            let inputs: Vec<&Sequence> = batch
                .iter()
                .map(|&i| &round[slots[i].0].sequences[slots[i].1])
                .collect();
            embedder.run_batch(&inputs)
        };
        match result {
            Ok(vectors) => {
                for (&i, vector) in batch.iter().zip(vectors) {
                    let (job, seq) = slots[i];
                    round[job].vectors[seq] = vector;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, inputs = batch.len(), "embedding batch failed");
                for &i in &batch {
                    round[slots[i].0].failure.get_or_insert_with(|| e.clone());
                }
            }
        }
    }
}

/// Groups inputs (given by length) into batches: longest first, each batch as large as
/// `max_batch` and `padded length × size ≤ max_tokens` allow. An input longer than
/// `max_tokens` still gets a batch of its own. Returns indices into `lengths`.
pub(crate) fn plan_batches(lengths: &[usize], limits: BatchLimits) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut padded = 0;
    for i in order {
        // Sorted longest first, so the first input of a batch sets its padded length.
        let fits = current.len() < limits.max_batch.max(1)
            && padded * (current.len() + 1) <= limits.max_tokens;
        if !current.is_empty() && !fits {
            batches.push(std::mem::take(&mut current));
        }
        if current.is_empty() {
            padded = lengths[i].max(1);
        }
        current.push(i);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_tokens: usize, max_batch: usize) -> BatchLimits {
        BatchLimits {
            max_tokens,
            max_batch,
        }
    }

    /// Every input appears exactly once and every batch respects both limits.
    fn check(lengths: &[usize], limits: BatchLimits, batches: &[Vec<usize>]) {
        let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..lengths.len()).collect::<Vec<_>>());
        for batch in batches {
            let padded = batch.iter().map(|&i| lengths[i]).max().expect("non-empty");
            assert!(batch.len() <= limits.max_batch, "{batch:?}");
            assert!(
                batch.len() == 1 || padded * batch.len() <= limits.max_tokens,
                "{batch:?} pads to {padded}"
            );
        }
    }

    #[test]
    fn sorts_by_length_and_fills_up_to_the_token_budget() {
        let lengths = [5, 20, 6, 19, 7];
        let batches = plan_batches(&lengths, limits(40, 8));
        assert_eq!(batches, vec![vec![1, 3], vec![4, 2, 0]]);
        check(&lengths, limits(40, 8), &batches);
    }

    #[test]
    fn respects_the_batch_size_cap() {
        let lengths = [3; 10];
        let batches = plan_batches(&lengths, limits(1000, 4));
        assert_eq!(
            batches.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![4, 4, 2]
        );
        check(&lengths, limits(1000, 4), &batches);
    }

    #[test]
    fn an_input_longer_than_the_budget_runs_alone() {
        let lengths = [50, 2, 2];
        let batches = plan_batches(&lengths, limits(10, 8));
        assert_eq!(batches, vec![vec![0], vec![1, 2]]);
    }

    #[test]
    fn many_mixed_lengths_keep_every_input_once() {
        let lengths: Vec<usize> = (0..500).map(|i| 1 + (i * 37) % 128).collect();
        for l in [limits(128, 1), limits(512, 16), limits(8192, 64)] {
            check(&lengths, l, &plan_batches(&lengths, l));
        }
        assert!(plan_batches(&[], limits(10, 2)).is_empty());
    }
}
