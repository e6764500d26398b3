//! The core promises, each written once and run against both XMPP servers the daemon is tested
//! with (Prosody 0.12 with `mod_muc_mam`, ejabberd 23.01 with `mod_mam`): the
//! mod_muc_eventsource JSON shape, stanza-ids as event ids, exact `Last-Event-ID` resume (from
//! the ring and from the room's archive), an XMPP server restart under a connected subscriber,
//! 403 for a members-only room without its read token, 404 for a missing one (not created),
//! and the three defects the ejabberd compatibility review (2026-12-04) found: a named-event id
//! resumed after a daemon restart (filled from the archive; without history at least a `gap`),
//! an on-demand room left once, an unknown id is a `gap`.
//!
//! `both!(name)` turns `fn name(kind: Kind)` into the tests `name::prosody` and
//! `name::ejabberd`.

use std::time::Duration;

use testkit::daemon::Daemon;
use testkit::json::{self, Value};
use testkit::prosody::ROOM_OWNER;
use testkit::server::Kind;
use testkit::sse::{SseClient, SseEvent, http_get, http_request};
use testkit::sse::{bodies, body, field};
use testkit::xmpp::{XmppClient, stanza_attr, stanza_id};

const T: Duration = Duration::from_secs(10);

macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[test]
            fn prosody() {
                super::$name(super::Kind::Prosody);
            }
            #[test]
            fn ejabberd() {
                super::$name(super::Kind::Ejabberd);
            }
        }
    };
}

both!(messages_stream_with_the_mod_muc_eventsource_shape_and_stanza_ids);
both!(last_event_id_resumes_exactly_from_the_ring_and_the_archive);
both!(a_server_restart_under_a_subscriber_loses_and_repeats_nothing);
both!(a_members_only_room_answers_403_by_default);
both!(a_missing_room_answers_404_and_is_not_created);
both!(a_named_event_id_resumes_from_the_archive_after_a_daemon_restart);
both!(a_named_event_id_without_history_is_never_a_silent_loss);
both!(an_on_demand_room_is_left_once_and_stays_left);
both!(an_unknown_id_is_a_gap_not_a_replay_of_the_archive);

/// Sends `body` to `room` and returns the room's stanza-id for it, read from the echo (the
/// room reflects the message with the sender's id).
fn post(c: &mut XmppClient, room: &str, body: &str) -> String {
    let id = c.send_groupchat(room, body);
    let (_, echo) = c.wait_match(
        |s| s.starts_with("<message") && stanza_attr(s, "id").as_deref() == Some(id.as_str()),
        T,
        &format!("the echo of {id} ({body:?})"),
    );
    stanza_id(&echo).unwrap_or_else(|| panic!("no stanza-id on the echo of {body:?}: {echo}"))
}

/// Every event until the stream is quiet for `quiet`.
fn drain(sub: &mut SseClient, quiet: Duration) -> Vec<SseEvent> {
    let mut out = Vec::new();
    while let Some(e) = sub.next_event(quiet) {
        out.push(e);
    }
    out
}

fn messages_stream_with_the_mod_muc_eventsource_shape_and_stanza_ids(kind: Kind) {
    let server = kind.start();
    server.create_rooms(&["lobby"]);
    let mut alice = XmppClient::user(&*server, "alice", &["lobby"]);
    let daemon = Daemon::start(&*server, &["lobby"], "history = 0");
    let mut sub = SseClient::connect(daemon.http, "/eventsource/lobby", &[]);
    assert_eq!(sub.status(), 200);
    assert_eq!(sub.header("content-type"), Some("text/event-stream"));
    std::thread::sleep(Duration::from_millis(200));
    let sent = ["plain", "quotes \" and <xml> & amp", "non-ASCII: grüße 🎉"];
    let ids: Vec<String> = sent.iter().map(|b| post(&mut alice, "lobby", b)).collect();
    let events = sub.collect(sent.len(), T);
    assert_eq!(events.len(), sent.len(), "{events:?}");
    for ((event, body), id) in events.iter().zip(sent).zip(&ids) {
        assert_eq!(event.event_type, "message");
        let json = json::parse(&event.data).unwrap();
        assert_eq!(json::keys(&json), vec!["nick", "body"], "{}", event.data);
        assert_eq!(json.get("nick").and_then(Value::as_str), Some("alice"));
        assert_eq!(json.get("body").and_then(Value::as_str), Some(body));
        assert_eq!(
            &event.last_event_id, id,
            "the event id is the room's stanza-id"
        );
    }
}

