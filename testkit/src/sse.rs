//! The HTTP side of the tests: a WHATWG-conformant event-stream parser ([`SseParser`]), a
//! blocking SSE client ([`SseClient`]) and plain/hostile raw HTTP helpers ([`http_get`],
//! [`http_request`], [`http_raw`]).
//!
//! The parser follows the HTML Living Standard, "Server-sent events", §9.2.6 "Interpreting an
//! event stream" (and the dispatch steps of §9.2.6's "dispatch the event"): UTF-8 decoding with
//! U+FFFD for invalid sequences and one leading BOM stripped; lines end in CRLF, LF or CR (a CR
//! at the end of one chunk followed by LF at the start of the next is one line end); `:` lines
//! are comments; `field: value` with one leading space of the value removed; `data` lines are
//! joined with LF and the final LF removed; an empty data buffer dispatches nothing; the type
//! defaults to `message`; `id` containing NUL is ignored and the last event ID persists across
//! events; `retry` is used only if it is all ASCII digits; an event not terminated by a blank
//! line before EOF is discarded (simply never dispatched).
//!
//! The client speaks HTTP/1.1 over one `TcpStream`: it parses the status line and headers, then
//! decodes the body as raw-until-close (what `mod_muc_eventsource` sends), `Content-Length` or
//! `Transfer-Encoding: chunked`, and feeds it to the parser.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Bound for connecting and reading response heads.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// How many body bytes [`SseClient::raw_body`] keeps (the first ones).
pub const RAW_BODY_LIMIT: usize = 1 << 20;

/// One dispatched event (the `MessageEvent` a browser would fire).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    /// `event:` value, or `message` when none was given.
    pub event_type: String,
    /// `data:` lines joined with LF.
    pub data: String,
    /// The stream's last event ID string at dispatch time.
    pub last_event_id: String,
}

/// Parses a whole stream given in one piece.
pub fn parse_sse(bytes: &[u8]) -> Vec<SseEvent> {
    SseParser::new().feed(bytes)
}

/// The string member `key` of an event's JSON data, if the data is a JSON object that has one.
pub fn field(event: &SseEvent, key: &str) -> Option<String> {
    data_field(&event.data, key)
}

/// The string member `key` of the JSON object `data`, if it is one and has it.
pub fn data_field(data: &str, key: &str) -> Option<String> {
    crate::json::parse(data)
        .ok()?
        .get(key)
        .and_then(crate::json::Value::as_str)
        .map(str::to_string)
}

/// The `body` of a `message` event; panics, showing the event, on any other event.
pub fn body(event: &SseEvent) -> String {
    assert_eq!(event.event_type, "message", "{event:?}");
    field(event, "body").unwrap_or_else(|| panic!("no body in the JSON data: {event:?}"))
}

/// The bodies of the `message` events among `events`, in order.
pub fn bodies(events: &[SseEvent]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.event_type == "message")
        .map(body)
        .collect()
}

/// Incremental event-stream parser; feed it bytes split anywhere.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Set once the first bytes were checked for a BOM.
    started: bool,
    /// Stream start held back while it may still be a BOM prefix.
    head: Vec<u8>,
    /// Bytes of the current, unfinished line.
    line: Vec<u8>,
    /// The previous byte was a CR (a following LF belongs to the same line end).
    after_cr: bool,
    data: String,
    event_type: String,
    last_event_id_buffer: String,
    /// The last event ID string (set at each dispatch attempt from the `id` buffer).
    pub last_event_id: String,
    /// Reconnection time from the last valid `retry:` field, in milliseconds.
    pub retry: Option<u64>,
    /// Number of comment lines (`:` first) seen.
    pub comments: u64,
    /// Text of the last comment line (without the leading `:`).
    pub last_comment: Option<String>,
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

impl SseParser {
    pub fn new() -> SseParser {
        SseParser::default()
    }

