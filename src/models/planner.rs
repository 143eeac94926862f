//! GPU offload planning: how many of a model's layers fit in a device's free memory, with
//! their KV cache, a compute buffer and a safety margin; and the memory a model needs at all,
//! for admission before loading.
//!
//! The model follows llama.cpp: the last `n` repeating layers go to the GPU, each with its
//! own share of the KV cache; the input embedding stays on the CPU; the output layer goes to
//! the GPU only once every repeating layer is there (`n_gpu_layers = n_layer + 1`).

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use super::gguf::GgufInfo;
use super::spec::human_bytes as human;

const MIB: u64 = 1 << 20;

/// Smallest safety margin kept free on a device.
const MARGIN_MIN: u64 = 256 * MIB;

/// Live f32 activations per token, in units of the embedding width: residual stream, norms,
/// Q/K/V, attention output and the (usually ~3x wider) FFN gate/up/activation, which the
/// graph allocator reuses layer to layer. Checked against llama.cpp's reported CUDA compute
/// buffer for a 7B llama (n_embd 4096, vocab 32000, n_ubatch 512, flash attention):
/// 512 x 4096 x 4 x 12 + 512 x 32000 x 4 = 166 MB, reported 164 MiB.
const ACTIVATION_WIDTHS: u64 = 12;

/// Why a model's shape could not be taken from its GGUF metadata.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A value the plan needs is missing from the metadata.
    #[error("the model's metadata lacks {0}, needed to size its memory")]
    MissingMetadata(&'static str),
}

/// Why a KV cache type name was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown KV cache type '{0}' (expected f16, q8_0 or q4_0)")]
pub struct KvTypeError(String);

/// The element type of the KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KvType {
    /// 16-bit floats: 2 bytes per element.
    #[default]
    F16,
    /// 8-bit blocks of 32 with an f16 scale: 34 bytes per 32 elements.
    Q8_0,
    /// 4-bit blocks of 32 with an f16 scale: 18 bytes per 32 elements.
    Q4_0,
}

impl KvType {
    /// Bytes per element as a fraction (numerator, denominator).
    pub fn bytes_per_element(self) -> (u64, u64) {
        match self {
            KvType::F16 => (2, 1),
            KvType::Q8_0 => (34, 32),
            KvType::Q4_0 => (18, 32),
        }
    }

    /// Bytes of `elements` elements, rounded up.
    pub fn bytes(self, elements: u64) -> u64 {
        let (num, den) = self.bytes_per_element();
        let bytes = (u128::from(elements) * u128::from(num)).div_ceil(u128::from(den));
        u64::try_from(bytes).unwrap_or(u64::MAX)
    }
}

impl fmt::Display for KvType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KvType::F16 => "f16",
            KvType::Q8_0 => "q8_0",
            KvType::Q4_0 => "q4_0",
        })
    }
}

impl FromStr for KvType {
    type Err = KvTypeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "f16" => Ok(KvType::F16),
            "q8_0" => Ok(KvType::Q8_0),
            "q4_0" => Ok(KvType::Q4_0),
            _ => Err(KvTypeError(s.to_owned())),
        }
    }
}

/// What the planner needs to know of a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelShape {
    /// Weight bytes of each repeating layer.
    pub layer_bytes: Vec<u64>,
    /// Weight bytes of the input embedding (always on the CPU).
    pub input_bytes: u64,
    /// Weight bytes of the output part (output norm and projection, and the rest).
    pub output_bytes: u64,
    /// Whether the output projection is the input embedding; llama.cpp then copies that
    /// embedding to the output's device, so an offloaded output costs `input_bytes` more.
    pub tied_embeddings: bool,
    /// KV heads of each layer (same length as `layer_bytes`; 0 for layers without attention).
    pub head_count_kv: Vec<u64>,
    /// Width of one K head.
    pub head_dim_k: u64,
    /// Width of one V head.
    pub head_dim_v: u64,
    /// Embedding width, for the compute buffer estimate.
    pub embedding_length: u64,
    /// Vocabulary size, for the logits buffer.
    pub vocab_size: u64,
}

