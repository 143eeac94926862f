//! Rate limiter behaviour, deterministic (time is passed in).
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

#[test]
fn refund_gives_back_an_unserved_request() {
    let limiter = RateLimiter::new(RateLimits {
        requests_per_minute: Some(1),
        tokens_per_minute: Some(100),
    });
    let now = Instant::now();
    assert!(limiter.admit("a", None, 40, now).is_ok());
    assert!(
        limiter.admit("a", None, 1, now).is_err(),
        "the only request is used"
    );
    limiter.refund("a", None, 40, now);
    let status = limiter.admit("a", None, 40, now).expect("refunded");
    assert_eq!(status.tokens.map(|t| t.remaining), Some(60));
    limiter.refund("a", None, 1000, now);
    let status = limiter.admit("a", None, 0, now).expect("refunded again");
    assert_eq!(
        status.tokens.map(|t| t.remaining),
        Some(100),
        "never above capacity"
    );
}
