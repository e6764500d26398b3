//! SSE event frames: turns one room event into the exact bytes every subscriber will be sent.
//!
//! A frame is built once per event and shared (`Rc<[u8]>`) by the ring and all subscribers.
//! The payload is the JSON object `mod_muc_eventsource` sends, on one `data:` line: JSON escaping
//! turns CR and LF into `\r` / `\n`, so no body can end the line, start a field or split an event.

use std::rc::Rc;

/// Appends `s` as a JSON string literal (with quotes) to `out`.
///
/// Escapes `"`, `\` and every control character below U+0020; everything else, including
/// U+2028/U+2029 and non-ASCII text, is copied as UTF-8 (valid JSON, valid SSE).
pub fn push_json_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 0xf) as usize]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// A JSON object built field by field, for event payloads.
pub struct Json(Vec<u8>);

impl Json {
    pub fn new() -> Json {
        Json(b"{".to_vec())
    }

    fn key(&mut self, key: &str) {
        if self.0.len() > 1 {
            self.0.push(b',');
        }
        push_json_string(&mut self.0, key);
        self.0.push(b':');
    }

    pub fn str(mut self, key: &str, value: &str) -> Json {
        self.key(key);
        push_json_string(&mut self.0, value);
        self
    }

    pub fn opt(self, key: &str, value: Option<&str>) -> Json {
        match value {
            Some(v) => self.str(key, v),
            None => self,
        }
    }

    pub fn num(mut self, key: &str, value: u64) -> Json {
        self.key(key);
        self.0.extend_from_slice(value.to_string().as_bytes());
        self
    }

    pub fn bool(mut self, key: &str, value: bool) -> Json {
        self.key(key);
        self.0
            .extend_from_slice(if value { b"true" } else { b"false" });
        self
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.0.push(b'}');
        self.0
    }
}

impl Default for Json {
    fn default() -> Self {
        Json::new()
    }
}

/// True when `id` can go on an SSE `id:` line: no CR, LF or NUL (they would end the line or be
/// ignored by the client), not empty, at most 256 bytes.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 256
        && !id.bytes().any(|b| b < 0x20 || b == 0x7f)
        // The browser sends it back as `Last-Event-ID`, whose value loses its outer spaces.
        && !id.starts_with(' ')
        && !id.ends_with(' ')
}

/// One SSE event: optional `event:` type, `id:` (checked with [`valid_id`] by the caller), the
/// single-line JSON `data:`, and the blank line that dispatches it.
pub fn event(event_type: Option<&str>, id: &str, json: &[u8]) -> Rc<[u8]> {
    let mut out = Vec::with_capacity(24 + id.len() + json.len() + event_type.map_or(0, str::len));
    if let Some(t) = event_type {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(t.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"id: ");
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
    out.into()
}

/// Appends an `event: gap` to `out`: no `id:` line, so the client's last id stays what it had.
pub fn push_gap(out: &mut Vec<u8>, json: &[u8]) {
    out.extend_from_slice(b"event: gap\ndata: ");
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
}

/// The frame for a groupchat message: unnamed (so `onmessage` sees it), with the payload
/// `mod_muc_eventsource` sends, `{"nick":…,"body":…}`. A message from the room itself (no nick)
/// has no `nick` key, as in `mod_muc_eventsource`, whose JSON encoder drops nil values.
pub fn message(id: &str, nick: Option<&str>, body: &str) -> Rc<[u8]> {
    event(
        None,
        id,
        &Json::new().opt("nick", nick).str("body", body).finish(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(s: &str) -> String {
        let mut out = Vec::new();
        push_json_string(&mut out, s);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn escapes_what_json_and_sse_need() {
        assert_eq!(json("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(json("1\n2\r\n3\r4"), r#""1\n2\r\n3\r4""#);
        assert_eq!(json("\u{0}\u{1f}\t"), r#""\u0000\u001f\t""#);
        assert_eq!(json("🎉 שלום e\u{301}"), "\"🎉 שלום e\u{301}\"");
        assert_eq!(json("data: x\n\nid: 1"), r#""data: x\n\nid: 1""#);
    }

    #[test]
    fn message_frame_is_an_id_line_one_data_line_and_a_blank_line() {
        let f = message("7", Some("alice"), "hi\nthere");
        assert_eq!(
            &*f,
            b"id: 7\ndata: {\"nick\":\"alice\",\"body\":\"hi\\nthere\"}\n\n"
        );
        let f = message("x-1", None, "topic");
        assert_eq!(&*f, b"id: x-1\ndata: {\"body\":\"topic\"}\n\n");
        let text = std::str::from_utf8(&f).unwrap();
        assert_eq!(text.matches('\n').count(), 3);
    }

    #[test]
    fn typed_events_and_ids() {
        let json = Json::new()
            .str("subject", "s")
            .num("n", 3)
            .bool("b", true)
            .finish();
        let f = event(Some("subject"), "9", &json);
        assert_eq!(
            &*f,
            b"event: subject\nid: 9\ndata: {\"subject\":\"s\",\"n\":3,\"b\":true}\n\n"
        );
        assert!(valid_id("abc-123_XYZ=="));
        assert!(!valid_id("a\nb") && !valid_id("a\rb") && !valid_id("a\0") && !valid_id(""));
    }
}