impl ModelShape {
    /// The shape of the model `info` describes. Sliding-window layers are sized as full ones,
    /// which overestimates their KV cache (the safe direction).
    pub fn from_gguf(info: &GgufInfo) -> Result<ModelShape, PlanError> {
        let layers = info
            .block_count
            .ok_or(PlanError::MissingMetadata("{arch}.block_count"))?;
        let layers = usize::try_from(layers)
            .ok()
            .filter(|&n| n <= info.layer_bytes.len().max(info.tensors.len()))
            .ok_or(PlanError::MissingMetadata(
                "a block_count matching its tensors",
            ))?;
        let mut layer_bytes = info.layer_bytes.clone();
        if layer_bytes.len() < layers {
            layer_bytes.resize(layers, 0);
        }
        let kv_heads = info
            .head_count_kv
            .ok_or(PlanError::MissingMetadata("{arch}.attention.head_count_kv"))?;
        let mut head_count_kv = info.head_count_kv_per_layer.clone();
        head_count_kv.resize(layer_bytes.len(), kv_heads);
        Ok(ModelShape {
            layer_bytes,
            input_bytes: info.input_bytes,
            output_bytes: info.output_bytes,
            tied_embeddings: info.tied_embeddings,
            head_count_kv,
            head_dim_k: info
                .head_dim_k
                .ok_or(PlanError::MissingMetadata("{arch}.attention.key_length"))?,
            head_dim_v: info
                .head_dim_v
                .ok_or(PlanError::MissingMetadata("{arch}.attention.value_length"))?,
            embedding_length: info
                .embedding_length
                .ok_or(PlanError::MissingMetadata("{arch}.embedding_length"))?,
            vocab_size: info
                .vocab_size
                .ok_or(PlanError::MissingMetadata("the vocabulary size"))?,
        })
    }

    /// Bytes of all weights.
    pub fn weight_bytes(&self) -> u64 {
        self.layer_bytes.iter().sum::<u64>() + self.input_bytes + self.output_bytes
    }

    /// Bytes the output part takes when offloaded (with its copy of a tied embedding).
    fn output_gpu_bytes(&self) -> u64 {
        self.output_bytes
            + if self.tied_embeddings {
                self.input_bytes
            } else {
                0
            }
    }

    /// KV bytes of `layer` for `tokens` cached tokens.
    fn layer_kv_bytes(&self, layer: usize, tokens: u64, kv_type: KvType) -> u64 {
        let heads = self.head_count_kv.get(layer).copied().unwrap_or(0);
        let elements =
            u128::from(heads) * u128::from(self.head_dim_k + self.head_dim_v) * u128::from(tokens);
        kv_type.bytes(u64::try_from(elements).unwrap_or(u64::MAX))
    }
}

/// KV cache bytes for `parallel` sequences of `ctx_per_seq` tokens: per layer, KV heads x
/// (K width + V width) x bytes per element, times every cached token.
pub fn kv_bytes(shape: &ModelShape, ctx_per_seq: u64, parallel: u64, kv_type: KvType) -> u64 {
    let tokens = ctx_per_seq.saturating_mul(parallel);
    (0..shape.layer_bytes.len())
        .map(|layer| shape.layer_kv_bytes(layer, tokens, kv_type))
        .fold(0, u64::saturating_add)
}

/// Estimated compute buffer for batches of `n_batch` tokens: f32 activations
/// (`n_batch x embedding x 4 x 12`, see `ACTIVATION_WIDTHS`) plus the logits
/// (`n_batch x vocab x 4`). Assumes flash attention (llama.cpp's default where supported);
/// without it the attention scores (`n_batch x n_ctx x n_head x 4`) come on top.
pub fn compute_buffer_bytes(shape: &ModelShape, n_batch: u64) -> u64 {
    let activations = n_batch
        .saturating_mul(shape.embedding_length)
        .saturating_mul(4 * ACTIVATION_WIDTHS);
    let logits = n_batch.saturating_mul(shape.vocab_size).saturating_mul(4);
    activations.saturating_add(logits)
}

/// The default safety margin on a device with `free_bytes` free: 5% of it, at least 256 MiB.
pub fn default_margin(free_bytes: u64) -> u64 {
    (free_bytes / 20).max(MARGIN_MIN)
}

