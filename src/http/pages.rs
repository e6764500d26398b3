//! The LAN room monitor: an index of the rooms (`/`), a live view per room for wall displays
//! (`/view/<room>`) and their two static assets (`/assets/…`), each built here and dispatched by
//! [`super::routes`], which also asks [`listed`] which rooms `/healthz` and `/metrics` name.
//!
//! Everything is in the binary (`include_str!`), nothing is fetched from elsewhere, so the pages
//! work on a LAN without Internet. Pages are HTML rendered here with every room-supplied string
//! escaped; the live view's script puts every streamed string into the page with `textContent`,
//! and a `Content-Security-Policy` allowing only this origin's own script and style backs that
//! up. Every page and asset has an `ETag` and answers `If-None-Match` with `304`.
//!
//! The pages obey the streams' access rules ([`super::access`]): the index, `/metrics` and
//! `/healthz` name only the rooms this request may read (the operator's `status_token` shows
//! every room, those it may not read without their subject, occupants or last message), and a
//! live view the request may not read is `403` (`404` for an on-demand room). The pages pass their own `?token=` on (to the links, and from the live view to its
//! `EventSource`), so one URL with a token opens everything that token opens.
//! Pure, like [`super::routes`]: no I/O.

use std::time::{Duration, SystemTime};

use super::access::{self, Access};
use super::reply::Reply;
use super::request::{Head, percent_decode, percent_encode, query_values};
use crate::config::Config;
use crate::rooms::table::{JoinState, Room, RoomTable};

/// The stylesheet of both pages.
pub const CSS: &str = include_str!("assets/monitor.css");
/// The live view's script.
pub const VIEW_JS: &str = include_str!("assets/view.js");

/// Size every page and asset stays under (checked by tests).
pub const PAGE_BUDGET: usize = 16 * 1024;

/// A room subject is cut to this many characters on the index (the live view shows more).
const INDEX_SUBJECT_CHARS: usize = 160;
const VIEW_SUBJECT_CHARS: usize = 1000;
/// The index reloads itself this often (seconds).
const INDEX_REFRESH_SECS: u32 = 15;

/// Only this origin's own script and style; the stream is fetched from here too.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'";

const HTML: &str = "text/html; charset=utf-8";
const CSS_TYPE: &str = "text/css; charset=utf-8";
const JS_TYPE: &str = "text/javascript; charset=utf-8";

/// The index: every room with its state, subject, occupants, last message and subscribers, and
/// the state of the component link. Reloads itself every [`INDEX_REFRESH_SECS`] (a `304` when
/// nothing changed).
pub fn index(head: &Head, table: &RoomTable, config: &Config, now: SystemTime) -> Reply {
    let stats = table.stats();
    let token = token_suffix(head);
    let up = stats.upstream_up.get();
    let mut html = String::with_capacity(4096);
    html.push_str(&format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"color-scheme\" content=\"light dark\">\n\
         <meta http-equiv=\"refresh\" content=\"{INDEX_REFRESH_SECS}\">\n\
         <title>Rooms · muc-eventsource</title>\n\
         <link rel=\"stylesheet\" href=\"assets/monitor.css?v={css}\">\n\
         </head><body class=\"index\">\n<h1>Rooms</h1>\n\
         <p class=\"link\">Chat server link: <strong id=\"upstream\" class=\"{cls}\">{state}</strong> \
         · {reconnects} reconnect{s} · {subs} subscriber{s2}</p>\n\
         <table><thead><tr><th>Room</th><th>State</th><th>Subject</th><th class=\"n\">Occupants</th>\
         <th>Last message</th><th class=\"n\">Subscribers</th></tr></thead><tbody>\n",
        css = version(CSS),
        cls = if up { "ok" } else { "bad" },
        state = if up { "up" } else { "down" },
        reconnects = stats.reconnects.get(),
        s = plural(stats.reconnects.get()),
        subs = table.subscriber_count(),
        s2 = plural(table.subscriber_count() as u64),
    ));
    let operator = access::operator(config, head);
    let mut shown = 0;
    for (_, room) in table.active() {
        let open = access::check(config, room, head) == Access::Allow;
        if open || operator {
            index_row(&mut html, room, open, &token, now);
            shown += 1;
        }
    }
    if table.active().next().is_none() {
        html.push_str("<tr><td colspan=\"6\" class=\"dim\">No rooms are configured.</td></tr>\n");
    } else if shown == 0 {
        html.push_str(
            "<tr><td colspan=\"6\" class=\"dim\">No room is open without a read token \
             (add ?token=…).</td></tr>\n",
        );
    }
    html.push_str(&format!(
        "</tbody></table>\n<footer class=\"dim\">muc-eventsource {} · \
         <a href=\"metrics\">metrics</a> · <a href=\"healthz\">health</a></footer>\n\
         </body></html>\n",
        env!("CARGO_PKG_VERSION")
    ));
    page(head, HTML, html.into_bytes())
}

