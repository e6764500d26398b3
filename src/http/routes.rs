//! Routing: which answer a parsed request gets. The one dispatcher: streams (`/eventsource…`),
//! the monitor's pages and assets ([`super::pages`]), `/healthz` ([`super::health`]) and
//! `/metrics` ([`super::metrics`]), which only build replies. Pure: no I/O, so every answer is
//! unit-tested.

use std::time::SystemTime;

use super::access::{self, Access};
use super::reply::{Reply, stream_head, stream_head_only, try_later};
use super::request::{Head, Method, percent_decode, query_values};
use super::start::Start;
use super::{health, metrics, multi, pages};
use crate::config::Config;
use crate::rooms::resume::EventId;
use crate::rooms::ring::kind;
use crate::rooms::table::{JoinState, Origin, ROOM_MISSING, Room, RoomTable};

#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// Send `head` (from [`stream_head`]) and stream this room's events of the kinds in `mask`.
    Stream {
        room: usize,
        start: Start,
        mask: u8,
        head: String,
    },
    /// Like `Stream`, merging several rooms (`/eventsource?room=a&room=b`).
    Multi {
        rooms: Vec<usize>,
        start: Start,
        mask: u8,
        head: String,
    },
    /// A room is still being joined: ask again shortly, and send this reply if it still is.
    NotReady(Reply),
    /// Send this complete response and close.
    Reply(Reply),
}

/// What `head` gets: a preflight or 405 by method, then the monitor's paths, then a stream.
pub fn route(head: &Head, table: &RoomTable, config: &Config) -> Route {
    let cors = access::cors(config, head.origin.as_deref());
    match head.method {
        Method::Options => return Route::Reply(preflight(&cors)),
        Method::Other => {
            return Route::Reply(
                Reply::text(405, "only GET is served here\n").header("Allow", "GET, HEAD, OPTIONS"),
            );
        }
        Method::Get | Method::Head => {}
    }
    if let Some(r) = monitor(head, table, config) {
        return Route::Reply(r);
    }
    if head.path == "/eventsource" {
        return multi(head, table, config, &cors);
    }
    single(head, table, config, &cors)
}

/// The answer to a CORS preflight (`OPTIONS`).
fn preflight(cors: &str) -> Reply {
    let mut reply = Reply::text(204, "")
        .header("Access-Control-Allow-Methods", "GET")
        .header(
            "Access-Control-Allow-Headers",
            "Last-Event-ID, Cache-Control, Authorization",
        )
        .header("Access-Control-Max-Age", "7200");
    reply.headers.push_str(cors);
    reply
}

/// A complete reply to `head`, without its body for a `HEAD`.
fn answer(head: &Head, r: Reply) -> Route {
    Route::Reply(Reply {
        head_only: head.method == Method::Head,
        ..r
    })
}

/// `/eventsource/<room>`: one room's stream, once its name, its origin and its access allow.
fn single(head: &Head, table: &RoomTable, config: &Config, cors: &str) -> Route {
    let Some(encoded) = head.path.strip_prefix("/eventsource/") else {
        return answer(
            head,
            Reply::text(404, "not found; streams are at /eventsource/<room>\n"),
        );
    };
    let Some(node) = percent_decode(encoded) else {
        return answer(
            head,
            Reply::text(
                400,
                "bad request: broken percent-encoding in the room name\n",
            ),
        );
    };
    let Some(index) = table.find_node(&node) else {
        return answer(head, not_served());
    };
    let room = table.room(index);
    if room.origin() == Origin::OnDemand
        && let Some(refused) = on_demand(head, config, room, cors)
    {
        return refused;
    }
    if let Some(refused) = admit(head, table, config, room, cors) {
        return refused;
    }
    if head.method == Method::Head {
        return answer(head, stream_head_only(cors));
    }
    Route::Stream {
        room: index,
        start: start(head, false),
        mask: mask(head, kind::DEFAULT | config.events),
        head: stream_head(cors),
    }
}

