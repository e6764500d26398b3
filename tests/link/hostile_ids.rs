//! One request must never take the link down (security review F1, F1b; ejabberd review F1, D1),
//! against a real Prosody with `mod_muc_mam` on the MUC component (so resumes can reach the
//! archive): resume ids in no shape the daemon issues (`?lastEventId=` and `Last-Event-ID`:
//! C0 controls, ESC, U+FFFE, a newline, 8000 bytes, `x~5`, `~3`, a stanza-id-shaped id the room
//! never issued, a hostile composite id) get a `gap` event (or `400` where HTTP itself refuses
//! the header), and hostile room nodes with `on_demand = yes` get `404`; meanwhile the
//! component link stays up (`upstream_up 1`, no reconnect), and a subscriber of another room
//! sees no `reconnecting` and loses no message. And a named event's id (`<stanza-id>~<n>`)
//! whose message the ring no longer holds resumes from the archive after that message.

use std::time::{Duration, Instant};

use testkit::daemon::Daemon;
use testkit::prosody::Prosody;
use testkit::sse::field;
use testkit::sse::{SseClient, SseEvent, http_get};
use testkit::xmpp::XmppClient;
use testkit::xmpp::stanza_id;

const T: Duration = Duration::from_secs(10);
const MAM: &str = r#"modules_enabled = { "muc_mam" }"#;

/// Sends `body` to `room` and returns the stanza-id Prosody stamped on it.
fn post(alice: &mut XmppClient, room: &str, body: &str) -> String {
    alice.send_groupchat(room, body);
    let echoed = alice.wait_for(body, T);
    stanza_id(&echoed).unwrap_or_else(|| panic!("no stanza-id on {echoed} (mod_muc_mam?)"))
}

fn metric(daemon: &Daemon, name: &str) -> String {
    let (status, _, text) = http_get(daemon.http, "/metrics");
    assert_eq!(status, 200);
    text.lines()
        .find(|l| l.starts_with(&format!("muc_eventsource_{name} ")))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        .to_string()
}

/// The link is up and has never been re-established; nothing in either log says otherwise.
fn assert_link_never_dropped(daemon: &Daemon, prosody: &Prosody, after: &str) {
    assert_eq!(
        metric(daemon, "upstream_up"),
        "muc_eventsource_upstream_up 1",
        "after {after}\n{}",
        daemon.log_tail_block()
    );
    assert_eq!(
        metric(daemon, "upstream_reconnects_total"),
        "muc_eventsource_upstream_reconnects_total 0",
        "after {after}\n{}",
        daemon.log_tail_block()
    );
    let log = prosody.log();
    assert!(
        !log.contains("not-well-formed"),
        "after {after}, Prosody saw ill-formed XML:\n{}",
        testkit::tail(&log, 20)
    );
}

/// Percent-encodes every byte that is not unreserved, for a query value.
fn query_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// What a stream opened with a hostile resume id starts with.
fn first_event(daemon: &Daemon, path: &str, headers: &[(&str, &str)]) -> (u16, Option<SseEvent>) {
    let mut sub = SseClient::connect(daemon.http, path, headers);
    if sub.status() != 200 {
        return (sub.status(), None);
    }
    (200, sub.next_event(T))
}

