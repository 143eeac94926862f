//! [`Loader`] for GGUF models through llama.cpp: memory footprint from the header, GPU
//! offload from the planner, and the engine thread.

use std::path::Path;

use super::chat_template::{ChatTemplate, SpecialTokens};
use super::gguf::GgufInfo;
use super::planner::{self, ModelShape};
use super::registry::{Loader, ServedModel};
use super::spec::{GpuLayers, ModelSpec};
use crate::backend::llama_cpp::{Placement, Threads, spawn_engine};
use crate::config::Config;
use crate::engine::EngineSettings;

/// Loads GGUF files with the server-wide settings of `config` and each model's own spec.
#[derive(Debug, Clone)]
pub struct LlamaLoader {
    threads: Threads,
    batch_tokens: usize,
    queue_capacity: usize,
    max_tokens: Option<u32>,
    max_prompt_tokens: Option<u32>,
    max_stop: usize,
}

impl LlamaLoader {
    /// A loader with `config`'s threads, batch and request limits.
    pub fn new(config: &Config) -> Self {
        LlamaLoader {
            threads: Threads {
                decode: config.threads,
                batch: config.threads_batch,
            },
            batch_tokens: config.batch_tokens,
            queue_capacity: config.queue_capacity,
            max_tokens: config.max_tokens_limit,
            max_prompt_tokens: config.max_prompt_tokens,
            max_stop: config.max_stop,
        }
    }

    fn settings(&self, spec: &ModelSpec) -> EngineSettings {
        EngineSettings {
            parallel: spec.parallel,
            batch_tokens: self.batch_tokens,
            ctx_size: spec.ctx_size,
            queue_capacity: self.queue_capacity,
            max_tokens: self.max_tokens,
            max_prompt_tokens: self.max_prompt_tokens,
            max_stop: self.max_stop,
        }
    }

    /// The planner's request for `spec` on a device with `free_bytes` free.
    fn plan_request(&self, spec: &ModelSpec, free_bytes: u64) -> planner::PlanRequest {
        planner::PlanRequest {
            ctx_per_seq: u64::from(spec.ctx_size),
            parallel: spec.parallel as u64,
            kv_type: spec.kv_type,
            n_batch: self.batch_tokens as u64,
            free_bytes,
            margin_bytes: None,
            compute_bytes: None,
        }
    }

    /// Layers to offload (llama.cpp's `n_gpu_layers`): the spec's number, or the planner's
    /// choice for the free memory of the GPU (none without a GPU backend).
    fn gpu_layers(&self, spec: &ModelSpec, info: &GgufInfo) -> Result<u32, String> {
        match spec.gpu_layers {
            GpuLayers::Count(n) => Ok(n),
            GpuLayers::Auto => match crate::backend::llama_cpp::gpu_free_memory() {
                Some(free) => {
                    let shape = ModelShape::from_gguf(info).map_err(|err| err.to_string())?;
                    let plan = planner::plan(&shape, &self.plan_request(spec, free));
                    tracing::info!(model = %spec.id, n_gpu_layers = plan.n_gpu_layers, plan = %plan, "GPU offload plan");
                    Ok(plan.n_gpu_layers)
                }
                None => Ok(0),
            },
        }
    }
}

impl Loader for LlamaLoader {
    fn footprint(&self, spec: &ModelSpec, path: &Path) -> Result<u64, String> {
        let info = GgufInfo::read(path).map_err(|err| err.to_string())?;
        let shape = ModelShape::from_gguf(&info).map_err(|err| err.to_string())?;
        Ok(planner::cpu_footprint(
            &shape,
            u64::from(spec.ctx_size),
            spec.parallel as u64,
            spec.kv_type,
            self.batch_tokens as u64,
        ))
    }

    fn load(&self, spec: &ModelSpec, path: &Path) -> Result<ServedModel, String> {
        let info = GgufInfo::read(path).map_err(|err| err.to_string())?;
        let placement = Placement {
            gpu_layers: self.gpu_layers(spec, &info)?,
            kv_type: spec.kv_type,
        };
        let started = std::time::Instant::now();
        let engine = spawn_engine(&spec.id, path, self.settings(spec), self.threads, placement)
            .and_then(|engine| engine.warm_up().map(|()| engine));
        crate::metrics::record_model_load(
            &spec.id,
            started.elapsed().as_secs_f64(),
            engine.is_ok(),
        );
        let engine = engine.map_err(|err| err.to_string())?;
        let model = engine.info();
        if spec.ctx_size > model.n_ctx_train {
            tracing::warn!(
                model = %spec.id,
                ctx_size = spec.ctx_size,
                n_ctx_train = model.n_ctx_train,
                "ctx-size exceeds the model's training context; quality may degrade past it"
            );
        }
        let special = SpecialTokens {
            bos: model.bos_text.clone(),
            eos: model.eos_text.clone(),
        };
        let template = match model.chat_template.as_deref() {
            Some(source) => ChatTemplate::new(source, special).unwrap_or_else(|err| {
                tracing::warn!(model = %spec.id, error = %err, "the model's chat template does not compile; using ChatML");
                ChatTemplate::chatml()
            }),
            None => {
                tracing::info!(model = %spec.id, "the model has no chat template; using ChatML");
                ChatTemplate::chatml()
            }
        };
        Ok(ServedModel {
            id: spec.id.clone(),
            engine,
            template,
            created: crate::http::unix_now(),
        })
    }
}
