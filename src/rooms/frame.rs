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

/// The frame for a groupchat message: `data: {"nick":…,"body":…}` and the blank line that
/// dispatches it. A message from the room itself (no nick) has no `nick` key, as in
/// `mod_muc_eventsource`, whose JSON encoder drops nil values.
pub fn message(nick: Option<&str>, body: &str) -> Rc<[u8]> {
    let mut out = Vec::with_capacity(32 + nick.map_or(0, str::len) + body.len());
    out.extend_from_slice(b"data: {");
    if let Some(nick) = nick {
        out.extend_from_slice(b"\"nick\":");
        push_json_string(&mut out, nick);
        out.push(b',');
    }
    out.extend_from_slice(b"\"body\":");
    push_json_string(&mut out, body);
    out.extend_from_slice(b"}\n\n");
    out.into()
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
    fn message_frame_is_one_data_line_and_a_blank_line() {
        let f = message(Some("alice"), "hi\nthere");
        assert_eq!(
            &*f,
            b"data: {\"nick\":\"alice\",\"body\":\"hi\\nthere\"}\n\n"
        );
        let f = message(None, "topic");
        assert_eq!(&*f, b"data: {\"body\":\"topic\"}\n\n");
        let text = std::str::from_utf8(&f).unwrap();
        assert_eq!(text.matches('\n').count(), 2);
    }
}
