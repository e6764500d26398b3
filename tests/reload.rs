//! `SIGHUP` reloads the room list and tokens without dropping the subscribers of rooms that
//! stay; removed rooms end their streams with a `status` event; a broken file changes nothing.

mod common;

use std::time::Duration;

use common::daemon::Daemon;
use common::json::Json;
use common::prosody::{Prosody, ROOM_OWNER};
use common::sse::{SseClient, http_get};
use common::xmpp::XmppClient;

const T: Duration = Duration::from_secs(10);

fn next_message(sub: &mut SseClient) -> String {
    sub.next_message_body(T).expect("a message")
}

#[test]
fn sighup_reloads_rooms_and_tokens_keeping_unchanged_rooms_streaming() {
    let prosody = Prosody::start();
    prosody.create_rooms(&["lobby", "news", "extra"]);
    let daemon = Daemon::start(
        &prosody,
        &["lobby", "news"],
        "token.news = old-token\nhistory = 0",
    );
    let mut lobby = SseClient::connect(daemon.http, "/eventsource/lobby", &[]);
    let mut news = SseClient::connect(daemon.http, "/eventsource/news?token=old-token", &[]);
    assert_eq!(news.status(), 200);
    let (user, pass) = ROOM_OWNER;
    let mut owner = XmppClient::connect(&prosody, user, pass);
    for room in ["lobby", "news", "extra"] {
        owner.join(room, user);
    }

    // A broken file: logged, nothing changes.
    let path = daemon.config_path().clone();
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{good}\nthis is not a key\n")).unwrap();
    daemon.signal("HUP");
    daemon.expect_log("reload failed, nothing changed", T);

    let new = good
        .replace("rooms = lobby, news", "rooms = lobby, extra")
        .replace("token.news = old-token", "token.extra = new-token");
    std::fs::write(&path, new).unwrap();
    daemon.signal("HUP");
    daemon.expect_log("rooms added: extra; removed: news", T);

    // The removed room's stream ends with a status event; its URL now answers 204.
    let last = news.next_event(T).expect("a last event");
    assert_eq!(last.event_type, "status");
    assert_eq!(
        Json::parse(&last.data)
            .unwrap()
            .get("status")
            .and_then(Json::as_str),
        Some("removed")
    );
    assert!(news.wait_closed(T));
    assert_eq!(http_get(daemon.http, "/eventsource/news").0, 204);
    // The added room is joined and needs the new token.
    daemon.expect_log("joined room extra@", T);
    assert_eq!(
        http_get(daemon.http, "/eventsource/extra?token=old-token").0,
        403
    );
    let mut extra = SseClient::connect(daemon.http, "/eventsource/extra?token=new-token", &[]);
    assert_eq!(extra.status(), 200);
    std::thread::sleep(Duration::from_millis(200));
    // The unchanged room never dropped its subscriber.
    owner.send_groupchat("lobby", "still streaming");
    owner.send_groupchat("extra", "new room");
    assert_eq!(next_message(&mut lobby), "still streaming");
    assert_eq!(next_message(&mut extra), "new room");
    assert!(daemon.log().contains("leaving news@"), "{}", daemon.log());
}

/// Bytes read from `stream` until it is closed, or `None` if it stays open past `timeout`.
fn read_until_closed(stream: &mut std::net::TcpStream, timeout: Duration) -> Option<Vec<u8>> {
    use std::io::Read;
    let deadline = std::time::Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return None;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return Some(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Some(out),
            Err(_) => return None,
        }
    }
}

/// Comments (heartbeats) `sub` receives within `window`.
fn comments_within(sub: &mut SseClient, window: Duration) -> u64 {
    let before = sub.parser.comments;
    assert!(!sub.wait_closed(window), "the stream ended");
    sub.parser.comments - before
}

#[test]
fn sighup_applies_live_keys_to_the_running_daemon_and_names_restart_keys() {
    let prosody = Prosody::start();
    prosody.create_rooms(&["lobby"]);
    let daemon = Daemon::start(
        &prosody,
        &["lobby"],
        "heartbeat_secs = 1\nmax_subscribers = 64",
    );
    let path = daemon.config_path().clone();
    let original = std::fs::read_to_string(&path).unwrap();
    let mut sub = SseClient::connect(daemon.http, "/eventsource/lobby", &[]);
    assert_eq!(sub.status(), 200);
    assert!(comments_within(&mut sub, Duration::from_millis(2500)) >= 1);

    // A live key (heartbeat off, a shorter header timeout) and a restart key together.
    let changed = original
        .replace(
            "heartbeat_secs = 1",
            "heartbeat_secs = 0\nheader_timeout_secs = 1",
        )
        .replace("max_subscribers = 64", "max_subscribers = 65");
    std::fs::write(&path, changed).unwrap();
    daemon.signal("HUP");
    daemon.expect_log(
        "reload: max_subscribers changed; that takes a restart, the running values stay",
        T,
    );
    daemon.expect_log("changed: header_timeout_secs, heartbeat_secs", T);
    // A beat already waiting may still come; after it, silence.
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(comments_within(&mut sub, Duration::from_millis(3000)), 0);
    // A connection that sends nothing is closed after the new timeout, not the default 10 s.
    let mut idle = std::net::TcpStream::connect(daemon.http).unwrap();
    let started = std::time::Instant::now();
    assert!(
        read_until_closed(&mut idle, Duration::from_secs(5)).is_some(),
        "header_timeout_secs = 1 not applied"
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    // Turned on again, without a restart.
    std::fs::write(&path, &original).unwrap();
    daemon.signal("HUP");
    let applied = "changed: header_timeout_secs, heartbeat_secs";
    assert!(daemon.wait_log_count(applied, 2, T), "{}", daemon.log());
    // The restart key is back at its running value: nothing to warn about.
    assert_eq!(
        daemon.log_count("that takes a restart"),
        1,
        "{}",
        daemon.log()
    );
    assert!(comments_within(&mut sub, Duration::from_millis(3000)) >= 1);
    // The subscriber stayed connected through both reloads.
    assert!(!sub.is_closed());
}
