//! The keys file's two formats, chosen by content: TOML when it parses as a table with a
//! `keys` array, plain lines otherwise.
//!
//! Lines: `<secret>` or `<id> <secret>`, `#` comments and blank lines ignored; an unnamed key
//! gets the id `key-<first 8 hex digits of its SHA-256>`. TOML: `[[keys]]` entries with `id`,
//! `sha256` or `secret`, and optional `models`, `expires` (RFC 3339) and limits.

use std::path::Path;

use serde::Deserialize;

use super::AuthError;
use super::expiry::parse_expiry;
use super::identity::Limits;
use super::keys::{KeyEntry, KeyHash, KeyStore, hash_key};

/// Longest key id accepted: ids end up in logs and metric labels.
const MAX_ID_LEN: usize = 64;

/// The TOML form of the keys file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    keys: Vec<KeyRecord>,
}

/// One `[[keys]]` entry as written; checked and hashed into a [`KeyEntry`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct KeyRecord {
    id: toml::Spanned<String>,
    sha256: Option<String>,
    secret: Option<String>,
    models: Option<Vec<String>>,
    /// A quoted string or a bare TOML date-time.
    expires: Option<toml::Value>,
    requests_per_minute: Option<u32>,
    tokens_per_minute: Option<u32>,
    max_concurrent: Option<u32>,
    /// May use the admin API.
    #[serde(default)]
    admin: bool,
}

/// Parses keys file text in either format; `path` only names the file in error messages.
pub(super) fn parse(text: &str, path: &Path) -> Result<KeyStore, AuthError> {
    let file = FileErrors { path };
    match toml::from_str::<toml::Table>(text) {
        Ok(table) if table.contains_key("keys") => parse_toml(text, &file),
        Ok(table) if !table.is_empty() => Err(file.at(
            None,
            "this TOML file has no `keys` array (write entries as [[keys]])",
        )),
        Ok(_) => Ok(KeyStore::default()),
        Err(err) if looks_like_toml(text) => Err(file.toml(text, &err)),
        Err(_) => parse_lines(text, &file),
    }
}

fn unnamed_id(hash: &KeyHash) -> String {
    format!("key-{}", &hex::encode(hash)[..8])
}

/// A file that failed to parse as TOML is still reported as TOML when it has a table header,
/// instead of each of its lines being taken for a key.
fn looks_like_toml(text: &str) -> bool {
    text.lines().any(|line| line.trim_start().starts_with('['))
}

/// Builds load errors that name the file and line, and never quote the file's content.
struct FileErrors<'a> {
    path: &'a Path,
}

impl FileErrors<'_> {
    fn at(&self, line: Option<usize>, problem: &str) -> AuthError {
        match line {
            Some(line) => AuthError::Config(format!(
                "keys file {}, line {line}: {problem}",
                self.path.display()
            )),
            None => AuthError::Config(format!("keys file {}: {problem}", self.path.display())),
        }
    }

    /// A TOML error by position and message only: its rendered form quotes the offending
    /// source line, which may hold a secret.
    fn toml(&self, text: &str, err: &toml::de::Error) -> AuthError {
        let line = err.span().map(|span| line_of(text, span.start));
        self.at(line, err.message().trim())
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(1, |before| before.matches('\n').count() + 1)
}

fn parse_lines(text: &str, file: &FileErrors<'_>) -> Result<KeyStore, AuthError> {
    let mut store = KeyStore::default();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let content = raw.trim();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = content.split_whitespace().collect();
        let (id, secret) = match fields.as_slice() {
            [secret] => (None, *secret),
            [id, secret] => (Some(*id), *secret),
            _ => {
                return Err(file.at(
                    Some(line),
                    &format!(
                        "expected `<secret>` or `<id> <secret>`, found {} fields",
                        fields.len()
                    ),
                ));
            }
        };
        let hash = hash_key(secret);
        let id = match id {
            Some(id) => check_id(id).map_err(|problem| file.at(Some(line), &problem))?,
            None => unnamed_id(&hash),
        };
        let entry = KeyEntry {
            id,
            hash,
            allowed_models: None,
            expires: None,
            limits: Limits::default(),
            admin: false,
            line,
        };
        store
            .insert(entry)
            .map_err(|problem| file.at(Some(line), &problem))?;
    }
    Ok(store)
}

