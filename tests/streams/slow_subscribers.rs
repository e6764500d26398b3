//! Slow subscribers against a real Prosody: 100 subscribers that never read (tiny receive
//! buffers, so they fill fast) next to 1000 that read continuously, while a real XMPP user
//! posts 500 messages of ~200 bytes as fast as it can.
//!
//! Every fast subscriber must get every message, in order (zero loss); the stalled ones must
//! be dropped once they fall more than the ring (`ring_events`) behind; and the daemon's
//! resident memory must stay below the ceiling `--check-config` prints for that config.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use testkit::daemon::Daemon;
use testkit::fake_upstream::{check_config_ceiling, vm_hwm_kib, vm_rss_kib};
use testkit::json::{self, Value};
use testkit::prosody::Prosody;
use testkit::sse::{SseClient, SseParser};
use testkit::xmpp::XmppClient;

const STALLED: usize = 100;
const FAST: usize = 1000;
const MESSAGES: usize = 500;
const BODY_BYTES: usize = 200;
/// Receive buffer asked for on the stalled subscribers: the kernel raises it to its minimum
/// (about 4.5 KiB), so their window closes after a few segments.
const STALLED_RCVBUF: libc::c_int = 1;
/// Maximum segment size of the stalled subscribers' connections. Measured on Linux 6 with BBR:
/// a stalled subscriber then holds about 14 KB (58 events) before the daemon's writes block,
/// against ~170 KB with the defaults (which would swallow this whole test's 135 KB stream).
const STALLED_MSS: libc::c_int = 384;

/// A TCP connection to `addr` whose receive buffer (`SO_RCVBUF`) and maximum segment size
/// (`TCP_MAXSEG`) are set before the handshake, like a client on a slow, small-MTU link: the
/// small MSS also keeps the daemon's send buffer from auto-tuning to the hundreds of KiB a
/// loopback (64 KiB MSS) connection gets, so a reader that stops fills both ends quickly.
fn slow_link(addr: std::net::SocketAddr, rcvbuf: libc::c_int, mss: libc::c_int) -> TcpStream {
    let opts = testkit::sock::Opts {
        rcvbuf: Some(rcvbuf),
        mss: Some(mss),
        ..Default::default()
    };
    testkit::sock::connect(addr, opts)
}

/// Connects, shrinks the receive buffer, sends the request and reads only the response head
/// (to know the subscription exists); the body is never read.
fn stalled_subscriber(daemon: &Daemon) -> TcpStream {
    let mut s = slow_link(daemon.http, STALLED_RCVBUF, STALLED_MSS);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /eventsource/lobby HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            other => panic!(
                "stalled subscriber: no response head ({other:?}): {:?}\n{}",
                String::from_utf8_lossy(&head),
                daemon.log_tail_block()
            ),
        }
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200 "),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

fn message_body(data: &str) -> String {
    json::parse(data)
        .ok()
        .and_then(|j| j.get("body").and_then(Value::as_str).map(String::from))
        .unwrap_or_default()
}

fn body_text(i: usize) -> String {
    let head = format!("msg {i:04} ");
    format!("{head}{}", "x".repeat(BODY_BYTES - head.len()))
}