/// Does this request see `room` on the pages (`/`, `/metrics`, `/healthz`)? The operator
/// (`status_token`) sees every room; anyone else the rooms they may stream, so a page never
/// names a room its reader could not open (a hidden room's name is often its secret).
pub fn listed(head: &Head, config: &Config, room: &Room) -> bool {
    access::operator(config, head) || access::check(config, room, head) == Access::Allow
}

/// One room's row; `open`: this request may read the room, so its subject, occupants and last
/// message are shown.
fn index_row(html: &mut String, room: &Room, open: bool, token: &str, now: SystemTime) {
    let info = room.info.borrow();
    let node = percent_encode(&room.node());
    let (class, state) = state_text(room.state());
    let mut flags = Vec::new();
    if info.known {
        if info.members_only {
            flags.push("members-only");
        }
        if info.password {
            flags.push("password");
        }
        if !info.public {
            flags.push("hidden");
        }
    }
    let flags = if flags.is_empty() {
        String::new()
    } else {
        format!("<br><span class=\"dim\">{}</span>", flags.join(", "))
    };
    if !open {
        html.push_str(&format!(
            "<tr><td>{name}<br><span class=\"dim\">{jid}</span></td>\
             <td class=\"{class}\">{state}{flags}</td>\
             <td class=\"dim\" colspan=\"3\">needs a read token</td>\
             <td class=\"n\">{subs}</td></tr>\n",
            name = escape(&room.node()),
            jid = escape(&room.jid()),
            state = escape(&state),
            subs = room.subscribers(),
        ));
        return;
    }
    let occupants = if room.state() == JoinState::Joined {
        info.occupants.to_string()
    } else {
        "–".to_string()
    };
    let last = match info.last_message {
        Some(at) => format!(
            "<time datetime=\"{iso}\" title=\"{iso}\">{ago}</time>",
            iso = utc_iso(at),
            ago = ago(now.duration_since(at).unwrap_or_default())
        ),
        None => "<span class=\"dim\">none yet</span>".to_string(),
    };
    html.push_str(&format!(
        "<tr><td><a href=\"view/{node}{token}\">{name}</a><br><span class=\"dim\">{jid}</span></td>\
         <td class=\"{class}\">{state}{flags}</td><td class=\"subject\">{subject}</td>\
         <td class=\"n\">{occupants}</td><td>{last}</td><td class=\"n\">{subs}</td></tr>\n",
        name = escape(&room.node()),
        jid = escape(&room.jid()),
        state = escape(&state),
        subject = escape(&cut(&info.subject, INDEX_SUBJECT_CHARS)),
        subs = room.subscribers(),
    ));
}

