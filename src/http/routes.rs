//! Routing: which answer a parsed request gets. Pure: no I/O, so every answer is unit-tested.

use super::request::{Head, Method, Reject, percent_decode};
use crate::rooms::table::RoomTable;

/// Headers every event stream carries: what `mod_muc_eventsource` sends, plus `Cache-Control`.
pub const STREAM_HEAD: &str = "HTTP/1.1 200 OK\r\n\
Content-Type: text/event-stream\r\n\
Cache-Control: no-cache\r\n\
Access-Control-Allow-Origin: *\r\n\
Access-Control-Allow-Methods: GET\r\n\
Access-Control-Max-Age: 7200\r\n\
X-Accel-Buffering: no\r\n\
Connection: close\r\n\r\n";

#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// Send [`STREAM_HEAD`] and stream this room's events.
    Stream { room: usize },
    /// Send this complete response and close.
    Reply(Reply),
}

#[derive(Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub headers: &'static str,
    pub body: String,
    /// `HEAD` requests get the headers only.
    pub head_only: bool,
}

impl Reply {
    fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            headers: "",
            body: body.into(),
            head_only: false,
        }
    }

    /// The whole response, ready to write.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n{}\r\n",
            self.status,
            reason(self.status),
            self.body.len(),
            self.headers
        )
        .into_bytes();
        if !self.head_only {
            out.extend_from_slice(self.body.as_bytes());
        }
        out
    }
}

pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
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

pub fn route(head: &Head, table: &RoomTable) -> Route {
    if head.method == Method::Options {
        return Route::Reply(Reply {
            status: 204,
            headers: "Access-Control-Allow-Origin: *\r\nAccess-Control-Allow-Methods: GET\r\nAccess-Control-Allow-Headers: Last-Event-ID, Cache-Control\r\nAccess-Control-Max-Age: 7200\r\n",
            body: String::new(),
            head_only: false,
        });
    }
    if head.method == Method::Other {
        return Route::Reply(Reply {
            headers: "Allow: GET, HEAD, OPTIONS\r\n",
            ..Reply::text(405, "only GET is served here\n")
        });
    }
    let reply = |r: Reply| {
        Route::Reply(Reply {
            head_only: head.method == Method::Head,
            ..r
        })
    };
    if head.path == "/" {
        let mut body = String::from("muc-eventsource: rooms served as EventSource streams\n\n");
        for room in table.rooms() {
            body.push_str(&format!("/eventsource/{}\t{}\n", room.node, room.jid));
        }
        return reply(Reply::text(200, body));
    }
    let Some(encoded) = head.path.strip_prefix("/eventsource/") else {
        return reply(Reply::text(
            404,
            "not found; streams are at /eventsource/<room>\n",
        ));
    };
    let Some(node) = percent_decode(encoded) else {
        return reply(Reply::text(
            400,
            "bad request: broken percent-encoding in the room name\n",
        ));
    };
    match table.find_node(&node) {
        Some(room) if head.method == Method::Get => Route::Stream { room },
        Some(_) => reply(Reply::text(200, "")),
        None => reply(Reply::text(404, "no such room is served here\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::parse;

    fn table() -> RoomTable {
        let mut t = RoomTable::new(2, 4, 4096, 4);
        t.add("lobby", "conference.localhost");
        t.add("café", "conference.localhost");
        t
    }

    fn answer(req: &str) -> Route {
        route(&parse(req.as_bytes()).unwrap().unwrap(), &table())
    }

    fn status(req: &str) -> u16 {
        match answer(req) {
            Route::Stream { .. } => 200,
            Route::Reply(r) => r.status,
        }
    }

    #[test]
    fn rooms_stream_and_everything_else_is_answered() {
        assert_eq!(
            answer("GET /eventsource/lobby HTTP/1.1\r\n\r\n"),
            Route::Stream { room: 0 }
        );
        assert_eq!(
            answer("GET /eventsource/caf%C3%A9?x HTTP/1.1\r\n\r\n"),
            Route::Stream { room: 1 }
        );
        assert_eq!(
            answer("GET /eventsource/LOBBY HTTP/1.0\r\n\r\n"),
            Route::Stream { room: 0 }
        );
        assert_eq!(status("GET /eventsource/nope HTTP/1.1\r\n\r\n"), 404);
        assert_eq!(status("GET /eventsource/ HTTP/1.1\r\n\r\n"), 404);
        assert_eq!(status("GET /eventsource/a%zz HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status("GET /other HTTP/1.1\r\n\r\n"), 404);
        assert_eq!(status("POST /eventsource/lobby HTTP/1.1\r\n\r\n"), 405);
        assert_eq!(status("OPTIONS /eventsource/lobby HTTP/1.1\r\n\r\n"), 204);
        assert_eq!(status("GET / HTTP/1.1\r\n\r\n"), 200);
        match answer("HEAD /eventsource/lobby HTTP/1.1\r\n\r\n") {
            Route::Reply(r) => assert!(r.head_only && r.status == 200),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn replies_have_a_length_and_close() {
        let r = reject(Reject::TooLarge).to_bytes();
        let text = String::from_utf8(r).unwrap();
        assert!(text.starts_with("HTTP/1.1 431 "), "{text}");
        assert!(text.contains("Content-Length: 23\r\n"), "{text}");
        assert!(text.contains("Connection: close\r\n"));
    }
}
