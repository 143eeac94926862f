//! The models directory as a content-addressed store.
//!
//! Verified model files live once, as `<models_dir>/blobs/sha256-<hex>`; every model name is a
//! hard link `<models_dir>/<name>.gguf` to its blob, so two names for the same bytes (two
//! sources, or an alias) share them. Plain `.gguf` files put there by hand have no blob and are
//! still listed and removable. A blob is deleted with the last name that links it.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Directory, inside the models directory, holding one file per distinct content.
pub const BLOBS_DIR: &str = "blobs";
/// Directory, inside the models directory, for files not verified yet and links being made.
pub const PARTIAL_DIR: &str = ".partial";
/// Extension every model name carries on disk.
const EXTENSION: &str = ".gguf";
/// Prefix of blob file names; the rest is the lower-case hex sha256.
const BLOB_PREFIX: &str = "sha256-";

/// A model file in the models directory.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StoredModel {
    /// The model's name: its file name without `.gguf`.
    pub name: String,
    /// The file, `<models_dir>/<name>.gguf`.
    pub path: PathBuf,
    /// Its length in bytes.
    pub size: u64,
    /// Its sha256 when it is linked to a blob; `None` for a plain file.
    pub sha256: Option<String>,
    /// How many names share its content (1 for a plain file).
    pub names: u64,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The name cannot be a file in the models directory.
    #[error("`{name}` is not a usable model name: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The digest is not 64 hex digits.
    #[error("`{0}` is not a sha256 digest (64 hex digits)")]
    InvalidDigest(String),
    /// No model of that name is in the directory.
    #[error("no model named `{name}` in {}", dir.display())]
    NotFound {
        /// The name asked for.
        name: String,
        /// The models directory.
        dir: PathBuf,
    },
    /// The name is a plain file, so there is no blob to give a second name.
    #[error("model `{0}` is a plain file, not in the store; pull it again to share it")]
    NotStored(String),
    /// A file operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// The operation, as a verb phrase.
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// The models directory seen as names linked to content-addressed blobs. All blocking.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// A store rooted at `models_dir`; nothing is created until a model is put.
    pub fn new(models_dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: models_dir.into(),
        }
    }

    /// The models directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the model `name` (with or without `.gguf`) lives: `<models_dir>/<name>.gguf`.
    pub fn path_of(&self, name: &str) -> Result<PathBuf, StoreError> {
        Ok(self.dir.join(format!("{}{EXTENSION}", model_name(name)?)))
    }

    /// Where the blob of the content with this sha256 lives.
    pub fn blob_path(&self, sha256: &str) -> Result<PathBuf, StoreError> {
        Ok(self.blobs_dir().join(blob_file_name(sha256)?))
    }

    /// Moves a verified `file` with digest `sha256` into the store and names it `name`,
    /// replacing whatever had that name. A file whose content is already stored is dropped.
    pub fn put(&self, file: &Path, sha256: &str, name: &str) -> Result<PathBuf, StoreError> {
        let blob = self.blob_path(sha256)?;
        let target = self.path_of(name)?;
        let blobs = self.blobs_dir();
        fs::create_dir_all(&blobs).map_err(io_error("create directory", &blobs))?;
        // A hard link, unlike a rename, fails instead of replacing a blob other names share.
        match fs::hard_link(file, &blob) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(io_error("store", file)(err)),
        }
        fs::remove_file(file).map_err(io_error("remove", file))?;
        self.name_blob(&blob, &target)?;
        Ok(target)
    }

    /// Names an already stored content `name`; `None` when no blob has that digest.
    pub fn link(&self, sha256: &str, name: &str) -> Result<Option<PathBuf>, StoreError> {
        let blob = self.blob_path(sha256)?;
        let target = self.path_of(name)?;
        if !blob.is_file() {
            return Ok(None);
        }
        self.name_blob(&blob, &target)?;
        Ok(Some(target))
    }

    /// Gives the stored model `existing` a second name, sharing its bytes.
    pub fn alias(&self, existing: &str, new_name: &str) -> Result<PathBuf, StoreError> {
        let model = self
            .lookup(existing)?
            .ok_or_else(|| self.not_found(existing))?;
        let sha256 = model
            .sha256
            .ok_or_else(|| StoreError::NotStored(model.name.clone()))?;
        self.link(&sha256, new_name)?
            .ok_or(StoreError::NotStored(model.name))
    }

    /// Whether `name` is a link to the blob with digest `sha256`, which proves its content.
    pub fn links_to(&self, name: &str, sha256: &str) -> Result<bool, StoreError> {
        let (Ok(name_meta), Ok(blob_meta)) = (
            fs::metadata(self.path_of(name)?),
            fs::metadata(self.blob_path(sha256)?),
        ) else {
            return Ok(false);
        };
        Ok(file_id(&name_meta).is_some() && file_id(&name_meta) == file_id(&blob_meta))
    }

    /// The model called `name`, if there is one.
    pub fn lookup(&self, name: &str) -> Result<Option<StoredModel>, StoreError> {
        let path = self.path_of(name)?;
        let meta = match fs::metadata(&path) {
            Ok(meta) if meta.is_file() => meta,
            Ok(_) => return Ok(None),
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(io_error("inspect", &path)(err)),
        };
        let blobs = self.blob_ids()?;
        Ok(Some(describe(
            model_name(name)?.to_owned(),
            path,
            &meta,
            &blobs,
        )))
    }

    /// Every model in the directory, by name; `blobs/`, `.partial/` and non-`.gguf` files are skipped.
    pub fn list(&self) -> Result<Vec<StoredModel>, StoreError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(io_error("read directory", &self.dir)(err)),
        };
        let blobs = self.blob_ids()?;
        let mut models = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_error("read directory", &self.dir))?;
            let file_name = entry.file_name();
            let Some(name) = file_name
                .to_str()
                .and_then(|name| name.strip_suffix(EXTENSION))
                .filter(|name| model_name(name).is_ok())
            else {
                continue;
            };
            let path = entry.path();
            // Follows symbolic links, so a model linked in by hand is listed as a file.
            match fs::metadata(&path) {
                Ok(meta) if meta.is_file() => {
                    models.push(describe(name.to_owned(), path, &meta, &blobs));
                }
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(io_error("inspect", &path)(err)),
            }
        }
        models.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(models)
    }

    /// Removes the name; its blob goes too when no other name links it. Returns what was removed.
    pub fn remove(&self, name: &str) -> Result<StoredModel, StoreError> {
        let model = self.lookup(name)?.ok_or_else(|| self.not_found(name))?;
        fs::remove_file(&model.path).map_err(io_error("remove", &model.path))?;
        if let Some(sha256) = &model.sha256 {
            self.drop_if_unnamed(&self.blob_path(sha256)?)?;
        }
        Ok(model)
    }

    /// Deletes blobs no name links any more (left by an interrupted put); returns how many.
    pub fn prune(&self) -> Result<usize, StoreError> {
        let mut pruned = 0;
        for blob in self.blob_ids()?.into_values() {
            if self.drop_if_unnamed(&self.blob_path(&blob)?)? {
                pruned += 1;
            }
        }
        Ok(pruned)
    }

    fn blobs_dir(&self) -> PathBuf {
        self.dir.join(BLOBS_DIR)
    }

    fn not_found(&self, name: &str) -> StoreError {
        StoreError::NotFound {
            name: name.to_owned(),
            dir: self.dir.clone(),
        }
    }

    /// Points `target` at `blob` atomically: a fresh link under `.partial/` is renamed over it.
    fn name_blob(&self, blob: &Path, target: &Path) -> Result<(), StoreError> {
        static LINKS: AtomicU64 = AtomicU64::new(0);
        let partial = self.dir.join(PARTIAL_DIR);
        fs::create_dir_all(&partial).map_err(io_error("create directory", &partial))?;
        let staging = partial.join(format!(
            "link-{}-{}",
            std::process::id(),
            LINKS.fetch_add(1, Ordering::Relaxed)
        ));
        fs::hard_link(blob, &staging).map_err(io_error("link", blob))?;
        let replaced = target
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| self.lookup(name).ok().flatten())
            .and_then(|model| model.sha256);
        if let Err(err) = fs::rename(&staging, target) {
            let _ = fs::remove_file(&staging);
            return Err(io_error("name", target)(err));
        }
        if let Some(old) = replaced {
            let old_blob = self.blob_path(&old)?;
            if old_blob != blob {
                self.drop_if_unnamed(&old_blob)?;
            }
        }
        sync_dir(&self.dir);
        Ok(())
    }

    /// Deletes a blob that only its own directory entry links; returns whether it did.
    fn drop_if_unnamed(&self, blob: &Path) -> Result<bool, StoreError> {
        match fs::metadata(blob) {
            Ok(meta) if link_count(&meta) <= 1 => {
                fs::remove_file(blob).map_err(io_error("remove", blob))?;
                Ok(true)
            }
            Ok(_) => Ok(false),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(err) => Err(io_error("inspect", blob)(err)),
        }
    }

    /// The blobs by file identity, so a name's blob is found without hashing the name.
    fn blob_ids(&self) -> Result<HashMap<(u64, u64), String>, StoreError> {
        let blobs = self.blobs_dir();
        let entries = match fs::read_dir(&blobs) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(HashMap::new()),
            Err(err) => return Err(io_error("read directory", &blobs)(err)),
        };
        let mut ids = HashMap::new();
        for entry in entries {
            let entry = entry.map_err(io_error("read directory", &blobs))?;
            let Some(digest) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.strip_prefix(BLOB_PREFIX))
                .filter(|digest| is_digest(digest))
                .map(str::to_owned)
            else {
                continue;
            };
            if let Some(id) = entry.metadata().ok().as_ref().and_then(file_id) {
                ids.insert(id, digest);
            }
        }
        Ok(ids)
    }
}

