//! The whole request path, from the bytes a client sends to the bytes the daemon would write
//! to the XMPP server because of them (security review F1, F1b: one ill-formed stanza makes the
//! server drop the component link, every room with it).
//!
//! A client's request can put two kinds of value upstream: a resume id (`Last-Event-ID` or
//! `?lastEventId=`, single or composite) that becomes an archive query's `<after>`, and, with
//! `on_demand = yes`, a room node that becomes a room JID in a disco#info query and a join
//! presence. For each, as the daemon does: parse the head, take the start
//! (`routes::start`), keep only what `rooms::resume::archive_after` / `config::check_room_node`
//! let through (the room's issued shapes are taken to admit the id: the worst case), and build
//! the stanza. Checked:
//! * every stanza built is well-formed XML 1.0: quick-xml reads it inside a stream element
//!   without error, with matching end tags, and every character is an XML `Char`;
//! * what validation let through is never refused by the stanza builders (`XmlText`): the
//!   validation at the edge is at least as strict as the last line of defence.
#![no_main]

use libfuzzer_sys::fuzz_target;
use muc_eventsource::config::check_room_node;
use muc_eventsource::http::request::{parse, percent_decode};
use muc_eventsource::http::routes::start;
use muc_eventsource::http::start::Start;
use muc_eventsource::http::multi;
use muc_eventsource::rooms::resume::{Shapes, archive_after, EventId};
use muc_eventsource::xmpp::iq::{self, IqId, NS_DISCO_INFO};
use muc_eventsource::xmpp::muc;
use muc_eventsource::xmpp::text::is_xml_char;
use quick_xml::events::Event;

const COMPONENT: &str = "sse.localhost";
const MUC: &str = "conference.localhost";

fn well_formed(stanza: &str) {
    if let Some(c) = stanza.chars().find(|&c| !is_xml_char(c)) {
        panic!("U+{:04X} XML forbids in {stanza:?}", c as u32);
    }
    let doc = format!(
        "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:component:accept'>{stanza}</stream:stream>"
    );
    let mut reader = quick_xml::Reader::from_str(&doc);
    reader.config_mut().check_end_names = true;
    let mut depth = 0i32;
    loop {
        match reader.read_event() {
            Ok(Event::Eof) => break,
            Ok(Event::Start(s)) => {
                for a in s.attributes() {
                    a.unwrap_or_else(|e| panic!("bad attribute in {stanza:?}: {e}"));
                }
                depth += 1;
            }
            Ok(Event::Empty(s)) => {
                for a in s.attributes() {
                    a.unwrap_or_else(|e| panic!("bad attribute in {stanza:?}: {e}"));
                }
            }
            Ok(Event::End(_)) => depth -= 1,
            Ok(Event::DocType(_)) | Ok(Event::PI(_)) => panic!("markup injected: {stanza:?}"),
            Ok(_) => {}
            Err(e) => panic!("not well-formed: {e}: {stanza:?}"),
        }
    }
    assert_eq!(depth, 0, "unbalanced: {stanza:?}");
}

/// The archive query a resume from `id` in one room would send, if any.
fn resume(id: &str) {
    let Some(parsed) = EventId::parse(id) else {
        return;
    };
    let mut shapes = Shapes::default();
    shapes.record(parsed.base_str());
    let Some(after) = archive_after(id, &shapes) else {
        return;
    };
    let stanza = iq::archive(IqId::Resume { query: 1 }, COMPONENT, "lobby@conference.localhost", after, 100)
        .unwrap_or_else(|e| panic!("validated id {after:?} refused by the builder: {e}"));
    well_formed(&stanza);
}

fuzz_target!(|data: &[u8]| {
    let Ok(Some(head)) = parse(data) else {
        return;
    };
    match start(&head, false) {
        Start::After(id) => resume(&id),
        Start::Unknown(id) => assert!(EventId::parse(&id).is_none(), "{id:?}"),
        _ => {}
    }
    if let Start::After(composite) = start(&head, true) {
        for s in multi::starts(&["lobby", "news"], &Start::After(composite)) {
            if let Start::After(id) = s {
                resume(&id);
            }
        }
    }
    let Some(node) = head
        .path
        .strip_prefix("/eventsource/")
        .and_then(percent_decode)
    else {
        return;
    };
    if check_room_node(&node).is_err() {
        return;
    }
    let jid = format!("{}@{MUC}", node.to_lowercase());
    let disco = iq::query(IqId::Disco { room: 0, generation: 1 }, COMPONENT, &jid, NS_DISCO_INFO)
        .unwrap_or_else(|e| panic!("validated node {node:?} refused by the builder: {e}"));
    well_formed(&disco);
    let join = muc::join(COMPONENT, &jid, "eventsource", 20, None)
        .unwrap_or_else(|e| panic!("validated node {node:?} refused by the builder: {e}"));
    well_formed(&join);
});