fn last_event_id_resumes_exactly_from_the_ring_and_the_archive(kind: Kind) {
    let server = kind.start();
    server.create_rooms(&["lobby"]);
    let mut alice = XmppClient::user(&*server, "alice", &["lobby"]);
    let daemon = Daemon::start(&*server, &["lobby"], "ring_events = 4\nhistory = 0");
    let mut sub = SseClient::connect(daemon.http, "/eventsource/lobby", &[]);
    std::thread::sleep(Duration::from_millis(200));
    post(&mut alice, "lobby", "seen");
    let seen = sub.next_event(T).expect("the first message");
    drop(sub);
    // From the ring: two missed messages.
    let missed: Vec<String> = (0..2).map(|i| format!("missed {i}")).collect();
    for b in &missed {
        post(&mut alice, "lobby", b);
    }
    let mut resumed = SseClient::connect(
        daemon.http,
        "/eventsource/lobby",
        &[("Last-Event-ID", &seen.last_event_id)],
    );
    let events = drain(&mut resumed, Duration::from_secs(1));
    assert!(events.iter().all(|e| e.event_type != "gap"), "{events:?}");
    assert_eq!(bodies(&events), missed, "exactly the missed messages");
    drop(resumed);
    // From the archive: seven missed, the ring holds four.
    let more: Vec<String> = (2..9).map(|i| format!("missed {i}")).collect();
    for b in &more {
        post(&mut alice, "lobby", b);
    }
    let mut probe = SseClient::connect(daemon.http, "/eventsource/lobby?history=4", &[]);
    assert_eq!(probe.collect(4, T).len(), 4, "the daemon has seen them all");
    let mut resumed = SseClient::connect(
        daemon.http,
        "/eventsource/lobby",
        &[("Last-Event-ID", &seen.last_event_id)],
    );
    let events = drain(&mut resumed, Duration::from_secs(2));
    assert!(events.iter().all(|e| e.event_type != "gap"), "{events:?}");
    let want: Vec<String> = missed.iter().chain(&more).cloned().collect();
    assert_eq!(bodies(&events), want, "every missed message once, in order");
    daemon.expect_log("from the archive", T);
}

fn a_server_restart_under_a_subscriber_loses_and_repeats_nothing(kind: Kind) {
    let mut server = kind.start();
    server.create_rooms(&["lobby"]);
    let mut alice = XmppClient::user(&*server, "alice", &["lobby"]);
    let daemon = Daemon::start(&*server, &["lobby"], "history = 10\nreconnect_max_secs = 2");
    let mut sub = SseClient::connect(daemon.http, "/eventsource/lobby", &[]);
    std::thread::sleep(Duration::from_millis(200));
    post(&mut alice, "lobby", "before restart");
    assert_eq!(bodies(&sub.collect(1, T)), vec!["before restart"]);
    alice.close();
    server.restart();
    assert!(
        daemon.wait_log_count("joined room lobby@", 2, Duration::from_secs(30)),
        "{}",
        daemon.log_tail_block()
    );
    let mut alice = XmppClient::user(&*server, "alice", &["lobby"]);
    post(&mut alice, "lobby", "after restart");
    let (statuses, got) = sub.statuses_then_message(T, "the stream survives the restart");
    assert_eq!(got, "after restart", "no message twice, none lost");
    assert_eq!(statuses, vec!["reconnecting", "joined"]);
    let rest = drain(&mut sub, Duration::from_millis(500));
    assert!(rest.is_empty(), "{rest:?}");
}

