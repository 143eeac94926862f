//! One streamed completion request against an OpenAI-compatible server, timed chunk by chunk.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::Endpoint;
use super::sse::SseParser;

/// Longest error text kept from a response body or a malformed chunk.
const MAX_ERROR_CHARS: usize = 200;

/// Everything needed to issue benchmark requests, shared by all workers of a run.
#[derive(Debug, Clone)]
pub(crate) struct RequestSpec {
    /// Full URL of the completion endpoint (base URL plus endpoint path).
    pub url: String,
    /// Which OpenAI API shape to speak.
    pub endpoint: Endpoint,
    /// Model id sent in every request.
    pub model: String,
    /// `max_tokens` for every request.
    pub max_tokens: u32,
    /// Sampling temperature.
    pub temperature: f32,
    /// Ask the server to keep generating past end-of-sequence tokens.
    pub ignore_eos: bool,
    /// Bearer token, if the server requires one.
    pub api_key: Option<String>,
}

/// Timings and token counts of one successful request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    /// Send to first chunk with non-empty generated text; `None` if nothing was generated.
    pub ttft: Option<Duration>,
    /// Gaps between consecutive chunks carrying generated text.
    pub itl: Vec<Duration>,
    /// Send to end of stream.
    pub e2e: Duration,
    /// Generated tokens: from the usage chunk, or the number of content chunks without one.
    pub completion_tokens: u64,
    /// Prompt tokens from the usage chunk.
    pub prompt_tokens: Option<u64>,
    /// Whether the server sent a usage chunk (otherwise tokens were counted from chunks).
    pub usage_reported: bool,
}

/// The JSON body of a streamed request for `prompt`.
pub(crate) fn request_body(spec: &RequestSpec, prompt: &str) -> Value {
    let mut body = json!({
        "model": spec.model,
        "max_tokens": spec.max_tokens,
        "temperature": spec.temperature,
        "stream": true,
        "stream_options": { "include_usage": true },
    });
    match spec.endpoint {
        Endpoint::Chat => body["messages"] = json!([{ "role": "user", "content": prompt }]),
        Endpoint::Completions => body["prompt"] = json!(prompt),
    }
    if spec.ignore_eos {
        body["ignore_eos"] = json!(true);
    }
    body
}

/// Sends one streamed request and measures it; `Err` carries a short, groupable reason.
pub(crate) async fn send(
    client: &reqwest::Client,
    spec: &RequestSpec,
    prompt: &str,
) -> Result<Sample, String> {
    let mut request = client.post(&spec.url).json(&request_body(spec, prompt));
    if let Some(key) = &spec.api_key {
        request = request.bearer_auth(key);
    }
    let start = Instant::now();
    let response = request
        .send()
        .await
        .map_err(|e| format!("request failed: {}", describe(&e)))?;
    let status = response.status();
    if status != StatusCode::OK {
        let body = response.text().await.unwrap_or_default();
        return Err(format!(
            "HTTP {}: {}",
            status.as_u16(),
            error_message(&body)
        ));
    }
    let is_json = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return Err("server answered with JSON instead of an event stream".to_owned());
    }

    let mut tally = StreamTally::new(start);
    let mut parser = SseParser::new();
    let mut body = response.bytes_stream();
    while !tally.done {
        let Some(read) = body.next().await else { break };
        let bytes = read.map_err(|e| format!("stream error: {}", describe(&e)))?;
        let at = Instant::now();
        for event in parser.push(&bytes) {
            tally.observe(&event.data, at)?;
            if tally.done {
                break;
            }
        }
    }
    if !tally.done
        && let Some(event) = parser.finish()
    {
        tally.observe(&event.data, Instant::now())?;
    }
    tally.into_sample(Instant::now())
}

/// Asks `{base_url}/models` for the served models and returns the first id.
pub(crate) async fn discover_model(
    client: &reqwest::Client,
    base_url: &str,
    api_key: Option<&str>,
) -> Result<String, String> {
    let mut request = client.get(format!("{base_url}/models"));
    if let Some(key) = api_key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.map_err(|e| describe(&e))?;
    let status = response.status();
    let body = response.text().await.map_err(|e| describe(&e))?;
    if status != StatusCode::OK {
        return Err(format!(
            "HTTP {}: {}",
            status.as_u16(),
            error_message(&body)
        ));
    }
    let listing: Value =
        serde_json::from_str(&body).map_err(|e| format!("unreadable model list: {e}"))?;
    listing["data"]
        .as_array()
        .and_then(|models| models.iter().find_map(|m| m["id"].as_str()))
        .map(str::to_owned)
        .ok_or_else(|| "the server lists no models".to_owned())
}

