//! Writing a room's frames to a subscriber's socket: the subscriber's cursor into the ring, and
//! the one vectored `write` that sends every pending frame without copying any.
//!
//! Two callers use [`write_pending`]: the room table's fan-out, which writes a new event to
//! every idle subscriber of the room as soon as it is published (no task is woken for that),
//! and a subscriber's own task (`http::sse`), which takes over when the socket is full, the
//! subscriber fell behind, or it has to write something else (heartbeat, opening). With
//! `fanout_delay_ms`, the [`delayed`] task decides when the table's fan-out runs.

use std::io::{self, IoSlice, Write};
use std::time::Duration;

use super::ring::Ring;
use super::table::{RoomTable, Stats, count};

/// A non-blocking socket the fan-out can write to directly. `&TcpStream` writes without a
/// mutable borrow, so the socket can be shared by the table and the subscriber's task.
pub trait Outlet {
    fn write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
}

/// With `fanout_delay_ms`: writes published events to subscribers `delay` after the first of
/// them, so the events of that window share one write per subscriber. One task for all rooms.
pub async fn delayed(table: &RoomTable, delay: Duration) {
    table.set_delayed(true);
    loop {
        std::future::poll_fn(|cx| table.poll_dirty(cx.waker())).await;
        async_io::Timer::after(delay).await;
        table.flush_dirty();
    }
}

/// [`Write`] for a shared [`Outlet`].
pub struct Out<'a>(pub &'a dyn Outlet);

impl Write for Out<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_vectored(&[IoSlice::new(buf)])
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.write_vectored(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Frames gathered into one vectored write at most.
pub const BATCH: usize = 32;

/// Where a subscriber is in its room's event sequence.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
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
                &entry.frame()[cursor.offset..]
            } else {
                &entry.frame()[..]
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
            cursor.offset = ring.entry(seq).map_or(0, |e| e.frame().len() - slice.len()) + written;
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::rooms::ring::kind;
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
        crate::rooms::ring::Entry::new(
            crate::rooms::frame::Event::raw(Rc::from(text.as_bytes())),
            id,
            kind::MESSAGE,
        )
    }

    /// A ring holding `frames` as message events with ids `e0`, `e1`, … (shared with
    /// `http::sse`'s tests).
    pub(crate) fn ring_with(frames: &[&str]) -> Ring {
        let mut r = Ring::new(8, 1 << 16);
        for (i, f) in frames.iter().enumerate() {
            r.push(entry(f, format!("e{i}")));
        }
        r
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
