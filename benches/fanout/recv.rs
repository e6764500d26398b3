//! The subscriber side: N event-stream connections on ONE thread, driven by epoll (the
//! `polling` crate, level-triggered). Each connection sends its `GET`, checks the `200` head,
//! then every `data:` line is parsed for the sequence number and send time the body carries;
//! receive time − send time goes into one histogram. The thread measures its own CPU time so a
//! reader can tell it was not the bottleneck.
//!
//! Stalled subscribers read their response head and then never read again.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use polling::{Event, Events, PollMode, Poller};

use crate::poster::parse_stamp;
use crate::stats::{Hist, now_us, thread_sched};

/// Connections whose head has not arrived yet, at most (keeps the listen backlog short).
const OUTSTANDING: usize = 128;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// Subscribers of one stream path.
#[derive(Clone)]
pub struct Group {
    pub path: String,
    pub live: usize,
    pub stalled: usize,
}

/// Shared with the controlling thread.
#[derive(Default)]
pub struct Ctl {
    /// All connections have their `200` head (or failed).
    pub ready: AtomicBool,
    /// Set by the controller when the measured window starts (CPU snapshot).
    pub measure: AtomicBool,
    pub stop: AtomicBool,
    /// Measured events received so far (live subscribers).
    pub delivered: AtomicU64,
    /// Live subscribers whose stream ended.
    pub closed: AtomicU64,
}

pub struct RecvResult {
    pub hist: Hist,
    /// Measured events (seq >= first_seq) received by live subscribers.
    pub delivered: u64,
    pub head_failures: Vec<String>,
    pub live_closed: usize,
    /// Stalled subscribers the server had closed (seen by draining them at the end).
    pub stalled_closed: usize,
    /// Events that arrived out of order or after a gap.
    pub gaps: u64,
    /// Bytes and events after the heads, all events (for the mean frame size).
    pub data_bytes: u64,
    pub all_events: u64,
    pub reads: u64,
    pub last_recv_us: u64,
    /// This thread's CPU and wall time over the measured window.
    pub cpu_ns: u64,
    /// Time this thread was runnable but waiting for a CPU (host contention).
    pub wait_ns: u64,
    pub wall_ns: u64,
}

struct Conn {
    stream: TcpStream,
    stalled: bool,
    /// Bytes of the response head while it is incomplete.
    head: Option<Vec<u8>>,
    partial: Vec<u8>,
    next_seq: u64,
    closed: bool,
}

struct Tally {
    hist: Hist,
    first_seq: u64,
    stride: u64,
    delivered: u64,
    gaps: u64,
    data_bytes: u64,
    all_events: u64,
    last_recv_us: u64,
}

impl Tally {
    fn line(&mut self, conn: &mut Conn, line: &[u8], now: u64) {
        let Some(json) = line.strip_prefix(b"data: ") else {
            return;
        };
        let Some(at) = find(json, b"\"body\":\"") else {
            return;
        };
        let Some((seq, t)) = parse_stamp(&json[at + 8..]) else {
            return;
        };
        self.all_events += 1;
        if seq != conn.next_seq && conn.next_seq != 0 {
            self.gaps += 1;
        }
        // Message i goes to group i % groups: a group's sequence numbers step by `stride`.
        conn.next_seq = seq + self.stride;
        if seq < self.first_seq {
            return;
        }
        self.delivered += 1;
        self.hist.record(now.saturating_sub(t));
        self.last_recv_us = now;
    }

    /// Splits `data` into lines, completing the connection's partial line first.
    fn feed(&mut self, conn: &mut Conn, mut data: &[u8], now: u64) {
        self.data_bytes += data.len() as u64;
        if !conn.partial.is_empty() {
            match data.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    let mut line = std::mem::take(&mut conn.partial);
                    line.extend_from_slice(&data[..i]);
                    self.line(conn, &line, now);
                    line.clear();
                    conn.partial = line;
                    data = &data[i + 1..];
                }
                None => {
                    conn.partial.extend_from_slice(data);
                    return;
                }
            }
        }
        while let Some(i) = data.iter().position(|&b| b == b'\n') {
            self.line(conn, &data[..i], now);
            data = &data[i + 1..];
        }
        conn.partial.extend_from_slice(data);
    }
}

/// Starts the receiver thread; it connects every subscriber of `groups` to `addr`, sets
/// `ctl.ready`, and receives until `ctl.stop`. Events with a sequence number below `first_seq`
/// (warm-up) are parsed but not counted.
pub fn spawn(
    addr: SocketAddr,
    groups: Vec<Group>,
    first_seq: u64,
    ctl: Arc<Ctl>,
) -> JoinHandle<RecvResult> {
    std::thread::Builder::new()
        .name("fanout-recv".into())
        .spawn(move || run(addr, groups, first_seq, &ctl))
        .expect("spawn receiver")
}

