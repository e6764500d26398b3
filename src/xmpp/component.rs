//! The XEP-0114 component link to Prosody: connect, stream header, SHA-1 handshake, then the
//! session loop that joins every room, reads stanzas, publishes room events into the room table,
//! keeps the link alive, and reconnects with back-off when it drops.
//!
//! This task is the only writer of the upstream socket and the only publisher into the rooms.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::rc::Rc;
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use futures_lite::{AsyncReadExt, AsyncWriteExt, StreamExt, future};

use super::muc::{self, MucEvent};
use super::stream::{Element, Piece, Splitter, StreamError, escape};
use crate::config::{AuthFailure, Config};
use crate::rooms::archive::{Archived, Fetch, Found, MAX_FETCH};
use crate::rooms::feed::{Feed, Message};
use crate::rooms::frame;
use crate::rooms::table::{JoinState, Origin, ROOM_MISSING, RoomTable, count};
use crate::settings::Settings;
use crate::shutdown::Shutdown;

const NS_COMPONENT: &str = "jabber:component:accept";
const NS_STREAM_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const NS_PING: &str = "urn:xmpp:ping";
const NS_DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
/// Deepest element nesting accepted upstream (real stanzas use fewer than 10 levels).
const MAX_DEPTH: u32 = 32;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long Prosody may take to answer the stream header and the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// How often a room that does not exist (or refused us) is looked at again.
const ROOM_RECHECK: Duration = Duration::from_secs(60);

/// Why the component task stopped for good.
#[derive(Debug)]
pub enum Fatal {
    /// Prosody rejected the secret and `auth_failure = exit`.
    AuthRejected,
}

/// Why one session ended.
#[derive(Debug)]
enum End {
    Shutdown,
    AuthRejected(String),
    Lost(String),
}

impl From<io::Error> for End {
    fn from(e: io::Error) -> End {
        End::Lost(format!("I/O error: {e}"))
    }
}

impl From<StreamError> for End {
    fn from(e: StreamError) -> End {
        End::Lost(format!("bad XML from the server: {e}"))
    }
}

/// Runs the component link until shutdown, reconnecting with exponential back-off and jitter.
pub async fn run(settings: &Settings, table: &RoomTable, shutdown: &Shutdown) -> Result<(), Fatal> {
    let mut delay = settings.get().reconnect_min;
    let mut links: Vec<RoomLink> = Vec::new();
    let mut sessions = 0u64;
    loop {
        let current = settings.get();
        let config: &Config = &current;
        let started = Instant::now();
        if sessions > 0 {
            count(&table.stats().reconnects, 1);
        }
        sessions += 1;
        let end = session(settings, table, shutdown, &mut links).await;
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
                    "Prosody rejected the component secret for `{}` ({why}): check `secret` in the config against `component_secret` of Component \"{}\" in Prosody's config",
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
        if started.elapsed() > config.reconnect_max * 2 {
            delay = config.reconnect_min;
        }
        let wait = jitter(delay);
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
        delay = (delay * 2).min(config.reconnect_max);
    }
}

/// 75 % to 125 % of `delay`, so many daemons restarted together do not reconnect in step.
fn jitter(delay: Duration) -> Duration {
    delay.mul_f64(0.75 + fastrand_f64() * 0.5)
}

fn fastrand_f64() -> f64 {
    // Sub-second clock bits are random enough for spreading reconnects.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    f64::from(nanos % 1000) / 1000.0
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
    /// The room table entry's generation this link belongs to, and that room's JID.
    generation: u32,
    jid: Rc<str>,
    /// An on-demand room's last subscriber left at this time.
    idle_since: Option<Instant>,
    /// Nicks of the other occupants, as seen from presence (at most
    /// [`MAX_OCCUPANTS_TRACKED`]).
    occupants: HashSet<String>,
}

/// Occupants tracked per room for join/leave events and counts; beyond, arrivals are not
/// reported (memory stays bounded in very large rooms).
const MAX_OCCUPANTS_TRACKED: usize = 4096;

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
        let fresh = &mut todo.join;
        if links[index].phase == Phase::Checking {
            fresh.push(index);
        }
    }
    todo
}

