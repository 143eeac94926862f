//! Chat prompt rendering with a model's own Jinja chat template (GGUF `tokenizer.chat_template`).
//!
//! The templates are written for Hugging Face transformers, which renders them with jinja2 plus a
//! few extras (`raise_exception`, `strftime_now`, a Python-flavoured `tojson`). This module
//! recreates that environment on minijinja so the prompt text matches what the model was trained on.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use minijinja::value::Kwargs;
use minijinja::{Environment, Error, ErrorKind, Value, context};
use serde::Serialize;

/// Name under which the single template lives inside its environment.
const TEMPLATE_NAME: &str = "chat_template";

/// The ChatML layout, used when a model ships without a template of its own.
const CHATML_SOURCE: &str = "{% for message in messages %}\
{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}\
{% endfor %}\
{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// One chat message as the template sees it (content already flattened to text by the API layer).
#[derive(Debug, Clone, Serialize)]
pub struct TemplateMessage {
    /// Speaker role: `system`, `user`, `assistant`, or whatever the client sent.
    pub role: String,
    /// The message text.
    pub content: String,
}

/// Tokens some templates reference.
#[derive(Debug, Clone, Default)]
pub struct SpecialTokens {
    /// Beginning-of-sequence token text, exposed to templates as `bos_token`.
    pub bos: String,
    /// End-of-sequence token text, exposed to templates as `eos_token`.
    pub eos: String,
}

/// Failures while compiling or rendering a chat template.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The template text does not parse.
    #[error("chat template syntax error: {0}")]
    Syntax(String),
    /// The template rejected the conversation through `raise_exception(...)`.
    #[error("chat template rejected the conversation: {0}")]
    Raised(String),
    /// Rendering failed for any other reason.
    #[error("chat template render failed: {0}")]
    Render(String),
}

/// A compiled chat template, shareable across threads and rendered once per request.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    special: SpecialTokens,
}

impl fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source", &self.source)
            .field("special", &self.special)
            .finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// Compiles `source` once with transformers-compatible settings; syntax errors surface here.
    pub fn new(source: &str, special: SpecialTokens) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        // transformers builds its jinja2 environment with both options on; templates rely on it.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", to_json);
        env.add_template_owned(TEMPLATE_NAME, source.to_owned())
            .map_err(|err| TemplateError::Syntax(err.to_string()))?;
        Ok(Self {
            env,
            source: source.to_owned(),
            special,
        })
    }

    /// The ChatML fallback for models whose GGUF carries no `tokenizer.chat_template`.
    pub fn chatml() -> Self {
        Self::new(CHATML_SOURCE, SpecialTokens::default())
            .expect("the built-in ChatML template is valid Jinja")
    }

    /// Renders `messages` into prompt text, optionally opening an assistant turn at the end.
    pub fn render(
        &self,
        messages: &[TemplateMessage],
        add_generation_prompt: bool,
    ) -> Result<String, TemplateError> {
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|err| TemplateError::Render(err.to_string()))?;
        // transformers passes `tools` and `documents` as None when absent, and templates test
        // `tools is not none`, which an undefined value would pass.
        let ctx = context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.special.bos.as_str(),
            eos_token => self.special.eos.as_str(),
            tools => Value::from(()),
            documents => Value::from(()),
        };
        template.render(ctx).map_err(classify_render_error)
    }

    /// The Jinja text this template was compiled from.
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// Marks an error as coming from the template's own `raise_exception` call.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct RaisedByTemplate(String);

fn classify_render_error(err: Error) -> TemplateError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(current) = cause {
        if let Some(raised) = current.downcast_ref::<RaisedByTemplate>() {
            return TemplateError::Raised(raised.0.clone());
        }
        cause = current.source();
    }
    TemplateError::Render(err.to_string())
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message.clone())
        .with_source(RaisedByTemplate(message)))
}

/// `strftime_now(fmt)`: the current time in UTC (std has no local time zone without extra crates).
fn strftime_now(format: &str) -> String {
    let seconds = match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(elapsed) => i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_secs()).unwrap_or(i64::MAX),
    };
    format_time(format, seconds)
}

