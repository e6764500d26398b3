//! The HTTP/1.1 request head: parsed strictly with `httparse` into the few facts the routes use.
//!
//! Request bodies are never read (every response closes the connection), so `Expect:
//! 100-continue` and `Transfer-Encoding` need no handling beyond being ignored. The framing
//! rules RFC 9112 makes a server's MUST are kept all the same: an HTTP/1.1 request without
//! `Host`, any request with two `Host` lines or an invalid one (§3.2), and a `Content-Length`
//! that is not one plain number (§6.3) are `400`.

/// Headers accepted in one request; more is `431`.
pub const MAX_HEADERS: usize = 48;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Options,
    Other,
}

/// What the routes need from a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub method: Method,
    /// Path part of the target, still percent-encoded.
    pub path: String,
    /// Query part without the `?` (empty when none).
    pub query: String,
    /// The `Last-Event-ID` header a reconnecting EventSource sends.
    pub last_event_id: Option<String>,
    /// `Origin` (CORS).
    pub origin: Option<String>,
    /// The token of an `Authorization: Bearer <token>` header.
    pub bearer: Option<String>,
    /// `If-None-Match` (ETag revalidation of pages).
    pub if_none_match: Option<String>,
    /// `Accept` names `text/event-stream`: the client is an EventSource, which gives up for good
    /// on any status but 200.
    pub wants_event_stream: bool,
}

/// Why a request head is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// `400`: not HTTP/1.x, or a malformed line or header.
    Malformed(&'static str),
    /// `431`: head larger than `max_head_bytes` or too many headers.
    TooLarge,
}

/// Parses the head at the start of `buf`. `Ok(None)`: incomplete, read more (the caller
/// enforces the size limit and answers [`Reject::TooLarge`] when `buf` is full).
pub fn parse(buf: &[u8]) -> Result<Option<Head>, Reject> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let status = match req.parse(buf) {
        Ok(s) => s,
        Err(httparse::Error::TooManyHeaders) => return Err(Reject::TooLarge),
        Err(httparse::Error::Version) => return Err(Reject::Malformed("not an HTTP/1.x request")),
        Err(httparse::Error::Token | httparse::Error::Status) => {
            return Err(Reject::Malformed("malformed method or request line"));
        }
        Err(_) => return Err(Reject::Malformed("malformed request line or header")),
    };
    if status.is_partial() {
        return Ok(None);
    }
    let method = match req.method.unwrap_or("") {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "OPTIONS" => Method::Options,
        _ => Method::Other,
    };
    let target = req.path.unwrap_or("");
    if !(target.starts_with('/') || (method == Method::Options && target == "*")) {
        return Err(Reject::Malformed(
            "request target must be a path starting with /",
        ));
    }
    // A fragment never belongs to the request; drop it wherever it starts.
    let target = target.split('#').next().unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut head = Head {
        method,
        path: path.to_string(),
        query: query.to_string(),
        last_event_id: None,
        origin: None,
        bearer: None,
        if_none_match: None,
        wants_event_stream: false,
    };
    check_framing(req.version, req.headers)?;
    for header in req.headers.iter() {
        let name = header.name;
        let known = [
            "last-event-id",
            "origin",
            "authorization",
            "if-none-match",
            "accept",
        ];
        if !known.iter().any(|k| name.eq_ignore_ascii_case(k)) {
            continue;
        }
        let value = std::str::from_utf8(header.value)
            .map_err(|_| Reject::Malformed("a header value is not UTF-8"))?
            // Only HTTP's own whitespace (RFC 9110 OWS): `str::trim` would also eat U+2028,
            // U+3000…, which an event id may end with.
            .trim_matches([' ', '\t'])
            .to_string();
        if name.eq_ignore_ascii_case("last-event-id") {
            head.last_event_id = Some(value);
        } else if name.eq_ignore_ascii_case("origin") {
            head.origin = Some(value);
        } else if name.eq_ignore_ascii_case("authorization") {
            let (scheme, token) = value.split_once(' ').unwrap_or((&value, ""));
            if scheme.eq_ignore_ascii_case("bearer") {
                head.bearer = Some(token.trim_matches([' ', '\t']).to_string());
            }
        } else if name.eq_ignore_ascii_case("if-none-match") {
            head.if_none_match = Some(value);
        } else if value.contains("text/event-stream") {
            head.wants_event_stream = true;
        }
    }
    Ok(Some(head))
}

