//! Support code shared by the fuzz targets: a WHATWG-conformant event-stream parser (to check
//! what a browser's `EventSource` makes of our frames) and a tiny deterministic PRNG (to draw
//! chunk sizes from a seed taken from the fuzz input).

/// One dispatched event: what a browser's `EventSource` would fire as a `MessageEvent`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, or `message` when none was given.
    pub event_type: String,
    /// The `data:` lines joined with LF.
    pub data: String,
    /// The last event ID string when this event was dispatched.
    pub last_event_id: String,
}

/// Incremental parser for `text/event-stream`, following the HTML Living Standard §9.2.6
/// "Interpreting an event stream":
///
/// * the stream is UTF-8, decoded with U+FFFD for invalid sequences; one leading BOM is dropped;
/// * lines end in CRLF, LF or CR (a CR ending one chunk and an LF starting the next are one end);
/// * an empty line dispatches; a line starting with `:` is a comment;
/// * otherwise the field name is up to the first `:` (or the whole line), the value follows it
///   with one leading U+0020 removed;
/// * `data` appends the value and an LF to the data buffer; `event` sets the type; `id` (unless
///   it contains NUL) sets the last event ID buffer; `retry` counts only if all ASCII digits;
///   other fields are ignored;
/// * dispatch: the last event ID is set from its buffer; an empty data buffer dispatches
///   nothing; one trailing LF is removed from the data; the type defaults to `message`;
/// * at end of stream an unfinished event is discarded (it is never dispatched).
#[derive(Debug, Default)]
pub struct SseParser {
    /// Whether the stream start has been checked for a BOM.
    started: bool,
    /// First bytes, held back while they may still be a BOM prefix.
    head: Vec<u8>,
    /// Bytes of the current, unterminated line.
    line: Vec<u8>,
    /// The previous byte was a CR: an LF now is part of that same line end.
    after_cr: bool,
    data: String,
    event_type: String,
    last_event_id_buffer: String,
    /// The last event ID string.
    pub last_event_id: String,
    /// Reconnection time (ms) from the last valid `retry` field.
    pub retry: Option<u64>,
    /// Comment lines seen.
    pub comments: usize,
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

impl SseParser {
    pub fn new() -> SseParser {
        SseParser::default()
    }

    /// Parses more bytes (split anywhere) and returns the events they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        if !self.started {
            self.head.extend_from_slice(bytes);
            let n = self.head.len().min(BOM.len());
            if self.head[..n] == BOM[..n] && self.head.len() < BOM.len() {
                return events; // still possibly a BOM
            }
            self.started = true;
            let head = std::mem::take(&mut self.head);
            let rest = head.strip_prefix(BOM).unwrap_or(&head);
            self.scan(rest, &mut events);
            return events;
        }
        self.scan(bytes, &mut events);
        events
    }

    /// Bytes of an event that has not been dispatched yet (it would be lost at end of stream).
    pub fn has_pending(&self) -> bool {
        !self.line.is_empty() || !self.data.is_empty() || !self.head.is_empty()
    }

    fn scan(&mut self, bytes: &[u8], events: &mut Vec<SseEvent>) {
        for &b in bytes {
            let after_cr = std::mem::replace(&mut self.after_cr, false);
            match b {
                b'\n' if after_cr => {} // the LF of a CRLF
                b'\n' => self.end_line(events),
                b'\r' => {
                    self.after_cr = true;
                    self.end_line(events);
                }
                _ => self.line.push(b),
            }
        }
    }

    fn end_line(&mut self, events: &mut Vec<SseEvent>) {
        let raw = std::mem::take(&mut self.line);
        let line = String::from_utf8_lossy(&raw);
        if line.is_empty() {
            self.dispatch(events);
            return;
        }
        if line.starts_with(':') {
            self.comments += 1;
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (&*line, ""),
        };
        match field {
            "event" => self.event_type = value.to_string(),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "id" if !value.contains('\0') => self.last_event_id_buffer = value.to_string(),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.retry = Some(value.parse().unwrap_or(u64::MAX));
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, events: &mut Vec<SseEvent>) {
        self.last_event_id = self.last_event_id_buffer.clone();
        let mut data = std::mem::take(&mut self.data);
        let event_type = std::mem::take(&mut self.event_type);
        if data.is_empty() {
            return;
        }
        if data.ends_with('\n') {
            data.pop();
        }
        events.push(SseEvent {
            event_type: if event_type.is_empty() {
                "message".to_string()
            } else {
                event_type
            },
            data,
            last_event_id: self.last_event_id.clone(),
        });
    }
}

/// Parses a whole stream given in one piece.
pub fn parse_sse(bytes: &[u8]) -> Vec<SseEvent> {
    SseParser::new().feed(bytes)
}

/// xorshift64*: small, deterministic, good enough to draw chunk sizes.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // splitmix64 of the seed, so that 0 and small seeds are fine.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish in `1..=max` (`max` ≥ 1).
    pub fn size(&mut self, max: usize) -> usize {
        1 + (self.next_u64() % max as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(data: &str) -> SseEvent {
        SseEvent {
            event_type: "message".into(),
            data: data.into(),
            last_event_id: String::new(),
        }
    }

    #[test]
    fn html_standard_examples() {
        // §9.2.6: "data: YHOO\ndata: +2\ndata: 10\n\n" is one event "YHOO\n+2\n10".
        assert_eq!(
            parse_sse(b"data: YHOO\ndata: +2\ndata: 10\n\n"),
            vec![ev("YHOO\n+2\n10")]
        );
        // Comment, id persistence, and the event without a blank line at EOF is dropped.
        let events = parse_sse(b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n");
        assert_eq!(
            events,
            vec![
                SseEvent {
                    last_event_id: "1".into(),
                    ..ev("first event")
                },
                ev("second event")
            ]
        );
        // Two events: "" (not dispatched: empty data buffer with just "data" gives "\n" → "")
        assert_eq!(
            parse_sse(b"data\n\ndata\ndata\n\ndata:\n"),
            vec![ev(""), ev("\n")]
        );
        // "data:test" and "data: test" are the same.
        assert_eq!(
            parse_sse(b"data:test\n\ndata: test\n\n"),
            vec![ev("test"), ev("test")]
        );
    }

    #[test]
    fn line_ends_and_chunking() {
        let stream = b"\xEF\xBB\xBFdata: a\r\ndata: b\rdata: c\n\r\nevent: x\rdata:\xff\r\r";
        let whole = parse_sse(stream);
        assert_eq!(
            whole,
            vec![
                ev("a\nb\nc"),
                SseEvent {
                    event_type: "x".into(),
                    ..ev("\u{fffd}")
                }
            ]
        );
        for i in 0..=stream.len() {
            let mut p = SseParser::new();
            let mut got = p.feed(&stream[..i]);
            got.extend(p.feed(&stream[i..]));
            assert_eq!(got, whole, "split at {i}");
        }
        let mut p = SseParser::new();
        let got: Vec<_> = stream.iter().flat_map(|b| p.feed(&[*b])).collect();
        assert_eq!(got, whole);
    }

    #[test]
    fn id_retry_and_pending() {
        let mut p = SseParser::new();
        assert!(
            p.feed(b"id: a\0b\nretry: 12x\nretry: 34\ndata: d")
                .is_empty()
        );
        assert_eq!(p.retry, Some(34));
        assert!(p.has_pending());
        assert_eq!(p.feed(b"\n\n"), vec![ev("d")]);
        assert!(!p.has_pending());
    }
}
