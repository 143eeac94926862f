//! Per-identity rate limits: requests per minute (RPM) and tokens per minute (TPM).
//!
//! Each limit is a token bucket holding up to `limit` units that refills continuously at
//! `limit` per period (60 s in production). Prompt tokens are taken at admission and
//! completion tokens as they are generated, so the token bucket may go into debt; the debt
//! delays the identity's next admission. Crates such as `governor` implement GCRA, which
//! cannot record a cost after the fact, so this is a small hand-written bucket instead.
//!
//! Every call takes `now` so that tests are deterministic. The state is one map behind a
//! `std::sync::Mutex`, held only for a few arithmetic steps and never across an `.await`.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Limits of one identity (or the global default); `None` means that dimension is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateLimits {
    /// Requests admitted per period; `Some(0)` denies every request.
    pub requests_per_minute: Option<u32>,
    /// Prompt plus completion tokens per period; `Some(0)` denies every request.
    pub tokens_per_minute: Option<u32>,
}

impl RateLimits {
    /// The limits in bucket order: requests, then tokens.
    fn per_kind(self) -> [Option<u32>; 2] {
        [self.requests_per_minute, self.tokens_per_minute]
    }
}

/// Which limit turned a request away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// The requests-per-minute limit.
    Requests,
    /// The tokens-per-minute limit.
    Tokens,
}

/// The state of one bucket, as the `x-ratelimit-*` headers report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketStatus {
    /// The configured limit per period.
    pub limit: u32,
    /// Whole units available now (0 while in debt).
    pub remaining: u32,
    /// Time until the bucket is full again.
    pub reset: Duration,
}

/// Snapshot of an identity's buckets for the `x-ratelimit-*` response headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateStatus {
    /// The request bucket, if a request limit applies.
    pub requests: Option<BucketStatus>,
    /// The token bucket, if a token limit applies.
    pub tokens: Option<BucketStatus>,
}

impl RateStatus {
    /// The header names and values OpenAI SDKs read, only for the limits that apply.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = Vec::with_capacity(6);
        if let Some(bucket) = self.requests {
            headers.push(("x-ratelimit-limit-requests", bucket.limit.to_string()));
            headers.push((
                "x-ratelimit-remaining-requests",
                bucket.remaining.to_string(),
            ));
            headers.push(("x-ratelimit-reset-requests", format_reset(bucket.reset)));
        }
        if let Some(bucket) = self.tokens {
            headers.push(("x-ratelimit-limit-tokens", bucket.limit.to_string()));
            headers.push(("x-ratelimit-remaining-tokens", bucket.remaining.to_string()));
            headers.push(("x-ratelimit-reset-tokens", format_reset(bucket.reset)));
        }
        headers
    }
}

/// A request turned away: when to retry, which limit was hit, and the headers' snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub struct RateLimited {
    /// Time until the request would be admitted (both limits considered).
    pub retry_after: Duration,
    /// The identity's buckets at the time of refusal.
    pub status: RateStatus,
    /// The limit that needs the longest wait.
    pub which: LimitKind,
}

impl RateLimited {
    /// `retry_after` in whole seconds for the `Retry-After` header: rounded up, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        let secs = self.retry_after.as_nanos().div_ceil(1_000_000_000);
        u64::try_from(secs).unwrap_or(u64::MAX).max(1)
    }

    /// The message for the 429 error body.
    pub fn message(&self) -> String {
        let (name, bucket) = match self.which {
            LimitKind::Requests => ("requests", self.status.requests),
            LimitKind::Tokens => ("tokens", self.status.tokens),
        };
        let limit = bucket.map_or(0, |bucket| bucket.limit);
        format!(
            "Rate limit reached for {name} per minute (limit {limit}); retry in {}s",
            self.retry_after_secs()
        )
    }
}