#[test]
fn hostile_resume_ids_and_room_nodes_get_gap_or_404_and_the_link_stays_up() {
    let prosody = Prosody::start_with("", MAM);
    prosody.create_rooms(&["lobby", "news"]);
    let mut alice = XmppClient::user(&prosody, "alice", &["lobby", "news"]);
    let daemon = Daemon::start(
        &prosody,
        &["lobby", "news"],
        "history = 0\nring_events = 8\non_demand = yes",
    );
    // A subscriber of another room, watching for trouble the whole time.
    let mut watcher = SseClient::connect(daemon.http, "/eventsource/news", &[]);
    assert_eq!(watcher.status(), 200);
    std::thread::sleep(Duration::from_millis(200));
    let real = post(&mut alice, "lobby", "before");
    // A stanza-id in the shape of the room's own that the room never issued: it may go to the
    // archive, which does not know it (Prosody answers item-not-found).
    let foreign: String = real
        .chars()
        .map(|c| if c.is_ascii_digit() { '7' } else { 'Q' })
        .collect();

    let huge = "a".repeat(8000);
    let hostile: Vec<(&str, String)> = vec![
        ("C0 control", "\u{1}".into()),
        ("U+FFFE", "x\u{fffe}".into()),
        ("U+FFFF", "\u{ffff}".into()),
        ("ESC", "\u{1b}[2J".into()),
        ("newline", "x\n19:00:00.000 ERROR forged".into()),
        ("8000 bytes", huge.clone()),
        ("named id of an unknown message", "x~5".into()),
        ("named id without a message", "~3".into()),
        ("foreign stanza-id", foreign.clone()),
        ("foreign stanza-id, named", format!("{foreign}~2")),
        ("composite", "lobby=%01&news=".into()),
    ];
    let mut posted = Vec::new();
    for (what, id) in &hostile {
        // Over the query string, which can carry anything.
        let path = format!("/eventsource/lobby?lastEventId={}", query_encode(id));
        let (status, event) = first_event(&daemon, &path, &[]);
        assert_eq!(status, 200, "{what} in the query");
        let event = event.unwrap_or_else(|| panic!("{what} in the query: no event"));
        assert_eq!(event.event_type, "gap", "{what} in the query: {event:?}");
        assert_eq!(field(&event, "lastEventId").as_deref(), Some(id.as_str()));
        // Over the header: HTTP refuses control characters in a header value (400) and a
        // newline ends the header; everything else must give the same gap.
        if !id.contains(|c: char| c.is_ascii_control()) {
            let (status, event) =
                first_event(&daemon, "/eventsource/lobby", &[("Last-Event-ID", id)]);
            assert_eq!(status, 200, "{what} in the header");
            let event = event.unwrap_or_else(|| panic!("{what} in the header: no event"));
            assert_eq!(event.event_type, "gap", "{what} in the header: {event:?}");
        } else if !id.contains('\n') {
            let (status, _) = first_event(&daemon, "/eventsource/lobby", &[("Last-Event-ID", id)]);
            assert_eq!(status, 400, "{what} in the header");
        }
        let body = format!("news while {what}");
        post(&mut alice, "news", &body);
        posted.push(body);
    }
    // Several rooms on one stream, with a hostile composite id and a plain hostile id.
    for id in ["lobby=%2501&news=%EF%BF%BE", "%01"] {
        let path = format!("/eventsource?room=lobby&room=news&lastEventId={id}");
        let (status, event) = first_event(&daemon, &path, &[]);
        assert_eq!(status, 200, "{id}");
        assert_eq!(event.map(|e| e.event_type).as_deref(), Some("gap"), "{id}");
    }

    // Hostile room nodes, with on_demand: never in the table, never sent upstream.
    for node in [
        "%EF%BF%BE",
        "%01",
        "%E2%80%8E",
        "%F3%A0%80%81",
        "a%EF%BF%BF",
    ] {
        let (status, _, body) = http_get(daemon.http, &format!("/eventsource/{node}"));
        assert_eq!(status, 404, "/eventsource/{node}: {body}");
        let body = format!("news after node {node}");
        post(&mut alice, "news", &body);
        posted.push(body);
    }

    // Give a query or disco#info that slipped through time to reach Prosody and be refused.
    std::thread::sleep(Duration::from_secs(3));
    post(&mut alice, "news", "news at the end");
    posted.push("news at the end".into());
    let mut got = Vec::new();
    let deadline = Instant::now() + T;
    while got.len() < posted.len() && Instant::now() < deadline {
        let Some(e) = watcher.next_event(T) else {
            break;
        };
        assert_ne!(
            field(&e, "status").as_deref(),
            Some("reconnecting"),
            "the other room's subscriber saw the link drop: {e:?}\n{}",
            daemon.log_tail_block()
        );
        if e.event_type == "message" {
            got.push(field(&e, "body").unwrap_or_default());
        }
    }
    assert_eq!(
        got, posted,
        "every message of the other room, once, in order"
    );
    assert_link_never_dropped(&daemon, &prosody, "the hostile requests");
    let log = daemon.log();
    assert!(
        !log.contains('\u{1b}') && !log.contains("\n19:00:00.000 ERROR forged"),
        "a client's bytes reached the log raw"
    );
    // The real id still resumes (after `before`: nothing missed).
    let mut resumed = SseClient::connect(
        daemon.http,
        "/eventsource/lobby",
        &[("Last-Event-ID", &real)],
    );
    post(&mut alice, "lobby", "after");
    let e = resumed.next_event(T).expect("the next message");
    assert_eq!(field(&e, "body").as_deref(), Some("after"), "{e:?}");
}

#[test]
fn a_named_event_id_resumes_from_the_archive_after_its_message() {
    let prosody = Prosody::start_with("", MAM);
    prosody.create_rooms(&["lobby"]);
    let mut alice = XmppClient::user(&prosody, "alice", &["lobby"]);
    let daemon = Daemon::start(&prosody, &["lobby"], "ring_events = 4\nhistory = 0");
    let mut sub = SseClient::connect(daemon.http, "/eventsource/lobby", &[]);
    std::thread::sleep(Duration::from_millis(200));
    let seen = post(&mut alice, "lobby", "seen");
    let event = sub.next_event(T).expect("seen");
    assert_eq!(event.last_event_id, seen);
    drop(sub);
    let missed: Vec<String> = (0..7).map(|i| format!("missed {i}")).collect();
    for body in &missed {
        post(&mut alice, "lobby", body);
    }
    let mut probe = SseClient::connect(daemon.http, "/eventsource/lobby?history=4", &[]);
    assert_eq!(probe.collect(4, T).len(), 4);
    // A client whose last event was a named one after `seen` (a subject, a status…): the ring
    // no longer holds `seen`, so the archive is asked for what followed it, without the `~2`.
    let mut resumed = SseClient::connect(
        daemon.http,
        "/eventsource/lobby",
        &[("Last-Event-ID", &format!("{seen}~2"))],
    );
    let mut got = Vec::new();
    while got.len() < missed.len() {
        let e = resumed.next_event(T).expect("the missed messages");
        assert_ne!(
            e.event_type,
            "gap",
            "the archive fills it: {e:?}\n{}",
            daemon.log_tail_block()
        );
        if e.event_type == "message" {
            got.push(field(&e, "body").unwrap_or_default());
        }
    }
    assert_eq!(got, missed, "every missed message, once, in order");
    assert!(resumed.next_event(Duration::from_millis(300)).is_none());
    assert_link_never_dropped(&daemon, &prosody, "the resume");
}
