//! Pulling a single file by URL: from the Hugging Face Hub's resolve endpoint, whose redirect
//! announces the file's sha256, or from a plain URL, verified against its `#sha256=` pin.

use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::super::source::{HfSource, UrlSource};
use super::download::{Remote, download};
use super::http::Credentials;
use super::{PARTIAL_DIR, PullError, PullOptions, install_async};

/// Pulls a file from a Hub repository, sending `hf_token` to the Hub (never to its CDN).
pub(super) async fn pull_hf(
    client: &reqwest::Client,
    hf: &HfSource,
    models_dir: &Path,
    opts: &PullOptions,
) -> Result<PathBuf, PullError> {
    let url = hf.resolve_url(&opts.hf_endpoint);
    let label = hf.to_string();
    let remote = Remote {
        url: &url,
        label: &label,
        sha256: None,
        size: None,
        hub: Some(Credentials {
            endpoint: &opts.hf_endpoint,
            token: opts.hf_token.as_deref(),
        }),
    };
    fetch_into_store(client, &remote, models_dir, hf.file_name(), opts.progress).await
}

/// Pulls a file from a plain URL.
pub(super) async fn pull_url(
    client: &reqwest::Client,
    source: &UrlSource,
    models_dir: &Path,
    opts: &PullOptions,
) -> Result<PathBuf, PullError> {
    let label = source.to_string();
    let remote = Remote {
        url: &source.url,
        label: &label,
        sha256: source.sha256.as_deref(),
        size: None,
        hub: None,
    };
    fetch_into_store(
        client,
        &remote,
        models_dir,
        &source.file_name,
        opts.progress,
    )
    .await
}

