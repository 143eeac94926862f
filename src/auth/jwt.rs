//! JWT verification with `jsonwebtoken`: HS256 with a shared secret, RS256/ES256 with a PEM
//! public key or a JWKS file, and the mapping of verified claims to an [`Identity`].
//!
//! The key is chosen by the token's `alg` (and `kid`), and the validation then admits that one
//! algorithm only, so an HS256 token can never be checked against an RSA public key.

use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation, errors::ErrorKind};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::identity::{Identity, Limits};
use super::jwt_keys::{JwksKey, hs256_key, jwks_keys, pem_key};
use super::{AuthError, JwtConfig};

/// Verifies JWTs against the configured keys and maps their claims to an [`Identity`].
pub(crate) struct JwtVerifier {
    hs256: Option<DecodingKey>,
    public_key: Option<(Algorithm, DecodingKey)>,
    jwks: Vec<JwksKey>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_secs: u64,
    models_claim: String,
    admin_claim: String,
    limits_claim: String,
}

impl std::fmt::Debug for JwtVerifier {
    // What is configured, not the keys: this ends up in startup logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("hs256", &self.hs256.is_some())
            .field("public_key", &self.public_key.as_ref().map(|(alg, _)| alg))
            .field("jwks", &self.jwks)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_secs", &self.leeway_secs)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// Reads the key files named by `config`; at least one must be given.
    pub(crate) fn load(config: &JwtConfig) -> Result<JwtVerifier, AuthError> {
        let hs256 = config
            .hs256_secret_file
            .as_deref()
            .map(hs256_key)
            .transpose()?;
        let public_key = config.public_key_file.as_deref().map(pem_key).transpose()?;
        let jwks = match config.jwks_file.as_deref() {
            Some(path) => jwks_keys(path)?,
            None => Vec::new(),
        };
        if hs256.is_none() && public_key.is_none() && jwks.is_empty() {
            return Err(AuthError::Config(
                "JWT needs hs256-secret-file, public-key-file or jwks-file".to_owned(),
            ));
        }
        Ok(JwtVerifier {
            hs256,
            public_key,
            jwks,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            leeway_secs: config.leeway_secs,
            models_claim: config.models_claim.clone(),
            admin_claim: config.admin_claim.clone(),
            limits_claim: config.limits_claim.clone(),
        })
    }

    /// Verifies signature, `exp`, `nbf`, `iss` and `aud`, then maps the claims.
    pub(crate) fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        // An unknown `alg` such as "none" fails to parse here.
        let header = jsonwebtoken::decode_header(token).map_err(|err| rejected(err.kind()))?;
        let key = self.key_for(&header).ok_or_else(|| {
            tracing::debug!(alg = ?header.alg, kid = ?header.kid, "JWT rejected: no key for it");
            AuthError::Invalid
        })?;
        let validation = self.validation(header.alg);
        match jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation) {
            Ok(data) => self.identity(&data.claims),
            Err(err) if *err.kind() == ErrorKind::ExpiredSignature => {
                // Name the subject only if everything but the expiry holds, so the id comes
                // from a verified token that is otherwise acceptable.
                let mut ignoring_expiry = validation;
                ignoring_expiry.validate_exp = false;
                let data = jsonwebtoken::decode::<Map<String, Value>>(token, key, &ignoring_expiry)
                    .map_err(|err| rejected(err.kind()))?;
                Err(AuthError::Expired {
                    id: subject(&data.claims)?,
                })
            }
            Err(err) => Err(rejected(err.kind())),
        }
    }

    fn key_for(&self, header: &Header) -> Option<&DecodingKey> {
        if header.alg == Algorithm::HS256 {
            return self.hs256.as_ref();
        }
        if let Some(kid) = &header.kid
            && let Some(found) = self
                .jwks
                .iter()
                .find(|key| key.algorithm == header.alg && key.kid.as_deref() == Some(kid))
        {
            return Some(&found.key);
        }
        if let Some((algorithm, key)) = &self.public_key
            && *algorithm == header.alg
        {
            return Some(key);
        }
        // Without a `kid`, a JWKS key is used only when it is the one key for that algorithm.
        if header.kid.is_none() {
            let mut candidates = self.jwks.iter().filter(|key| key.algorithm == header.alg);
            if let (Some(only), None) = (candidates.next(), candidates.next()) {
                return Some(&only.key);
            }
        }
        None
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.leeway = self.leeway_secs;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        if let Some(audience) = &self.audience {
            validation.set_audience(&[audience]);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        validation
    }

    fn identity(&self, claims: &Map<String, Value>) -> Result<Identity, AuthError> {
        let id = subject(claims)?;
        let allowed_models = match claims.get(&self.models_claim) {
            None | Some(Value::Null) => None,
            Some(Value::String(model)) => Some(vec![model.clone()]),
            Some(value) => Some(
                Vec::<String>::deserialize(value)
                    .map_err(|_| claim_rejected(&self.models_claim))?,
            ),
        };
        let limits = match claims.get(&self.limits_claim) {
            None | Some(Value::Null) => Limits::default(),
            Some(value) => {
                Limits::deserialize(value).map_err(|_| claim_rejected(&self.limits_claim))?
            }
        };
        if limits.zero_limit().is_some() {
            return Err(claim_rejected(&self.limits_claim));
        }
        let admin = match claims.get(&self.admin_claim) {
            None | Some(Value::Null) => false,
            Some(Value::Bool(admin)) => *admin,
            Some(_) => return Err(claim_rejected(&self.admin_claim)),
        };
        Ok(Identity {
            id,
            allowed_models,
            limits,
            admin,
        })
    }
}