    /// Feeds the next bytes of the stream; returns the events completed by them, in order.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        if self.started {
            self.feed_lines(bytes, &mut events);
            return events;
        }
        self.head.extend_from_slice(bytes);
        if self.head.len() < BOM.len() && BOM.starts_with(&self.head) {
            return events; // could still become a BOM
        }
        self.started = true;
        let head = std::mem::take(&mut self.head);
        let rest = head.strip_prefix(BOM).unwrap_or(&head);
        self.feed_lines(rest, &mut events);
        events
    }

    fn feed_lines(&mut self, bytes: &[u8], events: &mut Vec<SseEvent>) {
        for &b in bytes {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue; // the LF of a CRLF whose line was already processed
                }
            }
            match b {
                b'\r' => {
                    self.after_cr = true;
                    self.end_line(events);
                }
                b'\n' => self.end_line(events),
                _ => self.line.push(b),
            }
        }
    }

    fn end_line(&mut self, events: &mut Vec<SseEvent>) {
        let raw = std::mem::take(&mut self.line);
        // CR and LF never occur inside a UTF-8 multibyte sequence, so decoding per line equals
        // decoding the stream (from_utf8_lossy substitutes maximal subparts, like WHATWG).
        let line = String::from_utf8_lossy(&raw);
        if line.is_empty() {
            if let Some(e) = self.dispatch() {
                events.push(e);
            }
            return;
        }
        if let Some(comment) = line.strip_prefix(':') {
            self.comments += 1;
            self.last_comment = Some(comment.to_string());
            return;
        }
        let (field, value) = match line.find(':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (&line[..], ""),
        };
        match field {
            "event" => self.event_type = value.to_string(),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "id" if !value.contains('\0') => self.last_event_id_buffer = value.to_string(),
            // Overlong values (beyond u64) are ignored like non-digits.
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                if let Ok(ms) = value.parse::<u64>() {
                    self.retry = Some(ms);
                }
            }
            _ => {}
        }
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        self.last_event_id = self.last_event_id_buffer.clone();
        if self.data.is_empty() {
            self.event_type.clear();
            return None;
        }
        let mut data = std::mem::take(&mut self.data);
        if data.ends_with('\n') {
            data.pop();
        }
        let event_type = match std::mem::take(&mut self.event_type) {
            t if t.is_empty() => "message".to_string(),
            t => t,
        };
        Some(SseEvent {
            event_type,
            data,
            last_event_id: self.last_event_id.clone(),
        })
    }

    /// Whether an event is being accumulated (data seen but no blank line yet); such an event
    /// is discarded if the stream ends now.
    pub fn has_pending(&self) -> bool {
        !self.data.is_empty() || !self.line.is_empty()
    }
}

/// Decodes a response body incrementally.
#[derive(Debug)]
enum Body {
    /// Until the connection closes.
    UntilClose,
    /// `Content-Length`: bytes still expected.
    Length(u64),
    Chunked(Chunked),
    Done,
}

#[derive(Debug)]
enum Chunked {
    /// Reading the size line (accumulated so far).
    Size(Vec<u8>),
    /// Inside chunk data: bytes remaining.
    Data(u64),
    /// Expecting the CRLF after chunk data (bytes of it seen).
    DataEnd(u8),
    /// After the last chunk: trailer lines until an empty one (current line so far).
    Trailer(Vec<u8>),
}

impl Body {
    fn from_headers(headers: &[(String, String)], no_body: bool) -> Result<Body, String> {
        if no_body {
            return Ok(Body::Done);
        }
        if let Some(te) = find_header(headers, "transfer-encoding")
            && te.to_ascii_lowercase().contains("chunked")
        {
            return Ok(Body::Chunked(Chunked::Size(Vec::new())));
        }
        if let Some(cl) = find_header(headers, "content-length") {
            let n = cl
                .trim()
                .parse::<u64>()
                .map_err(|_| format!("bad Content-Length: {cl:?}"))?;
            return Ok(if n == 0 { Body::Done } else { Body::Length(n) });
        }
        Ok(Body::UntilClose)
    }

    fn is_done(&self) -> bool {
        matches!(self, Body::Done)
    }

