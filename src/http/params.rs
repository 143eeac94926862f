//! Request fields shared by chat and text completions, checked and turned into engine options.

use super::observe::ModelLabel;
use super::respond::Delivery;
use super::{ApiError, AppState};
use crate::api::{ExtraFields, SamplingFields};
use crate::auth::Identity;
use crate::engine::GenerationOptions;
use crate::models::registry::Lease;

/// The model `name` for one request, loaded if needed, if `identity` may use it (403
/// otherwise, checked before any load); labels the request.
pub(crate) async fn served_model(
    state: &AppState,
    identity: &Identity,
    label: &ModelLabel,
    name: &str,
) -> Result<Lease, ApiError> {
    let spec = state.registry().spec(name)?;
    label.set(&spec.id);
    if !identity.may_use(&spec.id) && !identity.may_use(name) {
        return Err(ApiError::model_not_allowed(&spec.id));
    }
    Ok(state.registry().acquire(name).await?)
}

/// Whole body or server-sent events, from `stream` and `stream_options`.
pub(crate) fn delivery(sampling: &SamplingFields) -> Delivery {
    if sampling.stream == Some(true) {
        Delivery::Stream {
            include_usage: sampling
                .stream_options
                .as_ref()
                .is_some_and(|o| o.include_usage),
        }
    } else {
        Delivery::Whole
    }
}

/// Rejects the first field the endpoint does not know, by name.
pub(crate) fn reject_unknown(extra: &ExtraFields) -> Result<(), ApiError> {
    match extra.keys().next() {
        Some(name) => Err(ApiError::unrecognized(name)),
        None => Ok(()),
    }
}

/// Checks the shared fields that are accepted but limited, and builds engine options.
///
/// `max_tokens` is the effective limit (chat may take it from `max_completion_tokens`).
pub(crate) fn generation_options(
    sampling: &SamplingFields,
    max_tokens: Option<u32>,
) -> Result<GenerationOptions, ApiError> {
    if sampling.n.is_some_and(|n| n != 1) {
        return Err(ApiError::unsupported("n", "only n = 1 is supported yet"));
    }
    if sampling.stream_options.is_some() && sampling.stream != Some(true) {
        return Err(
            ApiError::bad_request("stream_options is only allowed when stream is true")
                .with_param("stream_options"),
        );
    }
    let mut logit_bias = Vec::new();
    for (token, &bias) in sampling.logit_bias.iter().flatten() {
        let id = token.trim().parse::<i64>().map_err(|_| {
            ApiError::bad_request(format!("logit_bias keys must be token ids, got {token:?}"))
                .with_param("logit_bias")
        })?;
        logit_bias.push((id, bias));
    }
    Ok(GenerationOptions {
        max_tokens,
        min_tokens: sampling.min_tokens,
        temperature: sampling.temperature,
        top_p: sampling.top_p,
        top_k: sampling.top_k,
        min_p: sampling.min_p,
        seed: sampling.seed,
        presence_penalty: sampling.presence_penalty,
        frequency_penalty: sampling.frequency_penalty,
        repetition_penalty: sampling.repetition_penalty,
        logit_bias,
        stop: sampling
            .stop
            .clone()
            .map(crate::api::Stop::into_vec)
            .unwrap_or_default(),
        ignore_eos: sampling.ignore_eos.unwrap_or(false),
    })
}

/// A fresh response id like `chatcmpl-<uuid>`.
pub(crate) fn response_id(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}
