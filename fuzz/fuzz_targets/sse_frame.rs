//! What goes in comes out: a groupchat message (id, nick, body) made into an SSE frame by
//! `frame::message`, read back by a WHATWG-conformant event-stream parser (as a browser's
//! `EventSource` would) and its data by a JSON parser, gives back exactly that nick and body, and
//! that id, which the browser then sends back as `Last-Event-ID` when it reconnects.
//!
//! Input: `[id 0xFE] [nick 0xFF] body`: the id is what comes before the first 0xFE (a minted-style
//! id when there is none, or when `valid_id` refuses it, as the callers do), the nick what comes
//! before the first 0xFF after it (no nick when there is none). 0xFE and 0xFF never occur in
//! UTF-8, so seeds stay readable; each part is decoded as UTF-8 with U+FFFD for invalid
//! sequences, so every (id, Option<String>, String) can be reached.
//!
//! Checked:
//! * the frame is exactly one event, of type `message`, whose last event ID is the id, with no
//!   `retry`, and nothing is left pending after it;
//! * its data is one JSON object with exactly the keys `nick` (only if given) and `body`,
//!   holding the strings given;
//! * no CR or LF inside the frame's lines: only the line ends and the final blank line;
//! * the id comes back: a reconnect request carrying it as `Last-Event-ID` parses to that id;
//! * frames follow each other: two frames with a keep-alive comment between them, fed byte by
//!   byte, are two events (a frame never swallows or splits the next one);
//! * a typed event (`frame::event` with `Json`'s `str`, `opt`, `num`, `bool`) round-trips too;
//! * multi-room frames (`Entry::multi_frame`, built from the event's recorded parts) of a message
//!   and of a typed event whose id is the raw, unchecked id (`x data: {y`, newlines, `id: `…:
//!   the frame must never be searched for its parts, B1) are one event with no `id:` line and
//!   the same JSON with `"room"` first.
#![no_main]

use fuzz_support::{SseParser, parse_sse};
use libfuzzer_sys::fuzz_target;
use muc_eventsource::http::request;
use muc_eventsource::rooms::frame::{Event, Json, event, message, valid_id};
use muc_eventsource::rooms::ring::{Entry, kind};
use serde_json::{Map, Value, json};

const MINTED: &str = "t5x1k2m-1";