fn subject(claims: &Map<String, Value>) -> Result<String, AuthError> {
    match claims.get("sub") {
        Some(Value::String(sub)) if !sub.trim().is_empty() => Ok(sub.clone()),
        _ => Err(claim_rejected("sub")),
    }
}

fn rejected(kind: &ErrorKind) -> AuthError {
    tracing::debug!(reason = ?kind, "JWT rejected");
    AuthError::Invalid
}

fn claim_rejected(claim: &str) -> AuthError {
    tracing::debug!(claim, "JWT rejected: claim missing or malformed");
    AuthError::Invalid
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use jsonwebtoken::{EncodingKey, encode, get_current_timestamp};
    use serde_json::json;

    use super::*;

    const RSA_PRIVATE: &str = include_str!("../../tests/fixtures/jwt/rsa_private.pem");
    const RSA_PUBLIC: &str = include_str!("../../tests/fixtures/jwt/rsa_public.pem");
    const EC_PRIVATE: &str = include_str!("../../tests/fixtures/jwt/ec_private.pem");
    const EC_PUBLIC: &str = include_str!("../../tests/fixtures/jwt/ec_public.pem");
    const JWKS: &str = include_str!("../../tests/fixtures/jwt/jwks.json");
    const SECRET: &str = "test-hs256-secret-with-32-bytes-or-more";
    const ISSUER: &str = "https://idp.example";
    const AUDIENCE: &str = "inferno";

    /// Key files in a temporary directory and a config naming the chosen ones.
    struct Setup {
        dir: tempfile::TempDir,
        config: JwtConfig,
    }

    impl Setup {
        fn new() -> Setup {
            Setup {
                dir: tempfile::tempdir().unwrap(),
                config: JwtConfig {
                    issuer: Some(ISSUER.into()),
                    audience: Some(AUDIENCE.into()),
                    ..JwtConfig::default()
                },
            }
        }

        fn file(&self, name: &str, content: &str) -> std::path::PathBuf {
            let path = self.dir.path().join(name);
            std::fs::write(&path, content).unwrap();
            path
        }

        fn hs256(mut self) -> Setup {
            self.config.hs256_secret_file = Some(self.file("hs256", &format!("{SECRET}\n")));
            self
        }

        fn public_key(mut self, pem: &str) -> Setup {
            self.config.public_key_file = Some(self.file("public.pem", pem));
            self
        }

        fn jwks(mut self, jwks: &str) -> Setup {
            self.config.jwks_file = Some(self.file("jwks.json", jwks));
            self
        }

        fn verifier(&self) -> JwtVerifier {
            JwtVerifier::load(&self.config).unwrap()
        }

        fn load_error(&self) -> String {
            match JwtVerifier::load(&self.config) {
                Err(AuthError::Config(message)) => message,
                other => panic!("expected a config error, got {other:?}"),
            }
        }
    }

    fn claims() -> Value {
        json!({
            "sub": "alice",
            "iss": ISSUER,
            "aud": AUDIENCE,
            "exp": get_current_timestamp() + 600,
            "models": ["SmolLM2-135M-Instruct.Q4_1"],
            "limits": {"requests_per_minute": 60, "tokens_per_minute": 20000, "max_concurrent": 4},
        })
    }

    fn with(changes: Value) -> Value {
        let mut claims = claims();
        for (name, value) in changes.as_object().unwrap() {
            if value.is_null() {
                claims.as_object_mut().unwrap().remove(name);
            } else {
                claims[name] = value.clone();
            }
        }
        claims
    }

    fn sign(algorithm: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(algorithm);
        header.kid = kid.map(str::to_owned);
        encode(&header, claims, key).unwrap()
    }

    fn hs256(claims: &Value) -> String {
        sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
            None,
            claims,
        )
    }

    fn rs256(kid: Option<&str>, claims: &Value) -> String {
        let key = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
        sign(Algorithm::RS256, &key, kid, claims)
    }

    fn es256(kid: Option<&str>, claims: &Value) -> String {
        let key = EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap();
        sign(Algorithm::ES256, &key, kid, claims)
    }

    fn alice() -> Identity {
        Identity {
            id: "alice".into(),
            allowed_models: Some(vec!["SmolLM2-135M-Instruct.Q4_1".into()]),
            limits: Limits {
                requests_per_minute: Some(60),
                tokens_per_minute: Some(20000),
                max_concurrent: Some(4),
            },
            admin: false,
        }
    }

    fn b64(json: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    #[test]
    fn valid_tokens_of_each_algorithm_map_their_claims() {
        assert_eq!(
            Setup::new().hs256().verifier().verify(&hs256(&claims())),
            Ok(alice())
        );
        let rsa = Setup::new().public_key(RSA_PUBLIC).verifier();
        assert_eq!(rsa.verify(&rs256(None, &claims())), Ok(alice()));
        assert_eq!(rsa.verify(&rs256(Some("any"), &claims())), Ok(alice()));
        let ec = Setup::new().public_key(EC_PUBLIC).verifier();
        assert_eq!(ec.verify(&es256(None, &claims())), Ok(alice()));
    }

    #[test]
    fn jwks_keys_are_chosen_by_kid() {
        let verifier = Setup::new().jwks(JWKS).verifier();
        assert_eq!(
            verifier.verify(&rs256(Some("rsa-1"), &claims())),
            Ok(alice())
        );
        assert_eq!(
            verifier.verify(&es256(Some("ec-1"), &claims())),
            Ok(alice())
        );
        // One key per algorithm: a token without kid still finds it; an unknown kid does not.
        assert_eq!(verifier.verify(&rs256(None, &claims())), Ok(alice()));
        assert_eq!(
            verifier.verify(&rs256(Some("rsa-2"), &claims())),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            verifier.verify(&es256(Some("rsa-1"), &claims())),
            Err(AuthError::Invalid)
        );
    }

    #[test]
    fn absent_models_and_limits_mean_unrestricted() {
        let verifier = Setup::new().hs256().verifier();
        let identity = verifier.verify(&hs256(&with(json!({"models": null, "limits": null}))));
        assert_eq!(
            identity,
            Ok(Identity {
                id: "alice".into(),
                allowed_models: None,
                limits: Limits::default(),
                admin: false,
            })
        );
    }

    #[test]
    fn claim_names_are_configurable() {
        let mut setup = Setup::new().hs256();
        setup.config.models_claim = "inferno/models".into();
        setup.config.limits_claim = "inferno/limits".into();
        let token = hs256(&with(json!({
            "models": null, "limits": null,
            "inferno/models": "gemma", "inferno/limits": {"max_concurrent": 1},
        })));
        let identity = setup.verifier().verify(&token).unwrap();
        assert_eq!(identity.allowed_models, Some(vec!["gemma".to_owned()]));
        assert_eq!(identity.limits.max_concurrent, Some(1));
        assert_eq!(identity.limits.requests_per_minute, None);
    }

    #[test]
    fn time_claims_are_checked_with_leeway() {
        let verifier = Setup::new().hs256().verifier();
        let now = get_current_timestamp();
        let expired = hs256(&with(json!({"exp": now - 120})));
        assert_eq!(
            verifier.verify(&expired),
            Err(AuthError::Expired { id: "alice".into() })
        );
        assert_eq!(
            verifier.verify(&hs256(&with(json!({"exp": now - 5})))),
            Ok(alice())
        );
        let early = hs256(&with(json!({"nbf": now + 120})));
        assert_eq!(verifier.verify(&early), Err(AuthError::Invalid));
        assert_eq!(
            verifier.verify(&hs256(&with(json!({"nbf": now + 5})))),
            Ok(alice())
        );
        let no_exp = hs256(&with(json!({"exp": null})));
        assert_eq!(verifier.verify(&no_exp), Err(AuthError::Invalid));
        // Expired and also for another audience: not worth naming.
        let expired_elsewhere = hs256(&with(json!({"exp": now - 120, "aud": "other"})));
        assert_eq!(verifier.verify(&expired_elsewhere), Err(AuthError::Invalid));
    }

    #[test]
    fn issuer_audience_and_subject_are_required() {
        let verifier = Setup::new().public_key(RSA_PUBLIC).verifier();
        for changes in [
            json!({"iss": "https://evil.example"}),
            json!({"iss": null}),
            json!({"aud": "other-service"}),
            json!({"aud": null}),
            json!({"sub": null}),
            json!({"sub": ""}),
            json!({"sub": 42}),
            json!({"models": [1, 2]}),
            json!({"limits": {"max_concurrent": 0}}),
            json!({"limits": "lots"}),
        ] {
            let token = rs256(None, &with(changes.clone()));
            assert_eq!(
                verifier.verify(&token),
                Err(AuthError::Invalid),
                "{changes}"
            );
        }
        let multiple = rs256(None, &with(json!({"aud": ["other", AUDIENCE]})));
        assert_eq!(verifier.verify(&multiple), Ok(alice()));
    }

    #[test]
    fn without_a_configured_audience_tokens_with_one_are_refused() {
        let mut setup = Setup::new().hs256();
        setup.config.audience = None;
        setup.config.issuer = None;
        let verifier = setup.verifier();
        let token = hs256(&with(json!({"aud": null, "iss": "anyone"})));
        assert_eq!(verifier.verify(&token), Ok(alice()));
        assert_eq!(verifier.verify(&hs256(&claims())), Err(AuthError::Invalid));
    }

    #[test]
    fn bad_signatures_are_rejected() {
        let verifier = Setup::new().hs256().public_key(RSA_PUBLIC).verifier();
        let wrong_secret =
            EncodingKey::from_secret(b"another-secret-of-32-bytes-or-more!").unwrap();
        let token = sign(Algorithm::HS256, &wrong_secret, None, &claims());
        assert_eq!(verifier.verify(&token), Err(AuthError::Invalid));

        // Same signature over a payload naming someone else.
        let token = rs256(None, &claims());
        let parts: Vec<&str> = token.split('.').collect();
        let forged_claims = with(json!({"sub": "mallory"})).to_string();
        let forged = format!("{}.{}.{}", parts[0], b64(&forged_claims), parts[2]);
        assert_eq!(verifier.verify(&forged), Err(AuthError::Invalid));

        let ec_signed = es256(None, &claims());
        assert_eq!(verifier.verify(&ec_signed), Err(AuthError::Invalid));
        assert_eq!(verifier.verify("not.a.jwt"), Err(AuthError::Invalid));
    }

    #[test]
    fn unsigned_tokens_are_rejected() {
        let verifier = Setup::new().hs256().public_key(RSA_PUBLIC).verifier();
        let payload = b64(&claims().to_string());
        for alg in ["none", "None", "NONE"] {
            let header = b64(&format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#));
            let token = format!("{header}.{payload}.");
            assert_eq!(verifier.verify(&token), Err(AuthError::Invalid), "{alg}");
        }
    }

    #[test]
    fn hs256_signed_with_the_rsa_public_key_is_rejected() {
        let public_as_secret = EncodingKey::from_secret(RSA_PUBLIC.as_bytes()).unwrap();
        let token = sign(Algorithm::HS256, &public_as_secret, None, &claims());
        let rsa_only = Setup::new().public_key(RSA_PUBLIC).verifier();
        assert_eq!(rsa_only.verify(&token), Err(AuthError::Invalid));
        let both = Setup::new().hs256().public_key(RSA_PUBLIC).verifier();
        assert_eq!(both.verify(&token), Err(AuthError::Invalid));
        let jwks = Setup::new().jwks(JWKS).verifier();
        assert_eq!(jwks.verify(&token), Err(AuthError::Invalid));
    }

    #[test]
    fn some_key_is_required() {
        let message = Setup::new().load_error();
        assert!(message.contains("needs hs256-secret-file"), "{message}");
    }

    #[test]
    fn debug_names_algorithms_but_not_keys() {
        let verifier = Setup::new()
            .hs256()
            .public_key(EC_PUBLIC)
            .jwks(JWKS)
            .verifier();
        let debug = format!("{verifier:?}");
        assert!(
            debug.contains("ES256") && debug.contains("rsa-1"),
            "{debug}"
        );
        assert!(
            !debug.contains(SECRET) && !debug.contains("116, 101, 115"),
            "{debug}"
        );
    }
}
