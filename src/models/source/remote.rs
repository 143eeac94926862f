//! Sources reached by URL: files on the Hugging Face Hub and plain `https://` URLs.

use std::fmt;
use std::net::IpAddr;

use reqwest::Url;

use super::{SourceError, path_problem, split_digest};

/// A file in a Hugging Face Hub model repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HfSource {
    /// The user or organisation owning the repository, e.g. `HuggingFaceTB`.
    pub owner: String,
    /// The repository name, e.g. `SmolLM2-135M-Instruct-GGUF`.
    pub repo: String,
    /// Path of the `.gguf` file inside the repository.
    pub path: String,
    /// Branch, tag or commit; `None` means `main`.
    pub revision: Option<String>,
}

/// A model file at a plain URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlSource {
    /// The URL, without its `#sha256=` fragment.
    pub url: String,
    /// The digest the file must have, when pinned with `#sha256=`.
    pub sha256: Option<String>,
    /// Local file name: the URL path's last segment, percent-decoded.
    pub file_name: String,
}

impl HfSource {
    /// File name of the repository file (its last path component), used as the local file name.
    pub fn file_name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }

    /// The revision to fetch, `main` unless one was given.
    pub fn revision(&self) -> &str {
        self.revision.as_deref().unwrap_or("main")
    }

    /// The Hub's download URL for the file: `{endpoint}/{owner}/{repo}/resolve/{revision}/{path}`.
    pub fn resolve_url(&self, endpoint: &str) -> String {
        let path: Vec<String> = self.path.split('/').map(percent_encode).collect();
        format!(
            "{}/{}/{}/resolve/{}/{}",
            endpoint.trim_end_matches('/'),
            self.owner,
            self.repo,
            percent_encode(self.revision()),
            path.join("/")
        )
    }
}

impl fmt::Display for HfSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "hf:{}/{}/{}", self.owner, self.repo, self.path)?;
        if let Some(revision) = &self.revision {
            write!(f, "@{revision}")?;
        }
        Ok(())
    }
}

impl fmt::Display for UrlSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)?;
        if let Some(digest) = &self.sha256 {
            write!(f, "#sha256={digest}")?;
        }
        Ok(())
    }
}

/// Parses what follows `hf:`: `<owner>/<repo>/<path>[@<revision>]`; the first `@` starts the revision.
pub(super) fn parse_hf(input: &str, rest: &str) -> Result<HfSource, SourceError> {
    let (location, revision) = match rest.split_once('@') {
        Some((location, revision)) => (location, Some(revision)),
        None => (rest, None),
    };
    let mut pieces = location.splitn(3, '/');
    let owner = pieces.next().unwrap_or_default();
    let repo = pieces.next().unwrap_or_default();
    let Some(path) = pieces.next() else {
        return Err(SourceError::InvalidRepo {
            input: input.to_owned(),
            reason: "expected hf:<owner>/<repo>/<path of the .gguf file>[@<revision>]".to_owned(),
        });
    };
    for (what, name) in [("owner", owner), ("repository", repo)] {
        if !is_valid_repo_name(name) {
            return Err(SourceError::InvalidRepo {
                input: input.to_owned(),
                reason: format!(
                    "`{name}` is not a valid {what} name (letters, digits, `.`, `-`, `_`; starting with a letter or digit)"
                ),
            });
        }
    }
    let path_error = |reason| SourceError::InvalidPath {
        input: input.to_owned(),
        path: path.to_owned(),
        reason,
    };
    if let Some(reason) = path_problem(path) {
        return Err(path_error(reason));
    }
    if !has_gguf_extension(path) {
        return Err(path_error("it must name a .gguf file"));
    }
    if let Some(revision) = revision
        && !is_valid_revision(revision)
    {
        return Err(SourceError::InvalidRevision {
            input: input.to_owned(),
            revision: revision.to_owned(),
        });
    }
    Ok(HfSource {
        owner: owner.to_owned(),
        repo: repo.to_owned(),
        path: path.to_owned(),
        revision: revision.map(str::to_owned),
    })
}

