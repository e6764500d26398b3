//! The SSE writer: one subscriber's stream, written straight from the room ring's shared frames.
//!
//! A subscriber is a cursor (event sequence + byte offset into that event's frame). Each write
//! gathers the pending frames into one vectored `write` on the non-blocking socket, so a reader
//! that is behind gets many events per syscall and no frame is ever copied. When the socket is
//! full the writer sleeps until it is writable again, or until the ring evicts the event it
//! needs next: then it has fallen behind and is dropped, so it never holds memory or others up.

use std::io::{self, IoSlice, Read, Write};
use std::net::TcpStream;
use std::task::Poll;

use async_io::Async;
use futures_lite::AsyncWriteExt;

use super::routes::Start;
use crate::rooms::frame::Json;
use crate::rooms::ring::Ring;
#[cfg(test)]
use crate::rooms::ring::kind;
use crate::rooms::table::{JoinState, RoomTable, Stats, Subscription, count};

/// Frames gathered into one vectored write at most.
pub const BATCH: usize = 32;

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

/// Where a subscriber is in its room's event sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// Next event to send.
    pub seq: u64,
    /// Bytes of that event's frame already sent.
    pub offset: usize,
}

/// Outcome of one non-blocking write attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Wrote {
    /// Everything in the ring has been sent.
    CaughtUp,
    /// Some was sent; more is pending.
    More,
    /// The next event was evicted before it could be sent.
    Lapped,
}

/// Writes as many pending frames as the socket takes, in one vectored write. Events whose
/// kind is not in `mask`, or that were retracted before being started, are skipped. Counts
/// events and bytes in `stats` when given.
pub fn write_pending<W: Write>(
    ring: &Ring,
    cursor: &mut Cursor,
    mask: u8,
    mut out: W,
    stats: Option<&Stats>,
) -> io::Result<Wrote> {
    if cursor.seq < ring.oldest() {
        return Ok(Wrote::Lapped);
    }
    let mut slices: heapless::Vec<IoSlice<'_>, BATCH> = heapless::Vec::new();
    let mut seqs: heapless::Vec<u64, BATCH> = heapless::Vec::new();
    let mut seq = cursor.seq;
    while let Some(entry) = ring.entry(seq) {
        // A frame already started is finished whatever happened to it since.
        let started = seq == cursor.seq && cursor.offset > 0;
        if started || entry.wanted(mask) {
            let part = if started {
                &entry.frame[cursor.offset..]
            } else {
                &entry.frame[..]
            };
            if slices.push(IoSlice::new(part)).is_err() {
                break;
            }
            let _ = seqs.push(seq);
        } else if slices.is_empty() {
            // Nothing gathered yet: skipping moves the cursor itself.
            cursor.seq = seq + 1;
        }
        seq += 1;
    }
    if slices.is_empty() {
        return Ok(Wrote::CaughtUp);
    }
    let mut written = out.write_vectored(&slices)?;
    if written == 0 {
        return Err(io::ErrorKind::WriteZero.into());
    }
    let total = written as u64;
    let mut finished = 0u64;
    for (slice, &seq) in slices.iter().zip(seqs.iter()) {
        if written >= slice.len() {
            written -= slice.len();
            cursor.seq = seq + 1;
            cursor.offset = 0;
            finished += 1;
        } else {
            cursor.seq = seq;
            cursor.offset = ring.entry(seq).map_or(0, |e| e.frame.len() - slice.len()) + written;
            break;
        }
    }
    if let Some(stats) = stats {
        count(&stats.bytes_out, total);
        count(&stats.events_out, finished);
    }
    Ok(if cursor.seq >= ring.head() && cursor.offset == 0 {
        Wrote::CaughtUp
    } else {
        Wrote::More
    })
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
                out.extend_from_slice(b"event: gap\ndata: ");
                out.extend_from_slice(&json);
                out.extend_from_slice(b"\n\n");
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
    socket: &Async<TcpStream>,
    opening: Vec<u8>,
    first: u64,
    mask: u8,
) -> Ended {
    let mut writer = socket;
    if let Err(e) = writer.write_all(&opening).await {
        return Ended::Error(e);
    }
    count(&sub.stats().bytes_out, opening.len() as u64);
    count(&sub.stats().streams_opened, 1);
    drop(opening);
    let mut cursor = Cursor {
        seq: first,
        offset: 0,
    };
    let mut beats = sub.heartbeat();
    loop {
        let closing = sub.closing();
        let wrote = write_pending(
            &sub.room().ring(),
            &mut cursor,
            mask,
            socket.get_ref(),
            Some(sub.stats()),
        );
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
                return Ended::Lapped;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Ended::Error(e),
        };
        match wait(sub, socket, cursor.seq, want_write, beats).await {
            Woke::Retry | Woke::Shutdown => {}
            Woke::Heartbeat => {
                beats = sub.heartbeat();
                // Only between events; a full socket does not need keeping alive.
                if cursor.offset == 0 && !want_write {
                    match socket.get_ref().write(b":\n") {
                        Ok(n) => count(&sub.stats().bytes_out, n as u64),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(_) => return Ended::ClientGone,
                    }
                }
            }
            Woke::Readable => {
                if client_left(socket) {
                    return Ended::ClientGone;
                }
            }
        }
    }
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

