//! The SSE writer: one subscriber's stream task, written straight from the room ring's shared
//! frames.
//!
//! A subscriber is a cursor (event sequence + byte offset into that event's frame), kept in its
//! room-table slot. Each write gathers the pending frames into one vectored `write` on the
//! non-blocking socket ([`write_pending`]), so a reader that is behind gets many events per
//! syscall and no frame is ever copied. Once caught up, the task parks: the room table writes
//! new events to the socket itself and wakes the task only when that does not go through. When
//! the socket is full the task sleeps until it is writable again, or until the ring evicts the
//! event it needs next: then it has fallen behind and is dropped, so it never holds memory or
//! others up.

use std::io::{self, IoSlice, Read, Write};
use std::net::TcpStream;
use std::rc::Rc;
use std::task::Poll;

use async_io::Async;
use futures_lite::AsyncWriteExt;

use super::access::{Guard, Standing};
use super::start::{Gap, Start};
use crate::rooms::fanout::Outlet;
pub use crate::rooms::fanout::{BATCH, Cursor, Wrote, write_pending};
use crate::rooms::frame::Json;
use crate::rooms::ring::Ring;
use crate::rooms::stats::Stats;
use crate::rooms::table::{JoinState, Mode, RoomTable, Subscription};

impl Outlet for Async<TcpStream> {
    fn write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut socket = self.get_ref();
        socket.write_vectored(bufs)
    }
}

