//! The component: runs the link (`link.rs`) session after session, and over each session
//! observes the rooms — disco#info before joining (muc-eventsource never creates a room), join,
//! leave, self-ping, configuration changes, archive fills and resume fetches (IQ ids typed in
//! `iq.rs`) — publishing what rooms say into the room table through each room's [`Feed`].
//!
//! This task is the only writer of the upstream socket and the only publisher into the rooms.
//! Every value it puts into a stanza goes through [`XmlText`](super::text::XmlText).

use std::collections::{HashMap, HashSet};
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

use async_io::Timer;
use futures_lite::{AsyncReadExt, StreamExt, future};

use super::iq::{self, IqId, NS_DISCO_INFO, NS_DISCO_ITEMS, NS_FORWARD, NS_MAM};
use super::link::{self, Backoff, End, NS_COMPONENT, NS_STREAMS, Upstream};
use super::muc::{self, MucEvent};
use super::stream::{Element, Piece};
use super::text::BadText;
use crate::config::{AuthFailure, Config};
use crate::rooms::archive::{Archived, Fetch, Found, MAX_FETCH};
use crate::rooms::feed::{Feed, Message, OwnedMessage, Settled};
use crate::rooms::frame;
use crate::rooms::table::{JoinState, Origin, ROOM_MISSING, RoomTable, count};
use crate::settings::Settings;
use crate::shutdown::Shutdown;

/// How long the server may take to answer the stream header and the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// How often a room that does not exist (or refused us) is looked at again.
const ROOM_RECHECK: Duration = Duration::from_secs(60);
/// Messages an archive fill after a re-join fetches at most; beyond, subscribers get `gap`.
pub const MAX_FILL: usize = 1000;
/// Occupants tracked per room for join/leave events and counts; beyond, arrivals are not
/// reported (memory stays bounded in very large rooms).
const MAX_OCCUPANTS_TRACKED: usize = 4096;

/// Why the component task stopped for good.
#[derive(Debug)]
pub enum Fatal {
    /// The server rejected the secret and `auth_failure = exit`.
    AuthRejected,
}

/// Runs the component link until shutdown, reconnecting with exponential back-off and jitter.
pub async fn run(settings: &Settings, table: &RoomTable, shutdown: &Shutdown) -> Result<(), Fatal> {
    let mut backoff = Backoff::new(&settings.get());
    let mut links: Vec<RoomLink> = Vec::new();
    let mut sessions = 0u64;
    loop {
        if sessions > 0 {
            count(&table.stats().reconnects, 1);
        }
        sessions += 1;
        let mut established = false;
        let end = session(settings, table, shutdown, &mut links, &mut established).await;
        let current = settings.get();
        let config: &Config = &current;
        if established {
            backoff.reset(config);
        }
        table.stats().upstream_up.set(false);
        let reason = match &end {
            End::Shutdown => "the server is stopping or restarting".to_string(),
            End::AuthRejected(_) => "the XMPP server rejected this service".to_string(),
            End::Lost(why) => format!("link to the XMPP server lost: {why}"),
        };
        let status = if matches!(end, End::Shutdown) {
            "shutdown"
        } else {
            "reconnecting"
        };
        for (index, link) in links.iter_mut().enumerate() {
            if !matches!(link.phase, Phase::GaveUp | Phase::Idle) {
                if !matches!(table.room(index).state(), JoinState::Failed(_)) {
                    table.set_state(index, JoinState::Joining);
                }
                link.phase = Phase::Checking;
                link.occupants.clear();
                table.room(index).set_synced(false);
                link.feed.status(table, index, status, Some(&reason));
            }
        }
        match end {
            End::Shutdown => return Ok(()),
            End::AuthRejected(why) => {
                log::error!(
                    "the XMPP server rejected the component secret for `{}` ({why}): check `secret` in the config against the server's (Prosody: `component_secret` of Component \"{}\"; ejabberd: the listener's `password`)",
                    config.component,
                    config.component
                );
                if config.auth_failure == AuthFailure::Exit {
                    return Err(Fatal::AuthRejected);
                }
            }
            End::Lost(why) => {
                log::warn!("upstream link to {} lost: {why}", config.upstream);
                crate::notify::status(&format!("reconnecting to {}: {why}", config.upstream));
            }
        }
        let wait = backoff.next_wait(config);
        log::info!(
            "reconnecting to {} in {:.1} s",
            config.upstream,
            wait.as_secs_f64()
        );
        let slept = future::or(
            async {
                Timer::after(wait).await;
                true
            },
            async {
                shutdown.wait().await;
                false
            },
        )
        .await;
        if !slept {
            return Ok(());
        }
    }
}