/// Formats a reset duration as OpenAI does ("0s", "850ms", "1.5s", "6m0s", "1h0m0s").
///
/// Rounds up to whole milliseconds so that a client waiting the printed time is never early.
pub fn format_reset(duration: Duration) -> String {
    let ms = u64::try_from(duration.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
    if (1..1_000).contains(&ms) {
        return format!("{ms}ms");
    }
    let (hours, minutes) = (ms / 3_600_000, ms / 60_000 % 60);
    let seconds = format!("{}.{:03}", ms / 1_000 % 60, ms % 1_000);
    let seconds = seconds.trim_end_matches('0').trim_end_matches('.');
    match (hours, minutes) {
        (0, 0) => format!("{seconds}s"),
        (0, _) => format!("{minutes}m{seconds}s"),
        _ => format!("{hours}h{minutes}m{seconds}s"),
    }
}

/// One token bucket in exact integer arithmetic.
///
/// `level` counts units × period nanoseconds: refilling adds `elapsed_ns × limit` and taking
/// subtracts `units × period_ns`, so nothing rounds or drifts. Negative means debt.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    limit: u32,
    period_ns: i128,
    level: i128,
    updated: Instant,
}

impl Bucket {
    fn full(limit: u32, period_ns: i128, now: Instant) -> Self {
        let level = i128::from(limit) * period_ns;
        Bucket {
            limit,
            period_ns,
            level,
            updated: now,
        }
    }

    fn capacity(&self) -> i128 {
        i128::from(self.limit) * self.period_ns
    }

    /// Adds what flowed in since the last update, then applies a possibly changed limit.
    fn refill(&mut self, limit: u32, now: Instant) {
        // Callers read the clock before taking the lock, so `now` may be slightly older than
        // `updated`: that refills nothing rather than moving time backwards.
        let elapsed = now.saturating_duration_since(self.updated).as_nanos();
        let inflow = i128::try_from(elapsed)
            .unwrap_or(i128::MAX)
            .saturating_mul(i128::from(self.limit));
        self.limit = limit;
        self.level = self.level.saturating_add(inflow).min(self.capacity());
        self.updated = self.updated.max(now);
    }

    /// Returns units taken earlier (never above capacity).
    fn give(&mut self, units: u64) {
        self.level = self
            .level
            .saturating_add(i128::from(units).saturating_mul(self.period_ns))
            .min(self.capacity());
    }

    fn take(&mut self, units: u64) {
        self.level = self
            .level
            .saturating_sub(i128::from(units).saturating_mul(self.period_ns));
    }

    /// Time until `units` can be taken; capped at the limit so that any request can pass a full
    /// bucket. A zero limit never refills: it asks for a period and denies again.
    fn wait_for(&self, units: u64) -> Duration {
        if self.limit == 0 {
            return nanos(self.period_ns);
        }
        let need = units.min(u64::from(self.limit));
        self.time_to(i128::from(need) * self.period_ns)
    }

    fn time_to(&self, level: i128) -> Duration {
        let deficit = level.saturating_sub(self.level);
        if deficit <= 0 || self.limit == 0 {
            return Duration::ZERO;
        }
        let limit = i128::from(self.limit);
        nanos(deficit / limit + i128::from(deficit % limit != 0))
    }

    fn status(&self) -> BucketStatus {
        let whole = (self.level.max(0) / self.period_ns).min(i128::from(self.limit));
        BucketStatus {
            limit: self.limit,
            remaining: u32::try_from(whole).unwrap_or(self.limit),
            reset: self.time_to(self.capacity()),
        }
    }
}

fn nanos(ns: i128) -> Duration {
    Duration::from_nanos(u64::try_from(ns.max(0)).unwrap_or(u64::MAX))
}

/// An identity's buckets, requests then tokens; a bucket exists exactly when its limit applies.
type Buckets = [Option<Bucket>; 2];

fn status(buckets: &Buckets) -> RateStatus {
    let [requests, tokens] = buckets.map(|bucket| bucket.map(|bucket| bucket.status()));
    RateStatus { requests, tokens }
}

/// Rate limiter shared by all request tasks; one entry per identity seen.
#[derive(Debug)]
pub struct RateLimiter {
    default: RateLimits,
    period_ns: i128,
    entries: Mutex<HashMap<String, Buckets>>,
}

impl RateLimiter {
    /// A limiter whose buckets refill their whole limit every 60 seconds.
    pub fn new(default: RateLimits) -> Self {
        Self::with_period(default, Duration::from_secs(60))
    }

    /// A limiter with a custom refill period (for tests); a zero period counts as 1 ns.
    pub fn with_period(default: RateLimits, period: Duration) -> Self {
        let period_ns = i128::try_from(period.as_nanos())
            .unwrap_or(i128::MAX)
            .max(1);
        let entries = Mutex::new(HashMap::new());
        RateLimiter {
            default,
            period_ns,
            entries,
        }
    }

