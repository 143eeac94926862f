//! `inferno quantize`: convert a GGUF model to a smaller type with llama.cpp's quantizer.
//!
//! The input header is checked first (a GGUF file, not already of the target type, not
//! already quantized unless `--allow-requantize`), the output is written to `<out>.partial`
//! and renamed into place only once complete; on failure or Ctrl-C the partial file is removed.
//! llama.cpp reports no progress, so the bar follows the growing output file against a size
//! estimated from the input's tensor shapes.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};

use crate::models::gguf::{GgmlType, GgufInfo};

/// Arguments of `inferno quantize`.
#[derive(Debug, clap::Args)]
pub struct QuantizeArgs {
    /// The GGUF model to quantize (F32, F16 or BF16 weights).
    pub input: PathBuf,
    /// Where to write the quantized model.
    pub output: PathBuf,
    /// The target type.
    #[arg(long = "type", short = 't', value_enum)]
    pub quant_type: QuantType,
    /// Threads to quantize with (default: all cores).
    #[arg(long)]
    pub threads: Option<NonZeroUsize>,
    /// Overwrite the output file if it exists.
    #[arg(long)]
    pub force: bool,
    /// Allow an input whose weights are already quantized (quality suffers twice).
    #[arg(long)]
    pub allow_requantize: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// A target type: llama.cpp's file types (`llama_ftype`) by their `llama-quantize` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum QuantType {
    /// 16-bit floats.
    #[value(name = "f16")]
    F16,
    /// bfloat16.
    #[value(name = "bf16")]
    Bf16,
    /// 8 bits per weight (8.5 with scales): nearly lossless.
    #[value(name = "q8_0")]
    Q8_0,
    /// 4.5 bits per weight.
    #[value(name = "q4_0")]
    Q4_0,
    /// 5 bits per weight.
    #[value(name = "q4_1")]
    Q4_1,
    /// 5.5 bits per weight.
    #[value(name = "q5_0")]
    Q5_0,
    /// 6 bits per weight.
    #[value(name = "q5_1")]
    Q5_1,
    /// K-quant mix around 2.6 bits per weight.
    #[value(name = "q2_k")]
    Q2K,
    /// K-quant mix, 3-bit small.
    #[value(name = "q3_k_s")]
    Q3KS,
    /// K-quant mix, 3-bit medium.
    #[value(name = "q3_k_m")]
    Q3KM,
    /// K-quant mix, 3-bit large.
    #[value(name = "q3_k_l")]
    Q3KL,
    /// K-quant mix, 4-bit small.
    #[value(name = "q4_k_s")]
    Q4KS,
    /// K-quant mix, 4-bit medium: the usual choice.
    #[value(name = "q4_k_m")]
    Q4KM,
    /// K-quant mix, 5-bit small.
    #[value(name = "q5_k_s")]
    Q5KS,
    /// K-quant mix, 5-bit medium.
    #[value(name = "q5_k_m")]
    Q5KM,
    /// K-quant, 6.56 bits per weight.
    #[value(name = "q6_k")]
    Q6K,
}

