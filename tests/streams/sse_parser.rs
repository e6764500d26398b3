//! Self-tests of the harness's HTTP side, needing neither Prosody nor the daemon: the
//! event-stream parser against the WHATWG HTML "Server-sent events" examples and edge cases
//! (BOM, CR/LF/CRLF including CR|LF split across chunks, NUL in id, retry, EOF discard,
//! invalid UTF-8), the SSE/HTTP clients against a scripted local TCP server (raw, chunked and
//! Content-Length bodies), and the JSON checker.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::thread;
use std::time::Duration;
use testkit::json::{self, Value, json_str};
use testkit::sse::{SseClient, SseEvent, SseParser, http_get, http_raw, http_request, parse_sse};

fn ev(data: &str) -> SseEvent {
    SseEvent {
        event_type: "message".into(),
        data: data.into(),
        last_event_id: String::new(),
    }
}

fn ev_id(data: &str, id: &str) -> SseEvent {
    SseEvent {
        last_event_id: id.into(),
        ..ev(data)
    }
}

/// Feeds `input` split at every possible pair of positions; every split must give `expected`.
fn assert_all_splits(input: &[u8], expected: &[SseEvent]) {
    assert_eq!(parse_sse(input), expected, "unsplit {input:?}");
    for i in 0..=input.len() {
        for j in i..=input.len() {
            let mut p = SseParser::new();
            let mut got = p.feed(&input[..i]);
            got.extend(p.feed(&input[i..j]));
            got.extend(p.feed(&input[j..]));
            assert_eq!(got, expected, "split at {i},{j} of {input:?}");
        }
    }
}

// --- The specification's examples -------------------------------------------------------

#[test]
fn spec_example_multiline_data() {
    assert_all_splits(b"data: YHOO\ndata: +2\ndata: 10\n\n", &[ev("YHOO\n+2\n10")]);
}

#[test]
fn spec_example_ids_comment_and_unterminated_last_event() {
    let input = b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n";
    let mut p = SseParser::new();
    let got = p.feed(input);
    assert_eq!(
        got,
        vec![ev_id("first event", "1"), ev_id("second event", "")]
    );
    assert_eq!(p.comments, 1);
    assert_eq!(p.last_comment.as_deref(), Some(" test stream"));
    // The third event never gets its blank line: discarded at EOF, but it is pending.
    assert!(p.has_pending());
    assert_all_splits(input, &got);
}

#[test]
fn spec_example_empty_data_and_newline_data() {
    // "data\n\ndata\ndata\n\ndata:" -> "" then "\n"; the last one is discarded.
    assert_all_splits(b"data\n\ndata\ndata\n\ndata:", &[ev(""), ev("\n")]);
}

#[test]
fn spec_example_space_after_colon_is_optional() {
    assert_all_splits(b"data:test\n\ndata: test\n\n", &[ev("test"), ev("test")]);
}

// --- Line ends ---------------------------------------------------------------------------

#[test]
fn crlf_lf_and_cr_line_ends_mix() {
    let input = b"data: a\r\ndata: b\rdata: c\n\r\ndata: d\r\rdata: e\n\n";
    assert_all_splits(input, &[ev("a\nb\nc"), ev("d"), ev("e")]);
}

#[test]
fn cr_at_chunk_end_then_lf_is_one_line_end() {
    let mut p = SseParser::new();
    assert!(p.feed(b"data: x\r").is_empty());
    // This LF belongs to the CR above; only the next CR ends the event.
    assert!(p.feed(b"\n").is_empty());
    assert_eq!(p.feed(b"\r"), vec![ev("x")]);
    assert!(
        p.feed(b"\n").is_empty(),
        "LF after CR is not a second blank line"
    );
    assert!(p.feed(b"data: y\r\n").is_empty());
    assert_eq!(p.feed(b"\r\n"), vec![ev("y")]);
}

#[test]
fn cr_cr_is_two_line_ends() {
    assert_all_splits(b"data: x\r\r", &[ev("x")]);
}

#[test]
fn lf_cr_is_two_line_ends() {
    assert_all_splits(b"data: x\n\r", &[ev("x")]);
}

#[test]
fn no_blank_line_no_event() {
    assert!(parse_sse(b"data: x\n").is_empty());
    assert!(parse_sse(b"data: x").is_empty());
}

// --- Fields ------------------------------------------------------------------------------

#[test]
fn only_one_leading_space_removed_and_colons_kept() {
    assert_all_splits(
        b"data:  two spaces\ndata: a: b:c \n\n",
        &[ev(" two spaces\na: b:c ")],
    );
}

#[test]
fn field_without_colon_has_empty_value() {
    // "data" alone appends an empty line; "event" alone resets to default type.
    assert_all_splits(b"data\ndata: x\nevent\n\n", &[ev("\nx")]);
}

#[test]
fn event_type_is_used_then_reset() {
    let input = b"event: add\ndata: 1\n\ndata: 2\n\n";
    let got = parse_sse(input);
    assert_eq!(got[0].event_type, "add");
    assert_eq!(got[1].event_type, "message");
    assert_all_splits(input, &got);
}

