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

/// True when `id` may be an event's `id:`: a plain stanza-id in a shape this daemon issues
/// ([`super::resume::is_stanza_id`]: ASCII letters, digits, `-`, `_`, at most 64 bytes). Such an
/// id never holds what would end the line, split a field or lose its outer spaces.
pub fn valid_id(id: &str) -> bool {
    super::resume::is_stanza_id(id)
}

/// One SSE event's bytes and where its parts lie in them, recorded while they were written, so
/// other forms of the event (the multi-room frame) are made from the parts and never by
/// searching the bytes.
#[derive(Clone, Debug)]
pub struct Event {
    /// `[event: <type>\n]id: <id>\ndata: <json>\n\n`, shared by the ring and every subscriber.
    pub frame: Rc<[u8]>,
    /// Where the `id:` line starts (the length of the `event:` line, or 0).
    id_at: usize,
    /// Where the JSON starts (after `data: `).
    json_at: usize,
}

impl Event {
    /// An event: optional `event:` type, `id:` (an id that passes [`valid_id`], or one the
    /// daemon made), the single-line JSON `data:`, and the blank line that dispatches it.
    pub fn new(event_type: Option<&str>, id: &str, json: &[u8]) -> Event {
        let mut out =
            Vec::with_capacity(24 + id.len() + json.len() + event_type.map_or(0, str::len));
        if let Some(t) = event_type {
            out.extend_from_slice(b"event: ");
            out.extend_from_slice(t.as_bytes());
            out.push(b'\n');
        }
        let id_at = out.len();
        out.extend_from_slice(b"id: ");
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(b"\ndata: ");
        let json_at = out.len();
        out.extend_from_slice(json);
        out.extend_from_slice(b"\n\n");
        Event {
            frame: out.into(),
            id_at,
            json_at,
        }
    }

    /// The frame for a groupchat message: unnamed (so `onmessage` sees it), with the payload
    /// `mod_muc_eventsource` sends, `{"nick":…,"body":…}`. A message from the room itself (no
    /// nick) has no `nick` key, as in `mod_muc_eventsource`, whose JSON encoder drops nil values.
    pub fn message(id: &str, nick: Option<&str>, body: &str) -> Event {
        Event::new(
            None,
            id,
            &Json::new().opt("nick", nick).str("body", body).finish(),
        )
    }

    /// Bytes made elsewhere, as one event without an `event:` line (tests' frames).
    #[cfg(test)]
    pub fn raw(frame: Rc<[u8]>) -> Event {
        Event {
            frame,
            id_at: 0,
            json_at: 0,
        }
    }

    /// The `event:` line (empty for a message).
    fn type_line(&self) -> &[u8] {
        &self.frame[..self.id_at]
    }

    /// The JSON object of the `data:` line.
    pub fn json(&self) -> &[u8] {
        let end = self.frame.len().saturating_sub(2).max(self.json_at);
        &self.frame[self.json_at..end]
    }

    /// This event as sent on a stream of several rooms: no `id:` line (those streams write
    /// composite ids), and `"room":"<node>"` first in its JSON object.
    pub fn multi(&self, node: &str) -> Rc<[u8]> {
        let json = self.json();
        let mut out = Vec::with_capacity(self.frame.len() + node.len() + 12);
        out.extend_from_slice(self.type_line());
        out.extend_from_slice(b"data: ");
        match json.strip_prefix(b"{") {
            Some(rest) => {
                out.extend_from_slice(b"{\"room\":");
                push_json_string(&mut out, node);
                if rest != b"}" {
                    out.push(b',');
                }
                out.extend_from_slice(rest);
            }
            // Not an object (never made by this crate): passed on as it is.
            None => out.extend_from_slice(json),
        }
        out.extend_from_slice(b"\n\n");
        out.into()
    }
}

/// The bytes of [`Event::new`].
pub fn event(event_type: Option<&str>, id: &str, json: &[u8]) -> Rc<[u8]> {
    Event::new(event_type, id, json).frame
}

/// Appends an `event: gap` to `out`: no `id:` line, so the client's last id stays what it had.
pub fn push_gap(out: &mut Vec<u8>, json: &[u8]) {
    out.extend_from_slice(b"event: gap\ndata: ");
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
}