/// Per-room state the link keeps (the room table keeps what the HTTP side needs to see).
struct RoomLink {
    nick: String,
    phase: Phase,
    retry_at: Option<Instant>,
    feed: Feed,
    /// When the room last sent us anything (for XEP-0410 self-ping after silence).
    last_heard: Instant,
    /// When the self-ping still unanswered was sent.
    self_ping_sent: Option<Instant>,
    /// When the disco#info still unanswered was sent.
    disco_sent: Option<Instant>,
    /// The room table entry's generation this link belongs to, and that room's JID.
    generation: u32,
    jid: Rc<str>,
    /// An on-demand room's last subscriber left (or its disco#info came back) at this time.
    idle_since: Option<Instant>,
    /// Nicks of the other occupants, as seen from presence (at most
    /// [`MAX_OCCUPANTS_TRACKED`]).
    occupants: HashSet<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    /// disco#info sent: does the room exist?
    Checking,
    /// Join presence sent.
    Joining,
    Joined,
    /// Waiting for `retry_at` to check and join again.
    Waiting,
    /// Banned or the room was destroyed: not retried until restart.
    GaveUp,
    /// Not wanted now: a free entry, or an on-demand room nobody reads.
    Idle,
}

impl RoomLink {
    fn new(config: &Config, room: &crate::rooms::table::Room) -> RoomLink {
        let idle = room.is_free();
        RoomLink {
            nick: config.nick.clone(),
            phase: if idle { Phase::Idle } else { Phase::Checking },
            retry_at: None,
            feed: Feed::default(),
            last_heard: Instant::now(),
            self_ping_sent: None,
            disco_sent: None,
            occupants: HashSet::new(),
            generation: room.generation(),
            jid: room.jid(),
            idle_since: None,
        }
    }
}

/// What [`sync_links`] found to do.
#[derive(Default)]
struct Sync {
    /// Rooms to check and join now.
    join: Vec<usize>,
    /// Rooms we are in that are no longer served: (room JID, our nick) to leave.
    leave: Vec<(Rc<str>, String)>,
}

/// Brings the links in line with the room table: entries added, retired or given to another
/// room since (discovered rooms, on-demand rooms, a reload) get a fresh link.
fn sync_links(config: &Config, table: &RoomTable, links: &mut Vec<RoomLink>) -> Sync {
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

/// An archive query in flight.
enum Query {
    /// For a client resuming from an id the ring no longer holds.
    Resume {
        room: usize,
        fetch: Rc<Fetch>,
        messages: Vec<Archived>,
    },
    /// Filling a room's hole after a re-join.
    Fill {
        generation: u32,
        page: u32,
        sent: Instant,
        messages: Vec<OwnedMessage>,
        fetched: usize,
    },
}

/// One session with the server after the handshake: the link, the rooms, the queries in flight.
struct Session<'a> {
    settings: &'a Settings,
    /// The configuration in force (SIGHUP may replace it between two wake-ups).
    config: Rc<Config>,
    table: &'a RoomTable,
    up: Upstream,
    links: &'a mut Vec<RoomLink>,
    /// Resume fetches by query number, fills by room index.
    resumes: HashMap<u64, Query>,
    fills: HashMap<usize, Query>,
    resumes_sent: u64,
}

