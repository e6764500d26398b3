//! End to end against a real Prosody: a real XMPP user posts to MUC rooms over c2s, the daemon
//! (the release-like binary Cargo built) republishes them, and SSE clients parse the streams
//! with a WHATWG-conformant parser.

use std::time::Duration;

use testkit::daemon::Daemon;
use testkit::json::{self, Value};
use testkit::prosody::Prosody;
use testkit::sse::{SseClient, http_get, http_raw};
use testkit::xmpp::{XmppClient, normalize_newlines};

const T: Duration = Duration::from_secs(10);

/// Prosody with rooms `lobby` and `news`, a user `alice` in both, and the daemon watching them.
fn setup() -> (Prosody, XmppClient, Daemon) {
    let prosody = Prosody::start();
    prosody.create_rooms(&["lobby", "news"]);
    prosody.register("alice", "alicepass");
    let mut alice = XmppClient::connect(&prosody, "alice", "alicepass");
    alice.join("lobby", "alice");
    alice.join("news", "alice");
    let daemon = Daemon::start(&prosody, &["lobby", "news"], "");
    (prosody, alice, daemon)
}

/// The `{"nick","body"}` payload of an unnamed event, checked for exactly those keys.
fn payload(data: &str) -> (String, String) {
    let json = json::parse(data).unwrap_or_else(|e| panic!("data is not JSON ({e}): {data:?}"));
    assert_eq!(
        json::keys(&json),
        vec!["nick", "body"],
        "payload keys of {data}"
    );
    (
        json.get("nick")
            .and_then(Value::as_str)
            .unwrap()
            .to_string(),
        json.get("body")
            .and_then(Value::as_str)
            .unwrap()
            .to_string(),
    )
}

#[test]
fn subscribers_get_every_message_in_order_with_the_mod_muc_eventsource_shape() {
    let (_prosody, mut alice, daemon) = setup();
    let mut subs: Vec<SseClient> = (0..5)
        .map(|_| SseClient::connect(daemon.http, "/eventsource/lobby", &[]))
        .collect();
    for sub in &subs {
        assert_eq!(sub.status(), 200);
        assert_eq!(sub.header("content-type"), Some("text/event-stream"));
        assert_eq!(sub.header("cache-control"), Some("no-cache"));
        assert_eq!(sub.header("access-control-allow-origin"), Some("*"));
        assert_eq!(sub.header("access-control-allow-methods"), Some("GET"));
        assert_eq!(sub.header("access-control-max-age"), Some("7200"));
    }
    // Give the daemon a moment to register the subscribers before the first message.
    std::thread::sleep(Duration::from_millis(200));
    let bodies: Vec<String> = (0..30).map(|i| format!("message number {i}")).collect();
    for body in &bodies {
        alice.send_groupchat("lobby", body);
    }
    for sub in &mut subs {
        let events = sub.collect(bodies.len(), T);
        assert_eq!(events.len(), bodies.len(), "every message arrives");
        for (event, body) in events.iter().zip(&bodies) {
            assert_eq!(
                event.event_type, "message",
                "unnamed event, seen by onmessage"
            );
            assert_eq!(payload(&event.data), ("alice".to_string(), body.clone()));
        }
    }
}