/// Sleeps until there is something to do: new events (or, when the socket was full, the
/// socket writable again or our next event evicted), a heartbeat, the client closing, or
/// shutdown.
async fn wait(
    sub: &Subscription<'_>,
    socket: &Async<TcpStream>,
    seq: u64,
    want_write: bool,
    beats: u64,
) -> Woke {
    std::future::poll_fn(|cx| {
        if sub.closing() {
            return Poll::Ready(Woke::Shutdown);
        }
        sub.register(cx.waker());
        {
            let ring = sub.room().ring();
            if seq < ring.oldest() || (!want_write && ring.head() > seq) {
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
    use std::rc::Rc;

    /// A socket that accepts at most `room` bytes per call, `None` = would block.
    struct Sink {
        data: Vec<u8>,
        room: Option<usize>,
        calls: usize,
    }

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.calls += 1;
            let Some(room) = self.room else {
                return Err(io::ErrorKind::WouldBlock.into());
            };
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(room - n);
                self.data.extend_from_slice(&b[..take]);
                n += take;
            }
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn entry(text: &str, id: String) -> crate::rooms::ring::Entry {
        crate::rooms::ring::Entry::new(Rc::from(text.as_bytes()), id, kind::MESSAGE)
    }

    fn ring_with(frames: &[&str]) -> Ring {
        let mut r = Ring::new(8, 1 << 16);
        for (i, f) in frames.iter().enumerate() {
            r.push(entry(f, format!("e{i}")));
        }
        r
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
    }

    #[test]
    fn pending_frames_go_out_in_one_vectored_write() {
        let ring = ring_with(&["data: 1\n\n", "data: 2\n\n", "data: 3\n\n"]);
        let mut sink = Sink {
            data: vec![],
            room: Some(1 << 20),
            calls: 0,
        };
        let mut c = Cursor { seq: 0, offset: 0 };
        assert_eq!(
            write_pending(&ring, &mut c, kind::DEFAULT, &mut sink, None).unwrap(),
            Wrote::CaughtUp
        );
        assert_eq!(sink.calls, 1);
        assert_eq!(sink.data, b"data: 1\n\ndata: 2\n\ndata: 3\n\n");
        assert_eq!(c, Cursor { seq: 3, offset: 0 });
    }

    #[test]
    fn partial_writes_resume_mid_frame() {
        let ring = ring_with(&["data: one\n\n", "data: two\n\n"]);
        let mut sink = Sink {
            data: vec![],
            room: Some(5),
            calls: 0,
        };
        let mut c = Cursor { seq: 0, offset: 0 };
        let mut rounds = 0;
        while write_pending(&ring, &mut c, kind::DEFAULT, &mut sink, None).unwrap() == Wrote::More {
            rounds += 1;
        }
        assert_eq!(sink.data, b"data: one\n\ndata: two\n\n");
        assert_eq!(rounds, 4);
        sink.room = None;
        assert_eq!(
            write_pending(&ring, &mut c, kind::DEFAULT, &mut sink, None).unwrap(),
            Wrote::CaughtUp
        );
    }

    #[test]
    fn a_reader_behind_the_ring_is_lapped() {
        let mut ring = Ring::new(2, 1 << 16);
        let mut c = Cursor { seq: 0, offset: 0 };
        for i in 0..3 {
            ring.push(entry(&format!("data: {i}\n\n"), format!("e{i}")));
        }
        let mut sink = Sink {
            data: vec![],
            room: None,
            calls: 0,
        };
        assert_eq!(
            write_pending(&ring, &mut c, kind::DEFAULT, &mut sink, None).unwrap(),
            Wrote::Lapped
        );
        assert_eq!(sink.calls, 0);
    }
}