/// An on-demand room: the daemon has not acted for anyone yet. A room this request may not
/// read (hidden, members-only, password, missing, or refused by the global token) answers
/// exactly as a name the table does not hold, so none can be told apart. `None`: go on.
fn on_demand(head: &Head, config: &Config, room: &Room, cors: &str) -> Option<Route> {
    let credential = access::Credential::of(head, config);
    if !access::passes_global(config, &credential)
        || room.state() == JoinState::Failed(ROOM_MISSING)
    {
        return Some(answer(head, not_served()));
    }
    if !room.info.borrow().known {
        let r = try_later(head, cors, "the room is being looked up", 5);
        return Some(Route::NotReady(Reply {
            head_only: head.method == Method::Head,
            ..r
        }));
    }
    if access::check_with(config, room, &credential) != Access::Allow {
        return Some(answer(head, not_served()));
    }
    None
}

/// Whether the room exists, this request may read it, and it is still there; `None`: stream it.
fn admit(
    head: &Head,
    table: &RoomTable,
    config: &Config,
    room: &Room,
    cors: &str,
) -> Option<Route> {
    if room.state() == JoinState::Failed(ROOM_MISSING) {
        // The MUC service says so (disco#info); the room is never created by us.
        return Some(answer(
            head,
            Reply::text(404, "no such room on the MUC service\n"),
        ));
    }
    match access::check(config, room, head) {
        Access::Allow => {}
        Access::Forbidden(why) => {
            table.stats().rejected_forbidden.add(1);
            return Some(answer(head, Reply::text(403, format!("{why}\n"))));
        }
        Access::NotYetKnown => {
            let r = try_later(head, cors, "the room is being joined", 5);
            return Some(Route::NotReady(Reply {
                head_only: head.method == Method::Head,
                ..r
            }));
        }
    }
    if let JoinState::Gone(why) = room.state() {
        // 204 tells an EventSource to stop reconnecting (HTML, server-sent events §9.2.1).
        return Some(answer(head, Reply::text(204, format!("{why}\n"))));
    }
    None
}

/// The monitor's paths (`/`, `/view/<room>`, `/assets/…`, `/healthz`, `/metrics`) for `GET`
/// and `HEAD`; `None` for every other request. The pages and the health and metrics reports
/// name only the rooms [`pages::listed`] lets this request see.
pub fn monitor(head: &Head, table: &RoomTable, config: &Config) -> Option<Reply> {
    if !matches!(head.method, Method::Get | Method::Head) {
        return None;
    }
    let listed = |room: &Room| pages::listed(head, config, room);
    let path = head.path.as_str();
    let reply = if path == "/" {
        pages::index(head, table, config, SystemTime::now())
    } else if let Some(encoded) = path.strip_prefix("/view/") {
        pages::view(head, table, config, encoded)
    } else if let Some(name) = path.strip_prefix("/assets/") {
        pages::asset(head, name)
    } else if path == "/healthz" {
        health::reply(table, &listed)
    } else if path == "/metrics" {
        metrics::reply(table, &listed)
    } else {
        return None;
    };
    Some(Reply {
        head_only: head.method == Method::Head,
        ..reply
    })
}