async fn session(
    settings: &Settings,
    table: &RoomTable,
    shutdown: &Shutdown,
    links: &mut Vec<RoomLink>,
    established: &mut bool,
) -> End {
    let config = settings.get();
    let socket = match link::connect(&config).await {
        Ok(s) => s,
        Err(end) => return end,
    };
    let mut up = Upstream::new(socket, &config);
    let mut buf = vec![0u8; 16 * 1024];
    let shaken = future::or(
        async { Some(link::handshake(&config, &mut up, &mut buf).await) },
        async {
            Timer::after(HANDSHAKE_TIMEOUT).await;
            None
        },
    );
    let shaken = future::or(shaken, async {
        shutdown.wait().await;
        Some(Err(End::Shutdown))
    })
    .await;
    match shaken {
        Some(Ok(())) => {}
        Some(Err(end)) => return end,
        None => return End::Lost(format!("no handshake answer within {HANDSHAKE_TIMEOUT:?}")),
    }
    log::info!(
        "component handshake accepted: connected to {} as {}",
        config.upstream,
        config.component
    );
    table.stats().upstream_up.set(true);
    crate::notify::ready();
    crate::notify::status(&format!(
        "connected to {} as {}; joining {} rooms",
        config.upstream,
        config.component,
        links.len()
    ));
    let mut s = Session {
        settings,
        config,
        table,
        up,
        links,
        resumes: HashMap::new(),
        fills: HashMap::new(),
        resumes_sent: 0,
    };
    let served = s.serve(shutdown, &mut buf, established).await;
    for (_, query) in s.resumes.drain() {
        if let Query::Resume { fetch, .. } = query {
            fetch.finish(Err("the link to the XMPP server was lost".into()));
            table.archive.done();
        }
    }
    // A fill cut short is started again after the next join (its feed still holds).
    s.fills.clear();
    match served {
        Ok(()) => {
            s.leave_all().await;
            End::Shutdown
        }
        Err(end) => end,
    }
}

enum Wake {
    Read(io::Result<usize>),
    Tick,
    Shutdown,
}