/// Downloads into a `.part` named after the source, so a later pull of the same source resumes
/// it, then installs the verified file.
async fn fetch_into_store(
    client: &reqwest::Client,
    remote: &Remote<'_>,
    models_dir: &Path,
    file_name: &str,
    progress: bool,
) -> Result<PathBuf, PullError> {
    let source_key = hex::encode(Sha256::digest(remote.label.as_bytes()));
    let part = models_dir
        .join(PARTIAL_DIR)
        .join(format!("{file_name}.{}.part", &source_key[..12]));
    let downloaded = download(client, remote, &part, progress).await?;
    if !downloaded.verified {
        tracing::warn!(
            source = remote.label,
            sha256 = downloaded.sha256,
            "no published sha256 to check the download against; pin one with #sha256=<hex>"
        );
    }
    install_async(
        models_dir,
        part,
        downloaded.sha256,
        file_name.to_owned(),
        remote.label.to_owned(),
    )
    .await
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::super::super::store::Store;
    use super::super::stand_in::{Logged, Setup, leftovers};
    use super::super::wheel::fixtures::model_bytes;
    use super::*;

    const REPO: &str = "owner/repo";
    const TOKEN: &str = "hf_test_token";

    fn digest(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    fn requests_to(log: &[Logged], prefix: &str) -> Vec<Logged> {
        log.iter()
            .filter(|logged| logged.path.starts_with(prefix))
            .cloned()
            .collect()
    }

    #[tokio::test]
    async fn hf_pull_verifies_linked_etag_and_sends_the_token_only_to_the_hub() {
        let model = model_bytes(40 * 1024, 11);
        let index = Setup::new()
            .hub_file(
                REPO,
                "main",
                "q4/m.gguf",
                model.clone(),
                Some(digest(&model)),
            )
            .token(TOKEN)
            .serve()
            .await;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = index
            .pull("hf:owner/repo/q4/m.gguf", dir.path(), Some(TOKEN))
            .await
            .expect("hf pull");
        assert_eq!(path, dir.path().join("m.gguf"));
        assert_eq!(fs::read(&path).expect("read model"), model);
        let log = index.log();
        let resolve = requests_to(&log, "/owner/repo/resolve/main/q4/m.gguf");
        assert_eq!(resolve.len(), 1);
        assert_eq!(resolve[0].authorization, Some(format!("Bearer {TOKEN}")));
        let cdn = requests_to(&log, "/cdn/");
        assert_eq!(cdn.len(), 1);
        assert_eq!(
            cdn[0].authorization, None,
            "the token must not follow the redirect"
        );
        let stored = Store::new(dir.path()).lookup("m").expect("lookup");
        assert_eq!(stored.and_then(|m| m.sha256), Some(digest(&model)));
        assert_eq!(leftovers(dir.path()), Vec::<String>::new());
    }

    #[tokio::test]
    async fn hf_without_token_on_a_gated_repo_says_to_set_hf_token() {
        let model = model_bytes(1024, 1);
        let index = Setup::new()
            .hub_file(REPO, "main", "m.gguf", model.clone(), Some(digest(&model)))
            .token(TOKEN)
            .serve()
            .await;
        let dir = tempfile::tempdir().expect("tempdir");
        let err = index
            .pull("hf:owner/repo/m.gguf", dir.path(), None)
            .await
            .expect_err("401");
        assert!(
            matches!(err, PullError::Denied { status: 401, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("HF_TOKEN"), "{err}");
        assert!(!dir.path().join("m.gguf").exists());
    }

    #[tokio::test]
    async fn hf_linked_etag_mismatch_leaves_nothing() {
        let model = model_bytes(8 * 1024, 2);
        let index = Setup::new()
            .hub_file(REPO, "v1", "m.gguf", model, Some("cd".repeat(32)))
            .serve()
            .await;
        let dir = tempfile::tempdir().expect("tempdir");
        let err = index
            .pull("hf:owner/repo/m.gguf@v1", dir.path(), None)
            .await
            .expect_err("digest mismatch");
        assert!(
            matches!(&err, PullError::ChecksumMismatch { expected, .. } if *expected == "cd".repeat(32)),
            "{err:?}"
        );
        assert!(!dir.path().join("m.gguf").exists());
        assert_eq!(leftovers(dir.path()), Vec::<String>::new());
    }

    #[tokio::test]
    async fn hf_small_file_served_directly_ignores_its_git_etag() {
        let model = model_bytes(2 * 1024, 3);
        let index = Setup::new()
            .hub_file(REPO, "refs/pr/1", "m.gguf", model.clone(), None)
            .serve()
            .await;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = index
            .pull("hf:owner/repo/m.gguf@refs/pr/1", dir.path(), None)
            .await
            .expect("non-LFS pull");
        assert_eq!(fs::read(path).expect("read model"), model);
    }

    #[tokio::test]
    async fn interrupted_hf_transfer_resumes_with_range_and_verifies() {
        let model = model_bytes(64 * 1024, 4);
        let index = Setup::new()
            .hub_file(REPO, "main", "m.gguf", model.clone(), Some(digest(&model)))
            .interrupt_after(20 * 1024)
            .serve()
            .await;
        let dir = tempfile::tempdir().expect("tempdir");
        let err = index
            .pull("hf:owner/repo/m.gguf", dir.path(), None)
            .await
            .expect_err("cut off");
        assert!(matches!(err, PullError::Request { .. }), "{err:?}");
        let parts = leftovers(dir.path());
        assert_eq!(parts.len(), 1, "{parts:?}");
        let kept = fs::metadata(dir.path().join(PARTIAL_DIR).join(&parts[0]))
            .expect("part kept")
            .len();
        assert!(kept > 0 && kept <= 20 * 1024, "{kept}");

        let path = index
            .pull("hf:owner/repo/m.gguf", dir.path(), None)
            .await
            .expect("resumed pull");
        assert_eq!(fs::read(path).expect("read model"), model);
        let cdn = requests_to(&index.log(), "/cdn/");
        let ranges: Vec<Option<String>> = cdn.into_iter().map(|logged| logged.range).collect();
        assert_eq!(ranges, vec![None, Some(format!("bytes={kept}-"))]);
        assert_eq!(leftovers(dir.path()), Vec::<String>::new());
    }

    #[tokio::test]
    async fn url_pull_checks_the_pin() {
        let model = model_bytes(16 * 1024, 5);
        let index = Setup::new().plain("m.gguf", model.clone()).serve().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("{}/plain/m.gguf", index.base);
        let path = index
            .pull(
                &format!("{url}#sha256={}", digest(&model)),
                dir.path(),
                None,
            )
            .await
            .expect("pinned pull");
        assert_eq!(fs::read(&path).expect("read model"), model);
        let requests = index.requests();
        index
            .pull(
                &format!("{url}#sha256={}", digest(&model)),
                dir.path(),
                None,
            )
            .await
            .expect("present");
        assert_eq!(
            index.requests(),
            requests,
            "a linked pinned name needs no request"
        );

        let other = tempfile::tempdir().expect("tempdir");
        let err = index
            .pull(
                &format!("{url}#sha256={}", "ef".repeat(32)),
                other.path(),
                None,
            )
            .await
            .expect_err("pin mismatch");
        assert!(matches!(err, PullError::ChecksumMismatch { .. }), "{err:?}");
        assert!(!other.path().join("m.gguf").exists());
        assert_eq!(leftovers(other.path()), Vec::<String>::new());
    }

    #[tokio::test]
    async fn url_content_that_is_not_gguf_is_rejected() {
        let index = Setup::new()
            .plain("m.gguf", b"<!doctype html><p>login</p>".to_vec())
            .serve()
            .await;
        let dir = tempfile::tempdir().expect("tempdir");
        let err = index
            .pull(&format!("{}/plain/m.gguf", index.base), dir.path(), None)
            .await
            .expect_err("not GGUF");
        assert!(matches!(err, PullError::NotGguf { .. }), "{err:?}");
        assert!(!dir.path().join("m.gguf").exists());
        assert_eq!(leftovers(dir.path()), Vec::<String>::new());
        assert!(Store::new(dir.path()).list().expect("list").is_empty());
    }

    #[tokio::test]
    async fn same_bytes_from_two_sources_share_one_blob() {
        let model = model_bytes(12 * 1024, 6);
        let index = Setup::new()
            .hub_file(REPO, "main", "a.gguf", model.clone(), Some(digest(&model)))
            .plain("b.gguf", model.clone())
            .serve()
            .await;
        let dir = tempfile::tempdir().expect("tempdir");
        let a = index
            .pull("hf:owner/repo/a.gguf", dir.path(), None)
            .await
            .expect("hf pull");
        let b = index
            .pull(&format!("{}/plain/b.gguf", index.base), dir.path(), None)
            .await
            .expect("url pull");
        let store = Store::new(dir.path());
        let listed = store.list().expect("list");
        assert_eq!(listed.len(), 2);
        assert!(
            listed
                .iter()
                .all(|m| m.names == 2 && m.sha256 == Some(digest(&model)))
        );
        let blobs = fs::read_dir(dir.path().join("blobs"))
            .expect("blobs")
            .count();
        assert_eq!(blobs, 1);
        store.remove("a").expect("remove a");
        assert!(!a.exists());
        assert_eq!(fs::read(&b).expect("b keeps its bytes"), model);
    }
}
