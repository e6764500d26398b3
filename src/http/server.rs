//! The HTTP/1.1 server: accepts connections, reads one request head under a size and time
//! limit, answers it, and hands event-stream requests to the SSE writer.
//!
//! Every connection is one task on the executor; nothing here starts a thread. Connections still
//! sending their head are capped (`max_pending_requests`, `max_pending_per_ip`); subscribers are
//! capped by the room table's fixed subscriber table.
//!
//! Admission: a connection whose complete request is already there when its task first runs is
//! never pending, so a reconnect storm of complete requests is served, not refused. Only one
//! whose head is found incomplete takes a pending slot; when the table is full, the pending
//! connection that has sent the least for its age (a slowloris) is closed to make room, not the
//! newcomer.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use async_executor::StaticLocalExecutor;
use async_io::{Async, Timer};
use futures_lite::{AsyncWriteExt, future};

use super::access::{self, Guard};
use super::reply::{self, Reply};
use super::request::{self, Head, Reject};
use super::routes::{self, Route};
use super::start::Start;
use super::{multi, sse};
use crate::config::Config;
use crate::logger::Shown;
use crate::rooms::archive::Resumed;
use crate::rooms::resume;
use crate::rooms::table::{Origin, RoomTable};
use crate::settings::Settings;
use crate::shutdown::Shutdown;

/// Time allowed to write a short reply before giving up on the client.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections accepted in a row before the accept loop lets the accepted ones run: a burst
/// then reads its requests as it arrives instead of piling up unread.
const ACCEPT_BATCH: usize = 32;

/// Pending connections younger than this are not closed for `max_pending_per_ip`: a burst of
/// real clients behind one address (NAT, a reverse proxy) may be caught between connecting and
/// sending; only `max_pending_requests` bounds those.
const PER_IP_GRACE: Duration = Duration::from_secs(1);

/// What connections share.
pub struct Server {
    /// The start-up configuration (listen address, table sizes: what needs a restart).
    pub config: &'static Config,
    /// The configuration in force (tokens, rooms, CORS…: what `SIGHUP` reloads).
    pub settings: &'static Settings,
    pub table: &'static RoomTable,
    pub shutdown: &'static Shutdown,
    /// Connections whose head was found incomplete and that are still sending it.
    pending: RefCell<Vec<Rc<Waiting>>>,
    /// Multi-room streams open.
    multi_streams: Cell<usize>,
    /// Open connections per client address (only with `max_connections_per_ip`).
    per_ip: RefCell<HashMap<IpAddr, u32>>,
    /// When the last rate-limited warning was logged.
    last_warning: Cell<Option<Instant>>,
    /// Rate-limited warnings not logged since.
    suppressed: Cell<u64>,
}

impl Server {
    /// Logs a warning unless one was logged less than 10 s ago (then counts it, and says how
    /// many were suppressed the next time one goes out).
    pub fn warn_limited(&self, message: &str) {
        let now = Instant::now();
        if self
            .last_warning
            .get()
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(10))
        {
            self.suppressed.set(self.suppressed.get() + 1);
            return;
        }
        let suppressed = self.suppressed.replace(0);
        self.last_warning.set(Some(now));
        if suppressed > 0 {
            log::warn!("{message} ({suppressed} similar warnings suppressed)");
        } else {
            log::warn!("{message}");
        }
    }
}

impl Server {
    pub fn new(
        config: &'static Config,
        settings: &'static Settings,
        table: &'static RoomTable,
        shutdown: &'static Shutdown,
    ) -> Server {
        Server {
            config,
            settings,
            table,
            shutdown,
            pending: RefCell::new(Vec::new()),
            multi_streams: Cell::new(0),
            per_ip: RefCell::new(HashMap::new()),
            last_warning: Cell::new(None),
            suppressed: Cell::new(0),
        }
    }
}

/// Binds the listening socket (before the executor starts, so errors stop start-up).
pub fn bind(addr: SocketAddr) -> io::Result<Async<TcpListener>> {
    Async::<TcpListener>::bind(addr)
}