/// `tojson` as transformers defines it: `json.dumps` separators, no HTML escaping, and
/// `ensure_ascii=False` unless asked, so tool schemas read the same as in Python.
fn to_json(value: &Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    kwargs.assert_all_used()?;
    let mut out = Vec::new();
    let written = match indent {
        Some(width) => {
            let pad = " ".repeat(width);
            let formatter = serde_json::ser::PrettyFormatter::with_indent(pad.as_bytes());
            value.serialize(&mut serde_json::Serializer::with_formatter(
                &mut out, formatter,
            ))
        }
        None => value.serialize(&mut serde_json::Serializer::with_formatter(
            &mut out,
            PythonSeparators,
        )),
    };
    written.map_err(|err| {
        Error::new(ErrorKind::InvalidOperation, "cannot serialize to JSON").with_source(err)
    })?;
    let json = String::from_utf8(out).map_err(|err| {
        Error::new(ErrorKind::InvalidOperation, "JSON output is not UTF-8").with_source(err)
    })?;
    let json = if ensure_ascii.unwrap_or(false) {
        escape_non_ascii(&json)
    } else {
        json
    };
    Ok(Value::from_safe_string(json))
}

/// Compact JSON with Python's default `", "` and `": "` separators.
struct PythonSeparators;

impl serde_json::ser::Formatter for PythonSeparators {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        writer.write_all(b": ")
    }
}