/// Memory a model takes when run on the CPU: all weights, the KV cache and a compute buffer.
/// For admission control before loading.
pub fn cpu_footprint(
    shape: &ModelShape,
    ctx_per_seq: u64,
    parallel: u64,
    kv_type: KvType,
    n_batch: u64,
) -> u64 {
    shape
        .weight_bytes()
        .saturating_add(kv_bytes(shape, ctx_per_seq, parallel, kv_type))
        .saturating_add(compute_buffer_bytes(shape, n_batch))
}

/// The serving settings and device that a plan is made for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanRequest {
    /// Context tokens per sequence.
    pub ctx_per_seq: u64,
    /// Sequences decoded in parallel.
    pub parallel: u64,
    /// KV cache element type.
    pub kv_type: KvType,
    /// Tokens per batch (sizes the compute buffer).
    pub n_batch: u64,
    /// The device's free memory.
    pub free_bytes: u64,
    /// Memory to leave free; `None` means [`default_margin`].
    pub margin_bytes: Option<u64>,
    /// Compute buffer to reserve; `None` means [`compute_buffer_bytes`].
    pub compute_bytes: Option<u64>,
}

/// Where a model's layers go, and the arithmetic behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OffloadPlan {
    /// Repeating layers on the GPU (the last ones).
    pub gpu_layers: u32,
    /// Repeating layers in the model.
    pub total_layers: u32,
    /// Whether the output layer is on the GPU too.
    pub output_on_gpu: bool,
    /// The value for llama.cpp's `n_gpu_layers` (`gpu_layers`, plus one for the output).
    pub n_gpu_layers: u32,
    /// KV cache element type.
    pub kv_type: KvType,
    /// Cached tokens over all sequences.
    pub kv_tokens: u64,
    /// The device's free memory.
    pub free_bytes: u64,
    /// Memory left free for safety.
    pub margin_bytes: u64,
    /// Compute buffer reserved on the GPU.
    pub compute_bytes: u64,
    /// What remained for weights and KV cache: free - margin - compute.
    pub available_bytes: u64,
    /// The whole KV cache.
    pub kv_bytes: u64,
    /// The KV cache of the offloaded layers.
    pub kv_gpu_bytes: u64,
    /// Weights on the GPU.
    pub weights_gpu_bytes: u64,
    /// Weights on the CPU.
    pub weights_cpu_bytes: u64,
    /// Everything on the GPU: weights, KV, compute buffer (0 when nothing is offloaded).
    pub gpu_bytes: u64,
    /// Everything on the CPU: weights and KV (compute buffer not counted).
    pub cpu_bytes: u64,
}

/// Decides how many layers of `shape` go to the GPU for `request`: the last layers, one by
/// one, while their weights and KV share fit; then the output layer if everything else did.
pub fn plan(shape: &ModelShape, request: &PlanRequest) -> OffloadPlan {
    let margin = request
        .margin_bytes
        .unwrap_or_else(|| default_margin(request.free_bytes));
    let compute = request
        .compute_bytes
        .unwrap_or_else(|| compute_buffer_bytes(shape, request.n_batch));
    let available = request
        .free_bytes
        .saturating_sub(margin)
        .saturating_sub(compute);
    let tokens = request.ctx_per_seq.saturating_mul(request.parallel);
    let total_layers = shape.layer_bytes.len();
    let (mut weights_gpu, mut kv_gpu, mut gpu_layers) = (0u64, 0u64, 0usize);
    for layer in (0..total_layers).rev() {
        let weights = shape.layer_bytes[layer];
        let kv = shape.layer_kv_bytes(layer, tokens, request.kv_type);
        let used = weights_gpu + kv_gpu;
        if used.saturating_add(weights).saturating_add(kv) > available {
            break;
        }
        weights_gpu += weights;
        kv_gpu += kv;
        gpu_layers += 1;
    }
    let output_on_gpu = gpu_layers == total_layers
        && (weights_gpu + kv_gpu).saturating_add(shape.output_gpu_bytes()) <= available;
    if output_on_gpu {
        weights_gpu += shape.output_gpu_bytes();
    }
    let kv_total = kv_bytes(
        shape,
        request.ctx_per_seq,
        request.parallel,
        request.kv_type,
    );
    let layer_cpu: u64 = shape.layer_bytes[..total_layers - gpu_layers].iter().sum();
    let weights_cpu =
        shape.input_bytes + layer_cpu + if output_on_gpu { 0 } else { shape.output_bytes };
    let offloaded = gpu_layers > 0;
    let gpu_layers = u32::try_from(gpu_layers).unwrap_or(u32::MAX);
    OffloadPlan {
        gpu_layers,
        total_layers: u32::try_from(total_layers).unwrap_or(u32::MAX),
        output_on_gpu,
        n_gpu_layers: gpu_layers + u32::from(output_on_gpu),
        kv_type: request.kv_type,
        kv_tokens: tokens,
        free_bytes: request.free_bytes,
        margin_bytes: margin,
        compute_bytes: compute,
        available_bytes: available,
        kv_bytes: kv_total,
        kv_gpu_bytes: kv_gpu,
        weights_gpu_bytes: weights_gpu,
        weights_cpu_bytes: weights_cpu,
        gpu_bytes: if offloaded {
            weights_gpu + kv_gpu + compute
        } else {
            0
        },
        cpu_bytes: weights_cpu + kv_total.saturating_sub(kv_gpu),
    }
}

