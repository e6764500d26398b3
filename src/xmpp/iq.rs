//! IQ traffic with the XMPP server: the typed ids of the queries we send (each id format is
//! written and read here only), the queries themselves as pure builders, and the reader for a
//! stanza's `<error/>`.
//!
//! An id names the room table entry *and its generation*, so a late answer for an entry since
//! given to another room is recognised as stale; the component also checks that an answer comes
//! `from` the JID the query went `to`.

use std::fmt;

use super::stream::Element;
use super::text::{BadText, XmlText};

pub const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
pub const NS_DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
pub const NS_PING: &str = "urn:xmpp:ping";
pub const NS_MAM: &str = "urn:xmpp:mam:2";
pub const NS_RSM: &str = "http://jabber.org/protocol/rsm";
pub const NS_FORWARD: &str = "urn:xmpp:forward:0";
pub const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

/// What an IQ we sent was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IqId {
    /// disco#info of a room entry (does it exist, is it public, does it archive?).
    Disco { room: usize, generation: u32 },
    /// XEP-0410 self-ping of our occupant in a room.
    SelfPing { room: usize, generation: u32 },
    /// An archive query for a client resuming from an id the ring no longer holds.
    Resume { query: u64 },
    /// An archive query filling a room's gap after a re-join; `page` counts from 0.
    Fill {
        room: usize,
        generation: u32,
        page: u32,
    },
    /// disco#items of the MUC service (`rooms = *`).
    RoomsList,
    /// The link keepalive ping.
    LinkPing,
}

impl fmt::Display for IqId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            IqId::Disco { room, generation } => write!(f, "disco-{room}-{generation}"),
            IqId::SelfPing { room, generation } => write!(f, "selfping-{room}-{generation}"),
            IqId::Resume { query } => write!(f, "mam-{query}"),
            IqId::Fill {
                room,
                generation,
                page,
            } => write!(f, "fill-{room}-{generation}-{page}"),
            IqId::RoomsList => f.write_str("rooms-list"),
            IqId::LinkPing => f.write_str("link-ping"),
        }
    }
}

impl IqId {
    /// The id of an answer, if it is one of ours.
    pub fn parse(id: &str) -> Option<IqId> {
        let numbers =
            |rest: &str| -> Option<Vec<u64>> { rest.split('-').map(|n| n.parse().ok()).collect() };
        let (kind, rest) = id.split_once('-').unwrap_or((id, ""));
        Some(match (kind, numbers(rest).as_deref()) {
            ("disco", Some(&[room, generation])) => IqId::Disco {
                room: room.try_into().ok()?,
                generation: generation.try_into().ok()?,
            },
            ("selfping", Some(&[room, generation])) => IqId::SelfPing {
                room: room.try_into().ok()?,
                generation: generation.try_into().ok()?,
            },
            ("mam", Some(&[query])) => IqId::Resume { query },
            ("fill", Some(&[room, generation, page])) => IqId::Fill {
                room: room.try_into().ok()?,
                generation: generation.try_into().ok()?,
                page: page.try_into().ok()?,
            },
            _ if id == "rooms-list" => IqId::RoomsList,
            _ if id == "link-ping" => IqId::LinkPing,
            _ => return None,
        })
    }
}

/// A stanza's error, as RFC 6120 §8.3 puts it: the defined condition and the optional text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StanzaError {
    pub condition: String,
    pub text: Option<String>,
}

/// Reads the `<error/>` child of an `iq`, `message` or `presence` of type `error`.
/// A missing or empty error reads as `undefined-condition`.
pub fn stanza_error(stanza: &Element) -> StanzaError {
    let error = stanza.children.iter().find(|c| c.name == "error");
    let defined = |c: &&Element| c.ns == NS_STANZAS && c.name != "text";
    let condition = error
        .and_then(|e| {
            e.children
                .iter()
                .find(defined)
                .or_else(|| e.children.iter().find(|c| c.name != "text"))
        })
        .map_or_else(|| "undefined-condition".to_string(), |c| c.name.clone());
    let text = error
        .and_then(|e| e.children.iter().find(|c| c.name == "text"))
        .map(|t| t.text.clone())
        .filter(|t| !t.is_empty());
    StanzaError { condition, text }
}

/// `<iq type='get'>` with one empty query child in namespace `ns` (disco#info, disco#items).
pub fn query(id: IqId, from: &str, to: &str, ns: &str) -> Result<String, BadText> {
    Ok(format!(
        "<iq type='get' id='{id}' from='{}' to='{}'><query xmlns='{ns}'/></iq>",
        XmlText::new(from)?,
        XmlText::new(to)?
    ))
}