/// Accepts connections until shutdown, in batches of at most [`ACCEPT_BATCH`] between yields.
pub async fn serve(
    server: &'static Server,
    listener: Async<TcpListener>,
    executor: &'static StaticLocalExecutor,
) {
    let mut batch = 0;
    loop {
        batch += 1;
        if batch > ACCEPT_BATCH {
            batch = 0;
            future::yield_now().await;
        }
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            server.shutdown.wait().await;
            None
        })
        .await;
        let (socket, peer) = match accepted {
            None => return,
            Some(Ok(pair)) => pair,
            Some(Err(e)) => {
                // EMFILE and friends: back off instead of spinning on a full descriptor table.
                server.warn_limited(&format!(
                    "accept failed: {e}; raise the open-file limit (ulimit -n, LimitNOFILE=) if this repeats"
                ));
                Timer::after(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(per_ip) = PerIp::new(server, peer.ip()) else {
            server.table.stats().rejected_per_ip.add(1);
            server.warn_limited(&format!(
                "{} has {} connections open: refusing more; raise max_connections_per_ip",
                peer.ip(),
                server.config.max_connections_per_ip
            ));
            continue;
        };
        executor
            .spawn(connection(server, executor, socket, peer, per_ip))
            .detach();
    }
}

/// Whose a pending connection is, for `max_pending_per_ip`: its IPv4 address, or the /64 of
/// its IPv6 address (one host or site usually holds a whole /64, so counting single IPv6
/// addresses would not limit anyone).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
        v4 => v4,
    }
}

