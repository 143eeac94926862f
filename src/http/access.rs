//! Who may do what, how often: authentication middleware, per-identity rate limits and
//! concurrency limits. The only owner of that state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};
use crate::auth::{AuthError, Authenticator, Identity, Limits};
use crate::ratelimit::{RateLimiter, RateLimits, RateStatus};

/// Authentication, rate limits and concurrency limits of one server.
#[derive(Debug)]
pub struct AccessControl {
    authenticator: Option<Authenticator>,
    limiter: RateLimiter,
    default_max_concurrent: Option<u32>,
    in_flight: Mutex<HashMap<String, u32>>,
}

impl AccessControl {
    /// Access control with `authenticator` (none: everyone is `anonymous`) and default limits
    /// for identities without their own.
    pub fn new(
        authenticator: Option<Authenticator>,
        defaults: Limits,
        window: std::time::Duration,
    ) -> Self {
        let rates = RateLimits {
            requests_per_minute: defaults.requests_per_minute,
            tokens_per_minute: defaults.tokens_per_minute,
        };
        AccessControl {
            authenticator: authenticator.filter(Authenticator::is_enabled),
            limiter: RateLimiter::with_period(rates, window),
            default_max_concurrent: defaults.max_concurrent,
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// No authentication and no limits.
    pub fn open() -> Self {
        AccessControl::new(None, Limits::default(), std::time::Duration::from_secs(60))
    }

    /// Whether requests must carry credentials.
    pub fn requires_auth(&self) -> bool {
        self.authenticator.is_some()
    }

    /// Re-reads the keys file (SIGHUP); returns the number of keys.
    pub fn reload(&self) -> Result<usize, AuthError> {
        self.authenticator
            .as_ref()
            .map_or(Ok(0), Authenticator::reload)
    }

    /// The identity behind a request's credentials.
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
        x_api_key: Option<&str>,
    ) -> Result<Identity, ApiError> {
        let Some(authenticator) = &self.authenticator else {
            return Ok(Identity::anonymous());
        };
        authenticator.authenticate(authorization, x_api_key).map_err(|err| match err {
            AuthError::Missing => ApiError::unauthorized(
                "You didn't provide an API key. Send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'.",
            ),
            AuthError::Expired { .. } => ApiError::unauthorized("The API key or token has expired."),
            AuthError::Invalid | AuthError::Config(_) => ApiError::unauthorized("Incorrect API key provided."),
        })
    }

    /// Takes one of the identity's concurrent-request slots until the guard drops.
    pub fn acquire(self: &Arc<Self>, identity: &Identity) -> Result<InFlight, ApiError> {
        let limit = identity
            .limits
            .max_concurrent
            .or(self.default_max_concurrent);
        let mut in_flight = self
            .in_flight
            .lock()
            .expect("in-flight lock is never poisoned");
        let current = in_flight.get(&identity.id).copied().unwrap_or(0);
        if limit.is_some_and(|limit| current >= limit) {
            crate::metrics::record_rate_limited(&identity.id);
            return Err(ApiError::rate_limited(
                format!(
                    "Too many concurrent requests for this key (limit {}).",
                    limit.unwrap_or(0)
                ),
                1,
                Vec::new(),
            ));
        }
        in_flight.insert(identity.id.clone(), current + 1);
        Ok(InFlight {
            access: self.clone(),
            identity: identity.id.clone(),
        })
    }

    /// Admits one request of `prompt_tokens` against the identity's rate limits.
    pub fn admit(&self, identity: &Identity, prompt_tokens: usize) -> Result<RateStatus, ApiError> {
        self.limiter
            .admit(
                &identity.id,
                rate_limits(identity),
                prompt_tokens as u64,
                Instant::now(),
            )
            .map_err(|limited| {
                crate::metrics::record_rate_limited(&identity.id);
                ApiError::rate_limited(
                    limited.message(),
                    limited.retry_after_secs(),
                    limited.status.headers(),
                )
            })
    }

    /// Gives back the rate-limit charge of a request that was never served.
    pub fn refund(&self, identity: &Identity, prompt_tokens: usize) {
        self.limiter.refund(
            &identity.id,
            rate_limits(identity),
            prompt_tokens as u64,
            Instant::now(),
        );
    }

    /// Debits generated tokens from the identity's token budget.
    pub fn record_completion(&self, identity: &Identity, tokens: usize) {
        self.limiter.record_completion(
            &identity.id,
            rate_limits(identity),
            tokens as u64,
            Instant::now(),
        );
    }

    /// Drops rate-limit state of idle identities.
    pub fn prune(&self) {
        self.limiter.prune(Instant::now());
    }
}

fn rate_limits(identity: &Identity) -> Option<RateLimits> {
    let limits = identity.limits;
    (limits.requests_per_minute.is_some() || limits.tokens_per_minute.is_some()).then_some(
        RateLimits {
            requests_per_minute: limits.requests_per_minute,
            tokens_per_minute: limits.tokens_per_minute,
        },
    )
}

/// One in-flight request of an identity; releases its slot on drop.
#[derive(Debug)]
pub struct InFlight {
    access: Arc<AccessControl>,
    identity: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut in_flight = self
            .access
            .in_flight
            .lock()
            .expect("in-flight lock is never poisoned");
        if let Some(count) = in_flight.get_mut(&self.identity) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                in_flight.remove(&self.identity);
            }
        }
    }
}

/// Route layer of `/v1/*`: resolves the caller's identity or answers 401.
pub(crate) async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let header_text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let identity = state.access().authenticate(
        header_text(header::AUTHORIZATION.as_str()),
        header_text("x-api-key"),
    );
    match identity {
        Ok(identity) => {
            tracing::Span::current().record("identity", identity.id.as_str());
            request.extensions_mut().insert(Arc::new(identity));
            next.run(request).await
        }
        Err(err) => err.into_response(),
    }
}
