//! [`Identity`]: who a request belongs to, whether it came with an API key or a JWT.

use serde::Deserialize;

/// Per-identity limits; `None` means unlimited. Enforced by the HTTP rate-limit layer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Limits {
    /// Requests admitted per minute.
    pub requests_per_minute: Option<u32>,
    /// Prompt plus completion tokens per minute.
    pub tokens_per_minute: Option<u32>,
    /// Requests in flight at once.
    pub max_concurrent: Option<u32>,
}

impl Limits {
    /// Names the first limit set to zero: a zero limit would lock the identity out silently,
    /// so configurations and tokens carrying one are rejected instead.
    pub(crate) fn zero_limit(&self) -> Option<&'static str> {
        [
            ("requests-per-minute", self.requests_per_minute),
            ("tokens-per-minute", self.tokens_per_minute),
            ("max-concurrent", self.max_concurrent),
        ]
        .into_iter()
        .find_map(|(name, value)| (value == Some(0)).then_some(name))
    }
}

/// An authenticated caller: its id (for logs and metric labels), the models it may use and
/// its limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Key id from the keys file, or the JWT `sub`.
    pub id: String,
    /// Models this identity may use; `None` allows all.
    pub allowed_models: Option<Vec<String>>,
    /// Rate and concurrency limits.
    pub limits: Limits,
    /// May use the admin API (`/admin/*`: load and unload models).
    pub admin: bool,
}

impl Identity {
    /// Whether this identity may use `model` (exact name match against the allowed list).
    pub fn may_use(&self, model: &str) -> bool {
        match &self.allowed_models {
            None => true,
            Some(models) => models.iter().any(|allowed| allowed == model),
        }
    }

    /// The identity of every request when authentication is off: all models, no limits, and
    /// the admin API (an open server is open to everyone).
    pub fn anonymous() -> Identity {
        Identity {
            id: "anonymous".to_owned(),
            allowed_models: None,
            limits: Limits::default(),
            admin: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restricted_identity_may_use_only_its_models() {
        let identity = Identity {
            id: "alice".into(),
            allowed_models: Some(vec!["SmolLM2-135M-Instruct.Q4_1".into()]),
            limits: Limits::default(),
            admin: false,
        };
        assert!(identity.may_use("SmolLM2-135M-Instruct.Q4_1"));
        assert!(!identity.may_use("gemma-3-270m"));
        assert!(!identity.may_use("SmolLM2"));
    }

    #[test]
    fn anonymous_may_use_everything_without_limits() {
        let anonymous = Identity::anonymous();
        assert_eq!(anonymous.id, "anonymous");
        assert!(anonymous.may_use("any-model"));
        assert_eq!(anonymous.limits, Limits::default());
    }

    #[test]
    fn zero_limits_are_named() {
        let limits = Limits {
            tokens_per_minute: Some(0),
            ..Limits::default()
        };
        assert_eq!(limits.zero_limit(), Some("tokens-per-minute"));
        assert_eq!(Limits::default().zero_limit(), None);
    }
}
