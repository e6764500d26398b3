//! Differential test of the JSON string escaper, `frame::push_json_string`, against serde_json,
//! and the round trip of `frame::message` through an event-stream parser.
//!
//! For every generated string (each ASCII character alone and between others, the characters
//! that need escaping in runs, every Unicode scalar value in blocks, the UTF-8 length boundaries,
//! U+2028/U+2029, the code points next to the surrogate range, emoji sequences, and random strings
//! from a fixed-seed xorshift generator):
//! * serde_json reads our literal back as the very same string;
//! * the literal holds no byte below 0x20, so no CR or LF can end an SSE `data:` line early;
//! * the literal is byte for byte what `serde_json::to_string` writes (the same escaping rules);
//! * `frame::message(id, nick, body)`, read as an event stream (HTML Standard §9.2.6), is one
//!   `message` event whose id is `id` and whose data is the JSON `{"nick":…,"body":…}` holding the
//!   same strings.

use muc_eventsource::rooms::frame::{message, push_json_string};
use serde_json::{Map, Value};

fn escaped(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    push_json_string(&mut out, s);
    out
}

/// The escaper's contract, checked for one string.
fn check(s: &str) {
    let out = escaped(s);
    if let Some(b) = out.iter().find(|&&b| b < 0x20) {
        panic!(
            "raw byte 0x{b:02x} in the literal for {s:?}: {:?}",
            String::from_utf8_lossy(&out)
        );
    }
    let back: String = serde_json::from_slice(&out).unwrap_or_else(|e| {
        panic!(
            "serde_json refuses the literal for {s:?} ({e}): {:?}",
            String::from_utf8_lossy(&out)
        )
    });
    assert_eq!(back, s, "literal {:?}", String::from_utf8_lossy(&out));
}

/// Every string the tests use, in a fixed order.
fn corpus() -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    // Each ASCII character alone, at the start, in the middle and at the end, and doubled.
    for b in 0u8..=0x7f {
        let c = char::from(b);
        out.push(c.to_string());
        out.push(format!("{c}x"));
        out.push(format!("a{c}b"));
        out.push(format!("xy{c}"));
        out.push(format!("{c}{c}"));
    }
    // All control characters in one string, and every pair of the characters that are escaped
    // or sit next to an escape boundary.
    out.push((0u8..0x20).map(char::from).collect());
    let special = [
        '\0', '\u{1}', '\u{8}', '\t', '\n', '\u{b}', '\u{c}', '\r', '\u{1b}', '\u{1f}', ' ', '"',
        '\\', '/', '\u{7f}', '\u{80}', '\u{85}', '\u{a0}', 'é', '\u{2028}', '\u{2029}', '\u{feff}',
        '\u{fffd}', '🎉',
    ];
    for a in special {
        for b in special {
            out.push(format!("{a}{b}"));
        }
    }
    // Characters around the UTF-8 length boundaries and the surrogate range (U+D800..U+DFFF
    // cannot be in a `str`; their neighbours can), and the noncharacters.
    for cp in [
        0x7f, 0x80, 0x7ff, 0x800, 0xd7fe, 0xd7ff, 0xe000, 0xe001, 0xfdd0, 0xfffe, 0xffff, 0x1_0000,
        0x1_0001, 0x1_fffe, 0x1_ffff, 0x10_fffe, 0x10_ffff,
    ] {
        let c = char::from_u32(cp).expect("scalar value");
        out.push(c.to_string());
        out.push(format!("\"{c}\\{c}\n"));
    }
    // Text as it comes: emoji sequences, combining marks, right-to-left, SSE lookalikes.
    for s in [
        "",
        "hello",
        "👨‍👩‍👧 👍🏽 🇺🇳 1️⃣",
        "e\u{301} n\u{303} שלום مرحبا",
        "data: {\"nick\":\"eve\"}\n\nid: 1\nevent: close\nretry: 1\n: comment\n",
        "line1\r\nline2\rline3\nline4\n\n\r\r",
        "C:\\path\\to\\\"file\"",
        "\u{2028}\u{2029}</script><script>alert(1)</script>",
    ] {
        out.push(s.to_string());
    }
    out.extend(random_strings(0x5eed_cafe_f00d_0001, 4000));
    out
}

