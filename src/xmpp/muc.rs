//! The MUC observer (XEP-0045, occupant side): the stanzas we send to join and leave rooms, and
//! the classification of what rooms send us into [`MucEvent`]s.
//!
//! Pure functions over [`Element`]s; the component link does the I/O.

use super::stream::Element;
use super::text::{BadText, XmlText};

pub const NS_MUC: &str = "http://jabber.org/protocol/muc";
pub const NS_MUC_USER: &str = "http://jabber.org/protocol/muc#user";
pub const NS_DELAY: &str = "urn:xmpp:delay";
pub const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
pub const NS_SID: &str = "urn:xmpp:sid:0";
pub const NS_CORRECT: &str = "urn:xmpp:message-correct:0";
pub const NS_RETRACT_1: &str = "urn:xmpp:message-retract:1";
pub const NS_RETRACT_0: &str = "urn:xmpp:message-retract:0";
pub const NS_MODERATE_1: &str = "urn:xmpp:message-moderate:1";
pub const NS_MODERATE_0: &str = "urn:xmpp:message-moderate:0";
pub const NS_FASTEN: &str = "urn:xmpp:fasten:0";

/// Join presence: available, to `room/nick`, with the MUC `<x/>` asking for `history` messages
/// of history (0 = none), and the room's password when it has one. Every value is checked
/// ([`XmlText`]): a room JID or nick XML forbids is refused, never sent.
pub fn join(
    from: &str,
    room_jid: &str,
    nick: &str,
    history: usize,
    password: Option<&str>,
) -> Result<String, BadText> {
    let password = match password {
        Some(p) => format!("<password>{}</password>", XmlText::new(p)?),
        None => String::new(),
    };
    Ok(format!(
        "<presence from='{}' to='{}/{}'><x xmlns='{NS_MUC}'><history maxstanzas='{history}'/>{password}</x></presence>",
        XmlText::new(from)?,
        XmlText::new(room_jid)?,
        XmlText::new(nick)?
    ))
}

/// Leave presence.
pub fn leave(from: &str, room_jid: &str, nick: &str) -> Result<String, BadText> {
    Ok(format!(
        "<presence from='{}' to='{}/{}' type='unavailable'/>",
        XmlText::new(from)?,
        XmlText::new(room_jid)?,
        XmlText::new(nick)?
    ))
}

/// What a room stanza means to us.
#[derive(Debug, PartialEq, Eq)]
pub enum MucEvent<'a> {
    /// A groupchat message with a body.
    Message {
        room: &'a str,
        nick: Option<&'a str>,
        body: &'a str,
        /// XEP-0359 stanza-id the room stamped on it (only the one `by` the room itself).
        stanza_id: Option<&'a str>,
        /// XEP-0203 delay stamp: set for history replayed on join, `None` for live messages.
        delay: Option<&'a str>,
        /// The stanza's own `id` attribute.
        origin_id: Option<&'a str>,
        /// XEP-0308: the `id` of the message this one corrects.
        replaces: Option<&'a str>,
    },
    /// XEP-0424 retraction by the author, or XEP-0425 moderation by the room (`nick` is then
    /// `None`), of the message whose stanza-id is `target`.
    Retract {
        room: &'a str,
        nick: Option<&'a str>,
        target: &'a str,
        moderated: bool,
        reason: Option<&'a str>,
    },
    /// Another occupant's presence: joined (or still there) when `available`, else left.
    Occupant {
        room: &'a str,
        nick: &'a str,
        available: bool,
    },
    /// A subject message (subject, no body): a change, or the current subject sent on join.
    Subject {
        room: &'a str,
        nick: Option<&'a str>,
        subject: &'a str,
    },
    /// Our own presence came back with status 110: we are in.
    Joined { room: &'a str, nick: &'a str },
    /// The room refused our join (or a later stanza) with this error condition.
    JoinError {
        room: &'a str,
        condition: &'a str,
        text: Option<&'a str>,
    },
    /// Our occupant left the room; `codes` are the status codes (307 kick, 301 ban, …),
    /// `destroyed` when the room was destroyed.
    Removed {
        room: &'a str,
        codes: Vec<u16>,
        destroyed: bool,
    },
    /// The room's configuration changed (status 104) or its logging/anonymity did (170–174):
    /// what disco#info said about it (public, members-only, password, archive) may be stale.
    ConfigChanged { room: &'a str },
    /// Anything else (others' presence, subject, history, private messages…).
    Ignored,
}

/// Splits `node@domain/resource` into the bare JID and the resource.
pub fn split_jid(jid: &str) -> (&str, Option<&str>) {
    match jid.split_once('/') {
        Some((bare, resource)) => (bare, Some(resource)),
        None => (jid, None),
    }
}