/// A connection still sending its request head (it holds a head buffer).
struct Waiting {
    /// Its [`client_key`].
    ip: IpAddr,
    since: Instant,
    /// Bytes of the head received so far.
    bytes: Cell<usize>,
    /// Closed to make room for another connection.
    evicted: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Waiting {
    /// Whether `self` has sent less for its age than `other`: (bytes + 1) / age, compared
    /// without division. A newcomer has had no time to send, so it never looks slow.
    fn slower_than(&self, other: &Waiting, now: Instant) -> bool {
        let age = |w: &Waiting| now.duration_since(w.since).as_micros().max(1);
        let sent = |w: &Waiting| w.bytes.get() as u128 + 1;
        sent(self) * age(other) < sent(other) * age(self)
    }

    fn evict(&self) {
        self.evicted.set(true);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Resolves once [`Waiting::evict`] was called.
    async fn evicted(&self) {
        future::poll_fn(|cx| {
            if self.evicted.get() {
                return Poll::Ready(());
            }
            *self.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
    }
}

/// A pending-table slot, released when dropped.
struct PendingSlot {
    server: &'static Server,
    waiting: Rc<Waiting>,
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        let mut pending = self.server.pending.borrow_mut();
        if let Some(i) = pending.iter().position(|w| Rc::ptr_eq(w, &self.waiting)) {
            pending.swap_remove(i);
        }
    }
}

/// Gives `peer` a pending slot. When its address already holds `max_pending_per_ip` of them,
/// the slowest of those (see [`Waiting::slower_than`]) is closed to make room, if it has been
/// pending for [`PER_IP_GRACE`]; when the whole table is full, the slowest of all. A slowloris
/// thus mostly displaces its own connections, or other slow ones, and a client that sends its
/// head keeps its slot.
fn admit(server: &'static Server, peer: SocketAddr) -> PendingSlot {
    let config = server.config;
    let now = Instant::now();
    let ip = client_key(peer.ip());
    let mut pending = server.pending.borrow_mut();
    let slowest = |pending: &[Rc<Waiting>], of: Option<IpAddr>| {
        (0..pending.len())
            .filter(|&i| of.is_none_or(|ip| pending[i].ip == ip))
            .reduce(|a, b| {
                if pending[b].slower_than(&pending[a], now) {
                    b
                } else {
                    a
                }
            })
    };
    let from_ip = pending.iter().filter(|w| w.ip == ip).count();
    let per_ip_victim = (config.max_pending_per_ip > 0 && from_ip >= config.max_pending_per_ip)
        .then(|| slowest(&pending, Some(ip)))
        .flatten()
        .filter(|&i| now.duration_since(pending[i].since) >= PER_IP_GRACE);
    let victim = match per_ip_victim {
        Some(i) => Some((
            i,
            &server.table.stats().rejected_per_ip,
            "max_pending_per_ip",
        )),
        None if pending.len() >= config.max_pending_requests => slowest(&pending, None).map(|i| {
            (
                i,
                &server.table.stats().rejected_pending,
                "max_pending_requests",
            )
        }),
        None => None,
    };
    if let Some((i, counter, key)) = victim {
        let victim = pending.swap_remove(i);
        victim.evict();
        let (age, sent) = (now.duration_since(victim.since), victim.bytes.get());
        log::debug!(
            "{peer}: {} pending: closing {} ({sent} bytes in {age:.1?}) to make room",
            pending.len() + 1,
            victim.ip
        );
        drop(pending);
        counter.add(1);
        let (whose, limit) = match per_ip_victim {
            Some(_) => (format!("{ip} has"), config.max_pending_per_ip),
            None => ("all clients have".to_string(), config.max_pending_requests),
        };
        server.warn_limited(&format!(
            "{whose} {limit} connections still sending their request: closing the slowest ({sent} bytes in {age:.1?}) and others; raise {key} or lower header_timeout_secs"
        ));
        pending = server.pending.borrow_mut();
    }
    let waiting = Rc::new(Waiting {
        ip,
        since: now,
        bytes: Cell::new(0),
        evicted: Cell::new(false),
        waker: RefCell::new(None),
    });
    pending.push(waiting.clone());
    PendingSlot { server, waiting }
}

/// Counts a connection against its address's limit until dropped.
struct PerIp {
    server: &'static Server,
    ip: IpAddr,
}

impl PerIp {
    /// `None` when the address already has `max_connections_per_ip` connections.
    fn new(server: &'static Server, ip: IpAddr) -> Option<PerIp> {
        let cap = server.config.max_connections_per_ip;
        if cap == 0 {
            return Some(PerIp { server, ip });
        }
        let mut map = server.per_ip.borrow_mut();
        let n = map.entry(ip).or_insert(0);
        if *n as usize >= cap {
            return None;
        }
        *n += 1;
        Some(PerIp { server, ip })
    }
}

impl Drop for PerIp {
    fn drop(&mut self) {
        if self.server.config.max_connections_per_ip == 0 {
            return;
        }
        let mut map = self.server.per_ip.borrow_mut();
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Counts one of something (multi-room streams) until dropped.
struct Pending<'a>(&'a Cell<usize>);

impl<'a> Pending<'a> {
    fn new(count: &'a Cell<usize>) -> Self {
        count.set(count.get() + 1);
        Pending(count)
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

async fn connection(
    server: &'static Server,
    executor: &'static StaticLocalExecutor,
    socket: Async<TcpStream>,
    peer: SocketAddr,
    per_ip: PerIp,
) {
    let live = server.settings.get();
    let config: &Config = &live;
    let Some(head) = request(server, &socket, peer, config).await else {
        return;
    };
    let on_demand = add_on_demand(server, config, &head);
    // A room still being joined (start-up, upstream reconnecting): wait a little for it rather
    // than turn the client away at once.
    let deadline = Instant::now() + SYNC_WAIT;
    let mut route = routes::route(&head, server.table, config);
    while matches!(route, Route::NotReady(_))
        && Instant::now() < deadline
        && !server.shutdown.requested()
    {
        Timer::after(Duration::from_millis(50)).await;
        route = routes::route(&head, server.table, config);
    }
    if let Some(index) = on_demand {
        retire_unread(server.table, index, &route);
    }
    let client = Client {
        server,
        socket,
        peer,
        head,
        config: live.clone(),
    };
    match route {
        Route::Reply(reply) | Route::NotReady(reply) => {
            log::debug!(
                "{peer}: {:?} {} -> {}",
                client.head.method,
                Shown(&client.head.path),
                reply.status
            );
            send(&client.socket, &reply.to_bytes()).await;
        }
        Route::Stream {
            room,
            start,
            mask,
            head,
        } => Box::pin(single(client, executor, per_ip, room, start, mask, head)).await,
        Route::Multi {
            rooms,
            start,
            mask,
            head,
        } => Box::pin(several(client, rooms, start, mask, head)).await,
    }
}

/// A connection whose request has been read and routed to a stream.
struct Client {
    server: &'static Server,
    socket: Async<TcpStream>,
    peer: SocketAddr,
    head: Head,
    config: Rc<Config>,
}

impl Client {
    /// The server, the peer, and borrows of the socket, the head and the configuration.
    fn parts(
        &self,
    ) -> (
        &'static Server,
        SocketAddr,
        &Async<TcpStream>,
        &Head,
        &Config,
    ) {
        (
            self.server,
            self.peer,
            &self.socket,
            &self.head,
            &self.config,
        )
    }

    /// What the stream re-checks its access with while it is open.
    fn guard(&self) -> Guard {
        Guard {
            settings: self.server.settings,
            credential: access::Credential::of(&self.head, &self.config),
        }
    }
}

/// Reads the request head within `header_timeout`; a timeout, a malformed head or an I/O error
/// is answered (408, 400/431) or just closed, and gives `None`.
async fn request(
    server: &'static Server,
    socket: &Async<TcpStream>,
    peer: SocketAddr,
    config: &Config,
) -> Option<Head> {
    let head = Box::pin(future::or(
        read_head(socket, config.max_head_bytes, || admit(server, peer)),
        async {
            Timer::after(config.header_timeout).await;
            Err(None)
        },
    ))
    .await;
    match head {
        Ok(head) => Some(head),
        Err(None) => {
            log::debug!(
                "{peer}: no complete request within {:?}",
                config.header_timeout
            );
            server.table.stats().rejected_timeout.add(1);
            let reply = Reply::text(408, "request timeout\n");
            send(socket, &reply.to_bytes()).await;
            None
        }
        Err(Some(Ok(why))) => {
            log::debug!("{peer}: rejected request: {why:?}");
            server.table.stats().rejected_bad_request.add(1);
            send(socket, &reply::reject(why).to_bytes()).await;
            None
        }
        Err(Some(Err(_))) => None,
    }
}

/// With `on_demand`, a stream of a room the table does not hold yet gives it an entry (the
/// index returned); the XMPP side asks its disco#info (never creating it), and the route waits
/// for that to decide. Not for a name that is no JID localpart, nor for a request the global
/// token refuses anyway.
fn add_on_demand(server: &Server, config: &Config, head: &Head) -> Option<usize> {
    if !config.on_demand {
        return None;
    }
    let node = head
        .path
        .strip_prefix("/eventsource/")
        .and_then(super::request::percent_decode)?;
    let held = server
        .table
        .find_node(&node)
        .is_some_and(|i| !server.table.room(i).is_free());
    if held
        || crate::config::check_room_node(&node).is_err()
        || !access::passes_global(config, &access::Credential::of(head, config))
    {
        return None;
    }
    let added = server.table.add(&node, &config.muc, Origin::OnDemand);
    if added.is_none() {
        server.warn_limited(&format!(
            "room table full (max_rooms = {}): cannot add {} on demand; raise max_rooms",
            config.max_rooms,
            Shown(&node)
        ));
    }
    added
}

/// A stream of one room: subscribed, resumed (from the ring or the room's archive), then run
/// as a task of its own.
async fn single(
    client: Client,
    executor: &'static StaticLocalExecutor,
    per_ip: PerIp,
    room: usize,
    start: Start,
    mask: u8,
    stream_head: String,
) {
    let (server, peer, socket, head, config) = client.parts();
    // Subscribed before waiting for the room to be joined: an on-demand room is joined only
    // while it has a subscriber.
    let Some(sub) = server.table.subscribe(room) else {
        Box::pin(table_full(server, socket, head, peer)).await;
        return;
    };
    if !Box::pin(resumable(server, socket, head, &[room], &start)).await {
        return;
    }
    log::debug!(
        "{peer}: subscribed to {} ({} subscribers)",
        sub.room().jid(),
        sub.room().subscribers()
    );
    let asked = match &start {
        Start::After(id) => id.clone(),
        _ => String::new(),
    };
    let (start, resumed) = Box::pin(from_archive(server.table, room, start)).await;
    let archived = archived_bytes(resumed, &asked);
    let (mut opening, first) =
        sse::opening(&stream_head, config.retry_ms, &sub.room().ring(), &start);
    opening.extend_from_slice(&archived);
    stream_socket(socket, config);
    let guard = client.guard();
    // The stream runs as a task of its own holding only what it needs, so nothing of this
    // (much larger) request-handling future stays allocated per subscriber.
    let jid = sub.room().jid();
    let socket = Rc::new(client.socket);
    executor
        .spawn(async move {
            let _per_ip = per_ip;
            let ended = sse::stream(&sub, socket, opening, first, mask, &guard).await;
            match ended {
                sse::Ended::Lapped => log::debug!(
                    "{peer}: dropped from {jid}: fell more than the ring behind ({} dropped so far)",
                    sub.stats().dropped_slow.get()
                ),
                other => log::debug!("{peer}: stream of {jid} ended: {other:?}"),
            }
        })
        .detach();
}

/// A stream merging several rooms (`/eventsource?room=a&room=b`), run within the connection.
async fn several(client: Client, rooms: Vec<usize>, start: Start, mask: u8, stream_head: String) {
    let (server, peer, socket, head, config) = client.parts();
    if server.multi_streams.get() >= config.max_multi_streams {
        server.table.stats().rejected_full.add(1);
        server.warn_limited(&format!(
            "{} multi-room streams open: refusing {peer}; raise max_multi_streams",
            server.multi_streams.get()
        ));
        let cors = super::access::cors(config, head.origin.as_deref());
        let reply = reply::try_later(head, &cors, "too many multi-room streams", 10);
        send(socket, &reply.to_bytes()).await;
        return;
    }
    let _multi = Pending::new(&server.multi_streams);
    let mut follows = Vec::with_capacity(rooms.len());
    for &room in &rooms {
        let Some(sub) = server.table.subscribe(room) else {
            drop(follows);
            Box::pin(table_full(server, socket, head, peer)).await;
            return;
        };
        follows.push(multi::Follow::new(sub));
    }
    if !Box::pin(resumable(server, socket, head, &rooms, &start)).await {
        return;
    }
    let owned: Vec<_> = rooms.iter().map(|&r| server.table.room(r).node()).collect();
    let nodes: Vec<&str> = owned.iter().map(|n| &**n).collect();
    let mut starts = multi::starts(&nodes, &start);
    let mut resumed = Vec::with_capacity(rooms.len());
    for (i, &room) in rooms.iter().enumerate() {
        let (start, found) = Box::pin(from_archive(server.table, room, starts[i].clone())).await;
        resumed.push(found.map(|found| (starts[i].clone(), found)));
        starts[i] = start;
    }
    let opening = multi::opening(
        &stream_head,
        config.retry_ms,
        &mut follows,
        &starts,
        &resumed,
    );
    stream_socket(socket, config);
    log::debug!(
        "{peer}: subscribed to {} rooms: {}",
        nodes.len(),
        nodes.join(", ")
    );
    let guard = client.guard();
    let ended = Box::pin(multi::stream(&mut follows, socket, opening, mask, &guard)).await;
    log::debug!("{peer}: stream of {} ended: {ended:?}", nodes.join(", "));
}

/// An on-demand entry this request added whose answer is "no such room" (the room is missing,
/// or this request may not read it) or "try later" is retired unless someone reads it: the
/// daemon does not stay in a room for a refused request, and `/` never lists it.
fn retire_unread(table: &RoomTable, index: usize, route: &Route) {
    let room = table.room(index);
    let refused = match route {
        Route::Reply(reply) => reply.status == 404,
        // Not looked up in time (the upstream may be down): asked again, it is added again.
        Route::NotReady(_) => true,
        _ => false,
    };
    if refused && room.origin() == Origin::OnDemand && room.subscribers() == 0 {
        table.retire(index, routes::ON_DEMAND_RETIRED);
        table.forget(index);
    }
}

/// How long a resume waits for the room's archive.
const ARCHIVE_WAIT: Duration = Duration::from_secs(5);

/// A resume from an id the ring no longer holds, in a room with an archive (MAM): the messages
/// after that id are fetched from the archive, to be sent first, then the ring from where the
/// archive meets it. Returns where the ring part starts and what the archive gave. Only a
/// stanza-id in the shape of the room's own goes to the archive, stripped of a named event's
/// `~<n>` (`rooms::resume::archive_after`); anything else (no archive, an empty or minted base,
/// a foreign id, no answer, the id unknown to the archive too) leaves `start` as it is, and the
/// stream says `gap`.
async fn from_archive(table: &RoomTable, room: usize, start: Start) -> (Start, Option<Resumed>) {
    let Start::After(id) = &start else {
        return (start, None);
    };
    let r = table.room(room);
    if r.ring().resume_point(id).is_some() {
        return (start, None);
    }
    let after = {
        let info = r.info.borrow();
        match resume::archive_after(id, &info.stanza_shapes) {
            Some(after) if info.mam => after,
            _ => return (start, None),
        }
    };
    let Some(found) = table.archive.fetch(room, after, ARCHIVE_WAIT).await else {
        return (start, None);
    };
    let ring = r.ring();
    // The first archived message the ring also holds is where the ring takes over.
    let meet = found
        .messages
        .iter()
        .position(|m| ring.find_id(&m.id).is_some());
    let next = match meet {
        Some(i) => ring.find_id(&found.messages[i].id).unwrap_or(ring.oldest()),
        None => ring.oldest(),
    };
    let mut events = found.messages;
    events.truncate(meet.unwrap_or(events.len()));
    log::debug!(
        "{}: resumed {} messages from the archive",
        r.jid(),
        events.len()
    );
    let short = meet.is_none() && !found.complete;
    (Start::FromSeq(next), Some(Resumed { events, short }))
}

/// The bytes a single-room stream sends for what the archive gave a resume from `id`.
fn archived_bytes(resumed: Option<Resumed>, id: &str) -> Vec<u8> {
    let Some(resumed) = resumed else {
        return Vec::new();
    };
    let mut bytes = Vec::new();
    for m in &resumed.events {
        bytes.extend_from_slice(&m.event.frame);
    }
    if resumed.short {
        crate::rooms::frame::push_gap(&mut bytes, &Resumed::gap_json(id, None));
    }
    bytes
}

/// How long a resuming client may wait for its rooms to finish joining.
const SYNC_WAIT: Duration = Duration::from_secs(10);

/// A client resuming with `Last-Event-ID` needs its rooms' rings complete (joined, history
/// replayed), or it would be told of a gap and then get history twice. Waits for that a
/// little; if the rooms are still joining (the upstream may be down), answers "try later"
/// (`false`) so the client comes back with the same id.
async fn resumable(
    server: &Server,
    socket: &Async<TcpStream>,
    head: &Head,
    rooms: &[usize],
    start: &Start,
) -> bool {
    if !matches!(start, Start::After(_)) {
        return true;
    }
    let synced = || rooms.iter().all(|&r| server.table.room(r).synced());
    let deadline = Instant::now() + SYNC_WAIT / 2;
    while !synced() && Instant::now() < deadline && !server.shutdown.requested() {
        Timer::after(Duration::from_millis(50)).await;
    }
    if synced() {
        return true;
    }
    let cors = super::access::cors(&server.settings.get(), head.origin.as_deref());
    let reply = reply::try_later(head, &cors, "the room is being joined", 5);
    send(socket, &reply.to_bytes()).await;
    false
}

/// The subscriber table is full: count it, say so (at most every 10 s), and answer so that a
/// browser comes back later.
async fn table_full(server: &Server, socket: &Async<TcpStream>, head: &Head, peer: SocketAddr) {
    server.warn_limited(&format!(
        "subscriber table full ({} subscribers, at most {} per room): refusing {peer} and others; raise max_subscribers / max_subscribers_per_room",
        server.config.max_subscribers,
        server.config.max_subscribers_per_room
    ));
    let cors = super::access::cors(&server.settings.get(), head.origin.as_deref());
    let reply = reply::try_later(head, &cors, "too many subscribers", 10);
    send(socket, &reply.to_bytes()).await;
}

/// Reads until a complete head. `Err(Some(Ok(reject)))`: refuse it; `Err(Some(Err))`: I/O
/// error, or evicted by admission (close unanswered). Reads without waiting first:
/// only once the head is found incomplete does the connection ask `admit` for a pending slot,
/// which it holds until this returns.
async fn read_head(
    socket: &Async<TcpStream>,
    max: usize,
    admit: impl FnOnce() -> PendingSlot,
) -> Result<Head, Option<Result<Reject, io::Error>>> {
    let mut admit = Some(admit);
    let mut slot: Option<PendingSlot> = None;
    // Read straight into the head buffer: no fixed array lives in the connection's future,
    // which stays allocated (at its largest state's size) for as long as a stream runs.
    let mut buf: Vec<u8> = Vec::with_capacity(max.min(1024));
    loop {
        let len = buf.len();
        let room = (max - len).min(1024);
        if room == 0 {
            return Err(Some(Ok(Reject::TooLarge)));
        }
        buf.resize(len + room, 0);
        // The socket is non-blocking: this never waits.
        let read = socket.get_ref().read(&mut buf[len..]);
        let n = match read {
            Ok(0) => return Err(Some(Err(io::ErrorKind::UnexpectedEof.into()))),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                buf.truncate(len);
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                buf.truncate(len);
                if let Some(admit) = admit.take() {
                    let admitted = admit();
                    admitted.waiting.bytes.set(buf.len());
                    slot = Some(admitted);
                }
                let Some(slot) = &slot else {
                    return Err(Some(Err(io::ErrorKind::WouldBlock.into())));
                };
                let evicted =
                    future::or(async { socket.readable().await.map(|()| false) }, async {
                        slot.waiting.evicted().await;
                        Ok(true)
                    })
                    .await;
                match evicted {
                    Ok(false) => continue,
                    // Closed unanswered, like any refusal at the door: an EventSource retries a
                    // network error, where an error status would make it give up for good.
                    Ok(true) => return Err(Some(Err(io::Error::other("evicted")))),
                    Err(e) => return Err(Some(Err(e))),
                }
            }
            Err(e) => return Err(Some(Err(e))),
        };
        buf.truncate(len + n);
        if let Some(slot) = &slot {
            slot.waiting.bytes.set(buf.len());
        }
        match request::parse(&buf) {
            Ok(Some(head)) => return Ok(head),
            Ok(None) => {}
            Err(why) => return Err(Some(Ok(why))),
        }
    }
}

/// Writes a short reply, bounded in time, and closes (boxed: see `Route::Multi`).
/// Socket options of a connection that has become an event stream (single- or multi-room).
/// Nagle stays on: `TCP_NODELAY` gave no lower latency in the fan-out bench and cost more CPU
/// per event (docs/BENCHMARKS.md).
fn stream_socket(socket: &Async<TcpStream>, config: &Config) {
    if config.send_buffer_bytes > 0 {
        let _ = rustix::net::sockopt::set_socket_send_buffer_size(
            socket.get_ref(),
            config.send_buffer_bytes,
        );
    }
}

async fn send(socket: &Async<TcpStream>, bytes: &[u8]) {
    Box::pin(send_now(socket, bytes)).await;
}

async fn send_now(socket: &Async<TcpStream>, bytes: &[u8]) {
    let mut writer = socket;
    let _ = future::or(
        async {
            let _ = writer.write_all(bytes).await;
            let _ = writer.flush().await;
        },
        async {
            Timer::after(REPLY_TIMEOUT).await;
        },
    )
    .await;
    let _ = socket.get_ref().shutdown(std::net::Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_connections_are_counted_per_ipv4_address_and_per_ipv6_64() {
        let key = |s: &str| client_key(s.parse().unwrap()).to_string();
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(key("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
    }

    #[test]
    fn the_slowest_pending_connection_is_the_one_that_sent_least_for_its_age() {
        let now = Instant::now();
        let waiting = |age_ms: u64, bytes: usize| Waiting {
            ip: IpAddr::from([127, 0, 0, 1]),
            since: now - Duration::from_millis(age_ms),
            bytes: Cell::new(bytes),
            evicted: Cell::new(false),
            waker: RefCell::new(None),
        };
        // A slowloris 5 s in with 30 bytes against a newcomer with nothing yet.
        assert!(waiting(5000, 30).slower_than(&waiting(1, 0), now));
        // Same bytes: the older one.
        assert!(waiting(2000, 10).slower_than(&waiting(1000, 10), now));
        // A client 50 ms in with half its head is not slower than a 1 s old trickle.
        assert!(!waiting(50, 200).slower_than(&waiting(1000, 20), now));
    }
}