fn parse_toml(text: &str, file: &FileErrors<'_>) -> Result<KeyStore, AuthError> {
    let parsed: KeysFile = toml::from_str(text).map_err(|err| file.toml(text, &err))?;
    let mut store = KeyStore::default();
    for record in parsed.keys {
        let line = line_of(text, record.id.span().start);
        let entry = key_entry(record, line).map_err(|problem| file.at(Some(line), &problem))?;
        store
            .insert(entry)
            .map_err(|problem| file.at(Some(line), &problem))?;
    }
    Ok(store)
}

/// Checks one TOML entry; problems name the entry but never its secret.
fn key_entry(record: KeyRecord, line: usize) -> Result<KeyEntry, String> {
    let id = check_id(record.id.get_ref())?;
    let hash = match (record.sha256, record.secret) {
        (Some(digest), None) => parse_digest(&digest)
            .ok_or_else(|| format!("key '{id}': sha256 must be 64 hex digits"))?,
        (None, Some(secret)) if !secret.trim().is_empty() => hash_key(&secret),
        (None, Some(_)) => return Err(format!("key '{id}': secret is empty")),
        (Some(_), Some(_)) => {
            return Err(format!(
                "key '{id}': give either sha256 or secret, not both"
            ));
        }
        (None, None) => return Err(format!("key '{id}': needs sha256 or secret")),
    };
    if let Some(models) = &record.models
        && models.iter().any(|model| model.trim().is_empty())
    {
        return Err(format!("key '{id}': models has an empty name"));
    }
    let expires = match record.expires {
        None => None,
        Some(toml::Value::String(text)) => Some(text),
        Some(toml::Value::Datetime(datetime)) => Some(datetime.to_string()),
        Some(_) => return Err(format!("key '{id}': expires must be a date-time")),
    };
    let expires = expires
        .map(|text| parse_expiry(&text).map_err(|problem| format!("key '{id}': expires {problem}")))
        .transpose()?;
    let limits = Limits {
        requests_per_minute: record.requests_per_minute,
        tokens_per_minute: record.tokens_per_minute,
        max_concurrent: record.max_concurrent,
    };
    if let Some(name) = limits.zero_limit() {
        return Err(format!(
            "key '{id}': {name} must be at least 1 (leave it out for no limit)"
        ));
    }
    Ok(KeyEntry {
        id,
        hash,
        allowed_models: record.models,
        expires,
        limits,
        admin: record.admin,
        line,
    })
}

fn check_id(id: &str) -> Result<String, String> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(format!("key ids must have 1 to {MAX_ID_LEN} characters"));
    }
    if id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "key id '{}' has whitespace or control characters",
            id.escape_default()
        ));
    }
    Ok(id.to_owned())
}

