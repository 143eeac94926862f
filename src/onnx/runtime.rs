//! Loads the ONNX Runtime shared library, once per process.
//!
//! `ort` is built with `load-dynamic`, so nothing is linked or downloaded at build time: the
//! library is opened at run time from a configured path or `ORT_DYLIB_PATH`. ONNX Runtime allows
//! one environment per process, so the first successful load is kept for the process lifetime.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::environment::Environment;

use super::OnnxError;

/// Environment variable naming the runtime library when the configuration does not.
pub const RUNTIME_ENV_VAR: &str = "ORT_DYLIB_PATH";

/// Where `inferno pull` finds a self-contained Linux x86_64 runtime library: the PyPI
/// `onnxruntime` wheel's member (any CPython tag of 1.32.0 carries the same file).
pub const RUNTIME_SOURCE: &str =
    "pypi:onnxruntime==1.32.0/onnxruntime/capi/libonnxruntime.so.1.32.0";

/// The process-wide environment and the library it was loaded from.
struct Loaded {
    path: PathBuf,
    environment: Environment,
}

static LOADED: Mutex<Option<Loaded>> = Mutex::new(None);

/// Picks the runtime library path: the configured one first, else `ORT_DYLIB_PATH`.
pub(crate) fn resolve_path(
    configured: Option<&Path>,
    from_env: Option<OsString>,
) -> Result<PathBuf, OnnxError> {
    if let Some(path) = configured {
        return Ok(path.to_path_buf());
    }
    match from_env {
        Some(value) if !value.is_empty() => Ok(PathBuf::from(value)),
        _ => Err(OnnxError::RuntimeNotConfigured),
    }
}

/// Returns the process's ONNX Runtime environment, loading the library on first use.
///
/// A later call naming a different library gets the already loaded one (a process cannot hold
/// two), with a warning; a path that does not exist is always an error, so misconfiguration
/// shows up even when another model already loaded the runtime.
pub(crate) fn environment(configured: Option<&Path>) -> Result<Environment, OnnxError> {
    let path = resolve_path(configured, std::env::var_os(RUNTIME_ENV_VAR))?;
    if !path.is_file() {
        return Err(OnnxError::RuntimeMissing { path });
    }
    // A poisoned lock only means another thread panicked mid-load; the Option is still coherent.
    let mut loaded = LOADED.lock().unwrap_or_else(|poison| poison.into_inner());
    if let Some(existing) = loaded.as_ref() {
        if existing.path != path {
            tracing::warn!(
                requested = %path.display(),
                loaded = %existing.path.display(),
                "ONNX Runtime is already loaded from another file; using that one"
            );
        }
        return Ok(existing.environment.clone());
    }
    let load_error = |reason: String| OnnxError::RuntimeLoad {
        path: path.clone(),
        reason,
    };
    let environment = ort::init_from(&path)
        .map_err(|e| load_error(e.to_string()))?
        .with_name("inferno")
        .with_telemetry(false)
        .build()
        .map_err(|e| load_error(e.to_string()))?;
    tracing::info!(path = %path.display(), "loaded ONNX Runtime");
    *loaded = Some(Loaded {
        path,
        environment: environment.clone(),
    });
    Ok(environment)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_path_wins_over_environment() {
        let path = resolve_path(
            Some(Path::new("/opt/ort/libonnxruntime.so")),
            Some(OsString::from("/elsewhere/libonnxruntime.so")),
        )
        .expect("configured path");
        assert_eq!(path, PathBuf::from("/opt/ort/libonnxruntime.so"));
    }

    #[test]
    fn environment_variable_is_the_fallback() {
        let path =
            resolve_path(None, Some(OsString::from("/env/libonnxruntime.so"))).expect("env path");
        assert_eq!(path, PathBuf::from("/env/libonnxruntime.so"));
    }

    #[test]
    fn absent_or_empty_configuration_says_how_to_get_the_runtime() {
        for from_env in [None, Some(OsString::new())] {
            let err = resolve_path(None, from_env).expect_err("nothing configured");
            assert_eq!(err, OnnxError::RuntimeNotConfigured);
            let message = err.to_string();
            assert!(message.contains("ORT_DYLIB_PATH"), "{message}");
            assert!(
                message.contains(&format!("inferno pull {RUNTIME_SOURCE}")),
                "{message}"
            );
        }
    }

    #[test]
    fn missing_library_file_is_reported_before_loading() {
        let err = environment(Some(Path::new("/nonexistent/libonnxruntime.so.1.32.0")))
            .expect_err("no such file");
        assert!(
            matches!(&err, OnnxError::RuntimeMissing { path } if path.ends_with("libonnxruntime.so.1.32.0")),
            "{err:?}"
        );
        assert!(err.to_string().contains("inferno pull"), "{err}");
    }

    #[test]
    fn a_file_that_is_not_a_library_fails_to_load() {
        let dir = tempfile::tempdir().expect("temp dir");
        let fake = dir.path().join("libonnxruntime.so");
        std::fs::write(&fake, b"not an ELF file").expect("write fake library");
        match environment(Some(&fake)) {
            Err(OnnxError::RuntimeLoad { path, reason }) => {
                assert_eq!(path, fake);
                assert!(!reason.is_empty());
            }
            // Another test in this process may already have loaded the real runtime; then the
            // loaded one is reused and this file is never opened.
            Ok(_) => assert!(LOADED.lock().map(|l| l.is_some()).unwrap_or(true)),
            Err(other) => panic!("unexpected error: {other:?}"),
        }
    }
}