/// A members-only room (the component a member, so the daemon is in it) is 403 without its
/// read token, and streams with it.
fn a_members_only_room_answers_403_by_default(kind: Kind) {
    let server = kind.start();
    server.create_rooms(&["lobby", "secret"]);
    let (owner, pass) = ROOM_OWNER;
    let mut c = XmppClient::connect(&*server, owner, pass);
    c.join("secret", owner);
    let jid = c.room_jid("secret");
    let reply = c.iq(
        "aff1",
        &format!(
            "<iq type='set' to='{jid}' id='aff1'><query xmlns='http://jabber.org/protocol/muc#admin'><item affiliation='member' jid='{}'/></query></iq>",
            server.component()
        ),
    );
    assert!(reply.contains("type='result'"), "{reply}");
    c.configure_room("secret", &[("muc#roomconfig_membersonly", "1")]);
    let daemon = Daemon::start(&*server, &["lobby", "secret"], "token.secret = read-me-123");
    let status = |path: &str| http_request(daemon.http, "HEAD", path, &[]).0;
    assert_eq!(
        status("/eventsource/lobby"),
        200,
        "public rooms need no token"
    );
    assert_eq!(
        status("/eventsource/secret"),
        403,
        "{}",
        daemon.log_tail_block()
    );
    assert_eq!(status("/eventsource/secret?token=wrong"), 403);
    let mut sub = SseClient::connect(daemon.http, "/eventsource/secret?token=read-me-123", &[]);
    assert_eq!(sub.status(), 200);
    std::thread::sleep(Duration::from_millis(200));
    post(&mut c, "secret", "for members");
    let event = sub.next_event(T).expect("a message with the token");
    assert_eq!(body(&event), "for members");
}

fn a_missing_room_answers_404_and_is_not_created(kind: Kind) {
    let server = kind.start();
    server.create_rooms(&["lobby"]);
    let daemon = Daemon::start(&*server, &["lobby"], "on_demand = yes");
    assert_eq!(http_get(daemon.http, "/eventsource/ghost").0, 404);
    let (owner, pass) = ROOM_OWNER;
    let mut c = XmppClient::connect(&*server, owner, pass);
    let reply = c.disco_info("ghost");
    assert!(
        reply.contains("item-not-found"),
        "the room was created: {reply}"
    );
    assert!(
        !daemon.log().contains("joined room ghost@"),
        "{}",
        daemon.log_tail_block()
    );
}

/// Review F1: the last event before a daemon restart is `status: shutdown` with id
/// `<msg>~<n>`. Resumed with it after a restart, when the new ring does not hold `<msg>` (more
/// messages missed than `history`), the messages posted meanwhile come from the archive (before
/// the fix ejabberd answered an empty page, a silent loss; Prosody answered item-not-found).
fn a_named_event_id_resumes_from_the_archive_after_a_daemon_restart(kind: Kind) {
    let (events, missed, log) = resume_after_restart_with_the_shutdown_id(kind, 2);
    assert!(
        events.iter().all(|e| e.event_type != "gap"),
        "the archive holds them, no gap: {events:?}\n{log}"
    );
    assert_eq!(
        bodies(&events),
        missed,
        "every message posted while the daemon was down, once\n{log}"
    );
}

/// The same with `history = 0`: the new daemon has seen no stanza-id of the room yet, so it
/// cannot tell the id from a foreign one (which ejabberd would answer with its whole archive);
/// it may fill from the archive or say `gap`, but never lose messages silently.
fn a_named_event_id_without_history_is_never_a_silent_loss(kind: Kind) {
    let (events, missed, log) = resume_after_restart_with_the_shutdown_id(kind, 0);
    let filled = bodies(&events) == missed;
    let gap_first = events.first().is_some_and(|e| e.event_type == "gap");
    assert!(
        filled || gap_first,
        "neither the missed messages nor a gap: {events:?}\n{log}"
    );
    eprintln!(
        "{}: history = 0 resume with a named-event id: {}",
        kind_name(kind),
        if filled { "filled" } else { "gap" }
    );
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Prosody => "prosody",
        Kind::Ejabberd => "ejabberd",
    }
}

