//! Incremental Server-Sent Events parser for streamed completion responses.
//!
//! Follows the WHATWG event-stream rules that matter for OpenAI-style streams: lines end
//! in LF, CRLF or a lone CR; lines starting with `:` are comments; `data` lines accumulate
//! (joined by `\n`) until a blank line dispatches the event. Bytes may arrive split at any
//! position, including inside a CRLF pair or a multi-byte UTF-8 character.

/// One dispatched event: its optional `event:` name and its joined `data:` payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// Value of the last `event:` field, if the server named the event.
    pub event: Option<String>,
    /// All `data:` lines of the event joined with `\n`.
    pub data: String,
}

/// Byte-level SSE parser state carried across network reads.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of the current, unterminated line.
    line: Vec<u8>,
    /// The previous byte was a CR, so an immediately following LF ends nothing.
    after_cr: bool,
    /// Data lines gathered for the pending event.
    data: Vec<String>,
    /// `event:` name for the pending event.
    event: Option<String>,
}

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next bytes of the stream and returns the events they complete, in order.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        for &byte in bytes {
            match byte {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\n' | b'\r' => {
                    self.after_cr = byte == b'\r';
                    let line = std::mem::take(&mut self.line);
                    if let Some(event) = self.take_line(&line) {
                        events.push(event);
                    }
                }
                _ => {
                    self.after_cr = false;
                    self.line.push(byte);
                }
            }
        }
        events
    }

    /// Ends the stream: a final line or event left without its terminating blank line is
    /// still dispatched, since a server closing the connection has nothing more to add.
    pub fn finish(&mut self) -> Option<SseEvent> {
        let line = std::mem::take(&mut self.line);
        if let Some(event) = self.take_line(&line) {
            return Some(event);
        }
        self.dispatch()
    }

    /// Applies one complete line; a blank line yields the pending event.
    fn take_line(&mut self, line: &[u8]) -> Option<SseEvent> {
        if line.is_empty() {
            return self.dispatch();
        }
        if line[0] == b':' {
            return None;
        }
        let text = String::from_utf8_lossy(line);
        let (field, value) = match text.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (text.as_ref(), ""),
        };
        match field {
            "data" => self.data.push(value.to_owned()),
            "event" => self.event = Some(value.to_owned()),
            // `id` and `retry` only matter for reconnection, which a benchmark never does.
            _ => {}
        }
        None
    }

    /// Emits the pending event if it carried any data, and resets for the next one.
    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = self.event.take();
        if self.data.is_empty() {
            return None;
        }
        let data = std::mem::take(&mut self.data).join("\n");
        Some(SseEvent { event, data })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(event: &SseEvent) -> &str {
        &event.data
    }

    fn parse_all(input: &[u8]) -> Vec<SseEvent> {
        let mut parser = SseParser::new();
        let mut events = parser.push(input);
        events.extend(parser.finish());
        events
    }

    const STREAM: &str = ": keep-alive comment\n\
        data: {\"a\":1}\n\n\
        event: message\r\n\
        data: {\"b\":\r\n\
        data: 2}\r\n\r\n\
        id: 7\n\
        retry: 100\n\
        data:no-space\n\n\
        data: h\u{e9}llo \u{1F600}\r\r\
        data: [DONE]\n\n";

    fn expected() -> Vec<SseEvent> {
        vec![
            SseEvent {
                event: None,
                data: "{\"a\":1}".into(),
            },
            SseEvent {
                event: Some("message".into()),
                data: "{\"b\":\n2}".into(),
            },
            SseEvent {
                event: None,
                data: "no-space".into(),
            },
            SseEvent {
                event: None,
                data: "h\u{e9}llo \u{1F600}".into(),
            },
            SseEvent {
                event: None,
                data: "[DONE]".into(),
            },
        ]
    }

    #[test]
    fn parses_whole_stream() {
        assert_eq!(parse_all(STREAM.as_bytes()), expected());
    }

    #[test]
    fn split_at_every_byte_position_gives_same_events() {
        let bytes = STREAM.as_bytes();
        for cut in 0..=bytes.len() {
            let mut parser = SseParser::new();
            let mut events = parser.push(&bytes[..cut]);
            events.extend(parser.push(&bytes[cut..]));
            events.extend(parser.finish());
            assert_eq!(events, expected(), "split at byte {cut}");
        }
    }

    #[test]
    fn one_byte_at_a_time_gives_same_events() {
        let mut parser = SseParser::new();
        let mut events = Vec::new();
        for byte in STREAM.as_bytes() {
            events.extend(parser.push(std::slice::from_ref(byte)));
        }
        events.extend(parser.finish());
        assert_eq!(events, expected());
    }

    #[test]
    fn comment_only_and_empty_data_fields() {
        let events = parse_all(b": ping\n\n: ping\n\ndata\n\n");
        assert_eq!(events.len(), 1);
        assert_eq!(data(&events[0]), "");
    }

    #[test]
    fn unterminated_last_event_is_flushed_at_end() {
        let events = parse_all(b"data: {\"x\":1}\n\ndata: tail");
        let texts: Vec<&str> = events.iter().map(data).collect();
        assert_eq!(texts, ["{\"x\":1}", "tail"]);
    }

    #[test]
    fn blank_lines_without_data_dispatch_nothing() {
        assert!(parse_all(b"\n\n\r\n\r\r").is_empty());
        // An event name alone is not an event, and must not leak into the next one.
        let events = parse_all(b"event: ping\n\ndata: x\n\n");
        assert_eq!(
            events,
            vec![SseEvent {
                event: None,
                data: "x".into()
            }]
        );
    }
}