/// `/eventsource?room=a&room=b`: several rooms on one stream.
fn multi(head: &Head, table: &RoomTable, config: &Config, cors: &str) -> Route {
    let head_only = head.method == Method::Head;
    let reply = |r: Reply| Route::Reply(Reply { head_only, ..r });
    let mut rooms = Vec::new();
    for node in query_values(&head.query, "room") {
        let Some(index) = table.find_node(&node) else {
            return reply(not_served());
        };
        let room = table.room(index);
        // On-demand rooms are added by single-room requests only; one this request may not
        // read (or not yet known) answers as a name never asked for.
        if room.origin() == Origin::OnDemand && access::check(config, room, head) != Access::Allow {
            return reply(not_served());
        }
        if !rooms.contains(&index) {
            rooms.push(index);
        }
    }
    if rooms.is_empty() {
        return reply(Reply::text(
            400,
            "name the rooms: /eventsource?room=a&room=b\n",
        ));
    }
    if rooms.len() > multi::MAX_ROOMS {
        return reply(Reply::text(
            400,
            format!("at most {} rooms per stream\n", multi::MAX_ROOMS),
        ));
    }
    for &index in &rooms {
        match access::check(config, table.room(index), head) {
            Access::Allow => {}
            Access::Forbidden(why) => {
                table.stats().rejected_forbidden.add(1);
                let node = &table.room(index).node();
                return reply(Reply::text(403, format!("room `{node}`: {why}\n")));
            }
            Access::NotYetKnown => {
                let r = try_later(head, cors, "a room is being joined", 5);
                return Route::NotReady(Reply { head_only, ..r });
            }
        }
    }
    rooms.retain(|&i| !matches!(table.room(i).state(), JoinState::Gone(_)));
    if rooms.is_empty() {
        return reply(Reply::text(204, ""));
    }
    if head.method == Method::Head {
        return Route::Reply(stream_head_only(cors));
    }
    Route::Multi {
        rooms,
        start: start(head, true),
        mask: mask(head, kind::DEFAULT | config.events),
        head: stream_head(cors),
    }
}

/// The answer for a room name the table does not hold, and for an on-demand room this request
/// may not read (see [`route`]).
fn not_served() -> Reply {
    Reply::text(404, "no such room is served here\n")
}

/// The reason an on-demand entry nobody may read is retired with (its name is then forgotten).
pub const ON_DEMAND_RETIRED: &str = "nobody reads this on-demand room";

/// The event kinds a stream gets: `base` plus those named in `?events=join,leave`.
fn mask(head: &Head, base: u8) -> u8 {
    query_values(&head.query, "events")
        .flat_map(|list| {
            list.split(',')
                .filter_map(|name| kind::from_name(name.trim()))
                .collect::<Vec<_>>()
        })
        .fold(base, |m, k| m | k)
}

