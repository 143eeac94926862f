//! Who is calling: API keys from a keys file and JWTs, both resolved to one [`Identity`].
//!
//! Pure library code with no HTTP types: the HTTP layer passes the `Authorization` and
//! `x-api-key` header values to [`Authenticator::authenticate`] and maps [`AuthError`] to
//! 401 responses. Keys are kept only as SHA-256 hashes, and neither secrets nor hashes appear in
//! `Debug` output or error messages.

mod expiry;
mod identity;
mod jwt;
mod jwt_keys;
mod keys;
mod keys_file;

use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

pub use identity::{Identity, Limits};
pub use keys::{generate_key, key_file_line};

use jwt::JwtVerifier;
use keys::KeyStore;

/// Why a request could not be authenticated, or why the auth configuration could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credentials were sent.
    #[error("no API key given: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'")]
    Missing,
    /// The credentials are unknown, malformed, or failed verification.
    #[error("invalid API key or token")]
    Invalid,
    /// Valid credentials past their expiry time.
    #[error("the credentials of '{id}' have expired")]
    Expired {
        /// Key id or JWT subject.
        id: String,
    },
    /// A keys or key file could not be read or is invalid; names the file and line.
    #[error("{0}")]
    Config(String),
}

/// The `[auth]` table of the config file: where API keys and JWT verification keys come from.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct AuthConfig {
    /// Keys file: `<secret>` / `<id> <secret>` lines, or TOML `[[keys]]` entries.
    pub keys_file: Option<PathBuf>,
    /// JWT verification; `None` accepts no JWTs.
    pub jwt: Option<JwtConfig>,
}

/// How JWTs are verified and how their claims map to an [`Identity`].
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct JwtConfig {
    /// File holding the HS256 shared secret (at least 32 bytes; surrounding whitespace ignored).
    pub hs256_secret_file: Option<PathBuf>,
    /// PEM public key (`BEGIN PUBLIC KEY`): RS256 for an RSA key, ES256 for a P-256 key.
    pub public_key_file: Option<PathBuf>,
    /// JWKS JSON file with RS256/ES256 keys, chosen by the token's `kid`.
    pub jwks_file: Option<PathBuf>,
    /// Required `iss`; unchecked when unset.
    pub issuer: Option<String>,
    /// Required `aud`; when unset, tokens that carry an `aud` are rejected (RFC 7519 4.1.3).
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
    /// Claim listing the models the subject may use (absent: all).
    pub models_claim: String,
    /// Claim holding `{requests_per_minute, tokens_per_minute, max_concurrent}`.
    pub limits_claim: String,
    /// Boolean claim granting the admin API.
    pub admin_claim: String,
}

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            hs256_secret_file: None,
            public_key_file: None,
            jwks_file: None,
            issuer: None,
            audience: None,
            leeway_secs: 30,
            models_claim: "models".to_owned(),
            limits_claim: "limits".to_owned(),
            admin_claim: "admin".to_owned(),
        }
    }
}

/// Everything read from the configured files; replaced as a whole on reload.
#[derive(Debug)]
struct Credentials {
    keys: Option<KeyStore>,
    jwt: Option<JwtVerifier>,
}

impl Credentials {
    fn load(config: &AuthConfig) -> Result<Credentials, AuthError> {
        Ok(Credentials {
            keys: config
                .keys_file
                .as_deref()
                .map(KeyStore::load)
                .transpose()?,
            jwt: config.jwt.as_ref().map(JwtVerifier::load).transpose()?,
        })
    }

    fn key_count(&self) -> usize {
        self.keys.as_ref().map_or(0, KeyStore::len)
    }
}

/// Resolves request credentials to an [`Identity`]; `Send + Sync`, share it behind an `Arc`.
#[derive(Debug)]
pub struct Authenticator {
    config: AuthConfig,
    credentials: RwLock<Arc<Credentials>>,
}

impl Authenticator {
    /// Reads the keys file and JWT key files named by `config`.
    pub fn load(config: &AuthConfig) -> Result<Authenticator, AuthError> {
        let credentials = Credentials::load(config)?;
        Ok(Authenticator {
            config: config.clone(),
            credentials: RwLock::new(Arc::new(credentials)),
        })
    }

    /// Whether requests must authenticate: a keys file or JWT is configured.
    ///
    /// A configured keys file counts even when it is empty, so that revoking the last key
    /// locks everyone out instead of opening the server.
    pub fn is_enabled(&self) -> bool {
        self.config.keys_file.is_some() || self.config.jwt.is_some()
    }

    /// Number of API keys currently loaded.
    pub fn key_count(&self) -> usize {
        self.current().key_count()
    }