fn split(data: &[u8], at: u8) -> (Option<&[u8]>, &[u8]) {
    match data.iter().position(|&b| b == at) {
        Some(i) => (Some(&data[..i]), &data[i + 1..]),
        None => (None, data),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The one line-based view of a frame: no line may hold a CR or LF (they would end it early).
fn check_lines(frame: &[u8]) {
    assert!(frame.ends_with(b"\n\n"));
    let body = &frame[..frame.len() - 2];
    assert!(
        !body.contains(&b'\r'),
        "CR in {:?}",
        String::from_utf8_lossy(frame)
    );
    assert!(
        body.split(|&b| b == b'\n').all(|l| l.starts_with(b"data: ")
            || l.starts_with(b"id: ")
            || l.starts_with(b"event: ")),
        "unexpected line in {:?}",
        String::from_utf8_lossy(frame)
    );
}

/// A multi-room frame: one event of type `event_type`, no `id:` line (so the last event ID
/// stays empty), whose data is `expected` with `"room": node` first.
fn check_multi(frame: &[u8], event_type: &str, node: &str, expected: &Map<String, Value>) {
    check_lines(frame);
    assert!(
        !frame.split(|&b| b == b'\n').any(|l| l.starts_with(b"id:")),
        "an id line in a multi-room frame {:?}",
        String::from_utf8_lossy(frame)
    );
    let mut parser = SseParser::new();
    let events = parser.feed(frame);
    assert_eq!(events.len(), 1, "{:?}", String::from_utf8_lossy(frame));
    assert!(!parser.has_pending());
    assert_eq!(events[0].event_type, event_type);
    assert_eq!(events[0].last_event_id, "");
    let data = &events[0].data;
    assert!(
        data.starts_with("{\"room\":"),
        "\"room\" is not the first key: {data:?}"
    );
    let got: Value = serde_json::from_str(data)
        .unwrap_or_else(|e| panic!("multi-room data is not JSON ({e}): {data:?}"));
    let mut want = expected.clone();
    want.insert("room".into(), Value::String(node.into()));
    assert_eq!(got, Value::Object(want));
}

fuzz_target!(|data: &[u8]| {
    let (id, rest) = split(data, 0xFE);
    let raw_id = id.map(text).unwrap_or_default();
    let id = id.map(text).filter(|id| valid_id(id));
    let id = id.as_deref().unwrap_or(MINTED);
    let (nick, body) = split(rest, 0xFF);
    let nick = nick.map(text);
    let body = text(body);

    let frame = message(id, nick.as_deref(), &body);
    check_lines(&frame);
    let mut parser = SseParser::new();
    let events = parser.feed(&frame);
    assert_eq!(
        events.len(),
        1,
        "frame {:?}",
        String::from_utf8_lossy(&frame)
    );
    assert!(!parser.has_pending());
    assert_eq!(parser.retry, None);
    let ev = &events[0];
    assert_eq!(ev.event_type, "message");
    assert_eq!(ev.last_event_id, id, "the id does not come back");

    let got: Value = serde_json::from_str(&ev.data)
        .unwrap_or_else(|e| panic!("data is not JSON ({e}): {:?}", ev.data));
    let mut expected = Map::new();
    if let Some(nick) = &nick {
        expected.insert("nick".into(), Value::String(nick.clone()));
    }
    expected.insert("body".into(), Value::String(body.clone()));
    assert_eq!(got, Value::Object(expected));

    // The browser reconnects with the id it saw; the server must read the same id back.
    let mut reconnect = b"GET /eventsource/lobby HTTP/1.1\r\nHost: h\r\nLast-Event-ID: ".to_vec();
    reconnect.extend_from_slice(ev.last_event_id.as_bytes());
    reconnect.extend_from_slice(b"\r\nAccept: text/event-stream\r\n\r\n");
    let head = request::parse(&reconnect);
    assert_eq!(
        head.as_ref()
            .ok()
            .and_then(|h| h.as_ref())
            .and_then(|h| h.last_event_id.as_deref()),
        Some(id),
        "Last-Event-ID {id:?} comes back as {head:?}"
    );

    // Two frames in a row with a keep-alive comment between, fed one byte at a time.
    let mut stream = frame.to_vec();
    stream.extend_from_slice(b": keepalive\n");
    stream.extend_from_slice(&message(MINTED, None, &body));
    let mut parser = SseParser::new();
    let got: Vec<_> = stream.iter().flat_map(|b| parser.feed(&[*b])).collect();
    assert_eq!(got.len(), 2);
    assert_eq!(got, parse_sse(&stream));
    assert_eq!(got[0], *ev);
    assert_eq!(got[1].last_event_id, MINTED);
    assert_eq!(parser.comments, 1);

    // A typed event with every kind of JSON value.
    let n = (body.len() as u64).wrapping_mul(0x1_0000_0001);
    let json_bytes = Json::new()
        .str("body", &body)
        .opt("nick", nick.as_deref())
        .num("n", n)
        .bool("b", nick.is_some())
        .finish();
    let frame = event(Some("subject"), id, &json_bytes);
    check_lines(&frame);
    let events = parse_sse(&frame);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type, "subject");
    assert_eq!(events[0].last_event_id, id);
    let got: Value = serde_json::from_str(&events[0].data).expect("typed event data is JSON");
    let mut expected = json!({ "body": body, "n": n, "b": nick.is_some() });
    if let Some(nick) = &nick {
        expected["nick"] = Value::String(nick.clone());
    }
    assert_eq!(got, expected);

    // Multi-room frames of events whose id is anything at all, built from their parts.
    let mut fields = Map::new();
    if let Some(nick) = &nick {
        fields.insert("nick".into(), Value::String(nick.clone()));
    }
    fields.insert("body".into(), Value::String(body.clone()));
    let node = nick.as_deref().unwrap_or("lobby");
    let entry = Entry::new(
        Event::message(&raw_id, nick.as_deref(), &body),
        raw_id.as_str(),
        kind::MESSAGE,
    );
    check_multi(&entry.multi_frame(node), "message", node, &fields);
    let json = Json::new().str("subject", &body).finish();
    let typed = Entry::new(
        Event::new(Some("subject"), &raw_id, &json),
        raw_id.as_str(),
        kind::SUBJECT,
    );
    let mut subject = Map::new();
    subject.insert("subject".into(), Value::String(body.clone()));
    check_multi(&typed.multi_frame(&raw_id), "subject", &raw_id, &subject);
    let empty = Entry::new(Event::new(Some("status"), &raw_id, b"{}"), "", kind::STATUS);
    check_multi(&empty.multi_frame(node), "status", node, &Map::new());
});
