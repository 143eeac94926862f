//! The chat client of `inferno run`: streams one chat completion from an OpenAI-compatible
//! server, writing text as it arrives, and measures it.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::bench::sse::SseParser;

/// Sampling settings `/set` can change; `None` leaves the server's default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settings {
    /// `temperature`.
    pub temperature: Option<f64>,
    /// `top_p`.
    pub top_p: Option<f64>,
    /// `top_k`.
    pub top_k: Option<u32>,
    /// `max_tokens`.
    pub max_tokens: Option<u32>,
    /// `seed`.
    pub seed: Option<u64>,
}

impl Settings {
    /// Sets `name` to `value` (as typed after `/set`).
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), String> {
        let bad = |err: &dyn std::fmt::Display| format!("{name}: {err}");
        match name {
            "temperature" => self.temperature = Some(value.parse().map_err(|e| bad(&e))?),
            "top_p" => self.top_p = Some(value.parse().map_err(|e| bad(&e))?),
            "top_k" => self.top_k = Some(value.parse().map_err(|e| bad(&e))?),
            "max_tokens" => self.max_tokens = Some(value.parse().map_err(|e| bad(&e))?),
            "seed" => self.seed = Some(value.parse().map_err(|e| bad(&e))?),
            _ => {
                return Err(format!(
                    "unknown setting `{name}`; try temperature, top_p, top_k, max_tokens or seed"
                ));
            }
        }
        Ok(())
    }

    /// The settings as `/set` lines.
    pub fn describe(&self) -> String {
        let show = |value: Option<String>| value.unwrap_or_else(|| "(server default)".into());
        format!(
            "temperature {}\ntop_p {}\ntop_k {}\nmax_tokens {}\nseed {}",
            show(self.temperature.map(|v| v.to_string())),
            show(self.top_p.map(|v| v.to_string())),
            show(self.top_k.map(|v| v.to_string())),
            show(self.max_tokens.map(|v| v.to_string())),
            show(self.seed.map(|v| v.to_string())),
        )
    }
}

/// How one answer went.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    /// Prompt tokens (from `usage`).
    pub prompt_tokens: u64,
    /// Generated tokens (from `usage`).
    pub completion_tokens: u64,
    /// Request sent to first text.
    pub time_to_first_token: Duration,
    /// Request sent to the end.
    pub total: Duration,
}

impl Stats {
    /// Generated tokens per second after the first one.
    pub fn tokens_per_second(&self) -> f64 {
        let decode = self.total.saturating_sub(self.time_to_first_token);
        if self.completion_tokens > 1 && !decode.is_zero() {
            (self.completion_tokens - 1) as f64 / decode.as_secs_f64()
        } else {
            0.0
        }
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} prompt + {} generated tokens, first token {:.0} ms, {:.1} tokens/s, {:.2} s in all",
            self.prompt_tokens,
            self.completion_tokens,
            self.time_to_first_token.as_secs_f64() * 1000.0,
            self.tokens_per_second(),
            self.total.as_secs_f64()
        )
    }
}

/// How a streamed answer ended.
#[derive(Debug)]
pub enum Outcome {
    /// It finished: the full text, and its measurements.
    Done(String, Stats),
    /// It was stopped (Ctrl-C) after this much text.
    Stopped(String),
}

/// An OpenAI-compatible server.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    api_key: Option<String>,
}