impl QuantType {
    /// The name llama.cpp gives this file type in `general.file_type` (see
    /// [`crate::models::gguf::file_type_name`]), e.g. "Q4_K_M".
    pub fn file_type_name(self) -> &'static str {
        match self {
            QuantType::F16 => "F16",
            QuantType::Bf16 => "BF16",
            QuantType::Q8_0 => "Q8_0",
            QuantType::Q4_0 => "Q4_0",
            QuantType::Q4_1 => "Q4_1",
            QuantType::Q5_0 => "Q5_0",
            QuantType::Q5_1 => "Q5_1",
            QuantType::Q2K => "Q2_K",
            QuantType::Q3KS => "Q3_K_S",
            QuantType::Q3KM => "Q3_K_M",
            QuantType::Q3KL => "Q3_K_L",
            QuantType::Q4KS => "Q4_K_S",
            QuantType::Q4KM => "Q4_K_M",
            QuantType::Q5KS => "Q5_K_S",
            QuantType::Q5KM => "Q5_K_M",
            QuantType::Q6K => "Q6_K",
        }
    }

    /// The tensor type most weights get (the K-quant mixes give some tensors a larger one):
    /// the file type's name without the mix's size suffix, e.g. Q4_K_M → Q4_K.
    fn base_type(self) -> GgmlType {
        let name = self.file_type_name();
        let base = ["_K_S", "_K_M", "_K_L"]
            .iter()
            .find_map(|mix| name.strip_suffix(mix).map(|stem| format!("{stem}_K")))
            .unwrap_or_else(|| name.to_owned());
        GgmlType::from_name(&base).expect("every base type is in the ggml table")
    }

    #[cfg(feature = "llama")]
    fn file_type(self) -> inferno_llama_quantize::FileType {
        use inferno_llama_quantize::FileType;
        match self {
            QuantType::F16 => FileType::F16,
            QuantType::Bf16 => FileType::Bf16,
            QuantType::Q8_0 => FileType::Q8_0,
            QuantType::Q4_0 => FileType::Q4_0,
            QuantType::Q4_1 => FileType::Q4_1,
            QuantType::Q5_0 => FileType::Q5_0,
            QuantType::Q5_1 => FileType::Q5_1,
            QuantType::Q2K => FileType::Q2K,
            QuantType::Q3KS => FileType::Q3KS,
            QuantType::Q3KM => FileType::Q3KM,
            QuantType::Q3KL => FileType::Q3KL,
            QuantType::Q4KS => FileType::Q4KS,
            QuantType::Q4KM => FileType::Q4KM,
            QuantType::Q5KS => FileType::Q5KS,
            QuantType::Q5KM => FileType::Q5KM,
            QuantType::Q6K => FileType::Q6K,
        }
    }
}

/// Quantizes `args.input` into `args.output` and prints both sizes and the ratio.
pub async fn run(args: QuantizeArgs) -> anyhow::Result<()> {
    let target = args.quant_type;
    let info = check_input(&args.input, target, args.allow_requantize)?;
    check_output(&args.input, &args.output, args.force)?;
    let partial = partial_path(&args.output);
    let estimate = estimate_output_bytes(&info, target);
    let threads = args
        .threads
        .or_else(|| std::thread::available_parallelism().ok())
        .map_or(1, NonZeroUsize::get);

    let bar = progress_bar(!args.quiet, estimate, target);
    let job = {
        let (input, partial) = (args.input.clone(), partial.clone());
        let allow_requantize = args.allow_requantize;
        std::thread::Builder::new()
            .name("quantize".into())
            .spawn(move || quantize_file(&input, &partial, target, threads, allow_requantize))
            .context("cannot start the quantize thread")?
    };
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let mut watch_signal = true;
    while !job.is_finished() {
        tokio::select! {
            signal = &mut interrupted, if watch_signal => {
                if signal.is_err() {
                    // No SIGINT handler: Ctrl-C then kills the process and leaves the partial.
                    watch_signal = false;
                    continue;
                }
                bar.abandon();
                let _ = std::fs::remove_file(&partial);
                eprintln!("interrupted; removed {}", partial.display());
                // llama.cpp cannot be cancelled; the process ends under it.
                std::process::exit(130);
            }
            () = tokio::time::sleep(Duration::from_millis(100)) => {
                if let Ok(meta) = std::fs::metadata(&partial) {
                    bar.set_length(bar.length().unwrap_or(0).max(meta.len()));
                    bar.set_position(meta.len());
                }
            }
        }
    }
    let result = match job.join() {
        Ok(result) => result,
        Err(_) => Err(anyhow::anyhow!("the quantize thread panicked")),
    }
    .and_then(|()| {
        // Read back the header before publishing the file: a short write shows as truncation.
        let written = GgufInfo::read(&partial)
            .with_context(|| format!("llama.cpp wrote an unreadable file {}", partial.display()))?;
        std::fs::rename(&partial, &args.output).with_context(|| {
            format!(
                "cannot move {} to {}",
                partial.display(),
                args.output.display()
            )
        })?;
        Ok(written)
    });
    let written = match result {
        Ok(written) => written,
        Err(err) => {
            bar.abandon();
            let _ = std::fs::remove_file(&partial);
            return Err(err);
        }
    };
    bar.set_length(written.file_size);
    bar.finish_with_message(format!("Quantized to {}", target.file_type_name()));
    let ratio = info.file_size as f64 / written.file_size.max(1) as f64;
    let ratio = if ratio >= 1.0 {
        format!("{ratio:.2}x smaller")
    } else {
        format!("{:.2}x larger", 1.0 / ratio)
    };
    println!(
        "{} ({}, {}) -> {} ({}, {}): {ratio}",
        args.input.display(),
        info.file_type.as_deref().unwrap_or("unknown type"),
        HumanBytes(info.file_size),
        args.output.display(),
        written.file_type.as_deref().unwrap_or("unknown type"),
        HumanBytes(written.file_size),
    );
    Ok(())
}

