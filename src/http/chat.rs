//! `POST /v1/chat/completions`.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::response::Response;
use serde_json::Value;

use super::extract::Json;
use super::observe::ModelLabel;
use super::params::{delivery, generation_options, reject_unknown, response_id, served_model};
use super::respond::respond;
use super::stream::{ChunkFormat, finish_reason_name, usage_of};
use super::{ApiError, AppState, unix_now};
use crate::api::Usage;
use crate::api::chat::{
    AssistantMessage, ChatChoice, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest,
    ChatMessage, ChunkChoice, Delta, MessageContent,
};
use crate::auth::Identity;
use crate::backend::{SharedTokenizer, TokenId};
use crate::engine::{Completion, FinishReason, GenerateRequest};
use crate::models::chat_template::TemplateMessage;

/// Answers a chat completion, streamed or whole.
pub async fn chat_completions(
    State(state): State<AppState>,
    Extension(label): Extension<ModelLabel>,
    Extension(identity): Extension<Arc<Identity>>,
    Json(request): Json<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    check_unsupported(&request)?;
    if request.messages.len() > state.settings().max_messages {
        return Err(ApiError::bad_request(format!(
            "At most {} messages are allowed per request",
            state.settings().max_messages
        ))
        .with_param("messages"));
    }
    let max_tokens = request
        .max_completion_tokens
        .or(request.sampling.max_tokens);
    let options = generation_options(&request.sampling, max_tokens)?;
    let messages = template_messages(&request.messages)?;
    let model = served_model(&state, &identity, &label, &request.model).await?;
    if let Some(user) = &request.sampling.user {
        tracing::info!(user = %user, "chat completion for end user");
    }
    let prompt = model.template.render(&messages, true)?;
    let add_bos = !starts_with_bos(&prompt, &model.engine.info().bos_text);
    let tokens = tokenize(model.engine.tokenizer().clone(), prompt, add_bos).await?;
    let generate = GenerateRequest::new(tokens, options, &model.engine.limits())?;
    let format = ChatChunks {
        id: response_id("chatcmpl"),
        created: unix_now(),
        model: model.id.clone(),
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

/// Parameters the API has but Inferno does not support yet: rejected by name, never ignored.
fn check_unsupported(request: &ChatCompletionRequest) -> Result<(), ApiError> {
    reject_unknown(&request.extra)?;
    if request.logprobs == Some(true) {
        return Err(ApiError::unsupported(
            "logprobs",
            "log probabilities are not supported yet",
        ));
    }
    if request.top_logprobs.is_some() {
        return Err(ApiError::unsupported(
            "top_logprobs",
            "log probabilities are not supported yet",
        ));
    }
    if request
        .tools
        .as_ref()
        .is_some_and(|t| !t.is_null() && t.as_array().is_none_or(|a| !a.is_empty()))
    {
        return Err(ApiError::unsupported(
            "tools",
            "tool calling is not supported yet",
        ));
    }
    if request
        .tool_choice
        .as_ref()
        .is_some_and(|c| !c.is_null() && c != "none")
    {
        return Err(ApiError::unsupported(
            "tool_choice",
            "tool calling is not supported yet",
        ));
    }
    if let Some(format) = &request.response_format
        && format.get("type").and_then(Value::as_str) != Some("text")
    {
        return Err(ApiError::unsupported(
            "response_format",
            "only {\"type\": \"text\"} is supported yet",
        ));
    }
    if request.max_completion_tokens.is_some() && request.sampling.max_tokens.is_some() {
        return Err(ApiError::bad_request(
            "Give either max_tokens or max_completion_tokens, not both",
        )
        .with_param("max_completion_tokens"));
    }
    Ok(())
}

/// Turns wire messages into template input: roles checked, text parts joined.
fn template_messages(messages: &[ChatMessage]) -> Result<Vec<TemplateMessage>, ApiError> {
    if messages.is_empty() {
        return Err(
            ApiError::bad_request("messages must contain at least one message")
                .with_param("messages"),
        );
    }
    messages
        .iter()
        .enumerate()
        .map(|(i, message)| {
            let param = |field: &str| format!("messages[{i}].{field}");
            if let Some(name) = message.extra.keys().next() {
                return Err(ApiError::unsupported(&param(name), "this message field is not supported yet"));
            }
            let role = match message.role.as_str() {
                "system" | "developer" => "system",
                "user" => "user",
                "assistant" => "assistant",
                "tool" => return Err(ApiError::unsupported(&param("role"), "tool messages are not supported yet")),
                other => {
                    return Err(ApiError::bad_request(format!(
                        "Invalid role '{other}'; expected system, developer, user or assistant"
                    ))
                    .with_param(param("role")));
                }
            };
            let content = match &message.content {
                None => return Err(ApiError::bad_request("message content is required").with_param(param("content"))),
                Some(MessageContent::Text(text)) => text.clone(),
                Some(MessageContent::Parts(parts)) => {
                    let mut text = String::new();
                    for part in parts {
                        match (part.kind.as_str(), &part.text) {
                            ("text", Some(t)) => text.push_str(t),
                            ("text", None) => {
                                return Err(ApiError::bad_request("a text part needs 'text'").with_param(param("content")));
                            }
                            (kind, _) => {
                                return Err(ApiError::unsupported(
                                    &param("content"),
                                    &format!("content parts of type '{kind}' are not supported; only 'text'"),
                                ));
                            }
                        }
                    }
                    text
                }
            };
            Ok(TemplateMessage { role: role.to_owned(), content })
        })
        .collect()
}

/// Whether the rendered prompt already starts with the BOS token's text (templates like
/// Llama 3's insert it), so tokenization must not add a second one.
fn starts_with_bos(prompt: &str, bos_text: &str) -> bool {
    !bos_text.is_empty() && prompt.starts_with(bos_text)
}

/// Tokenizes off the async runtime: long prompts take milliseconds.
pub(crate) async fn tokenize(
    tokenizer: SharedTokenizer,
    text: String,
    add_special: bool,
) -> Result<Vec<TokenId>, ApiError> {
    tokio::task::spawn_blocking(move || tokenizer.encode(&text, add_special, true))
        .await
        .map_err(ApiError::internal)
}

/// Chat completion chunks.
struct ChatChunks {
    id: String,
    created: u64,
    model: String,
}

impl ChatChunks {
    fn chunk(
        &self,
        delta: Option<Delta>,
        finish_reason: Option<FinishReason>,
        usage: Option<Usage>,
    ) -> ChatCompletionChunk {
        let choices = delta.map(|delta| ChunkChoice {
            index: 0,
            delta,
            logprobs: None,
            finish_reason: finish_reason.map(|r| finish_reason_name(r).to_owned()),
        });
        ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".to_owned(),
            created: self.created,
            model: self.model.clone(),
            choices: choices.into_iter().collect(),
            usage,
        }
    }
}

impl ChunkFormat for ChatChunks {
    type Chunk = ChatCompletionChunk;
    type Whole = ChatCompletion;

    fn whole(&self, text: String, completion: &Completion) -> ChatCompletion {
        ChatCompletion {
            id: self.id.clone(),
            object: "chat.completion".to_owned(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChatChoice {
                index: 0,
                message: AssistantMessage {
                    role: "assistant".to_owned(),
                    content: text,
                },
                logprobs: None,
                finish_reason: finish_reason_name(completion.finish_reason).to_owned(),
            }],
            usage: usage_of(completion),
        }
    }

    fn opening(&self) -> Option<ChatCompletionChunk> {
        let delta = Delta {
            role: Some("assistant".to_owned()),
            content: Some(String::new()),
        };
        Some(self.chunk(Some(delta), None, None))
    }

    fn text(&self, text: String) -> ChatCompletionChunk {
        self.chunk(
            Some(Delta {
                role: None,
                content: Some(text),
            }),
            None,
            None,
        )
    }

    fn finish(&self, reason: FinishReason) -> ChatCompletionChunk {
        self.chunk(Some(Delta::default()), Some(reason), None)
    }

    fn usage(&self, usage: Usage) -> ChatCompletionChunk {
        self.chunk(None, None, Some(usage))
    }
}
