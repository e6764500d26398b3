//! Streams people can rely on, against a real Prosody: event ids, resume with `Last-Event-ID`
//! (header and `?lastEventId=`), the `gap` event, `?history=N`, MUC history seeding without
//! duplicates across an upstream restart, stanza-ids as event ids (with `mod_muc_mam`), status
//! and subject events, heartbeat comments, and what a destroyed room does to its streams.

use std::time::Duration;

use testkit::daemon::Daemon;
use testkit::json;
use testkit::prosody::{Prosody, ROOM_OWNER};
use testkit::sse::{SseClient, SseEvent, http_get};
use testkit::sse::{bodies, body, field};
use testkit::xmpp::XmppClient;
use testkit::xmpp::stanza_id;

const T: Duration = Duration::from_secs(10);

/// Messages events only, waiting for `n` of them.
fn messages(sub: &mut SseClient, n: usize) -> Vec<SseEvent> {
    let mut out = Vec::new();
    while out.len() < n {
        match sub.next_event(T) {
            Some(e) if e.event_type == "message" => out.push(e),
            Some(_) => {}
            None => break,
        }
    }
    out
}

#[test]
fn reconnect_with_last_event_id_gets_exactly_the_missed_messages() {
    let prosody = Prosody::start();
    prosody.create_rooms(&["lobby"]);
    let mut alice = XmppClient::user(&prosody, "alice", &["lobby"]);
    let daemon = Daemon::start(&prosody, &["lobby"], "history = 0");
    let mut sub = SseClient::connect(daemon.http, "/eventsource/lobby", &[]);
    std::thread::sleep(Duration::from_millis(200));
    for i in 0..3 {
        alice.send_groupchat("lobby", &format!("seen {i}"));
    }
    let seen = messages(&mut sub, 3);
    assert_eq!(bodies(&seen), vec!["seen 0", "seen 1", "seen 2"]);
    let last = seen[2].last_event_id.clone();
    assert!(!last.is_empty(), "every event carries an id");
    drop(sub);
    for i in 0..4 {
        alice.send_groupchat("lobby", &format!("missed {i}"));
    }
    // The bodies must have reached the daemon before we resume.
    let mut probe = SseClient::connect(daemon.http, "/eventsource/lobby?history=4", &[]);
    assert_eq!(messages(&mut probe, 4).len(), 4);

    let want = vec!["missed 0", "missed 1", "missed 2", "missed 3"];
    let mut resumed = SseClient::connect(
        daemon.http,
        "/eventsource/lobby",
        &[("Last-Event-ID", &last)],
    );
    assert_eq!(bodies(&resumed.collect(4, T)), want);
    // The query fallback, for clients that cannot set headers.
    let mut by_query = SseClient::connect(
        daemon.http,
        &format!("/eventsource/lobby?lastEventId={last}"),
        &[],
    );
    assert_eq!(bodies(&by_query.collect(4, T)), want);
    // Nothing more: no duplicates, and live events continue after the replay.
    alice.send_groupchat("lobby", "live");
    assert_eq!(bodies(&resumed.collect(1, T)), vec!["live"]);
    assert!(resumed.next_event(Duration::from_millis(300)).is_none());
}

#[test]
fn an_id_the_ring_no_longer_holds_gets_a_gap_event_then_what_is_there() {
    let prosody = Prosody::start();
    prosody.create_rooms(&["lobby"]);
    let mut alice = XmppClient::user(&prosody, "alice", &["lobby"]);
    let daemon = Daemon::start(&prosody, &["lobby"], "ring_events = 4\nhistory = 0");
    let mut sub = SseClient::connect(daemon.http, "/eventsource/lobby", &[]);
    std::thread::sleep(Duration::from_millis(200));
    alice.send_groupchat("lobby", "first");
    let first = sub.next_event(T).unwrap();
    for i in 0..6 {
        alice.send_groupchat("lobby", &format!("later {i}"));
    }
    assert_eq!(messages(&mut sub, 6).len(), 6);
    let mut resumed = SseClient::connect(
        daemon.http,
        "/eventsource/lobby",
        &[("Last-Event-ID", &first.last_event_id)],
    );
    let events = resumed.collect(5, T);
    assert_eq!(events[0].event_type, "gap", "{events:?}");
    assert_eq!(
        field(&events[0], "lastEventId").as_deref(),
        Some(first.last_event_id.as_str())
    );
    assert_eq!(
        bodies(&events[1..]),
        vec!["later 2", "later 3", "later 4", "later 5"]
    );
    // An id from another run (or made up) is a gap too.
    let mut unknown = SseClient::connect(
        daemon.http,
        "/eventsource/lobby",
        &[("Last-Event-ID", "zzz-1")],
    );
    assert_eq!(unknown.next_event(T).unwrap().event_type, "gap");
}