fn parse_digest(text: &str) -> Option<KeyHash> {
    let bytes = hex::decode(text.trim()).ok()?;
    KeyHash::try_from(bytes.as_slice()).ok()
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::auth::Identity;

    const ALICE: &str = "sk-inf-alice-0123456789";
    const BOB: &str = "sk-inf-bob-0123456789";

    fn parse(text: &str) -> Result<KeyStore, AuthError> {
        super::parse(text, Path::new("/etc/inferno/keys"))
    }

    fn config_error(text: &str) -> String {
        match parse(text) {
            Err(AuthError::Config(message)) => message,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    fn now() -> SystemTime {
        SystemTime::now()
    }

    #[test]
    fn lines_format_with_named_and_unnamed_keys() {
        let store = parse(&format!(
            "# team keys\n\n  alice {ALICE}  \n{BOB}\n   # trailing comment\n"
        ))
        .unwrap();
        assert_eq!(store.len(), 2);
        let alice = store.identify(ALICE, now()).unwrap();
        assert_eq!(alice.id, "alice");
        assert_eq!(alice.allowed_models, None);
        assert_eq!(alice.limits, Limits::default());
        let unnamed = store.identify(BOB, now()).unwrap();
        assert_eq!(
            unnamed.id,
            format!("key-{}", &hex::encode(hash_key(BOB))[..8])
        );
        assert_eq!(unnamed.id.len(), "key-".len() + 8);
    }

    #[test]
    fn toml_format_with_hashed_and_plain_entries() {
        let text = format!(
            r#"
[[keys]]
id = "alice"
sha256 = "{}"
models = ["SmolLM2-135M-Instruct.Q4_1"]
expires = 2999-01-01T00:00:00Z
requests-per-minute = 60
tokens-per-minute = 20000
max-concurrent = 4

[[keys]]
id = "bob"
secret = "{BOB}"
"#,
            hex::encode(hash_key(ALICE)).to_uppercase()
        );
        let store = parse(&text).unwrap();
        assert_eq!(store.len(), 2);
        let alice = store.identify(ALICE, now()).unwrap();
        assert_eq!(
            alice,
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
        );
        assert!(alice.may_use("SmolLM2-135M-Instruct.Q4_1"));
        assert!(!alice.may_use("gemma-3-270m-it.Q4_K_M"));
        let bob = store.identify(BOB, now()).unwrap();
        assert_eq!((bob.id.as_str(), bob.allowed_models), ("bob", None));
    }

    #[test]
    fn duplicates_are_refused_with_their_lines() {
        let message = config_error(&format!("alice {ALICE}\nalice {BOB}\n"));
        assert!(message.contains("/etc/inferno/keys, line 2"), "{message}");
        assert!(
            message.contains("duplicate key id 'alice' (first on line 1)"),
            "{message}"
        );

        let text = format!(
            "[[keys]]\nid = \"a\"\nsecret = \"{ALICE}\"\n\n[[keys]]\nid = \"b\"\nsha256 = \"{}\"\n",
            hex::encode(hash_key(ALICE))
        );
        let message = config_error(&text);
        assert!(message.contains("line 6"), "{message}");
        assert!(
            message.contains("'b' is the same key as 'a' on line 2"),
            "{message}"
        );
    }

    #[test]
    fn malformed_files_name_the_line_without_quoting_secrets() {
        let message = config_error(&format!("alice {ALICE}\nbob {BOB} extra\n"));
        assert!(
            message.contains("line 2: expected `<secret>` or `<id> <secret>`"),
            "{message}"
        );
        assert!(!message.contains(BOB), "{message}");

        let broken = format!("[[keys]]\nid = \"bob\"\nsecret = \"{BOB}\n");
        let message = config_error(&broken);
        assert!(message.contains("line 3"), "{message}");
        assert!(!message.contains(BOB), "{message}");

        let message = config_error(&format!("[[key]]\nid = \"bob\"\nsecret = \"{BOB}\"\n"));
        assert!(message.contains("no `keys` array"), "{message}");
    }

    #[test]
    fn invalid_toml_entries_are_explained() {
        let digest = hex::encode(hash_key(ALICE));
        let cases = [
            (
                format!("id = \"a\"\nsecret = \"{ALICE}\"\nsha256 = \"{digest}\""),
                "not both",
            ),
            ("id = \"a\"".to_owned(), "needs sha256 or secret"),
            ("id = \"a\"\nsha256 = \"abc\"".to_owned(), "64 hex digits"),
            (
                format!("id = \"a\"\nsecret = \"{ALICE}\"\nmax-concurrent = 0"),
                "max-concurrent",
            ),
            (
                format!("id = \"a\"\nsecret = \"{ALICE}\"\nexpires = \"soon\""),
                "RFC 3339",
            ),
            (
                format!("id = \"a\"\nsecret = \"{ALICE}\"\nexpires = 2027-01-01T00:00:00"),
                "no UTC offset",
            ),
            (
                format!("id = \"a\"\nsecret = \"{ALICE}\"\nexpires = 5"),
                "must be a date-time",
            ),
            (format!("id = \"a b\"\nsecret = \"{ALICE}\""), "whitespace"),
            (
                format!("id = \"a\"\nsecret = \"{ALICE}\"\nmodel = [\"x\"]"),
                "unknown field",
            ),
            (format!("secret = \"{ALICE}\""), "missing field `id`"),
        ];
        for (entry, expected) in cases {
            let message = config_error(&format!("# keys\n[[keys]]\n{entry}\n"));
            assert!(message.contains(expected), "{entry:?}: {message}");
            assert!(message.contains("line "), "{entry:?}: {message}");
            assert!(!message.contains(ALICE), "{entry:?}: {message}");
        }
    }

    #[test]
    fn empty_files_hold_no_keys() {
        assert_eq!(parse("").unwrap().len(), 0);
        assert_eq!(parse("# nobody yet\n\n").unwrap().len(), 0);
        assert_eq!(parse("keys = []\n").unwrap().len(), 0);
    }
}