    /// Appends the decoded payload of `input` to `out`. Err on malformed chunked framing.
    fn decode(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        while !input.is_empty() {
            match self {
                Body::Done => return Ok(()), // bytes after the body: ignored
                Body::UntilClose => {
                    out.extend_from_slice(input);
                    return Ok(());
                }
                Body::Length(rem) => {
                    let n = (*rem).min(input.len() as u64) as usize;
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    *rem -= n as u64;
                    if *rem == 0 {
                        *self = Body::Done;
                    }
                }
                Body::Chunked(state) => match state {
                    Chunked::Size(line) => {
                        let b = input[0];
                        input = &input[1..];
                        if b == b'\n' {
                            let text = String::from_utf8_lossy(line).trim().to_string();
                            let hex = text.split(';').next().unwrap_or("").trim();
                            let size = u64::from_str_radix(hex, 16)
                                .map_err(|_| format!("bad chunk size line {text:?}"))?;
                            *state = if size == 0 {
                                Chunked::Trailer(Vec::new())
                            } else {
                                Chunked::Data(size)
                            };
                        } else {
                            line.push(b);
                            if line.len() > 1024 {
                                return Err("chunk size line too long".into());
                            }
                        }
                    }
                    Chunked::Data(rem) => {
                        let n = (*rem).min(input.len() as u64) as usize;
                        out.extend_from_slice(&input[..n]);
                        input = &input[n..];
                        *rem -= n as u64;
                        if *rem == 0 {
                            *state = Chunked::DataEnd(0);
                        }
                    }
                    Chunked::DataEnd(seen) => {
                        let b = input[0];
                        input = &input[1..];
                        match (b, *seen) {
                            (b'\r', 0) => *seen = 1,
                            (b'\n', _) => *state = Chunked::Size(Vec::new()),
                            _ => return Err(format!("expected CRLF after chunk, got {b:#04x}")),
                        }
                    }
                    Chunked::Trailer(line) => {
                        let b = input[0];
                        input = &input[1..];
                        if b == b'\n' {
                            if line.iter().all(|&c| c == b'\r') {
                                *self = Body::Done;
                            } else {
                                line.clear();
                            }
                        } else {
                            line.push(b);
                        }
                    }
                },
            }
        }
        Ok(())
    }
}

/// Status, reason and headers of a response, plus the body bytes read along with them.
struct Head {
    status: u16,
    reason: String,
    headers: Vec<(String, String)>,
    leftover: Vec<u8>,
}

/// Reads until the end of the response head (CRLFCRLF, or LFLF) or `deadline`.
fn read_head(stream: &mut TcpStream, deadline: Instant) -> Result<Head, String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let end = loop {
        let crlf = find(&buf, b"\r\n\r\n").map(|p| p + 4);
        let lf = find(&buf, b"\n\n").map(|p| p + 2);
        if let Some(end) = crlf.into_iter().chain(lf).min() {
            break end;
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(format!(
                "timed out reading the response head; got {:?}",
                String::from_utf8_lossy(&buf)
            ));
        }
        stream
            .set_read_timeout(Some(deadline - now))
            .map_err(|e| e.to_string())?;
        match stream.read(&mut chunk) {
            Ok(0) => {
                return Err(format!(
                    "connection closed before the end of the response head; got {:?}",
                    String::from_utf8_lossy(&buf)
                ));
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if is_retryable(&e) => {}
            Err(e) => {
                return Err(format!(
                    "read error {e} in the response head; got {:?}",
                    String::from_utf8_lossy(&buf)
                ));
            }
        }
    };
    let head_text = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head_text.lines();
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let status = parts.next().and_then(|s| s.parse::<u16>().ok());
    let (true, Some(status)) = (version.starts_with("HTTP/"), status) else {
        return Err(format!("bad status line {status_line:?} in {head_text:?}"));
    };
    let reason = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    for line in lines {
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("bad header line {line:?} in {head_text:?}"));
        };
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    Ok(Head {
        status,
        reason,
        headers,
        leftover: buf[end..].to_vec(),
    })
}

/// A streaming `GET` of an event stream.
pub struct SseClient {
    stream: TcpStream,
    status: u16,
    reason: String,
    headers: Vec<(String, String)>,
    body: Body,
    /// The parser (for `retry`, `last_event_id`, comments).
    pub parser: SseParser,
    events: VecDeque<SseEvent>,
    closed: bool,
    /// The first [`RAW_BODY_LIMIT`] decoded body bytes.
    pub raw_body: Vec<u8>,
    /// Total decoded body bytes received.
    pub body_len: u64,
}