/// Why a stream ended.
#[derive(Debug)]
pub enum Ended {
    ClientGone,
    /// The subscriber fell behind the ring.
    Lapped,
    Shutdown,
    /// The room was destroyed; its last event said so.
    RoomGone,
    /// The stream may no longer read its room (its flags, a token or the policy changed); its
    /// last event said so.
    Forbidden(&'static str),
    Error(io::Error),
}

enum Woke {
    Retry,
    Readable,
    Heartbeat,
    Shutdown,
}

/// The bytes a stream starts with: the response head, `retry:`, and for a `Last-Event-ID` the
/// ring no longer holds, an `event: gap` (without `id:`, so the client's last id stays). Also
/// returns the first event to send.
pub fn opening(head: &str, retry_ms: usize, ring: &Ring, start: &Start) -> (Vec<u8>, u64) {
    let mut out = head.as_bytes().to_vec();
    if retry_ms > 0 {
        out.extend_from_slice(format!("retry: {retry_ms}\n\n").as_bytes());
    }
    let seq = match start.position(ring) {
        Ok(seq) => seq,
        Err(gap) => {
            push_gap(&mut out, ring, &gap);
            gap.oldest
        }
    };
    (out, seq)
}

/// Appends the `gap` event for a client that resumed from an id the ring does not hold.
fn push_gap(out: &mut Vec<u8>, ring: &Ring, gap: &Gap<'_>) {
    let json = Json::new()
        .str("lastEventId", gap.id)
        .str(
            "reason",
            "events after this id are no longer held; some may be missing",
        )
        .num("resumingWith", ring.len() as u64)
        .finish();
    crate::rooms::frame::push_gap(out, &json);
}

/// How long the last `status: forbidden` event may take to go out.
const LAST_WORD: std::time::Duration = std::time::Duration::from_secs(2);

/// Ends a stream whose reader may no longer read what it streams: a last `event: status` with
/// `{"status":"forbidden","reason":…}` (`"room"` first for a multi-room stream; no `id:`, so
/// the client's last id stays), written within [`LAST_WORD`], unless an event is half-written
/// (`between_events` false): then the connection just closes.
pub async fn forbid(
    socket: &Async<TcpStream>,
    between_events: bool,
    room: Option<&str>,
    why: &'static str,
    stats: &Stats,
) -> Ended {
    if between_events {
        let json = match room {
            Some(room) => Json::new().str("room", room),
            None => Json::new(),
        }
        .str("status", "forbidden")
        .str("reason", why)
        .finish();
        let mut frame = b"event: status\ndata: ".to_vec();
        frame.extend_from_slice(&json);
        frame.extend_from_slice(b"\n\n");
        let mut writer = socket;
        let sent =
            futures_lite::future::or(async { writer.write_all(&frame).await.is_ok() }, async {
                async_io::Timer::after(LAST_WORD).await;
                false
            })
            .await;
        if sent {
            stats.bytes_out.add(frame.len() as u64);
        }
    }
    Ended::Forbidden(why)
}

/// What a stream does after a write attempt.
pub(super) enum Step {
    /// Write again at once.
    Again,
    /// Sleep until there is something to do; `want_write`: the socket is full.
    Sleep { want_write: bool },
    /// The stream is over.
    End(Ended),
}

/// Streams the room of `sub` to `socket` until the client leaves, falls behind, the room is
/// destroyed, its access is withdrawn, or shutdown. `opening` (from [`opening`]) is written
/// first. Whenever the room's access epoch moves ([`RoomTable::access_changed`]), the stream
/// checks its access again (`guard`) before writing anything more.
pub async fn stream(
    sub: &Subscription<'_>,
    socket: Rc<Async<TcpStream>>,
    opening: Vec<u8>,
    first: u64,
    mask: u8,
    guard: &Guard,
) -> Ended {
    sub.attach(socket.clone(), mask, first);
    // Access may have changed while the request was being answered (archive fetch, waits).
    let mut checked = sub.room().access_epoch();
    let mut held = match guard.recheck(sub.room()) {
        // Nothing sent yet: closing makes an EventSource retry and be refused properly.
        Standing::Refused(why) => return Ended::Forbidden(why),
        Standing::Held => true,
        Standing::Reads => false,
    };
    if let Err(e) = send_opening(&socket, opening, sub.stats()).await {
        return Ended::Error(e);
    }
    let mut beats = sub.heartbeat();
    loop {
        match recheck(sub, guard, &mut checked) {
            Some(Standing::Refused(why)) => {
                let between = sub.cursor().offset == 0;
                return forbid(&socket, between, None, why, sub.stats()).await;
            }
            Some(standing) => held = standing == Standing::Held,
            None => {}
        }
        let closing = sub.closing();
        let wrote = if held {
            held_back(sub)
        } else {
            write_step(sub, &socket, mask)
        };
        if closing {
            // One last non-blocking write, so the shutdown status goes out if it can.
            return Ended::Shutdown;
        }
        let want_write = match after_write(sub, &socket, wrote) {
            Step::Again => continue,
            Step::Sleep { want_write } => want_write,
            Step::End(ended) => return ended,
        };
        // While the task sleeps, the room table writes new events itself (parked) or only
        // watches for the ring lapping us (blocked, or held).
        sub.set_mode(if want_write || held {
            Mode::Blocked
        } else {
            Mode::Parked
        });
        let woke = wait(sub, &socket, want_write, beats).await;
        sub.set_mode(Mode::Wake);
        if let Some(ended) = on_wake(sub, &socket, woke, want_write, &mut beats) {
            return ended;
        }
    }
}

/// Writes a stream's opening bytes (they are dropped once sent) and counts the stream.
pub(super) async fn send_opening(
    socket: &Async<TcpStream>,
    opening: Vec<u8>,
    stats: &Stats,
) -> io::Result<()> {
    let mut writer = socket;
    writer.write_all(&opening).await?;
    stats.bytes_out.add(opening.len() as u64);
    stats.streams_opened.add(1);
    Ok(())
}

/// The stream's access checked again if its room's access epoch moved since `checked` (which
/// then moves too); `None` when it has not.
fn recheck(sub: &Subscription<'_>, guard: &Guard, checked: &mut u64) -> Option<Standing> {
    let epoch = sub.room().access_epoch();
    if epoch == *checked {
        return None;
    }
    *checked = epoch;
    Some(guard.recheck(sub.room()))
}

/// A held stream writes nothing until the room's flags are known again; it only notices
/// falling behind the ring.
fn held_back(sub: &Subscription<'_>) -> io::Result<Wrote> {
    if sub.cursor().seq < sub.room().ring().oldest() && sub.cursor().offset == 0 {
        Ok(Wrote::Lapped)
    } else {
        Ok(Wrote::CaughtUp)
    }
}

/// One non-blocking write of what is pending, from the cursor and pin kept in the slot.
fn write_step(sub: &Subscription<'_>, socket: &Async<TcpStream>, mask: u8) -> io::Result<Wrote> {
    let mut cursor = sub.cursor();
    let mut pin = sub.take_pin();
    let wrote = write_pending(
        &sub.room().ring(),
        &mut cursor,
        &mut pin,
        mask,
        socket.get_ref(),
        Some(sub.stats()),
    );
    sub.set_cursor(cursor);
    sub.set_pin(pin);
    wrote
}

/// What follows a write attempt: caught up (the stream ends if its room is gone), more at
/// once, dropped for falling behind, or a full socket.
fn after_write(
    sub: &Subscription<'_>,
    socket: &Async<TcpStream>,
    wrote: io::Result<Wrote>,
) -> Step {
    match wrote {
        Ok(Wrote::CaughtUp) => {
            if let JoinState::Gone(_) = sub.room().state() {
                return Step::End(Ended::RoomGone);
            }
            Step::Sleep { want_write: false }
        }
        Ok(Wrote::More) => Step::Again,
        Ok(Wrote::Lapped) => {
            sub.stats().dropped_slow.add(1);
            reset_on_close(socket);
            Step::End(Ended::Lapped)
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Step::Sleep { want_write: true },
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Step::Again,
        Err(e) => Step::End(Ended::Error(e)),
    }
}

/// Acts on what woke the stream: a heartbeat comment, or noticing the client leaving.
/// `Some` when the stream is over.
fn on_wake(
    sub: &Subscription<'_>,
    socket: &Async<TcpStream>,
    woke: Woke,
    want_write: bool,
    beats: &mut u64,
) -> Option<Ended> {
    match woke {
        Woke::Retry | Woke::Shutdown => {}
        Woke::Heartbeat => {
            *beats = sub.heartbeat();
            // Only between events; a full socket does not need keeping alive.
            if sub.cursor().offset == 0 && !want_write {
                match socket.get_ref().write(b":\n") {
                    Ok(n) => sub.stats().bytes_out.add(n as u64),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return Some(Ended::ClientGone),
                }
            }
        }
        Woke::Readable => {
            if client_left(socket) {
                return Some(Ended::ClientGone);
            }
        }
    }
    None
}

/// Makes closing `socket` reset the connection (`SO_LINGER` 0) instead of leaving its unsent
/// data queued in the kernel: a subscriber dropped for not reading would otherwise keep up to a
/// whole send buffer as an orphan for as long as its peer keeps its window shut.
pub fn reset_on_close(socket: &Async<TcpStream>) {
    let _ =
        rustix::net::sockopt::set_socket_linger(socket.get_ref(), Some(std::time::Duration::ZERO));
}

/// A stream's socket became readable: a client never sends anything after its request, so
/// this reads (and discards) to notice it leaving. `true` when it has gone.
pub fn client_left(socket: &Async<TcpStream>) -> bool {
    let mut scratch = [0u8; 64];
    match socket.get_ref().read(&mut scratch) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
        ),
    }
}

