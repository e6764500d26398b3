//! The HTTP side's fixed limits under abuse, against a real Prosody: slowloris (more half-sent
//! request heads than `max_pending_requests`), a full subscriber table (`max_subscribers`), and
//! request heads over `max_head_bytes`. Real clients must keep being served, the abusers get a
//! status (or the door) within the configured time, and nothing grows past its table.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use testkit::daemon::Daemon;
use testkit::json::{self, Value};
use testkit::prosody::Prosody;
use testkit::sse::{SseClient, http_raw};
use testkit::xmpp::XmppClient;

const T: Duration = Duration::from_secs(10);
const MAX_PENDING: usize = 32;
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);

fn setup(extra: &str) -> (Prosody, XmppClient, Daemon) {
    let prosody = Prosody::start();
    prosody.create_rooms(&["lobby"]);
    let alice = XmppClient::user(&prosody, "alice", &["lobby"]);
    let daemon = Daemon::start(&prosody, &["lobby"], extra);
    (prosody, alice, daemon)
}

/// The next message event's body, skipping other events.
fn next_body(sub: &mut SseClient, daemon: &Daemon) -> String {
    let deadline = Instant::now() + T;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match sub.next_event(left) {
            Some(e) if e.event_type == "message" => {
                return json::parse(&e.data)
                    .unwrap()
                    .get("body")
                    .and_then(Value::as_str)
                    .unwrap()
                    .to_string();
            }
            Some(_) => {}
            None => panic!(
                "no message event (closed: {})\n{}",
                sub.is_closed(),
                daemon.log_tail_block()
            ),
        }
    }
}

fn status_line(reply: &[u8]) -> String {
    let text = String::from_utf8_lossy(reply);
    text.lines().next().unwrap_or("").to_string()
}

/// Opens `n` connections that each send a partial request head and nothing more.
fn half_open(daemon: &Daemon, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut s = TcpStream::connect(daemon.http).expect("connect");
            s.write_all(b"GET /eventsource/lobby HTTP/1.1\r\nHost: slow\r\n")
                .unwrap();
            s
        })
        .collect()
}

/// Everything `s` receives until the server closes it or `deadline`; `(bytes, closed)`.
fn read_to_close(s: &mut TcpStream, deadline: Instant) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return (out, false);
        }
        s.set_read_timeout(Some(deadline - now)).unwrap();
        match s.read(&mut chunk) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return (out, true),
        }
    }
}

