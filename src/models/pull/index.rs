//! Finding a release's wheel through a PyPI-compatible JSON API.

use reqwest::StatusCode;
use serde::Deserialize;

use super::super::source::PyPiSource;
use super::http;
use super::wheel::is_plain_file_name;
use super::{PullError, PullOptions, STALL_TIMEOUT, stalled, status_error};

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
    let response = http::get(client, &url, 0, None).await?.response;
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
    // A pure wheel when there is one; else one built for this machine (any CPython tag: the
    // files inside, e.g. a shared library, are the same).
    let chosen = wheels
        .iter()
        .position(|file| file.filename.ends_with("-none-any.whl"))
        .or_else(|| {
            wheels
                .iter()
                .position(|file| for_this_platform(&file.filename))
        });
    let Some(file) = chosen.and_then(|index| wheels.into_iter().nth(index)) else {
        return Err(metadata_error(format!(
            "the release has no wheel (bdist_wheel) for any platform or for linux {}",
            std::env::consts::ARCH
        )));
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
    // Mirrors and proxies may list files by a URL relative to the JSON document (pip resolves
    // them the same way).
    let absolute = reqwest::Url::parse(&url)
        .and_then(|base| base.join(&file.url))
        .map_err(|err| metadata_error(format!("wheel URL `{}`: {err}", file.url)))?;
    Ok(WheelFile {
        url: absolute.to_string(),
        filename: file.filename,
        sha256,
        size: file.size,
    })
}

/// Whether a platform wheel's tag (`…-manylinux_2_28_x86_64.whl`) fits this machine.
fn for_this_platform(filename: &str) -> bool {
    let Some(platform) = filename
        .strip_suffix(".whl")
        .and_then(|stem| stem.rsplit('-').next())
    else {
        return false;
    };
    let os = if cfg!(target_os = "linux") {
        "linux"
    } else if cfg!(target_os = "macos") {
        "macosx"
    } else {
        "win"
    };
    platform.split('.').any(|tag| {
        tag.contains(os) && tag.ends_with(std::env::consts::ARCH) && !tag.contains("musl")
    })
}

#[cfg(test)]
mod tests {
    use super::for_this_platform;

    #[cfg(target_os = "linux")]
    #[test]
    fn platform_wheels_are_matched_to_this_machine() {
        let arch = std::env::consts::ARCH;
        let here = format!(
            "onnxruntime-1.32.0-cp311-cp311-manylinux_2_27_{arch}.manylinux_2_28_{arch}.whl"
        );
        assert!(for_this_platform(&here), "{here}");
        for other in [
            "onnxruntime-1.32.0-cp311-cp311-win_amd64.whl".to_owned(),
            "onnxruntime-1.32.0-cp311-cp311-macosx_13_0_universal2.whl".to_owned(),
            format!("onnxruntime-1.32.0-cp311-cp311-musllinux_1_2_{arch}.whl"),
            "onnxruntime-1.32.0-cp311-cp311-manylinux_2_28_s390x.whl".to_owned(),
            "pkg-1.0-py3-none-any.whl".to_owned(),
        ] {
            assert!(!for_this_platform(&other), "{other}");
        }
    }
}
