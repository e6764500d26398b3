//! The daemon against a hostile or broken upstream: a fake XEP-0114 server
//! (`testkit/src/fake_upstream.rs`) that logs the daemon in, answers its disco#info and joins,
//! and then sends what a real Prosody never would: garbage, a DTD with a billion-laughs entity
//! set, comments, 10 000 nested elements, a 10 MB stanza, invalid UTF-8, an undefined entity,
//! a `<stream:error>`, a bare `</stream:stream>`, a connection cut mid-stanza or mid-handshake,
//! silence after the stream header, a rejected handshake, and no listener at all.
//!
//! Every fault must end the upstream connection with a clear log line, and the daemon must
//! reconnect (a fresh stream id and a fresh, correct handshake), with back-off rather than a
//! tight loop, without crashing, while the subscribers of every room keep their streams and get
//! the messages pushed after the reconnect (and never anything from the broken stanza). Memory
//! is checked (VmHWM) around the 10 MB stanza and the largest stanzas the daemon accepts.

use std::time::{Duration, Instant};

use testkit::daemon::Daemon;
use testkit::fake_upstream::{FakeConn, FakeUpstream, check_config_ceiling, vm_hwm_kib};
use testkit::json::{self, Value};
use testkit::sse::{SseClient, http_get};

const T: Duration = Duration::from_secs(10);
const ROOMS: &[&str] = &["lobby", "news"];
const NICK: &str = "alice";
/// The process part of the daemon's memory ceiling (`FIXED_BYTES` in src/memory.rs: the
/// measured idle RSS of a release build).
const PROCESS_BYTES: u64 = 2 << 20;

/// The fake, the daemon logged in through it, the first connection (rooms joined) and one
/// subscriber per room that has received one message per room.
struct Setup {
    fake: FakeUpstream,
    daemon: Daemon,
    conn: FakeConn,
    subs: Vec<SseClient>,
    /// Set just before a fault is sent: the daemon cannot close the link earlier.
    fault_at: Instant,
}

fn setup(extra: &str) -> Setup {
    let fake = FakeUpstream::start();
    let mut daemon = Daemon::spawn_raw(&fake.daemon_config(ROOMS, extra));
    let mut conn = fake.expect_conn(T, "the daemon's first connection");
    conn.establish(ROOMS);
    daemon.wait_ready(ROOMS, T);
    let subs: Vec<SseClient> = ROOMS
        .iter()
        .map(|room| {
            let sub = SseClient::connect(daemon.http, &format!("/eventsource/{room}"), &[]);
            assert_eq!(sub.status(), 200, "{}", daemon.log_tail_block());
            sub
        })
        .collect();
    let mut s = Setup {
        fake,
        daemon,
        conn,
        subs,
        fault_at: Instant::now(),
    };
    s.push_and_expect("before");
    s
}

impl Setup {
    /// The connection to send a fault on (notes the time first).
    fn fault(&mut self) -> &mut FakeConn {
        self.fault_at = Instant::now();
        &mut self.conn
    }

    /// Pushes `<tag> <room>` to every room over the current connection and waits until each
    /// room's subscriber has it.
    fn push_and_expect(&mut self, tag: &str) {
        for room in ROOMS {
            self.conn.groupchat(room, NICK, &format!("{tag} {room}"));
        }
        for (room, sub) in ROOMS.iter().zip(self.subs.iter_mut()) {
            let want = format!("{tag} {room}");
            let got = wait_body(sub, &want, &self.daemon);
            // Exactly this message since the last one: nothing from a broken stanza, no repeats.
            assert_eq!(got, vec![want], "room {room}");
        }
    }

