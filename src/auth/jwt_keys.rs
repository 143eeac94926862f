//! JWT verification keys from files: the HS256 secret, a PEM public key (RS256 or ES256 by key
//! type) and a JWKS document with keys chosen by `kid`. Each problem fails at load, naming the
//! file but never quoting key material.

use std::path::Path;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use serde_json::Value;

use super::AuthError;

/// RFC 7518 3.2: an HS256 key must be at least as long as the hash output.
const MIN_HS256_SECRET: usize = 32;

/// Length of an uncompressed P-256 point (0x04, x, y): tells P-256 from other curves.
const P256_POINT_LEN: usize = 65;

/// A verification key from the JWKS file.
pub(super) struct JwksKey {
    pub(super) kid: Option<String>,
    pub(super) algorithm: Algorithm,
    pub(super) key: DecodingKey,
}

impl std::fmt::Debug for JwksKey {
    // Which key, not the key itself.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, AuthError> {
    std::fs::read(path).map_err(|err| {
        AuthError::Config(format!("cannot read JWT {what} {}: {err}", path.display()))
    })
}

fn key_error(path: &Path, problem: &str) -> AuthError {
    AuthError::Config(format!("JWT key file {}: {problem}", path.display()))
}

/// The HS256 secret: the file's bytes without surrounding whitespace.
pub(super) fn hs256_key(path: &Path) -> Result<DecodingKey, AuthError> {
    let secret = read(path, "HS256 secret file")?;
    let secret = secret.trim_ascii();
    if secret.len() < MIN_HS256_SECRET {
        return Err(key_error(
            path,
            &format!("the HS256 secret must be at least {MIN_HS256_SECRET} bytes"),
        ));
    }
    DecodingKey::from_secret(secret).map_err(|_| key_error(path, "unusable HS256 secret"))
}

/// RS256 for an RSA public key, ES256 for a P-256 one; private keys and certificates are
/// refused so that a misplaced file fails at load, not on every request.
pub(super) fn pem_key(path: &Path) -> Result<(Algorithm, DecodingKey), AuthError> {
    let pem = read(path, "public key file")?;
    let text = String::from_utf8_lossy(&pem);
    if !(text.contains("-----BEGIN PUBLIC KEY-----")
        || text.contains("-----BEGIN RSA PUBLIC KEY-----"))
    {
        return Err(key_error(
            path,
            "expected a PEM public key (-----BEGIN PUBLIC KEY-----)",
        ));
    }
    if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
        return Ok((Algorithm::RS256, key));
    }
    let key = DecodingKey::from_ec_pem(&pem)
        .map_err(|_| key_error(path, "not an RSA or EC public key"))?;
    match key.try_get_as_bytes() {
        Ok(point) if point.len() == P256_POINT_LEN => Ok((Algorithm::ES256, key)),
        _ => Err(key_error(path, "only P-256 EC keys (ES256) are supported")),
    }
}

#[derive(Deserialize)]
struct JwksFile {
    keys: Vec<Value>,
}

/// Reads the RS256 and ES256 signing keys of a JWKS; other keys (encryption, other
/// algorithms) are skipped with a warning, as identity providers publish those too.
pub(super) fn jwks_keys(path: &Path) -> Result<Vec<JwksKey>, AuthError> {
    let text = read(path, "JWKS file")?;
    let file: JwksFile = serde_json::from_slice(&text)
        .map_err(|err| key_error(path, &format!("not a JWKS document: {err}")))?;
    let mut keys: Vec<JwksKey> = Vec::new();
    for (index, value) in file.keys.into_iter().enumerate() {
        let usable = serde_json::from_value::<Jwk>(value)
            .ok()
            .and_then(|jwk| jwks_algorithm(&jwk).map(|algorithm| (jwk, algorithm)));
        let Some((jwk, algorithm)) = usable else {
            tracing::warn!(file = %path.display(), index, "skipping JWKS key: not RS256 or ES256");
            continue;
        };
        let kid = jwk.common.key_id.clone();
        if kid.is_some() && keys.iter().any(|other| other.kid == kid) {
            return Err(key_error(
                path,
                &format!("duplicate kid '{}'", kid.unwrap_or_default()),
            ));
        }
        let key = DecodingKey::from_jwk(&jwk)
            .map_err(|_| key_error(path, &format!("key {index} has invalid parameters")))?;
        keys.push(JwksKey {
            kid,
            algorithm,
            key,
        });
    }
    if keys.is_empty() {
        return Err(key_error(path, "no RS256 or ES256 signing keys"));
    }
    Ok(keys)
}

