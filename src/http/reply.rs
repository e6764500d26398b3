//! A complete HTTP response and its builders: the `Reply` every non-stream answer is, its bytes
//! on the wire, the answer to an unparsable head, the refusal a browser recovers from, and the
//! head of an event stream. Pure: no I/O, no routing (that is [`super::routes`]).

use super::request::{Head, Reject};
use crate::rooms::frame::Json;

/// A complete response (everything but streams).
#[derive(Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    /// Extra header lines, each ending in CRLF.
    pub headers: String,
    pub body: Vec<u8>,
    /// `HEAD` requests get the headers only.
    pub head_only: bool,
}

impl Reply {
    pub fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply::with_type(
            status,
            "text/plain; charset=utf-8",
            body.into().into_bytes(),
        )
    }

    pub fn with_type(status: u16, content_type: &'static str, body: Vec<u8>) -> Reply {
        Reply {
            status,
            content_type,
            headers: String::new(),
            body,
            head_only: false,
        }
    }

    /// Adds a header line.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push_str(name);
        self.headers.push_str(": ");
        self.headers.push_str(value);
        self.headers.push_str("\r\n");
        self
    }

    /// The whole response, ready to write (`204` and `304` carry neither body nor length; the
    /// `HEAD` of an event stream carries no length either, as its `GET` has none). Every reply
    /// says `X-Content-Type-Options: nosniff`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let no_body = self.status == 204 || self.status == 304;
        let close_delimited = self.head_only && self.content_type == "text/event-stream";
        let framing = if no_body {
            String::new()
        } else if close_delimited {
            format!("Content-Type: {}\r\n", self.content_type)
        } else {
            format!(
                "Content-Type: {}\r\nContent-Length: {}\r\n",
                self.content_type,
                self.body.len()
            )
        };
        let nosniff = if self
            .headers
            .to_ascii_lowercase()
            .contains("x-content-type-options:")
        {
            ""
        } else {
            "X-Content-Type-Options: nosniff\r\n"
        };
        let mut out = format!(
            "HTTP/1.1 {} {}\r\n{framing}{nosniff}Connection: close\r\n{}\r\n",
            self.status,
            reason(self.status),
            self.headers
        )
        .into_bytes();
        if !self.head_only && !no_body {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        304 => "Not Modified",
        401 => "Unauthorized",
        403 => "Forbidden",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// The answer to a request head that could not be parsed.
pub fn reject(why: Reject) -> Reply {
    match why {
        Reject::Malformed(what) => Reply::text(400, format!("bad request: {what}\n")),
        Reject::TooLarge => Reply::text(431, "request head too large\n"),
    }
}

/// A refusal a browser recovers from. An EventSource gives up for good on any status but
/// 200, leaving a wall display frozen; so it gets a 200 event stream holding `retry:` and a
/// `status` event, which ends at once: the browser reconnects after `retry`. Other clients
/// get `503` with `Retry-After`.
pub fn try_later(head: &Head, cors: &str, reason: &str, retry_secs: u32) -> Reply {
    if !head.wants_event_stream {
        return Reply::text(503, format!("{reason}; retry later\n"))
            .header("Retry-After", &retry_secs.to_string());
    }
    let json = Json::new()
        .str("status", "unavailable")
        .str("reason", reason)
        .finish();
    let mut body = format!("retry: {}\n\nevent: status\ndata: ", retry_secs * 1000).into_bytes();
    body.extend_from_slice(&json);
    body.extend_from_slice(b"\n\n");
    let mut reply =
        Reply::with_type(200, "text/event-stream", body).header("Cache-Control", "no-cache");
    reply.headers.push_str(cors);
    reply
}

/// The head of every event stream: what `mod_muc_eventsource` sends (`*` is replaced by the
/// CORS lines for the request), plus `Cache-Control` and `X-Accel-Buffering` for proxies.
pub fn stream_head(cors: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\n\
Content-Type: text/event-stream\r\n\
Cache-Control: no-cache\r\n\
{cors}\
Access-Control-Allow-Methods: GET\r\n\
Access-Control-Max-Age: 7200\r\n\
X-Accel-Buffering: no\r\n\
X-Content-Type-Options: nosniff\r\n\
Connection: close\r\n\r\n"
    )
}

/// The answer to `HEAD` of a stream: the header fields its `GET` gets (RFC 9110 §9.3.2), no body.
pub fn stream_head_only(cors: &str) -> Reply {
    let mut reply = Reply::with_type(200, "text/event-stream", Vec::new())
        .header("Cache-Control", "no-cache")
        .header("Access-Control-Allow-Methods", "GET")
        .header("Access-Control-Max-Age", "7200")
        .header("X-Accel-Buffering", "no");
    reply.headers.push_str(cors);
    reply.head_only = true;
    reply
}