struct Upstream {
    /// Archive queries sent and not answered yet: query id → (request, messages so far).
    mam: HashMap<String, (Rc<Fetch>, Vec<Archived>)>,
    /// Numbers the archive queries of this session.
    mam_sent: u64,
    socket: Async<TcpStream>,
    splitter: Splitter,
    last_write: Instant,
    last_read: Instant,
    /// When the link ping still unanswered was sent.
    ping_sent: Option<Instant>,
}

impl Upstream {
    async fn send(&mut self, xml: &str) -> io::Result<()> {
        log::trace!("upstream <- {xml}");
        (&self.socket).write_all(xml.as_bytes()).await?;
        self.last_write = Instant::now();
        Ok(())
    }

    /// Reads until the splitter yields a piece, returned parsed (used during the handshake).
    async fn next_parsed(&mut self, buf: &mut [u8]) -> Result<Parsed, End> {
        loop {
            match self.splitter.next_piece()? {
                Some(Piece::Open(b)) => return Ok(Parsed::Open(Element::parse_open(b)?)),
                Some(Piece::Stanza(b)) => {
                    return Ok(Parsed::Stanza(Element::parse(b, NS_COMPONENT)?));
                }
                Some(Piece::Close) => return Ok(Parsed::Closed),
                None => {}
            }
            let n = (&self.socket).read(buf).await?;
            if n == 0 {
                return Ok(Parsed::Closed);
            }
            self.splitter.feed(&buf[..n]);
        }
    }
}

enum Parsed {
    Open(Element),
    Stanza(Element),
    Closed,
}

async fn connect(config: &Config) -> Result<Async<TcpStream>, End> {
    let addrs: Vec<_> = config
        .upstream
        .to_socket_addrs()
        .map_err(|e| {
            End::Lost(format!(
                "cannot resolve `upstream = {}`: {e}; check the host name",
                config.upstream
            ))
        })?
        .collect();
    let mut last = String::from("no address");
    for addr in addrs {
        let attempt = future::or(
            async { Some(Async::<TcpStream>::connect(addr).await) },
            async {
                Timer::after(CONNECT_TIMEOUT).await;
                None
            },
        )
        .await;
        match attempt {
            Some(Ok(socket)) => return Ok(socket),
            Some(Err(e)) => last = format!("{addr}: {e}"),
            None => last = format!("{addr}: no answer within {CONNECT_TIMEOUT:?}"),
        }
    }
    Err(End::Lost(format!(
        "cannot connect to `upstream = {}` ({last}); is Prosody running with component_ports including that port?",
        config.upstream
    )))
}

/// Reads the stream header and does the handshake. Returns when stanzas may flow.
async fn handshake(config: &Config, up: &mut Upstream, buf: &mut [u8]) -> Result<(), End> {
    up.send(&format!(
        "<?xml version='1.0'?><stream:stream xmlns='{NS_COMPONENT}' xmlns:stream='http://etherx.jabber.org/streams' to='{}'>",
        escape(&config.component)
    ))
    .await?;
    let id = match up.next_parsed(buf).await? {
        Parsed::Open(header) => header
            .attr("id")
            .map(str::to_string)
            .ok_or_else(|| End::Lost("the server's stream header has no id".into()))?,
        Parsed::Stanza(e) => {
            return Err(End::Lost(format!(
                "expected a stream header, got <{}>",
                e.name
            )));
        }
        Parsed::Closed => {
            return Err(End::Lost(
                "the server closed the stream before its header".into(),
            ));
        }
    };
    let digest = sha1_smol::Sha1::from(format!("{id}{}", config.secret)).digest();
    up.send(&format!("<handshake>{digest}</handshake>")).await?;
    match up.next_parsed(buf).await? {
        Parsed::Stanza(reply) if reply.name == "handshake" => Ok(()),
        Parsed::Stanza(reply) => {
            let condition = stream_error_condition(&reply);
            if condition == "not-authorized" {
                return Err(End::AuthRejected(condition));
            }
            if condition == "host-unknown" || condition == "conflict" {
                return Err(End::Lost(format!(
                    "Prosody refused the component name `{}`: {condition}; is there a `Component \"{}\"` in Prosody's config (and no other process connected as it)?",
                    config.component, config.component
                )));
            }
            Err(End::Lost(format!("handshake refused: {condition}")))
        }
        Parsed::Closed => Err(End::Lost(
            "the server closed the stream without answering the handshake".into(),
        )),
        Parsed::Open(_) => Err(End::Lost("second stream header".into())),
    }
}

