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
mod tests {
    use super::*;

    fn limits(requests: Option<u32>, tokens: Option<u32>) -> RateLimits {
        RateLimits {
            requests_per_minute: requests,
            tokens_per_minute: tokens,
        }
    }

    fn secs(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    /// A limiter and a start instant; times below are milliseconds after the start.
    struct Case(RateLimiter, Instant);

    impl Case {
        fn new(requests: Option<u32>, tokens: Option<u32>) -> Self {
            Case(RateLimiter::new(limits(requests, tokens)), Instant::now())
        }
        fn at(&self, ms: u64) -> Instant {
            self.1 + Duration::from_millis(ms)
        }
        fn admit(&self, id: &str, tokens: u64, ms: u64) -> Result<RateStatus, RateLimited> {
            self.0.admit(id, None, tokens, self.at(ms))
        }
        fn admit_as(&self, limits: RateLimits, ms: u64) -> Result<RateStatus, RateLimited> {
            self.0.admit("a", Some(limits), 0, self.at(ms))
        }
        fn complete(&self, id: &str, tokens: u64, ms: u64) {
            self.0.record_completion(id, None, tokens, self.at(ms));
        }
        fn refuse(&self, tokens: u64, ms: u64) -> RateLimited {
            self.admit("a", tokens, ms).expect_err("over the limit")
        }
    }

    fn remaining(status: RateStatus) -> [Option<u32>; 2] {
        [status.requests, status.tokens].map(|bucket| bucket.map(|b| b.remaining))
    }

    #[test]
    fn admits_the_limit_then_rejects_for_one_interval() {
        let case = Case::new(Some(60), None);
        for i in 0..60 {
            let status = case.admit("a", 0, 0).expect("within the limit");
            assert_eq!(remaining(status), [Some(59 - i), None]);
        }
        let refused = case.refuse(0, 0);
        assert_eq!(
            (refused.which, refused.retry_after),
            (LimitKind::Requests, secs(1))
        );
        let text = "Rate limit reached for requests per minute (limit 60); retry in 1s";
        assert_eq!(refused.to_string(), text);
        let requests = refused.status.requests.expect("rpm applies");
        assert_eq!((requests.remaining, requests.reset), (0, secs(60)));
        let wait = |ms| RateLimited {
            retry_after: Duration::from_millis(ms),
            ..refused
        };
        let rounded = [1, 1_000, 1_001].map(|ms| wait(ms).retry_after_secs());
        assert_eq!(rounded, [1, 1, 2]);
    }

    #[test]
    fn refills_continuously_without_rounding_drift() {
        let limiter = RateLimiter::with_period(limits(Some(3), None), secs(7));
        let start = Instant::now();
        let admit = |ns| {
            limiter
                .admit("a", None, 0, start + Duration::from_nanos(ns))
                .is_ok()
        };
        assert_eq!(
            [admit(0), admit(0), admit(0), admit(0)],
            [true, true, true, false]
        );
        let refused = limiter.admit("a", None, 0, start).expect_err("empty");
        assert_eq!(refused.retry_after, Duration::from_nanos(2_333_333_334));
        assert!(!admit(2_333_333_333));
        assert!(admit(2_333_333_334));
        assert!(!admit(2_333_333_334));
        let later = 600_000_000_000;
        let admitted = [admit(later), admit(later), admit(later), admit(later)];
        assert_eq!(admitted, [true, true, true, false], "never above the limit");
    }

    #[test]
    fn tokens_count_the_prompt_at_admission_and_the_completion_after() {
        let case = Case::new(None, Some(1_000));
        let status = case.admit("a", 300, 0).expect("fits");
        assert_eq!(remaining(status), [None, Some(700)]);
        assert_eq!(status.tokens.map(|b| b.reset), Some(secs(18)));
        case.complete("a", 500, 0);
        let status = case.admit("a", 200, 0).expect("exactly 200 left");
        assert_eq!(remaining(status), [None, Some(0)]);
        let refused = case.refuse(1, 0);
        assert_eq!(refused.which, LimitKind::Tokens);
        assert_eq!(refused.retry_after, Duration::from_millis(60));
    }

    #[test]
    fn debt_delays_the_next_admission_by_its_size() {
        let case = Case::new(Some(1), Some(1_000));
        case.admit("a", 100, 0).expect("fits");
        // 1,900 generated with 900 left: 1,000 in debt, so 100 more need 1,100 refilled.
        case.complete("a", 1_900, 0);
        let refused = case.refuse(100, 0);
        assert_eq!(
            refused.which,
            LimitKind::Tokens,
            "66 s for tokens beats 60 s for requests"
        );
        assert_eq!(
            (refused.retry_after, refused.retry_after_secs()),
            (secs(66), 66)
        );
        let tokens = refused.status.tokens.expect("tpm applies");
        assert_eq!((tokens.remaining, tokens.reset), (0, secs(120)));
        assert!(case.admit("a", 100, 65_999).is_err());
        assert!(case.admit("a", 100, 66_000).is_ok());
    }

    #[test]
    fn a_prompt_larger_than_the_limit_passes_a_full_bucket_only() {
        let case = Case::new(None, Some(1_000));
        let status = case.admit("a", 5_000, 0).expect("a full bucket");
        assert_eq!(remaining(status), [None, Some(0)]);
        // Full again after the 4,000 debt and the 1,000 capacity have refilled.
        assert_eq!(case.refuse(5_000, 0).retry_after, secs(300));
        assert!(case.admit("a", 5_000, 300_000).is_ok());
    }

    #[test]
    fn identity_limits_override_the_default_per_field() {
        let case = Case::new(Some(2), Some(100));
        let own = limits(Some(5), None);
        let status = case.admit_as(own, 0).expect("fits");
        let limit = [status.requests, status.tokens].map(|bucket| bucket.map(|b| b.limit));
        assert_eq!(limit, [Some(5), Some(100)]);
        let admitted = [0; 5].map(|_| case.admit_as(own, 0).is_ok());
        assert_eq!(admitted, [true, true, true, true, false]);
        assert!(case.admit("plain", 10, 0).is_ok());
        assert!(case.admit("plain", 10, 0).is_ok());
        let refused = case.admit("plain", 10, 0).expect_err("default rpm 2");
        assert_eq!(refused.which, LimitKind::Requests);
        let other = case.admit("other", 10, 0);
        assert!(other.is_ok(), "identities are independent");
    }

    #[test]
    fn no_limit_admits_without_state_and_a_zero_limit_denies() {
        let case = Case::new(None, None);
        for _ in 0..1_000 {
            let status = case.admit("a", 1_000_000, 0).expect("unlimited");
            assert!(status.headers().is_empty());
        }
        case.complete("a", 1_000_000, 0);
        assert!(case.0.lock().is_empty());
        let refused = case.admit_as(limits(Some(0), None), 0).expect_err("denied");
        assert_eq!(refused.retry_after, secs(60));
        let requests = refused.status.requests.map(|b| (b.limit, b.remaining));
        assert_eq!(requests, Some((0, 0)));
    }

    #[test]
    fn a_changed_limit_keeps_spent_units_and_caps_at_the_new_limit() {
        let case = Case::new(None, Some(1_000));
        let (small, large) = (limits(Some(2), None), limits(Some(10), None));
        assert!(case.admit_as(small, 0).is_ok());
        let status = case.admit_as(large, 0).expect("raised");
        let requests = status.requests.map(|b| (b.limit, b.remaining));
        assert_eq!(requests, Some((10, 0)));
        let status = case.admit_as(small, 60_000).expect("lowered");
        assert_eq!(remaining(status), [Some(1), Some(1_000)]);
        assert!(case.admit_as(small, 60_000).is_ok());
        let status = case
            .admit("a", 0, 60_000)
            .expect("no request limit any more");
        assert_eq!(remaining(status), [None, Some(1_000)]);
    }

    #[test]
    fn headers_report_limit_remaining_and_reset() {
        let case = Case::new(Some(60), Some(40));
        let status = case.admit("a", 1, 0).expect("fits");
        let expected = [
            ("x-ratelimit-limit-requests", "60"),
            ("x-ratelimit-remaining-requests", "59"),
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-limit-tokens", "40"),
            ("x-ratelimit-remaining-tokens", "39"),
            ("x-ratelimit-reset-tokens", "1.5s"),
        ];
        assert_eq!(status.headers(), expected.map(|(k, v)| (k, v.to_owned())));
        case.complete("a", 39, 0);
        let refused = case.refuse(10, 0);
        assert_eq!(refused.retry_after, secs(15));
        let headers = refused.status.headers();
        assert_eq!(headers[4], ("x-ratelimit-remaining-tokens", "0".to_owned()));
        assert_eq!(headers[5], ("x-ratelimit-reset-tokens", "1m0s".to_owned()));
        let text = "Rate limit reached for tokens per minute (limit 40); retry in 15s";
        assert_eq!(refused.message(), text);
    }

    #[test]
    fn format_reset_writes_durations_as_openai_does() {
        let ms = Duration::from_millis;
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(1), "1ms"),
            (ms(850), "850ms"),
            (ms(1_500), "1.5s"),
            (ms(1_050), "1.05s"),
            (secs(59), "59s"),
            (ms(59_500), "59.5s"),
            (secs(60), "1m0s"),
            (secs(390), "6m30s"),
            (ms(3_723_250), "1h2m3.25s"),
        ];
        for (duration, text) in cases {
            assert_eq!(format_reset(duration), text, "{duration:?}");
        }
    }

    #[test]
    fn prune_drops_full_buckets_and_keeps_the_others() {
        let case = Case::new(Some(10), Some(1_000));
        case.admit("old", 100, 0).expect("fits");
        case.admit("recent", 100, 58_000).expect("fits");
        case.admit("debtor", 100, 0).expect("fits");
        case.complete("debtor", 2_000, 0);
        case.0.prune(case.at(61_000));
        let mut kept: Vec<_> = case.0.lock().keys().cloned().collect();
        kept.sort();
        assert_eq!(kept, ["debtor", "recent"]);
        case.0.prune(case.at(600_000));
        assert!(case.0.lock().is_empty());
        // A debit for a pruned identity still lands, on a fresh bucket.
        case.complete("old", 1_000, 600_000);
        assert!(case.admit("old", 1, 600_000).is_err());
    }

    #[test]
    fn concurrent_admits_take_exactly_the_limit() {
        fn shared<T: Send + Sync>(value: &T) -> &T {
            value
        }
        let case = Case::new(Some(50), None);
        let limiter = shared(&case.0);
        let admit = || (0..100).filter(|_| limiter.admit("k", None, 0, case.1).is_ok());
        let admitted: usize = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..8).map(|_| scope.spawn(|| admit().count())).collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("no panic"))
                .sum()
        });
        assert_eq!(admitted, 50);
    }
}