    /// The fault has been sent on `conn`: the daemon must close the connection, log
    /// `lost: …<reason>…`, reconnect with a fresh handshake after a back-off, join again,
    /// and deliver what is pushed next to the subscribers it kept. `tag` names the case.
    fn expect_recovery(&mut self, reason: &str, tag: &str) {
        let mut seen = Vec::new();
        assert!(
            self.conn.wait_closed(T, &mut seen),
            "the daemon did not close the upstream connection after the fault ({tag}); it sent {seen:?}\n{}",
            self.daemon.log_tail_block()
        );
        self.expect_lost_line(reason);
        let joins_before = self
            .daemon
            .log_count(&format!("joined room lobby@{}", self.fake.muc));
        let old_id = self.conn.stream_id.clone();
        let old_digest = self.conn.digest.clone();
        let mut conn = self.fake.next_conn(T).unwrap_or_else(|| {
            panic!(
                "no reconnect within {T:?} after {tag}\n{}",
                self.daemon.log_tail_block()
            )
        });
        let gap = conn.accepted_at.saturating_duration_since(self.fault_at);
        conn.establish(ROOMS);
        assert_ne!(conn.stream_id, old_id, "a fresh stream");
        assert_ne!(
            conn.digest, old_digest,
            "a fresh handshake for the fresh id"
        );
        assert!(
            gap >= Duration::from_millis(600),
            "reconnected {gap:?} after the fault: no back-off (reconnect_min_secs = 1, jitter ±25 %)"
        );
        self.conn = conn;
        for room in ROOMS {
            assert!(
                self.daemon.wait_log_count(
                    &format!("joined room {room}@{}", self.fake.muc),
                    joins_before + 1,
                    T
                ),
                "room {room} not joined again\n{}",
                self.daemon.log_tail_block()
            );
        }
        self.assert_alive();
        self.push_and_expect(tag);
        for sub in &self.subs {
            assert!(!sub.is_closed(), "subscribers keep their streams");
        }
        self.assert_alive();
    }

    /// Each room's subscriber gets `n` big messages of `len` bytes, in order.
    fn push_and_expect_after_big(&mut self, n: usize, len: usize) {
        for (room, sub) in ROOMS.iter().zip(self.subs.iter_mut()) {
            for i in 0..n {
                let event = loop {
                    match sub.next_event(T) {
                        Some(e) if e.event_type == "message" => break e,
                        Some(_) => {}
                        None => panic!(
                            "room {room}: big message {i} missing\n{}",
                            self.daemon.log_tail_block()
                        ),
                    }
                };
                let body = body_of(&event.data);
                assert_eq!(body.len(), len, "room {room}: message {i}");
                assert!(body.starts_with(&i.to_string()), "room {room}: in order");
            }
        }
    }