/// Parses an `https://` URL (or `http://` to a loopback host) with an optional `#sha256=` pin.
pub(super) fn parse_url(input: &str) -> Result<UrlSource, SourceError> {
    let url_error = |reason: String| SourceError::InvalidUrl {
        input: input.to_owned(),
        reason,
    };
    let (text, sha256) = split_digest(input, input)?;
    let url = Url::parse(text).map_err(|err| url_error(format!("not a valid URL: {err}")))?;
    let host = url.host_str().unwrap_or_default().to_owned();
    if host.is_empty() {
        return Err(url_error("the URL has no host".to_owned()));
    }
    if url.scheme() == "http" && !is_loopback(&host) {
        return Err(SourceError::InsecureUrl {
            input: input.to_owned(),
            host,
        });
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(url_error(
            "credentials in the URL are not supported".to_owned(),
        ));
    }
    let segment = url
        .path_segments()
        .and_then(|mut segments| segments.next_back())
        .unwrap_or_default();
    let file_name = percent_decode(segment)
        .filter(|name| is_plain_name(name) && has_gguf_extension(name))
        .ok_or_else(|| {
            url_error(format!(
                "the URL path must end in a .gguf file name, not `{segment}`"
            ))
        })?;
    Ok(UrlSource {
        url: url.to_string(),
        sha256,
        file_name,
    })
}

/// `localhost` or an address in 127.0.0.0/8 or `::1`: traffic that never leaves the machine.
fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Hub user, organisation and repository names: ASCII letters, digits, `.`, `-`, `_`.
fn is_valid_repo_name(name: &str) -> bool {
    name.as_bytes()
        .first()
        .is_some_and(u8::is_ascii_alphanumeric)
        && !name.contains("..")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// Branch, tag and commit names as URLs can carry them; `/` separates the parts of `refs/pr/1`.
fn is_valid_revision(revision: &str) -> bool {
    !revision.is_empty()
        && revision
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
        && revision
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'/'))
}

fn has_gguf_extension(path: &str) -> bool {
    path.len() > ".gguf".len()
        && path.as_bytes()[path.len() - ".gguf".len()..].eq_ignore_ascii_case(b".gguf")
}

/// A single path component, which cannot climb out of the directory it is joined to.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', ':', '\0'])
}

/// Escapes everything but RFC 3986 unreserved characters, so each path segment stays one segment.
fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// Undoes `%XX` escapes; `None` for a broken escape or bytes that are not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = text.get(index + 1..index + 3)?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

#[cfg(test)]
mod tests {
    use super::super::ModelSource;
    use super::*;

    fn hf(text: &str) -> HfSource {
        match text.parse::<ModelSource>() {
            Ok(ModelSource::HuggingFace(hf)) => hf,
            other => panic!("`{text}` should parse as hf: {other:?}"),
        }
    }

    fn url(text: &str) -> UrlSource {
        match text.parse::<ModelSource>() {
            Ok(ModelSource::Url(url)) => url,
            other => panic!("`{text}` should parse as a URL: {other:?}"),
        }
    }

    #[test]
    fn hf_sources_split_into_repo_path_and_revision() {
        let parsed = hf("hf:bartowski/SmolLM2-135M-Instruct-GGUF/q4/SmolLM2.Q4_K_M.gguf");
        assert_eq!(parsed.owner, "bartowski");
        assert_eq!(parsed.repo, "SmolLM2-135M-Instruct-GGUF");
        assert_eq!(parsed.path, "q4/SmolLM2.Q4_K_M.gguf");
        assert_eq!(parsed.revision(), "main");
        assert_eq!(parsed.file_name(), "SmolLM2.Q4_K_M.gguf");
        assert_eq!(
            parsed.resolve_url("https://huggingface.co/"),
            "https://huggingface.co/bartowski/SmolLM2-135M-Instruct-GGUF/resolve/main/q4/SmolLM2.Q4_K_M.gguf"
        );
        let pinned = hf("hf:o/r/my model+1.gguf@refs/pr/7");
        assert_eq!(pinned.revision(), "refs/pr/7");
        assert_eq!(
            pinned.resolve_url("http://127.0.0.1:9"),
            "http://127.0.0.1:9/o/r/resolve/refs%2Fpr%2F7/my%20model%2B1.gguf"
        );
    }

