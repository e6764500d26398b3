//! Admission under storms, against a real Prosody and the default configuration: a reconnect
//! storm of complete requests is served in full; a slowloris (from one address, or spread over
//! many) delays nobody else's request by more than a second; the HTTP/1.1 framing MUSTs answer
//! `400` on the wire.
//!
//! Clients come from different loopback addresses (all of 127.0.0.0/8 is local on Linux) by
//! binding the source address before `connect`, which std cannot do: hence the libc calls.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::FromRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::daemon::Daemon;
use common::prosody::Prosody;
use common::sse::{http_get, http_raw};

const T: Duration = Duration::from_secs(10);

/// Raises this process's open-file soft limit to at least `want` (the daemon, started later,
/// inherits it).
fn raise_nofile(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a pointer to a live local rlimit.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
    }
    assert!(
        lim.rlim_cur >= want,
        "open-file limit {} < {want}: raise the hard limit (ulimit -Hn)",
        lim.rlim_cur
    );
}

/// A TCP connection to `to` from `from` (any port).
fn connect_from(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
    try_connect_from(from, to).unwrap_or_else(|e| panic!("connect {from} -> {to}: {e}"))
}

fn try_connect_from(from: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let SocketAddr::V4(to) = to else {
        panic!("IPv4 only: {to}")
    };
    let addr = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let (local, remote) = (addr(from, 0), addr(*to.ip(), to.port()));
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket syscalls on a descriptor owned here until handed to `TcpStream` (or
    // closed on error); the address pointers refer to live locals of the stated length.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let ok = libc::bind(fd, (&raw const local).cast(), len) == 0
            && libc::connect(fd, (&raw const remote).cast(), len) == 0;
        if !ok {
            let e = std::io::Error::last_os_error();
            libc::close(fd);
            return Err(e);
        }
        Ok(TcpStream::from_raw_fd(fd))
    }
}

/// The status code of the response head `s` receives within `timeout` (`None`: closed or timed
/// out without one).
fn status_within(s: &mut TcpStream, timeout: Duration) -> Option<u16> {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let left = deadline.checked_duration_since(Instant::now())?;
        s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .ok();
        match s.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    let text = String::from_utf8_lossy(&got);
    text.split(' ').nth(1)?.parse().ok()
}

fn setup() -> (Prosody, Daemon) {
    setup_with("")
}

fn setup_with(extra: &str) -> (Prosody, Daemon) {
    raise_nofile(4096);
    let prosody = Prosody::start();
    prosody.create_rooms(&["lobby"]);
    let daemon = Daemon::start(&prosody, &["lobby"], extra);
    (prosody, daemon)
}

fn request(room: &str) -> String {
    format!("GET /eventsource/{room} HTTP/1.1\r\nHost: pi.lan\r\nAccept: text/event-stream\r\n\r\n")
}

/// The value of one `rejected_total` sample in `/metrics`.
fn rejected(daemon: &Daemon, reason: &str) -> u64 {
    let (status, _, body) = http_get(daemon.http, "/metrics");
    assert_eq!(status, 200);
    let key = format!("muc_eventsource_rejected_total{{reason=\"{reason}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /metrics:\n{body}"))
}

/// A daemon restart or a network blip: every client reconnects at once, each sending its
/// complete request right after connecting. With the default configuration all 1000 get 200.
#[test]
fn a_reconnect_storm_of_complete_requests_is_served_in_full() {
    const CLIENTS: usize = 1000;
    const THREADS: usize = 4;
    let (_prosody, daemon) = setup();
    let addr = daemon.http;
    let started = Instant::now();
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            std::thread::spawn(move || {
                // Distinct sources, as a storm from many hosts; connect and send at once.
                // A connection refused or reset counts as not served (None).
                let mut socks: Vec<Option<TcpStream>> = (0..CLIENTS / THREADS)
                    .map(|i| {
                        let from = Ipv4Addr::new(127, 1, t as u8, i as u8 + 1);
                        let mut s = try_connect_from(from, addr).ok()?;
                        s.write_all(request("lobby").as_bytes()).ok()?;
                        Some(s)
                    })
                    .collect();
                let statuses: Vec<Option<u16>> = socks
                    .iter_mut()
                    .map(|s| status_within(s.as_mut()?, T))
                    .collect();
                (statuses, socks)
            })
        })
        .collect();
    let mut held = Vec::new();
    let mut statuses = Vec::new();
    for t in threads {
        let (s, socks) = t.join().unwrap();
        statuses.extend(s);
        held.extend(socks);
    }
    let took = started.elapsed();
    let ok = statuses.iter().filter(|s| **s == Some(200)).count();
    eprintln!(
        "storm: {ok} of {CLIENTS} got 200 in {took:?}; pending_full {}, per_ip {}",
        rejected(&daemon, "pending_full"),
        rejected(&daemon, "per_ip")
    );
    let others: Vec<_> = statuses.iter().filter(|s| **s != Some(200)).collect();
    assert_eq!(
        ok,
        CLIENTS,
        "not all served: {others:?}\n{}",
        daemon.log_tail_block()
    );
    assert_eq!(rejected(&daemon, "pending_full"), 0);
    drop(held);
}

