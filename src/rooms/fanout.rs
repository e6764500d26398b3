//! Writing a room's frames to a subscriber's socket: the subscriber's cursor into the ring, and
//! the one vectored `write` that sends every pending frame without copying any.
//!
//! Two callers use [`write_pending`]: the room table's fan-out, which writes a new event to
//! every idle subscriber of the room as soon as it is published (no task is woken for that),
//! and a subscriber's own task (`http::sse`), which takes over when the socket is full, the
//! subscriber fell behind, or it has to write something else (heartbeat, opening). When the
//! table's fan-out runs is up to the table and the tasks of [`super::flusher`]; this file knows
//! nothing of the table.

use std::io::{self, IoSlice, Write};

use super::ring::Ring;
use super::stats::Stats;

/// A non-blocking socket the fan-out can write to directly. `&TcpStream` writes without a
/// mutable borrow, so the socket can be shared by the table and the subscriber's task.
pub trait Outlet {
    fn write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
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

impl Cursor {
    /// The oldest event this cursor still needs the ring to hold. A frame it is mid-way
    /// through is pinned (see [`write_pending`]), so then only the one after it.
    pub fn needs(&self) -> u64 {
        self.seq + u64::from(self.offset > 0)
    }
}

/// The frame a subscriber is mid-way through writing, kept alive by the subscriber itself so
/// that the ring evicting it does not lap a reader that is keeping up (an event larger than
/// the ring's byte budget is evicted as soon as the next one arrives). At most one frame per
/// room outlives the ring this way: a pinned frame is only needed while the ring still holds
/// the one after it.
pub type Pin = Option<std::rc::Rc<[u8]>>;

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
/// events and bytes in `stats` when given. `pin` holds the frame the cursor is mid-way through
/// (kept by the caller with the cursor; see [`Pin`]).
pub fn write_pending<W: Write>(
    ring: &Ring,
    cursor: &mut Cursor,
    pin: &mut Pin,
    mask: u8,
    mut out: W,
    stats: Option<&Stats>,
) -> io::Result<Wrote> {
    if cursor.needs() < ring.oldest() {
        return Ok(Wrote::Lapped);
    }
    let mut slices: heapless::Vec<IoSlice<'_>, BATCH> = heapless::Vec::new();
    // Each slice's event and the length of its whole frame.
    let mut seqs: heapless::Vec<(u64, usize), BATCH> = heapless::Vec::new();
    let mut seq = cursor.seq;
    if seq < ring.oldest() {
        // The frame being written was evicted: finish it from the pin.
        let Some(frame) = pin.as_ref().filter(|f| cursor.offset < f.len()) else {
            return Ok(Wrote::Lapped);
        };
        let _ = slices.push(IoSlice::new(&frame[cursor.offset..]));
        let _ = seqs.push((seq, frame.len()));
        seq += 1;
    }
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
            let _ = seqs.push((seq, entry.frame().len()));
        } else if slices.is_empty() {
            // Nothing gathered yet: skipping moves the cursor itself.
            cursor.seq = seq + 1;
        }
        seq += 1;
    }
    if slices.is_empty() {
        return Ok(Wrote::CaughtUp);
    }
    let written = out.write_vectored(&slices)?;
    if written == 0 {
        return Err(io::ErrorKind::WriteZero.into());
    }
    let before = *cursor;
    let finished = advance(cursor, &slices, &seqs, written);
    drop(slices);
    if cursor.offset == 0 {
        *pin = None;
    } else if cursor.seq != before.seq || before.offset == 0 || pin.is_none() {
        // Mid-way through a frame the ring holds (a pinned one is never left mid-way for
        // another): pin it.
        *pin = ring.entry(cursor.seq).map(|e| e.frame().clone());
    }
    if let Some(stats) = stats {
        stats.bytes_out.add(written as u64);
        stats.events_out.add(finished);
    }
    Ok(if cursor.seq >= ring.head() && cursor.offset == 0 {
        Wrote::CaughtUp
    } else {
        Wrote::More
    })
}

/// Moves `cursor` past the `written` bytes of a vectored write of `slices` (each slice's event
/// and the length of its whole frame in `seqs`); the number of frames finished. A step of
/// [`write_pending`], on the hot path: it only reads the caller's stack arrays.
#[inline]
fn advance(
    cursor: &mut Cursor,
    slices: &[IoSlice<'_>],
    seqs: &[(u64, usize)],
    mut written: usize,
) -> u64 {
    let mut finished = 0u64;
    for (slice, &(seq, frame_len)) in slices.iter().zip(seqs.iter()) {
        if written >= slice.len() {
            written -= slice.len();
            cursor.seq = seq + 1;
            cursor.offset = 0;
            finished += 1;
        } else {
            cursor.seq = seq;
            cursor.offset = frame_len - slice.len() + written;
            break;
        }
    }
    finished
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
            write_pending(&ring, &mut c, &mut None, kind::DEFAULT, &mut sink, None).unwrap(),
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
        while write_pending(&ring, &mut c, &mut None, kind::DEFAULT, &mut sink, None).unwrap()
            == Wrote::More
        {
            rounds += 1;
        }
        assert_eq!(sink.data, b"data: one\n\ndata: two\n\n");
        assert_eq!(rounds, 4);
        sink.room = None;
        assert_eq!(
            write_pending(&ring, &mut c, &mut None, kind::DEFAULT, &mut sink, None).unwrap(),
            Wrote::CaughtUp
        );
    }

    #[test]
    fn a_frame_being_written_is_pinned_so_eviction_does_not_lap_its_reader() {
        // A byte budget smaller than one frame: each push evicts the one before.
        let big = |c: char| format!("data: {}\n\n", c.to_string().repeat(3000));
        let mut ring = Ring::new(8, 1024);
        ring.push(entry(&big('a'), "e0".into()));
        let mut sink = Sink {
            data: vec![],
            room: Some(1000),
            calls: 0,
        };
        let (mut c, mut pin) = (Cursor::default(), None);
        let w = |ring: &Ring, c: &mut Cursor, pin: &mut Pin, sink: &mut Sink| {
            write_pending(ring, c, pin, kind::DEFAULT, sink, None).unwrap()
        };
        assert_eq!(w(&ring, &mut c, &mut pin, &mut sink), Wrote::More);
        assert!(pin.is_some() && c.offset == 1000);
        ring.push(entry(&big('b'), "e1".into()));
        assert_eq!(ring.oldest(), 1, "the frame being written was evicted");
        let mut rounds = 0;
        while w(&ring, &mut c, &mut pin, &mut sink) == Wrote::More {
            rounds += 1;
            assert!(rounds < 20);
        }
        assert_eq!(sink.data, format!("{}{}", big('a'), big('b')).as_bytes());
        assert!(pin.is_none(), "nothing pinned between frames");

        // Mid-way through e2, both it and the one after it evicted: lapped.
        ring.push(entry(&big('c'), "e2".into()));
        assert_eq!(w(&ring, &mut c, &mut pin, &mut sink), Wrote::More);
        ring.push(entry(&big('d'), "e3".into()));
        ring.push(entry(&big('e'), "e4".into()));
        assert_eq!(c.needs(), 3);
        assert_eq!(w(&ring, &mut c, &mut pin, &mut sink), Wrote::Lapped);
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
            write_pending(&ring, &mut c, &mut None, kind::DEFAULT, &mut sink, None).unwrap(),
            Wrote::Lapped
        );
        assert_eq!(sink.calls, 0);
    }
}
