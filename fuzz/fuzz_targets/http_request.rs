//! The HTTP request head parser and the percent-decoder of room names.
//!
//! Checked:
//! * `request::parse` never panics;
//! * the server re-parses a growing buffer after each read, so once a prefix of the input
//!   parses to a head, every longer buffer starting with that prefix parses to the same head;
//!   and a prefix that is refused stays refused (the same way) as more bytes arrive;
//! * the head's path, query and `Last-Event-ID` hold no CR, LF or NUL (they end up in log lines
//!   and are compared with event ids), path and query no space either;
//! * a head that parses keeps RFC 9112's framing MUSTs, checked against a plain `httparse`
//!   parse: an HTTP/1.1 request has a `Host`, no request has two, and a `Content-Length` is one
//!   line of digits;
//! * `percent_decode` never panics and agrees with a strict reference decoder (RFC 3986: `%`
//!   followed by exactly two hex digits, result must be UTF-8), also through `query_values`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use muc_eventsource::http::request::{Head, Reject, parse, percent_decode, query_values};

fn reference_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = (*bytes.get(i + 1)? as char).to_digit(16)?;
            let lo = (*bytes.get(i + 2)? as char).to_digit(16)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn check_decode(text: &str) {
    let got = percent_decode(text);
    assert_eq!(
        got,
        reference_decode(text),
        "percent_decode({text:?}) disagrees with the strict reference"
    );
}

fn check_head(head: &Head) {
    for part in [&head.path, &head.query] {
        assert!(
            !part.bytes().any(|b| matches!(b, b'\r' | b'\n' | b' ' | 0)),
            "{head:?}"
        );
    }
    if let Some(id) = &head.last_event_id {
        assert!(
            !id.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)),
            "{head:?}"
        );
        assert_eq!(id.trim(), id, "{head:?}");
    }
    assert!(head.path.starts_with('/') || head.path == "*", "{head:?}");
    assert!(!head.query.contains('#'), "{head:?}");
    // Every parameter name that occurs, and one that does not.
    let names: Vec<&str> = head
        .query
        .split('&')
        .map(|pair| pair.split_once('=').map_or(pair, |(k, _)| k))
        .chain(["room", "history", "nope"])
        .collect();
    for name in names {
        let expected: Vec<String> = head
            .query
            .split('&')
            .filter_map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                if k == name { reference_decode(v) } else { None }
            })
            .collect();
        assert_eq!(
            query_values(&head.query, name).collect::<Vec<_>>(),
            expected,
            "query_values({:?}, {name:?})",
            head.query
        );
    }
}

/// The framing facts of a head `parse` accepted, from `httparse` directly.
fn check_framing(data: &[u8]) {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(_)) = req.parse(data) else {
        panic!("parse accepted a head httparse does not complete");
    };
    let named = |name: &str| {
        req.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
            .collect::<Vec<_>>()
    };
    let hosts = named("host");
    assert!(hosts.len() <= 1, "two Host lines accepted");
    assert!(req.version == Some(0) || hosts.len() == 1, "HTTP/1.1 without Host accepted");
    let lengths = named("content-length");
    assert!(lengths.len() <= 1, "two Content-Length lines accepted");
    if let Some(length) = lengths.first() {
        let digits = length.trim_ascii();
        assert!(
            !digits.is_empty() && digits.iter().all(u8::is_ascii_digit),
            "Content-Length {length:?} accepted"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let full = parse(data);
    if let Ok(Some(head)) = &full {
        check_framing(data);
        check_head(head);
        check_decode(&head.path);
        check_decode(&head.query);
    }
    // Prefixes ending where the server may have stopped reading: after each LF (at most 64 of
    // them), and in the middle of the input.
    let cuts = data
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .map(|(i, _)| i + 1)
        .take(64)
        .chain([data.len() / 2]);
    for cut in cuts {
        match parse(&data[..cut]) {
            Ok(Some(head)) => assert_eq!(
                full,
                Ok(Some(head)),
                "prefix of {cut} bytes parsed to a head, the full buffer did not"
            ),
            Err(Reject::Malformed(why)) => assert!(
                matches!(full, Err(Reject::Malformed(_))),
                "prefix of {cut} bytes refused ({why}), full buffer gives {full:?}"
            ),
            Err(Reject::TooLarge) => assert_eq!(
                full,
                Err(Reject::TooLarge),
                "prefix of {cut} bytes too large, full buffer gives {full:?}"
            ),
            Ok(None) => {}
        }
    }
    check_decode(&String::from_utf8_lossy(data));
});