/// xorshift64: a fixed seed gives the same strings on every run.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A character from a randomly chosen class, control characters and escapes favoured.
    fn char(&mut self) -> char {
        let cp = match self.below(8) {
            0 => self.below(0x20) as u32, // C0 control
            1 => [b'"', b'\\', b'/', 0x7f][self.below(4) as usize] as u32,
            2 | 3 => 0x20 + self.below(0x5f) as u32, // printable ASCII
            4 => 0x80 + self.below(0x780) as u32,    // two UTF-8 bytes
            5 => match self.below(4) {
                0 => 0x2028 + self.below(2) as u32,
                1 => 0xd7f0 + self.below(0x20) as u32, // straddles the surrogates
                _ => 0x800 + self.below(0xf800) as u32,
            },
            6 => 0x1_0000 + self.below(0x10_0000) as u32, // four UTF-8 bytes
            _ => 0x1_f300 + self.below(0x300) as u32,     // emoji block
        };
        // Surrogates are not chars: map them to the replacement character.
        char::from_u32(cp).unwrap_or('\u{fffd}')
    }
}

fn random_strings(seed: u64, count: usize) -> Vec<String> {
    let mut rng = XorShift(seed);
    (0..count)
        .map(|_| {
            let len = rng.below(48) as usize;
            (0..len).map(|_| rng.char()).collect()
        })
        .collect()
}

#[test]
fn escaper_round_trips_through_serde_json() {
    let corpus = corpus();
    assert!(corpus.len() > 5000, "{}", corpus.len());
    for s in &corpus {
        check(s);
    }
}

#[test]
fn every_unicode_scalar_value_round_trips() {
    // In blocks of 512 consecutive code points: every char at every offset class.
    let all: Vec<char> = (0..=0x10_ffff).filter_map(char::from_u32).collect();
    assert_eq!(all.len(), 0x11_0000 - 0x800);
    for block in all.chunks(512) {
        check(&block.iter().collect::<String>());
    }
}

#[test]
fn literal_is_what_serde_json_writes() {
    // Not required for correctness (any valid escaping would do), but today both escape exactly
    // `"`, `\` and C0 controls, with the same short forms and lower-case `\u00XX`.
    for s in corpus() {
        let ours = String::from_utf8(escaped(&s)).expect("UTF-8 literal");
        let theirs = serde_json::to_string(&s).unwrap();
        assert_eq!(ours, theirs, "for {s:?}");
    }
}

#[test]
fn escape_appends_without_touching_what_is_there() {
    let mut out = b"data: ".to_vec();
    push_json_string(&mut out, "a\nb");
    push_json_string(&mut out, "");
    assert_eq!(out, b"data: \"a\\nb\"\"\"");
}

/// One event as a browser's EventSource dispatches it.
#[derive(Debug, PartialEq, Eq)]
struct Event {
    event_type: String,
    data: String,
    last_event_id: String,
}

/// An event-stream parser after HTML Standard §9.2.6 (the whole stream at once): UTF-8 with
/// U+FFFD, one leading BOM dropped, lines end in CRLF, LF or CR; `:` lines are comments; the
/// value loses one leading space; `data` lines join with LF; an empty line dispatches (nothing if
/// the data buffer is empty); an unterminated event at the end is dropped.
fn parse_sse(bytes: &[u8]) -> Vec<Event> {
    let text = String::from_utf8_lossy(bytes);
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut lines = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(['\r', '\n']) {
        lines.push(&rest[..i]);
        let skip = if rest[i..].starts_with("\r\n") { 2 } else { 1 };
        rest = &rest[i + skip..];
    }
    // `rest` (no line end) is an unfinished line: discarded with its event.
    let (mut events, mut data, mut event_type) = (Vec::new(), String::new(), String::new());
    let mut id_buffer = String::new();
    for line in lines {
        if line.is_empty() {
            // Dispatch: the last event ID is set even when nothing is dispatched.
            if !data.is_empty() {
                data.pop(); // the LF after the last data line
                events.push(Event {
                    event_type: if event_type.is_empty() {
                        "message".into()
                    } else {
                        event_type.clone()
                    },
                    data: std::mem::take(&mut data),
                    last_event_id: id_buffer.clone(),
                });
            }
            event_type.clear();
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => {
                data.push_str(value);
                data.push('\n');
            }
            "event" => event_type = value.to_string(),
            "id" if !value.contains('\0') => id_buffer = value.to_string(),
            _ => {}
        }
    }
    events
}