#[test]
fn history_seeds_the_ring_and_an_upstream_restart_duplicates_nothing() {
    let mut prosody = Prosody::start();
    prosody.create_rooms(&["lobby"]);
    let mut alice = XmppClient::user(&prosody, "alice", &["lobby"]);
    for i in 0..3 {
        alice.send_groupchat("lobby", &format!("before start {i}"));
    }
    alice.wait_for("before start 2", T);
    let daemon = Daemon::start(&prosody, &["lobby"], "history = 10\nreconnect_max_secs = 2");
    // History fetched on join is in the ring: ?history=N replays it.
    let mut sub = SseClient::connect(daemon.http, "/eventsource/lobby?history=10", &[]);
    assert_eq!(
        bodies(&messages(&mut sub, 3)),
        vec!["before start 0", "before start 1", "before start 2"]
    );
    alice.send_groupchat("lobby", "live before restart");
    assert_eq!(bodies(&messages(&mut sub, 1)), vec!["live before restart"]);

    // Prosody restarts (the rooms are persistent): the daemon reconnects and re-joins, and the
    // room replays its history, all of which this subscriber has already had.
    prosody.restart();
    daemon.wait_log_count("joined room lobby@", 2, Duration::from_secs(20));
    let mut alice = XmppClient::connect(&prosody, "alice", "pw");
    alice.join("lobby", "alice");
    alice.send_groupchat("lobby", "after restart");
    let (statuses, got) = sub.statuses_then_message(T, "the stream survives the upstream restart");
    assert_eq!(got, "after restart", "no history message came twice");
    assert_eq!(statuses, vec!["reconnecting", "joined"]);
    assert!(sub.next_event(Duration::from_millis(500)).is_none());
}