/// The bytes of [`Event::message`].
pub fn message(id: &str, nick: Option<&str>, body: &str) -> Rc<[u8]> {
    Event::message(id, nick, body).frame
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
        assert!(valid_id("abc-123_XYZ"));
        assert!(!valid_id("a\nb") && !valid_id("a\rb") && !valid_id("a\0") && !valid_id(""));
        assert!(!valid_id("abc=") && !valid_id("a b") && !valid_id("x~1"));
    }

    /// Parses one SSE event as a browser would (enough for these frames): its type, id and data.
    fn fields(frame: &[u8]) -> (Option<String>, Option<String>, String) {
        let text = std::str::from_utf8(frame).unwrap();
        assert!(text.ends_with("\n\n"), "{text:?}");
        let (mut kind, mut id, mut data) = (None, None, String::new());
        for line in text[..text.len() - 2].split('\n') {
            let (field, value) = line.split_once(": ").unwrap_or((line, ""));
            match field {
                "event" => kind = Some(value.to_string()),
                "id" => id = Some(value.to_string()),
                "data" => data.push_str(value),
                other => panic!("unexpected line {other:?} in {text:?}"),
            }
        }
        (kind, id, data)
    }

    #[test]
    fn multi_room_frames_are_made_from_the_parts() {
        let e = Event::message("s-1", Some("a"), "hi");
        assert_eq!(
            &*e.multi("lobby"),
            b"data: {\"room\":\"lobby\",\"nick\":\"a\",\"body\":\"hi\"}\n\n"
        );
        let json = Json::new().str("status", "joined").finish();
        let e = Event::new(Some("status"), "x-2", &json);
        assert_eq!(
            &*e.multi("news"),
            b"event: status\ndata: {\"room\":\"news\",\"status\":\"joined\"}\n\n"
        );
        assert_eq!(
            &*Event::new(Some("x"), "1", b"{}").multi("r"),
            b"event: x\ndata: {\"room\":\"r\"}\n\n"
        );
        assert_eq!(&*Event::new(None, "1", b"[1]").multi("r"), b"data: [1]\n\n");
    }

    #[test]
    fn hostile_ids_and_bodies_never_move_the_parts() {
        // Ids that look like the other parts of a frame (they never pass `valid_id`; the
        // frame must still not be misread, and nothing may panic).
        let ids = [
            "x data: {y",
            "data: {",
            "id: 1",
            "}\n\ndata: {",
            "\nevent: x\ndata: {\"room\":1}",
            "",
            "~",
        ];
        let bodies = ["data: {", "id: x\ndata: {", "}", ""];
        for id in ids {
            for body in bodies {
                let e = Event::message(id, Some("data: {"), body);
                let multi = e.multi("lobby");
                let expected = Json::new()
                    .str("room", "lobby")
                    .str("nick", "data: {")
                    .str("body", body)
                    .finish();
                let whole = [&b"data: "[..], &expected, b"\n\n"].concat();
                assert_eq!(&*multi, &whole[..], "{id:?} {body:?}");
                assert_eq!(
                    e.json(),
                    &Json::new()
                        .str("nick", "data: {")
                        .str("body", body)
                        .finish()[..]
                );
                let typed = Event::new(
                    Some("subject"),
                    id,
                    &Json::new().str("subject", body).finish(),
                );
                let (kind, id_line, data) = fields(&typed.multi("news"));
                assert_eq!(kind.as_deref(), Some("subject"));
                assert_eq!(id_line, None, "a multi-room frame has no id line");
                assert_eq!(
                    data,
                    String::from_utf8(
                        Json::new()
                            .str("room", "news")
                            .str("subject", body)
                            .finish()
                    )
                    .unwrap()
                );
            }
        }
        // With a valid id, the frame reads back as exactly its parts.
        let e = Event::new(Some("subject"), "abc-1_X", b"{\"a\":1}");
        assert_eq!(
            fields(&e.frame),
            (
                Some("subject".into()),
                Some("abc-1_X".into()),
                "{\"a\":1}".into()
            )
        );
    }
}
