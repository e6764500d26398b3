//! The MUC observer over one session: each room's link state ([`RoomLink`], [`Phase`]), and
//! what the component does for a room — disco#info before joining (never creating a room),
//! join, leave, self-ping, configuration changes, on-demand rooms — and what it does with what
//! the room says ([`MucEvent`]s become events through the room's [`Feed`]).

use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::iq::{self, IqId, NS_DISCO_INFO, NS_DISCO_ITEMS, NS_MAM};
use super::muc::{self, MucEvent};
use super::session::{Phase, Query, RoomLink, Session};
use super::stream::Element;
use super::text::BadText;
use crate::config::Config;
use crate::rooms::feed::{Feed, Message, Settled};
use crate::rooms::table::{JoinState, Origin, ROOM_MISSING, RoomTable};

/// How often a room that does not exist (or refused us) is looked at again.
pub const ROOM_RECHECK: Duration = Duration::from_secs(60);
/// Occupants tracked per room for join/leave events and counts; beyond, arrivals are not
/// reported (memory stays bounded in very large rooms).
const MAX_OCCUPANTS_TRACKED: usize = 4096;

/// What [`sync_links`] found to do.
#[derive(Default)]
pub struct Sync {
    /// Rooms to check and join now.
    pub join: Vec<usize>,
    /// Rooms we are in that are no longer served: (room JID, our nick) to leave.
    pub leave: Vec<(Rc<str>, String)>,
}

/// Brings the links in line with the room table: entries added, retired or given to another
/// room since (discovered rooms, on-demand rooms, a reload) get a fresh link.
pub fn sync_links(config: &Config, table: &RoomTable, links: &mut Vec<RoomLink>) -> Sync {
    let mut todo = Sync::default();
    for (index, room) in table.rooms().iter().enumerate() {
        if links.len() <= index {
            links.push(RoomLink::new(config, room));
        } else if links[index].generation != room.generation() {
            let old = std::mem::replace(&mut links[index], RoomLink::new(config, room));
            if matches!(old.phase, Phase::Joined | Phase::Joining) {
                todo.leave.push((old.jid, old.nick));
            }
        } else {
            continue;
        }
        if links[index].phase == Phase::Checking {
            todo.join.push(index);
        }
    }
    todo
}

/// The link is gone (`status`: reconnecting or shutdown): every room we were in or joining is
/// to be checked and joined again, and its subscribers are told why.
pub fn link_lost(table: &RoomTable, links: &mut [RoomLink], status: &'static str, reason: &str) {
    for (index, link) in links.iter_mut().enumerate() {
        if matches!(link.phase, Phase::GaveUp | Phase::Idle) {
            continue;
        }
        if !matches!(table.room(index).state(), JoinState::Failed(_)) {
            table.set_state(index, JoinState::Joining);
        }
        link.phase = Phase::Checking;
        link.occupants.clear();
        table.room(index).set_synced(false);
        link.feed.status(table, index, status, Some(reason));
    }
}