    /// Re-reads the keys file (and the JWT key files, for key rotation) and swaps them in at
    /// once; returns the number of API keys. On error the previous credentials stay in force.
    pub fn reload(&self) -> Result<usize, AuthError> {
        let fresh = Credentials::load(&self.config)?;
        let count = fresh.key_count();
        // A panic elsewhere cannot leave the Arc half-written, so a poisoned lock is still sound.
        *self
            .credentials
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(fresh);
        Ok(count)
    }

    /// Resolves the `authorization` and `x-api-key` header values (either may be `None`).
    ///
    /// A `Bearer` token wins over `x-api-key`. A credential with exactly two dots is verified as
    /// a JWT when JWT is configured, anything else is looked up as an API key. With
    /// authentication off, every request is [`Identity::anonymous`].
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
        x_api_key: Option<&str>,
    ) -> Result<Identity, AuthError> {
        if !self.is_enabled() {
            return Ok(Identity::anonymous());
        }
        let credential = credential(authorization, x_api_key)?;
        let credentials = self.current();
        if credential.matches('.').count() == 2
            && let Some(jwt) = &credentials.jwt
        {
            return jwt.verify(credential);
        }
        match &credentials.keys {
            Some(keys) => keys.identify(credential, SystemTime::now()),
            None => Err(AuthError::Invalid),
        }
    }

    fn current(&self) -> Arc<Credentials> {
        Arc::clone(
            &self
                .credentials
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }
}

/// Picks the credential out of the headers: a malformed `Authorization` (say `Basic ...`)
/// with nothing else is invalid rather than missing, so the client learns its header is wrong.
fn credential<'a>(
    authorization: Option<&'a str>,
    x_api_key: Option<&'a str>,
) -> Result<&'a str, AuthError> {
    let bearer = authorization.map(bearer_token);
    let api_key = x_api_key.map(str::trim).filter(|key| !key.is_empty());
    match (bearer, api_key) {
        (Some(Some(token)), _) => Ok(token),
        (_, Some(key)) => Ok(key),
        (Some(None), None) => Err(AuthError::Invalid),
        (None, None) => Err(AuthError::Missing),
    }
}

fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(char::is_whitespace)?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const ALICE: &str = "sk-inf-alice-secret-0123456789";
    const BOB: &str = "sk-inf-bob-secret-0123456789";
    const HS256_SECRET: &str = "an-hs256-secret-of-at-least-32-bytes!";

    fn write(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap();
    }

    fn with_keys(dir: &tempfile::TempDir, text: &str) -> Authenticator {
        let path = dir.path().join("keys");
        write(&path, text);
        Authenticator::load(&AuthConfig {
            keys_file: Some(path),
            jwt: None,
        })
        .unwrap()
    }

    #[test]
    fn authenticator_is_send_and_sync() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<Authenticator>();
    }

    #[test]
    fn bearer_and_x_api_key_are_both_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let auth = with_keys(&dir, &format!("alice {ALICE}\nbob {BOB}\n"));
        assert!(auth.is_enabled());
        assert_eq!(auth.key_count(), 2);
        let bearer = format!("Bearer {ALICE}");
        assert_eq!(auth.authenticate(Some(&bearer), None).unwrap().id, "alice");
        let lower = format!("bearer   {ALICE} ");
        assert_eq!(auth.authenticate(Some(&lower), None).unwrap().id, "alice");
        assert_eq!(auth.authenticate(None, Some(BOB)).unwrap().id, "bob");
        // The bearer token wins when both are sent.
        assert_eq!(
            auth.authenticate(Some(&bearer), Some(BOB)).unwrap().id,
            "alice"
        );
    }

    #[test]
    fn missing_malformed_and_wrong_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let auth = with_keys(&dir, &format!("alice {ALICE}\n"));
        assert_eq!(auth.authenticate(None, None), Err(AuthError::Missing));
        assert_eq!(auth.authenticate(None, Some("  ")), Err(AuthError::Missing));
        for header in ["Basic YWxpY2U6cHc=", "Bearer", "Bearer   ", ALICE, ""] {
            assert_eq!(
                auth.authenticate(Some(header), None),
                Err(AuthError::Invalid),
                "{header:?}"
            );
        }
        assert_eq!(auth.authenticate(None, Some(BOB)), Err(AuthError::Invalid));
        let basic_with_key = auth.authenticate(Some("Basic YWxpY2U6cHc="), Some(ALICE));
        assert_eq!(basic_with_key.unwrap().id, "alice");
    }

    #[test]
    fn without_configuration_everyone_is_anonymous() {
        let auth = Authenticator::load(&AuthConfig::default()).unwrap();
        assert!(!auth.is_enabled());
        assert_eq!(auth.authenticate(None, None), Ok(Identity::anonymous()));
        assert_eq!(auth.reload(), Ok(0));
    }

    #[test]
    fn an_empty_keys_file_still_requires_keys() {
        let dir = tempfile::tempdir().unwrap();
        let auth = with_keys(&dir, "# all keys revoked\n");
        assert!(auth.is_enabled());
        assert_eq!(
            auth.authenticate(None, Some(ALICE)),
            Err(AuthError::Invalid)
        );
    }

    #[test]
    fn two_dot_keys_are_api_keys_when_jwt_is_off() {
        let dir = tempfile::tempdir().unwrap();
        let auth = with_keys(&dir, "dotted a.b.c-0123456789\n");
        let identity = auth.authenticate(Some("Bearer a.b.c-0123456789"), None);
        assert_eq!(identity.unwrap().id, "dotted");
    }

    #[test]
    fn reload_revokes_removed_keys_and_keeps_old_keys_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let auth = with_keys(&dir, &format!("alice {ALICE}\nbob {BOB}\n"));
        assert!(auth.authenticate(None, Some(BOB)).is_ok());

        write(&dir.path().join("keys"), &format!("alice {ALICE}\n"));
        assert_eq!(auth.reload(), Ok(1));
        assert_eq!(auth.authenticate(None, Some(BOB)), Err(AuthError::Invalid));
        assert_eq!(auth.authenticate(None, Some(ALICE)).unwrap().id, "alice");

        write(
            &dir.path().join("keys"),
            &format!("alice {ALICE}\nalice {BOB}\n"),
        );
        let err = auth.reload().unwrap_err();
        assert!(
            matches!(&err, AuthError::Config(m) if m.contains("line 2")),
            "{err}"
        );
        assert_eq!(auth.authenticate(None, Some(ALICE)).unwrap().id, "alice");
        assert_eq!(auth.authenticate(None, Some(BOB)), Err(AuthError::Invalid));

        std::fs::remove_file(dir.path().join("keys")).unwrap();
        assert!(matches!(auth.reload(), Err(AuthError::Config(_))));
        assert_eq!(auth.key_count(), 1);
    }

    #[test]
    fn secrets_stay_out_of_debug_output_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let secret_file = dir.path().join("hs256");
        write(&secret_file, HS256_SECRET);
        let keys_file = dir.path().join("keys");
        write(&keys_file, &format!("alice {ALICE}\n"));
        let auth = Authenticator::load(&AuthConfig {
            keys_file: Some(keys_file.clone()),
            jwt: Some(JwtConfig {
                hs256_secret_file: Some(secret_file),
                ..JwtConfig::default()
            }),
        })
        .unwrap();
        let debug = format!("{auth:?}");
        assert!(debug.contains("alice"), "{debug}");
        for secret in [ALICE, HS256_SECRET] {
            assert!(!debug.contains(secret), "{debug}");
        }
        // Byte-list rendering of the HS256 key would start like this.
        assert!(!debug.contains("[97, 110, 45"), "{debug}");

        write(
            &keys_file,
            &format!("[[keys]]\nid = \"alice\"\nsecret = \"{ALICE}\n"),
        );
        let errors = [
            auth.reload().unwrap_err(),
            auth.authenticate(None, Some(BOB)).unwrap_err(),
            auth.authenticate(Some(&format!("Basic {ALICE}")), None)
                .unwrap_err(),
        ];
        for err in errors {
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains(ALICE) && !shown.contains(BOB), "{shown}");
        }
    }

    #[test]
    fn config_reads_as_an_auth_table() {
        #[derive(Deserialize)]
        struct File {
            auth: AuthConfig,
        }
        let file: File = toml::from_str(
            "[auth]\nkeys-file = \"/etc/inferno/keys.toml\"\n\n[auth.jwt]\n\
             jwks-file = \"/etc/inferno/jwks.json\"\nissuer = \"https://idp.example\"\n",
        )
        .unwrap();
        assert_eq!(
            file.auth.keys_file.as_deref(),
            Some(Path::new("/etc/inferno/keys.toml"))
        );
        let jwt = file.auth.jwt.unwrap();
        assert_eq!(jwt.issuer.as_deref(), Some("https://idp.example"));
        assert_eq!(
            (
                jwt.leeway_secs,
                jwt.models_claim.as_str(),
                jwt.limits_claim.as_str()
            ),
            (30, "models", "limits")
        );
        assert!(toml::from_str::<AuthConfig>("key-file = \"x\"").is_err());
        assert!(toml::from_str::<AuthConfig>("[jwt]\nleeway = 5").is_err());
    }

    #[test]
    fn unreadable_files_are_named() {
        let config = AuthConfig {
            keys_file: Some("/nonexistent/inferno-keys".into()),
            jwt: None,
        };
        let err = Authenticator::load(&config).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/inferno-keys"),
            "{err}"
        );
    }
}
