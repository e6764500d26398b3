//! Which rooms are served, against a real Prosody: on demand (the first subscriber of a room
//! has it checked and joined; it is left after the grace period; a missing room is a 404 and
//! is never created) and `rooms = *` (every public room, found with disco#items).

use std::time::Duration;

use testkit::daemon::Daemon;
use testkit::prosody::{Prosody, ROOM_OWNER};
use testkit::sse::{SseClient, http_get};
use testkit::xmpp::XmppClient;

const T: Duration = Duration::from_secs(10);

fn body_of(sub: &mut SseClient) -> String {
    sub.next_message_body(T).expect("a message")
}

#[test]
fn rooms_on_demand_are_joined_for_their_readers_and_left_after() {
    let prosody = Prosody::start();
    prosody.create_rooms(&["lobby", "extra"]);
    let daemon = Daemon::start(
        &prosody,
        &["lobby"],
        "on_demand = yes\non_demand_grace_secs = 2\nhistory = 0",
    );
    let (user, pass) = ROOM_OWNER;
    let mut owner = XmppClient::connect(&prosody, user, pass);
    owner.join("extra", user);

    let mut sub = SseClient::connect(daemon.http, "/eventsource/extra", &[]);
    assert_eq!(sub.status(), 200);
    daemon.expect_log("joined room extra@", T);
    owner.send_groupchat("extra", "on demand");
    assert_eq!(body_of(&mut sub), "on demand");

    // A room that does not exist: 404, and it is not created.
    assert_eq!(http_get(daemon.http, "/eventsource/ghost").0, 404);
    let reply = owner.disco_info("ghost");
    assert!(
        reply.contains("item-not-found"),
        "the room was created: {reply}"
    );

    // The last reader goes; after the grace period the daemon leaves the room.
    drop(sub);
    daemon.expect_log("leaving extra@", T);
    owner.wait_for("type='unavailable'", T);
    // ...and stays out: the room reflecting our own leave is not a removal (no re-join loop).
    std::thread::sleep(Duration::from_secs(4));
    let log = daemon.log();
    assert_eq!(daemon.log_count("joined room extra@"), 1, "{log}");
    assert!(!log.contains("removed from room extra@"), "{log}");
    assert_eq!(daemon.log_count("leaving extra@"), 1, "{log}");
    // A new reader brings it back.
    let mut again = SseClient::connect(daemon.http, "/eventsource/extra", &[]);
    assert!(
        daemon.wait_log_count("joined room extra@", 2, T),
        "{}",
        daemon.log()
    );
    std::thread::sleep(Duration::from_millis(200));
    owner.send_groupchat("extra", "back again");
    assert_eq!(body_of(&mut again), "back again");
}

#[test]
fn every_public_room_with_a_star() {
    let prosody = Prosody::start();
    prosody.create_rooms(&["alpha", "beta", "hidden"]);
    let (user, pass) = ROOM_OWNER;
    let mut owner = XmppClient::connect(&prosody, user, pass);
    owner.configure_room("hidden", &[("muc#roomconfig_publicroom", "0")]);
    let config = Daemon::config_text(&prosody, &["*"], "discover_secs = 10\nhistory = 0");
    let mut daemon = Daemon::spawn_raw(&config);
    daemon.wait_ready(&["alpha", "beta"], T);
    assert!(
        !daemon.log().contains("joined room hidden@"),
        "hidden rooms are not listed"
    );
    assert_eq!(http_get(daemon.http, "/eventsource/hidden").0, 404);
    let mut alpha = SseClient::connect(daemon.http, "/eventsource/alpha", &[]);
    std::thread::sleep(Duration::from_millis(200));
    owner.join("alpha", user);
    owner.send_groupchat("alpha", "found by disco#items");
    assert_eq!(body_of(&mut alpha), "found by disco#items");
    // A room created later is found at the next listing.
    // (Prosody 0.12 lists a new room once it has been saved: submitting its form does that.)
    owner.join("gamma", user);
    owner.configure_room("gamma", &[("muc#roomconfig_publicroom", "1")]);
    assert!(
        daemon.wait_log("joined room gamma@", Duration::from_secs(15)),
        "{}",
        daemon.log()
    );
}

/// An EventSource that comes back with `Last-Event-ID` to an on-demand room the daemon has left
/// (nobody read it for the grace period) gets its stream: the room is joined again for it and
/// the messages it missed follow, rather than "try later" forever (the room would only be
/// joined for a subscriber, and the resume waited for the join before subscribing).
#[test]
fn a_resume_brings_a_left_on_demand_room_back() {
    let prosody = Prosody::start();
    prosody.create_rooms(&["lobby", "extra"]);
    let daemon = Daemon::start(
        &prosody,
        &["lobby"],
        "on_demand = yes\non_demand_grace_secs = 1\nhistory = 5",
    );
    let (user, pass) = ROOM_OWNER;
    let mut owner = XmppClient::connect(&prosody, user, pass);
    owner.join("extra", user);
    let mut sub = SseClient::connect(daemon.http, "/eventsource/extra", &[]);
    daemon.expect_log("joined room extra@", T);
    std::thread::sleep(Duration::from_millis(200));
    owner.send_groupchat("extra", "seen");
    let seen = sub.next_event(T).expect("a message");
    let last_id = seen.last_event_id.clone();
    assert!(!last_id.is_empty());
    drop(sub);
    daemon.expect_log("leaving extra@", T);
    owner.send_groupchat("extra", "missed");
    let mut back = SseClient::connect(
        daemon.http,
        "/eventsource/extra",
        &[("Last-Event-ID", &last_id)],
    );
    assert_eq!(back.status(), 200);
    // What the room's history gives back on the re-join decides whether "seen" comes again
    // first (a gap) or not; "missed" must come either way.
    let mut got = Vec::new();
    while let Some(body) = back.next_message_body(T) {
        got.push(body);
        if got.last().is_some_and(|b| b == "missed") {
            break;
        }
    }
    assert_eq!(
        got.last().map(String::as_str),
        Some("missed"),
        "{got:?}\n{}",
        daemon.log_tail_block()
    );
}