/// The live view of one room; `404` for a room not served, `403` for one this request may not
/// read.
pub fn view(head: &Head, table: &RoomTable, config: &Config, encoded: &str) -> Reply {
    let not_served = || Reply::text(404, "no such room is served here\n");
    let Some(index) = percent_decode(encoded).and_then(|node| table.find_node(&node)) else {
        return not_served();
    };
    let room = table.room(index);
    // An on-demand room (or one retired) is named to no one who may not read it.
    if room.is_free()
        || (room.origin() == crate::rooms::table::Origin::OnDemand
            && access::check(config, room, head) != Access::Allow)
    {
        return not_served();
    }
    let open = match access::check(config, room, head) {
        Access::Allow => true,
        // Not known yet whether the room is public: the page, without what it would reveal.
        Access::NotYetKnown => false,
        Access::Forbidden(why) => return Reply::text(403, format!("{why}\n")),
    };
    let info = room.info.borrow();
    let kiosk = query_values(&head.query, "kiosk").any(|v| v != "0" && v != "false");
    // The state at render time, until the stream's own `status` events say otherwise.
    let (status, reason) = match room.state() {
        JoinState::Joined => ("", ""),
        JoinState::Joining => ("rejoining", ""),
        JoinState::Failed(why) => ("unavailable", why),
        JoinState::Gone(why) => ("destroyed", why),
    };
    let subject = if open {
        cut(&info.subject, VIEW_SUBJECT_CHARS)
    } else {
        String::new()
    };
    let title = if subject.is_empty() {
        room.node().to_string()
    } else {
        format!("{subject} · {}", room.node())
    };
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"color-scheme\" content=\"light dark\">\n\
         <title>{title}</title>\n\
         <link rel=\"stylesheet\" href=\"../assets/monitor.css?v={css}\">\n\
         <script src=\"../assets/view.js?v={js}\" defer></script>\n\
         </head><body class=\"view{kiosk}\" data-room=\"{node}\" data-status=\"{status}\" \
         data-reason=\"{reason}\">\n\
         <header><h1 id=\"subject\" data-room=\"{node}\">{subject}</h1>\n\
         <div class=\"meta\"><span>{jid}</span><span id=\"state\" class=\"connecting\">connecting…</span>\
         <span class=\"grow\"></span><a id=\"home\" class=\"chrome\" href=\"../\">all rooms</a></div></header>\n\
         <div id=\"banner\" role=\"status\" aria-live=\"assertive\"></div>\n\
         <main id=\"log\" aria-live=\"polite\"></main>\n\
         <noscript><p class=\"note\">The live view needs JavaScript; the raw stream is \
         <a href=\"../eventsource/{encoded}\">eventsource/{node}</a>.</p></noscript>\n\
         </body></html>\n",
        title = escape(&title),
        css = version(CSS),
        js = version(VIEW_JS),
        kiosk = if kiosk { " kiosk" } else { "" },
        node = escape(&room.node()),
        encoded = percent_encode(&room.node()),
        jid = escape(&room.jid()),
        subject = escape(&subject),
        reason = escape(reason),
    );
    page(head, HTML, html.into_bytes())
}

/// `/assets/<name>`: the stylesheet and the script, cached for a year (pages link them with
/// `?v=<hash>`, so a new binary's assets get new URLs).
pub fn asset(head: &Head, name: &str) -> Reply {
    let (content_type, body) = match name {
        "monitor.css" => (CSS_TYPE, CSS),
        "view.js" => (JS_TYPE, VIEW_JS),
        _ => return Reply::text(404, "no such asset\n"),
    };
    cached(
        head,
        content_type,
        body.as_bytes().to_vec(),
        "public, max-age=31536000, immutable",
    )
}

/// A page: revalidated on every use (`no-cache` + `ETag`), with the security headers.
fn page(head: &Head, content_type: &'static str, body: Vec<u8>) -> Reply {
    cached(head, content_type, body, "no-cache")
        .header("Content-Security-Policy", CSP)
        .header("Referrer-Policy", "no-referrer")
}

/// `body` with its `ETag`, or `304 Not Modified` when `If-None-Match` names that tag.
fn cached(head: &Head, content_type: &'static str, body: Vec<u8>, cache: &str) -> Reply {
    let tag = etag(&body);
    let fresh = head
        .if_none_match
        .as_deref()
        .is_some_and(|v| etag_matches(v, &tag));
    let reply = if fresh {
        Reply::with_type(304, content_type, Vec::new())
    } else {
        Reply::with_type(200, content_type, body)
    };
    reply
        .header("ETag", &tag)
        .header("Cache-Control", cache)
        .header("X-Content-Type-Options", "nosniff")
}

