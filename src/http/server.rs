//! The HTTP/1.1 server: accepts connections, reads one request head under a size and time
//! limit, answers it, and hands event-stream requests to the SSE writer.
//!
//! Every connection is one task on the executor; nothing here starts a thread. Connections still
//! sending their head are capped (`max_pending_requests`); subscribers are capped by the room
//! table's fixed subscriber table.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use async_executor::LocalExecutor;
use async_io::{Async, Timer};
use futures_lite::{AsyncReadExt, AsyncWriteExt, future};

use super::access::{self, Guard};
use super::request::{self, Head, Reject};
use super::routes::{self, Reply, Route};
use super::{multi, sse};
use crate::config::Config;
use crate::logger::Shown;
use crate::rooms::archive::Resumed;
use crate::rooms::resume;
use crate::rooms::table::{Origin, RoomTable, count};
use crate::settings::Settings;
use crate::shutdown::Shutdown;

/// Time allowed to write a short reply before giving up on the client.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// What connections share.
pub struct Server {
    /// The start-up configuration (listen address, table sizes: what needs a restart).
    pub config: &'static Config,
    /// The configuration in force (tokens, rooms, CORS…: what `SIGHUP` reloads).
    pub settings: &'static Settings,
    pub table: &'static RoomTable,
    pub shutdown: &'static Shutdown,
    pending: Cell<usize>,
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
            pending: Cell::new(0),
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

/// Accepts connections until shutdown.
pub async fn serve(
    server: &'static Server,
    listener: Async<TcpListener>,
    executor: &'static LocalExecutor<'static>,
) {
    loop {
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
                log::warn!(
                    "accept failed: {e}; raise the open-file limit (ulimit -n) if this repeats"
                );
                Timer::after(Duration::from_millis(100)).await;
                continue;
            }
        };
        if server.pending.get() >= server.config.max_pending_requests {
            count(&server.table.stats().rejected_pending, 1);
            server.warn_limited(&format!(
                "{} connections are still sending their request: refusing {peer} and others; raise max_pending_requests or lower header_timeout_secs",
                server.pending.get()
            ));
            log::debug!(
                "{peer}: refused, {} requests already pending",
                server.pending.get()
            );
            // Closed unanswered: a network error makes an EventSource retry, where an HTTP
            // error status would make it give up for good.
            continue;
        }
        let Some(per_ip) = PerIp::new(server, peer.ip()) else {
            count(&server.table.stats().rejected_per_ip, 1);
            server.warn_limited(&format!(
                "{} has {} connections open: refusing more; raise max_connections_per_ip",
                peer.ip(),
                server.config.max_connections_per_ip
            ));
            continue;
        };
        // Counted now, not when the task first runs: a burst of accepts must see the count grow.
        let pending = Pending::new(&server.pending);
        executor
            .spawn(connection(server, executor, socket, peer, pending, per_ip))
            .detach();
    }
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

