//! IQ answers over one session: a request from the server is answered (`iq::answer`); an
//! answer to one of our queries goes to what asked, once its typed id (`iq::IqId`, with the room
//! entry's generation) and its sender check out — a late or forged answer changes nothing.

use super::iq::{self, IqId};
use super::link::End;
use super::muc;
use super::session::Session;
use super::stream::Element;

impl Session<'_> {
    /// An IQ from the server: a request is answered; an answer goes to what asked, once its id
    /// (typed, with the room entry's generation) and sender check out.
    pub(super) async fn handle_iq(&mut self, stanza: &Element) -> Result<(), End> {
        let kind = stanza.attr("type");
        if matches!(kind, Some("get" | "set")) {
            match iq::answer(stanza, &self.config.component) {
                Ok(Some(xml)) => self.up.send(&xml).await?,
                Ok(None) => {}
                Err(bad) => log::debug!("an IQ from the server cannot be answered: {bad}"),
            }
            return Ok(());
        }
        let ok = match kind {
            Some("result") => true,
            Some("error") => false,
            _ => return Ok(()),
        };
        let from = stanza.attr("from").unwrap_or("");
        let Some(id) = stanza.attr("id").and_then(IqId::parse) else {
            return Ok(());
        };
        match id {
            IqId::LinkPing => {}
            IqId::RoomsList => {
                if ok && from.eq_ignore_ascii_case(&self.config.muc) {
                    self.rooms_listed(stanza);
                }
            }
            IqId::Resume { query } => self.resume_answered(stanza, ok, query),
            IqId::Fill {
                room,
                generation,
                page,
            } => self.filled_page(stanza, ok, room, generation, page).await?,
            IqId::SelfPing { room, generation } => {
                if self.ours(room, generation, muc::split_jid(from).0) {
                    self.self_pinged(stanza, ok, room).await?;
                }
            }
            IqId::Disco { room, generation } => {
                if self.ours(room, generation, from) {
                    self.disco_answered(stanza, ok, room).await?;
                }
            }
        }
        Ok(())
    }

    /// Whether an answer about entry `room` of `generation` comes from that room now.
    pub(super) fn ours(&self, room: usize, generation: u32, from: &str) -> bool {
        room < self.links.len()
            && room < self.table.rooms().len()
            && self.table.room(room).generation() == generation
            && self.links[room].generation == generation
            && !self.table.room(room).is_free()
            && from.eq_ignore_ascii_case(&self.table.room(room).jid())
    }
}