    /// The log has a warning naming the upstream, saying the link was lost, and why.
    fn expect_lost_line(&self, reason: &str) {
        let prefix = format!("upstream link to {} lost:", self.fake.addr);
        let found = |log: &str| {
            log.lines()
                .any(|l| l.contains(&prefix) && l.contains(reason))
        };
        let deadline = Instant::now() + T;
        while !found(&self.daemon.log()) {
            assert!(
                Instant::now() < deadline,
                "no log line with {prefix:?} and {reason:?}\n{}",
                self.daemon.log_tail_block()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn assert_alive(&mut self) {
        if let Some(status) = self.daemon.try_wait() {
            panic!(
                "the daemon exited ({status})\n{}",
                self.daemon.log_tail_block()
            );
        }
        let log = self.daemon.log();
        assert!(!log.contains("panicked"), "{log}");
    }

    /// Nothing more arrived (no late message from the broken stanza); a clean stop.
    fn finish(mut self) {
        for (room, sub) in ROOMS.iter().zip(self.subs.iter_mut()) {
            while let Some(e) = sub.next_event(Duration::from_millis(200)) {
                assert_ne!(e.event_type, "message", "room {room}: unexpected {e:?}");
            }
        }
        drop(self.subs);
        let status = self.daemon.stop();
        assert_eq!(status.code(), Some(0), "{}", self.daemon.log_tail_block());
    }
}

fn body_of(data: &str) -> String {
    json::parse(data)
        .ok()
        .and_then(|j| j.get("body").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_default()
}

/// Reads events until a message with `body`; panics (with the log) if the stream ends or
/// nothing comes within `T`. Returns the message bodies seen on the way.
fn wait_body(sub: &mut SseClient, body: &str, daemon: &Daemon) -> Vec<String> {
    let deadline = Instant::now() + T;
    let mut bodies = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match sub.next_event(left) {
            Some(e) if e.event_type == "message" => {
                let b = body_of(&e.data);
                let done = b == body;
                bodies.push(b);
                if done {
                    return bodies;
                }
            }
            Some(_) => {}
            None => panic!(
                "subscriber: no message {body:?} (closed: {}); bodies so far {bodies:?}\n{}",
                sub.is_closed(),
                daemon.log_tail_block()
            ),
        }
    }
}

#[test]
fn garbage_bytes() {
    let mut s = setup("");
    s.fault().send(b"\x00\x01 this is not XML at all \xff\xfe");
    s.expect_recovery("text outside any stanza", "after-garbage");
    s.finish();
}

#[test]
fn doctype_with_billion_laughs() {
    let mut s = setup("");
    let mut dtd = String::from("<!DOCTYPE lolz [<!ENTITY lol0 'lol'>");
    for i in 1..10 {
        dtd.push_str(&format!(
            "<!ENTITY lol{i} '{}'>",
            format!("&lol{};", i - 1).repeat(10)
        ));
    }
    dtd.push_str("]>");
    let bomb = s.conn.groupchat_stanza("lobby", NICK, "&lol9;");
    s.fault().send(format!("{dtd}{bomb}").as_bytes());
    s.expect_recovery("DTD or comment in the stream", "after-dtd");
    s.finish();
}

#[test]
fn comments_between_and_inside_stanzas() {
    let mut s = setup("");
    s.fault().send(b"<!-- a comment between stanzas -->");
    s.expect_recovery("DTD or comment in the stream", "after-comment");
    let stanza = s
        .conn
        .groupchat_stanza("lobby", NICK, "commented<!-- inside -->body");
    s.fault().send(stanza.as_bytes());
    s.expect_recovery("comment or DTD inside a stanza", "after-inner-comment");
    s.finish();
}

#[test]
fn ten_thousand_nested_elements() {
    let mut s = setup("");
    let deep = format!("{}deep{}", "<a>".repeat(10_000), "</a>".repeat(10_000));
    let stanza = s.conn.groupchat_stanza("lobby", NICK, &deep);
    // The daemon stops reading at depth 32 and closes; the rest may hit a reset.
    let _ = s.fault().send_lossy(stanza.as_bytes());
    s.expect_recovery("nested deeper than", "after-nesting");
    s.finish();
}

#[test]
fn ten_megabyte_stanza_is_refused_without_ballooning_memory() {
    let mut s = setup("");
    let pid = s.daemon.pid();
    let hwm_before = vm_hwm_kib(pid);
    let body = "x".repeat(10 << 20);
    let stanza = s.conn.groupchat_stanza("lobby", NICK, &body);
    drop(body);
    let (sent, err) = s.fault().send_lossy(stanza.as_bytes());
    drop(stanza);
    s.expect_recovery("larger than max_stanza_bytes", "after-huge");
    let hwm_after = vm_hwm_kib(pid);
    eprintln!(
        "10 MB stanza: {sent} bytes written before the daemon closed ({err:?}); VmHWM {hwm_before} KiB -> {hwm_after} KiB"
    );
    assert!(
        sent < 10 << 20,
        "the daemon should stop reading long before 10 MB ({sent} bytes were taken)"
    );
    // The default max_stanza_bytes is 256 KiB: the receive buffer may reach about twice that.
    assert!(
        hwm_after.saturating_sub(hwm_before) < 2048,
        "peak RSS grew by {} KiB for a stanza the daemon must refuse at 256 KiB",
        hwm_after.saturating_sub(hwm_before)
    );
    s.finish();
}

#[test]
fn invalid_utf8_in_a_body() {
    let mut s = setup("");
    let mut stanza = s
        .conn
        .groupchat_stanza("lobby", NICK, "bad-utf8 HOLE end")
        .into_bytes();
    let at = stanza
        .windows(4)
        .position(|w| w == b"HOLE")
        .expect("placeholder");
    stanza.splice(at..at + 4, [0xC3, 0x28, 0xFF, 0xFE]);
    s.fault().send(&stanza);
    s.expect_recovery("not valid UTF-8", "after-utf8");
    s.finish();
}

#[test]
fn undefined_entity() {
    let mut s = setup("");
    s.fault().groupchat("lobby", NICK, "entity &foo; here");
    s.expect_recovery("undefined entity", "after-entity");
    s.finish();
}

#[test]
fn stream_error_system_shutdown() {
    let mut s = setup("");
    s.fault().send(
        b"<stream:error><system-shutdown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>",
    );
    s.expect_recovery("system-shutdown", "after-shutdown");
    s.finish();
}

#[test]
fn stream_closed_without_an_error() {
    let mut s = setup("");
    s.fault().send(b"</stream:stream>");
    s.expect_recovery("the server closed the stream", "after-close-tag");
    s.finish();
}

/// An upstream that accepts the TCP connection and then never answers the stream header
/// (a hung Prosody): the daemon gives up after its 15 s handshake timeout and reconnects.
#[test]
fn upstream_that_never_answers_the_header_is_timed_out() {
    let fake = FakeUpstream::start();
    let mut daemon = Daemon::spawn_raw(&fake.daemon_config(ROOMS, ""));
    let mut mute = fake.expect_conn(T, "first connection");
    mute.read_header();
    let silent_since = Instant::now();
    let mut conn = fake.next_conn(Duration::from_secs(25)).unwrap_or_else(|| {
        panic!(
            "no reconnect after a mute upstream\n{}",
            daemon.log_tail_block()
        )
    });
    let waited = silent_since.elapsed();
    assert!(
        waited >= Duration::from_secs(14),
        "gave up on the mute upstream after only {waited:?}"
    );
    let mut seen = Vec::new();
    assert!(
        mute.wait_closed(Duration::from_secs(2), &mut seen),
        "the mute connection was closed: {seen:?}"
    );
    assert!(
        daemon.log().contains("no handshake answer within"),
        "{}",
        daemon.log_tail_block()
    );
    conn.establish(ROOMS);
    daemon.wait_ready(ROOMS, T);
    let mut sub = SseClient::connect(daemon.http, "/eventsource/news", &[]);
    assert_eq!(sub.status(), 200);
    conn.groupchat("news", NICK, "unmuted");
    assert_eq!(wait_body(&mut sub, "unmuted", &daemon), vec!["unmuted"]);
    assert_eq!(daemon.stop().code(), Some(0));
}

#[test]
fn connection_closed_mid_stanza() {
    let mut s = setup("");
    let stanza = s.conn.groupchat_stanza("lobby", NICK, "half-sent message");
    let cut = stanza.find("half-sent").unwrap() + 4;
    s.fault().send(&stanza.as_bytes()[..cut]);
    std::thread::sleep(Duration::from_millis(100));
    s.conn.stream.shutdown(std::net::Shutdown::Write).unwrap();
    s.expect_recovery("the server closed the connection", "after-cut");
    s.finish();
}

/// Prosody answers a wrong secret with `<stream:error><not-authorized/>`; the daemon must not
/// mistake a connection that merely drops during the handshake (Prosody crashing or restarting
/// at that moment, a proxy, a network blip) for a rejected secret and exit for good.
#[test]
fn connection_closed_during_the_handshake_is_not_an_auth_failure() {
    let fake = FakeUpstream::start();
    let mut daemon = Daemon::spawn_raw(&fake.daemon_config(ROOMS, ""));
    let mut conn = fake.expect_conn(T, "first connection");
    conn.read_header();
    conn.send_header();
    conn.read_handshake();
    drop(conn);
    let deadline = Instant::now() + T;
    let mut conn = loop {
        if let Some(conn) = fake.next_conn(Duration::from_millis(100)) {
            break conn;
        }
        if let Some(status) = daemon.try_wait() {
            panic!(
                "the daemon exited ({status}) instead of reconnecting after the link dropped mid-handshake\n{}",
                daemon.log_tail_block()
            );
        }
        assert!(
            Instant::now() < deadline,
            "no reconnect after the link dropped mid-handshake\n{}",
            daemon.log_tail_block()
        );
    };
    conn.establish(ROOMS);
    daemon.wait_ready(ROOMS, T);
    assert_eq!(daemon.stop().code(), Some(0));
}

#[test]
fn rejected_secret_exits_with_status_2() {
    let fake = FakeUpstream::start();
    let mut daemon = Daemon::spawn_raw(&fake.daemon_config(ROOMS, ""));
    let mut conn = fake.expect_conn(T, "first connection");
    conn.reject_handshake();
    assert_eq!(
        conn.digest,
        conn.expected_digest(),
        "the daemon's handshake is right; the fake rejects it anyway"
    );
    let status = daemon.wait_exit(T).unwrap_or_else(|| {
        panic!(
            "still running after not-authorized\n{}",
            daemon.log_tail_block()
        )
    });
    assert_eq!(status.code(), Some(2), "{}", daemon.log_tail_block());
    let log = daemon.log();
    assert!(log.contains("rejected the component secret"), "{log}");
    assert!(log.contains("`secret`"), "names the key to check: {log}");
    assert!(!log.contains(&fake.secret), "never logs the secret: {log}");
    assert!(
        fake.next_conn(Duration::from_millis(500)).is_none(),
        "no reconnect after exiting"
    );
}

#[test]
fn rejected_secret_with_auth_failure_retry_backs_off() {
    let fake = FakeUpstream::start();
    let mut daemon = Daemon::spawn_raw(&fake.daemon_config(ROOMS, "auth_failure = retry"));
    let window = Duration::from_secs(5);
    let start = Instant::now();
    let mut times = Vec::new();
    while start.elapsed() < window {
        let left = window.saturating_sub(start.elapsed());
        let Some(mut conn) = fake.next_conn(left) else {
            break;
        };
        times.push(conn.accepted_at);
        conn.reject_handshake();
        assert_eq!(conn.digest, conn.expected_digest());
        // The daemon closes its side after the stream error; so do we.
        let _ = conn.wait_closed(Duration::from_secs(2), &mut Vec::new());
    }
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    eprintln!(
        "auth_failure = retry: {} connections in {window:?}, gaps {gaps:?}",
        times.len()
    );
    assert!(
        (2..=6).contains(&times.len()),
        "{} connections in {window:?} (gaps {gaps:?}): expected a retry every 1-2 s\n{}",
        times.len(),
        daemon.log_tail_block()
    );
    for gap in &gaps {
        assert!(
            *gap >= Duration::from_millis(500),
            "retried after {gap:?}: tight loop"
        );
    }
    assert!(daemon.try_wait().is_none(), "keeps running with retry");
    assert_eq!(http_get(daemon.http, "/").0, 200, "HTTP keeps serving");
    let log = daemon.log();
    assert!(log.contains("rejected the component secret"), "{log}");
    assert!(log.contains("reconnecting to"), "{log}");
    assert_eq!(daemon.stop().code(), Some(0));
}

#[test]
fn connection_refused_is_logged_and_retried_with_back_off() {
    // A port nobody listens on (yet).
    let port = testkit::free_port();
    let probe = FakeUpstream::start();
    let secret = probe.secret.clone();
    let config = probe.daemon_config(ROOMS, "").replace(
        &format!("upstream = {}", probe.addr),
        &format!("upstream = 127.0.0.1:{port}"),
    );
    drop(probe);
    let mut daemon = Daemon::spawn_raw(&config);
    let needle = format!("cannot connect to `upstream = 127.0.0.1:{port}`");
    std::thread::sleep(Duration::from_millis(4500));
    let attempts = daemon.log_count(&needle);
    let log = daemon.log();
    eprintln!("connection refused: {attempts} attempts in 4.5 s");
    assert!(
        (2..=6).contains(&attempts),
        "{attempts} connection attempts in 4.5 s: expected a retry every 1-2 s\n{log}"
    );
    let line = log.lines().find(|l| l.contains(&needle)).unwrap();
    assert!(
        line.contains("refused"),
        "the line says what happened: {line}"
    );
    assert!(daemon.try_wait().is_none(), "keeps running");
    assert_eq!(http_get(daemon.http, "/").0, 200, "HTTP serves meanwhile");

    // The upstream comes up on that port: the daemon connects and streams.
    let mut fake = match FakeUpstream::bind(([127, 0, 0, 1], port).into()) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("port {port} was taken meanwhile ({e}); skipping the recovery half");
            return;
        }
    };
    fake.secret = secret;
    let mut conn = fake.expect_conn(Duration::from_secs(5), "connect once the port listens");
    conn.establish(ROOMS);
    daemon.wait_ready(ROOMS, T);
    let mut sub = SseClient::connect(daemon.http, "/eventsource/lobby", &[]);
    assert_eq!(sub.status(), 200);
    conn.groupchat("lobby", NICK, "finally");
    wait_body(&mut sub, "finally", &daemon);
    assert_eq!(daemon.stop().code(), Some(0));
}

/// The largest stanzas the daemon accepts (just under `max_stanza_bytes`), with bodies JSON
/// escaping doubles (`"`), arrive intact, and the daemon's peak memory grows by less than the
/// table part of the ceiling `--check-config` prints (the process part is the idle baseline).
#[test]
fn largest_accepted_stanzas_stay_under_the_memory_ceiling() {
    // The burst below is 8 events of ~510 KB per room, all at once: the ring must hold it
    // (the default 256 KiB holds one; a bounded send buffer no longer hides that).
    let mut s = setup("ring_bytes = 4718592");
    let pid = s.daemon.pid();
    let ceiling = check_config_ceiling(s.daemon.config_path());
    let idle = vm_hwm_kib(pid);
    let body = "\"".repeat(255 * 1024);
    for i in 0..8 {
        for room in ROOMS {
            s.conn.groupchat(room, NICK, &format!("{i}{body}"));
        }
    }
    s.push_and_expect_after_big(8, body.len() + 1);
    let peak = vm_hwm_kib(pid);
    eprintln!(
        "8 × 2 stanzas of 255 KiB: peak RSS {idle} KiB -> {peak} KiB; ceiling {} KiB",
        ceiling / 1024
    );
    assert!(
        (peak - idle) * 1024 < ceiling - PROCESS_BYTES,
        "peak RSS grew by {} KiB, more than the tables' share of the ceiling ({} KiB)",
        peak - idle,
        (ceiling - PROCESS_BYTES) / 1024
    );
    s.finish();
}
