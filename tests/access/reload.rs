//! `SIGHUP` reloads the room list and tokens without dropping the subscribers of rooms that
//! stay; removed rooms end their streams with a `status` event; a broken file changes nothing;
//! every key of `config::KEYS` is either applied to the running daemon or named in the
//! "needs a restart" warning.

use std::time::Duration;

use testkit::daemon::Daemon;
use testkit::json::{self, Value};
use testkit::prosody::{Prosody, ROOM_OWNER};
use testkit::sse::{SseClient, http_get};
use testkit::xmpp::XmppClient;

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
        json::parse(&last.data)
            .unwrap()
            .get("status")
            .and_then(Value::as_str),
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

/// `text` with `key = value`: the key's line replaced, or the line added.
fn with_key(text: &str, key: &str, value: &str) -> String {
    let prefix = format!("{key} =");
    let mut found = false;
    let mut out: Vec<String> = text
        .lines()
        .map(|line| {
            if line.starts_with(&prefix) {
                found = true;
                format!("{key} = {value}")
            } else {
                line.to_string()
            }
        })
        .collect();
    if !found {
        out.push(format!("{key} = {value}"));
    }
    out.join("\n") + "\n"
}

/// `text` with every key of `config::KEYS` changed to another value the file accepts.
fn every_key_changed(text: &str) -> String {
    use muc_eventsource::config::{KEYS, Value, parse};
    let mut file = text.to_string();
    for key in KEYS {
        let current = parse("t", &file).unwrap().describe();
        let now = current
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{} = ", key.name)))
            .unwrap()
            .to_string();
        let candidates: Vec<String> = match (key.name, key.value) {
            ("rooms", _) => vec![format!("{now}, extra")],
            (_, Value::Number { min, max, .. }) => {
                [min, min + 1, max].iter().map(usize::to_string).collect()
            }
            ("component", _) => vec!["other.localhost".into()],
            ("muc", _) => vec!["muc.localhost".into()],
            ("secret", _) => vec!["another-secret".into()],
            ("upstream", _) => vec!["127.0.0.1:9".into()],
            ("listen", _) => vec!["127.0.0.1:9".into()],
            ("nick", _) => vec!["watcher".into()],
            ("log_level", _) => vec!["info".into()],
            ("on_demand", _) => vec!["yes".into()],
            ("auth_failure", _) => vec!["retry".into()],
            ("events", _) => vec!["join".into()],
            ("token" | "status_token", _) => vec!["tok".into()],
            ("private_rooms", _) => vec!["allow".into()],
            ("cors_origins", _) => vec!["https://a.example".into()],
            (name, _) => panic!("`{name}` needs another value in every_key_changed()"),
        };
        file = candidates
            .iter()
            .filter(|v| **v != now)
            .map(|v| with_key(&file, key.name, v))
            .find(|f| {
                parse("t", f).is_ok_and(|c| {
                    let old = parse("t", &file).unwrap();
                    (key.differs)(&old, &c)
                })
            })
            .unwrap_or_else(|| panic!("no other value for `{}`", key.name));
    }
    file
}

#[test]
fn sighup_walks_every_key_applying_the_live_ones_and_naming_the_rest() {
    use muc_eventsource::config::{KEYS, Reload};
    let prosody = Prosody::start();
    prosody.create_rooms(&["lobby", "extra"]);
    let daemon = Daemon::start(&prosody, &["lobby"], "");
    let path = daemon.config_path().clone();
    let changed = every_key_changed(&std::fs::read_to_string(&path).unwrap());
    std::fs::write(&path, &changed).unwrap();
    daemon.signal("HUP");
    let names = |class: Reload| -> String {
        KEYS.iter()
            .filter(|k| k.reload == class)
            .map(|k| k.name)
            .collect::<Vec<_>>()
            .join(", ")
    };
    daemon.expect_log(
        &format!(
            "reload: {} changed; that takes a restart",
            names(Reload::Restart)
        ),
        T,
    );
    daemon.expect_log(&format!("; changed: {}\n", names(Reload::Live)), T);
    // Still serving on the start-up address, with the new token (`extra` waits for a table
    // entry: `max_rooms` keeps its start-up size).
    assert_eq!(http_get(daemon.http, "/eventsource/lobby").0, 403);
    let lobby = SseClient::connect(daemon.http, "/eventsource/lobby?token=tok", &[]);
    assert_eq!(lobby.status(), 200);
}