fn describe(
    name: String,
    path: PathBuf,
    meta: &fs::Metadata,
    blobs: &HashMap<(u64, u64), String>,
) -> StoredModel {
    let sha256 = file_id(meta).and_then(|id| blobs.get(&id)).cloned();
    // The blob's own directory entry is one of the links but not a name.
    let names = match sha256 {
        Some(_) => link_count(meta).saturating_sub(1).max(1),
        None => 1,
    };
    StoredModel {
        name,
        path,
        size: meta.len(),
        sha256,
        names,
    }
}

/// The model name without `.gguf`, checked to be one plain, visible file name.
fn model_name(name: &str) -> Result<&str, StoreError> {
    let stem = name.strip_suffix(EXTENSION).unwrap_or(name);
    let reason = if stem.is_empty() {
        Some("it is empty")
    } else if stem.contains(['/', '\\', ':', '\0']) {
        Some("it must be a single file name")
    } else if stem.starts_with('.') {
        Some("it must not start with `.`")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(StoreError::InvalidName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(stem),
    }
}

fn blob_file_name(sha256: &str) -> Result<String, StoreError> {
    if !is_digest(sha256) {
        return Err(StoreError::InvalidDigest(sha256.to_owned()));
    }
    Ok(format!("{BLOB_PREFIX}{}", sha256.to_ascii_lowercase()))
}

fn is_digest(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Device and inode: two names with the same identity are hard links to one file.
#[cfg(unix)]
fn file_id(meta: &fs::Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    Some((meta.dev(), meta.ino()))
}

/// Without a stable file identity, names are not traced back to blobs.
#[cfg(not(unix))]
fn file_id(_meta: &fs::Metadata) -> Option<(u64, u64)> {
    None
}

#[cfg(unix)]
fn link_count(meta: &fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    meta.nlink()
}

/// Without link counts, a blob is assumed still named and kept.
#[cfg(not(unix))]
fn link_count(_meta: &fs::Metadata) -> u64 {
    u64::MAX
}

/// Makes renames in `dir` durable; a failure leaves a correct but possibly unsynced directory.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(handle) = fs::File::open(dir) {
        let _ = handle.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use sha2::{Digest as _, Sha256};

    use super::*;

    /// Writes `bytes` as an incoming verified file and returns it with its digest.
    fn incoming(dir: &Path, bytes: &[u8]) -> (PathBuf, String) {
        let partial = dir.join(PARTIAL_DIR);
        fs::create_dir_all(&partial).expect("create .partial");
        static FILES: AtomicU64 = AtomicU64::new(0);
        let path = partial.join(format!("in-{}", FILES.fetch_add(1, Ordering::Relaxed)));
        fs::write(&path, bytes).expect("write incoming");
        (path, hex::encode(Sha256::digest(bytes)))
    }

    fn blob_count(dir: &Path) -> usize {
        fs::read_dir(dir.join(BLOBS_DIR))
            .map(|entries| entries.count())
            .unwrap_or(0)
    }

    #[test]
    fn two_names_share_one_blob_and_survive_each_other() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path());
        let (first, digest) = incoming(dir.path(), b"GGUF same bytes");
        let a = store.put(&first, &digest, "a.gguf").expect("put a");
        let (second, again) = incoming(dir.path(), b"GGUF same bytes");
        let b = store.put(&second, &again, "b").expect("put b");
        assert_eq!(a, dir.path().join("a.gguf"));
        assert_eq!(b, dir.path().join("b.gguf"));
        assert!(
            !first.exists() && !second.exists(),
            "incoming files are consumed"
        );
        assert_eq!(blob_count(dir.path()), 1);

        let listed = store.list().expect("list");
        assert_eq!(listed.len(), 2);
        for model in &listed {
            assert_eq!(model.sha256.as_deref(), Some(digest.as_str()));
            assert_eq!(model.names, 2);
            assert_eq!(model.size, 15);
        }
        assert!(store.links_to("a", &digest).expect("links_to"));

        let removed = store.remove("a").expect("remove a");
        assert_eq!(removed.name, "a");
        assert!(!a.exists());
        assert_eq!(fs::read(&b).expect("read b"), b"GGUF same bytes");
        assert_eq!(blob_count(dir.path()), 1, "b still links the blob");
        assert_eq!(store.lookup("b").expect("lookup").map(|m| m.names), Some(1));

        store.remove("b.gguf").expect("remove b");
        assert_eq!(
            blob_count(dir.path()),
            0,
            "the last name takes the blob along"
        );
        assert!(store.list().expect("list").is_empty());
    }

    #[test]
    fn alias_and_link_name_existing_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path());
        let (file, digest) = incoming(dir.path(), b"GGUF aliased");
        store.put(&file, &digest, "original").expect("put");
        let alias = store.alias("original", "short").expect("alias");
        assert_eq!(fs::read(alias).expect("read alias"), b"GGUF aliased");
        assert_eq!(
            store.lookup("original").expect("lookup").map(|m| m.names),
            Some(2)
        );
        assert_eq!(store.link(&"00".repeat(32), "x").expect("link"), None);
        assert!(store.link(&digest, "third").expect("link").is_some());
        assert_eq!(
            store.lookup("short").expect("lookup").map(|m| m.names),
            Some(3)
        );
    }

    #[test]
    fn renaming_a_name_to_new_content_drops_the_orphaned_blob() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path());
        let (old, _) = incoming(dir.path(), b"GGUF old");
        let old_digest = hex::encode(Sha256::digest(b"GGUF old"));
        store.put(&old, &old_digest, "m").expect("put old");
        let (new, new_digest) = incoming(dir.path(), b"GGUF new");
        store.put(&new, &new_digest, "m").expect("put new");
        assert_eq!(
            fs::read(dir.path().join("m.gguf")).expect("read"),
            b"GGUF new"
        );
        assert_eq!(blob_count(dir.path()), 1);
        assert!(!store.blob_path(&old_digest).expect("path").exists());
    }

    #[test]
    fn plain_files_are_listed_and_removable_and_scans_skip_store_dirs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path());
        fs::write(dir.path().join("hand.gguf"), b"GGUF by hand").expect("write plain");
        fs::write(dir.path().join("notes.txt"), b"not a model").expect("write other");
        fs::create_dir_all(dir.path().join(PARTIAL_DIR)).expect("partial");
        fs::write(dir.path().join(PARTIAL_DIR).join("x.gguf"), b"GGUF").expect("write part");
        fs::create_dir_all(dir.path().join(BLOBS_DIR).join("odd.gguf")).expect("blobs");
        fs::create_dir_all(dir.path().join("dir.gguf")).expect("a directory");
        let (file, digest) = incoming(dir.path(), b"GGUF stored");
        store.put(&file, &digest, "stored").expect("put");

        let listed = store.list().expect("list");
        let names: Vec<&str> = listed.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["hand", "stored"]);
        assert_eq!(listed[0].sha256, None);
        assert_eq!(listed[0].names, 1);
        assert_eq!(listed[0].size, 12);

        store.remove("hand").expect("remove plain");
        assert!(!dir.path().join("hand.gguf").exists());
        let err = store.remove("hand").expect_err("gone");
        assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
        let err = store.alias("stored", "../escape").expect_err("bad name");
        assert!(matches!(err, StoreError::InvalidName { .. }), "{err:?}");
    }

    #[test]
    fn prune_removes_only_unnamed_blobs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path());
        let (kept, kept_digest) = incoming(dir.path(), b"GGUF kept");
        store.put(&kept, &kept_digest, "kept").expect("put");
        let (orphan, orphan_digest) = incoming(dir.path(), b"GGUF orphan");
        fs::rename(&orphan, store.blob_path(&orphan_digest).expect("path")).expect("orphan");
        assert_eq!(store.prune().expect("prune"), 1);
        assert_eq!(blob_count(dir.path()), 1);
        assert!(store.blob_path(&kept_digest).expect("path").exists());
    }

    #[test]
    fn names_and_digests_are_validated() {
        let store = Store::new("/nonexistent");
        for name in ["", ".gguf", ".hidden", "a/b", "..", "c:d"] {
            assert!(store.path_of(name).is_err(), "{name}");
        }
        assert_eq!(
            store.path_of("m.gguf").expect("valid"),
            Path::new("/nonexistent/m.gguf")
        );
        assert!(matches!(
            store.blob_path("abc"),
            Err(StoreError::InvalidDigest(_))
        ));
    }
}