fn run(addr: SocketAddr, groups: Vec<Group>, first_seq: u64, ctl: &Ctl) -> RecvResult {
    let poller = Poller::new().expect("epoll");
    let mut events = Events::with_capacity(NonZeroUsize::new(4096).unwrap());
    let plan: Vec<(usize, bool)> = groups
        .iter()
        .enumerate()
        .flat_map(|(g, grp)| {
            std::iter::repeat_n((g, false), grp.live)
                .chain(std::iter::repeat_n((g, true), grp.stalled))
        })
        .collect();
    let mut conns: Vec<Conn> = Vec::with_capacity(plan.len());
    let mut tally = Tally {
        hist: Hist::new(),
        first_seq,
        stride: groups.len() as u64,
        delivered: 0,
        gaps: 0,
        data_bytes: 0,
        all_events: 0,
        last_recv_us: 0,
    };
    let mut buf = vec![0u8; 256 * 1024];
    let mut head_failures = Vec::new();
    let mut reads = 0u64;

    // Phase 1: connect, OUTSTANDING at a time, until every head is in.
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    let mut outstanding = 0;
    let mut headed = 0;
    while headed < plan.len() {
        while conns.len() < plan.len() && outstanding < OUTSTANDING {
            let (group, stalled) = plan[conns.len()];
            let stream = TcpStream::connect(addr)
                .unwrap_or_else(|e| panic!("subscriber {}: connect {addr}: {e}", conns.len()));
            stream.set_nodelay(true).ok();
            let req = format!(
                "GET {} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n",
                groups[group].path
            );
            (&stream).write_all(req.as_bytes()).expect("write request");
            stream.set_nonblocking(true).expect("nonblocking");
            // SAFETY: the stream stays in `conns` (and is deleted from the poller before
            // it is dropped, or lives until the poller is dropped at the end of this function).
            unsafe {
                poller
                    .add_with_mode(&stream, Event::readable(conns.len()), PollMode::Level)
                    .expect("epoll add");
            }
            conns.push(Conn {
                stream,
                stalled,
                head: Some(Vec::new()),
                partial: Vec::new(),
                next_seq: 0,
                closed: false,
            });
            outstanding += 1;
        }
        events.clear();
        poller
            .wait(&mut events, Some(Duration::from_millis(100)))
            .expect("epoll wait");
        for ev in events.iter() {
            let conn = &mut conns[ev.key];
            let Some(head) = conn.head.as_mut() else {
                continue;
            };
            let n = match (&conn.stream).read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
                Err(_) => 0,
            };
            if n == 0 {
                head_failures.push(format!(
                    "closed before a head: {}",
                    String::from_utf8_lossy(head)
                ));
                conn.head = None;
                conn.closed = true;
                poller.delete(&conn.stream).ok();
                outstanding -= 1;
                headed += 1;
                continue;
            }
            head.extend_from_slice(&buf[..n]);
            if let Some(end) = find(head, b"\r\n\r\n") {
                let head = conn.head.take().unwrap();
                outstanding -= 1;
                headed += 1;
                if !head.starts_with(b"HTTP/1.1 200") {
                    head_failures.push(String::from_utf8_lossy(&head[..end]).into_owned());
                    conn.closed = true;
                    poller.delete(&conn.stream).ok();
                    continue;
                }
                if conn.stalled {
                    poller.delete(&conn.stream).ok();
                    continue;
                }
                let rest = head[end + 4..].to_vec();
                tally.feed(conn, &rest, now_us());
            }
        }
        assert!(
            Instant::now() < deadline,
            "subscribers: only {headed} of {} heads within {CONNECT_TIMEOUT:?}",
            plan.len()
        );
    }
    ctl.ready.store(true, Ordering::SeqCst);

    // Phase 2: receive until told to stop.
    let mut sched0 = thread_sched();
    let mut wall0 = Instant::now();
    let mut measuring = false;
    let mut closed = 0u64;
    while !ctl.stop.load(Ordering::Relaxed) {
        if !measuring && ctl.measure.load(Ordering::Relaxed) {
            measuring = true;
            sched0 = thread_sched();
            wall0 = Instant::now();
        }
        events.clear();
        poller
            .wait(&mut events, Some(Duration::from_millis(10)))
            .expect("epoll wait");
        for ev in events.iter() {
            let conn = &mut conns[ev.key];
            if conn.closed {
                continue;
            }
            let n = match (&conn.stream).read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => 0,
            };
            reads += 1;
            if n == 0 {
                conn.closed = true;
                poller.delete(&conn.stream).ok();
                closed += 1;
                ctl.closed.store(closed, Ordering::Relaxed);
                continue;
            }
            tally.feed(conn, &buf[..n], now_us());
        }
        ctl.delivered.store(tally.delivered, Ordering::Relaxed);
    }
    let sched1 = thread_sched();
    let cpu_ns = sched1.0.saturating_sub(sched0.0);
    let wait_ns = sched1.1.saturating_sub(sched0.1);
    let wall_ns = wall0.elapsed().as_nanos() as u64;

    // Stalled subscribers: drain what the kernel holds; EOF means the server dropped them.
    let mut stalled_closed = 0;
    for conn in conns.iter_mut().filter(|c| c.stalled && !c.closed) {
        loop {
            match (&conn.stream).read(&mut buf) {
                Ok(0) => {
                    stalled_closed += 1;
                    break;
                }
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    stalled_closed += 1;
                    break;
                }
            }
        }
    }

    for conn in conns.iter().filter(|c| !c.closed && !c.stalled) {
        poller.delete(&conn.stream).ok();
    }

    let live_closed = conns.iter().filter(|c| !c.stalled && c.closed).count();
    RecvResult {
        delivered: tally.delivered,
        hist: tally.hist,
        head_failures,
        live_closed,
        stalled_closed,
        gaps: tally.gaps,
        data_bytes: tally.data_bytes,
        all_events: tally.all_events,
        reads,
        last_recv_us: tally.last_recv_us,
        cpu_ns,
        wait_ns,
        wall_ns,
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