#[test]
fn empty_data_buffer_dispatches_nothing_and_resets_type() {
    let got = parse_sse(b"event: lonely\n\ndata: x\n\n");
    assert_eq!(got, vec![ev("x")]);
}

#[test]
fn unknown_fields_and_case_sensitivity() {
    assert_all_splits(b"Data: no\nDATA: no\nfoo: bar\ndata: yes\n\n", &[ev("yes")]);
}

#[test]
fn last_event_id_persists_and_nul_ignored() {
    let input = b"id: 7\ndata: a\n\ndata: b\n\nid: x\0y\ndata: c\n\nid:\ndata: d\n\n";
    let mut p = SseParser::new();
    let got = p.feed(input);
    assert_eq!(
        got,
        vec![
            ev_id("a", "7"),
            ev_id("b", "7"),
            ev_id("c", "7"),
            ev_id("d", "")
        ]
    );
    assert_eq!(p.last_event_id, "");
    assert_all_splits(input, &got);
}

#[test]
fn id_updates_last_event_id_even_without_data() {
    let mut p = SseParser::new();
    assert!(p.feed(b"id: 42\n\n").is_empty());
    assert_eq!(p.last_event_id, "42");
    assert_eq!(p.feed(b"data: z\n\n"), vec![ev_id("z", "42")]);
}

#[test]
fn retry_only_ascii_digits() {
    let mut p = SseParser::new();
    p.feed(b"retry: 1500\n");
    assert_eq!(p.retry, Some(1500));
    for bad in [
        &b"retry: 15a\n"[..],
        b"retry: -1\n",
        b"retry: 1.5\n",
        b"retry:\n",
        b"retry:  20\n",
        b"retry: 99999999999999999999999\n",
        b"retry: \xd9\xa3\n", // ARABIC-INDIC DIGIT THREE: not ASCII
    ] {
        p.feed(bad);
        assert_eq!(p.retry, Some(1500), "after {bad:?}");
    }
    p.feed(b"retry:0\n");
    assert_eq!(p.retry, Some(0));
}

// --- Decoding ----------------------------------------------------------------------------

#[test]
fn leading_bom_stripped_once_even_when_split() {
    let input = b"\xEF\xBB\xBFdata: a\n\n\xEF\xBB\xBFdata: b\n\n";
    // The second BOM is part of a field name "\u{FEFF}data", which is ignored.
    assert_all_splits(input, &[ev("a")]);
}

#[test]
fn bom_prefix_that_is_not_a_bom() {
    // EF BB followed by something else: invalid UTF-8, replaced, not stripped.
    let got = parse_sse(b"\xEF\xBBdata: a\n\ndata: b\n\n");
    assert_eq!(got, vec![ev("b")]);
    let got = parse_sse(b"data: \xEF\xBB\n\n");
    assert_eq!(got, vec![ev("\u{FFFD}")]);
}

#[test]
fn invalid_utf8_becomes_replacement_character() {
    let input = b"data: a\xFFb\xC3\n\ndata: \xF0\x9F\x8E\x89 ok\n\n";
    assert_all_splits(input, &[ev("a\u{FFFD}b\u{FFFD}"), ev("\u{1F389} ok")]);
}

#[test]
fn multibyte_characters_split_across_chunks() {
    let input = "data: é漢🎉\n\n".as_bytes();
    assert_all_splits(input, &[ev("é漢🎉")]);
}

#[test]
fn json_data_like_mod_muc_eventsource() {
    let input = b"data: {\"nick\":\"alice\",\"body\":\"hi\\nthere\"}\n\n";
    let got = parse_sse(input);
    assert_eq!(got.len(), 1);
    assert_eq!(json_str(&got[0].data, "nick"), "alice");
    assert_eq!(json_str(&got[0].data, "body"), "hi\nthere");
}

// --- JSON checker ------------------------------------------------------------------------

#[test]
fn json_accepts_valid_and_rejects_invalid() {
    let v =
        json::parse(r#" {"a": [1, -2.5e+3, true, null, "x\u00e9\ud83c\udf89\"\\\/"], "b": {}} "#)
            .expect("valid");
    assert_eq!(json::keys(&v), vec!["a", "b"]);
    match v.get("a") {
        Some(Value::Array(items)) => assert_eq!(items[4], Value::String("xé🎉\"\\/".into())),
        other => panic!("{other:?}"),
    }
    for bad in [
        "",
        "{",
        "{\"a\":1,}",
        "[1,]",
        "01",
        "1.",
        "\"\u{1}\"",
        "\"\\x\"",
        "\"\\ud83c\"",
        "\"\\udf89\"",
        "{'a':1}",
        "{\"a\":1} x",
        "nul",
    ] {
        assert!(json::parse(bad).is_err(), "accepted {bad:?}");
    }
}

// --- Clients against a scripted server ------------------------------------------------------

/// Serves one connection: reads the request head, then writes `chunks` with small pauses,
/// then closes. Returns the address and a handle yielding the request text.
fn serve_once(chunks: Vec<Vec<u8>>) -> (SocketAddr, thread::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut req = Vec::new();
        let mut buf = [0u8; 1024];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            req.extend_from_slice(&buf[..n]);
        }
        for c in chunks {
            s.write_all(&c).unwrap();
            s.flush().unwrap();
            thread::sleep(Duration::from_millis(15));
        }
        String::from_utf8_lossy(&req).into_owned()
    });
    (addr, handle)
}