/// Sleeps until there is something to do: the room table handing the stream back (a direct
/// write did not complete), new events it has not written, the socket writable again or our
/// next event evicted (when it was full), a heartbeat, the client closing, or shutdown.
async fn wait(
    sub: &Subscription<'_>,
    socket: &Async<TcpStream>,
    want_write: bool,
    beats: u64,
) -> Woke {
    std::future::poll_fn(|cx| {
        if sub.closing() {
            return Poll::Ready(Woke::Shutdown);
        }
        sub.register(cx.waker());
        let cursor = sub.cursor();
        {
            let ring = sub.room().ring();
            let behind = match sub.mode() {
                Mode::Wake => true,
                Mode::Parked => ring.head() > cursor.seq,
                Mode::Blocked => cursor.needs() < ring.oldest(),
            };
            if behind {
                return Poll::Ready(Woke::Retry);
            }
        }
        if matches!(sub.room().state(), JoinState::Gone(_)) && !want_write {
            return Poll::Ready(Woke::Retry);
        }
        if want_write && socket.poll_writable(cx).is_ready() {
            return Poll::Ready(Woke::Retry);
        }
        if sub.heartbeat() != beats {
            return Poll::Ready(Woke::Heartbeat);
        }
        if socket.poll_readable(cx).is_ready() {
            return Poll::Ready(Woke::Readable);
        }
        Poll::Pending
    })
    .await
}

