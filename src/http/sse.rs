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

use super::routes::Start;
use crate::rooms::fanout::Outlet;
pub use crate::rooms::fanout::{BATCH, Cursor, Wrote, write_pending};
use crate::rooms::frame::Json;
use crate::rooms::ring::Ring;
use crate::rooms::table::{JoinState, Mode, RoomTable, Subscription, count};

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
    let seq = match start {
        Start::Live => ring.head(),
        Start::Last(n) => ring.head().saturating_sub(*n as u64).max(ring.oldest()),
        Start::FromSeq(seq) => (*seq).clamp(ring.oldest(), ring.head()),
        Start::After(id) => match ring.resume_point(id) {
            Some(seq) => seq,
            None => {
                let json = Json::new()
                    .str("lastEventId", id)
                    .str(
                        "reason",
                        "events after this id are no longer held; some may be missing",
                    )
                    .num("resumingWith", ring.len() as u64)
                    .finish();
                crate::rooms::frame::push_gap(&mut out, &json);
                ring.oldest()
            }
        },
    };
    (out, seq)
}

/// Streams the room of `sub` to `socket` until the client leaves, falls behind, the room is
/// destroyed, or shutdown. `opening` (from [`opening`]) is written first.
pub async fn stream(
    sub: &Subscription<'_>,
    socket: Rc<Async<TcpStream>>,
    opening: Vec<u8>,
    first: u64,
    mask: u8,
) -> Ended {
    sub.attach(socket.clone(), mask, first);
    let mut writer = &*socket;
    if let Err(e) = writer.write_all(&opening).await {
        return Ended::Error(e);
    }
    count(&sub.stats().bytes_out, opening.len() as u64);
    count(&sub.stats().streams_opened, 1);
    drop(opening);
    let mut beats = sub.heartbeat();
    loop {
        let closing = sub.closing();
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
        if closing {
            // One last non-blocking write, so the shutdown status goes out if it can.
            return Ended::Shutdown;
        }
        let want_write = match wrote {
            Ok(Wrote::CaughtUp) => {
                if let JoinState::Gone(_) = sub.room().state() {
                    return Ended::RoomGone;
                }
                false
            }
            Ok(Wrote::More) => continue,
            Ok(Wrote::Lapped) => {
                count(&sub.stats().dropped_slow, 1);
                reset_on_close(&socket);
                return Ended::Lapped;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Ended::Error(e),
        };
        // While the task sleeps, the room table writes new events itself (parked) or only
        // watches for the ring lapping us (blocked).
        sub.set_mode(if want_write {
            Mode::Blocked
        } else {
            Mode::Parked
        });
        let woke = wait(sub, &socket, want_write, beats).await;
        sub.set_mode(Mode::Wake);
        match woke {
            Woke::Retry | Woke::Shutdown => {}
            Woke::Heartbeat => {
                beats = sub.heartbeat();
                // Only between events; a full socket does not need keeping alive.
                if sub.cursor().offset == 0 && !want_write {
                    match socket.get_ref().write(b":\n") {
                        Ok(n) => count(&sub.stats().bytes_out, n as u64),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(_) => return Ended::ClientGone,
                    }
                }
            }
            Woke::Readable => {
                if client_left(&socket) {
                    return Ended::ClientGone;
                }
            }
        }
    }
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

/// Wakes every subscriber every `every` to send a keep-alive comment (HTML §9.2.7: proxies
/// drop idle connections). One timer for all streams.
pub async fn heartbeat(table: &RoomTable, every: std::time::Duration) {
    let mut timer = async_io::Timer::interval(every);
    loop {
        futures_lite::StreamExt::next(&mut timer).await;
        table.beat();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rooms::fanout::tests::ring_with;

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
    }
}
