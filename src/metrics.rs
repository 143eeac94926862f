//! Every metric name, spelled once, and the few helpers that record them.
//!
//! Recording goes through the `metrics` facade: without an installed recorder these calls
//! are no-ops, so the engine can record unconditionally.

/// Sequences holding a slot in an engine (gauge).
pub const RUNNING_SEQUENCES: &str = "inferno_running_sequences";
/// Tokens generated (sampled) by all engines (counter).
pub const GENERATED_TOKENS: &str = "inferno_generated_tokens_total";
/// Tokens evaluated in batches, prompt and decode (counter).
pub const BATCH_TOKENS: &str = "inferno_batch_tokens_total";
/// Engine steps taken (counter).
pub const ENGINE_STEPS: &str = "inferno_engine_steps_total";
/// Requests cancelled because the client left (counter).
pub const CANCELLED_REQUESTS: &str = "inferno_cancelled_requests_total";
/// HTTP requests rejected because the queue was full (counter).
pub const REJECTED_REQUESTS: &str = "inferno_rejected_requests_total";

/// Records how many sequences are running.
pub fn gauge_running(running: usize) {
    metrics::gauge!(RUNNING_SEQUENCES).set(running as f64);
}

/// Records one engine step of `tokens` tokens.
pub fn count_batch(tokens: usize) {
    metrics::counter!(ENGINE_STEPS).increment(1);
    metrics::counter!(BATCH_TOKENS).increment(tokens as u64);
}

/// Records generated tokens.
pub fn count_generated(tokens: usize) {
    metrics::counter!(GENERATED_TOKENS).increment(tokens as u64);
}

/// Records a request cancelled by its client.
pub fn count_cancelled() {
    metrics::counter!(CANCELLED_REQUESTS).increment(1);
}

/// Records a request rejected with 503 because the queue was full.
pub fn count_rejected() {
    metrics::counter!(REJECTED_REQUESTS).increment(1);
}
