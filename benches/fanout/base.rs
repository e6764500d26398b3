//! The baseline: the least a fan-out server can do. A thread of this process accepts the same
//! subscriber connections (same receiver, same request), answers a minimal `200` head, and then,
//! at the same rate, formats each event once into a frame of the daemon's frame size and writes
//! it to every socket of the event's group with one `write` per socket. No parsing, no rooms, no
//! executor: its CPU time per delivered event is the floor the daemon is compared with.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::poster::{BODY_LEN, body};
use crate::stats::{now_us, thread_cpu_ns};

/// What to send once every subscriber is connected.
pub struct Plan {
    pub first_seq: u64,
    pub count: u64,
    pub rate: f64,
    /// Bytes per frame (the daemon's mean frame size in the same configuration).
    pub frame_len: usize,
    /// Stop sending (leaving the rest unsent) when this much later than the schedule's end:
    /// a loop doing one syscall per event per socket has a ceiling of its own.
    pub max_lag: Duration,
}

pub struct BaseResult {
    /// Events handed to the socket completely, per group, and in all.
    pub per_group: Vec<u64>,
    pub written: u64,
    /// Writes that would have blocked or were short (never expected with a fast reader).
    pub short: u64,
    /// Events of the plan left unsent because the loop fell `max_lag` behind.
    pub unsent: u64,
    pub cpu_ns: u64,
    pub first_us: u64,
    pub last_us: u64,
}

/// Binds a loopback listener and starts the baseline thread, which accepts `total`
/// connections (group = the number at the end of the request path), then waits for a [`Plan`].
/// The result comes back on the returned receiver as soon as the last event is written; the
/// sockets stay open until the [`Plan`] sender is dropped (so the reader can drain them).
pub fn spawn(total: usize, groups: usize) -> Baseline {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind baseline listener");
    let addr = listener.local_addr().unwrap();
    let (plan, plans) = channel();
    let (done, result) = channel();
    let thread = std::thread::Builder::new()
        .name("fanout-base".into())
        .spawn(move || run(listener, total, groups, plans, done))
        .expect("spawn baseline");
    Baseline {
        addr,
        plan,
        result,
        thread,
    }
}

pub struct Baseline {
    pub addr: SocketAddr,
    pub plan: Sender<Plan>,
    pub result: Receiver<BaseResult>,
    pub thread: JoinHandle<()>,
}

const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n";

fn run(
    listener: TcpListener,
    total: usize,
    groups: usize,
    plans: Receiver<Plan>,
    done: Sender<BaseResult>,
) {
    let mut sockets: Vec<Vec<TcpStream>> = (0..groups).map(|_| Vec::new()).collect();
    let mut req = [0u8; 1024];
    for _ in 0..total {
        let (s, _) = listener.accept().expect("baseline accept");
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        let mut got = Vec::new();
        while find(&got, b"\r\n\r\n").is_none() {
            let n = (&s).read(&mut req).expect("baseline: read request");
            assert!(n > 0, "baseline: client closed before its request");
            got.extend_from_slice(&req[..n]);
        }
        let line = String::from_utf8_lossy(&got);
        let path = line.split_whitespace().nth(1).unwrap_or("");
        let digits: String = path
            .chars()
            .rev()
            .take_while(char::is_ascii_digit)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let group = digits.parse::<usize>().unwrap_or(0).min(groups - 1);
        // FANOUT_BASE_NAGLE=1 leaves Nagle's algorithm on, as the daemon does (experiment).
        s.set_nodelay(std::env::var_os("FANOUT_BASE_NAGLE").is_none())
            .ok();
        (&s).write_all(HEAD).expect("baseline: write head");
        s.set_nonblocking(true).expect("nonblocking");
        sockets[group].push(s);
    }
    let Ok(plan) = plans.recv() else {
        return;
    };
    let mut per_group = vec![0u64; groups];
    let (mut written, mut short, mut unsent) = (0, 0, 0);
    let interval = 1.0 / plan.rate;
    let schedule_end = Duration::from_secs_f64(interval * plan.count as f64);
    let mut frame: Vec<u8> = Vec::with_capacity(plan.frame_len + 64);
    let (mut first_us, mut last_us) = (0, 0);
    let cpu0 = thread_cpu_ns();
    let start = Instant::now();
    for i in 0..plan.count {
        let due = Duration::from_secs_f64(interval * i as f64);
        let elapsed = start.elapsed();
        if due > elapsed {
            std::thread::sleep(due - elapsed);
        } else if elapsed > schedule_end + plan.max_lag {
            unsent = plan.count - i;
            break;
        }
        let seq = plan.first_seq + i;
        let t = now_us();
        make_frame(&mut frame, seq, t, plan.frame_len);
        let group = (i % groups as u64) as usize;
        for s in &sockets[group] {
            match (&*s).write(&frame) {
                Ok(n) if n == frame.len() => {
                    written += 1;
                    per_group[group] += 1;
                }
                Ok(_) => short += 1,
                Err(e) if e.kind() == ErrorKind::WouldBlock => short += 1,
                Err(_) => short += 1,
            }
        }
        if i == 0 {
            first_us = t;
        }
        last_us = t;
    }
    let cpu_ns = thread_cpu_ns() - cpu0;
    let _ = done.send(BaseResult {
        per_group,
        written,
        short,
        unsent,
        cpu_ns,
        first_us,
        last_us,
    });
    // Keep the sockets open until the controller is done with the receiver.
    let _ = plans.recv();
}

/// `data: {"nick":"fanout","body":"s=… t=… xxx…"}\n\n`, the body padded so the frame is
/// `len` bytes (the daemon's frame for the same body, whatever extra fields it carries).
pub fn make_frame(out: &mut Vec<u8>, seq: u64, t_us: u64, len: usize) {
    const PRE: &[u8] = b"data: {\"nick\":\"fanout\",\"body\":\"";
    const POST: &[u8] = b"\"}\n\n";
    let body_len = len
        .saturating_sub(PRE.len() + POST.len())
        .max(BODY_LEN.min(25));
    out.clear();
    out.extend_from_slice(PRE);
    out.extend_from_slice(body(seq, t_us, body_len).as_bytes());
    out.extend_from_slice(POST);
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