/// Classifies a stanza from the MUC service. `our_nick` is the nick we joined the stanza's room
/// with, if it is one of ours.
pub fn classify<'a>(stanza: &'a Element, our_nick: Option<&str>) -> MucEvent<'a> {
    let Some(from) = stanza.attr("from") else {
        return MucEvent::Ignored;
    };
    let (room, resource) = split_jid(from);
    match stanza.name.as_str() {
        "message" => message(stanza, room, resource),
        "presence" => presence(stanza, room, resource, our_nick),
        _ => MucEvent::Ignored,
    }
}

/// A `<message/>` from `room` (`resource`: the sender's nick, none from the room itself).
fn message<'a>(stanza: &'a Element, room: &'a str, resource: Option<&'a str>) -> MucEvent<'a> {
    if stanza.attr("type") == Some("error") {
        return join_error(stanza, room);
    }
    if stanza.attr("type") != Some("groupchat") {
        return MucEvent::Ignored;
    }
    let nick = resource.filter(|r| !r.is_empty());
    let child = |name: &str| {
        stanza
            .children
            .iter()
            .find(|c| c.name == name && c.ns == stanza.ns)
    };
    if let Some(retract) = retraction(stanza, room, nick) {
        return retract;
    }
    if nick.is_none() && config_change(stanza) {
        return MucEvent::ConfigChanged { room };
    }
    match (child("body"), child("subject")) {
        (Some(body), _) => MucEvent::Message {
            room,
            nick,
            body: &body.text,
            stanza_id: stanza
                .children
                .iter()
                .find(|c| c.name == "stanza-id" && c.ns == NS_SID && c.attr("by") == Some(room))
                .and_then(|c| c.attr("id")),
            // History replayed on join carries a delay stamped by the room.
            delay: stanza
                .child("delay", NS_DELAY)
                .and_then(|d| d.attr("stamp")),
            origin_id: stanza.attr("id"),
            replaces: stanza
                .child("replace", NS_CORRECT)
                .and_then(|r| r.attr("id")),
        },
        (None, Some(subject)) => MucEvent::Subject {
            room,
            nick,
            subject: &subject.text,
        },
        (None, None) => MucEvent::Ignored,
    }
}

/// A `<presence/>` from `room/resource`: another occupant's, or ours (status 110, or the nick
/// we joined with).
fn presence<'a>(
    stanza: &'a Element,
    room: &'a str,
    resource: Option<&'a str>,
    our_nick: Option<&str>,
) -> MucEvent<'a> {
    if stanza.attr("type") == Some("error") {
        return join_error(stanza, room);
    }
    let Some(x) = stanza.child("x", NS_MUC_USER) else {
        return MucEvent::Ignored;
    };
    let codes: Vec<u16> = x
        .children
        .iter()
        .filter(|c| c.name == "status")
        .filter_map(|c| c.attr("code")?.parse().ok())
        .collect();
    let is_self = codes.contains(&110) || (resource.is_some() && resource == our_nick);
    if !is_self {
        return match resource {
            Some(nick) if !nick.is_empty() => MucEvent::Occupant {
                room,
                nick,
                available: stanza.attr("type") != Some("unavailable"),
            },
            _ => MucEvent::Ignored,
        };
    }
    if stanza.attr("type") == Some("unavailable") {
        // A nick change (303) is not a removal: the new presence follows.
        if codes.contains(&303) {
            return MucEvent::Ignored;
        }
        return MucEvent::Removed {
            room,
            destroyed: x.child("destroy", NS_MUC_USER).is_some(),
            codes,
        };
    }
    if codes.contains(&110) {
        MucEvent::Joined {
            room,
            nick: resource.unwrap_or(""),
        }
    } else {
        MucEvent::Ignored
    }
}

/// A retraction or moderation in a groupchat message: XEP-0424 v1 `<retract id=…/>` (with
/// `<moderated/>` inside for XEP-0425 v1), or the older fastening form Prosody 0.12's
/// `mod_muc_moderation` sends (`<apply-to id=…><moderated><retract/></moderated></apply-to>`).
fn retraction<'a>(
    stanza: &'a Element,
    room: &'a str,
    nick: Option<&'a str>,
) -> Option<MucEvent<'a>> {
    let reason_of = |moderated: &'a Element| {
        moderated
            .children
            .iter()
            .find(|c| c.name == "reason")
            .map(|r| r.text.as_str())
    };
    if let Some(retract) = stanza.child("retract", NS_RETRACT_1) {
        let moderated = retract.child("moderated", NS_MODERATE_1);
        return Some(MucEvent::Retract {
            room,
            nick,
            target: retract.attr("id")?,
            moderated: moderated.is_some(),
            reason: moderated.and_then(reason_of),
        });
    }
    let apply = stanza.child("apply-to", NS_FASTEN)?;
    let target = apply.attr("id")?;
    if let Some(moderated) = apply.child("moderated", NS_MODERATE_0) {
        moderated.child("retract", NS_RETRACT_0)?;
        return Some(MucEvent::Retract {
            room,
            nick,
            target,
            moderated: true,
            reason: reason_of(moderated),
        });
    }
    apply.child("retract", NS_RETRACT_0)?;
    Some(MucEvent::Retract {
        room,
        nick,
        target,
        moderated: false,
        reason: None,
    })
}