/// The RFC 9112 MUSTs on `Host` (§3.2) and `Content-Length` (§6.3): both answer `400`.
fn check_framing(version: Option<u8>, headers: &[httparse::Header]) -> Result<(), Reject> {
    let named = |name: &'static str| {
        headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let mut hosts = named("host");
    match (hosts.next(), hosts.next()) {
        (None, _) if version == Some(1) => {
            return Err(Reject::Malformed("an HTTP/1.1 request needs a Host header"));
        }
        (Some(_), Some(_)) => return Err(Reject::Malformed("more than one Host header")),
        (Some(host), None) if !valid_host(host) => {
            return Err(Reject::Malformed("invalid Host header"));
        }
        _ => {}
    }
    let mut lengths = named("content-length");
    match (lengths.next(), lengths.next()) {
        (Some(_), Some(_)) => Err(Reject::Malformed("more than one Content-Length header")),
        (Some(length), None) if !valid_length(length) => {
            Err(Reject::Malformed("invalid Content-Length header"))
        }
        _ => Ok(()),
    }
}

/// `uri-host [ ":" port ]` (RFC 3986 reg-name, IPv4 or IP-literal), or empty; surrounding
/// whitespace is optional whitespace. Checked by characters: enough to refuse what no host can
/// contain (spaces, `/`, `@`, `?`, controls…).
fn valid_host(value: &[u8]) -> bool {
    let value = value.trim_ascii();
    value
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:[]%".contains(&b))
}

/// `1*DIGIT`, at most 19 digits (so it fits a u64).
fn valid_length(value: &[u8]) -> bool {
    let value = value.trim_ascii();
    !value.is_empty() && value.len() <= 19 && value.iter().all(u8::is_ascii_digit)
}

/// Values of query parameter `name` (`a=1&b=2&a=3`), percent-decoded; broken ones are skipped.
pub fn query_values<'q>(query: &'q str, name: &'q str) -> impl Iterator<Item = String> + 'q {
    query.split('&').filter_map(move |pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| percent_decode(value)).flatten()
    })
}

/// Percent-encodes everything but RFC 3986 unreserved characters (a path segment or a query
/// value); [`percent_decode`] reverses it.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX` escapes; `None` if an escape is broken or the result is not UTF-8.
pub fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            // Two hex digits exactly: `u8::from_str_radix` alone would take `%+1` as 0x01.
            let hi = char::from(*bytes.get(i + 1)?).to_digit(16)?;
            let lo = char::from(*bytes.get(i + 2)?).to_digit(16)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// [`parse`] for unit tests written as one string: adds `Host` to an HTTP/1.1 request that