/// Non-ASCII characters only occur inside JSON strings, so escaping them anywhere is safe.
fn escape_non_ascii(json: &str) -> String {
    let mut escaped = String::with_capacity(json.len());
    for ch in json.chars() {
        if ch.is_ascii() {
            escaped.push(ch);
        } else {
            let mut units = [0u16; 2];
            for unit in ch.encode_utf16(&mut units) {
                escaped.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    escaped
}

#[rustfmt::skip]
const MONTHS: [&str; 12] = ["January", "February", "March", "April", "May", "June", "July",
    "August", "September", "October", "November", "December"];
const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// Proleptic Gregorian (year, month 1..=12, day) for a count of days since 1970-01-01.
fn civil_date(days: i64) -> (i64, usize, i64) {
    // Eras of 400 years starting on 0000-03-01 put the leap day at the end of each shifted year.
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (
        year,
        usize::try_from(month).expect("month is within 1..=12"),
        day,
    )
}

/// The subset of C `strftime` that chat templates use (UTC); unknown codes are kept verbatim.
fn format_time(format: &str, unix_seconds: i64) -> String {
    let days = unix_seconds.div_euclid(86_400);
    let (second_of_day, (year, month, day)) = (unix_seconds.rem_euclid(86_400), civil_date(days));
    let (hour, minute, second) = (
        second_of_day / 3_600,
        second_of_day % 3_600 / 60,
        second_of_day % 60,
    );
    // 1970-01-01 was a Thursday.
    let weekday =
        WEEKDAYS[usize::try_from((days + 4).rem_euclid(7)).expect("weekday is within 0..7")];
    let month_name = MONTHS[month - 1];
    let mut out = String::with_capacity(format.len() + 16);
    let mut chars = format.chars();
    while let Some(ch) = chars.next() {
        if ch != '%' {
            out.push(ch);
            continue;
        }
        let Some(code) = chars.next() else {
            out.push('%');
            break;
        };
        let field = match code {
            'Y' => year.to_string(),
            'y' => format!("{:02}", year.rem_euclid(100)),
            'm' => format!("{month:02}"),
            'd' => format!("{day:02}"),
            'e' => format!("{day:2}"),
            'B' => month_name.to_owned(),
            'b' | 'h' => month_name[..3].to_owned(),
            'A' => weekday.to_owned(),
            'a' => weekday[..3].to_owned(),
            'H' => format!("{hour:02}"),
            'I' => format!("{:02}", (hour + 11) % 12 + 1),
            'p' => (if hour < 12 { "AM" } else { "PM" }).to_owned(),
            'M' => format!("{minute:02}"),
            'S' => format!("{second:02}"),
            'F' => format!("{year}-{month:02}-{day:02}"),
            '%' => "%".to_owned(),
            other => format!("%{other}"),
        };
        out.push_str(&field);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const SMOLLM2: &str = include_str!("../../tests/fixtures/smollm2_chat_template.jinja");
    const SMOL_DEFAULT: &str = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n";

    fn msgs(pairs: &[(&str, &str)]) -> Vec<TemplateMessage> {
        let to_message = |&(role, content): &(&str, &str)| TemplateMessage {
            role: role.to_owned(),
            content: content.to_owned(),
        };
        pairs.iter().map(to_message).collect()
    }

    fn compile(source: &str, bos: &str, eos: &str) -> ChatTemplate {
        let special = SpecialTokens {
            bos: bos.to_owned(),
            eos: eos.to_owned(),
        };
        ChatTemplate::new(source, special).expect("test template compiles")
    }

    fn expect_raised(result: Result<String, TemplateError>, expected: &str) {
        match result {
            Err(TemplateError::Raised(message)) => assert_eq!(message, expected),
            other => panic!("expected a raised exception, got {other:?}"),
        }
    }

    #[test]
    fn smollm2_default_and_given_system_prompt() {
        let template = compile(SMOLLM2, "", "");
        let out = template
            .render(&msgs(&[("user", "Hi")]), false)
            .expect("renders");
        assert_eq!(
            out,
            format!("{SMOL_DEFAULT}<|im_start|>user\nHi<|im_end|>\n")
        );
        let with_system = msgs(&[
            ("system", "Be terse."),
            ("user", "2+2?"),
            ("assistant", "4"),
            ("user", "3+3?"),
        ]);
        assert_eq!(
            template.render(&with_system, true).expect("renders"),
            "<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n\
             <|im_start|>assistant\n4<|im_end|>\n<|im_start|>user\n3+3?<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(template.source(), SMOLLM2);
    }

    #[test]
    fn chatml_fallback_output() {
        let messages = msgs(&[("system", "S"), ("user", "U")]);
        let template = ChatTemplate::chatml();
        let body = "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n";
        assert_eq!(template.render(&messages, false).expect("renders"), body);
        let prompted = template.render(&messages, true).expect("renders");
        assert_eq!(prompted, format!("{body}<|im_start|>assistant\n"));
    }

    #[test]
    fn llama3_style_template() {
        let source = r#"{{- bos_token }}
{%- set ns = namespace(system='You are a helpful assistant.') %}
{%- if messages[0]['role'] == 'system' %}
    {%- set ns.system = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- endif %}
{{- '<|start_header_id|>system<|end_header_id|>\n\nToday Date: ' + strftime_now('%d %B %Y') + '\n\n' + ns.system + '<|eot_id|>' }}
{%- for message in messages %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content']|trim + '<|eot_id|>' }}
    {%- if loop.last and add_generation_prompt %}
        {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
    {%- endif %}
{%- endfor %}"#;
        let template = compile(source, "<|begin_of_text|>", "<|eot_id|>");
        let expected = |date: &str| {
            format!(
                "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nToday Date: {date}\n\n\
                 Answer briefly.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>\
                 <|start_header_id|>assistant<|end_header_id|>\n\n"
            )
        };
        // Sampling the date on both sides of the render tolerates a midnight rollover.
        let before = strftime_now("%d %B %Y");
        let messages = msgs(&[("system", "  Answer briefly.\n"), ("user", " Hello ")]);
        let out = template.render(&messages, true).expect("renders");
        let after = strftime_now("%d %B %Y");
        assert!(
            out == expected(&before) || out == expected(&after),
            "{out:?}"
        );
    }

    #[test]
    fn gemma_style_template_rejects_non_alternating_roles() {
        let source = r#"{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- set prefix = messages[0]['content'] + '\n\n' -%}{%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set prefix = '' -%}{%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- endif -%}
    {%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}
    {{ '<start_of_turn>' + role + '\n' + (prefix if loop.first else '') + message['content']|trim + '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"#;
        let template = compile(source, "<bos>", "<eos>");
        let ok = msgs(&[
            ("system", "Be kind."),
            ("user", "Hi "),
            ("assistant", "Hello!"),
            ("user", "Bye"),
        ]);
        assert_eq!(
            template.render(&ok, true).expect("renders"),
            "<bos><start_of_turn>user\nBe kind.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n\
             <start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
        );
        let bad = template.render(&msgs(&[("user", "a"), ("user", "b")]), true);
        expect_raised(
            bad,
            "Conversation roles must alternate user/assistant/user/assistant/...",
        );
    }

    #[test]
    fn mistral_style_template_with_pycompat_methods() {
        let source = r#"{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'].strip() %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}
{{- bos_token }}
{%- if tools is not none %}{{- '[AVAILABLE_TOOLS]' }}{%- endif %}
{%- for message in loop_messages %}
    {%- if message['role'] == 'user' and loop.last and system_message is defined %}
        {{- '[INST] ' + system_message + '\n\n' + message['content'].strip() + '[/INST]' }}
    {%- elif message['role'] == 'user' %}
        {{- '[INST] ' + message['content'].strip() + '[/INST]' }}
    {%- elif message['role'] == 'assistant' and message.tool_calls is not defined %}
        {{- ' ' + message['content'].strip() + eos_token }}
    {%- else %}
        {{- raise_exception('Only user and assistant roles are supported!') }}
    {%- endif %}
{%- endfor %}"#;
        let template = compile(source, "<s>", "</s>");
        let messages = msgs(&[
            ("system", " Reply in French. "),
            ("user", " Hi "),
            ("assistant", " Salut "),
            ("user", "Thanks\n"),
        ]);
        assert_eq!(
            template.render(&messages, false).expect("renders"),
            "<s>[INST] Hi[/INST] Salut</s>[INST] Reply in French.\n\nThanks[/INST]"
        );
        let rejected = template.render(&msgs(&[("tool", "x")]), false);
        expect_raised(rejected, "Only user and assistant roles are supported!");
    }

    #[test]
    fn block_whitespace_is_trimmed_like_transformers() {
        let source = "{% for m in messages %}\n    {% if m.role == 'user' %}\nU: {{ m.content }}\n    {% endif %}\n{% endfor %}\n";
        let messages = msgs(&[("user", "a"), ("assistant", "b"), ("user", "c")]);
        let out = compile(source, "", "")
            .render(&messages, false)
            .expect("renders");
        assert_eq!(out, "U: a\nU: c\n");
    }

    #[test]
    fn tojson_matches_python_json_dumps() {
        let source = "{{ {'a': 1, 'b': [1, 2], 'c': '<é>'}|tojson }}|{{ 'é'|tojson(ensure_ascii=true) }}|{{ [1]|tojson(indent=2) }}";
        assert_eq!(
            compile(source, "", "").render(&[], false).expect("renders"),
            "{\"a\": 1, \"b\": [1, 2], \"c\": \"<é>\"}|\"\\u00e9\"|[\n  1\n]"
        );
    }

    #[test]
    fn syntax_and_render_errors_are_told_apart() {
        let unclosed = ChatTemplate::new(
            "{% for m in messages %}{{ m.content }}",
            SpecialTokens::default(),
        );
        assert!(matches!(unclosed, Err(TemplateError::Syntax(_))));
        // minijinja resolves filters at render time, so an unknown one is a render failure.
        let unknown_filter = compile("{{ messages[0].content|nosuchfilter }}", "", "");
        match unknown_filter.render(&msgs(&[("user", "x")]), false) {
            Err(TemplateError::Render(message)) => {
                assert!(message.contains("nosuchfilter"), "{message}")
            }
            other => panic!("expected a render error, got {other:?}"),
        }
        let bad_add = compile("{{ 1 + 'a' }}", "", "").render(&[], false);
        assert!(
            matches!(bad_add, Err(TemplateError::Render(_))),
            "{bad_add:?}"
        );
    }

    #[test]
    fn concurrent_renders_agree() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<ChatTemplate>();
        let template = Arc::new(compile(SMOLLM2, "", ""));
        let messages = msgs(&[("user", "Hi"), ("assistant", "Hello"), ("user", "More")]);
        let reference = template.render(&messages, true).expect("renders");
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let (template, messages) = (Arc::clone(&template), messages.clone());
                std::thread::spawn(move || {
                    (0..50)
                        .map(|_| template.render(&messages, true).expect("renders"))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for worker in workers {
            for out in worker.join().expect("render thread panicked") {
                assert_eq!(out, reference);
            }
        }
    }

    #[test]
    fn civil_dates_and_formats() {
        assert_eq!(
            format_time("%Y-%m-%d %H:%M:%S %A", 0),
            "1970-01-01 00:00:00 Thursday"
        );
        // 2000-02-29 12:34:56 UTC: leap day of a 400-year leap year.
        assert_eq!(
            format_time("%d %B %Y %a %b %I%p", 951_827_696),
            "29 February 2000 Tue Feb 12PM"
        );
        // 2024-12-31 23:59:59 UTC, then an hour before the epoch.
        assert_eq!(
            format_time("%F %y %e%% %H:%M", 1_735_689_599),
            "2024-12-31 24 31% 23:59"
        );
        assert_eq!(format_time("%Y-%m-%d %H %Q", -3_600), "1969-12-31 23 %Q");
    }
}