impl Session<'_> {
    /// The session loop after the handshake. `Ok` means shutdown was requested.
    async fn serve(
        &mut self,
        shutdown: &Shutdown,
        buf: &mut [u8],
        established: &mut bool,
    ) -> Result<(), End> {
        sync_links(&self.config, self.table, self.links);
        for index in 0..self.links.len() {
            if self.links[index].phase == Phase::Checking {
                self.check_room(index).await?;
            }
        }
        let mut tick = Timer::interval(Duration::from_secs(1));
        let mut next_discovery = Instant::now();
        loop {
            self.config = self.settings.get();
            let wake = future::or(
                async { Wake::Read((&self.up.socket).read(buf).await) },
                future::or(
                    async {
                        tick.next().await;
                        Wake::Tick
                    },
                    async {
                        shutdown.wait().await;
                        Wake::Shutdown
                    },
                ),
            )
            .await;
            match wake {
                Wake::Shutdown => return Ok(()),
                Wake::Tick => self.tick(&mut next_discovery).await?,
                Wake::Read(read) => {
                    let n = read?;
                    if n == 0 {
                        return Err(End::Lost("the server closed the connection".into()));
                    }
                    self.read(&buf[..n]).await?;
                }
            }
            if !*established && self.joined() {
                *established = true;
                log::debug!("every room is joined or settled: the back-off starts over");
            }
        }
    }

    /// No room is between being asked for and being joined (or refused).
    fn joined(&self) -> bool {
        self.links
            .iter()
            .all(|l| !matches!(l.phase, Phase::Checking | Phase::Joining))
    }

    /// Handles what one read brought: the events of one read go out together (one `writev`
    /// per subscriber).
    async fn read(&mut self, bytes: &[u8]) -> Result<(), End> {
        self.up.last_read = Instant::now();
        self.up.ping_sent = None;
        self.up.splitter.feed(bytes);
        let batch = self.table.batch();
        loop {
            let stanza = match self.up.splitter.next_piece()? {
                None => break,
                Some(Piece::Stanza(bytes)) => Element::parse(bytes, NS_COMPONENT)?,
                Some(Piece::Close) => {
                    return Err(End::Lost("the server closed the stream".into()));
                }
                Some(Piece::Open(_)) => {
                    return Err(End::Lost("unexpected second stream header".into()));
                }
            };
            self.handle(&stanza).await?;
            if batch.pressing() {
                // Half a ring held back: send it, and let the tasks this woke write before
                // more is published, so a burst bigger than a ring does not lap fast readers.
                batch.flush();
                future::yield_now().await;
            }
        }
        Ok(())
    }

    /// Once a second: keepalive, link ping, archive queries, room table changes, discovery,
    /// on-demand joins and leaves, self-pings, retries, answers that never came.
    async fn tick(&mut self, next_discovery: &mut Instant) -> Result<(), End> {
        let config = self.config.clone();
        if self.up.last_write.elapsed() >= config.keepalive {
            self.up.send(" ").await?;
        }
        // A half-open link reads nothing forever: after `keepalive` of silence, ping the MUC
        // service; any answer (even an error) proves the link.
        match self.up.ping_sent {
            Some(sent) if sent.elapsed() >= config.ping_timeout => {
                return Err(End::Lost(format!(
                    "no answer to a ping within {} s; the link is dead",
                    config.ping_timeout.as_secs()
                )));
            }
            None if self.up.last_read.elapsed() >= config.keepalive => {
                self.up.ping_sent = Some(Instant::now());
                match iq::ping(IqId::LinkPing, &config.component, &config.muc) {
                    Ok(xml) => self.up.send(&xml).await?,
                    Err(bad) => log::warn!("cannot ping `muc`: it {bad}"),
                }
            }
            _ => {}
        }
        let now = Instant::now();
        self.send_resume_queries().await?;
        self.settings.add_pending(self.table);
        let todo = sync_links(&config, self.table, self.links);
        for (jid, nick) in todo.leave {
            log::info!("leaving {jid}: no longer served");
            if let Ok(xml) = muc::leave(&config.component, &jid, &nick) {
                self.up.send(&xml).await?;
            }
        }
        for index in todo.join {
            self.check_room(index).await?;
        }
        if config.all_rooms && now >= *next_discovery {
            *next_discovery = now + config.discover_every;
            match iq::query(
                IqId::RoomsList,
                &config.component,
                &config.muc,
                NS_DISCO_ITEMS,
            ) {
                Ok(xml) => self.up.send(&xml).await?,
                Err(bad) => log::warn!("cannot list the rooms of `muc`: it {bad}"),
            }
        }
        for index in 0..self.links.len() {
            self.on_demand(index, now).await?;
            self.self_ping(index, now).await?;
            self.overdue(index, now).await?;
        }
        Ok(())
    }

    /// Answers that never came: a disco#info (the room is looked at again later; an on-demand
    /// room leaves the table) or an archive fill (subscribers are told of a gap). Rooms waiting
    /// for a retry are checked again.
    async fn overdue(&mut self, index: usize, now: Instant) -> Result<(), End> {
        let timeout = self.config.ping_timeout;
        let link = &mut self.links[index];
        if link.phase == Phase::Checking
            && link
                .disco_sent
                .is_some_and(|t| now.duration_since(t) >= timeout)
        {
            link.disco_sent = None;
            self.refused(index, "the room did not answer disco#info", None);
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
        if link.phase == Phase::Waiting && link.retry_at.is_some_and(|t| t <= now) {
            self.check_room(index).await?;
        }
        Ok(())
    }

    /// Leaves every room and closes the stream (shutdown).
    async fn leave_all(&mut self) {
        for (index, link) in self.links.iter().enumerate() {
            if link.phase == Phase::Joined
                && let Ok(xml) = muc::leave(
                    &self.config.component,
                    &self.table.room(index).jid(),
                    &link.nick,
                )
            {
                let _ = self.up.send(&xml).await;
            }
        }
        let _ = self.up.send("</stream:stream>").await;
        log::info!("left all rooms and closed the component stream");
    }

    /// Asks the room whether it exists and what it is (disco#info) before joining: joining a
    /// missing room would create it, and muc-eventsource never creates rooms. Also asked again
    /// when a joined room's configuration changes.
    async fn check_room(&mut self, index: usize) -> io::Result<()> {
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

    /// A room whose JID cannot be put into a stanza (only possible for names that came from
    /// outside the configuration): never sent, never joined.
    fn unusable(&mut self, index: usize, bad: BadText) {
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
    fn refused(&mut self, index: usize, why: &'static str, state: Option<&'static str>) {
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

    async fn join(&mut self, index: usize) -> io::Result<()> {
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

    /// Sends the archive queries the HTTP side asked for (XEP-0313, with an RSM `after`).
    async fn send_resume_queries(&mut self) -> io::Result<()> {
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
    async fn ask_fill(
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
    fn end_fill(&mut self, index: usize, gap: Option<&str>) {
        self.links[index].feed.filled(self.table, index, gap);
        self.table.room(index).set_synced(true);
    }

    /// The index of the served room with this bare JID, if the stanza is from one.
    fn served(&self, jid: &str) -> Option<usize> {
        self.table
            .find_jid(jid)
            .filter(|&i| !self.table.room(i).is_free() && i < self.links.len())
    }

    async fn handle(&mut self, stanza: &Element) -> Result<(), End> {
        log::trace!("upstream -> {stanza:?}");
        if stanza.name == "error" && stanza.ns == NS_STREAMS {
            return Err(End::Lost(format!(
                "stream error from the server: {}",
                link::stream_error_condition(stanza)
            )));
        }
        if stanza.name == "iq" {
            return self.handle_iq(stanza).await;
        }
        if stanza.name == "message" && self.archive_result(stanza) {
            return Ok(());
        }
        let from_room = stanza
            .attr("from")
            .and_then(|from| self.served(muc::split_jid(from).0));
        let event = muc::classify(stanza, from_room.map(|i| self.links[i].nick.as_str()));
        let Some(index) = from_room else {
            return Ok(());
        };
        self.links[index].last_heard = Instant::now();
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
                    None => feed.message(
                        table,
                        index,
                        &Message {
                            nick,
                            body,
                            stanza_id,
                            delay,
                            origin_id,
                        },
                    ),
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
                    let seq = self.links[index]
                        .feed
                        .retraction(table, index, target, nick, moderated, reason);
                    log::debug!(
                        "room {room}: retraction of {target:?} by {nick:?} -> event {seq:?}"
                    );
                }
            }
            MucEvent::Occupant {
                nick, available, ..
            } => {
                let link = &mut self.links[index];
                let changed = if available {
                    link.occupants.len() < MAX_OCCUPANTS_TRACKED
                        && link.occupants.insert(nick.to_string())
                } else {
                    link.occupants.remove(nick)
                };
                table.room(index).info.borrow_mut().occupants = link.occupants.len() as u32;
                // The presences sent while we join are the room's state, not arrivals.
                if changed && link.phase == Phase::Joined {
                    link.feed.occupant(table, index, nick, available);
                }
            }
            MucEvent::Subject { nick, subject, .. } => {
                self.links[index].feed.subject(table, index, nick, subject);
                // The subject ends the join sequence: history, if any, has come.
                self.settle(index).await?;
            }
            MucEvent::ConfigChanged { room } => {
                if self.links[index].phase == Phase::Joined {
                    log::info!("room {room}: configuration changed; reading its disco#info again");
                    self.check_room(index).await?;
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
            } => {
                let text = text
                    .map(|t| format!(" ({})", t.escape_debug()))
                    .unwrap_or_default();
                let why = muc::explain_condition(condition);
                let link = &mut self.links[index];
                if condition == "conflict" && link.nick.len() < self.config.nick.len() + 8 {
                    link.nick.push('_');
                    log::warn!("room {room}: nick in use{text}; joining as {}", link.nick);
                    self.join(index).await?;
                    return Ok(());
                }
                log::warn!("room {room}: join refused: {condition}{text}: {why}");
                self.refused(index, why, None);
            }
            MucEvent::Removed {
                room,
                codes,
                destroyed,
            } => {
                let link = &mut self.links[index];
                if link.phase == Phase::Idle && !destroyed {
                    // The reflection of our own leave (an on-demand room nobody reads).
                    return Ok(());
                }
                if destroyed {
                    log::warn!(
                        "room {room} was destroyed; it will not be joined again until restart"
                    );
                    link.phase = Phase::GaveUp;
                    link.feed
                        .status(table, index, "destroyed", Some("the room was destroyed"));
                    table.set_state(index, JoinState::Gone("the room was destroyed"));
                } else if codes.contains(&301) {
                    log::warn!(
                        "banned from room {room}; it will not be joined again until restart"
                    );
                    link.phase = Phase::GaveUp;
                    link.feed
                        .status(table, index, "banned", Some("banned from the room"));
                    table.set_state(index, JoinState::Failed("banned from the room"));
                } else {
                    log::warn!(
                        "removed from room {room} (status {codes:?}); rejoining in {:?}",
                        self.config.reconnect_min
                    );
                    let why = if codes.contains(&307) {
                        "kicked from the room"
                    } else {
                        "removed from the room"
                    };
                    link.feed.status(table, index, "rejoining", Some(why));
                    table.set_state(index, JoinState::Joining);
                    link.phase = Phase::Waiting;
                    link.retry_at = Some(Instant::now() + self.config.reconnect_min);
                }
            }
            MucEvent::Ignored => {}
        }
        Ok(())
    }

    /// The end of a join sequence (or a subject change): the feed decides whether what it held
    /// during a re-join follows what it published before, or an archive fill is needed.
    async fn settle(&mut self, index: usize) -> io::Result<()> {
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

    /// An archived message of a query in flight: `<message><result queryid id><forwarded>
    /// <message from='room/nick'><body/>`. Returns whether the stanza was one.
    fn archive_result(&mut self, stanza: &Element) -> bool {
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
        match IqId::parse(query) {
            Some(IqId::Resume { query }) => {
                if let Some(Query::Resume { room, messages, .. }) = self.resumes.get_mut(&query)
                    && sender == Some(*room)
                    && messages.len() < MAX_FETCH
                {
                    messages.push(Archived {
                        id: id.into(),
                        frame: frame::message(id, nick, &body.text),
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

    /// On-demand rooms are joined while read: a room left idle is joined again when a
    /// subscriber comes; a joined one nobody has read for `on_demand_grace` is left, and one
    /// left (or never joined) that long leaves the table.
    async fn on_demand(&mut self, index: usize, now: Instant) -> io::Result<()> {
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
    async fn self_ping(&mut self, index: usize, now: Instant) -> io::Result<()> {
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

    async fn handle_iq(&mut self, stanza: &Element) -> Result<(), End> {
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
            IqId::Resume { query } => {
                let Some(Query::Resume {
                    room,
                    fetch,
                    messages,
                }) = self.resumes.remove(&query)
                else {
                    return Ok(());
                };
                if !from.eq_ignore_ascii_case(&self.table.room(room).jid()) {
                    // Not the room we asked: put it back and wait for the real answer.
                    self.resumes.insert(
                        query,
                        Query::Resume {
                            room,
                            fetch,
                            messages,
                        },
                    );
                    return Ok(());
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
    fn ours(&self, room: usize, generation: u32, from: &str) -> bool {
        room < self.links.len()
            && room < self.table.rooms().len()
            && self.table.room(room).generation() == generation
            && self.links[room].generation == generation
            && !self.table.room(room).is_free()
            && from.eq_ignore_ascii_case(&self.table.room(room).jid())
    }

    /// disco#items of the MUC service: every room it lists gets an entry (`rooms = *`).
    fn rooms_listed(&mut self, stanza: &Element) {
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

    /// A page of an archive fill came back.
    async fn filled_page(
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

    /// XEP-0410 §3.3: the answer to a self-ping says whether we are still an occupant.
    async fn self_pinged(&mut self, stanza: &Element, ok: bool, index: usize) -> io::Result<()> {
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
    async fn disco_answered(&mut self, stanza: &Element, ok: bool, index: usize) -> io::Result<()> {
        let table = self.table;
        let room = table.room(index);
        let link = &mut self.links[index];
        link.disco_sent = None;
        let checking = link.phase == Phase::Checking;
        if !ok {
            let error = iq::stanza_error(stanza);
            if !checking {
                log::debug!(
                    "room {}: disco#info after a configuration change failed: {}",
                    room.jid(),
                    error.condition
                );
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
        let features = stanza
            .child("query", NS_DISCO_INFO)
            .map_or(&[][..], |q| &q.children[..]);
        let has = |var: &str| {
            features
                .iter()
                .any(|f| f.name == "feature" && f.attr("var") == Some(var))
        };
        link.feed.stanza_ids = has(muc::NS_SID);
        let changed = {
            let mut info = room.info.borrow_mut();
            let before = (info.known, info.public, info.members_only, info.password);
            info.known = true;
            info.public = has("muc_public");
            info.members_only = has("muc_membersonly");
            info.password = has("muc_passwordprotected");
            info.mam = has(NS_MAM);
            before.0 && before != (true, info.public, info.members_only, info.password)
        };
        if changed {
            let info = room.info.borrow();
            log::info!(
                "room {}: now {}{}{}; re-checking who may read it",
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
            drop(info);
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
}