/// A reqwest error with its source chain, which holds the useful part (refused, reset, ...).
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The human message inside an error body, in the shapes OpenAI, vLLM and FastAPI use.
pub(crate) fn error_message(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let message = parsed.as_ref().and_then(|v| {
        let error = &v["error"];
        error["message"]
            .as_str()
            .or_else(|| error.as_str())
            .or_else(|| v["message"].as_str())
            .or_else(|| v["detail"].as_str())
            .map(str::to_owned)
    });
    let text = message.unwrap_or_else(|| body.trim().to_owned());
    if text.is_empty() {
        return "(empty body)".to_owned();
    }
    truncate(&text)
}

fn truncate(text: &str) -> String {
    match text.char_indices().nth(MAX_ERROR_CHARS) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Running measurements of one response stream.
#[derive(Debug)]
struct StreamTally {
    start: Instant,
    first_content: Option<Instant>,
    last_content: Option<Instant>,
    itl: Vec<Duration>,
    content_chunks: u64,
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    /// A choice reported a finish reason, so the generation itself completed.
    finished: bool,
    /// `[DONE]` arrived.
    done: bool,
}

impl StreamTally {
    fn new(start: Instant) -> Self {
        Self {
            start,
            first_content: None,
            last_content: None,
            itl: Vec::new(),
            content_chunks: 0,
            prompt_tokens: None,
            completion_tokens: None,
            finished: false,
            done: false,
        }
    }

    /// Accounts for one event's data received at `at`; an error event ends the request.
    fn observe(&mut self, data: &str, at: Instant) -> Result<(), String> {
        let data = data.trim();
        if data == "[DONE]" {
            self.done = true;
            return Ok(());
        }
        if data.is_empty() {
            return Ok(());
        }
        match serde_json::from_str::<Value>(data) {
            Ok(chunk) => self.observe_chunk(&chunk, at),
            // Some servers omit the blank line between events, which glues their data
            // lines into one event; each line is then a chunk of its own.
            Err(_) if data.contains('\n') => data
                .lines()
                .try_for_each(|line| self.observe(line.trim_start_matches("data:"), at)),
            Err(e) => Err(format!("malformed stream chunk ({e}): {}", truncate(data))),
        }
    }

    fn observe_chunk(&mut self, chunk: &Value, at: Instant) -> Result<(), String> {
        if !chunk["error"].is_null() {
            return Err(format!(
                "stream error event: {}",
                error_message(&chunk.to_string())
            ));
        }
        let mut has_content = false;
        for choice in chunk["choices"].as_array().into_iter().flatten() {
            // Reasoning models stream their thinking separately; it is generated output too.
            let pieces = [
                &choice["delta"]["content"],
                &choice["delta"]["reasoning_content"],
                &choice["text"],
            ];
            has_content |= pieces
                .iter()
                .any(|p| p.as_str().is_some_and(|s| !s.is_empty()));
            self.finished |= !choice["finish_reason"].is_null();
        }
        if has_content {
            self.content_chunks += 1;
            if let Some(last) = self.last_content {
                self.itl.push(at.saturating_duration_since(last));
            }
            self.first_content.get_or_insert(at);
            self.last_content = Some(at);
        }
        let usage = &chunk["usage"];
        if let Some(completion) = usage["completion_tokens"].as_u64() {
            self.completion_tokens = Some(completion);
            self.prompt_tokens = usage["prompt_tokens"].as_u64();
        }
        Ok(())
    }

    /// Closes the tally at `end`; a stream cut off before it finished is an error.
    fn into_sample(self, end: Instant) -> Result<Sample, String> {
        if !self.done && !self.finished {
            return Err("stream ended before the response finished".to_owned());
        }
        Ok(Sample {
            ttft: self
                .first_content
                .map(|t| t.saturating_duration_since(self.start)),
            itl: self.itl,
            e2e: end.saturating_duration_since(self.start),
            completion_tokens: self.completion_tokens.unwrap_or(self.content_chunks),
            prompt_tokens: self.prompt_tokens,
            usage_reported: self.completion_tokens.is_some(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(endpoint: Endpoint, ignore_eos: bool) -> RequestSpec {
        RequestSpec {
            url: "http://127.0.0.1:1/v1/chat/completions".into(),
            endpoint,
            model: "m".into(),
            max_tokens: 16,
            temperature: 0.0,
            ignore_eos,
            api_key: None,
        }
    }

    #[test]
    fn chat_and_completions_bodies() {
        let chat = request_body(&spec(Endpoint::Chat, true), "hi");
        assert_eq!(chat["messages"][0]["content"], "hi");
        assert_eq!(chat["stream"], true);
        assert_eq!(chat["stream_options"]["include_usage"], true);
        assert_eq!(chat["ignore_eos"], true);
        assert!(chat.get("prompt").is_none());
        let completion = request_body(&spec(Endpoint::Completions, false), "hi");
        assert_eq!(completion["prompt"], "hi");
        assert_eq!(completion["max_tokens"], 16);
        assert!(completion.get("messages").is_none());
        assert!(completion.get("ignore_eos").is_none());
    }

    #[test]
    fn error_messages_from_common_shapes() {
        assert_eq!(
            error_message(r#"{"error":{"message":"busy","code":503}}"#),
            "busy"
        );
        assert_eq!(error_message(r#"{"error":"nope"}"#), "nope");
        assert_eq!(
            error_message(r#"{"object":"error","message":"bad model"}"#),
            "bad model"
        );
        assert_eq!(error_message("  plain text \n"), "plain text");
        assert_eq!(error_message(""), "(empty body)");
        assert!(error_message(&"x".repeat(500)).ends_with("..."));
    }

    #[test]
    fn tally_measures_content_chunks_and_usage() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut tally = StreamTally::new(start);
        let role = r#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#;
        tally.observe(role, at(5)).expect("role chunk");
        for (ms, text) in [(10, "a"), (13, "b"), (20, "c")] {
            let chunk = json!({"choices":[{"delta":{"content": text}}]}).to_string();
            tally.observe(&chunk, at(ms)).expect("content chunk");
        }
        let fin = r#"{"choices":[{"delta":{},"finish_reason":"length"}]}"#;
        tally.observe(fin, at(21)).expect("finish chunk");
        let usage = r#"{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":4}}"#;
        tally.observe(usage, at(22)).expect("usage chunk");
        tally.observe("[DONE]", at(23)).expect("done");
        assert!(tally.done);
        let sample = tally.into_sample(at(24)).expect("complete stream");
        assert_eq!(sample.ttft, Some(Duration::from_millis(10)));
        assert_eq!(
            sample.itl,
            [Duration::from_millis(3), Duration::from_millis(7)]
        );
        assert_eq!(sample.e2e, Duration::from_millis(24));
        assert_eq!(
            (sample.completion_tokens, sample.prompt_tokens),
            (4, Some(9))
        );
        assert!(sample.usage_reported);
    }

    #[test]
    fn tally_counts_chunks_without_usage() {
        let start = Instant::now();
        let mut tally = StreamTally::new(start);
        for text in ["x", "y"] {
            let chunk = json!({"choices":[{"text": text, "finish_reason": null}]}).to_string();
            tally.observe(&chunk, start).expect("completion chunk");
        }
        tally.observe("[DONE]", start).expect("done");
        let sample = tally.into_sample(start).expect("complete stream");
        assert_eq!((sample.completion_tokens, sample.prompt_tokens), (2, None));
        assert!(!sample.usage_reported);
    }

    #[test]
    fn tally_rejects_errors_and_truncation() {
        let start = Instant::now();
        let mut tally = StreamTally::new(start);
        let err = tally
            .observe(r#"{"error":{"message":"oom"}}"#, start)
            .expect_err("error event");
        assert_eq!(err, "stream error event: oom");
        assert!(tally.observe("{not json", start).is_err());
        let chunk = r#"{"choices":[{"delta":{"content":"a"}}]}"#;
        tally.observe(chunk, start).expect("content");
        assert!(
            tally.into_sample(start).is_err(),
            "no [DONE] and no finish reason"
        );
    }

    #[test]
    fn glued_data_lines_are_split_into_chunks() {
        let start = Instant::now();
        let mut tally = StreamTally::new(start);
        let a = r#"{"choices":[{"delta":{"content":"a"}}]}"#;
        let b = r#"{"choices":[{"delta":{"content":"b"}}]}"#;
        tally
            .observe(&format!("{a}\ndata: {b}"), start)
            .expect("two glued chunks");
        tally
            .observe(&format!("{a}\n{b}"), start)
            .expect("two glued lines");
        assert_eq!(tally.content_chunks, 4);
    }
}