#[test]
fn sse_client_raw_body_split_everywhere() {
    let head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nAccess-Control-Allow-Origin: *\r\n\r\n";
    let body =
        b"retry: 3000\n: hello\ndata: {\"nick\":\"a\",\"body\":\"1\"}\r\n\r\ndata: two\rid: 9\r\r";
    // Head and body bytes delivered in awkward pieces, including CR | LF across writes.
    let mut all = head.to_vec();
    all.extend_from_slice(body);
    let chunks: Vec<Vec<u8>> = all.chunks(7).map(|c| c.to_vec()).collect();
    let (addr, server) = serve_once(chunks);
    let mut c = SseClient::connect(addr, "/eventsource/lobby", &[("Last-Event-ID", "5")]);
    assert_eq!(c.status(), 200);
    assert_eq!(c.header("content-type"), Some("text/event-stream"));
    assert_eq!(c.header("ACCESS-CONTROL-ALLOW-ORIGIN"), Some("*"));
    let events = c.collect(2, Duration::from_secs(5));
    assert_eq!(
        events,
        vec![ev("{\"nick\":\"a\",\"body\":\"1\"}"), ev_id("two", "9")]
    );
    assert_eq!(c.parser.retry, Some(3000));
    assert_eq!(c.parser.comments, 1);
    assert!(c.wait_closed(Duration::from_secs(5)));
    assert_eq!(c.next_event(Duration::from_millis(10)), None);
    let req = server.join().unwrap();
    assert!(
        req.starts_with("GET /eventsource/lobby HTTP/1.1\r\n"),
        "{req}"
    );
    assert!(req.contains("\r\nAccept: text/event-stream\r\n"), "{req}");
    assert!(req.contains(&format!("\r\nHost: {addr}\r\n")), "{req}");
    assert!(req.contains("\r\nLast-Event-ID: 5\r\n"), "{req}");
}

#[test]
fn sse_client_chunked_body() {
    let chunks = vec![
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec(),
        b"6\r\ndata: \r\n".to_vec(),
        b"4;ext=1\r\nab\r\n\r\n".to_vec(),
        b"1\r".to_vec(),
        b"\n\n\r\n0\r\n\r\n".to_vec(),
    ];
    let (addr, server) = serve_once(chunks);
    let mut c = SseClient::connect(addr, "/x", &[]);
    assert_eq!(c.next_event(Duration::from_secs(5)), Some(ev("ab")));
    assert!(c.wait_closed(Duration::from_secs(5)));
    assert_eq!(c.raw_body, b"data: ab\r\n\n");
    server.join().unwrap();
}

#[test]
fn sse_client_timeout_returns_none() {
    let (addr, server) = serve_once(vec![
        b"HTTP/1.1 200 OK\r\n\r\ndata: partial".to_vec(),
        vec![],
    ]);
    let mut c = SseClient::connect(addr, "/", &[]);
    assert_eq!(c.next_event(Duration::from_millis(100)), None);
    // At EOF the unterminated event is discarded.
    assert!(c.wait_closed(Duration::from_secs(5)));
    assert_eq!(c.next_event(Duration::from_millis(10)), None);
    server.join().unwrap();
}

#[test]
fn http_get_content_length_and_until_close() {
    let (addr, server) = serve_once(vec![
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nX-A: b\r\n\r\nnot ".to_vec(),
        b"found".to_vec(),
    ]);
    let (status, headers, body) = http_get(addr, "/nope");
    assert_eq!(status, 404);
    assert_eq!(body, "not found");
    assert_eq!(testkit::sse::find_header(&headers, "x-a"), Some("b"));
    let req = server.join().unwrap();
    assert!(req.contains("Connection: close"), "{req}");

    let (addr, server) = serve_once(vec![b"HTTP/1.0 200 OK\r\n\r\nto the end".to_vec()]);
    let (status, _, body) = http_request(addr, "GET", "/", &[("X-Test", "1")]);
    assert_eq!(status, 200);
    assert_eq!(body, b"to the end");
    assert!(server.join().unwrap().contains("X-Test: 1\r\n"));
}

#[test]
fn http_raw_returns_what_arrives() {
    let (addr, server) = serve_once(vec![b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec()]);
    let out = http_raw(addr, b"GARBAGE\r\n\r\n", Duration::from_secs(5));
    assert_eq!(out, b"HTTP/1.1 400 Bad Request\r\n\r\n");
    assert!(server.join().unwrap().starts_with("GARBAGE"));
}