#[test]
fn sse_parser_follows_the_standard_examples() {
    let ev = |data: &str, id: &str| Event {
        event_type: "message".into(),
        data: data.into(),
        last_event_id: id.into(),
    };
    assert_eq!(
        parse_sse(b"data: YHOO\ndata: +2\ndata: 10\n\n"),
        vec![ev("YHOO\n+2\n10", "")]
    );
    assert_eq!(
        parse_sse(b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n"),
        vec![ev("first event", "1"), ev("second event", "")]
    );
    assert_eq!(
        parse_sse(b"\xef\xbb\xbfdata\r\rdata\r\ndata\n\ndata:"),
        vec![ev("", ""), ev("\n", "")]
    );
}

#[test]
fn message_frames_read_back_as_the_json_given() {
    let corpus = corpus();
    let ids = ["t5x1k2m-1", "6c1f0d2e-4b4f-4d0e-9a51-2f7e2b1c9a10", "é🎉:x"];
    for (i, body) in corpus.iter().enumerate() {
        // Pair each body with another corpus string as nick, or with no nick.
        let nick = (i % 3 != 0).then(|| corpus[(i * 7919) % corpus.len()].as_str());
        let id = ids[i % ids.len()];
        let frame = message(id, nick, body);

        let events = parse_sse(&frame);
        assert_eq!(
            events.len(),
            1,
            "frame {:?} is not one event",
            String::from_utf8_lossy(&frame)
        );
        let event = &events[0];
        assert_eq!(event.event_type, "message");
        assert_eq!(event.last_event_id, id);

        let json: Value = serde_json::from_str(&event.data)
            .unwrap_or_else(|e| panic!("data is not JSON ({e}): {:?}", event.data));
        let mut expected = Map::new();
        if let Some(nick) = nick {
            expected.insert("nick".into(), Value::String(nick.into()));
        }
        expected.insert("body".into(), Value::String(body.clone()));
        assert_eq!(
            json,
            Value::Object(expected),
            "frame for {nick:?}, {body:?}"
        );

        // The data line is exactly the object our escaper builds.
        let mut object = b"{".to_vec();
        if let Some(nick) = nick {
            object.extend_from_slice(b"\"nick\":");
            object.extend(escaped(nick));
            object.push(b',');
        }
        object.extend_from_slice(b"\"body\":");
        object.extend(escaped(body));
        object.push(b'}');
        assert_eq!(event.data.as_bytes(), &object[..]);
    }
}

#[test]
fn frames_in_a_stream_stay_apart() {
    // Bodies that look like event-stream syntax, one after the other, with a keep-alive comment.
    let bodies = [
        "data: x\n\n",
        "\r\n\r\nid: 9\r\n",
        "\n",
        "\r",
        "",
        ": c\n\ndata: y",
    ];
    let mut stream = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        stream.extend_from_slice(&message(&format!("r-{i}"), Some("n\n"), body));
        stream.extend_from_slice(b": keepalive\n");
    }
    let events = parse_sse(&stream);
    assert_eq!(events.len(), bodies.len());
    for (i, (event, body)) in events.iter().zip(bodies).enumerate() {
        assert_eq!(event.last_event_id, format!("r-{i}"));
        let json: Value = serde_json::from_str(&event.data).unwrap();
        assert_eq!(json["body"], *body);
        assert_eq!(json["nick"], "n\n");
    }
}