impl Session<'_> {
    /// Answers that never came: a disco#info (the room is looked at again later; an on-demand
    /// room leaves the table) or an archive fill (subscribers are told of a gap). Rooms waiting
    /// for a retry are checked again.
    pub(super) async fn overdue(&mut self, index: usize, now: Instant) -> io::Result<()> {
        let timeout = self.config.ping_timeout;
        let link = &mut self.links[index];
        if link
            .disco_sent
            .is_some_and(|t| now.duration_since(t) >= timeout)
        {
            link.disco_sent = None;
            if link.phase == Phase::Checking {
                self.refused(index, "the room did not answer disco#info", None);
            } else {
                log::warn!(
                    "room {}: no answer to disco#info after a configuration change; its streams stay held, asking again",
                    self.table.room(index).jid()
                );
                link.retry_at = Some(now + timeout);
            }
        }
        if let Some(Query::Fill { sent, .. }) = self.fills.get(&index)
            && now.duration_since(*sent) >= timeout
        {
            self.fills.remove(&index);
            self.end_fill(
                index,
                Some("re-joined the room after an outage; its archive did not answer"),
            );
        }
        let link = &self.links[index];
        if link.retry_at.is_some_and(|t| t <= now) {
            match link.phase {
                Phase::Waiting => self.check_room(index).await?,
                Phase::Joined => self.reconsider(index).await?,
                _ => {}
            }
        }
        Ok(())
    }

    /// What a room said, as classified: published, or acted on.
    pub(super) async fn observe(&mut self, index: usize, event: MucEvent<'_>) -> io::Result<()> {
        let table = self.table;
        match event {
            MucEvent::Message {
                room,
                nick,
                body,
                stanza_id,
                delay,
                origin_id,
                replaces,
            } => {
                let feed = &mut self.links[index].feed;
                if delay.is_none() && !feed.holding() {
                    table.room(index).set_synced(true);
                }
                let seq = match replaces {
                    Some(replaces) => Some(feed.correction(table, index, nick, body, replaces)),
                    None => {
                        let m = Message {
                            nick,
                            body,
                            stanza_id,
                            delay,
                            origin_id,
                        };
                        feed.message(table, index, &m)
                    }
                };
                log::trace!("room {room}: message from {nick:?} -> event {seq:?}");
            }
            MucEvent::Retract {
                room,
                nick,
                target,
                moderated,
                reason,
            } => {
                // A moderation is legitimate only from the room itself (XEP-0425).
                if !moderated || nick.is_none() {
                    let feed = &mut self.links[index].feed;
                    let seq = feed.retraction(table, index, target, nick, moderated, reason);
                    log::debug!("room {room}: retraction of {target:?} by {nick:?} -> {seq:?}");
                }
            }
            MucEvent::Occupant {
                nick, available, ..
            } => self.occupant(index, nick, available),
            MucEvent::Subject { nick, subject, .. } => {
                self.links[index].feed.subject(table, index, nick, subject);
                // The subject ends the join sequence: history, if any, has come.
                self.settle(index).await?;
            }
            MucEvent::ConfigChanged { room } => {
                if self.links[index].phase == Phase::Joined {
                    log::info!("room {room}: configuration changed; reading its disco#info again");
                    self.reconsider(index).await?;
                }
            }
            MucEvent::Joined { room, nick } => {
                let link = &mut self.links[index];
                link.phase = Phase::Joined;
                link.nick = nick.to_string();
                table.set_state(index, JoinState::Joined);
                link.feed.status(table, index, "joined", None);
                log::info!("joined room {room} as {nick}");
            }
            MucEvent::JoinError {
                room,
                condition,
                text,
            } => self.join_refused(index, room, condition, text).await?,
            MucEvent::Removed {
                room,
                codes,
                destroyed,
            } => self.removed(index, room, &codes, destroyed),
            MucEvent::Ignored => {}
        }
        Ok(())
    }

    /// Another occupant came or went.
    fn occupant(&mut self, index: usize, nick: &str, available: bool) {
        let link = &mut self.links[index];
        let changed = if available {
            link.occupants.len() < MAX_OCCUPANTS_TRACKED && link.occupants.insert(nick.to_string())
        } else {
            link.occupants.remove(nick)
        };
        self.table.room(index).info.borrow_mut().occupants = link.occupants.len() as u32;
        // The presences sent while we join are the room's state, not arrivals.
        if changed && link.phase == Phase::Joined {
            link.feed.occupant(self.table, index, nick, available);
        }
    }

    /// The room refused our join: another nick on a conflict, else wait and look again.
    async fn join_refused(
        &mut self,
        index: usize,
        room: &str,
        condition: &str,
        text: Option<&str>,
    ) -> io::Result<()> {
        let text = text
            .map(|t| format!(" ({})", t.escape_debug()))
            .unwrap_or_default();
        let why = muc::explain_condition(condition);
        let link = &mut self.links[index];
        if condition == "conflict" && link.nick.len() < self.config.nick.len() + 8 {
            link.nick.push('_');
            log::warn!("room {room}: nick in use{text}; joining as {}", link.nick);
            return self.join(index).await;
        }
        log::warn!("room {room}: join refused: {condition}{text}: {why}");
        self.refused(index, why, None);
        Ok(())
    }

    /// Our occupant left the room: destroyed, banned, kicked — or our own leave reflected.
    fn removed(&mut self, index: usize, room: &str, codes: &[u16], destroyed: bool) {
        let table = self.table;
        let link = &mut self.links[index];
        if link.phase == Phase::Idle && !destroyed {
            // The reflection of our own leave (an on-demand room nobody reads).
            return;
        }
        if destroyed {
            log::warn!("room {room} was destroyed; it will not be joined again until restart");
            link.phase = Phase::GaveUp;
            link.feed
                .status(table, index, "destroyed", Some("the room was destroyed"));
            table.set_state(index, JoinState::Gone("the room was destroyed"));
        } else if codes.contains(&301) {
            log::warn!("banned from room {room}; it will not be joined again until restart");
            link.phase = Phase::GaveUp;
            link.feed
                .status(table, index, "banned", Some("banned from the room"));
            table.set_state(index, JoinState::Failed("banned from the room"));
        } else {
            let after = self.config.reconnect_min;
            log::warn!("removed from room {room} (status {codes:?}); rejoining in {after:?}");
            let why = if codes.contains(&307) {
                "kicked from the room"
            } else {
                "removed from the room"
            };
            link.feed.status(table, index, "rejoining", Some(why));
            table.set_state(index, JoinState::Joining);
            link.phase = Phase::Waiting;
            link.retry_at = Some(Instant::now() + after);
        }
    }

    /// Asks the room whether it exists and what it is (disco#info) before joining: joining a
    /// missing room would create it, and muc-eventsource never creates rooms. Also asked again
    /// when a joined room's configuration changes.
    pub(super) async fn check_room(&mut self, index: usize) -> io::Result<()> {
        let room = self.table.room(index);
        let id = IqId::Disco {
            room: index,
            generation: room.generation(),
        };
        let link = &mut self.links[index];
        if link.phase != Phase::Joined {
            link.phase = Phase::Checking;
        }
        link.retry_at = None;
        link.disco_sent = Some(Instant::now());
        match iq::query(id, &self.config.component, &room.jid(), NS_DISCO_INFO) {
            Ok(xml) => self.up.send(&xml).await,
            Err(bad) => {
                self.unusable(index, bad);
                Ok(())
            }
        }
    }

    /// A joined room's configuration changed: until its disco#info says what it is now, nobody
    /// may be sent its events (its streams are held: the flags are unknown), then every stream
    /// is checked again. Fails closed: an unanswered query keeps them held and is asked again.
    pub(super) async fn reconsider(&mut self, index: usize) -> io::Result<()> {
        self.table.room(index).info.borrow_mut().known = false;
        self.table.access_changed(Some(index));
        self.check_room(index).await
    }

    /// A room whose JID cannot be put into a stanza (only possible for names that came from
    /// outside the configuration): never sent, never joined.
    pub(super) fn unusable(&mut self, index: usize, bad: BadText) {
        let room = self.table.room(index);
        log::warn!(
            "room {:?}: its JID cannot be sent to the XMPP server ({bad}); not joining",
            &*room.jid()
        );
        self.links[index].phase = Phase::GaveUp;
        if room.origin() == Origin::Configured {
            self.table.set_state(
                index,
                JoinState::Failed("the room name cannot be used in XMPP"),
            );
        } else {
            self.table
                .retire(index, "the room name cannot be used in XMPP");
            self.table.forget(index);
        }
    }

    /// The room could not be checked or joined for `why`: an on-demand room leaves the table;
    /// any other is marked unavailable and looked at again in [`ROOM_RECHECK`].
    pub(super) fn refused(&mut self, index: usize, why: &'static str, state: Option<&'static str>) {
        let room = self.table.room(index);
        if room.origin() == Origin::OnDemand {
            log::info!("{}: {why}; dropping it from the room table", room.jid());
            self.links[index].phase = Phase::Idle;
            self.table.retire(index, why);
            self.table.forget(index);
            return;
        }
        log::warn!(
            "room {}: {why}; looking again in {ROOM_RECHECK:?}",
            room.jid()
        );
        self.table
            .set_state(index, JoinState::Failed(state.unwrap_or(why)));
        let link = &mut self.links[index];
        link.feed
            .status(self.table, index, "unavailable", Some(why));
        link.phase = Phase::Waiting;
        link.retry_at = Some(Instant::now() + ROOM_RECHECK);
    }

    pub(super) async fn join(&mut self, index: usize) -> io::Result<()> {
        let config = self.config.clone();
        let room = self.table.room(index);
        let link = &mut self.links[index];
        link.phase = Phase::Joining;
        link.feed.joining(self.table, index);
        if link.feed.holding() {
            room.set_synced(false);
        }
        let stanza = muc::join(
            &config.component,
            &room.jid(),
            &link.nick,
            config.history,
            config.password_for(&room.node()),
        );
        match stanza {
            Ok(xml) => self.up.send(&xml).await,
            Err(bad) => {
                self.unusable(index, bad);
                Ok(())
            }
        }
    }

    /// The end of a join sequence (or a subject change): the feed decides whether what it held
    /// during a re-join follows what it published before, or an archive fill is needed.
    pub(super) async fn settle(&mut self, index: usize) -> io::Result<()> {
        if self.fills.contains_key(&index) {
            return Ok(());
        }
        let table = self.table;
        let archive = table.room(index).info.borrow().mam;
        let history = self.config.history;
        match self.links[index]
            .feed
            .settle(table, index, history, archive)
        {
            Settled::Done => table.room(index).set_synced(true),
            Settled::Fill { after } => {
                log::info!(
                    "{}: re-joined; filling what was missed from the room's archive",
                    table.room(index).jid()
                );
                self.ask_fill(index, 0, &after, 0).await?;
            }
        }
        Ok(())
    }

    /// On-demand rooms are joined while read: a room left idle is joined again when a
    /// subscriber comes; a joined one nobody has read for `on_demand_grace` is left, and one
    /// left (or never joined) that long leaves the table.
    pub(super) async fn on_demand(&mut self, index: usize, now: Instant) -> io::Result<()> {
        let room = self.table.room(index);
        if room.origin() != Origin::OnDemand {
            return Ok(());
        }
        let grace = self.config.on_demand_grace;
        let link = &mut self.links[index];
        if room.subscribers() > 0 {
            link.idle_since = None;
            if link.phase == Phase::Idle {
                return self.check_room(index).await;
            }
            return Ok(());
        }
        if !matches!(link.phase, Phase::Joined | Phase::Idle) {
            return Ok(());
        }
        let since = *link.idle_since.get_or_insert(now);
        if now.duration_since(since) < grace {
            return Ok(());
        }
        link.idle_since = None;
        if link.phase == Phase::Idle {
            log::debug!(
                "{}: nobody has asked for it; dropping it from the room table",
                room.jid()
            );
            self.table
                .retire(index, "nobody has read the room for a while");
            self.table.forget(index);
            return Ok(());
        }
        log::info!(
            "leaving {}: nobody has read it for {} s",
            room.jid(),
            grace.as_secs()
        );
        if let Ok(xml) = muc::leave(&self.config.component, &room.jid(), &link.nick) {
            self.up.send(&xml).await?;
        }
        link.phase = Phase::Idle;
        link.occupants.clear();
        room.set_synced(false);
        self.table.set_state(index, JoinState::Joining);
        Ok(())
    }

    /// XEP-0410: after `self_ping` of silence from a joined room, ping our own occupant to find
    /// out whether the room still knows us (a "ghost" occupant would get no messages, silently).
    pub(super) async fn self_ping(&mut self, index: usize, now: Instant) -> io::Result<()> {
        let config = self.config.clone();
        let room = self.table.room(index);
        let link = &mut self.links[index];
        if link.phase != Phase::Joined {
            return Ok(());
        }
        match link.self_ping_sent {
            // Unanswered: treated as a timeout (XEP-0410 §3.3); try again after the next silence.
            Some(sent) if now.duration_since(sent) >= config.ping_timeout => {
                log::debug!("room {}: self-ping unanswered", room.jid());
                link.self_ping_sent = None;
                link.last_heard = now;
            }
            None if now.duration_since(link.last_heard) >= config.self_ping => {
                link.self_ping_sent = Some(now);
                let id = IqId::SelfPing {
                    room: index,
                    generation: room.generation(),
                };
                let occupant = format!("{}/{}", room.jid(), link.nick);
                if let Ok(xml) = iq::ping(id, &config.component, &occupant) {
                    self.up.send(&xml).await?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// XEP-0410 §3.3: the answer to a self-ping says whether we are still an occupant.
    pub(super) async fn self_pinged(
        &mut self,
        stanza: &Element,
        ok: bool,
        index: usize,
    ) -> io::Result<()> {
        let link = &mut self.links[index];
        link.self_ping_sent = None;
        link.last_heard = Instant::now();
        let condition = if ok {
            String::new()
        } else {
            iq::stanza_error(stanza).condition
        };
        let joined = ok
            || matches!(
                condition.as_str(),
                "service-unavailable"
                    | "feature-not-implemented"
                    | "item-not-found"
                    | "remote-server-not-found"
                    | "remote-server-timeout"
            );
        if joined || link.phase != Phase::Joined {
            return Ok(());
        }
        log::warn!(
            "room {}: self-ping says we are no longer an occupant ({condition}); rejoining",
            self.table.room(index).jid()
        );
        link.feed.status(
            self.table,
            index,
            "rejoining",
            Some("the room no longer knew us"),
        );
        self.table.set_state(index, JoinState::Joining);
        self.join(index).await
    }

    /// The room's disco#info came back: its flags decide who may read it (a change re-checks
    /// every open stream), whether it keeps an archive, and whether its stanza-ids are ids.
    pub(super) async fn disco_answered(
        &mut self,
        stanza: &Element,
        ok: bool,
        index: usize,
    ) -> io::Result<()> {
        let table = self.table;
        let room = table.room(index);
        let link = &mut self.links[index];
        link.disco_sent = None;
        let checking = link.phase == Phase::Checking;
        if !ok {
            let error = iq::stanza_error(stanza);
            if !checking {
                log::warn!(
                    "room {}: disco#info after a configuration change failed ({}); its streams stay held, asking again in {ROOM_RECHECK:?}",
                    room.jid(),
                    error.condition
                );
                link.retry_at = Some(Instant::now() + ROOM_RECHECK);
                return Ok(());
            }
            if error.condition == "item-not-found" {
                log::warn!(
                    "room {} does not exist on {} (muc-eventsource never creates rooms)",
                    room.jid(),
                    self.config.muc
                );
                self.refused(index, ROOM_MISSING, Some(ROOM_MISSING));
            } else if room.origin() == Origin::OnDemand {
                self.refused(index, "the room's disco#info failed", None);
            } else {
                log::warn!(
                    "room {}: disco#info failed ({}); joining anyway",
                    room.jid(),
                    error.condition
                );
                self.join(index).await?;
            }
            return Ok(());
        }
        if read_features(stanza, &mut link.feed, room) || !checking {
            // Flags changed, or streams held since a configuration change: check them now.
            table.access_changed(Some(index));
        }
        if !checking {
            return Ok(());
        }
        if room.origin() == Origin::OnDemand && room.subscribers() == 0 {
            // Asked for on demand: joined only once a subscriber the policy admits is there.
            link.phase = Phase::Idle;
            link.idle_since = Some(Instant::now());
            return Ok(());
        }
        self.join(index).await
    }

    /// disco#items of the MUC service: every room it lists gets an entry (`rooms = *`).
    pub(super) fn rooms_listed(&mut self, stanza: &Element) {
        let config = &self.config;
        let items = stanza
            .child("query", NS_DISCO_ITEMS)
            .map_or(&[][..], |q| &q.children[..]);
        let mut full = 0;
        log::debug!("{} lists {} rooms", config.muc, items.len());
        for item in items.iter().filter(|i| i.name == "item") {
            let Some((node, domain)) = item.attr("jid").and_then(|j| j.split_once('@')) else {
                continue;
            };
            if !domain.eq_ignore_ascii_case(&config.muc)
                || crate::config::check_room_node(node).is_err()
            {
                continue;
            }
            if self
                .table
                .add(node, &config.muc, Origin::Discovered)
                .is_none()
            {
                full += 1;
            }
        }
        if full > 0 {
            log::warn!(
                "{full} public rooms of {} left out: the room table is full (max_rooms = {}); raise max_rooms",
                config.muc,
                config.max_rooms
            );
        }
    }
}

/// Takes a room's disco#info answer into its [`RoomInfo`](crate::rooms::table::RoomInfo) and
/// feed. Returns whether what decides who may read it changed (public, members-only, password).
fn read_features(stanza: &Element, feed: &mut Feed, room: &crate::rooms::table::Room) -> bool {
    let features = stanza
        .child("query", NS_DISCO_INFO)
        .map_or(&[][..], |q| &q.children[..]);
    let has = |var: &str| {
        features
            .iter()
            .any(|f| f.name == "feature" && f.attr("var") == Some(var))
    };
    feed.stanza_ids = has(muc::NS_SID);
    let mut info = room.info.borrow_mut();
    let before = (info.known, info.public, info.members_only, info.password);
    info.known = true;
    info.public = has("muc_public");
    info.members_only = has("muc_membersonly");
    info.password = has("muc_passwordprotected");
    info.mam = has(NS_MAM);
    let changed = before.0 && before != (true, info.public, info.members_only, info.password);
    if changed {
        log::info!(
            "room {}: now {}{}{}; checking again who may read it",
            room.jid(),
            if info.public { "public" } else { "hidden" },
            if info.members_only {
                ", members-only"
            } else {
                ""
            },
            if info.password {
                ", password-protected"
            } else {
                ""
            }
        );
    }
    changed
}
