//! Resumable, verified download of one URL into a `.part` file.
//!
//! An existing `.part` is continued with a `Range` request; a server that ignores or refuses the
//! range gets the whole file asked for again. The sha256 always covers the whole file, and a file
//! that fails its checks is deleted, so no half-verified bytes survive.

use std::io;
use std::path::Path;

use futures_util::StreamExt as _;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::StatusCode;
use reqwest::header::CONTENT_RANGE;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::http::{self, Credentials};
use super::{PullError, STALL_TIMEOUT, io_error, remove_quietly, stalled, status_error};

/// One file to download and what is known about it beforehand.
pub(super) struct Remote<'a> {
    /// Where to GET it.
    pub(super) url: &'a str,
    /// How to name it in messages and on the progress bar.
    pub(super) label: &'a str,
    /// The digest it must have, when known in advance (index metadata, a `#sha256=` pin).
    pub(super) sha256: Option<&'a str>,
    /// Its length, when known in advance.
    pub(super) size: Option<u64>,
    /// A token for the Hugging Face Hub, whose `X-Linked-*` headers also supply digest and size.
    pub(super) hub: Option<Credentials<'a>>,
}

/// A complete download: the `.part` holds exactly these bytes.
#[derive(Debug)]
pub(super) struct Downloaded {
    /// Lower-case hex sha256 of the whole file.
    pub(super) sha256: String,
    /// Whether that digest was checked against a published one.
    pub(super) verified: bool,
}

/// Brings `part` to the complete file, resuming what an earlier attempt left, and verifies it
/// against every digest and size known.
pub(super) async fn download(
    client: &reqwest::Client,
    remote: &Remote<'_>,
    part: &Path,
    progress: bool,
) -> Result<Downloaded, PullError> {
    let mut offset = match tokio::fs::metadata(part).await {
        Ok(meta) => meta.len(),
        Err(err) if err.kind() == io::ErrorKind::NotFound => 0,
        Err(err) => return Err(io_error("inspect", part)(err)),
    };
    if let Some(size) = remote.size {
        if offset == size
            && let Some(expected) = remote.sha256
        {
            // A part of full length is either the finished download or garbage; asking the
            // server for the bytes after its end would only earn a 416.
            let digest = hex::encode(hash_prefix(part, size).await?.finalize());
            if digest.eq_ignore_ascii_case(expected) {
                return Ok(Downloaded {
                    sha256: digest,
                    verified: true,
                });
            }
            offset = 0;
        } else if offset >= size {
            offset = 0;
        }
    }
    loop {
        let fetched = http::get(client, remote.url, offset, remote.hub.as_ref()).await?;
        let expected_sha256 = remote
            .sha256
            .map(str::to_ascii_lowercase)
            .or(fetched.linked.sha256.clone());
        let expected_size = remote.size.or(fetched.linked.size);
        let response = fetched.response;
        let status = response.status();
        if offset > 0 && status == StatusCode::RANGE_NOT_SATISFIABLE {
            // Nothing lies past the part's end: it is complete if it has the published digest.
            if let Some(expected) = &expected_sha256
                && expected_size.is_none_or(|size| size == offset)
            {
                let digest = hex::encode(hash_prefix(part, offset).await?.finalize());
                if digest == *expected {
                    return Ok(Downloaded {
                        sha256: digest,
                        verified: true,
                    });
                }
            }
            offset = 0;
            continue;
        }
        if offset > 0
            && status == StatusCode::PARTIAL_CONTENT
            && !content_range_starts_at(&response, offset)
        {
            offset = 0;
            continue;
        }
        let (file, hasher, start) = match status {
            StatusCode::PARTIAL_CONTENT if offset > 0 => {
                let hasher = hash_prefix(part, offset).await?;
                let file = tokio::fs::OpenOptions::new()
                    .append(true)
                    .open(part)
                    .await
                    .map_err(io_error("open", part))?;
                (file, hasher, offset)
            }
            StatusCode::OK => {
                let file = tokio::fs::File::create(part)
                    .await
                    .map_err(io_error("create", part))?;
                (file, Sha256::new(), 0)
            }
            StatusCode::NOT_FOUND => {
                return Err(PullError::NotFound {
                    what: remote.label.to_owned(),
                    url: fetched.url,
                });
            }
            status if http::is_denied(status) => {
                return Err(PullError::Denied {
                    url: fetched.url,
                    status: status.as_u16(),
                    hint: if remote.hub.is_some() {
                        "the repository may be gated or private: set HF_TOKEN to a token with access"
                    } else {
                        "the server refused the download"
                    },
                });
            }
            status => return Err(status_error(&fetched.url, status)),
        };
        let total = expected_size.or_else(|| response.content_length().map(|len| len + start));
        let sink = (file, hasher, start);
        let digest = stream_into(response, sink, total, remote, part, progress).await?;
        return verify(part, digest, expected_sha256, expected_size, remote.label).await;
    }
}