fn stream_error_condition(e: &Element) -> String {
    e.children
        .iter()
        .find(|c| c.ns == NS_STREAM_ERRORS && c.name != "text")
        .map_or_else(|| format!("<{}>", e.name), |c| c.name.clone())
}

async fn session(
    settings: &Settings,
    table: &RoomTable,
    shutdown: &Shutdown,
    links: &mut Vec<RoomLink>,
) -> End {
    let current = settings.get();
    let config: &Config = &current;
    let socket = match connect(config).await {
        Ok(s) => s,
        Err(end) => return end,
    };
    let mut up = Upstream {
        mam: HashMap::new(),
        mam_sent: 0,
        socket,
        splitter: Splitter::new(config.max_stanza_bytes, MAX_DEPTH),
        last_write: Instant::now(),
        last_read: Instant::now(),
        ping_sent: None,
    };
    let mut buf = vec![0u8; 16 * 1024];
    let shaken = future::or(
        async { Some(handshake(config, &mut up, &mut buf).await) },
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
    let served = serve(settings, table, shutdown, &mut up, links, &mut buf).await;
    for (_, (fetch, _)) in up.mam.drain() {
        fetch.finish(Err("the link to the XMPP server was lost".into()));
        table.archive.done();
    }
    match served {
        Ok(()) => {
            for (index, link) in links.iter().enumerate() {
                if link.phase == Phase::Joined {
                    let room = table.room(index);
                    let _ = up
                        .send(&muc::leave(&config.component, &room.jid(), &link.nick))
                        .await;
                }
            }
            let _ = up.send("</stream:stream>").await;
            log::info!("left all rooms and closed the component stream");
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

/// The session loop after the handshake. `Ok` means shutdown was requested.
async fn serve(
    settings: &Settings,
    table: &RoomTable,
    shutdown: &Shutdown,
    up: &mut Upstream,
    links: &mut Vec<RoomLink>,
    buf: &mut [u8],
) -> Result<(), End> {
    let current = settings.get();
    let config: &Config = &current;
    sync_links(config, table, links);
    for index in 0..links.len() {
        if links[index].phase == Phase::Checking {
            check_room(config, table, up, links, index).await?;
        }
    }
    let mut tick = Timer::interval(Duration::from_secs(1));
    let mut next_discovery = Instant::now();
    loop {
        // The configuration in force now (SIGHUP may have replaced it).
        let current = settings.get();
        let config: &Config = &current;
        let wake = future::or(
            async { Wake::Read((&up.socket).read(buf).await) },
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
            Wake::Tick => {
                if up.last_write.elapsed() >= config.keepalive {
                    up.send(" ").await?;
                }
                // A half-open link reads nothing forever: after `keepalive` of silence, ping
                // the MUC service; any answer (even an error) proves the link.
                match up.ping_sent {
                    Some(sent) if sent.elapsed() >= config.ping_timeout => {
                        return Err(End::Lost(format!(
                            "no answer to a ping within {} s; the link is dead",
                            config.ping_timeout.as_secs()
                        )));
                    }
                    None if up.last_read.elapsed() >= config.keepalive => {
                        up.ping_sent = Some(Instant::now());
                        up.send(&format!(
                            "<iq type='get' id='link-ping' from='{}' to='{}'><ping xmlns='{NS_PING}'/></iq>",
                            escape(&config.component),
                            escape(&config.muc)
                        ))
                        .await?;
                    }
                    _ => {}
                }
                let now = Instant::now();
                send_archive_queries(config, table, up).await?;
                settings.add_pending(table);
                let todo = sync_links(config, table, links);
                for (jid, nick) in todo.leave {
                    log::info!("leaving {jid}: no longer served");
                    up.send(&muc::leave(&config.component, &jid, &nick)).await?;
                }
                for index in todo.join {
                    check_room(config, table, up, links, index).await?;
                }
                if config.all_rooms && now >= next_discovery {
                    next_discovery = now + config.discover_every;
                    up.send(&format!(
                        "<iq type='get' id='rooms-list' from='{}' to='{}'><query xmlns='{NS_DISCO_ITEMS}'/></iq>",
                        escape(&config.component),
                        escape(&config.muc)
                    ))
                    .await?;
                }
                for index in 0..links.len() {
                    on_demand(config, table, up, links, index, now).await?;
                }
                for (index, link) in links.iter_mut().enumerate() {
                    self_ping(config, table, up, link, index, now).await?;
                }
                for index in 0..links.len() {
                    if links[index].phase == Phase::Waiting
                        && links[index].retry_at.is_some_and(|t| t <= now)
                    {
                        check_room(config, table, up, links, index).await?;
                    }
                }
            }
            Wake::Read(read) => {
                let n = read?;
                if n == 0 {
                    return Err(End::Lost("the server closed the connection".into()));
                }
                up.last_read = Instant::now();
                up.ping_sent = None;
                up.splitter.feed(&buf[..n]);
                // The events of one read go out together: one `writev` per subscriber.
                let batch = table.batch();
                loop {
                    let stanza = match up.splitter.next_piece()? {
                        None => break,
                        Some(Piece::Stanza(bytes)) => Element::parse(bytes, NS_COMPONENT)?,
                        Some(Piece::Close) => {
                            return Err(End::Lost("the server closed the stream".into()));
                        }
                        Some(Piece::Open(_)) => {
                            return Err(End::Lost("unexpected second stream header".into()));
                        }
                    };
                    handle(config, table, up, links, &stanza).await?;
                    if batch.pressing() {
                        // Half a ring held back: send it, and let the tasks this woke write
                        // before more is published, so a burst bigger than a ring does not lap
                        // fast readers.
                        batch.flush();
                        future::yield_now().await;
                    }
                }
                drop(batch);
            }
        }
    }
}

/// Asks the room whether it exists (disco#info) before joining: joining a missing room would
/// create it, and muc-eventsource never creates rooms.
async fn check_room(
    config: &Config,
    table: &RoomTable,
    up: &mut Upstream,
    links: &mut [RoomLink],
    index: usize,
) -> io::Result<()> {
    links[index].phase = Phase::Checking;
    links[index].retry_at = None;
    let room = table.room(index);
    up.send(&format!(
        "<iq type='get' id='disco-{index}' from='{}' to='{}'><query xmlns='{NS_DISCO_INFO}'/></iq>",
        escape(&config.component),
        escape(&room.jid())
    ))
    .await
}

async fn join(
    config: &Config,
    table: &RoomTable,
    up: &mut Upstream,
    link: &mut RoomLink,
    index: usize,
) -> io::Result<()> {
    link.phase = Phase::Joining;
    link.feed.joining(table, index);
    up.send(&muc::join(
        &config.component,
        &table.room(index).jid(),
        &link.nick,
        config.history,
        config.password_for(&table.room(index).node()),
    ))
    .await
}

const NS_MAM: &str = "urn:xmpp:mam:2";
const NS_RSM: &str = "http://jabber.org/protocol/rsm";
const NS_FORWARD: &str = "urn:xmpp:forward:0";

/// Sends the archive queries the HTTP side asked for (XEP-0313, with an RSM `after`).
async fn send_archive_queries(
    config: &Config,
    table: &RoomTable,
    up: &mut Upstream,
) -> io::Result<()> {
    while let Some(fetch) = table.archive.next_request() {
        let room = table.room(fetch.room);
        if room.is_free() || !room.info.borrow().mam {
            fetch.finish(Err("the room has no archive".into()));
            table.archive.done();
            continue;
        }
        up.mam_sent += 1;
        let query = format!("q{}", up.mam_sent);
        up.send(&format!(
            "<iq type='set' id='mam-{query}' from='{}' to='{}'><query xmlns='{NS_MAM}' queryid='{query}'><set xmlns='{NS_RSM}'><max>{MAX_FETCH}</max><after>{}</after></set></query></iq>",
            escape(&config.component),
            escape(&room.jid()),
            escape(&fetch.after)
        ))
        .await?;
        up.mam.insert(query, (fetch, Vec::new()));
    }
    Ok(())
}

/// An archived message of a query in flight: `<message><result queryid id><forwarded>
/// <message from='room/nick'><body/>`. Returns whether the stanza was one.
fn archive_result(up: &mut Upstream, stanza: &Element) -> bool {
    let Some(result) = stanza.child("result", NS_MAM) else {
        return false;
    };
    let (Some(query), Some(id)) = (result.attr("queryid"), result.attr("id")) else {
        return true;
    };
    let Some((_, messages)) = up.mam.get_mut(query) else {
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
    if !frame::valid_id(id) || messages.len() >= MAX_FETCH {
        return true;
    }
    let nick = message
        .attr("from")
        .and_then(|f| muc::split_jid(f).1)
        .filter(|n| !n.is_empty());
    messages.push(Archived {
        id: id.into(),
        frame: frame::message(id, nick, &body.text),
    });
    true
}

/// On-demand rooms are joined while read: a room left idle is joined again when a subscriber
/// comes, and a joined one nobody has read for `on_demand_grace` is left.
async fn on_demand(
    config: &Config,
    table: &RoomTable,
    up: &mut Upstream,
    links: &mut [RoomLink],
    index: usize,
    now: Instant,
) -> io::Result<()> {
    let room = table.room(index);
    if room.origin() != Origin::OnDemand {
        return Ok(());
    }
    let link = &mut links[index];
    if room.subscribers() > 0 {
        link.idle_since = None;
        if link.phase == Phase::Idle {
            return check_room(config, table, up, links, index).await;
        }
        return Ok(());
    }
    if link.phase != Phase::Joined {
        return Ok(());
    }
    let since = *link.idle_since.get_or_insert(now);
    if now.duration_since(since) >= config.on_demand_grace {
        log::info!(
            "leaving {}: nobody has read it for {} s",
            room.jid(),
            config.on_demand_grace.as_secs()
        );
        up.send(&muc::leave(&config.component, &room.jid(), &link.nick))
            .await?;
        link.phase = Phase::Idle;
        link.idle_since = None;
        link.occupants.clear();
        room.set_synced(false);
        table.set_state(index, JoinState::Joining);
    }
    Ok(())
}

/// XEP-0410: after `self_ping` of silence from a joined room, ping our own occupant to find
/// out whether the room still knows us (a "ghost" occupant would get no messages, silently).
async fn self_ping(
    config: &Config,
    table: &RoomTable,
    up: &mut Upstream,
    link: &mut RoomLink,
    index: usize,
    now: Instant,
) -> io::Result<()> {
    if link.phase != Phase::Joined {
        return Ok(());
    }
    match link.self_ping_sent {
        // Unanswered: treated as a timeout (XEP-0410 §3.3); try again after the next silence.
        Some(sent) if now.duration_since(sent) >= config.ping_timeout => {
            log::debug!("room {}: self-ping unanswered", table.room(index).jid());
            link.self_ping_sent = None;
            link.last_heard = now;
        }
        None if now.duration_since(link.last_heard) >= config.self_ping => {
            link.self_ping_sent = Some(now);
            up.send(&format!(
                "<iq type='get' id='selfping-{index}' from='{}' to='{}/{}'><ping xmlns='{NS_PING}'/></iq>",
                escape(&config.component),
                escape(&table.room(index).jid()),
                escape(&link.nick)
            ))
            .await?;
        }
        _ => {}
    }
    Ok(())
}

fn wait_and_retry(link: &mut RoomLink, after: Duration) {
    link.phase = Phase::Waiting;
    link.retry_at = Some(Instant::now() + after);
}

async fn handle(
    config: &Config,
    table: &RoomTable,
    up: &mut Upstream,
    links: &mut [RoomLink],
    stanza: &Element,
) -> Result<(), End> {
    log::trace!("upstream -> {stanza:?}");
    if stanza.name == "error" && stanza.ns == "http://etherx.jabber.org/streams" {
        return Err(End::Lost(format!(
            "stream error from the server: {}",
            stream_error_condition(stanza)
        )));
    }
    if stanza.name == "iq" {
        return handle_iq(config, table, up, links, stanza).await;
    }
    if stanza.name == "message" && archive_result(up, stanza) {
        return Ok(());
    }
    // Rooms no longer served (a retired entry keeps its name until reused) are not ours.
    let served = |jid: &str| table.find_jid(jid).filter(|&i| !table.room(i).is_free());
    let from_room = stanza
        .attr("from")
        .and_then(|from| served(muc::split_jid(from).0));
    let event = muc::classify(stanza, from_room.map(|i| links[i].nick.as_str()));
    if let Some(index) = from_room {
        links[index].last_heard = Instant::now();
    }
    let room_of = served;
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
            if let Some(index) = room_of(room) {
                if delay.is_none() {
                    table.room(index).set_synced(true);
                }
                let feed = &mut links[index].feed;
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
        }
        MucEvent::Retract {
            room,
            nick,
            target,
            moderated,
            reason,
        } => {
            // A moderation is legitimate only from the room itself (XEP-0425).
            if let Some(index) = room_of(room).filter(|_| !moderated || nick.is_none()) {
                let seq = links[index]
                    .feed
                    .retraction(table, index, target, nick, moderated, reason);
                log::debug!("room {room}: retraction of {target} by {nick:?} -> event {seq:?}");
            }
        }
        MucEvent::Occupant {
            room,
            nick,
            available,
        } => {
            if let Some(index) = room_of(room) {
                let link = &mut links[index];
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
        }
        MucEvent::Subject {
            room,
            nick,
            subject,
        } => {
            if let Some(index) = room_of(room) {
                links[index].feed.subject(table, index, nick, subject);
                // The subject ends the join sequence: history, if any, is in the ring now.
                table.room(index).set_synced(true);
            }
        }
        MucEvent::Joined { room, nick } => {
            if let Some(index) = room_of(room) {
                links[index].phase = Phase::Joined;
                links[index].nick = nick.to_string();
                table.set_state(index, JoinState::Joined);
                links[index].feed.status(table, index, "joined", None);
                log::info!("joined room {room} as {nick}");
            }
        }
        MucEvent::JoinError {
            room,
            condition,
            text,
        } => {
            let Some(index) = room_of(room) else {
                return Ok(());
            };
            let text = text.map(|t| format!(" ({t})")).unwrap_or_default();
            let why = muc::explain_condition(condition);
            if condition == "conflict" && links[index].nick.len() < config.nick.len() + 8 {
                links[index].nick.push('_');
                log::warn!(
                    "room {room}: nick in use{text}; joining as {}",
                    links[index].nick
                );
                join(config, table, up, &mut links[index], index).await?;
                return Ok(());
            }
            log::warn!(
                "room {room}: join refused: {condition}{text}: {why}; retrying in {ROOM_RECHECK:?}"
            );
            table.set_state(index, JoinState::Failed(why));
            links[index]
                .feed
                .status(table, index, "unavailable", Some(why));
            wait_and_retry(&mut links[index], ROOM_RECHECK);
        }
        MucEvent::Removed {
            room,
            codes,
            destroyed,
        } => {
            let Some(index) = room_of(room) else {
                return Ok(());
            };
            let link = &mut links[index];
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
                log::warn!(
                    "removed from room {room} (status {codes:?}); rejoining in {:?}",
                    config.reconnect_min
                );
                let why = if codes.contains(&307) {
                    "kicked from the room"
                } else {
                    "removed from the room"
                };
                link.feed.status(table, index, "rejoining", Some(why));
                table.set_state(index, JoinState::Joining);
                wait_and_retry(link, config.reconnect_min);
            }
        }
        MucEvent::Ignored => {}
    }
    Ok(())
}

async fn handle_iq(
    config: &Config,
    table: &RoomTable,
    up: &mut Upstream,
    links: &mut [RoomLink],
    iq: &Element,
) -> Result<(), End> {
    let id = iq.attr("id").unwrap_or("");
    let from = iq.attr("from").unwrap_or("");
    let to = iq.attr("to").unwrap_or(&config.component);
    match iq.attr("type") {
        Some("get") | Some("set") => {
            let reply = if iq.attr("type") == Some("get") && iq.child("ping", NS_PING).is_some() {
                format!(
                    "<iq type='result' id='{}' from='{}' to='{}'/>",
                    escape(id),
                    escape(to),
                    escape(from)
                )
            } else if iq.attr("type") == Some("get") && iq.child("query", NS_DISCO_INFO).is_some() {
                format!(
                    "<iq type='result' id='{}' from='{}' to='{}'><query xmlns='{NS_DISCO_INFO}'><identity category='component' type='generic' name='muc-eventsource'/><feature var='{NS_DISCO_INFO}'/><feature var='{NS_PING}'/></query></iq>",
                    escape(id),
                    escape(to),
                    escape(from)
                )
            } else {
                format!(
                    "<iq type='error' id='{}' from='{}' to='{}'><error type='cancel'><service-unavailable xmlns='{}'/></error></iq>",
                    escape(id),
                    escape(to),
                    escape(from),
                    muc::NS_STANZAS
                )
            };
            up.send(&reply).await?;
        }
        Some(kind @ ("result" | "error")) if id.starts_with("mam-") => {
            if let Some((fetch, messages)) = up.mam.remove(&id["mam-".len()..]) {
                table.archive.done();
                if kind == "result" {
                    let complete = iq
                        .child("fin", NS_MAM)
                        .is_some_and(|f| f.attr("complete") == Some("true"));
                    fetch.finish(Ok(Found { messages, complete }));
                } else {
                    let condition = match muc::classify(iq, None) {
                        MucEvent::JoinError { condition, .. } => condition.to_string(),
                        _ => "error".into(),
                    };
                    fetch.finish(Err(condition));
                }
            }
        }
        Some("result") if id == "rooms-list" => {
            let items = iq
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
                if table.add(node, &config.muc, Origin::Discovered).is_none() {
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
        Some(kind @ ("result" | "error")) if id.starts_with("selfping-") => {
            let Some(index) = id["selfping-".len()..]
                .parse::<usize>()
                .ok()
                .filter(|&i| i < links.len())
            else {
                return Ok(());
            };
            links[index].self_ping_sent = None;
            links[index].last_heard = Instant::now();
            let condition = match muc::classify(iq, None) {
                MucEvent::JoinError { condition, .. } => condition,
                _ => "",
            };
            // XEP-0410 §3.3: these mean we are still an occupant.
            let joined = kind == "result"
                || matches!(
                    condition,
                    "service-unavailable"
                        | "feature-not-implemented"
                        | "item-not-found"
                        | "remote-server-not-found"
                        | "remote-server-timeout"
                );
            if !joined && links[index].phase == Phase::Joined {
                let room = table.room(index);
                log::warn!(
                    "room {}: self-ping says we are no longer an occupant ({condition}); rejoining",
                    room.jid()
                );
                links[index].feed.status(
                    table,
                    index,
                    "rejoining",
                    Some("the room no longer knew us"),
                );
                table.set_state(index, JoinState::Joining);
                join(config, table, up, &mut links[index], index).await?;
            }
        }
        Some(kind @ ("result" | "error")) => {
            let Some(index) = id
                .strip_prefix("disco-")
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|&i| i < links.len())
            else {
                return Ok(());
            };
            if links[index].phase != Phase::Checking {
                return Ok(());
            }
            let room = table.room(index);
            if kind == "result" {
                let features = iq
                    .child("query", NS_DISCO_INFO)
                    .map_or(&[][..], |q| &q.children[..]);
                let has = |var: &str| {
                    features
                        .iter()
                        .any(|f| f.name == "feature" && f.attr("var") == Some(var))
                };
                links[index].feed.stanza_ids = has(muc::NS_SID);
                {
                    let mut info = room.info.borrow_mut();
                    info.known = true;
                    info.public = has("muc_public");
                    info.members_only = has("muc_membersonly");
                    info.password = has("muc_passwordprotected");
                    info.mam = has(NS_MAM);
                }
                join(config, table, up, &mut links[index], index).await?;
                return Ok(());
            }
            let condition = match muc::classify(iq, None) {
                MucEvent::JoinError { condition, .. } => condition.to_string(),
                _ => iq
                    .children
                    .iter()
                    .find(|c| c.name == "error")
                    .and_then(|e| e.children.first())
                    .map_or("undefined-condition".into(), |c| c.name.clone()),
            };
            if condition == "item-not-found" {
                log::warn!(
                    "room {} does not exist on {}; not joining (muc-eventsource never creates rooms); checking again in {ROOM_RECHECK:?}",
                    room.jid(),
                    config.muc
                );
                table.set_state(index, JoinState::Failed(ROOM_MISSING));
                links[index].feed.status(
                    table,
                    index,
                    "unavailable",
                    Some("the room does not exist"),
                );
                wait_and_retry(&mut links[index], ROOM_RECHECK);
            } else {
                log::warn!(
                    "room {}: disco#info failed ({condition}); joining anyway",
                    room.jid()
                );
                join(config, table, up, &mut links[index], index).await?;
            }
        }
        _ => {}
    }
    Ok(())
}