/// A message from the room itself carrying status 104 or 170–174 (XEP-0045 §10.2.1, §9.2).
fn config_change(stanza: &Element) -> bool {
    stanza.child("x", NS_MUC_USER).is_some_and(|x| {
        x.children.iter().any(|c| {
            c.name == "status"
                && matches!(
                    c.attr("code"),
                    Some("104" | "170" | "171" | "172" | "173" | "174")
                )
        })
    })
}

fn join_error<'a>(stanza: &'a Element, room: &'a str) -> MucEvent<'a> {
    let error = stanza.children.iter().find(|c| c.name == "error");
    let condition = error
        .and_then(|e| {
            e.children
                .iter()
                .find(|c| c.ns == NS_STANZAS && c.name != "text")
        })
        .map_or("undefined-condition", |c| c.name.as_str());
    let text = error
        .and_then(|e| e.child("text", NS_STANZAS))
        .map(|t| t.text.as_str())
        .filter(|t| !t.is_empty());
    MucEvent::JoinError {
        room,
        condition,
        text,
    }
}

/// What a join error condition means, for the log line.
pub fn explain_condition(condition: &str) -> &'static str {
    match condition {
        "item-not-found" => "the room does not exist (muc-eventsource never creates rooms)",
        "forbidden" => "we are banned from the room",
        "registration-required" => "the room is members-only; make the component's JID a member",
        "not-authorized" => "the room is password-protected",
        "conflict" => "the nick is in use; trying another",
        "service-unavailable" => "the room is full or the service is unavailable",
        "not-allowed" => "room creation is restricted and the room does not exist",
        "not-acceptable" => "the nick is reserved or not acceptable; set another `nick`",
        "remote-server-not-found" | "remote-server-timeout" => {
            "the MUC service is unreachable; check `muc`"
        }
        _ => "the MUC service refused the join",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(xml: &str) -> Element {
        Element::parse(xml.as_bytes(), "jabber:component:accept").unwrap()
    }

    const NICK: Option<&str> = Some("eventsource");

    #[test]
    fn join_stanza_escapes_and_carries_the_muc_x() {
        let s = join(
            "sse.localhost",
            "lobby@conference.localhost",
            "a'b<",
            5,
            Some("p&w"),
        )
        .unwrap();
        assert!(s.contains("<password>p&amp;w</password>"), "{s}");
        assert!(s.contains("maxstanzas='5'"), "{s}");
        assert!(
            s.contains("to='lobby@conference.localhost/a&apos;b&lt;'"),
            "{s}"
        );
        let e = el(&s);
        assert!(e.child("x", NS_MUC).is_some());
        assert!(join("s", "\u{fffe}@c", "n", 0, None).is_err());
        assert!(join("s", "r@c", "n", 0, Some("\u{1b}")).is_err());
        assert!(leave("s", "r@c", "n\u{0}").is_err());
    }

    #[test]
    fn configuration_changes_are_noticed() {
        for code in ["104", "172"] {
            let e = el(&format!(
                "<message type='groupchat' from='lobby@c'><x xmlns='http://jabber.org/protocol/muc#user'><status code='{code}'/></x></message>"
            ));
            assert_eq!(
                classify(&e, NICK),
                MucEvent::ConfigChanged { room: "lobby@c" }
            );
        }
        // From an occupant, a status element means nothing.
        let e = el(
            "<message type='groupchat' from='lobby@c/mallory'><x xmlns='http://jabber.org/protocol/muc#user'><status code='104'/></x><body>hi</body></message>",
        );
        assert!(matches!(classify(&e, NICK), MucEvent::Message { .. }));
    }

    #[test]
    fn groupchat_with_body_is_a_message() {
        let e = el(
            "<message type='groupchat' from='lobby@c/alice'><body>hi</body><stanza-id xmlns='urn:xmpp:sid:0' by='alice@x' id='fake'/><stanza-id xmlns='urn:xmpp:sid:0' by='lobby@c' id='s1'/></message>",
        );
        assert_eq!(
            classify(&e, NICK),
            MucEvent::Message {
                room: "lobby@c",
                nick: Some("alice"),
                body: "hi",
                stanza_id: Some("s1"),
                delay: None,
                origin_id: None,
                replaces: None
            }
        );
        let e = el(
            "<message type='groupchat' id='m2' from='lobby@c/alice'><body>fixed</body><replace xmlns='urn:xmpp:message-correct:0' id='m1'/></message>",
        );
        assert!(matches!(
            classify(&e, NICK),
            MucEvent::Message {
                origin_id: Some("m2"),
                replaces: Some("m1"),
                ..
            }
        ));
        let e = el(
            "<message type='groupchat' from='lobby@c/alice'><retract xmlns='urn:xmpp:message-retract:1' id='s1'/><body>fallback</body></message>",
        );
        assert_eq!(
            classify(&e, NICK),
            MucEvent::Retract {
                room: "lobby@c",
                nick: Some("alice"),
                target: "s1",
                moderated: false,
                reason: None
            }
        );
        let e = el(
            "<message type='groupchat' from='lobby@c'><apply-to xmlns='urn:xmpp:fasten:0' id='s9'><moderated xmlns='urn:xmpp:message-moderate:0' by='lobby@c/mod'><retract xmlns='urn:xmpp:message-retract:0'/><reason>spam</reason></moderated></apply-to><body>fallback</body></message>",
        );
        assert_eq!(
            classify(&e, NICK),
            MucEvent::Retract {
                room: "lobby@c",
                nick: None,
                target: "s9",
                moderated: true,
                reason: Some("spam")
            }
        );
        let e = el("<message type='groupchat' from='lobby@c/alice'><subject>t</subject></message>");
        assert_eq!(
            classify(&e, NICK),
            MucEvent::Subject {
                room: "lobby@c",
                nick: Some("alice"),
                subject: "t"
            }
        );
        let e = el(
            "<message type='groupchat' from='lobby@c/a'><body>old</body><delay xmlns='urn:xmpp:delay' stamp='2026-01-01T00:00:00Z'/></message>",
        );
        assert!(matches!(
            classify(&e, NICK),
            MucEvent::Message {
                delay: Some("2026-01-01T00:00:00Z"),
                stanza_id: None,
                ..
            }
        ));
        let e = el("<message type='chat' from='lobby@c/a'><body>pm</body></message>");
        assert_eq!(classify(&e, NICK), MucEvent::Ignored);
        let e = el(
            "<message type='groupchat' from='lobby@c/a'><active xmlns='http://jabber.org/protocol/chatstates'/></message>",
        );
        assert_eq!(classify(&e, NICK), MucEvent::Ignored);
        let e = el("<message type='groupchat' from='lobby@c'><body>room says</body></message>");
        assert!(matches!(
            classify(&e, NICK),
            MucEvent::Message {
                nick: None,
                body: "room says",
                ..
            }
        ));
    }

    #[test]
    fn self_presence_errors_and_removals() {
        let e = el(
            "<presence from='lobby@c/eventsource'><x xmlns='http://jabber.org/protocol/muc#user'><item role='visitor'/><status code='110'/></x></presence>",
        );
        assert_eq!(
            classify(&e, NICK),
            MucEvent::Joined {
                room: "lobby@c",
                nick: "eventsource"
            }
        );
        let e = el(
            "<presence from='lobby@c/bob'><x xmlns='http://jabber.org/protocol/muc#user'><item role='participant'/></x></presence>",
        );
        assert_eq!(
            classify(&e, NICK),
            MucEvent::Occupant {
                room: "lobby@c",
                nick: "bob",
                available: true
            }
        );
        let e = el(
            "<presence type='error' from='lobby@c/eventsource'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>No such room</text></error></presence>",
        );
        assert_eq!(
            classify(&e, NICK),
            MucEvent::JoinError {
                room: "lobby@c",
                condition: "item-not-found",
                text: Some("No such room")
            }
        );
        let e = el(
            "<presence type='unavailable' from='lobby@c/eventsource'><x xmlns='http://jabber.org/protocol/muc#user'><item role='none'/><status code='307'/><status code='110'/></x></presence>",
        );
        assert_eq!(
            classify(&e, NICK),
            MucEvent::Removed {
                room: "lobby@c",
                codes: vec![307, 110],
                destroyed: false
            }
        );
        let e = el(
            "<presence type='unavailable' from='lobby@c/eventsource'><x xmlns='http://jabber.org/protocol/muc#user'><item role='none'/><destroy/><status code='110'/></x></presence>",
        );
        assert!(matches!(
            classify(&e, NICK),
            MucEvent::Removed {
                destroyed: true,
                ..
            }
        ));
    }
}
