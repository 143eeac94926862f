//! llama.cpp's model quantizer (`llama_model_quantize`) behind a safe function.
//!
//! The main `inferno` crate forbids unsafe code; this crate holds the one FFI call it needs
//! that `llama-cpp-2` does not wrap. Initialise llama.cpp's backend (`llama_backend_init`,
//! e.g. through `llama_cpp_2::llama_backend::LlamaBackend::init`) before calling [`quantize`].

#![deny(unsafe_code)]

use std::ffi::CString;
use std::path::{Path, PathBuf};

use llama_cpp_sys_2 as sys;

/// Target file types (llama.cpp's `llama_ftype`: most tensors get this type, 1-D ones stay F32,
/// and the K-quant mixes pick some tensors a larger type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileType {
    /// 16-bit floats.
    F16,
    /// bfloat16.
    Bf16,
    /// 8-bit blocks of 32.
    Q8_0,
    /// 4-bit blocks of 32, scale only.
    Q4_0,
    /// 4-bit blocks of 32, scale and minimum.
    Q4_1,
    /// 5-bit blocks of 32, scale only.
    Q5_0,
    /// 5-bit blocks of 32, scale and minimum.
    Q5_1,
    /// 2-bit K-quant mix.
    Q2K,
    /// 3-bit K-quant mix, small.
    Q3KS,
    /// 3-bit K-quant mix, medium.
    Q3KM,
    /// 3-bit K-quant mix, large.
    Q3KL,
    /// 4-bit K-quant mix, small.
    Q4KS,
    /// 4-bit K-quant mix, medium.
    Q4KM,
    /// 5-bit K-quant mix, small.
    Q5KS,
    /// 5-bit K-quant mix, medium.
    Q5KM,
    /// 6-bit K-quant.
    Q6K,
}

impl FileType {
    /// The `llama_ftype` value, as written to `general.file_type`.
    pub fn ftype(self) -> u32 {
        match self {
            FileType::F16 => sys::LLAMA_FTYPE_MOSTLY_F16,
            FileType::Bf16 => sys::LLAMA_FTYPE_MOSTLY_BF16,
            FileType::Q8_0 => sys::LLAMA_FTYPE_MOSTLY_Q8_0,
            FileType::Q4_0 => sys::LLAMA_FTYPE_MOSTLY_Q4_0,
            FileType::Q4_1 => sys::LLAMA_FTYPE_MOSTLY_Q4_1,
            FileType::Q5_0 => sys::LLAMA_FTYPE_MOSTLY_Q5_0,
            FileType::Q5_1 => sys::LLAMA_FTYPE_MOSTLY_Q5_1,
            FileType::Q2K => sys::LLAMA_FTYPE_MOSTLY_Q2_K,
            FileType::Q3KS => sys::LLAMA_FTYPE_MOSTLY_Q3_K_S,
            FileType::Q3KM => sys::LLAMA_FTYPE_MOSTLY_Q3_K_M,
            FileType::Q3KL => sys::LLAMA_FTYPE_MOSTLY_Q3_K_L,
            FileType::Q4KS => sys::LLAMA_FTYPE_MOSTLY_Q4_K_S,
            FileType::Q4KM => sys::LLAMA_FTYPE_MOSTLY_Q4_K_M,
            FileType::Q5KS => sys::LLAMA_FTYPE_MOSTLY_Q5_K_S,
            FileType::Q5KM => sys::LLAMA_FTYPE_MOSTLY_Q5_K_M,
            FileType::Q6K => sys::LLAMA_FTYPE_MOSTLY_Q6_K,
        }
    }
}

/// Why quantization failed.
#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    /// A path cannot be passed to C (it holds a NUL byte, or is not UTF-8 on this platform).
    #[error("path {} cannot be passed to llama.cpp", .0.display())]
    Path(PathBuf),
    /// llama.cpp reported failure; its log says why.
    #[error("llama.cpp could not quantize {} (status {status}; see its log above)", .input.display())]
    Failed {
        /// The input file.
        input: PathBuf,
        /// `llama_model_quantize`'s return value.
        status: u32,
    },
}

/// Quantizes the GGUF model at `input` to `file_type`, writing `output`, with `threads` threads
/// (0: all cores). Requantizing already-quantized tensors is refused unless `allow_requantize`.
/// Blocks until done; llama.cpp's backend must be initialised first.
pub fn quantize(
    input: &Path,
    output: &Path,
    file_type: FileType,
    threads: usize,
    allow_requantize: bool,
) -> Result<(), QuantizeError> {
    let c_path = |path: &Path| {
        path.to_str()
            .and_then(|text| CString::new(text).ok())
            .ok_or_else(|| QuantizeError::Path(path.to_path_buf()))
    };
    let (c_input, c_output) = (c_path(input)?, c_path(output)?);
    let status = call_quantize(&c_input, &c_output, file_type, threads, allow_requantize);
    if status == 0 {
        Ok(())
    } else {
        Err(QuantizeError::Failed {
            input: input.to_path_buf(),
            status,
        })
    }
}

#[allow(unsafe_code)]
fn call_quantize(
    input: &CString,
    output: &CString,
    file_type: FileType,
    threads: usize,
    allow_requantize: bool,
) -> u32 {
    // SAFETY: both functions are plain C calls without preconditions beyond valid arguments.
    // The params come from llama.cpp's own defaults (null imatrix/override/prune pointers) with
    // only plain fields changed: `ftype` is a valid `llama_ftype` from the enum above, `nthread`
    // is clamped into i32. Both paths are NUL-terminated CStrings that outlive the call, which
    // reads them and the params without keeping any pointer; C++ exceptions are caught inside
    // `llama_model_quantize` and turned into a nonzero status.
    unsafe {
        let mut params = sys::llama_model_quantize_default_params();
        params.ftype = file_type.ftype();
        params.nthread = i32::try_from(threads).unwrap_or(i32::MAX);
        params.allow_requantize = allow_requantize;
        sys::llama_model_quantize(input.as_ptr(), output.as_ptr(), &params)
    }
}