impl SseClient {
    /// Connects, sends `GET path HTTP/1.1` with `Host`, `Accept: text/event-stream` (each
    /// replaced by an `extra_headers` entry of the same name) and `extra_headers`, and reads the
    /// response head. Panics if there is no well-formed head within [`HTTP_TIMEOUT`]; any status
    /// is accepted (check [`SseClient::status`]).
    pub fn connect(addr: SocketAddr, path: &str, extra_headers: &[(&str, &str)]) -> SseClient {
        SseClient::try_connect(addr, path, extra_headers).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`SseClient::connect`] that returns what went wrong (refused, closed unanswered…)
    /// instead of panicking, for clients that retry as an EventSource does.
    pub fn try_connect(
        addr: SocketAddr,
        path: &str,
        extra_headers: &[(&str, &str)],
    ) -> Result<SseClient, String> {
        let mut stream = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT)
            .map_err(|e| format!("SSE connect to {addr}: {e}"))?;
        stream.set_nodelay(true).ok();
        stream.set_write_timeout(Some(HTTP_TIMEOUT)).ok();
        let has = |name: &str| {
            extra_headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(name))
        };
        let mut req = format!("GET {path} HTTP/1.1\r\n");
        if !has("host") {
            req.push_str(&format!("Host: {addr}\r\n"));
        }
        if !has("accept") {
            req.push_str("Accept: text/event-stream\r\n");
        }
        for (name, value) in extra_headers {
            req.push_str(&format!("{name}: {value}\r\n"));
        }
        req.push_str("\r\n");
        stream
            .write_all(req.as_bytes())
            .map_err(|e| format!("SSE request write to {addr}: {e}"))?;
        let head = read_head(&mut stream, Instant::now() + HTTP_TIMEOUT)
            .map_err(|e| format!("SSE GET {path} from {addr}: {e}"))?;
        let body = Body::from_headers(&head.headers, false)
            .map_err(|e| format!("SSE GET {path} from {addr}: {e}"))?;
        let mut c = SseClient {
            stream,
            status: head.status,
            reason: head.reason,
            headers: head.headers,
            body,
            parser: SseParser::new(),
            events: VecDeque::new(),
            closed: false,
            raw_body: Vec::new(),
            body_len: 0,
        };
        c.ingest(&head.leftover);
        Ok(c)
    }

    pub fn status(&self) -> u16 {
        self.status
    }

    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// First header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// All response headers in order.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The next event, waiting up to `timeout`; `None` on timeout or end of stream.
    /// The `body` of the next unnamed (message) event, skipping named ones; `None` on timeout.
    pub fn next_message_body(&mut self, timeout: Duration) -> Option<String> {
        loop {
            let e = self.next_event(timeout)?;
            if e.event_type == "message" {
                let json = crate::json::parse(&e.data).expect("message data is JSON");
                return Some(
                    json.get("body")
                        .and_then(crate::json::Value::as_str)?
                        .to_string(),
                );
            }
        }
    }

    /// Reads up to the first `message` event: the `status` values of the status events before
    /// it, and its body. Panics, naming `what`, when an event takes over `timeout` or has
    /// another type.
    pub fn statuses_then_message(
        &mut self,
        timeout: Duration,
        what: &str,
    ) -> (Vec<String>, String) {
        let mut statuses = Vec::new();
        loop {
            let e = self
                .next_event(timeout)
                .unwrap_or_else(|| panic!("{what}: no event within {timeout:?}"));
            match e.event_type.as_str() {
                "status" => statuses.push(
                    field(&e, "status").unwrap_or_else(|| panic!("{what}: no status in {e:?}")),
                ),
                "message" => return (statuses, body(&e)),
                other => panic!("{what}: unexpected {other} event: {e:?}"),
            }
        }
    }

    pub fn next_event(&mut self, timeout: Duration) -> Option<SseEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.events.pop_front() {
                return Some(e);
            }
            let now = Instant::now();
            if self.closed || now >= deadline {
                return None;
            }
            self.read_some(deadline - now);
        }
    }

    /// Up to `n` events within `timeout` overall (fewer if time runs out or the stream ends).
    pub fn collect(&mut self, n: usize, timeout: Duration) -> Vec<SseEvent> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match self.next_event(remaining) {
                Some(e) => out.push(e),
                None => break,
            }
        }
        out
    }

    /// Reads (queueing events) until the server ends the stream; true if it did within
    /// `timeout`.
    pub fn wait_closed(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.closed {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            self.read_some(deadline - now);
        }
        true
    }

    /// Whether the server closed the connection (or the body ended).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Events parsed but not yet returned by [`SseClient::next_event`].
    pub fn pending_events(&self) -> usize {
        self.events.len()
    }

    /// The underlying socket (e.g. to stop reading, shut down, or check `local_addr`).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    fn read_some(&mut self, max_wait: Duration) {
        let wait = max_wait.max(Duration::from_millis(1));
        self.stream.set_read_timeout(Some(wait)).ok();
        let mut chunk = [0u8; 16384];
        match self.stream.read(&mut chunk) {
            Ok(0) => self.closed = true,
            Ok(n) => self.ingest(&chunk[..n]),
            Err(e) if is_retryable(&e) => {}
            Err(_) => self.closed = true,
        }
    }

    fn ingest(&mut self, bytes: &[u8]) {
        let mut decoded = Vec::new();
        if let Err(e) = self.body.decode(bytes, &mut decoded) {
            panic!("SSE body framing error: {e}");
        }
        self.body_len += decoded.len() as u64;
        let keep = RAW_BODY_LIMIT.saturating_sub(self.raw_body.len());
        self.raw_body
            .extend_from_slice(&decoded[..keep.min(decoded.len())]);
        self.events.extend(self.parser.feed(&decoded));
        if self.body.is_done() {
            self.closed = true;
        }
    }
}