#[test]
fn stalled_subscribers_are_dropped_fast_ones_lose_nothing_memory_stays_bounded() {
    let started = Instant::now();
    let prosody = Prosody::start();
    prosody.create_rooms(&["lobby"]);
    let mut alice = XmppClient::user(&prosody, "alice", &["lobby"]);
    let daemon = Daemon::start(&prosody, &["lobby"], "history = 0\nmax_subscribers = 1200");
    let pid = daemon.pid();
    let ceiling = check_config_ceiling(daemon.config_path());

    let stalled: Vec<TcpStream> = (0..STALLED).map(|_| stalled_subscriber(&daemon)).collect();
    let fast: Vec<SseClient> = (0..FAST)
        .map(|_| {
            let c = SseClient::connect(daemon.http, "/eventsource/lobby", &[]);
            assert_eq!(c.status(), 200, "{}", daemon.log_tail_block());
            c
        })
        .collect();
    let subscribed_at = Instant::now();
    let readers: Vec<_> = fast
        .into_iter()
        .map(|mut c| {
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(20);
                let mut bodies = Vec::with_capacity(MESSAGES);
                while bodies.len() < MESSAGES {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match c.next_event(left) {
                        Some(e) if e.event_type == "message" => bodies.push(message_body(&e.data)),
                        Some(_) => {}
                        None => break,
                    }
                }
                (bodies, c.is_closed())
            })
        })
        .collect();

    let sending = Instant::now();
    for i in 0..MESSAGES {
        alice.send_groupchat("lobby", &body_text(i));
    }
    let sent_in = sending.elapsed();

    let expected: Vec<String> = (0..MESSAGES).map(body_text).collect();
    let mut complete = 0;
    for (n, reader) in readers.into_iter().enumerate() {
        let (bodies, closed) = reader.join().expect("reader thread");
        if bodies != expected {
            let first_bad = bodies
                .iter()
                .zip(&expected)
                .position(|(a, b)| a != b)
                .unwrap_or(bodies.len());
            panic!(
                "fast subscriber {n}: {} of {MESSAGES} messages (closed: {closed}), first missing or out of order at #{first_bad}: {:?}\n{}",
                bodies.len(),
                bodies.get(first_bad).map(|b| &b[..9]),
                daemon.log_tail_block()
            );
        }
        complete += 1;
    }
    let delivered_in = sending.elapsed();

    // The stalled ones fell behind and were dropped.
    let needle = "fell more than the ring behind";
    let dropped_ok = daemon.wait_log_count(needle, STALLED, Duration::from_secs(10));
    let dropped = daemon.log_count(needle);
    // VmHWM is the peak resident set over the daemon's whole life, this burst included.
    let hwm = vm_hwm_kib(pid);
    let rss = vm_rss_kib(pid);
    eprintln!(
        "{complete} fast subscribers got all {MESSAGES} messages; sent in {sent_in:?}, delivered in {delivered_in:?}; \
         {dropped} stalled dropped; VmRSS {rss} KiB, peak (VmHWM) {hwm} KiB, ceiling {} KiB; setup took {:?}",
        ceiling / 1024,
        subscribed_at - started
    );
    assert!(
        dropped_ok,
        "only {dropped} of {STALLED} stalled subscribers were dropped\n{}",
        daemon.log_tail_block()
    );
    assert_eq!(dropped, STALLED, "no fast subscriber was dropped");
    // A dropped subscriber's connection is closed: drained, its socket reaches EOF, and what
    // it got is a clean, in-order prefix of the messages.
    for (n, mut s) in stalled.into_iter().enumerate().take(5) {
        let mut parser = SseParser::new();
        let mut got: Vec<String> = Vec::new();
        let mut bytes = 0usize;
        let mut eof = false;
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut chunk = vec![0u8; 1 << 16];
        while Instant::now() < deadline {
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            match s.read(&mut chunk) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(k) => {
                    bytes += k;
                    got.extend(
                        parser
                            .feed(&chunk[..k])
                            .into_iter()
                            .filter(|e| e.event_type == "message")
                            .map(|e| message_body(&e.data)),
                    );
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    eof = true;
                    break;
                }
                Err(_) => {}
            }
        }
        assert!(eof, "stalled subscriber {n}: its connection is closed");
        assert!(
            got.len() < MESSAGES && got[..] == expected[..got.len()],
            "stalled subscriber {n}: {} messages, not a strict in-order prefix",
            got.len()
        );
        if n == 0 {
            eprintln!(
                "a stalled subscriber held {bytes} bytes ({} messages) when it was dropped",
                got.len()
            );
        }
    }
    assert!(
        hwm * 1024 < ceiling,
        "peak RSS {hwm} KiB is above the --check-config ceiling {} KiB",
        ceiling / 1024
    );
}