    /// Checks and, if admitted, takes one request and `prompt_tokens` tokens.
    ///
    /// `limits` are the identity's own; fields left `None` fall back to the default's.
    pub fn admit(
        &self,
        identity: &str,
        limits: Option<RateLimits>,
        prompt_tokens: u64,
        now: Instant,
    ) -> Result<RateStatus, RateLimited> {
        let limits = self.effective(limits);
        if limits == RateLimits::default() {
            return Ok(RateStatus::default());
        }
        let mut entries = self.lock();
        let buckets = self.buckets(&mut entries, identity, limits, now);
        let needs = [(LimitKind::Requests, 1), (LimitKind::Tokens, prompt_tokens)];
        let longest = buckets
            .iter()
            .zip(needs)
            .filter_map(|(bucket, (kind, need))| Some((kind, bucket.as_ref()?.wait_for(need))))
            .max_by_key(|(_, wait)| *wait);
        if let Some((which, retry_after)) = longest.filter(|(_, wait)| !wait.is_zero()) {
            return Err(RateLimited {
                retry_after,
                status: status(buckets),
                which,
            });
        }
        for (bucket, (_, need)) in buckets.iter_mut().zip(needs) {
            bucket.iter_mut().for_each(|bucket| bucket.take(need));
        }
        Ok(status(buckets))
    }

    /// Debits generated tokens; the token bucket may go negative, delaying the next admission.
    ///
    /// Takes the identity's limits like `admit`, so a debit after `prune` still lands.
    pub fn record_completion(
        &self,
        identity: &str,
        limits: Option<RateLimits>,
        tokens: u64,
        now: Instant,
    ) {
        let limits = self.effective(limits);
        if limits.tokens_per_minute.is_none() || tokens == 0 {
            return;
        }
        let mut entries = self.lock();
        if let [_, Some(bucket)] = self.buckets(&mut entries, identity, limits, now) {
            bucket.take(tokens);
        }
    }

    /// Gives back what `admit` took for a request that was never served (rejected by a full
    /// queue, or gave up waiting for a slot), so retrying as told does not burn the budget.
    pub fn refund(
        &self,
        identity: &str,
        limits: Option<RateLimits>,
        prompt_tokens: u64,
        now: Instant,
    ) {
        let limits = self.effective(limits);
        if limits == RateLimits::default() {
            return;
        }
        let mut entries = self.lock();
        let buckets = self.buckets(&mut entries, identity, limits, now);
        for (bucket, units) in buckets.iter_mut().zip([1, prompt_tokens]) {
            bucket.iter_mut().for_each(|bucket| bucket.give(units));
        }
    }

    /// Drops identities whose buckets are all full at `now`: a full bucket is the same as a new
    /// one, so this frees memory without changing any decision.
    pub fn prune(&self, now: Instant) {
        self.lock().retain(|_, buckets| {
            buckets.iter_mut().flatten().any(|bucket| {
                bucket.refill(bucket.limit, now);
                bucket.level < bucket.capacity()
            })
        });
    }

    fn effective(&self, limits: Option<RateLimits>) -> RateLimits {
        let [requests, tokens] = limits.unwrap_or_default().per_kind();
        RateLimits {
            requests_per_minute: requests.or(self.default.requests_per_minute),
            tokens_per_minute: tokens.or(self.default.tokens_per_minute),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Buckets>> {
        // No update can panic halfway, so a poisoned map is still consistent.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The identity's buckets brought up to `now`, created or dropped as `limits` now say.
    fn buckets<'a>(
        &self,
        entries: &'a mut HashMap<String, Buckets>,
        identity: &str,
        limits: RateLimits,
        now: Instant,
    ) -> &'a mut Buckets {
        let buckets = entries.entry(identity.to_owned()).or_default();
        for (slot, limit) in buckets.iter_mut().zip(limits.per_kind()) {
            *slot = match (slot.take(), limit) {
                (_, None) => None,
                (None, Some(limit)) => Some(Bucket::full(limit, self.period_ns, now)),
                (Some(mut bucket), Some(limit)) => {
                    bucket.refill(limit, now);
                    Some(bucket)
                }
            };
        }
        buckets
    }
}

#[cfg(test)]
mod tests;