/// Writes `request` as is (write errors ignored: the server may close early), then reads until
/// the server closes, a read error, or `timeout` (overall) — whatever was read is returned.
/// The write side is not shut down, so a server waiting for the rest of an incomplete request
/// only ends the exchange by its own timeout.
pub fn http_raw(addr: SocketAddr, request: &[u8], timeout: Duration) -> Vec<u8> {
    let deadline = Instant::now() + timeout;
    let mut stream = TcpStream::connect_timeout(&addr, timeout.min(HTTP_TIMEOUT))
        .unwrap_or_else(|e| panic!("http_raw connect to {addr}: {e}"));
    stream
        .set_write_timeout(Some(timeout.max(Duration::from_millis(1))))
        .ok();
    let _ = stream.write_all(request);
    let mut out = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return out;
        }
        stream.set_read_timeout(Some(deadline - now)).ok();
        match stream.read(&mut chunk) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if is_retryable(&e) => {}
            Err(_) => return out,
        }
    }
}

/// `GET path` with `Connection: close`; returns `(status, headers, body)` with the body decoded
/// (Content-Length, chunked, or until close) as lossy UTF-8. Panics if the response is not
/// complete within [`HTTP_TIMEOUT`] (so don't use it on an event stream).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, Vec<(String, String)>, String) {
    let (status, headers, body) = http_request(addr, "GET", path, &[]);
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

/// One request with `Host`, `Connection: close` and `headers`, reading the whole response
/// (no body for `HEAD`, 1xx, 204 and 304). Panics on timeout ([`HTTP_TIMEOUT`]) or bad framing.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let deadline = Instant::now() + HTTP_TIMEOUT;
    let mut stream = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT)
        .unwrap_or_else(|e| panic!("{method} {path}: connect to {addr}: {e}"));
    stream.set_write_timeout(Some(HTTP_TIMEOUT)).ok();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    stream
        .write_all(req.as_bytes())
        .unwrap_or_else(|e| panic!("{method} {path}: write to {addr}: {e}"));
    let head = read_head(&mut stream, deadline)
        .unwrap_or_else(|e| panic!("{method} {path} from {addr}: {e}"));
    let no_body = method.eq_ignore_ascii_case("HEAD")
        || head.status < 200
        || head.status == 204
        || head.status == 304;
    let mut body_state = Body::from_headers(&head.headers, no_body)
        .unwrap_or_else(|e| panic!("{method} {path} from {addr}: {e}"));
    let mut body = Vec::new();
    body_state
        .decode(&head.leftover, &mut body)
        .unwrap_or_else(|e| panic!("{method} {path} from {addr}: {e}"));
    let mut chunk = [0u8; 16384];
    while !body_state.is_done() {
        let now = Instant::now();
        if now >= deadline {
            panic!(
                "{method} {path} from {addr}: response body not complete after {HTTP_TIMEOUT:?} (status {}, headers {:?}); body so far {:?}",
                head.status,
                head.headers,
                String::from_utf8_lossy(&body)
            );
        }
        stream.set_read_timeout(Some(deadline - now)).ok();
        match stream.read(&mut chunk) {
            Ok(0) => match body_state {
                Body::UntilClose => break,
                _ => panic!(
                    "{method} {path} from {addr}: connection closed inside the body ({body_state:?}); body so far {:?}",
                    String::from_utf8_lossy(&body)
                ),
            },
            Ok(n) => body_state
                .decode(&chunk[..n], &mut body)
                .unwrap_or_else(|e| panic!("{method} {path} from {addr}: {e}")),
            Err(e) if is_retryable(&e) => {}
            Err(e)
                if matches!(body_state, Body::UntilClose)
                    && e.kind() == ErrorKind::ConnectionReset =>
            {
                break;
            }
            Err(e) => panic!("{method} {path} from {addr}: read error {e}"),
        }
    }
    (head.status, head.headers, body)
}

/// First header named `name` (case-insensitive) in `headers`.
pub fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn is_retryable(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