/// A strong entity tag: the FNV-1a hash of the body.
pub fn etag(body: &[u8]) -> String {
    format!("\"{:016x}\"", fnv1a(body))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The short version tag of an asset (its URL changes when its content does).
fn version(asset: &str) -> String {
    format!("{:08x}", fnv1a(asset.as_bytes()) >> 32)
}

/// `If-None-Match: "a", W/"b"` or `*` against our tag (weak comparison, RFC 9110 §13.1.2).
pub fn etag_matches(if_none_match: &str, tag: &str) -> bool {
    if_none_match.split(',').map(str::trim).any(|t| {
        t == "*" || t.strip_prefix("W/").unwrap_or(t) == tag.strip_prefix("W/").unwrap_or(tag)
    })
}

/// `?token=…` to append to the index's links when the index itself was opened with one.
fn token_suffix(head: &Head) -> String {
    match query_values(&head.query, "token").next() {
        Some(t) if !t.is_empty() => format!("?token={}", percent_encode(&t)),
        _ => String::new(),
    }
}

fn state_text(state: JoinState) -> (&'static str, String) {
    match state {
        JoinState::Joined => ("ok", "joined".into()),
        JoinState::Joining => ("warn", "joining".into()),
        JoinState::Failed(why) => ("bad", format!("failed: {why}")),
        JoinState::Gone(why) => ("bad", format!("gone: {why}")),
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// HTML-escapes text for element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// `text` cut to at most `max` characters, with `…` when cut.
fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// `2026-11-27T03:10:48Z`.
pub fn utc_iso(at: SystemTime) -> String {
    format!("{}Z", crate::rooms::feed::utc_stamp(at))
}

/// `just now`, `5 min ago`, `3 h ago`, `2 days ago`.
fn ago(elapsed: Duration) -> String {
    let s = elapsed.as_secs();
    match s {
        0..60 => "just now".into(),
        60..3600 => format!("{} min ago", s / 60),
        3600..86_400 => format!("{} h ago", s / 3600),
        _ => {
            let days = s / 86_400;
            format!("{days} day{} ago", plural(days))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::parse_test;

    /// Public rooms `lobby` and `café`.
    fn table() -> RoomTable {
        let t = RoomTable::for_tests(3, &["lobby", "café"]);
        public(&t);
        t
    }

    fn public(t: &RoomTable) {
        for room in t.rooms() {
            let mut info = room.info.borrow_mut();
            info.known = true;
            info.public = true;
        }
    }

    fn config(extra: &str) -> Config {
        crate::config::parse(
            "t",
            &format!(
                "component = s.l\nsecret = x\nmuc = conference.localhost\nrooms = lobby, café\n{extra}"
            ),
        )
        .unwrap()
    }

    fn get(req: &str, t: &RoomTable) -> Option<Reply> {
        get_with(req, t, &config(""))
    }

    /// What the dispatcher answers for the monitor's paths (`None`: not one of them).
    fn get_with(req: &str, t: &RoomTable, c: &Config) -> Option<Reply> {
        crate::http::routes::monitor(&parse_test(req), t, c)
    }

    fn body(r: &Reply) -> String {
        String::from_utf8(r.body.clone()).unwrap()
    }

    fn header<'r>(r: &'r Reply, name: &str) -> Option<&'r str> {
        r.headers.split("\r\n").find_map(|line| {
            let (n, v) = line.split_once(": ")?;
            n.eq_ignore_ascii_case(name).then_some(v)
        })
    }

    #[test]
    fn routes_its_paths_only() {
        let t = table();
        for path in [
            "/",
            "/view/lobby",
            "/view/caf%C3%A9",
            "/assets/view.js",
            "/assets/monitor.css",
        ] {
            let r = get(&format!("GET {path} HTTP/1.1\r\n\r\n"), &t).unwrap();
            assert_eq!(r.status, 200, "{path}");
        }
        assert_eq!(
            get("GET /healthz HTTP/1.1\r\n\r\n", &t).unwrap().status,
            503
        );
        assert_eq!(
            get("GET /metrics HTTP/1.1\r\n\r\n", &t).unwrap().status,
            200
        );
        for path in [
            "/view/nope",
            "/view/",
            "/view/a%zz",
            "/assets/x.js",
            "/assets/",
        ] {
            let r = get(&format!("GET {path} HTTP/1.1\r\n\r\n"), &t).unwrap();
            assert_eq!(r.status, 404, "{path}");
        }
        for req in [
            "GET /eventsource/lobby HTTP/1.1\r\n\r\n",
            "GET /other HTTP/1.1\r\n\r\n",
            "OPTIONS / HTTP/1.1\r\n\r\n",
            "POST / HTTP/1.1\r\n\r\n",
        ] {
            assert!(get(req, &t).is_none(), "{req}");
        }
        let r = get("HEAD /view/lobby HTTP/1.1\r\n\r\n", &t).unwrap();
        assert!(r.head_only && r.status == 200);
    }

    #[test]
    fn room_strings_are_escaped_and_pages_stay_small() {
        let t = RoomTable::new(crate::rooms::table::Sizes {
            rooms: 24,
            ring_events: 4,
            ring_bytes: 4096,
            subscribers: 4,
        });
        for i in 0..24 {
            t.add(
                &format!("room{i}"),
                "conference.localhost",
                crate::rooms::table::Origin::Configured,
            );
        }
        public(&t);
        let evil = "<script>alert(1)</script>\"'&".repeat(40);
        for room in t.rooms() {
            room.info.borrow_mut().subject = evil.clone();
        }
        t.set_state(0, JoinState::Joined);
        let index = get("GET /?token=a%26b HTTP/1.1\r\n\r\n", &t).unwrap();
        let html = body(&index);
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;"));
        assert!(html.contains("href=\"view/room3?token=a%26b\""));
        assert!(
            html.len() <= PAGE_BUDGET,
            "index with 24 rooms: {} bytes",
            html.len()
        );
        let view = get("GET /view/room0?kiosk=1 HTTP/1.1\r\n\r\n", &t).unwrap();
        let html = body(&view);
        assert!(!html.contains("<script>alert"));
        assert!(html.contains("class=\"view kiosk\""));
        assert!(html.len() <= PAGE_BUDGET, "view: {} bytes", html.len());
        assert!(CSS.len() <= PAGE_BUDGET && VIEW_JS.len() <= PAGE_BUDGET);
        assert_eq!(
            header(&view, "content-type"),
            None,
            "type is not a header line"
        );
        assert_eq!(view.content_type, "text/html; charset=utf-8");
        assert!(
            header(&view, "content-security-policy")
                .unwrap()
                .contains("script-src 'self'")
        );
    }

    #[test]
    fn etags_and_304() {
        let t = table();
        let first = get("GET /view/lobby HTTP/1.1\r\n\r\n", &t).unwrap();
        let tag = header(&first, "etag").unwrap().to_string();
        assert!(tag.starts_with('"') && tag.ends_with('"'));
        let again = format!("GET /view/lobby HTTP/1.1\r\nIf-None-Match: \"x\", W/{tag}\r\n\r\n");
        let r = get(&again, &t).unwrap();
        assert_eq!(r.status, 304);
        assert_eq!(header(&r, "etag"), Some(tag.as_str()));
        assert!(
            !String::from_utf8(r.to_bytes())
                .unwrap()
                .contains("Content-Length")
        );
        t.room(0).info.borrow_mut().subject = "new subject".into();
        assert_eq!(get(&again, &t).unwrap().status, 200, "the page changed");
        let js = get("GET /assets/view.js HTTP/1.1\r\n\r\n", &t).unwrap();
        let tag = header(&js, "etag").unwrap();
        let r = get(
            &format!("GET /assets/view.js HTTP/1.1\r\nIf-None-Match: {tag}\r\n\r\n"),
            &t,
        );
        assert_eq!(r.unwrap().status, 304);
        assert!(etag_matches("*", "\"a\""));
        assert!(!etag_matches("\"b\"", "\"a\""));
    }

    #[test]
    fn index_shows_rooms_and_link() {
        let t = table();
        t.stats().upstream_up.set(true);
        t.set_state(0, JoinState::Joined);
        t.set_state(1, JoinState::Failed("members only"));
        {
            let mut info = t.room(0).info.borrow_mut();
            info.subject = "Welcome".into();
            info.occupants = 3;
            info.last_message = Some(SystemTime::now() - Duration::from_secs(125));
        }
        let html = body(&get("GET / HTTP/1.1\r\n\r\n", &t).unwrap());
        assert!(html.contains("class=\"ok\">up</strong>"), "{html}");
        assert!(html.contains("href=\"view/caf%C3%A9\">café</a>"), "{html}");
        assert!(html.contains(">Welcome<"));
        assert!(html.contains(">3<"));
        assert!(html.contains("2 min ago"));
        assert!(html.contains("failed: members only"));
    }

    #[test]
    fn pages_obey_the_access_rules() {
        let t = table();
        t.room(0).info.borrow_mut().subject = "secret plans".into();
        let c = config("token.lobby = s3cret\nstatus_token = op-t0k\n");
        let html = body(&get_with("GET / HTTP/1.1\r\n\r\n", &t, &c).unwrap());
        assert!(!html.contains("secret plans"), "{html}");
        assert!(
            !html.contains("lobby"),
            "a room anonymous readers cannot open is not named"
        );
        assert!(
            html.contains("href=\"view/caf%C3%A9\""),
            "the public room is listed"
        );
        // The operator sees every room, without what it may not read.
        let html = body(&get_with("GET /?token=op-t0k HTTP/1.1\r\n\r\n", &t, &c).unwrap());
        assert!(
            html.contains("lobby") && html.contains("needs a read token"),
            "{html}"
        );
        assert!(!html.contains("secret plans"), "{html}");
        let metrics = |req: &str| body(&get_with(req, &t, &c).unwrap());
        let anonymous = metrics("GET /metrics HTTP/1.1\r\n\r\n");
        assert!(!anonymous.contains("lobby"), "{anonymous}");
        assert!(
            anonymous.contains("muc_eventsource_private_rooms 1"),
            "{anonymous}"
        );
        let operator = metrics("GET /metrics HTTP/1.1\r\nAuthorization: Bearer op-t0k\r\n\r\n");
        assert!(
            operator.contains("room_joined{room=\"lobby\"}"),
            "{operator}"
        );
        assert!(
            operator.contains("muc_eventsource_private_rooms 0"),
            "{operator}"
        );
        let health = metrics("GET /healthz HTTP/1.1\r\n\r\n");
        assert!(
            health.contains("1 unlisted room not joined") && !health.contains("lobby"),
            "{health}"
        );
        let r = get_with("GET /view/lobby HTTP/1.1\r\n\r\n", &t, &c).unwrap();
        assert_eq!(r.status, 403);
        let r = get_with("GET /view/lobby?token=wrong HTTP/1.1\r\n\r\n", &t, &c).unwrap();
        assert_eq!(r.status, 403);
        let r = get_with("GET /view/lobby?token=s3cret HTTP/1.1\r\n\r\n", &t, &c).unwrap();
        assert_eq!(r.status, 200);
        assert!(body(&r).contains(">secret plans</h1>"));
        assert!(
            !body(&r).contains("s3cret"),
            "the token is not put in the page"
        );
        let html = body(&get_with("GET /?token=s3cret HTTP/1.1\r\n\r\n", &t, &c).unwrap());
        assert!(html.contains("secret plans"));
        assert!(html.contains("href=\"view/lobby?token=s3cret\""));
        // Not known yet whether the room is public: the view, without the subject.
        t.room(0).info.borrow_mut().known = false;
        let r = get("GET /view/lobby HTTP/1.1\r\n\r\n", &t).unwrap();
        assert_eq!(r.status, 200);
        assert!(!body(&r).contains("secret plans"));
        let html = body(&get("GET / HTTP/1.1\r\n\r\n", &t).unwrap());
        assert!(!html.contains("secret plans"));
        // Monitoring is not gated.
        assert_eq!(
            get_with("GET /metrics HTTP/1.1\r\n\r\n", &t, &c)
                .unwrap()
                .status,
            200
        );
    }

    #[test]
    fn dates_and_durations() {
        let at = std::time::UNIX_EPOCH + Duration::from_secs(1_795_749_048);
        assert_eq!(utc_iso(at), "2026-11-27T03:10:48Z");
        assert_eq!(utc_iso(std::time::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            utc_iso(std::time::UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(ago(Duration::from_secs(5)), "just now");
        assert_eq!(ago(Duration::from_secs(7300)), "2 h ago");
        assert_eq!(ago(Duration::from_secs(86_400)), "1 day ago");
        assert_eq!(cut("héllo", 2), "hé…");
        assert_eq!(cut("hé", 2), "hé");
        assert_eq!(percent_encode("a b/é"), "a%20b%2F%C3%A9");
    }
}