/// lacks one (so each test need not repeat it), and expects a complete, valid head.
#[cfg(test)]
pub fn parse_test(req: &str) -> Head {
    let mut req = req.to_string();
    if !req.to_ascii_lowercase().contains("\r\nhost:")
        && let Some(end) = req.find(" HTTP/1.1\r\n")
    {
        req.insert_str(end + " HTTP/1.1\r\n".len(), "Host: test\r\n");
    }
    match parse(req.as_bytes()) {
        Ok(Some(head)) => head,
        other => panic!("{req:?}: {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_browser_request() {
        let req = b"GET /eventsource/lobby?x=1 HTTP/1.1\r\nHost: h\r\nAccept: text/event-stream\r\nExpect: 100-continue\r\n\r\n";
        let head = parse(req).unwrap().unwrap();
        assert_eq!(head.method, Method::Get);
        assert_eq!(
            (head.path.as_str(), head.query.as_str()),
            ("/eventsource/lobby", "x=1")
        );
        assert_eq!(parse(&req[..20]).unwrap(), None);
        let req = b"GET /e/x HTTP/1.1\r\nHost: h\r\nlast-event-id:  abc-1 \r\n\r\n";
        assert_eq!(
            parse(req).unwrap().unwrap().last_event_id.as_deref(),
            Some("abc-1")
        );
    }

    #[test]
    fn query_parameters() {
        let q = "room=a&history=5&room=b%20c&x&room=%zz";
        assert_eq!(
            query_values(q, "room").collect::<Vec<_>>(),
            vec!["a", "b c"]
        );
        assert_eq!(query_values(q, "history").next().as_deref(), Some("5"));
        assert_eq!(query_values(q, "x").next().as_deref(), Some(""));
        assert_eq!(query_values(q, "nope").next(), None);
    }

    #[test]
    fn rejects_what_is_not_http() {
        assert!(matches!(
            parse(b"GET / SPDY/3\r\n\r\n"),
            Err(Reject::Malformed(_))
        ));
        assert!(matches!(
            parse(b"G\x01T / HTTP/1.1\r\n\r\n"),
            Err(Reject::Malformed(_))
        ));
        assert!(matches!(
            parse(b"GET http://x/ HTTP/1.1\r\n\r\n"),
            Err(Reject::Malformed(_))
        ));
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nHost: h\r\nBad Header\r\n\r\n"),
            Err(Reject::Malformed(_))
        ));
        let many = format!(
            "GET / HTTP/1.1\r\nHost: h\r\n{}\r\n",
            "A: b\r\n".repeat(MAX_HEADERS + 1)
        );
        assert_eq!(parse(many.as_bytes()), Err(Reject::TooLarge));
    }

    #[test]
    fn host_rules_of_rfc_9112() {
        let malformed = |req: &str| matches!(parse(req.as_bytes()), Err(Reject::Malformed(_)));
        // HTTP/1.1 needs exactly one valid Host; HTTP/1.0 may omit it.
        assert!(malformed("GET / HTTP/1.1\r\n\r\n"));
        assert!(malformed("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"));
        assert!(malformed("GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n"));
        assert!(malformed("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"));
        assert!(malformed("GET / HTTP/1.1\r\nHost: u@evil\r\n\r\n"));
        assert!(malformed("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"));
        assert!(parse(b"GET / HTTP/1.0\r\n\r\n").unwrap().is_some());
        for host in [
            "pi.lan:8080",
            "[::1]:80",
            "10.0.0.1",
            "",
            "xn--caf-dma.example",
        ] {
            let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
            assert!(parse(req.as_bytes()).unwrap().is_some(), "{host:?}");
        }
    }

    #[test]
    fn content_length_rules_of_rfc_9112() {
        let with =
            |lines: &str| parse(format!("GET / HTTP/1.1\r\nHost: h\r\n{lines}\r\n").as_bytes());
        for bad in [
            "Content-Length: x\r\n",
            "Content-Length: -1\r\n",
            "Content-Length: 1, 1\r\n",
            "Content-Length: \r\n",
            "Content-Length: 99999999999999999999\r\n",
            "Content-Length: 0\r\nContent-Length: 0\r\n",
            "Content-Length: 1\r\ncontent-length: 2\r\n",
        ] {
            assert!(matches!(with(bad), Err(Reject::Malformed(_))), "{bad:?}");
        }
        assert!(with("Content-Length: 0\r\n").unwrap().is_some());
        assert!(with("Content-Length:  12 \r\n").unwrap().is_some());
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("caf%C3%A9").as_deref(), Some("café"));
        assert_eq!(percent_decode("a%2"), None);
        assert_eq!(percent_decode("a%zz"), None);
        assert_eq!(percent_decode("%ff"), None);
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
    }
}