/// Appends the response body to the file, continuing the hasher that covers its first `start`
/// bytes, and returns the digest and final length.
async fn stream_into(
    response: reqwest::Response,
    (mut file, mut hasher, start): (tokio::fs::File, Sha256, u64),
    total: Option<u64>,
    remote: &Remote<'_>,
    part: &Path,
    progress: bool,
) -> Result<(String, u64), PullError> {
    let bar = progress_bar(progress, total, remote.label);
    bar.set_position(start);
    let mut length = start;
    let mut body = response.bytes_stream();
    let received = loop {
        let chunk = match tokio::time::timeout(STALL_TIMEOUT, body.next()).await {
            Err(_) => break Err(stalled(remote.url)),
            Ok(None) => break Ok(()),
            Ok(Some(Err(source))) => {
                break Err(PullError::Request {
                    url: remote.url.to_owned(),
                    source,
                });
            }
            Ok(Some(Ok(chunk))) => chunk,
        };
        hasher.update(&chunk);
        if let Err(err) = file.write_all(&chunk).await {
            break Err(io_error("write", part)(err));
        }
        length += chunk.len() as u64;
        bar.inc(chunk.len() as u64);
    };
    // tokio finishes a write in the background after `write_all` returns; without this flush
    // an interrupted transfer could still grow the part while the next attempt measures it.
    let flushed = file.flush().await.map_err(io_error("write", part));
    bar.finish_and_clear();
    received?;
    flushed?;
    file.sync_all().await.map_err(io_error("sync", part))?;
    Ok((hex::encode(hasher.finalize()), length))
}

/// Checks a finished part against the expected size and digest, deleting it when either differs.
async fn verify(
    part: &Path,
    (digest, length): (String, u64),
    expected_sha256: Option<String>,
    expected_size: Option<u64>,
    label: &str,
) -> Result<Downloaded, PullError> {
    if let Some(expected) = expected_size
        && expected != length
    {
        remove_quietly(part);
        return Err(PullError::SizeMismatch {
            expected,
            actual: length,
            what: label.to_owned(),
        });
    }
    match expected_sha256 {
        Some(expected) if expected != digest => {
            remove_quietly(part);
            Err(PullError::ChecksumMismatch {
                expected,
                actual: digest,
                what: label.to_owned(),
            })
        }
        Some(_) => Ok(Downloaded {
            sha256: digest,
            verified: true,
        }),
        None => Ok(Downloaded {
            sha256: digest,
            verified: false,
        }),
    }
}

/// Whether a 206 answer really continues at `offset` (`Content-Range: bytes <offset>-<end>/<len>`).
fn content_range_starts_at(response: &reqwest::Response, offset: u64) -> bool {
    response
        .headers()
        .get(CONTENT_RANGE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("bytes "))
        .and_then(|range| range.split_once('-'))
        .and_then(|(start, _)| start.trim().parse::<u64>().ok())
        == Some(offset)
}

/// Hashes the first `len` bytes of a file, so a resumed download is verified as a whole.
pub(super) async fn hash_prefix(path: &Path, len: u64) -> Result<Sha256, PullError> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(io_error("open", path))?;
    let mut reader = file.take(len);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let read = reader
            .read(&mut buf)
            .await
            .map_err(io_error("read", path))?;
        if read == 0 {
            return Ok(hasher);
        }
        hasher.update(&buf[..read]);
    }
}

fn progress_bar(enabled: bool, total: Option<u64>, name: &str) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let (bar, template) = match total {
        Some(total) => (
            ProgressBar::new(total),
            "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
        ),
        None => (
            ProgressBar::new_spinner(),
            "{msg} {spinner} {bytes} {binary_bytes_per_sec}",
        ),
    };
    let style = ProgressStyle::with_template(template)
        .expect("the progress templates are fixed and valid")
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(format!("Downloading {name}"));
    bar
}