/// Wakes every subscriber to send a keep-alive comment (HTML §9.2.7: proxies drop idle
/// connections) at the interval `every` gives in force (`heartbeat_secs`; `None` = off). One
/// timer for all streams.
pub async fn heartbeat(table: &RoomTable, every: impl Fn() -> Option<std::time::Duration>) {
    loop {
        match every() {
            Some(interval) => {
                async_io::Timer::after(interval).await;
                // Turned off meanwhile (`heartbeat_secs = 0` and a reload): no beat.
                if every().is_some() {
                    table.beat();
                }
            }
            // Off: look again later, in case a reload turns it on.
            None => {
                async_io::Timer::after(std::time::Duration::from_secs(1)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rooms::fanout::tests::ring_with;
    use crate::rooms::ring::{Entry, kind};
    use crate::rooms::table::Origin;

    /// Reads what the peer has sent within a short while.
    fn received(client: &mut TcpStream) -> String {
        client
            .set_read_timeout(Some(std::time::Duration::from_millis(100)))
            .unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = client.read(&mut buf) {
            if n == 0 {
                out.extend_from_slice(b"<EOF>");
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        String::from_utf8(out).unwrap()
    }

    /// The whole path of an access change for a parked subscriber, on a real socket: written
    /// by the fan-out; held (nothing written) while the room's flags are being read again;
    /// reading again once they allow it; ended with `status: forbidden` once they do not.
    #[test]
    fn a_parked_stream_is_held_then_refused_as_its_rooms_access_changes() {
        let config = crate::config::parse(
            "t",
            "component = s.l\nsecret = x\nmuc = c.l\nrooms = lobby\n",
        )
        .unwrap();
        let settings: &'static crate::settings::Settings =
            Box::leak(Box::new(crate::settings::Settings::new("unused", config)));
        let table = RoomTable::new(crate::rooms::table::Sizes {
            rooms: 1,
            ring_events: 8,
            ring_bytes: 1 << 16,
            subscribers: 2,
        });
        table.add("lobby", "c.l", Origin::Configured);
        let flags = |known: bool, members_only: bool| {
            let mut info = table.room(0).info.borrow_mut();
            info.known = known;
            info.public = true;
            info.members_only = members_only;
        };
        flags(true, false);
        let say = |text: &str| {
            table.publish(0, |seq| {
                Entry::new(
                    crate::rooms::frame::Event::raw(
                        format!("data: {text}\n\n").into_bytes().into(),
                    ),
                    table.mint_id(seq),
                    kind::MESSAGE,
                )
            });
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let socket = Rc::new(Async::new(listener.accept().unwrap().0).unwrap());
        let sub = table.subscribe(0).unwrap();
        let guard = Guard {
            settings,
            credential: Default::default(),
        };
        let ex = async_executor::LocalExecutor::new();
        let task = ex.spawn(stream(
            &sub,
            socket,
            b"OPEN\n\n".to_vec(),
            0,
            kind::DEFAULT,
            &guard,
        ));
        let settle = || while ex.try_tick() {};
        settle();
        assert_eq!(sub.mode(), Mode::Parked);
        say("one");
        assert_eq!(received(&mut client), "OPEN\n\ndata: one\n\n");

        flags(false, false);
        table.access_changed(Some(0));
        settle();
        say("two");
        settle();
        assert_eq!(
            received(&mut client),
            "",
            "held while the flags are unknown"
        );
        assert_eq!(sub.mode(), Mode::Blocked);

        flags(true, false);
        table.access_changed(Some(0));
        settle();
        assert_eq!(received(&mut client), "data: two\n\n");
        assert_eq!(sub.mode(), Mode::Parked);

        flags(true, true);
        table.access_changed(Some(0));
        say("three");
        settle();
        assert!(task.is_finished());
        assert_eq!(
            received(&mut client),
            format!(
                "event: status\ndata: {{\"status\":\"forbidden\",\"reason\":\"{}\"}}\n\n",
                crate::http::access::PRIVATE
            )
        );
        let ended = futures_lite::future::block_on(task);
        assert!(matches!(ended, Ended::Forbidden(_)), "{ended:?}");
        // The slot held the last reference to the socket (as the server's stream task does).
        drop(ex);
        drop(sub);
        assert_eq!(received(&mut client), "<EOF>", "nothing after it");
    }

    #[test]
    fn opening_bytes_and_first_event() {
        let ring = ring_with(&["data: 0\n\n", "data: 1\n\n", "data: 2\n\n"]);
        let (bytes, seq) = opening("H\r\n\r\n", 3000, &ring, &Start::Live);
        assert_eq!(
            (bytes.as_slice(), seq),
            (&b"H\r\n\r\nretry: 3000\n\n"[..], 3)
        );
        assert_eq!(
            opening("", 0, &ring, &Start::After("e0".into())),
            (vec![], 1)
        );
        assert_eq!(opening("", 0, &ring, &Start::After("e2".into())).1, 3);
        assert_eq!(opening("", 0, &ring, &Start::Last(2)).1, 1);
        assert_eq!(opening("", 0, &ring, &Start::Last(99)).1, 0);
        let (bytes, seq) = opening("", 0, &ring, &Start::After("gone".into()));
        assert!(
            bytes.starts_with(b"event: gap\n"),
            "{}",
            String::from_utf8_lossy(&bytes)
        );
        assert!(!String::from_utf8_lossy(&bytes).contains("id:"));
        assert_eq!(seq, 0);
        let (bytes, seq) = opening("", 0, &ring, &Start::Unknown("e1\u{1}".into()));
        assert!(bytes.starts_with(b"event: gap\n") && seq == 0);
        let (bytes, seq) = opening("", 0, &ring, &Start::Unknown("e1".into()));
        assert!(
            bytes.starts_with(b"event: gap\n") && seq == 0,
            "an unknown id is never looked up"
        );
    }
}
