//! API keys, kept only as SHA-256 hashes: the [`KeyStore`] of one keys file, the lookup of a
//! presented key, and the making of new keys.

use std::collections::HashMap;
use std::path::Path;
use std::time::SystemTime;

use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AuthError;
use super::identity::{Identity, Limits};
use super::keys_file;

/// Prefix of generated keys, so leaked keys are recognisable (and greppable) as Inferno's.
const KEY_PREFIX: &str = "sk-inf-";

/// SHA-256 of a key's secret: what the store keeps instead of the secret.
pub(super) type KeyHash = [u8; 32];

/// One configured key; the secret itself is never kept.
pub(super) struct KeyEntry {
    pub(super) id: String,
    pub(super) hash: KeyHash,
    pub(super) allowed_models: Option<Vec<String>>,
    pub(super) expires: Option<SystemTime>,
    pub(super) limits: Limits,
    /// May use the admin API.
    pub(super) admin: bool,
    /// Line of the file the entry came from, for duplicate reports.
    pub(super) line: usize,
}

/// The API keys of one keys file, indexed by the SHA-256 of the secret.
#[derive(Default)]
pub(crate) struct KeyStore {
    entries: HashMap<KeyHash, KeyEntry>,
}

impl std::fmt::Debug for KeyStore {
    // Ids only: even hashes of weak secrets could be brute-forced from a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ids: Vec<&str> = self
            .entries
            .values()
            .map(|entry| entry.id.as_str())
            .collect();
        ids.sort_unstable();
        f.debug_struct("KeyStore").field("ids", &ids).finish()
    }
}

impl KeyStore {
    /// Reads and parses the keys file at `path`.
    pub(crate) fn load(path: &Path) -> Result<KeyStore, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|err| {
            AuthError::Config(format!("cannot read keys file {}: {err}", path.display()))
        })?;
        KeyStore::parse(&text, path)
    }

    /// Parses keys file text in either format; `path` only names the file in errors.
    pub(crate) fn parse(text: &str, path: &Path) -> Result<KeyStore, AuthError> {
        keys_file::parse(text, path)
    }

    /// Number of keys.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The identity owning `key`, if it is configured and, at `now`, not expired.
    pub(crate) fn identify(&self, key: &str, now: SystemTime) -> Result<Identity, AuthError> {
        let hash = hash_key(key);
        let entry = self.entries.get(&hash).ok_or(AuthError::Invalid)?;
        // The map lookup already matched; compare again in constant time so that no path
        // from a presented key to acceptance depends on a short-circuiting comparison.
        if !bool::from(entry.hash.ct_eq(&hash)) {
            return Err(AuthError::Invalid);
        }
        if entry.expires.is_some_and(|expires| now >= expires) {
            return Err(AuthError::Expired {
                id: entry.id.clone(),
            });
        }
        Ok(Identity {
            id: entry.id.clone(),
            allowed_models: entry.allowed_models.clone(),
            limits: entry.limits,
            admin: entry.admin,
        })
    }

    /// Adds an entry; a second use of an id or key is refused with the problem described.
    pub(super) fn insert(&mut self, entry: KeyEntry) -> Result<(), String> {
        if let Some(first) = self.entries.values().find(|other| other.id == entry.id) {
            return Err(format!(
                "duplicate key id '{}' (first on line {})",
                entry.id, first.line
            ));
        }
        if let Some(first) = self.entries.get(&entry.hash) {
            return Err(format!(
                "key '{}' is the same key as '{}' on line {}",
                entry.id, first.id, first.line
            ));
        }
        self.entries.insert(entry.hash, entry);
        Ok(())
    }
}

/// A new random API key: `sk-inf-` and 32 bytes from the OS RNG in unpadded base64url.
pub fn generate_key() -> String {
    let mut bytes = [0_u8; 32];
    getrandom::getrandom(&mut bytes)
        .expect("the OS random number generator is available on supported platforms");
    format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The `[[keys]]` TOML entry for a new key, holding only its SHA-256; ends with a newline.
pub fn key_file_line(id: &str, key: &str) -> String {
    let id = toml::Value::String(id.to_owned());
    format!(
        "[[keys]]\nid = {id}\nsha256 = \"{}\"\n",
        hex::encode(hash_key(key))
    )
}

/// The SHA-256 of a key's secret.
pub(super) fn hash_key(key: &str) -> KeyHash {
    Sha256::digest(key.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    const ALICE: &str = "sk-inf-alice-0123456789";
    const BOB: &str = "sk-inf-bob-0123456789";

    fn parse(text: &str) -> Result<KeyStore, AuthError> {
        KeyStore::parse(text, Path::new("/etc/inferno/keys"))
    }

    fn now() -> SystemTime {
        SystemTime::now()
    }

    #[test]
    fn wrong_keys_are_invalid() {
        let store = parse(&format!("alice {ALICE}\n")).unwrap();
        for wrong in [
            "",
            "alice",
            BOB,
            &ALICE[..ALICE.len() - 1],
            &format!("{ALICE} "),
        ] {
            assert!(matches!(
                store.identify(wrong, now()),
                Err(AuthError::Invalid)
            ));
        }
    }

    #[test]
    fn expired_keys_name_their_id() {
        let text = format!(
            "[[keys]]\nid = \"old\"\nsecret = \"{ALICE}\"\nexpires = \"2027-01-01T00:00:00Z\"\n"
        );
        let store = parse(&text).unwrap();
        let expiry = UNIX_EPOCH + Duration::from_secs(1_798_761_600);
        let before = expiry - Duration::from_secs(1);
        assert_eq!(store.identify(ALICE, before).unwrap().id, "old");
        match store.identify(ALICE, expiry) {
            Err(AuthError::Expired { id }) => assert_eq!(id, "old"),
            other => panic!("expected Expired, got {other:?}"),
        }
    }

    #[test]
    fn generated_keys_round_trip_through_a_key_file_line() {
        let key = generate_key();
        assert!(key.starts_with("sk-inf-"));
        assert_eq!(key.len(), "sk-inf-".len() + 43);
        assert_ne!(key, generate_key());
        let line = key_file_line("ci \"runner\"", &key);
        assert!(!line.contains(&key), "{line}");
        let store = parse(&format!(
            "[[keys]]\nid = \"x\"\nsecret = \"{ALICE}\"\n\n{line}"
        ));
        assert!(store.is_err(), "ids with whitespace are refused");
        let line = key_file_line("ci-runner", &key);
        let store = parse(&format!(
            "[[keys]]\nid = \"x\"\nsecret = \"{ALICE}\"\n\n{line}"
        ))
        .unwrap();
        assert_eq!(store.identify(&key, now()).unwrap().id, "ci-runner");
    }

    #[test]
    fn debug_shows_ids_but_no_secrets_or_hashes() {
        let store = parse(&format!("alice {ALICE}\n")).unwrap();
        let debug = format!("{store:?}");
        assert!(debug.contains("alice"), "{debug}");
        assert!(!debug.contains(ALICE), "{debug}");
        assert!(
            !debug.contains(&hex::encode(hash_key(ALICE))[..8]),
            "{debug}"
        );
    }
}