/// `GET /` until it is answered 200. While the pending table is full a probe is refused: with
/// `503` or closed unanswered (either is fine); anything else fails.
fn get_root_until_served(daemon: &Daemon, deadline: Instant) -> (Duration, usize) {
    let start = Instant::now();
    let mut refused = 0;
    loop {
        let reply = http_raw(
            daemon.http,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            T,
        );
        let line = status_line(&reply);
        if line.starts_with("HTTP/1.1 200 ") {
            return (start.elapsed(), refused);
        }
        assert!(
            reply.is_empty() || line.starts_with("HTTP/1.1 503 "),
            "GET / during slowloris: {line:?}"
        );
        refused += 1;
        assert!(
            Instant::now() < deadline,
            "GET / still refused after {:?}\n{}",
            start.elapsed(),
            daemon.log_tail_block()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `Accept: */*`: not an EventSource, so a refusal is a plain `503` (an EventSource would get a
/// short `200` stream telling it to retry, which is harder to tell from a subscription).
const NOT_AN_EVENTSOURCE: (&str, &str) = ("Accept", "*/*");

/// A subscriber of `lobby`, retrying while the daemon refuses it (`503`, or the connection
/// closed before any answer).
fn subscribe_until_served(daemon: &Daemon, deadline: Instant) -> SseClient {
    loop {
        let addr = daemon.http;
        let attempt = std::panic::catch_unwind(move || {
            SseClient::connect(addr, "/eventsource/lobby", &[NOT_AN_EVENTSOURCE])
        });
        match attempt {
            Ok(sub) if sub.status() == 200 => return sub,
            Ok(sub) => assert_eq!(sub.status(), 503, "{:?}", sub.headers()),
            Err(_) => {} // closed unanswered
        }
        assert!(
            Instant::now() < deadline,
            "subscriber still refused\n{}",
            daemon.log_tail_block()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn slowloris_does_not_lock_out_real_clients() {
    let (_prosody, mut alice, daemon) = setup(&format!(
        "max_pending_requests = {MAX_PENDING}\nheader_timeout_secs = {}",
        HEADER_TIMEOUT.as_secs()
    ));
    let opened = Instant::now();
    let mut slow = half_open(&daemon, MAX_PENDING + 50);
    let opened_in = opened.elapsed();

    // Real clients get through, at the latest once the half-open heads time out.
    let served_by = opened + HEADER_TIMEOUT + Duration::from_secs(6);
    let (root_after, refused) = get_root_until_served(&daemon, served_by);
    let mut sub = subscribe_until_served(&daemon, served_by);
    alice.send_groupchat("lobby", "through the crowd");
    assert_eq!(next_body(&mut sub, &daemon), "through the crowd");

    // Every half-open connection got 408 (timed out), or was refused at the door (503, or
    // closed unanswered), and was closed, within the header timeout plus slack.
    let deadline = opened + HEADER_TIMEOUT + Duration::from_secs(4);
    let (mut timed_out, mut refused_at_door, mut closed_unanswered) = (0, 0, 0);
    for (i, s) in slow.iter_mut().enumerate() {
        let (reply, closed) = read_to_close(s, deadline);
        let line = status_line(&reply);
        assert!(
            closed,
            "half-open connection {i} still open {:?} after it was opened (got {line:?})",
            opened.elapsed()
        );
        if line.starts_with("HTTP/1.1 408 ") {
            timed_out += 1;
        } else if line.starts_with("HTTP/1.1 503 ") {
            refused_at_door += 1;
        } else if reply.is_empty() {
            closed_unanswered += 1;
        } else {
            panic!("half-open connection {i}: {line:?}");
        }
    }
    eprintln!(
        "slowloris: {} half-open opened in {opened_in:?}: {timed_out} got 408, {refused_at_door} got 503, \
         {closed_unanswered} closed unanswered; GET / served after {root_after:?} ({refused} refusals)",
        MAX_PENDING + 50
    );
    assert!(daemon.log().contains("no complete request within"));
}

/// The pending-request table is a hard cap: the ceiling `--check-config` prints counts
/// `max_pending_requests` head buffers. A burst of connections must not all be admitted.
#[test]
fn a_burst_of_half_open_connections_is_capped_at_max_pending_requests() {
    let (_prosody, _alice, daemon) = setup(&format!(
        "max_pending_requests = {MAX_PENDING}\nheader_timeout_secs = {}",
        HEADER_TIMEOUT.as_secs()
    ));
    let opened = Instant::now();
    let mut slow = half_open(&daemon, MAX_PENDING + 50);
    let deadline = opened + HEADER_TIMEOUT + Duration::from_secs(4);
    let mut timed_out = 0;
    for s in slow.iter_mut() {
        let (reply, _) = read_to_close(s, deadline);
        if status_line(&reply).starts_with("HTTP/1.1 408 ") {
            timed_out += 1;
        }
    }
    assert!(
        timed_out <= MAX_PENDING,
        "{timed_out} connections were held pending (408 after the timeout) with max_pending_requests = {MAX_PENDING}"
    );
}

#[test]
fn full_subscriber_table_answers_503_and_keeps_the_others_streaming() {
    let (_prosody, mut alice, daemon) = setup("max_subscribers = 3");
    let mut subs: Vec<SseClient> = (0..3)
        .map(|_| {
            let s = SseClient::connect(daemon.http, "/eventsource/lobby", &[]);
            assert_eq!(s.status(), 200);
            s
        })
        .collect();
    // A plain client is refused with 503 and Retry-After.
    let fourth = SseClient::connect(daemon.http, "/eventsource/lobby", &[NOT_AN_EVENTSOURCE]);
    assert_eq!(fourth.status(), 503, "{:?}", fourth.headers());
    let retry_after = fourth
        .header("Retry-After")
        .expect("503 carries Retry-After");
    assert!(retry_after.parse::<u32>().is_ok(), "{retry_after}");
    drop(fourth);
    // An EventSource is refused too: a 503 as well, or an answer it recovers from (a short
    // stream with `retry:` and an `unavailable` status event, then the end).
    let mut fifth = SseClient::connect(daemon.http, "/eventsource/lobby", &[]);
    match fifth.status() {
        503 => assert!(fifth.header("Retry-After").is_some()),
        200 => {
            assert!(fifth.wait_closed(T), "a refused stream ends at once");
            assert!(fifth.parser.retry.is_some(), "it says when to retry");
            let mut events = Vec::new();
            while let Some(e) = fifth.next_event(Duration::ZERO) {
                events.push(e);
            }
            assert!(
                events
                    .iter()
                    .any(|e| e.event_type == "status" && e.data.contains("unavailable")),
                "{events:?}"
            );
            assert!(events.iter().all(|e| e.event_type != "message"));
        }
        other => panic!("refused EventSource got {other}: {:?}", fifth.headers()),
    }
    drop(fifth);
    assert!(daemon.log().contains("subscriber table full"));
    // Plain requests are not subscribers: still answered.
    assert_eq!(testkit::sse::http_get(daemon.http, "/").0, 200);

    alice.send_groupchat("lobby", "to the three");
    for sub in subs.iter_mut() {
        assert_eq!(next_body(sub, &daemon), "to the three");
    }

    // One leaves: its slot is free again (once the daemon notices the close).
    drop(subs.remove(0));
    let mut newcomer = subscribe_until_served(&daemon, Instant::now() + Duration::from_secs(5));
    alice.send_groupchat("lobby", "welcome");
    assert_eq!(next_body(&mut newcomer, &daemon), "welcome");
    for sub in subs.iter_mut() {
        assert_eq!(next_body(sub, &daemon), "welcome");
    }
}

#[test]
fn oversize_request_heads_get_431() {
    let (_prosody, mut alice, daemon) = setup("");
    let mut sub = SseClient::connect(daemon.http, "/eventsource/lobby", &[]);
    assert_eq!(sub.status(), 200);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "one 10 KB header",
            format!(
                "GET /eventsource/lobby HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
                "a".repeat(10 * 1024)
            )
            .into_bytes(),
        ),
        (
            "100 KB without a line end",
            format!("GET /{}", "b".repeat(100 * 1024)).into_bytes(),
        ),
        (
            "many small headers",
            format!(
                "GET / HTTP/1.1\r\nHost: x\r\n{}\r\n",
                "X-A: b\r\n".repeat(100)
            )
            .into_bytes(),
        ),
    ];
    for (what, request) in &cases {
        let started = Instant::now();
        let reply = http_raw(daemon.http, request, T);
        let line = status_line(&reply);
        assert!(
            line.starts_with("HTTP/1.1 431 "),
            "{what}: got {line:?}\n{}",
            daemon.log_tail_block()
        );
        assert!(started.elapsed() < Duration::from_secs(5), "{what}: slow");
    }
    // Just under the limit (8192 by default) is fine.
    let near = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Near: {}\r\nConnection: close\r\n\r\n",
        "c".repeat(7 * 1024)
    );
    let reply = http_raw(daemon.http, near.as_bytes(), T);
    assert!(
        status_line(&reply).starts_with("HTTP/1.1 200 "),
        "{:?}",
        status_line(&reply)
    );
    alice.send_groupchat("lobby", "after the big heads");
    assert_eq!(next_body(&mut sub, &daemon), "after the big heads");
}