fn jwks_algorithm(jwk: &Jwk) -> Option<Algorithm> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let declared = jwk.common.key_algorithm;
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) if matches!(declared, None | Some(KeyAlgorithm::RS256)) => {
            Some(Algorithm::RS256)
        }
        AlgorithmParameters::EllipticCurve(params)
            if params.curve == EllipticCurve::P256
                && matches!(declared, None | Some(KeyAlgorithm::ES256)) =>
        {
            Some(Algorithm::ES256)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const RSA_PRIVATE: &str = include_str!("../../tests/fixtures/jwt/rsa_private.pem");
    const RSA_PUBLIC: &str = include_str!("../../tests/fixtures/jwt/rsa_public.pem");
    const EC_PUBLIC: &str = include_str!("../../tests/fixtures/jwt/ec_public.pem");
    const JWKS: &str = include_str!("../../tests/fixtures/jwt/jwks.json");

    fn file(dir: &tempfile::TempDir, content: &str) -> std::path::PathBuf {
        let path = dir.path().join("key");
        std::fs::write(&path, content).unwrap();
        path
    }

    fn config_error<T: std::fmt::Debug>(result: Result<T, AuthError>) -> String {
        match result {
            Err(AuthError::Config(message)) => message,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn pem_key_type_picks_the_algorithm() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            pem_key(&file(&dir, RSA_PUBLIC)).unwrap().0,
            Algorithm::RS256
        );
        assert_eq!(pem_key(&file(&dir, EC_PUBLIC)).unwrap().0, Algorithm::ES256);
    }

    #[test]
    fn private_keys_and_garbage_are_not_public_keys() {
        let dir = tempfile::tempdir().unwrap();
        let message = config_error(pem_key(&file(&dir, RSA_PRIVATE)));
        assert!(message.contains("expected a PEM public key"), "{message}");
        assert!(!message.contains("MII"), "{message}");
        let garbage = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
        let message = config_error(pem_key(&file(&dir, garbage)));
        assert!(message.contains("not an RSA or EC public key"), "{message}");
    }

    #[test]
    fn short_hs256_secrets_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let message = config_error(hs256_key(&file(&dir, "short-secret\n")));
        assert!(message.contains("at least 32 bytes"), "{message}");
        assert!(!message.contains("short-secret"), "{message}");
        assert!(hs256_key(&file(&dir, "  exactly-32-bytes-of-hs256-secret\n")).is_ok());
    }

    #[test]
    fn jwks_reads_rsa_and_ec_keys_by_kid() {
        let dir = tempfile::tempdir().unwrap();
        let keys = jwks_keys(&file(&dir, JWKS)).unwrap();
        let found: Vec<(Option<&str>, Algorithm)> = keys
            .iter()
            .map(|key| (key.kid.as_deref(), key.algorithm))
            .collect();
        assert_eq!(
            found,
            [
                (Some("rsa-1"), Algorithm::RS256),
                (Some("ec-1"), Algorithm::ES256)
            ]
        );
    }

    #[test]
    fn jwks_skips_keys_it_cannot_use() {
        let dir = tempfile::tempdir().unwrap();
        let mut jwks: Value = serde_json::from_str(JWKS).unwrap();
        let keys = jwks["keys"].as_array_mut().unwrap();
        keys.push(json!({"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"}));
        keys.push(json!({"kty": "RSA", "kid": "ps", "alg": "PS256", "n": "AQAB", "e": "AQAB"}));
        keys.push(json!({"kty": "EC", "kid": "p384", "crv": "P-384", "x": "AA", "y": "AA"}));
        keys.push(json!({"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "AAAA"}));
        keys.push(json!({"kty": "future-kind", "kid": "new"}));
        let keys = jwks_keys(&file(&dir, &jwks.to_string())).unwrap();
        assert_eq!(keys.len(), 2);
    }

    #[test]
    fn unusable_jwks_files_fail() {
        let dir = tempfile::tempdir().unwrap();
        let only_hmac = r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#;
        let message = config_error(jwks_keys(&file(&dir, only_hmac)));
        assert!(
            message.contains("no RS256 or ES256 signing keys"),
            "{message}"
        );
        let doubled = JWKS.replace("\"ec-1\"", "\"rsa-1\"");
        let message = config_error(jwks_keys(&file(&dir, &doubled)));
        assert!(message.contains("duplicate kid 'rsa-1'"), "{message}");
        let message = config_error(jwks_keys(&file(&dir, "[1, 2]")));
        assert!(message.contains("not a JWKS document"), "{message}");
        let message = config_error(jwks_keys(Path::new("/nonexistent/jwks.json")));
        assert!(message.contains("/nonexistent/jwks.json"), "{message}");
    }
}