#[test]
fn bodies_arrive_intact_unicode_entities_newlines_and_64k() {
    let (_prosody, mut alice, daemon) = setup();
    let mut sub = SseClient::connect(daemon.http, "/eventsource/lobby", &[]);
    std::thread::sleep(Duration::from_millis(200));
    let big: String = "0123456789abcdef🎉".repeat(64 * 1024 / 20);
    let bodies = vec![
        "emoji 🎉👩‍👩‍👧 RTL שלום עליכם مرحبا combining e\u{301} a\u{308}".to_string(),
        "entities <b>bold</b> & \"quotes\" 'apos' &amp; &lt;".to_string(),
        "line one\nline two\n\nline four".to_string(),
        "crlf one\r\ntwo\rthree".to_string(),
        "data: fake\n\nid: 99\nevent: evil\nretry: 1\n: comment".to_string(),
        "backslash \\ and tab\tend".to_string(),
        "\u{2028}line separator\u{2029}".to_string(),
        big,
    ];
    for body in &bodies {
        alice.send_groupchat("lobby", body);
    }
    // A CDATA section is text like any other.
    let room = alice.room_jid("lobby");
    alice.send_raw(&format!(
        "<message to='{room}' type='groupchat'><body><![CDATA[<raw> & stuff]]></body></message>"
    ));
    let events = sub.collect(bodies.len() + 1, T);
    assert_eq!(
        events.len(),
        bodies.len() + 1,
        "one event per message, no extra events"
    );
    let mut ids = std::collections::HashSet::new();
    for (event, body) in events.iter().zip(&bodies) {
        assert_eq!(event.event_type, "message");
        // Ids are the daemon's own (`<run>-<seq>`: this Prosody has no MAM), never a body's.
        let (run, seq) = event.last_event_id.split_once('-').expect("minted id");
        assert!(
            run.bytes().all(|b| b.is_ascii_alphanumeric()),
            "{}",
            event.last_event_id
        );
        assert!(seq.parse::<u64>().is_ok(), "{}", event.last_event_id);
        assert!(ids.insert(event.last_event_id.clone()), "unique ids");
        // XML turns a raw CR into LF on the way through Prosody.
        assert_eq!(payload(&event.data).1, normalize_newlines(body));
    }
    assert_eq!(payload(&events[bodies.len()].data).1, "<raw> & stuff");
    assert_eq!(
        sub.parser.retry,
        Some(3000),
        "only the daemon's own retry (the body's `retry: 1` is data)"
    );
}

#[test]
fn rooms_are_isolated_and_bodyless_messages_send_no_message_event() {
    let (prosody, mut alice, daemon) = setup();
    let mut lobby = SseClient::connect(daemon.http, "/eventsource/lobby", &[]);
    let mut news = SseClient::connect(daemon.http, "/eventsource/news", &[]);
    std::thread::sleep(Duration::from_millis(200));
    alice.send_groupchat("lobby", "for lobby");
    // Body-less groupchat messages: a chat state (nothing) and a subject change (a named
    // `subject` event, which `onmessage` does not see).
    let room = alice.room_jid("lobby");
    alice.send_raw(&format!(
        "<message to='{room}' type='groupchat'><active xmlns='http://jabber.org/protocol/chatstates'/></message>"
    ));
    let (user, pass) = testkit::prosody::ROOM_OWNER;
    let mut owner = XmppClient::connect(&prosody, user, pass);
    owner.join("lobby", user);
    owner.set_subject("lobby", "a new subject");
    alice.send_groupchat("news", "for news");
    alice.send_groupchat("lobby", "lobby again");
    let events = lobby.collect(3, T);
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, vec!["message", "subject", "message"]);
    assert_eq!(payload(&events[0].data).1, "for lobby");
    assert_eq!(payload(&events[2].data).1, "lobby again");
    let subject = json::parse(&events[1].data).unwrap();
    assert_eq!(
        subject.get("subject").and_then(Value::as_str),
        Some("a new subject")
    );
    assert_eq!(subject.get("nick").and_then(Value::as_str), Some("owner"));
    let got: Vec<String> = news
        .collect(1, T)
        .iter()
        .map(|e| payload(&e.data).1)
        .collect();
    assert_eq!(got, vec!["for news"]);
    assert!(lobby.next_event(Duration::from_millis(500)).is_none());
    assert!(news.next_event(Duration::from_millis(200)).is_none());
}

