//! Archive (XEP-0313) traffic over one session: the queries the HTTP side files for clients
//! resuming from an id the ring no longer holds ([`Query::Resume`]), and the fills that close
//! the hole after a room is re-joined ([`Query::Fill`], paged with RSM, at most [`MAX_FILL`]
//! messages), with the archived messages that come back for each.

use std::io;
use std::time::Instant;

use super::iq::{self, IqId, NS_FORWARD, NS_MAM};
use super::muc;
use super::session::{Query, Session};
use super::stream::Element;
use crate::rooms::archive::{Archived, Found, MAX_FETCH};
use crate::rooms::feed::OwnedMessage;
use crate::rooms::frame;

/// Messages an archive fill after a re-join fetches at most; beyond, subscribers get `gap`.
pub const MAX_FILL: usize = 1000;

impl Session<'_> {
    /// Sends the archive queries the HTTP side asked for (XEP-0313, with an RSM `after`).
    pub(super) async fn send_resume_queries(&mut self) -> io::Result<()> {
        while let Some(fetch) = self.table.archive.next_request() {
            let room = self.table.room(fetch.room);
            if room.is_free() || !room.info.borrow().mam {
                fetch.finish(Err("the room has no archive".into()));
                self.table.archive.done();
                continue;
            }
            self.resumes_sent += 1;
            let id = IqId::Resume {
                query: self.resumes_sent,
            };
            match iq::archive(
                id,
                &self.config.component,
                &room.jid(),
                &fetch.after,
                MAX_FETCH,
            ) {
                Ok(xml) => self.up.send(&xml).await?,
                Err(bad) => {
                    fetch.finish(Err(format!(
                        "the id cannot be sent to the archive: it {bad}"
                    )));
                    self.table.archive.done();
                    continue;
                }
            }
            self.resumes.insert(
                self.resumes_sent,
                Query::Resume {
                    room: fetch.room,
                    fetch,
                    messages: Vec::new(),
                },
            );
        }
        Ok(())
    }

    /// Starts (page 0) or continues an archive fill of a room after `after`.
    pub(super) async fn ask_fill(
        &mut self,
        index: usize,
        page: u32,
        after: &str,
        fetched: usize,
    ) -> io::Result<()> {
        let room = self.table.room(index);
        let generation = room.generation();
        let max = (room.ring().capacity() / 2).clamp(1, MAX_FETCH);
        let id = IqId::Fill {
            room: index,
            generation,
            page,
        };
        match iq::archive(id, &self.config.component, &room.jid(), after, max) {
            Ok(xml) => {
                self.up.send(&xml).await?;
                self.fills.insert(
                    index,
                    Query::Fill {
                        generation,
                        page,
                        sent: Instant::now(),
                        messages: Vec::new(),
                        fetched,
                    },
                );
            }
            Err(bad) => {
                log::debug!(
                    "{}: cannot ask the archive after {after:?}: {bad}",
                    room.jid()
                );
                self.end_fill(
                    index,
                    Some("re-joined the room after an outage; its archive cannot be asked"),
                );
            }
        }
        Ok(())
    }

    /// A fill is over: publishes what the feed held (after a gap, if `gap`).
    pub(super) fn end_fill(&mut self, index: usize, gap: Option<&str>) {
        self.links[index].feed.filled(self.table, index, gap);
        self.table.room(index).set_synced(true);
    }

    /// An archived message of a query in flight: `<message><result queryid id><forwarded>
    /// <message from='room/nick'><body/>`. Returns whether the stanza was one.
    pub(super) fn archive_result(&mut self, stanza: &Element) -> bool {
        let Some(result) = stanza.child("result", NS_MAM) else {
            return false;
        };
        let (Some(query), Some(id)) = (result.attr("queryid"), result.attr("id")) else {
            return true;
        };
        let Some(message) = result
            .child("forwarded", NS_FORWARD)
            .and_then(|f| f.children.iter().find(|c| c.name == "message"))
        else {
            return true;
        };
        let Some(body) = message.children.iter().find(|c| c.name == "body") else {
            return true;
        };
        let sender = stanza.attr("from").and_then(|f| self.served(f));
        let nick = message
            .attr("from")
            .and_then(|f| muc::split_jid(f).1)
            .filter(|n| !n.is_empty());
        if !frame::valid_id(id) {
            return true;
        }
        if let Some(room) = sender {
            // An archive id is a stanza-id of the room: resumes in its shape may be asked for.
            let info = &self.table.room(room).info;
            info.borrow_mut().stanza_shapes.record(id);
        }
        match IqId::parse(query) {
            Some(IqId::Resume { query }) => {
                if let Some(Query::Resume { room, messages, .. }) = self.resumes.get_mut(&query)
                    && sender == Some(*room)
                    && messages.len() < MAX_FETCH
                {
                    messages.push(Archived {
                        id: id.into(),
                        event: frame::Event::message(id, nick, &body.text),
                    });
                }
            }
            Some(IqId::Fill {
                room, generation, ..
            }) => {
                if let Some(Query::Fill {
                    generation: g,
                    messages,
                    ..
                }) = self.fills.get_mut(&room)
                    && *g == generation
                    && sender == Some(room)
                    && messages.len() < MAX_FETCH
                {
                    messages.push(OwnedMessage {
                        nick: nick.map(str::to_string),
                        body: body.text.clone(),
                        stanza_id: Some(id.to_string()),
                        delay: None,
                        origin_id: message.attr("id").map(str::to_string),
                    });
                }
            }
            _ => {}
        }
        true
    }

    /// A page of an archive fill came back.
    pub(super) async fn filled_page(
        &mut self,
        stanza: &Element,
        ok: bool,
        index: usize,
        generation: u32,
        page: u32,
    ) -> io::Result<()> {
        let from = stanza.attr("from").unwrap_or("");
        let matches = matches!(self.fills.get(&index), Some(Query::Fill { generation: g, page: p, .. }) if *g == generation && *p == page);
        if !matches || !self.ours(index, generation, from) {
            return Ok(());
        }
        let Some(Query::Fill {
            messages, fetched, ..
        }) = self.fills.remove(&index)
        else {
            return Ok(());
        };
        let table = self.table;
        if !ok {
            let error = iq::stanza_error(stanza);
            log::info!(
                "{}: the archive cannot fill the gap ({})",
                table.room(index).jid(),
                error.condition
            );
            self.end_fill(
                index,
                Some("re-joined the room after an outage; its archive no longer holds the last message seen"),
            );
            return Ok(());
        }
        let published = self.links[index].feed.fill(table, index, &messages);
        let fetched = fetched + messages.len();
        let complete = stanza
            .child("fin", NS_MAM)
            .is_some_and(|f| f.attr("complete") == Some("true"));
        log::debug!(
            "{}: archive fill page {page}: {} messages, {published} new{}",
            table.room(index).jid(),
            messages.len(),
            if complete { ", complete" } else { "" }
        );
        match messages.last() {
            _ if complete => {
                log::info!(
                    "{}: filled {fetched} messages from the archive",
                    table.room(index).jid()
                );
                self.end_fill(index, None);
            }
            Some(last) if fetched < MAX_FILL => {
                let after = last.stanza_id.clone().unwrap_or_default();
                self.ask_fill(index, page + 1, &after, fetched).await?;
            }
            _ => self.end_fill(
                index,
                Some("re-joined the room after an outage; more messages were missed than one archive fill fetches"),
            ),
        }
        Ok(())
    }

    /// The answer to a resume query: what was collected goes to the waiting client.
    pub(super) fn resume_answered(&mut self, stanza: &Element, ok: bool, query: u64) {
        let from = stanza.attr("from").unwrap_or("");
        let Some(Query::Resume {
            room,
            fetch,
            messages,
        }) = self.resumes.remove(&query)
        else {
            return;
        };
        if !from.eq_ignore_ascii_case(&self.table.room(room).jid()) {
            // Not the room we asked: put it back and wait for the real answer.
            let query_state = Query::Resume {
                room,
                fetch,
                messages,
            };
            self.resumes.insert(query, query_state);
            return;
        }
        self.table.archive.done();
        if ok {
            let complete = stanza
                .child("fin", NS_MAM)
                .is_some_and(|f| f.attr("complete") == Some("true"));
            fetch.finish(Ok(Found { messages, complete }));
        } else {
            fetch.finish(Err(iq::stanza_error(stanza).condition));
        }
    }
}