/// Streams X, stops the daemon (the stream's last id is the shutdown status's `X~<n>`), posts
/// five messages, starts a daemon with `history` and resumes with that id. Returns what the
/// resumed stream sent within 2 s of quiet, the five bodies and the new daemon's log tail.
fn resume_after_restart_with_the_shutdown_id(
    kind: Kind,
    history: usize,
) -> (Vec<SseEvent>, Vec<String>, String) {
    let server = kind.start();
    server.create_rooms(&["lobby"]);
    let mut alice = XmppClient::user(&*server, "alice", &["lobby"]);
    let config = Daemon::config_text(&*server, &["lobby"], &format!("history = {history}"));
    let mut first = Daemon::spawn_raw(&config);
    first.wait_ready(&["lobby"], T);
    let mut sub = SseClient::connect(first.http, "/eventsource/lobby", &[]);
    std::thread::sleep(Duration::from_millis(200));
    let x = post(&mut alice, "lobby", "X");
    assert_eq!(sub.next_event(T).map(|e| e.last_event_id), Some(x.clone()));
    assert_eq!(first.stop().code(), Some(0));
    let last = sub.next_event(T).expect("the shutdown status");
    assert_eq!(field(&last, "status").as_deref(), Some("shutdown"));
    assert!(
        last.last_event_id.starts_with(&format!("{x}~")),
        "a named-event id: {}",
        last.last_event_id
    );
    let missed: Vec<String> = "ABCDE".chars().map(|c| format!("down {c}")).collect();
    for b in &missed {
        post(&mut alice, "lobby", b);
    }
    let mut second = Daemon::spawn_raw(&config);
    second.wait_ready(&["lobby"], T);
    let mut resumed = SseClient::connect(
        second.http,
        "/eventsource/lobby",
        &[("Last-Event-ID", &last.last_event_id)],
    );
    let events = drain(&mut resumed, Duration::from_secs(2));
    (events, missed, second.log_tail_block())
}

/// Review F2: the reflected unavailable presence of the daemon's own leave is not a removal.
fn an_on_demand_room_is_left_once_and_stays_left(kind: Kind) {
    let server = kind.start();
    server.create_rooms(&["lobby", "extra"]);
    let daemon = Daemon::start(
        &*server,
        &["lobby"],
        "on_demand = yes\non_demand_grace_secs = 2\nhistory = 0",
    );
    let sub = SseClient::connect(daemon.http, "/eventsource/extra", &[]);
    assert_eq!(sub.status(), 200);
    daemon.expect_log("joined room extra@", T);
    drop(sub);
    daemon.expect_log("leaving extra@", T);
    // Grace period again and a reconnect delay: a false re-join would have happened.
    std::thread::sleep(Duration::from_secs(5));
    let log = daemon.log();
    assert_eq!(log.matches("leaving extra@").count(), 1, "{log}");
    assert_eq!(log.matches("joined room extra@").count(), 1, "{log}");
    assert!(!log.contains("removed from room extra@"), "{log}");
}

/// Review D1: ejabberd never answers item-not-found for an unknown archive id (it sorts it
/// before every real id); an id the daemon cannot have issued for the room must give `gap`
/// and the ring, never the archive from its start.
fn an_unknown_id_is_a_gap_not_a_replay_of_the_archive(kind: Kind) {
    let server = kind.start();
    server.create_rooms(&["lobby"]);
    let mut alice = XmppClient::user(&*server, "alice", &["lobby"]);
    for i in 0..2 {
        post(&mut alice, "lobby", &format!("old {i}"));
    }
    let daemon = Daemon::start(&*server, &["lobby"], "history = 0");
    let mut sub = SseClient::connect(daemon.http, "/eventsource/lobby", &[]);
    std::thread::sleep(Duration::from_millis(200));
    post(&mut alice, "lobby", "in the ring");
    assert_eq!(bodies(&sub.collect(1, T)), vec!["in the ring"]);
    for id in ["nosuchid", "zzz-1", "zzz-1~2"] {
        let mut resumed =
            SseClient::connect(daemon.http, "/eventsource/lobby", &[("Last-Event-ID", id)]);
        let events = drain(&mut resumed, Duration::from_secs(1));
        assert_eq!(
            events.first().map(|e| e.event_type.as_str()),
            Some("gap"),
            "{id}: {events:?}\n{}",
            daemon.log_tail_block()
        );
        assert_eq!(
            bodies(&events),
            vec!["in the ring"],
            "{id}: the ring after the gap, not the archive from its start"
        );
    }
}