/// Opens a connection from `from` that sends a partial head, then one byte every 200 ms, and
/// re-opens it whenever the daemon closes it, until `stop`.
fn slowloris(
    addr: SocketAddr,
    from: Vec<Ipv4Addr>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let open = |ip: Ipv4Addr| {
            let mut s = connect_from(ip, addr);
            s.write_all(b"GET /eventsource/lobby HTTP/1.1\r\nHost: slow\r\nX-A: ")
                .unwrap();
            s.set_nonblocking(true).unwrap();
            s
        };
        let mut socks: Vec<(Ipv4Addr, TcpStream)> = from.iter().map(|&ip| (ip, open(ip))).collect();
        let mut reopened = 0;
        while !stop.load(Ordering::Relaxed) {
            for (ip, s) in socks.iter_mut() {
                let mut buf = [0u8; 512];
                let closed = s.read(&mut buf).is_ok() || s.write_all(b"a").is_err();
                if closed {
                    *s = open(*ip);
                    reopened += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        reopened
    })
}

/// 64 connections from one address trickle their heads (and come back when closed): 20 fresh
/// clients from other addresses are each answered within a second — whole requests, and
/// requests whose head arrives in two parts (which need a pending slot).
#[test]
fn slowloris_from_one_address_delays_no_one_else() {
    let (_prosody, daemon) = setup();
    let stop = Arc::new(AtomicBool::new(false));
    let attacker = slowloris(
        daemon.http,
        vec![Ipv4Addr::new(127, 0, 0, 1); 64],
        stop.clone(),
    );
    std::thread::sleep(Duration::from_millis(500));
    let slowest = fresh_clients(&daemon, 2);
    stop.store(true, Ordering::Relaxed);
    let reopened = attacker.join().unwrap();
    let per_ip = rejected(&daemon, "per_ip");
    eprintln!(
        "slowloris from one address: slowest fresh client answered in {slowest:?}; \
         attacker's connections closed {reopened}, per_ip {per_ip}"
    );
    assert!(per_ip >= 56, "only {per_ip} of 64 slow connections closed");
}

/// As many slow connections as the pending table holds, each from its own address: fresh
/// clients still get in, each within a second, because a full table closes its slowest
/// connection, not the newcomer.
#[test]
fn a_full_pending_table_closes_its_slowest_connection_not_the_newcomer() {
    let (_prosody, daemon) = setup();
    let stop = Arc::new(AtomicBool::new(false));
    let sources = (1..=64).map(|i| Ipv4Addr::new(127, 3, 0, i)).collect();
    let attacker = slowloris(daemon.http, sources, stop.clone());
    std::thread::sleep(Duration::from_millis(1000));
    let slowest = fresh_clients(&daemon, 4);
    stop.store(true, Ordering::Relaxed);
    attacker.join().unwrap();
    let evicted = rejected(&daemon, "pending_full");
    // Who was closed to make room (the daemon's debug log): only ever the slow connections.
    let log = daemon.log();
    let victims: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split(" pending: closing ").nth(1))
        .filter_map(|rest| rest.split(' ').next())
        .collect();
    eprintln!(
        "slowloris from 64 addresses: slowest fresh client answered in {slowest:?}; {evicted} slow connections closed"
    );
    assert!(evicted >= 1, "the pending table never filled");
    assert_eq!(victims.len() as u64, evicted, "{victims:?}");
    assert!(
        victims.iter().all(|v| v.starts_with("127.3.")),
        "a fresh client was closed to make room: {victims:?}"
    );
}

/// 20 whole and 10 split-head requests from fresh addresses `127.<net>.1.x`, one after the
/// other; each must be answered `200` within a second. Returns the slowest answer time.
fn fresh_clients(daemon: &Daemon, net: u8) -> Duration {
    let mut slowest = Duration::ZERO;
    let mut held = Vec::new();
    for i in 0..30u8 {
        let started = Instant::now();
        let mut s = connect_from(Ipv4Addr::new(127, net, 1, i + 1), daemon.http);
        let req = request("lobby");
        if i < 20 {
            s.write_all(req.as_bytes()).unwrap();
        } else {
            let (a, b) = req.split_at(20);
            s.write_all(a.as_bytes()).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            s.write_all(b.as_bytes()).unwrap();
        }
        let status = status_within(&mut s, Duration::from_secs(1));
        let took = started.elapsed();
        assert_eq!(
            status,
            Some(200),
            "fresh client {i} not answered 200 within a second ({took:?})\n{}",
            daemon.log_tail_block()
        );
        slowest = slowest.max(took);
        held.push(s);
    }
    slowest
}

/// RFC 9112's framing MUSTs on the wire: no `Host`, two `Host` lines, a bad or duplicated
/// `Content-Length` → 400; `HEAD` of a stream gets the stream's header fields and no body.
#[test]
fn http_framing_musts_on_the_wire() {
    let (_prosody, daemon) = setup();
    for req in [
        "GET /eventsource/lobby HTTP/1.1\r\n\r\n",
        "GET /eventsource/lobby HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "GET /eventsource/lobby HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n",
        "GET /eventsource/lobby HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
    ] {
        let reply = String::from_utf8_lossy(&http_raw(daemon.http, req.as_bytes(), T)).into_owned();
        assert!(reply.starts_with("HTTP/1.1 400 "), "{req:?} -> {reply:?}");
        assert!(
            reply.contains("X-Content-Type-Options: nosniff\r\n"),
            "{reply}"
        );
    }
    let reply = http_raw(
        daemon.http,
        b"HEAD /eventsource/lobby HTTP/1.1\r\nHost: a\r\n\r\n",
        T,
    );
    let reply = String::from_utf8_lossy(&reply).into_owned();
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    assert!(
        reply.contains("Content-Type: text/event-stream\r\n"),
        "{reply}"
    );
    assert!(reply.ends_with("\r\n\r\n"), "HEAD got a body: {reply:?}");
    assert!(!reply.contains("Content-Length"), "{reply}");
}
