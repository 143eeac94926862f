//! `POST /v1/completions` (raw text in, text out; no chat template).

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::response::Response;

use super::chat::tokenize;
use super::extract::Json;
use super::observe::ModelLabel;
use super::params::{delivery, generation_options, reject_unknown, response_id, served_model};
use super::respond::respond;
use super::stream::{ChunkFormat, finish_reason_name, usage_of};
use super::{ApiError, AppState, unix_now};
use crate::api::Usage;
use crate::api::completions::{CompletionRequest, Prompt, TextChoice, TextCompletion};
use crate::auth::Identity;
use crate::backend::{TokenId, Tokenizer};
use crate::engine::{Completion, FinishReason, GenerateRequest};

/// Answers a text completion, streamed or whole.
pub async fn completions(
    State(state): State<AppState>,
    Extension(label): Extension<ModelLabel>,
    Extension(identity): Extension<Arc<Identity>>,
    Json(request): Json<CompletionRequest>,
) -> Result<Response, ApiError> {
    check_unsupported(&request)?;
    let options = generation_options(&request.sampling, request.sampling.max_tokens)?;
    let model = served_model(&state, &identity, &label, &request.model).await?;
    if let Some(user) = &request.sampling.user {
        tracing::info!(user = %user, "text completion for end user");
    }
    let tokenizer = model.engine.tokenizer().clone();
    let tokens = match single_prompt(request.prompt)? {
        SinglePrompt::Text(text) => tokenize(tokenizer.clone(), text, true).await?,
        SinglePrompt::Tokens(ids) => checked_tokens(&ids, tokenizer.vocab_size())?,
    };
    let echo = if request.echo == Some(true) {
        Some(detokenize(tokenizer.as_ref(), &tokens))
    } else {
        None
    };
    let generate = GenerateRequest::new(tokens, options, &model.engine.limits())?;
    let format = TextChunks {
        id: response_id("cmpl"),
        created: unix_now(),
        model: model.id.clone(),
        echo,
    };
    respond(
        &state,
        model,
        identity,
        generate,
        delivery(&request.sampling),
        format,
    )
    .await
}

fn check_unsupported(request: &CompletionRequest) -> Result<(), ApiError> {
    reject_unknown(&request.extra)?;
    if request.logprobs.as_ref().is_some_and(|v| !v.is_null()) {
        return Err(ApiError::unsupported(
            "logprobs",
            "log probabilities are not supported yet",
        ));
    }
    if request.suffix.as_ref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::unsupported(
            "suffix",
            "insertion (suffix) is not supported",
        ));
    }
    if request.best_of.is_some_and(|n| n != 1) {
        return Err(ApiError::unsupported(
            "best_of",
            "only best_of = 1 is supported",
        ));
    }
    Ok(())
}

enum SinglePrompt {
    Text(String),
    Tokens(Vec<i64>),
}

/// One prompt per request for now; a list of several is rejected by name.
fn single_prompt(prompt: Prompt) -> Result<SinglePrompt, ApiError> {
    let several = || {
        ApiError::unsupported(
            "prompt",
            "a list of several prompts is not supported yet; send one per request",
        )
    };
    match prompt {
        Prompt::Text(text) => Ok(SinglePrompt::Text(text)),
        Prompt::Tokens(ids) => Ok(SinglePrompt::Tokens(ids)),
        Prompt::Texts(mut texts) if texts.len() == 1 => Ok(SinglePrompt::Text(texts.remove(0))),
        Prompt::TokenLists(mut lists) if lists.len() == 1 => {
            Ok(SinglePrompt::Tokens(lists.remove(0)))
        }
        Prompt::Texts(_) | Prompt::TokenLists(_) => Err(several()),
    }
}

fn checked_tokens(ids: &[i64], vocab_size: usize) -> Result<Vec<TokenId>, ApiError> {
    ids.iter()
        .map(|&id| {
            if id >= 0 && (id as u64) < vocab_size as u64 {
                Ok(id as TokenId)
            } else {
                Err(ApiError::bad_request(format!(
                    "token id {id} is not in the vocabulary (0..{vocab_size})"
                ))
                .with_param("prompt"))
            }
        })
        .collect()
}

fn detokenize(tokenizer: &dyn Tokenizer, tokens: &[TokenId]) -> String {
    let bytes: Vec<u8> = tokens.iter().flat_map(|&t| tokenizer.piece(t)).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Text completion chunks.
struct TextChunks {
    id: String,
    created: u64,
    model: String,
    echo: Option<String>,
}

impl TextChunks {
    fn chunk(
        &self,
        text: Option<String>,
        finish_reason: Option<FinishReason>,
        usage: Option<Usage>,
    ) -> TextCompletion {
        let choices = text.map(|text| TextChoice {
            index: 0,
            text,
            logprobs: None,
            finish_reason: finish_reason.map(|r| finish_reason_name(r).to_owned()),
        });
        TextCompletion {
            id: self.id.clone(),
            object: "text_completion".to_owned(),
            created: self.created,
            model: self.model.clone(),
            choices: choices.into_iter().collect(),
            usage,
        }
    }
}

impl ChunkFormat for TextChunks {
    type Chunk = TextCompletion;
    type Whole = TextCompletion;

    fn whole(&self, text: String, completion: &Completion) -> TextCompletion {
        let text = self.echo.clone().unwrap_or_default() + &text;
        let mut whole = self.chunk(
            Some(text),
            Some(completion.finish_reason),
            Some(usage_of(completion)),
        );
        whole.object = "text_completion".to_owned();
        whole
    }

    fn opening(&self) -> Option<TextCompletion> {
        self.echo
            .clone()
            .map(|prompt| self.chunk(Some(prompt), None, None))
    }

    fn text(&self, text: String) -> TextCompletion {
        self.chunk(Some(text), None, None)
    }

    fn finish(&self, reason: FinishReason) -> TextCompletion {
        self.chunk(Some(String::new()), Some(reason), None)
    }

    fn usage(&self, usage: Usage) -> TextCompletion {
        self.chunk(None, None, Some(usage))
    }
}