    #[test]
    fn malformed_hf_sources_are_rejected() {
        for (text, kind) in [
            ("hf:owner/repo", "repo"),
            ("hf:owner", "repo"),
            ("hf:/repo/m.gguf", "repo"),
            ("hf:-owner/repo/m.gguf", "repo"),
            ("hf:owner/re po/m.gguf", "repo"),
            ("hf:owner/repo/../m.gguf", "path"),
            ("hf:owner/repo//m.gguf", "path"),
            ("hf:owner/repo/model.bin", "path"),
            ("hf:owner/repo/m.gguf@", "revision"),
            ("hf:owner/repo/m.gguf@../main", "revision"),
            ("hf:owner/repo/m.gguf@ma in", "revision"),
        ] {
            let err = text
                .parse::<ModelSource>()
                .expect_err("malformed hf source");
            let matched = match kind {
                "repo" => matches!(err, SourceError::InvalidRepo { .. }),
                "path" => matches!(err, SourceError::InvalidPath { .. }),
                _ => matches!(err, SourceError::InvalidRevision { .. }),
            };
            assert!(matched, "{text}: {err:?}");
        }
    }

    #[test]
    fn https_urls_name_their_file_and_may_pin_a_digest() {
        let parsed = url("https://example.com/files/Model%20A.Q4.gguf?download=1");
        assert_eq!(parsed.file_name, "Model A.Q4.gguf");
        assert_eq!(parsed.sha256, None);
        let digest = "AB".repeat(32);
        let parsed = url(&format!("https://example.com/m.gguf#sha256={digest}"));
        assert_eq!(parsed.sha256, Some(digest.to_ascii_lowercase()));
        assert_eq!(parsed.url, "https://example.com/m.gguf");
    }

    #[test]
    fn plain_http_is_only_for_loopback() {
        for text in [
            "http://127.0.0.1:8080/m.gguf",
            "http://127.1.2.3/m.gguf",
            "http://localhost/m.gguf",
            "http://[::1]:9/m.gguf",
        ] {
            url(text);
        }
        for text in [
            "http://example.com/m.gguf",
            "http://10.0.0.1/m.gguf",
            "http://[2001:db8::1]/m.gguf",
            "http://127.0.0.1.example.com/m.gguf",
        ] {
            let err = text.parse::<ModelSource>().expect_err("insecure");
            assert!(
                matches!(err, SourceError::InsecureUrl { .. }),
                "{text}: {err:?}"
            );
            assert!(err.to_string().contains("https://"), "{err}");
        }
    }

    #[test]
    fn unusable_urls_are_rejected() {
        for text in [
            "https://",
            "https://example.com/",
            "https://example.com/model.bin",
            "https://example.com/dir/%2E%2E",
            "https://user:secret@example.com/m.gguf",
        ] {
            let err = text.parse::<ModelSource>().expect_err("unusable URL");
            assert!(
                matches!(err, SourceError::InvalidUrl { .. }),
                "{text}: {err:?}"
            );
        }
        let err = "https://example.com/m.gguf#sha256=12"
            .parse::<ModelSource>()
            .expect_err("short pin");
        assert!(matches!(err, SourceError::InvalidDigest { .. }), "{err:?}");
    }

    #[test]
    fn percent_coding_round_trips() {
        assert_eq!(percent_encode("a b/c+d~"), "a%20b%2Fc%2Bd~");
        assert_eq!(percent_decode("a%20b%2Fc").as_deref(), Some("a b/c"));
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(percent_decode("bad%zz"), None);
    }
}