impl OffloadPlan {
    /// A human explanation of the plan, one statement per line.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = vec![
            format!(
                "device: {} free, minus {} safety margin and {} compute buffer = {} for weights and KV cache",
                human(self.free_bytes),
                human(self.margin_bytes),
                human(self.compute_bytes),
                human(self.available_bytes),
            ),
            format!(
                "KV cache ({}, {} tokens): {} in all, {} of it on the GPU",
                self.kv_type,
                self.kv_tokens,
                human(self.kv_bytes),
                human(self.kv_gpu_bytes),
            ),
            format!(
                "layers: {} of {} on the GPU (the last {}), each with its weights and KV share",
                self.gpu_layers, self.total_layers, self.gpu_layers,
            ),
        ];
        lines.push(if self.output_on_gpu {
            "output layer: on the GPU".to_owned()
        } else if self.gpu_layers < self.total_layers {
            "output layer: on the CPU (it goes to the GPU only after every layer)".to_owned()
        } else {
            "output layer: on the CPU (it does not fit after the layers)".to_owned()
        });
        lines.push(format!(
            "GPU: {} ({} weights, {} KV, {} compute); CPU: {} ({} weights, {} KV)",
            human(self.gpu_bytes),
            human(self.weights_gpu_bytes),
            human(self.kv_gpu_bytes),
            human(if self.gpu_bytes > 0 {
                self.compute_bytes
            } else {
                0
            }),
            human(self.cpu_bytes),
            human(self.weights_cpu_bytes),
            human(self.kv_bytes.saturating_sub(self.kv_gpu_bytes)),
        ));
        lines.push(format!("llama.cpp n_gpu_layers = {}", self.n_gpu_layers));
        lines
    }
}