/// Reads the input header and refuses inputs the quantizer would refuse or waste time on.
fn check_input(
    input: &Path,
    target: QuantType,
    allow_requantize: bool,
) -> anyhow::Result<GgufInfo> {
    let info = GgufInfo::read(input).with_context(|| {
        format!(
            "cannot quantize {}: not a readable GGUF model",
            input.display()
        )
    })?;
    if info.file_type.as_deref() == Some(target.file_type_name()) {
        bail!(
            "{} is already {}; nothing to do",
            input.display(),
            target.file_type_name()
        );
    }
    let plain = ["F32", "F16", "BF16"].map(|name| GgmlType::from_name(name).expect("plain type"));
    if !allow_requantize
        && let Some(tensor) = info
            .tensors
            .iter()
            .find(|tensor| !plain.contains(&tensor.ggml_type))
    {
        bail!(
            "{} is already quantized (tensor '{}' is {}, file type {}): quantizing it again loses \
             more quality than quantizing the F16/F32 original; pass --allow-requantize to do it anyway",
            input.display(),
            tensor.name,
            tensor.ggml_type,
            info.file_type.as_deref().unwrap_or("unknown"),
        );
    }
    Ok(info)
}

/// Refuses an output that is the input, lies in a missing directory, or exists without `force`.
fn check_output(input: &Path, output: &Path, force: bool) -> anyhow::Result<()> {
    let input_real = std::fs::canonicalize(input)
        .with_context(|| format!("cannot resolve {}", input.display()))?;
    let parent = match output.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let parent_real = std::fs::canonicalize(parent)
        .with_context(|| format!("the output directory {} does not exist", parent.display()))?;
    let output_real = match std::fs::canonicalize(output) {
        Ok(real) => real,
        Err(_) => parent_real.join(output.file_name().unwrap_or_default()),
    };
    if output_real == input_real {
        bail!(
            "the output {} is the input; write to another file",
            output.display()
        );
    }
    if output.file_name().is_none() || output_real.is_dir() {
        bail!("the output {} is a directory, not a file", output.display());
    }
    if output.exists() && !force {
        bail!(
            "{} already exists; pass --force to overwrite it",
            output.display()
        );
    }
    Ok(())
}

/// `<output>.partial`, next to the output so that the final rename stays on one filesystem.
fn partial_path(output: &Path) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    output.with_file_name(name)
}

/// Runs llama.cpp's quantizer (blocking), after initialising its backend.
#[cfg(feature = "llama")]
fn quantize_file(
    input: &Path,
    output: &Path,
    target: QuantType,
    threads: usize,
    allow_requantize: bool,
) -> anyhow::Result<()> {
    crate::backend::llama_cpp::llama_backend()?;
    inferno_llama_quantize::quantize(input, output, target.file_type(), threads, allow_requantize)?;
    Ok(())
}

#[cfg(not(feature = "llama"))]
fn quantize_file(
    _input: &Path,
    _output: &Path,
    _target: QuantType,
    _threads: usize,
    _allow_requantize: bool,
) -> anyhow::Result<()> {
    bail!("quantizing needs llama.cpp: build with the `llama` feature")
}