/// Counts one of something (pending connections, multi-room streams) until dropped.
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
    executor: &'static LocalExecutor<'static>,
    socket: Async<TcpStream>,
    peer: SocketAddr,
    pending: Pending<'static>,
    per_ip: PerIp,
) {
    let live = server.settings.get();
    let config: &Config = &live;
    let head = Box::pin(future::or(
        read_head(&socket, config.max_head_bytes),
        async {
            Timer::after(config.header_timeout).await;
            Err(None)
        },
    ))
    .await;
    drop(pending);
    let head = match head {
        Ok(head) => head,
        Err(None) => {
            log::debug!(
                "{peer}: no complete request within {:?}",
                config.header_timeout
            );
            count(&server.table.stats().rejected_timeout, 1);
            let reply = Reply::text(408, "request timeout\n");
            send(&socket, &reply.to_bytes()).await;
            return;
        }
        Err(Some(Ok(why))) => {
            log::debug!("{peer}: rejected request: {why:?}");
            count(&server.table.stats().rejected_bad_request, 1);
            send(&socket, &routes::reject(why).to_bytes()).await;
            return;
        }
        Err(Some(Err(_))) => return,
    };
    // With `on_demand`, a stream of a room the table does not hold yet gives it an entry; the
    // XMPP side asks its disco#info (never creating it), and the route waits for that to
    // decide. Not for a request the global token refuses anyway.
    let on_demand = if config.on_demand
        && let Some(node) = head
            .path
            .strip_prefix("/eventsource/")
            .and_then(super::request::percent_decode)
        && server
            .table
            .find_node(&node)
            .is_none_or(|i| server.table.room(i).is_free())
        && crate::config::check_room_node(&node).is_ok()
        && access::passes_global(config, &access::Credential::of(&head, config))
    {
        let added = server.table.add(&node, &config.muc, Origin::OnDemand);
        if added.is_none() {
            server.warn_limited(&format!(
                "room table full (max_rooms = {}): cannot add {} on demand; raise max_rooms",
                config.max_rooms,
                Shown(&node)
            ));
        }
        added
    } else {
        None
    };
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
    match route {
        Route::Reply(reply) | Route::NotReady(reply) => {
            log::debug!(
                "{peer}: {:?} {} -> {}",
                head.method,
                Shown(&head.path),
                reply.status
            );
            send(&socket, &reply.to_bytes()).await;
        }
        Route::Stream {
            room,
            start,
            mask,
            head: stream_head,
        } => {
            let room_index = room;
            // Subscribed before waiting for the room to be joined: an on-demand room is joined
            // only while it has a subscriber.
            let Some(sub) = server.table.subscribe(room) else {
                Box::pin(table_full(server, &socket, &head, peer)).await;
                return;
            };
            if !Box::pin(resumable(server, &socket, &head, &[room], &start)).await {
                return;
            }
            let room = sub.room();
            log::debug!(
                "{peer}: subscribed to {} ({} subscribers)",
                room.jid(),
                room.subscribers()
            );
            let asked = match &start {
                routes::Start::After(id) => id.clone(),
                _ => String::new(),
            };
            let (start, resumed) = Box::pin(from_archive(server.table, room_index, start)).await;
            let archived = archived_bytes(resumed, &asked);
            let (mut opening, first) =
                sse::opening(&stream_head, config.retry_ms, &room.ring(), &start);
            opening.extend_from_slice(&archived);
            stream_socket(&socket, config);
            let guard = Guard {
                settings: server.settings,
                credential: access::Credential::of(&head, config),
            };
            // The stream runs as a task of its own holding only what it needs, so nothing of
            // this (much larger) request-handling future stays allocated per subscriber.
            let room = room.jid();
            let socket = std::rc::Rc::new(socket);
            executor
                .spawn(async move {
                    let _per_ip = per_ip;
                    let ended = sse::stream(&sub, socket, opening, first, mask, &guard).await;
                    match ended {
                        sse::Ended::Lapped => log::debug!(
                            "{peer}: dropped from {room}: fell more than the ring behind ({} dropped so far)",
                            sub.stats().dropped_slow.get()
                        ),
                        other => log::debug!("{peer}: stream of {room} ended: {other:?}"),
                    }
                })
                .detach();
        }
        Route::Multi {
            rooms,
            start,
            mask,
            head: stream_head,
        } => {
            if server.multi_streams.get() >= config.max_multi_streams {
                count(&server.table.stats().rejected_full, 1);
                server.warn_limited(&format!(
                    "{} multi-room streams open: refusing {peer}; raise max_multi_streams",
                    server.multi_streams.get()
                ));
                let cors = super::access::cors(config, head.origin.as_deref());
                let reply = routes::try_later(&head, &cors, "too many multi-room streams", 10);
                send(&socket, &reply.to_bytes()).await;
                return;
            }
            let _multi = Pending::new(&server.multi_streams);
            let mut follows = Vec::with_capacity(rooms.len());
            for &room in &rooms {
                let Some(sub) = server.table.subscribe(room) else {
                    drop(follows);
                    Box::pin(table_full(server, &socket, &head, peer)).await;
                    return;
                };
                follows.push(multi::Follow::new(sub));
            }
            if !Box::pin(resumable(server, &socket, &head, &rooms, &start)).await {
                return;
            }
            let owned: Vec<_> = rooms.iter().map(|&r| server.table.room(r).node()).collect();
            let nodes: Vec<&str> = owned.iter().map(|n| &**n).collect();
            let mut starts = multi::starts(&nodes, &start);
            let mut resumed = Vec::with_capacity(rooms.len());
            for (i, &room) in rooms.iter().enumerate() {
                let (start, found) =
                    Box::pin(from_archive(server.table, room, starts[i].clone())).await;
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
            stream_socket(&socket, config);
            log::debug!(
                "{peer}: subscribed to {} rooms: {}",
                nodes.len(),
                nodes.join(", ")
            );
            // Boxed, like the other rare paths: a connection's future is as large as its largest
            // state, and it lives as long as the stream.
            let guard = Guard {
                settings: server.settings,
                credential: access::Credential::of(&head, config),
            };
            let ended = Box::pin(multi::stream(&mut follows, &socket, opening, mask, &guard)).await;
            log::debug!("{peer}: stream of {} ended: {ended:?}", nodes.join(", "));
        }
    }
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
async fn from_archive(
    table: &RoomTable,
    room: usize,
    start: routes::Start,
) -> (routes::Start, Option<Resumed>) {
    let routes::Start::After(id) = &start else {
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
    (
        routes::Start::FromSeq(next),
        Some(Resumed { events, short }),
    )
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
    start: &routes::Start,
) -> bool {
    if !matches!(start, routes::Start::After(_)) {
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
    let reply = routes::try_later(head, &cors, "the room is being joined", 5);
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
    let reply = routes::try_later(head, &cors, "too many subscribers", 10);
    send(socket, &reply.to_bytes()).await;
}

/// Reads until a complete head. `Err(Some(Ok(reject)))`: refuse it; `Err(Some(Err))`: I/O error.
async fn read_head(
    socket: &Async<TcpStream>,
    max: usize,
) -> Result<Head, Option<Result<Reject, io::Error>>> {
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
        let read = (&*socket).read(&mut buf[len..]).await;
        let n = match read {
            Ok(0) => return Err(Some(Err(io::ErrorKind::UnexpectedEof.into()))),
            Ok(n) => n,
            Err(e) => return Err(Some(Err(e))),
        };
        buf.truncate(len + n);
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