/// Where a stream starts: a resume id (`Last-Event-ID` wins over `?lastEventId=`) is taken
/// only in a shape this daemon issues, a composite one for a stream of several rooms (`multi`);
/// any other is [`Start::Unknown`].
pub fn start(head: &Head, multi: bool) -> Start {
    let id = head
        .last_event_id
        .clone()
        .or_else(|| query_values(&head.query, "lastEventId").next())
        .filter(|id| !id.is_empty());
    if let Some(id) = id {
        let known = if multi {
            multi::parse_composite(&id).is_some()
        } else {
            EventId::parse(&id).is_some()
        };
        return if known {
            Start::After(id)
        } else {
            Start::Unknown(id)
        };
    }
    match query_values(&head.query, "history")
        .next()
        .map(|n| n.parse::<usize>())
    {
        Some(Ok(n)) => Start::Last(n),
        _ => Start::Live,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::reply::reject;
    use crate::http::request::{Reject, parse_test};

    fn table() -> RoomTable {
        let t = RoomTable::for_tests(2, &["lobby", "café"]);
        for room in t.rooms() {
            let mut info = room.info.borrow_mut();
            info.known = true;
            info.public = true;
        }
        t
    }

    fn config() -> Config {
        crate::config::parse(
            "t",
            "component = s.l\nsecret = x\nmuc = conference.localhost\nrooms = lobby, café\n",
        )
        .unwrap()
    }

    fn answer(req: &str) -> Route {
        route(&parse_test(req), &table(), &config())
    }

    fn status(req: &str) -> u16 {
        match answer(req) {
            Route::Stream { .. } | Route::Multi { .. } => 200,
            Route::Reply(r) | Route::NotReady(r) => r.status,
        }
    }

    #[test]
    fn rooms_stream_and_everything_else_is_answered() {
        assert_eq!(
            answer("GET /eventsource/lobby HTTP/1.1\r\n\r\n"),
            Route::Stream {
                room: 0,
                start: Start::Live,
                mask: kind::DEFAULT,
                head: stream_head("Access-Control-Allow-Origin: *\r\n"),
            }
        );
        assert_eq!(
            answer("GET /eventsource/caf%C3%A9?x HTTP/1.1\r\n\r\n"),
            Route::Stream {
                room: 1,
                start: Start::Live,
                mask: kind::DEFAULT,
                head: stream_head("Access-Control-Allow-Origin: *\r\n"),
            }
        );
        assert_eq!(
            answer("GET /eventsource/LOBBY HTTP/1.0\r\n\r\n"),
            Route::Stream {
                room: 0,
                start: Start::Live,
                mask: kind::DEFAULT,
                head: stream_head("Access-Control-Allow-Origin: *\r\n"),
            }
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

    /// The header lines of a response, sorted, without the status line.
    fn header_lines(bytes: &[u8]) -> Vec<String> {
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        let (head, _) = text.split_once("\r\n\r\n").unwrap();
        let mut lines: Vec<String> = head.lines().skip(1).map(str::to_string).collect();
        lines.sort();
        lines
    }

    #[test]
    fn head_of_a_stream_has_the_fields_of_its_get_and_no_body() {
        for (get, head) in [
            (
                "GET /eventsource/lobby HTTP/1.1\r\n\r\n",
                "HEAD /eventsource/lobby HTTP/1.1\r\n\r\n",
            ),
            (
                "GET /eventsource?room=lobby&room=caf%C3%A9 HTTP/1.1\r\n\r\n",
                "HEAD /eventsource?room=lobby&room=caf%C3%A9 HTTP/1.1\r\n\r\n",
            ),
        ] {
            let stream_head = match answer(get) {
                Route::Stream { head, .. } | Route::Multi { head, .. } => head,
                other => panic!("{other:?}"),
            };
            let Route::Reply(reply) = answer(head) else {
                panic!("HEAD is not a reply")
            };
            let bytes = reply.to_bytes();
            assert!(bytes.starts_with(b"HTTP/1.1 200 OK\r\n"));
            assert!(bytes.ends_with(b"\r\n\r\n"), "a body follows");
            assert_eq!(header_lines(&bytes), header_lines(stream_head.as_bytes()));
        }
    }

    #[test]
    fn every_reply_says_nosniff_once() {
        for req in [
            "GET /eventsource/nope HTTP/1.1\r\n\r\n",
            "GET /eventsource?room=x%0d%0aSet-Cookie:%20a=b HTTP/1.1\r\n\r\n",
            "POST / HTTP/1.1\r\n\r\n",
            "OPTIONS * HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET /metrics HTTP/1.1\r\n\r\n",
            "GET /healthz HTTP/1.1\r\n\r\n",
        ] {
            let Route::Reply(reply) = answer(req) else {
                panic!("{req}: not a reply")
            };
            let lines = header_lines(&reply.to_bytes());
            let n = lines
                .iter()
                .filter(|l| l.eq_ignore_ascii_case("x-content-type-options: nosniff"))
                .count();
            assert_eq!(n, 1, "{req}: {lines:?}");
        }
        assert!(stream_head("").contains("X-Content-Type-Options: nosniff\r\n"));
        let reject = reject(Reject::Malformed("x")).to_bytes();
        assert!(header_lines(&reject).contains(&"X-Content-Type-Options: nosniff".to_string()));
    }

    #[test]
    fn where_streams_start() {
        let start = |req: &str| match answer(req) {
            Route::Stream { start, .. } => start,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            start("GET /eventsource/lobby?history=5 HTTP/1.1\r\n\r\n"),
            Start::Last(5)
        );
        assert_eq!(
            start("GET /eventsource/lobby?lastEventId=a%2D1&history=5 HTTP/1.1\r\n\r\n"),
            Start::After("a-1".into())
        );
        assert_eq!(
            start("GET /eventsource/lobby?lastEventId=q HTTP/1.1\r\nLast-Event-ID: h\r\n\r\n"),
            Start::After("h".into()),
            "the header wins"
        );
        assert_eq!(
            start("GET /eventsource/lobby?history=x HTTP/1.1\r\n\r\n"),
            Start::Live
        );
        // Ids in no shape the daemon issues are unknown, whichever way they come.
        for (query, header, id) in [
            ("?lastEventId=%01", "", "\u{1}"),
            ("?lastEventId=%1b%5b2J", "", "\u{1b}[2J"),
            ("?lastEventId=a%0Ab", "", "a\nb"),
            ("?lastEventId=x~5~5", "", "x~5~5"),
            ("", "Last-Event-ID: x\u{fffe}\r\n", "x\u{fffe}"),
            ("", "Last-Event-ID: lobby=abc\r\n", "lobby=abc"),
        ] {
            assert_eq!(
                start(&format!(
                    "GET /eventsource/lobby{query} HTTP/1.1\r\n{header}\r\n"
                )),
                Start::Unknown(id.into()),
                "{query} {header}"
            );
        }
        for id in ["x~5", "~3", "8A46VJWqkYPaAFxkY_vLKDTL~2"] {
            assert_eq!(
                start(&format!(
                    "GET /eventsource/lobby?lastEventId={id} HTTP/1.1\r\n\r\n"
                )),
                Start::After(id.into())
            );
        }
        let multi = |req: &str| match answer(req) {
            Route::Multi { start, .. } => start,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            multi("GET /eventsource?room=lobby&lastEventId=lobby%3Dabc-1 HTTP/1.1\r\n\r\n"),
            Start::After("lobby=abc-1".into())
        );
        assert_eq!(
            multi("GET /eventsource?room=lobby&lastEventId=abc-1 HTTP/1.1\r\n\r\n"),
            Start::Unknown("abc-1".into())
        );
        assert_eq!(
            multi("GET /eventsource?room=lobby&lastEventId=lobby%3D%2501 HTTP/1.1\r\n\r\n"),
            Start::Unknown("lobby=%01".into())
        );
    }

    #[test]
    fn a_destroyed_room_answers_204() {
        let t = table();
        t.set_state(0, JoinState::Gone("the room was destroyed"));
        let head = parse_test("GET /eventsource/lobby HTTP/1.1\r\n\r\n");
        assert!(matches!(
            route(&head, &t, &config()),
            Route::Reply(Reply { status: 204, .. })
        ));
    }

    #[test]
    fn on_demand_rooms_nobody_may_read_answer_as_missing_ones() {
        let t = RoomTable::new(crate::rooms::table::Sizes {
            rooms: 4,
            ring_events: 4,
            ring_bytes: 4096,
            subscribers: 4,
        });
        let c = crate::config::parse(
            "t",
            "component = s.l\nsecret = x\nmuc = c.l\nrooms = lobby\non_demand = yes\n",
        )
        .unwrap();
        let hidden = t.add("hidden", "c.l", Origin::OnDemand).unwrap();
        let missing = t.add("missing", "c.l", Origin::OnDemand).unwrap();
        let ask = |path: &str| route(&parse_test(&format!("GET {path} HTTP/1.1\r\n\r\n")), &t, &c);
        assert!(
            matches!(ask("/eventsource/hidden"), Route::NotReady(_)),
            "disco#info first"
        );
        let Route::NotReady(r) = route(
            &parse_test("HEAD /eventsource/hidden HTTP/1.1\r\n\r\n"),
            &t,
            &c,
        ) else {
            panic!("HEAD waits like GET");
        };
        assert!(r.head_only, "a HEAD answer has no body");
        t.room(hidden).info.borrow_mut().known = true;
        t.set_state(missing, JoinState::Failed(ROOM_MISSING));
        let (Route::Reply(a), Route::Reply(b)) =
            (ask("/eventsource/hidden"), ask("/eventsource/missing"))
        else {
            panic!("replies expected")
        };
        assert_eq!(a.to_bytes(), b.to_bytes());
        assert_eq!(a.status, 404);
        assert_eq!(
            t.stats().rejected_forbidden.get(),
            0,
            "not counted: /metrics would tell"
        );
        let multi = |path: &str| match ask(path) {
            Route::Reply(r) => (
                r.status,
                String::from_utf8(r.body)
                    .unwrap()
                    .replace(path.rsplit('=').next().unwrap(), "X"),
            ),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            multi("/eventsource?room=hidden"),
            multi("/eventsource?room=nosuch")
        );
        t.retire(hidden, ON_DEMAND_RETIRED);
        t.forget(hidden);
        let Route::Reply(retired) = ask("/eventsource/hidden") else {
            panic!("a reply")
        };
        assert_eq!(retired.to_bytes(), b.to_bytes());
        // Public and known: streamed.
        let public = t.add("open", "c.l", Origin::OnDemand).unwrap();
        {
            let mut info = t.room(public).info.borrow_mut();
            info.known = true;
            info.public = true;
        }
        assert!(matches!(ask("/eventsource/open"), Route::Stream { .. }));
    }

    #[test]
    fn several_rooms_on_one_stream() {
        match answer("GET /eventsource?room=caf%C3%A9&room=lobby&room=lobby HTTP/1.1\r\n\r\n") {
            Route::Multi { rooms, start, .. } => {
                assert_eq!(rooms, vec![1, 0]);
                assert_eq!(start, Start::Live);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(status("GET /eventsource?room=nope HTTP/1.1\r\n\r\n"), 404);
        match answer("GET /eventsource?room=x%0d%0aSet-Cookie:%20a=b HTTP/1.1\r\n\r\n") {
            Route::Reply(r) => {
                assert_eq!(r.status, 404);
                let body = String::from_utf8(r.body).unwrap();
                // Never echoed: the same answer as for any room not served.
                assert_eq!(body, "no such room is served here\n");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(status("GET /eventsource HTTP/1.1\r\n\r\n"), 400);
    }

    #[test]
    fn browsers_get_a_refusal_they_recover_from() {
        let t = table();
        t.room(0).info.borrow_mut().known = false;
        let sse =
            parse_test("GET /eventsource/lobby HTTP/1.1\r\nAccept: text/event-stream\r\n\r\n");
        let Route::NotReady(r) = route(&sse, &t, &config()) else {
            panic!("not a not-ready reply")
        };
        assert_eq!((r.status, r.content_type), (200, "text/event-stream"));
        let body = String::from_utf8(r.body).unwrap();
        assert!(body.starts_with("retry: 5000\n\nevent: status\n"), "{body}");
        let curl = parse_test("GET /eventsource/lobby HTTP/1.1\r\n\r\n");
        let Route::NotReady(r) = route(&curl, &t, &config()) else {
            panic!("not a not-ready reply")
        };
        assert_eq!(r.status, 503);
        assert!(r.headers.contains("Retry-After: 5\r\n"));
        // The same for a stream of several rooms, one of them not yet known; `HEAD` gets the
        // head of that reply only.
        for (req, status) in [
            (
                "GET /eventsource?room=caf%C3%A9&room=lobby HTTP/1.1\r\nAccept: text/event-stream\r\n\r\n",
                200,
            ),
            (
                "GET /eventsource?room=caf%C3%A9&room=lobby HTTP/1.1\r\n\r\n",
                503,
            ),
            (
                "HEAD /eventsource?room=caf%C3%A9&room=lobby HTTP/1.1\r\n\r\n",
                503,
            ),
        ] {
            let Route::NotReady(r) = route(&parse_test(req), &t, &config()) else {
                panic!("{req}: not a not-ready reply")
            };
            assert_eq!(r.status, status, "{req}");
            assert_eq!(r.head_only, req.starts_with("HEAD"), "{req}");
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