impl Client {
    /// A client for `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: &str, api_key: Option<String>) -> Self {
        Client {
            http: reqwest::Client::new(),
            base: base
                .trim_end_matches('/')
                .trim_end_matches("/v1")
                .to_owned(),
            api_key,
        }
    }

    fn request(&self, builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.api_key {
            Some(key) => builder.bearer_auth(key),
            None => builder,
        }
    }

    /// The ids of the models the server offers.
    pub async fn models(&self) -> anyhow::Result<Vec<String>> {
        let url = format!("{}/v1/models", self.base);
        let response = self
            .request(self.http.get(&url))
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let body: Value = checked(response).await?.json().await?;
        Ok(body["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|model| model["id"].as_str().map(str::to_owned))
            .collect())
    }

    /// Streams the answer to `messages` from `model` into `out`; stops early when `stop`
    /// resolves (dropping the response, which cancels the generation on the server).
    pub async fn chat(
        &self,
        model: &str,
        messages: &[Value],
        settings: &Settings,
        out: &mut impl Write,
        stop: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<Outcome> {
        let mut body = json!({
            "model": model,
            "messages": messages,
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        let fields = [
            ("temperature", settings.temperature.map(Value::from)),
            ("top_p", settings.top_p.map(Value::from)),
            ("top_k", settings.top_k.map(Value::from)),
            ("max_tokens", settings.max_tokens.map(Value::from)),
            ("seed", settings.seed.map(Value::from)),
        ];
        for (name, value) in fields {
            if let Some(value) = value {
                body[name] = value;
            }
        }
        let started = Instant::now();
        let url = format!("{}/v1/chat/completions", self.base);
        let mut response = checked(
            self.request(self.http.post(&url).json(&body))
                .send()
                .await
                .with_context(|| format!("cannot reach {url}"))?,
        )
        .await?;
        tokio::pin!(stop);
        let mut parser = SseParser::new();
        let mut text = String::new();
        let mut first_token = None;
        let mut usage = Value::Null;
        loop {
            let chunk = tokio::select! {
                chunk = response.chunk() => chunk?,
                () = &mut stop => return Ok(Outcome::Stopped(text)),
            };
            let Some(chunk) = chunk else {
                bail!("the server closed the stream before it finished");
            };
            for event in parser.push(&chunk) {
                if event.data == "[DONE]" {
                    let stats = Stats {
                        prompt_tokens: usage["prompt_tokens"].as_u64().unwrap_or(0),
                        completion_tokens: usage["completion_tokens"].as_u64().unwrap_or(0),
                        time_to_first_token: first_token.unwrap_or_else(|| started.elapsed()),
                        total: started.elapsed(),
                    };
                    return Ok(Outcome::Done(text, stats));
                }
                let data: Value = serde_json::from_str(&event.data)
                    .with_context(|| format!("unexpected stream data: {}", event.data))?;
                if let Some(error) = data.get("error") {
                    bail!("{}", error["message"].as_str().unwrap_or("stream error"));
                }
                if !data["usage"].is_null() {
                    usage = data["usage"].clone();
                }
                if let Some(piece) = data["choices"][0]["delta"]["content"].as_str()
                    && !piece.is_empty()
                {
                    first_token.get_or_insert_with(|| started.elapsed());
                    text.push_str(piece);
                    out.write_all(piece.as_bytes())?;
                    out.flush()?;
                }
            }
        }
    }
}

/// The response, or an error carrying the server's message.
async fn checked(response: reqwest::Response) -> anyhow::Result<reqwest::Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let retry = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(|v| format!(" (retry after {v} s)"))
        .unwrap_or_default();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let message = body["error"]["message"]
        .as_str()
        .unwrap_or("no details")
        .to_owned();
    bail!("HTTP {}: {message}{retry}", status.as_u16())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_and_reject() {
        let mut settings = Settings::default();
        settings.set("temperature", "0.7").unwrap();
        settings.set("max_tokens", "32").unwrap();
        assert_eq!(settings.temperature, Some(0.7));
        assert_eq!(settings.max_tokens, Some(32));
        assert!(settings.set("max_tokens", "-1").is_err());
        assert!(settings.set("warmth", "1").is_err());
        assert!(settings.describe().contains("temperature 0.7"));
    }

    #[test]
    fn tokens_per_second_counts_the_decode_phase() {
        let stats = Stats {
            prompt_tokens: 5,
            completion_tokens: 11,
            time_to_first_token: Duration::from_millis(500),
            total: Duration::from_millis(1500),
        };
        assert!((stats.tokens_per_second() - 10.0).abs() < 1e-9);
    }
}
