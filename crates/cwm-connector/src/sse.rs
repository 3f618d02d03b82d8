//! An incremental parser of `text/event-stream` bodies, as the receiver writes them.
//!
//! `event:` sets the event name; `data:` lines (trimmed) are joined with `\n`; a blank line
//! dispatches the event (name `message` when none was given); lines starting with `:` are
//! comments; `id:` and `retry:` are ignored. Lines may end in `\n` or `\r\n` and may be split
//! across chunks anywhere.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SseEvent {
    /// The `event:` name, or `message`.
    pub(crate) name: String,
    /// The `data:` lines joined with `\n`.
    pub(crate) data: String,
}

/// Parser state between chunks.
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    /// The bytes of an unfinished line.
    partial: Vec<u8>,
    name: Option<String>,
    data: Vec<String>,
}

/// Longest line kept while waiting for its end (a misbehaving server cannot grow memory).
const MAX_LINE: usize = 64 * 1024 * 1024;

impl SseParser {
    /// Feed one chunk; returns the events it completed.
    pub(crate) fn feed(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        let mut rest = chunk;
        while let Some(pos) = rest.iter().position(|b| *b == b'\n') {
            let (line, tail) = rest.split_at(pos);
            rest = &tail[1..];
            if self.partial.is_empty() {
                self.line(line, &mut events);
            } else {
                let mut whole = std::mem::take(&mut self.partial);
                whole.extend_from_slice(line);
                self.line(&whole, &mut events);
            }
        }
        if self.partial.len() + rest.len() <= MAX_LINE {
            self.partial.extend_from_slice(rest);
        } else {
            tracing::warn!("SSE line too long; dropped");
            self.partial.clear();
        }
        events
    }

    fn line(&mut self, line: &[u8], events: &mut Vec<SseEvent>) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let line = String::from_utf8_lossy(line);
        if line.is_empty() {
            let name = self.name.take();
            if !self.data.is_empty() {
                events.push(SseEvent {
                    name: name.unwrap_or_else(|| "message".to_owned()),
                    data: std::mem::take(&mut self.data).join("\n"),
                });
            }
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v),
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => self.name = Some(value.trim().to_owned()),
            "data" => self.data.push(value.trim().to_owned()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use cwm_relay::protocol::{ServerFrame, WebhookMessage};

    use super::*;

    #[test]
    fn events_split_anywhere_are_reassembled() {
        let message: WebhookMessage =
            serde_json::from_str(r#"{"message_id":"msg_1","webhook_id":"w","payload":{"a":"b"}}"#)
                .unwrap();
        let text = format!(
            "{}{}: keep-alive comment\n\n{}",
            ServerFrame::Connected {
                connection_id: "sse_1_2".into(),
                channel: "c".into(),
                timestamp: String::new(),
            }
            .to_sse(),
            ServerFrame::Webhook(message.clone()).to_sse(),
            "event: heartbeat\r\ndata: {\"timestamp\":\"t\"}\r\n\r\n"
        );
        for split in 0..text.len() {
            let mut p = SseParser::default();
            let (a, b) = text.as_bytes().split_at(split);
            let mut events = p.feed(a);
            events.extend(p.feed(b));
            let names: Vec<_> = events.iter().map(|e| e.name.as_str()).collect();
            assert_eq!(
                names,
                ["connected", "webhook", "heartbeat"],
                "split at {split}"
            );
            assert_eq!(
                ServerFrame::from_sse(&events[1].name, &events[1].data),
                Some(ServerFrame::Webhook(message.clone()))
            );
            assert!(matches!(
                ServerFrame::from_sse(&events[0].name, &events[0].data),
                Some(ServerFrame::Connected { connection_id, .. }) if connection_id == "sse_1_2"
            ));
        }
    }

    #[test]
    fn multi_line_data_default_name_and_empty_events() {
        let mut p = SseParser::default();
        let events = p.feed(b"data: a\ndata:  b \n\nevent: x\n\nid: 3\nretry: 10\ndata:c\n\n");
        assert_eq!(
            events,
            [
                SseEvent {
                    name: "message".into(),
                    data: "a\nb".into()
                },
                SseEvent {
                    name: "message".into(),
                    data: "c".into()
                },
            ]
        );
    }
}