#[test]
fn unknown_rooms_paths_and_methods_get_proper_answers() {
    let (_prosody, _alice, daemon) = setup();
    assert_eq!(http_get(daemon.http, "/eventsource/nosuchroom").0, 404);
    assert_eq!(http_get(daemon.http, "/eventsource/").0, 404);
    assert_eq!(http_get(daemon.http, "/favicon.ico").0, 404);
    assert_eq!(http_get(daemon.http, "/eventsource/bad%zzname").0, 400);
    let reply = http_raw(
        daemon.http,
        b"POST /eventsource/lobby HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        T,
    );
    assert!(
        reply.starts_with(b"HTTP/1.1 405 "),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    // Percent-encoded and differently-cased names reach the same room.
    let sub = SseClient::connect(daemon.http, "/eventsource/%6Cobby", &[]);
    assert_eq!(sub.status(), 200);
    let sub = SseClient::connect(daemon.http, "/eventsource/NEWS", &[]);
    assert_eq!(sub.status(), 200);
}

#[test]
fn malformed_requests_get_4xx_and_others_keep_being_served() {
    let (_prosody, mut alice, daemon) = setup();
    let mut sub = SseClient::connect(daemon.http, "/eventsource/lobby", &[]);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"GARBAGE\r\n\r\n".to_vec(), "400"),
        (b"GET / HTTP/9.9\r\n\r\n".to_vec(), "400"),
        (
            b"GET /eventsource/lobby HTTP/1.1\r\nBad Header Line\r\n\r\n".to_vec(),
            "400",
        ),
        (b"\x00\x01\x02\xff\xfe\r\n\r\n".to_vec(), "400"),
        (
            format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(20_000)).into_bytes(),
            "431",
        ),
        (
            format!("GET / HTTP/1.1\r\n{}\r\n", "X-A: b\r\n".repeat(200)).into_bytes(),
            "431",
        ),
    ];
    for (request, status) in &cases {
        let reply = http_raw(daemon.http, request, T);
        let text = String::from_utf8_lossy(&reply);
        assert!(
            text.starts_with(&format!("HTTP/1.1 {status} ")),
            "request {:?} got {text:?}",
            String::from_utf8_lossy(&request[..request.len().min(40)])
        );
    }
    alice.send_groupchat("lobby", "still here");
    let event = sub.next_event(T).expect("the subscriber is still served");
    assert_eq!(payload(&event.data).1, "still here");
    let other = SseClient::connect(daemon.http, "/eventsource/news", &[]);
    assert_eq!(other.status(), 200);
}

#[test]
fn slow_request_heads_are_timed_out() {
    let prosody = Prosody::start();
    prosody.create_rooms(&["lobby"]);
    let daemon = Daemon::start(&prosody, &["lobby"], "header_timeout_secs = 1");
    let started = std::time::Instant::now();
    let reply = http_raw(daemon.http, b"GET /eventsource/lobby HTTP/1.1\r\n", T);
    assert!(
        reply.starts_with(b"HTTP/1.1 408 "),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn wrong_secret_fails_clearly_and_exits_non_zero() {
    let prosody = Prosody::start();
    prosody.create_rooms(&["lobby"]);
    let config = Daemon::config_text(&prosody, &["lobby"], "").replace(
        &format!("secret = {}", prosody.secret),
        "secret = wrong-secret",
    );
    let mut daemon = Daemon::spawn_raw(&config);
    let status = daemon
        .wait_exit(T)
        .unwrap_or_else(|| panic!("still running with a wrong secret:\n{}", daemon.log()));
    assert_eq!(status.code(), Some(2), "{}", daemon.log());
    let log = daemon.log();
    assert!(log.contains("rejected the component secret"), "{log}");
    assert!(
        log.contains("`secret`"),
        "the log names the key to fix: {log}"
    );
    assert!(
        !log.contains("wrong-secret"),
        "the secret is never logged: {log}"
    );
}

#[test]
fn a_room_that_does_not_exist_is_not_created() {
    let mut prosody = Prosody::start();
    prosody.create_rooms(&["lobby"]);
    let daemon = Daemon::spawn_raw(&Daemon::config_text(&prosody, &["lobby", "ghost"], ""));
    daemon.expect_log("joined room lobby@", T);
    daemon.expect_log("ghost@conference.localhost does not exist", T);
    assert_eq!(http_get(daemon.http, "/eventsource/ghost").0, 404);
    prosody.register("bob", "bobpass");
    let mut bob = XmppClient::connect(&prosody, "bob", "bobpass");
    let reply = bob.disco_info("ghost");
    assert!(
        reply.contains("item-not-found"),
        "the room was created: {reply}"
    );
    drop(daemon);
    let _ = prosody.stop();
}

#[test]
fn sigterm_leaves_rooms_ends_streams_and_exits_zero() {
    let (_prosody, mut alice, mut daemon) = setup();
    let mut sub = SseClient::connect(daemon.http, "/eventsource/lobby", &[]);
    std::thread::sleep(Duration::from_millis(200));
    let status = daemon.stop();
    assert_eq!(status.code(), Some(0), "{}", daemon.log());
    assert!(sub.wait_closed(T), "the stream is ended");
    // Alice sees the daemon's occupant leave the room.
    alice.wait_for("type='unavailable'", T);
    assert!(daemon.log().contains("left all rooms"), "{}", daemon.log());
}
