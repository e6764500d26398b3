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

/// What a stream opened with, kept for as long as it runs so that its access can be checked
/// again when the inputs change (a room's flags, a reload). Holds a secret: it has no `Debug`
/// and is never logged.
#[derive(Clone, Default)]
pub struct Credential {
    /// The read token presented, if any.
    token: Option<std::rc::Rc<str>>,
    /// The request's `Origin`, when CORS allowed it at the start (re-checked on reload).
    origin: Option<std::rc::Rc<str>>,
}

impl Credential {
    /// The credential of a request, as [`check`] sees it.
    pub fn of(head: &Head, config: &Config) -> Credential {
        Credential {
            token: presented(head).map(std::rc::Rc::from),
            origin: head
                .origin
                .as_deref()
                .filter(|o| origin_allowed(config, o))
                .map(std::rc::Rc::from),
        }
    }
}

/// Does the room's disco#info say it is public, open and not password-protected?
fn room_is_open(room: &Room) -> Option<bool> {
    let info = room.info.borrow();
    info.known
        .then_some(info.public && !info.members_only && !info.password)
}

/// May this request read this room's stream?
pub fn check(config: &Config, room: &Room, head: &Head) -> Access {
    check_with(config, room, &Credential::of(head, config))
}

/// May a reader with this credential read this room? The rules (README, "Access control"):
/// - a room with its own token (`token.<room>`) needs that token, which also opens it when it is
///   hidden, members-only or password-protected;
/// - otherwise the global `token`, when set, is needed for every room, and opens nothing more:
///   a private room then needs `private_rooms = allow` as well;
/// - without tokens, only rooms whose disco#info says public, open and unprotected are read,
///   unless `private_rooms = allow`.
pub fn check_with(config: &Config, room: &Room, credential: &Credential) -> Access {
    let given = credential.token.as_deref();
    let matches =
        |needed: &str| given.is_some_and(|t| same_secret(t.as_bytes(), needed.as_bytes()));
    let refuse = || {
        if given.is_some() {
            Access::Forbidden("wrong read token")
        } else {
            Access::Forbidden(
                "this room needs a read token: add ?token=… or send Authorization: Bearer …",
            )
        }
    };
    if let Some(own) = config.room_token(&room.node()) {
        // The operator shared this room on purpose: its token opens it whatever disco#info says.
        return if matches(own) {
            Access::Allow
        } else {
            refuse()
        };
    }
    if let Some(global) = config.token.as_deref()
        && !matches(global)
    {
        return refuse();
    }
    if config.private_rooms {
        return Access::Allow;
    }
    match room_is_open(room) {
        None => Access::NotYetKnown,
        Some(true) => Access::Allow,
        Some(false) => Access::Forbidden(PRIVATE),
    }
}

/// Why a private room is refused.
pub const PRIVATE: &str = "this room is hidden, members-only or password-protected; the server's operator can give it a read token (token.<room>)";

