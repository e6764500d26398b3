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

use crate::rooms::ring::Ring;
use crate::rooms::table::Subscription;

/// Frames gathered into one vectored write at most.
pub const BATCH: usize = 32;

/// Why a stream ended.
#[derive(Debug)]
pub enum Ended {
    ClientGone,
    /// The subscriber fell behind the ring.
    Lapped,
    Shutdown,
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

/// Writes as many pending frames as the socket takes, in one vectored write.
pub fn write_pending<W: Write>(ring: &Ring, cursor: &mut Cursor, mut out: W) -> io::Result<Wrote> {
    if cursor.seq < ring.oldest() {
        return Ok(Wrote::Lapped);
    }
    let mut slices: heapless::Vec<IoSlice<'_>, BATCH> = heapless::Vec::new();
    let mut seq = cursor.seq;
    while let Some(frame) = ring.get(seq) {
        let part = if seq == cursor.seq {
            &frame[cursor.offset..]
        } else {
            &frame[..]
        };
        if slices.push(IoSlice::new(part)).is_err() {
            break;
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
    while written > 0 {
        let frame = ring
            .get(cursor.seq)
            .expect("written bytes belong to held frames");
        let rest = frame.len() - cursor.offset;
        if written >= rest {
            written -= rest;
            cursor.seq += 1;
            cursor.offset = 0;
        } else {
            cursor.offset += written;
            written = 0;
        }
    }
    Ok(if cursor.seq == ring.head() {
        Wrote::CaughtUp
    } else {
        Wrote::More
    })
}

enum Woke {
    Retry,
    Readable,
    Shutdown,
}

/// Streams the room of `sub` to `socket` until the client leaves, falls behind or shutdown.
/// `head` (the response head) is written first.
pub async fn stream(sub: &Subscription<'_>, socket: &Async<TcpStream>, head: &[u8]) -> Ended {
    let mut writer = socket;
    if let Err(e) = writer.write_all(head).await {
        return Ended::Error(e);
    }
    let mut cursor = Cursor {
        seq: sub.room().ring().head(),
        offset: 0,
    };
    loop {
        if sub.closing() {
            return Ended::Shutdown;
        }
        let wrote = write_pending(&sub.room().ring(), &mut cursor, socket.get_ref());
        let want_write = match wrote {
            Ok(Wrote::CaughtUp) => false,
            Ok(Wrote::More) => continue,
            Ok(Wrote::Lapped) => {
                sub.count_dropped_slow();
                return Ended::Lapped;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Ended::Error(e),
        };
        match wait(sub, socket, cursor.seq, want_write).await {
            Woke::Retry => {}
            Woke::Shutdown => return Ended::Shutdown,
            Woke::Readable => {
                // A client never sends anything after its request; read to notice it leaving.
                let mut scratch = [0u8; 64];
                match socket.get_ref().read(&mut scratch) {
                    Ok(0) => return Ended::ClientGone,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return Ended::ClientGone,
                }
            }
        }
    }
}

/// Sleeps until there is something to do: new events (or, when the socket was full, the
/// socket writable again or our next event evicted), the client closing, or shutdown.
async fn wait(
    sub: &Subscription<'_>,
    socket: &Async<TcpStream>,
    seq: u64,
    want_write: bool,
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
        if want_write && socket.poll_writable(cx).is_ready() {
            return Poll::Ready(Woke::Retry);
        }
        if socket.poll_readable(cx).is_ready() {
            return Poll::Ready(Woke::Readable);
        }
        Poll::Pending
    })
    .await
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

    fn ring_with(frames: &[&str]) -> Ring {
        let mut r = Ring::new(8, 1 << 16);
        for f in frames {
            r.push(Rc::from(f.as_bytes()));
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
            write_pending(&ring, &mut c, &mut sink).unwrap(),
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
        while write_pending(&ring, &mut c, &mut sink).unwrap() == Wrote::More {
            rounds += 1;
        }
        assert_eq!(sink.data, b"data: one\n\ndata: two\n\n");
        assert_eq!(rounds, 4);
        sink.room = None;
        assert_eq!(
            write_pending(&ring, &mut c, &mut sink).unwrap(),
            Wrote::CaughtUp
        );
    }

    #[test]
    fn a_reader_behind_the_ring_is_lapped() {
        let mut ring = Ring::new(2, 1 << 16);
        let mut c = Cursor { seq: 0, offset: 0 };
        for i in 0..3 {
            ring.push(Rc::from(format!("data: {i}\n\n").as_bytes()));
        }
        let mut sink = Sink {
            data: vec![],
            room: None,
            calls: 0,
        };
        assert_eq!(
            write_pending(&ring, &mut c, &mut sink).unwrap(),
            Wrote::Lapped
        );
        assert_eq!(sink.calls, 0);
    }
}