#[test]
fn stanza_ids_are_the_event_ids_when_the_room_has_mam() {
    let prosody = Prosody::start_with("", r#"modules_enabled = { "muc_mam" }"#);
    prosody.create_rooms(&["lobby"]);
    let mut alice = XmppClient::user(&prosody, "alice", &["lobby"]);
    let daemon = Daemon::start(&prosody, &["lobby"], "history = 0");
    let mut sub = SseClient::connect(daemon.http, "/eventsource/lobby", &[]);
    std::thread::sleep(Duration::from_millis(200));
    alice.send_groupchat("lobby", "archived");
    let echoed = alice.wait_for("archived", T);
    let stanza_id = stanza_id(&echoed).expect("Prosody stamps a stanza-id with mod_muc_mam");
    let event = sub.next_event(T).unwrap();
    assert_eq!(body(&event), "archived");
    assert_eq!(event.last_event_id, stanza_id);
}

#[test]
fn heartbeat_comments_keep_idle_streams_alive() {
    let prosody = Prosody::start();
    prosody.create_rooms(&["lobby"]);
    let daemon = Daemon::start(&prosody, &["lobby"], "heartbeat_secs = 1");
    let mut sub = SseClient::connect(daemon.http, "/eventsource/lobby", &[]);
    assert!(sub.next_event(Duration::from_millis(2500)).is_none());
    assert!(sub.parser.comments >= 2, "{} comments", sub.parser.comments);
}

#[test]
fn shutdown_sends_a_status_event_before_closing() {
    let prosody = Prosody::start();
    prosody.create_rooms(&["lobby"]);
    let mut daemon = Daemon::start(&prosody, &["lobby"], "");
    let mut sub = SseClient::connect(daemon.http, "/eventsource/lobby", &[]);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(daemon.stop().code(), Some(0));
    let event = sub.next_event(T).expect("a last event");
    assert_eq!(event.event_type, "status");
    assert_eq!(field(&event, "status").as_deref(), Some("shutdown"));
    assert!(sub.wait_closed(T));
}

#[test]
fn a_destroyed_room_ends_its_streams_and_answers_204() {
    let prosody = Prosody::start();
    prosody.create_rooms(&["lobby", "news"]);
    let daemon = Daemon::start(&prosody, &["lobby", "news"], "");
    let mut lobby = SseClient::connect(daemon.http, "/eventsource/lobby", &[]);
    let mut news = SseClient::connect(daemon.http, "/eventsource/news", &[]);
    std::thread::sleep(Duration::from_millis(200));
    let (user, pass) = ROOM_OWNER;
    let mut owner = XmppClient::connect(&prosody, user, pass);
    let jid = owner.room_jid("lobby");
    owner.iq(
        "destroy1",
        &format!(
            "<iq type='set' to='{jid}' id='destroy1'><query xmlns='http://jabber.org/protocol/muc#owner'><destroy><reason>closing</reason></destroy></query></iq>"
        ),
    );
    let event = lobby.next_event(T).expect("a final event");
    assert_eq!(event.event_type, "status");
    assert_eq!(field(&event, "status").as_deref(), Some("destroyed"));
    assert!(lobby.wait_closed(T), "the stream ends");
    assert_eq!(http_get(daemon.http, "/eventsource/lobby").0, 204);
    // The other room is untouched.
    owner.join("news", user);
    owner.send_groupchat("news", "still here");
    assert_eq!(bodies(&messages(&mut news, 1)), vec!["still here"]);
}

#[test]
fn join_leave_on_request_corrections_and_retractions() {
    let prosody = Prosody::start_with("", r#"modules_enabled = { "muc_mam" }"#);
    prosody.create_rooms(&["lobby"]);
    let mut alice = XmppClient::user(&prosody, "alice", &["lobby"]);
    let daemon = Daemon::start(&prosody, &["lobby"], "history = 0");
    let mut plain = SseClient::connect(daemon.http, "/eventsource/lobby", &[]);
    let mut all = SseClient::connect(daemon.http, "/eventsource/lobby?events=join,leave", &[]);
    std::thread::sleep(Duration::from_millis(200));

    let mut bob = XmppClient::user(&prosody, "bob", &["lobby"]);
    let room = alice.room_jid("lobby");
    alice.send_raw(&format!(
        "<message to='{room}' type='groupchat' id='orig-1'><body>helo</body></message>"
    ));
    let echoed = alice.wait_for("helo", T);
    let stanza_id = stanza_id(&echoed).unwrap();
    // Both streams have the message before it is corrected and retracted: the events of one
    // upstream read go out together, and a message retracted before it was sent is never sent.
    let mut events_all = all.collect(2, T);
    let mut events_plain = plain.collect(1, T);
    alice.send_raw(&format!(
        "<message to='{room}' type='groupchat' id='orig-2'><body>hello</body><replace xmlns='urn:xmpp:message-correct:0' id='orig-1'/></message>"
    ));
    alice.send_raw(&format!(
        "<message to='{room}' type='groupchat' id='r1'><retract xmlns='urn:xmpp:message-retract:1' id='{stanza_id}'/><body>/me retracted a message</body><fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:message-retract:1'/></message>"
    ));
    alice.wait_for("urn:xmpp:message-retract:1", T);
    bob.leave("lobby");

    let types = |events: &[SseEvent]| -> Vec<String> {
        events.iter().map(|e| e.event_type.clone()).collect()
    };
    events_all.extend(all.collect(3, T));
    let events = events_all;
    assert_eq!(
        types(&events),
        vec!["join", "message", "correction", "retraction", "leave"],
        "{events:?}"
    );
    assert_eq!(field(&events[0], "nick").as_deref(), Some("bob"));
    assert_eq!(events[1].last_event_id, stanza_id);
    assert_eq!(field(&events[2], "id").as_deref(), Some(stanza_id.as_str()));
    assert_eq!(field(&events[2], "body").as_deref(), Some("hello"));
    assert_eq!(field(&events[3], "id").as_deref(), Some(stanza_id.as_str()));
    assert_eq!(field(&events[4], "nick").as_deref(), Some("bob"));
    // Without ?events=, no join/leave; the retraction's fallback body is not a message.
    events_plain.extend(plain.collect(2, T));
    let events = events_plain;
    assert_eq!(types(&events), vec!["message", "correction", "retraction"]);
    assert!(plain.next_event(Duration::from_millis(300)).is_none());
    // A retracted message is not replayed to new subscribers.
    let mut late = SseClient::connect(daemon.http, "/eventsource/lobby?history=10", &[]);
    let events = late.collect(3, T);
    assert_eq!(
        types(&events),
        vec!["status", "correction", "retraction"],
        "{events:?}"
    );
}

#[test]
fn several_rooms_on_one_stream_resume_every_room() {
    let prosody = Prosody::start();
    prosody.create_rooms(&["lobby", "news", "quiet"]);
    let mut alice = XmppClient::user(&prosody, "alice", &["lobby"]);
    alice.join("news", "alice");
    let daemon = Daemon::start(&prosody, &["lobby", "news", "quiet"], "history = 0");
    let path = "/eventsource?room=lobby&room=news&room=quiet";
    let mut sub = SseClient::connect(daemon.http, path, &[]);
    assert_eq!(sub.status(), 200);
    std::thread::sleep(Duration::from_millis(200));
    alice.send_groupchat("lobby", "l1");
    alice.wait_for("l1", T);
    alice.send_groupchat("news", "n1");
    alice.wait_for("n1", T);
    alice.send_groupchat("lobby", "l2");
    let events = messages(&mut sub, 3);
    let rooms: Vec<String> = events.iter().map(|e| field(e, "room").unwrap()).collect();
    assert_eq!(
        rooms,
        vec!["lobby", "news", "lobby"],
        "publication order, room named"
    );
    assert_eq!(bodies(&events), vec!["l1", "n1", "l2"]);
    // Still the mod_muc_eventsource fields, plus "room".
    let json = json::parse(&events[0].data).unwrap();
    assert_eq!(json::keys(&json), vec!["room", "nick", "body"]);
    let last = events[2].last_event_id.clone();
    assert!(
        last.starts_with("lobby=") && last.contains("&news="),
        "{last}"
    );
    drop(sub);

    alice.send_groupchat("news", "n2");
    alice.wait_for("n2", T);
    alice.send_groupchat("lobby", "l3");
    alice.wait_for("l3", T);
    // Wait until the daemon has published l3 (alice's echo can come first).
    let deadline = std::time::Instant::now() + T;
    loop {
        let mut probe = SseClient::connect(daemon.http, "/eventsource/lobby?history=1", &[]);
        if bodies(&probe.collect(1, Duration::from_millis(500))) == vec!["l3"] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "l3 never reached the daemon"
        );
    }
    let mut resumed = SseClient::connect(daemon.http, path, &[("Last-Event-ID", &last)]);
    let events = messages(&mut resumed, 2);
    assert_eq!(
        bodies(&events),
        vec!["n2", "l3"],
        "each room resumes where it was"
    );
    assert!(resumed.next_event(Duration::from_millis(300)).is_none());
    // Bounded: at most 8 rooms; unknown rooms are 404.
    assert_eq!(
        http_get(daemon.http, "/eventsource?room=lobby&room=nope").0,
        404
    );
}

#[test]
fn resume_across_a_daemon_restart_right_after_it_starts() {
    let prosody = Prosody::start_with("", r#"modules_enabled = { "muc_mam" }"#);
    prosody.create_rooms(&["lobby"]);
    let mut alice = XmppClient::user(&prosody, "alice", &["lobby"]);
    let config = Daemon::config_text(&prosody, &["lobby"], "history = 20");
    let mut first = Daemon::spawn_raw(&config);
    first.wait_ready(&["lobby"], T);
    let mut sub = SseClient::connect(first.http, "/eventsource/lobby", &[]);
    std::thread::sleep(Duration::from_millis(200));
    alice.send_groupchat("lobby", "one");
    alice.send_groupchat("lobby", "two");
    let seen = messages(&mut sub, 2);
    assert_eq!(first.stop().code(), Some(0));
    // The last event the client saw is the shutdown status: a named event whose id still
    // leads back to the last message.
    let last = sub.next_event(T).expect("shutdown status");
    assert_eq!(last.event_type, "status");
    assert!(
        last.last_event_id.starts_with(&seen[1].last_event_id),
        "{} / {}",
        last.last_event_id,
        seen[1].last_event_id
    );
    alice.send_groupchat("lobby", "three");
    alice.wait_for("three", T);
    // A new daemon on the same port; the client reconnects at once, before the room is joined.
    let second = Daemon::spawn_raw(&config);
    let deadline = std::time::Instant::now() + T;
    let mut resumed = loop {
        if std::net::TcpStream::connect(second.http).is_ok() {
            break SseClient::connect(
                second.http,
                "/eventsource/lobby",
                &[("Last-Event-ID", &last.last_event_id)],
            );
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon did not listen"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut got = Vec::new();
    while let Some(e) = resumed.next_event(Duration::from_secs(3)) {
        assert_ne!(e.event_type, "gap", "{e:?}");
        if e.event_type == "message" {
            got.push(body(&e));
        }
    }
    assert_eq!(got, vec!["three"], "exactly the missed message, once");
}

#[test]
fn a_resume_older_than_the_ring_is_filled_from_the_rooms_archive() {
    let prosody = Prosody::start_with("", r#"modules_enabled = { "muc_mam" }"#);
    prosody.create_rooms(&["lobby"]);
    let mut alice = XmppClient::user(&prosody, "alice", &["lobby"]);
    let daemon = Daemon::start(&prosody, &["lobby"], "ring_events = 4\nhistory = 0");
    let mut sub = SseClient::connect(daemon.http, "/eventsource/lobby", &[]);
    std::thread::sleep(Duration::from_millis(200));
    alice.send_groupchat("lobby", "seen");
    let seen = messages(&mut sub, 1);
    drop(sub);
    let missed: Vec<String> = (0..7).map(|i| format!("missed {i}")).collect();
    for body in &missed {
        alice.send_groupchat("lobby", body);
    }
    alice.wait_for("missed 6", T);
    // The ring holds only the last four: the first three come from the archive.
    let mut probe = SseClient::connect(daemon.http, "/eventsource/lobby?history=4", &[]);
    assert_eq!(messages(&mut probe, 4).len(), 4);
    let mut resumed = SseClient::connect(
        daemon.http,
        "/eventsource/lobby",
        &[("Last-Event-ID", &seen[0].last_event_id)],
    );
    let mut got = Vec::new();
    while got.len() < missed.len() {
        let e = resumed.next_event(T).expect("the missed messages");
        assert_ne!(e.event_type, "gap", "the archive filled it: {e:?}");
        if e.event_type == "message" {
            got.push(body(&e));
        }
    }
    assert_eq!(got, missed, "all missed messages, once, in order");
    assert!(resumed.next_event(Duration::from_millis(300)).is_none());
    assert!(
        daemon.log().contains("from the archive"),
        "{}",
        daemon.log()
    );
}

#[test]
fn a_fanout_delay_holds_events_back_and_loses_none() {
    let prosody = Prosody::start();
    prosody.create_rooms(&["lobby"]);
    let mut alice = XmppClient::user(&prosody, "alice", &["lobby"]);
    // A ring smaller than the burst: events must be written before they are evicted.
    let daemon = Daemon::start(
        &prosody,
        &["lobby"],
        "history = 0\nring_events = 8\nfanout_delay_ms = 300",
    );
    let mut subs: Vec<SseClient> = (0..2)
        .map(|_| SseClient::connect(daemon.http, "/eventsource/lobby", &[]))
        .collect();
    // A window starts at the first unwritten event (the join's events are a few): let those
    // go out, so that the next window starts with the message below.
    std::thread::sleep(Duration::from_millis(1000));
    let sent_at = std::time::Instant::now();
    alice.send_groupchat("lobby", "first");
    let first = messages(&mut subs[0], 1);
    let waited = sent_at.elapsed();
    assert_eq!(bodies(&first), vec!["first"]);
    assert!(
        waited >= Duration::from_millis(250),
        "delivered {waited:?} after sending, before the 300 ms fan-out delay"
    );
    let burst: Vec<String> = (0..30).map(|i| format!("burst {i}")).collect();
    for text in &burst {
        alice.send_groupchat("lobby", text);
    }
    assert_eq!(bodies(&messages(&mut subs[0], 30)), burst);
    let mut all = vec!["first".to_string()];
    all.extend(burst.iter().cloned());
    assert_eq!(bodies(&messages(&mut subs[1], 31)), all);
}