/// Where an open stream stands after its access is checked again.
#[derive(Debug, PartialEq, Eq)]
pub enum Standing {
    /// It may go on reading.
    Reads,
    /// The room's flags are not known at the moment (the XMPP side is reading its disco#info
    /// again): nothing more is written to it until they are and it is checked once more.
    Held,
    /// It may no longer read the room; the reason to tell it.
    Refused(&'static str),
}

/// Is a stream that opened with `credential` still allowed to read `room`? The room rules of
/// [`check_with`], plus CORS: a page whose origin was allowed when the stream opened and no
/// longer is (a reload changed `cors_origins`) loses its stream too.
pub fn recheck(config: &Config, room: &Room, credential: &Credential) -> Standing {
    if let Some(origin) = credential.origin.as_deref()
        && !origin_allowed(config, origin)
    {
        return Standing::Refused(
            "this page's origin is no longer allowed to read streams (cors_origins)",
        );
    }
    match check_with(config, room, credential) {
        Access::Allow => Standing::Reads,
        Access::NotYetKnown => Standing::Held,
        Access::Forbidden(why) => Standing::Refused(why),
    }
}

/// What an open stream needs to check its access again: the configuration in force (it
/// changes on reload) and the credential the stream opened with.
pub struct Guard {
    pub settings: &'static crate::settings::Settings,
    pub credential: Credential,
}

impl Guard {
    /// Where the stream stands with `room` now (see [`recheck`]).
    pub fn recheck(&self, room: &Room) -> Standing {
        recheck(&self.settings.get(), room, &self.credential)
    }
}

/// Does the credential pass the global `token` (or is there none)? A request that does not is
/// refused whatever room it asks for, so an on-demand room is not even looked up for it.
pub fn passes_global(config: &Config, credential: &Credential) -> bool {
    config.token.as_deref().is_none_or(|global| {
        credential
            .token
            .as_deref()
            .is_some_and(|t| same_secret(t.as_bytes(), global.as_bytes()))
    })
}

/// Is this the operator (`status_token`), who may see every room on the pages?
pub fn operator(config: &Config, head: &Head) -> bool {
    config.status_token.as_deref().is_some_and(|needed| {
        presented(head).is_some_and(|t| same_secret(t.as_bytes(), needed.as_bytes()))
    })
}

fn origin_allowed(config: &Config, origin: &str) -> bool {
    match &config.cors_origins {
        None => true,
        Some(allowed) => allowed.iter().any(|a| a == origin.trim_end_matches('/')),
    }
}

/// The CORS header lines for a response to a request from `origin`.
pub fn cors(config: &Config, origin: Option<&str>) -> String {
    match &config.cors_origins {
        None => "Access-Control-Allow-Origin: *\r\n".into(),
        Some(_) => match origin {
            Some(o) if origin_allowed(config, o) => {
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
        let table = RoomTable::new(crate::rooms::table::Sizes {
            rooms: 2,
            ring_events: 4,
            ring_bytes: 4096,
            subscribers: 4,
        });
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

    /// The README's table "who may read what", row by row: (room kind × keys) → who reads.
    #[test]
    fn the_access_table_of_the_readme() {
        type Flags = fn(&mut crate::rooms::table::RoomInfo);
        let kinds: [(&str, Flags); 4] = [
            ("public", |i| i.public = true),
            ("hidden", |i| i.public = false),
            ("members-only", |i| {
                i.public = true;
                i.members_only = true;
            }),
            ("password", |i| {
                i.public = true;
                i.password = true;
            }),
        ];
        let none = head("GET /x HTTP/1.1\r\n\r\n");
        let global = head("GET /x?token=G HTTP/1.1\r\n\r\n");
        let own = head("GET /x HTTP/1.1\r\nAuthorization: Bearer R\r\n\r\n");
        // keys, then who may read (no token, the global token G, the room's own token R) for a
        // public room and for a private one.
        let rows: [(&str, [bool; 3], [bool; 3]); 6] = [
            ("", [true, true, true], [false, false, false]),
            ("private_rooms = allow", [true; 3], [true; 3]),
            ("token = G", [false, true, false], [false, false, false]),
            (
                "token = G\nprivate_rooms = allow",
                [false, true, false],
                [false, true, false],
            ),
            (
                "token = G\ntoken.closed = R",
                [false, false, true],
                [false, false, true],
            ),
            (
                "token.closed = R",
                [false, false, true],
                [false, false, true],
            ),
        ];
        for (keys, public, private) in rows {
            for (kind, set) in kinds {
                let (c, t) = setup(keys);
                {
                    let mut info = t.room(1).info.borrow_mut();
                    *info = Default::default();
                    info.known = true;
                    set(&mut info);
                }
                let want = if kind == "public" { public } else { private };
                for (who, h, allowed) in [
                    ("nobody", &none, want[0]),
                    ("G", &global, want[1]),
                    ("R", &own, want[2]),
                ] {
                    let got = check(&c, t.room(1), h);
                    assert_eq!(
                        got == Access::Allow,
                        allowed,
                        "{kind} room, keys {keys:?}, token {who}: {got:?}"
                    );
                    // A stream that opened with it is judged the same way later.
                    let again = recheck(&c, t.room(1), &Credential::of(h, &c));
                    assert_eq!(
                        again == Standing::Reads,
                        allowed,
                        "recheck: {kind}, {keys:?}, {who}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_operator_token_and_cors_rechecks() {
        let (c, t) = setup("status_token = op\ncors_origins = http://wall.lan");
        assert!(operator(&c, &head("GET /?token=op HTTP/1.1\r\n\r\n")));
        assert!(!operator(&c, &head("GET /?token=oq HTTP/1.1\r\n\r\n")));
        // It opens no stream.
        assert!(matches!(
            check(&c, t.room(1), &head("GET /x?token=op HTTP/1.1\r\n\r\n")),
            Access::Forbidden(_)
        ));
        let anonymous = Credential::default();
        assert_eq!(check_with(&c, t.room(0), &anonymous), Access::Allow);
        assert_ne!(check_with(&c, t.room(1), &anonymous), Access::Allow);
        let page = head("GET /x HTTP/1.1\r\nOrigin: http://wall.lan\r\n\r\n");
        let credential = Credential::of(&page, &c);
        assert_eq!(recheck(&c, t.room(0), &credential), Standing::Reads);
        let (narrower, _) = setup("cors_origins = http://other.lan");
        assert!(matches!(
            recheck(&narrower, t.room(0), &credential),
            Standing::Refused(_)
        ));
        let (open, _) = setup("");
        assert_eq!(recheck(&open, t.room(0), &credential), Standing::Reads);
        // Flags being read again: held, neither reading nor refused.
        t.room(0).info.borrow_mut().known = false;
        assert_eq!(recheck(&open, t.room(0), &credential), Standing::Held);
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