/// XEP-0199 ping.
pub fn ping(id: IqId, from: &str, to: &str) -> Result<String, BadText> {
    Ok(format!(
        "<iq type='get' id='{id}' from='{}' to='{}'><ping xmlns='{NS_PING}'/></iq>",
        XmlText::new(from)?,
        XmlText::new(to)?
    ))
}

/// XEP-0313 archive query of room `to`: at most `max` messages after the archive id `after`
/// (RSM), oldest first. The id doubles as the query id that marks the results.
pub fn archive(id: IqId, from: &str, to: &str, after: &str, max: usize) -> Result<String, BadText> {
    Ok(format!(
        "<iq type='set' id='{id}' from='{}' to='{}'><query xmlns='{NS_MAM}' queryid='{id}'><set xmlns='{NS_RSM}'><max>{max}</max><after>{}</after></set></query></iq>",
        XmlText::new(from)?,
        XmlText::new(to)?,
        XmlText::new(after)?
    ))
}

/// The answer to an IQ the server sent us (`id`, `from`, `to` as it sent them): a result to a
/// ping, our disco#info to a disco#info query, `service-unavailable` to anything else.
pub fn answer(request: &Element, own_jid: &str) -> Result<Option<String>, BadText> {
    let kind = request.attr("type");
    if !matches!(kind, Some("get" | "set")) {
        return Ok(None);
    }
    let id = XmlText::new(request.attr("id").unwrap_or(""))?;
    let from = XmlText::new(request.attr("to").unwrap_or(own_jid))?;
    let to = XmlText::new(request.attr("from").unwrap_or(""))?;
    let get = kind == Some("get");
    Ok(Some(if get && request.child("ping", NS_PING).is_some() {
        format!("<iq type='result' id='{id}' from='{from}' to='{to}'/>")
    } else if get && request.child("query", NS_DISCO_INFO).is_some() {
        format!(
            "<iq type='result' id='{id}' from='{from}' to='{to}'><query xmlns='{NS_DISCO_INFO}'><identity category='component' type='generic' name='muc-eventsource'/><feature var='{NS_DISCO_INFO}'/><feature var='{NS_PING}'/></query></iq>"
        )
    } else {
        format!(
            "<iq type='error' id='{id}' from='{from}' to='{to}'><error type='cancel'><service-unavailable xmlns='{NS_STANZAS}'/></error></iq>"
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_foreign_ids_are_not_ours() {
        for id in [
            IqId::Disco {
                room: 3,
                generation: 7,
            },
            IqId::SelfPing {
                room: 0,
                generation: u32::MAX,
            },
            IqId::Resume { query: 99 },
            IqId::Fill {
                room: 1,
                generation: 2,
                page: 3,
            },
            IqId::RoomsList,
            IqId::LinkPing,
        ] {
            assert_eq!(IqId::parse(&id.to_string()), Some(id));
        }
        for foreign in [
            "",
            "disco-1",
            "disco-1-2-3",
            "disco-x-1",
            "mam-",
            "fill-1-2",
            "selfping--1",
            "rooms",
            "disco-1-99999999999",
            "purple",
        ] {
            assert_eq!(IqId::parse(foreign), None, "{foreign}");
        }
    }

    fn el(xml: &str) -> Element {
        Element::parse(xml.as_bytes(), "jabber:component:accept").unwrap()
    }

    #[test]
    fn reads_the_defined_condition_and_text() {
        let e = el(
            "<iq type='error' id='x'><error type='cancel'><text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>gone</text><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
        );
        assert_eq!(
            stanza_error(&e),
            StanzaError {
                condition: "item-not-found".into(),
                text: Some("gone".into())
            }
        );
        let bare = el("<iq type='error' id='x'/>");
        assert_eq!(stanza_error(&bare).condition, "undefined-condition");
    }

    #[test]
    fn queries_refuse_values_xml_forbids() {
        let id = IqId::Resume { query: 1 };
        assert!(archive(id, "sse.localhost", "a@b", "x\u{1}", 10).is_err());
        assert!(archive(id, "sse.localhost", "a@b", "x\u{fffe}", 10).is_err());
        let q = archive(id, "sse.localhost", "a@b", "<&>", 10).unwrap();
        assert!(q.contains("<after>&lt;&amp;&gt;</after>"), "{q}");
        assert!(query(id, "s", "\u{fffe}@c", NS_DISCO_INFO).is_err());
    }
}