impl fmt::Display for OffloadPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.lines().join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::super::gguf::GgufWriter;
    use super::*;

    /// The design's example: 32 layers of 300 MB, and a 2 GB KV cache (62.5 MB per layer:
    /// 4 KV heads x (125 + 125) x 2 bytes x 31 250 tokens).
    fn design_model() -> ModelShape {
        ModelShape {
            layer_bytes: vec![300_000_000; 32],
            input_bytes: 250_000_000,
            output_bytes: 260_000_000,
            tied_embeddings: false,
            head_count_kv: vec![4; 32],
            head_dim_k: 125,
            head_dim_v: 125,
            embedding_length: 4096,
            vocab_size: 32000,
        }
    }

    fn request(free_bytes: u64) -> PlanRequest {
        PlanRequest {
            ctx_per_seq: 15_625,
            parallel: 2,
            kv_type: KvType::F16,
            n_batch: 512,
            free_bytes,
            margin_bytes: None,
            compute_bytes: Some(0),
        }
    }

    #[test]
    fn design_example_puts_20_of_32_layers_on_the_gpu() {
        let shape = design_model();
        assert_eq!(kv_bytes(&shape, 15_625, 2, KvType::F16), 2_000_000_000);
        // 8 GB free - 400 MB margin (5%) = 7.6 GB; each layer costs 300 + 62.5 MB;
        // 20 layers = 7.25 GB fit, 21 = 7.6125 GB do not.
        let plan = plan(&shape, &request(8_000_000_000));
        assert_eq!(plan.margin_bytes, 400_000_000);
        assert_eq!(plan.available_bytes, 7_600_000_000);
        assert_eq!((plan.gpu_layers, plan.total_layers), (20, 32));
        assert!(!plan.output_on_gpu);
        assert_eq!(plan.n_gpu_layers, 20);
        assert_eq!(plan.weights_gpu_bytes, 6_000_000_000);
        assert_eq!(plan.kv_gpu_bytes, 1_250_000_000);
        assert_eq!(plan.gpu_bytes, 7_250_000_000);
        assert_eq!(
            plan.weights_cpu_bytes,
            250_000_000 + 12 * 300_000_000 + 260_000_000
        );
        assert_eq!(plan.cpu_bytes, plan.weights_cpu_bytes + 750_000_000);
        // A 300 MB compute buffer still leaves room for exactly 20 (7.3 GB available).
        let with_compute = PlanRequest {
            compute_bytes: Some(300_000_000),
            ..request(8_000_000_000)
        };
        let plan = super::plan(&shape, &with_compute);
        assert_eq!(plan.gpu_layers, 20);
        assert_eq!(plan.gpu_bytes, 7_550_000_000);
        let text = plan.to_string();
        assert!(text.contains("layers: 20 of 32 on the GPU"), "{text}");
        assert!(text.contains("n_gpu_layers = 20"), "{text}");
    }

    #[test]
    fn everything_fits_including_the_output() {
        let plan = plan(&design_model(), &request(100_000_000_000));
        assert_eq!((plan.gpu_layers, plan.n_gpu_layers), (32, 33));
        assert!(plan.output_on_gpu);
        assert_eq!(plan.weights_gpu_bytes, 32 * 300_000_000 + 260_000_000);
        assert_eq!(plan.weights_cpu_bytes, 250_000_000);
        assert_eq!(plan.kv_gpu_bytes, plan.kv_bytes);
        assert_eq!(plan.cpu_bytes, 250_000_000);
    }

    #[test]
    fn tied_output_costs_the_embedding_copy() {
        let mut shape = design_model();
        shape.tied_embeddings = true;
        // Layers and KV: 11.6 GB; output 260 MB + its 250 MB embedding copy.
        let all_layers = 32 * 362_500_000;
        let just_short = PlanRequest {
            margin_bytes: Some(0),
            ..request(all_layers + 509_999_999)
        };
        let plan = plan(&shape, &just_short);
        assert_eq!((plan.gpu_layers, plan.output_on_gpu), (32, false));
        assert!(plan.to_string().contains("does not fit after the layers"));
        let enough = PlanRequest {
            free_bytes: all_layers + 510_000_000,
            ..just_short
        };
        let plan = super::plan(&shape, &enough);
        assert_eq!((plan.n_gpu_layers, plan.output_on_gpu), (33, true));
    }

    #[test]
    fn nothing_fits() {
        for free in [0, 100_000_000, 500_000_000] {
            let plan = plan(&design_model(), &request(free));
            assert_eq!(
                (plan.gpu_layers, plan.n_gpu_layers, plan.gpu_bytes),
                (0, 0, 0),
                "{free}"
            );
            assert_eq!(
                plan.cpu_bytes,
                design_model().weight_bytes() + 2_000_000_000
            );
        }
    }

    #[test]
    fn the_last_layers_are_offloaded_first() {
        let mut shape = design_model();
        shape.layer_bytes = vec![100, 100, 100, 1000];
        shape.head_count_kv = vec![0; 4];
        let fits = |free| {
            let request = PlanRequest {
                margin_bytes: Some(0),
                ..request(free)
            };
            plan(&shape, &request).gpu_layers
        };
        assert_eq!(fits(999), 0, "the last layer is the big one");
        assert_eq!(fits(1000), 1);
        assert_eq!(fits(1300), 4);
    }

    #[test]
    fn quantized_kv_shrinks_by_block_ratio() {
        let shape = design_model();
        let f16 = kv_bytes(&shape, 4096, 4, KvType::F16);
        let q8 = kv_bytes(&shape, 4096, 4, KvType::Q8_0);
        let q4 = kv_bytes(&shape, 4096, 4, KvType::Q4_0);
        assert_eq!(q8 * 64, f16 * 34);
        assert_eq!(q4 * 64, f16 * 18);
        // The smaller cache lets more layers fit: 62.5 MB -> 33.2 MB per layer.
        let request = PlanRequest {
            kv_type: KvType::Q8_0,
            ..request(8_000_000_000)
        };
        assert_eq!(plan(&shape, &request).gpu_layers, 22);
    }

    #[test]
    fn kv_types_parse_and_print() {
        for kv in [KvType::F16, KvType::Q8_0, KvType::Q4_0] {
            assert_eq!(kv.to_string().parse::<KvType>(), Ok(kv));
        }
        assert_eq!("Q8_0".parse::<KvType>(), Ok(KvType::Q8_0));
        let err = "q5_1".parse::<KvType>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown KV cache type 'q5_1' (expected f16, q8_0 or q4_0)"
        );
        assert_eq!(KvType::Q4_0.bytes(33), 19, "rounded up");
    }

    #[test]
    fn margin_and_compute_defaults() {
        assert_eq!(default_margin(1 << 30), 256 * MIB);
        assert_eq!(default_margin(100 << 30), 5 << 30);
        let shape = design_model();
        assert_eq!(
            compute_buffer_bytes(&shape, 512),
            512 * 4096 * 4 * 12 + 512 * 32000 * 4
        );
        let auto = PlanRequest {
            margin_bytes: None,
            compute_bytes: None,
            ..request(8_000_000_000)
        };
        let plan = plan(&shape, &auto);
        assert_eq!(plan.compute_bytes, compute_buffer_bytes(&shape, 512));
        assert_eq!(
            plan.available_bytes,
            8_000_000_000 - 400_000_000 - plan.compute_bytes
        );
    }

    #[test]
    fn shape_and_footprint_from_a_gguf_file() {
        let mut w = GgufWriter::new();
        w.metadata("general.architecture", "llama").unwrap();
        w.metadata("llama.block_count", 2u32).unwrap();
        w.metadata("llama.embedding_length", 8u32).unwrap();
        w.metadata("llama.attention.head_count", 2u32).unwrap();
        w.metadata("llama.attention.head_count_kv", 1u32).unwrap();
        w.metadata("llama.vocab_size", 16u32).unwrap();
        w.tensor_f32("token_embd.weight", &[8, 16], &[0.0; 128])
            .unwrap();
        for layer in 0..2 {
            w.tensor_f32(format!("blk.{layer}.ffn.weight"), &[8, 8], &[0.0; 64])
                .unwrap();
        }
        w.tensor_f32("output_norm.weight", &[8], &[0.0; 8]).unwrap();
        let bytes = w.to_bytes();
        let info = GgufInfo::from_reader(
            std::io::Cursor::new(&bytes),
            bytes.len() as u64,
            std::path::Path::new("tiny.gguf"),
        )
        .unwrap();
        let shape = ModelShape::from_gguf(&info).unwrap();
        assert_eq!(shape.layer_bytes, vec![256, 256]);
        assert_eq!((shape.input_bytes, shape.output_bytes), (512, 32));
        assert!(shape.tied_embeddings);
        assert_eq!((shape.head_dim_k, shape.head_dim_v), (4, 4));
        // Per token and layer: 1 head x (4 + 4) x 2 bytes = 16; 2 layers x 100 tokens x 3 seqs.
        assert_eq!(kv_bytes(&shape, 100, 3, KvType::F16), 16 * 2 * 300);
        assert_eq!(
            cpu_footprint(&shape, 100, 3, KvType::F16, 4),
            info.tensor_bytes + 9600 + 4 * 8 * 48 + 4 * 16 * 4
        );

        let mut bare = GgufWriter::new();
        bare.metadata("general.architecture", "llama").unwrap();
        let bytes = bare.to_bytes();
        let info = GgufInfo::from_reader(
            std::io::Cursor::new(&bytes),
            bytes.len() as u64,
            std::path::Path::new("bare.gguf"),
        )
        .unwrap();
        assert_eq!(
            ModelShape::from_gguf(&info),
            Err(PlanError::MissingMetadata("{arch}.block_count"))
        );
    }
}
