//! Who may read which stream: read tokens (`?token=` or `Authorization: Bearer`, compared in
//! constant time, never logged), the private-room policy (by default only rooms whose
//! disco#info says public, open and not password-protected are streamed), and CORS.

use super::request::{Head, query_values};
use crate::config::Config;
use crate::rooms::table::Room;

/// The outcome of an access check.
#[derive(Debug, PartialEq, Eq)]
pub enum Access {
    Allow,
    /// `403`, with the reason to show.
    Forbidden(&'static str),
    /// The room has not told us yet whether it is public (joining is in progress).
    NotYetKnown,
}

/// Equal without an early exit on the first differing byte (the length may leak).
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token the request presents: `Authorization: Bearer`, else `?token=`.
fn presented(head: &Head) -> Option<String> {
    head.bearer
        .clone()
        .or_else(|| query_values(&head.query, "token").next())
}

/// May this request read this room's stream?
pub fn check(config: &Config, room: &Room, head: &Head) -> Access {
    if let Some(needed) = config.token_for(&room.node()) {
        // A token opens the room whatever its disco#info says: the operator chose to share it.
        return match presented(head) {
            Some(token) if same_secret(token.as_bytes(), needed.as_bytes()) => Access::Allow,
            Some(_) => Access::Forbidden("wrong read token"),
            None => Access::Forbidden(
                "this room needs a read token: add ?token=… or send Authorization: Bearer …",
            ),
        };
    }
    if config.private_rooms {
        return Access::Allow;
    }
    let info = room.info.borrow();
    if !info.known {
        return Access::NotYetKnown;
    }
    if info.public && !info.members_only && !info.password {
        Access::Allow
    } else {
        Access::Forbidden(
            "this room is hidden, members-only or password-protected; the server's operator can give it a read token (token.<room>)",
        )
    }
}

/// The CORS header lines for a response to a request from `origin`.
pub fn cors(config: &Config, origin: Option<&str>) -> String {
    match &config.cors_origins {
        None => "Access-Control-Allow-Origin: *\r\n".into(),
        Some(allowed) => match origin {
            Some(o) if allowed.iter().any(|a| a == o.trim_end_matches('/')) => {
                format!("Access-Control-Allow-Origin: {o}\r\nVary: Origin\r\n")
            }
            _ => "Vary: Origin\r\n".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::http::request::parse_test;
    use crate::rooms::table::RoomTable;

    fn setup(extra: &str) -> (Config, RoomTable) {
        let text = format!("component = s.l\nsecret = x\nmuc = c.l\nrooms = open, closed\n{extra}");
        let config = config::parse("t", &text).unwrap();
        let table = RoomTable::new(2, 4, 4096, 4);
        table.add("open", "c.l", crate::rooms::table::Origin::Configured);
        table.add("closed", "c.l", crate::rooms::table::Origin::Configured);
        {
            let mut info = table.room(0).info.borrow_mut();
            info.known = true;
            info.public = true;
        }
        {
            let mut info = table.room(1).info.borrow_mut();
            info.known = true;
            info.members_only = true;
        }
        (config, table)
    }

    fn head(req: &str) -> Head {
        parse_test(req)
    }

    #[test]
    fn public_rooms_only_by_default() {
        let (c, t) = setup("");
        let h = head("GET /eventsource/x HTTP/1.1\r\n\r\n");
        assert_eq!(check(&c, t.room(0), &h), Access::Allow);
        assert!(matches!(check(&c, t.room(1), &h), Access::Forbidden(_)));
        t.room(0).info.borrow_mut().known = false;
        assert_eq!(check(&c, t.room(0), &h), Access::NotYetKnown);
        let (c, t) = setup("private_rooms = allow");
        assert_eq!(check(&c, t.room(1), &h), Access::Allow);
    }

    #[test]
    fn tokens_by_query_or_bearer() {
        let (c, t) = setup("token.closed = s3cret");
        let plain = head("GET /x HTTP/1.1\r\n\r\n");
        let query = head("GET /x?token=s3cret HTTP/1.1\r\n\r\n");
        let bearer = head("GET /x HTTP/1.1\r\nAuthorization: Bearer s3cret\r\n\r\n");
        let wrong = head("GET /x?token=s3creT HTTP/1.1\r\n\r\n");
        assert!(matches!(check(&c, t.room(1), &plain), Access::Forbidden(_)));
        assert_eq!(check(&c, t.room(1), &query), Access::Allow);
        assert_eq!(check(&c, t.room(1), &bearer), Access::Allow);
        assert_eq!(
            check(&c, t.room(1), &wrong),
            Access::Forbidden("wrong read token")
        );
        // The public room needs no token when only another room has one.
        assert_eq!(check(&c, t.room(0), &plain), Access::Allow);
        let (c, t) = setup("token = all");
        assert!(matches!(check(&c, t.room(0), &plain), Access::Forbidden(_)));
        assert!(
            same_secret(b"abc", b"abc")
                && !same_secret(b"abc", b"abd")
                && !same_secret(b"a", b"ab")
        );
    }

    #[test]
    fn cors_headers() {
        let (c, _) = setup("");
        assert_eq!(
            cors(&c, Some("http://x")),
            "Access-Control-Allow-Origin: *\r\n"
        );
        let (c, _) = setup("cors_origins = http://wall.lan, https://a.b");
        assert_eq!(
            cors(&c, Some("http://wall.lan")),
            "Access-Control-Allow-Origin: http://wall.lan\r\nVary: Origin\r\n"
        );
        assert_eq!(cors(&c, Some("http://evil")), "Vary: Origin\r\n");
        assert_eq!(cors(&c, None), "Vary: Origin\r\n");
    }
}