/// About how large the output will be: the header as before, 2-D weights at the target's base
/// type (the output projection at Q6_K or Q8_0, as llama.cpp does), 1-D tensors unchanged.
/// Only a progress estimate: the K-quant mixes raise some tensors to larger types.
fn estimate_output_bytes(info: &GgufInfo, target: QuantType) -> u64 {
    let base = target.base_type();
    let q8_0 = GgmlType::from_name("Q8_0").expect("Q8_0");
    let q6_k = GgmlType::from_name("Q6_K").expect("Q6_K");
    let has_output = info.tensors.iter().any(|t| t.name == "output.weight");
    let data: u64 = info
        .tensors
        .iter()
        .map(|tensor| {
            let is_output = tensor.name == "output.weight"
                || (!has_output && tensor.name == "token_embd.weight");
            let ggml_type = if tensor.shape.len() < 2 || !tensor.name.ends_with("weight") {
                None
            } else if is_output && !matches!(target, QuantType::F16 | QuantType::Bf16) {
                Some(
                    if q6_k.tensor_bytes(&tensor.shape).is_some() && base != q8_0 {
                        q6_k
                    } else {
                        q8_0
                    },
                )
            } else {
                Some(base)
            };
            let bytes = ggml_type
                .and_then(|t| t.tensor_bytes(&tensor.shape))
                .or_else(|| ggml_type.and_then(|_| q8_0.tensor_bytes(&tensor.shape)))
                .unwrap_or(tensor.bytes);
            bytes.div_ceil(info.alignment) * info.alignment
        })
        .sum();
    info.data_offset + data
}

fn progress_bar(enabled: bool, estimate: u64, target: QuantType) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(estimate);
    let style = ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/~{total_bytes} {binary_bytes_per_sec} ETA {eta}",
    )
    .expect("the progress template is fixed and valid")
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(format!("Quantizing to {}", target.file_type_name()));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::gguf::{GgufWriter, file_type_name};

    fn tiny_model(dir: &Path) -> PathBuf {
        let path = dir.join("tiny.gguf");
        let mut writer = GgufWriter::new();
        writer
            .metadata("general.architecture", "llama")
            .unwrap()
            .metadata("general.file_type", 0u32)
            .unwrap()
            .tensor_f32("token_embd.weight", &[64, 32], &[0.5; 64 * 32])
            .unwrap()
            .tensor_f32("output_norm.weight", &[64], &[1.0; 64])
            .unwrap();
        writer.write(&path).unwrap();
        path
    }

    #[test]
    fn names_match_llama_cpp_file_types() {
        use clap::ValueEnum;
        for quant in QuantType::value_variants() {
            let name = quant.to_possible_value().unwrap().get_name().to_owned();
            assert_eq!(name.to_uppercase(), quant.file_type_name());
            #[cfg(feature = "llama")]
            assert_eq!(
                file_type_name(quant.file_type().ftype()),
                Some(quant.file_type_name())
            );
        }
        assert_eq!(file_type_name(7), Some(QuantType::Q8_0.file_type_name()));
    }

    #[test]
    fn estimate_follows_block_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let info = GgufInfo::read(&tiny_model(dir.path())).unwrap();
        // Tied embeddings act as the output: 64-wide rows do not split into Q6_K's 256-element
        // blocks, so Q8_0 (2 blocks of 34 bytes per row, 32 rows); the norm stays F32.
        let q4 = estimate_output_bytes(&info, QuantType::Q4_0);
        assert_eq!(q4, info.data_offset + (2 * 34 * 32) + 256);
        let f16 = estimate_output_bytes(&info, QuantType::F16);
        assert_eq!(f16, info.data_offset + 64 * 2 * 32 + 256);
    }

    #[test]
    fn inputs_and_outputs_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let model = tiny_model(dir.path());
        let info = check_input(&model, QuantType::F16, false).unwrap();
        assert_eq!(info.file_type.as_deref(), Some("F32"));
        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "hello, not a model").unwrap();
        let err = check_input(&text, QuantType::Q8_0, false).unwrap_err();
        assert!(format!("{err:#}").contains("not a GGUF file"), "{err:#}");

        let same = dir.path().join(".").join("tiny.gguf");
        let err = check_output(&model, &same, true).unwrap_err();
        assert!(err.to_string().contains("is the input"), "{err}");
        let err = check_output(&model, &text, false).unwrap_err();
        assert!(err.to_string().contains("--force"), "{err}");
        check_output(&model, &text, true).unwrap();
        check_output(&model, &dir.path().join("new.gguf"), false).unwrap();
        let err = check_output(&model, &dir.path().join("missing/new.gguf"), false).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
        assert_eq!(
            partial_path(Path::new("/m/out.gguf")),
            Path::new("/m/out.gguf.partial")
        );
    }
}
