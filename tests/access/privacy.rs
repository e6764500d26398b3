//! Privacy that holds, against a real Prosody: open streams are checked again when access
//! changes (a `SIGHUP` that revokes a token or tightens `private_rooms`, a room reconfigured to
//! hidden, members-only or password-protected) and end with `status: forbidden`, getting none of
//! the later messages; the global `token` opens no private room (the README's access table);
//! on-demand requests for hidden and missing rooms get the same answer and are not listed; `/`,
//! `/metrics` and `/healthz` name private rooms only to the operator (`status_token`).

use std::thread::sleep;
use std::time::{Duration, Instant};

use testkit::daemon::Daemon;
use testkit::prosody::{Prosody, ROOM_OWNER};
use testkit::sse::data_field;
use testkit::sse::{SseClient, SseEvent, http_request};
use testkit::xmpp::XmppClient;

const T: Duration = Duration::from_secs(10);
/// How soon a stream must end once its access is withdrawn.
const PROMPTLY: Duration = Duration::from_secs(5);

/// The status a stream request gets (`HEAD`: the same route as `GET`, without the stream).
fn status(daemon: &Daemon, path: &str, headers: &[(&str, &str)]) -> u16 {
    http_request(daemon.http, "HEAD", path, headers).0
}

fn get(daemon: &Daemon, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let (code, _, body) = http_request(daemon.http, "GET", path, headers);
    (code, String::from_utf8_lossy(&body).into_owned())
}

/// Reads `sub` until it ends; returns every event it got. Panics unless it ended within
/// [`PROMPTLY`].
fn until_closed(sub: &mut SseClient, what: &str) -> Vec<SseEvent> {
    let deadline = Instant::now() + PROMPTLY;
    let mut events = Vec::new();
    while Instant::now() < deadline {
        if let Some(e) = sub.next_event(deadline.saturating_duration_since(Instant::now())) {
            events.push(e);
        } else if sub.is_closed() {
            return events;
        }
    }
    panic!("{what}: the stream did not end within {PROMPTLY:?}; got {events:?}");
}

/// The stream's last event says `forbidden` (for `room`, in a multi-room stream), it carried
/// none of `after`, and it ended.
fn ends_forbidden(sub: &mut SseClient, what: &str, room: Option<&str>) -> Vec<SseEvent> {
    let events = until_closed(sub, what);
    let last = events
        .last()
        .unwrap_or_else(|| panic!("{what}: no event before the end"));
    assert_eq!(last.event_type, "status", "{what}: {events:?}");
    assert_eq!(
        data_field(&last.data, "status").as_deref(),
        Some("forbidden"),
        "{what}: {events:?}"
    );
    assert!(
        data_field(&last.data, "reason").is_some(),
        "{what}: a reason"
    );
    assert_eq!(data_field(&last.data, "room").as_deref(), room, "{what}");
    // Sent without `id:`, so the client's last event id stays that of the room's last event.
    let raw = String::from_utf8_lossy(&sub.raw_body).into_owned();
    let block = raw
        .split("\n\n")
        .find(|b| b.contains("\"status\":\"forbidden\""))
        .unwrap_or_else(|| panic!("{what}: {raw}"));
    assert!(
        block.lines().all(|l| !l.starts_with("id:")),
        "{what}: {block}"
    );
    events
}

fn bodies(events: &[SseEvent]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.event_type == "message")
        .filter_map(|e| data_field(&e.data, "body"))
        .collect()
}

/// Rewrites the daemon's config with `edit` and reloads it; waits for the log to say so.
fn reload(daemon: &Daemon, edit: impl Fn(String) -> String) {
    let path = daemon.config_path().clone();
    let text = std::fs::read_to_string(&path).unwrap();
    let before = daemon.log_count("tokens, CORS and the other live settings replaced");
    std::fs::write(&path, edit(text)).unwrap();
    daemon.signal("HUP");
    assert!(
        daemon.wait_log_count(
            "tokens, CORS and the other live settings replaced",
            before + 1,
            T
        ),
        "no reload\n{}",
        daemon.log_tail_block()
    );
}

/// Makes `room` hidden (not listed in disco#items).
fn hide(owner: &mut XmppClient, room: &str) {
    owner.configure_room(
        room,
        &[("muc#roompublic", "0"), ("muc#roomconfig_publicroom", "0")],
    );
}

#[test]
fn sighup_revoking_a_token_or_tightening_private_rooms_ends_open_streams() {
    let prosody = Prosody::start();
    prosody.create_rooms(&["lobby", "hidden", "news"]);
    let (user, pass) = ROOM_OWNER;
    let mut owner = XmppClient::connect(&prosody, user, pass);
    hide(&mut owner, "hidden");
    let daemon = Daemon::start(
        &prosody,
        &["lobby", "hidden", "news"],
        "token.lobby = old-token\nprivate_rooms = allow\nhistory = 0",
    );
    for room in ["lobby", "hidden", "news"] {
        owner.join(room, user);
    }
    let mut lobby = SseClient::connect(daemon.http, "/eventsource/lobby?token=old-token", &[]);
    let mut hidden = SseClient::connect(daemon.http, "/eventsource/hidden", &[]);
    let mut multi = SseClient::connect(daemon.http, "/eventsource?room=news&room=hidden", &[]);
    let mut news = SseClient::connect(daemon.http, "/eventsource/news", &[]);
    for (sub, what) in [
        (&lobby, "lobby"),
        (&hidden, "hidden"),
        (&multi, "multi"),
        (&news, "news"),
    ] {
        assert_eq!(sub.status(), 200, "{what}");
    }
    sleep(Duration::from_millis(200));
    // Each stream is caught up and parked before the reload.
    for room in ["lobby", "hidden", "news"] {
        owner.send_groupchat(room, &format!("before-{room}"));
    }
    assert_eq!(lobby.next_message_body(T).as_deref(), Some("before-lobby"));
    assert_eq!(
        hidden.next_message_body(T).as_deref(),
        Some("before-hidden")
    );
    assert_eq!(news.next_message_body(T).as_deref(), Some("before-news"));
    let got = bodies(&multi.collect(2, T));
    assert_eq!(got.len(), 2, "{got:?}");

    reload(&daemon, |text| {
        text.replace("token.lobby = old-token", "token.lobby = new-token")
            .replace("private_rooms = allow", "private_rooms = deny")
    });
    for room in ["lobby", "hidden", "news"] {
        owner.send_groupchat(room, &format!("after-{room}"));
    }
    for (sub, what, room) in [
        (&mut lobby, "token revoked", None),
        (&mut hidden, "private_rooms tightened", None),
        (&mut multi, "multi-room stream", Some("hidden")),
    ] {
        let events = ends_forbidden(sub, what, room);
        assert!(
            bodies(&events).iter().all(|b| !b.starts_with("after-")),
            "{what}: a message after the reload reached it: {events:?}"
        );
    }
    // The public room's own stream was checked too, and still passes.
    assert_eq!(news.next_message_body(T).as_deref(), Some("after-news"));
    // New requests are refused the same way.
    assert_eq!(
        status(&daemon, "/eventsource/lobby?token=old-token", &[]),
        403
    );
    assert_eq!(status(&daemon, "/eventsource/hidden", &[]), 403);
    assert_eq!(
        status(&daemon, "/eventsource/lobby?token=new-token", &[]),
        200
    );
    let log = daemon.log();
    for secret in ["old-token", "new-token"] {
        assert!(!log.contains(secret), "{secret} in the log");
    }
}

#[test]
fn cors_narrowed_by_sighup_ends_the_streams_of_pages_it_no_longer_allows() {
    let prosody = Prosody::start();
    prosody.create_rooms(&["lobby"]);
    let daemon = Daemon::start(
        &prosody,
        &["lobby"],
        "cors_origins = http://wall.lan, http://old.lan\nhistory = 0",
    );
    let mut old = SseClient::connect(
        daemon.http,
        "/eventsource/lobby",
        &[("Origin", "http://old.lan")],
    );
    let mut wall = SseClient::connect(
        daemon.http,
        "/eventsource/lobby",
        &[("Origin", "http://wall.lan")],
    );
    assert_eq!(
        old.header("access-control-allow-origin"),
        Some("http://old.lan")
    );
    sleep(Duration::from_millis(200));
    reload(&daemon, |text| {
        text.replace(
            "cors_origins = http://wall.lan, http://old.lan",
            "cors_origins = http://wall.lan",
        )
    });
    let (user, pass) = ROOM_OWNER;
    let mut owner = XmppClient::connect(&prosody, user, pass);
    owner.join("lobby", user);
    owner.send_groupchat("lobby", "after");
    ends_forbidden(&mut old, "origin dropped from cors_origins", None);
    assert_eq!(wall.next_message_body(T).as_deref(), Some("after"));
}

/// The README's access table against Prosody's own room kinds: the global token is a
/// requirement, not a key to private rooms; only `token.<room>` or `private_rooms = allow`
/// opens those.
#[test]
fn a_global_token_opens_no_private_room_of_any_kind() {
    let prosody = Prosody::start();
    prosody.create_rooms(&["lobby", "hidden", "members", "vault", "keyed"]);
    let (user, pass) = ROOM_OWNER;
    let mut owner = XmppClient::connect(&prosody, user, pass);
    hide(&mut owner, "hidden");
    hide(&mut owner, "keyed");
    let members = owner.room_jid("members");
    owner.iq(
        "aff1",
        &format!(
            "<iq type='set' to='{members}' id='aff1'><query xmlns='http://jabber.org/protocol/muc#admin'><item affiliation='member' jid='{}'/></query></iq>",
            prosody.component
        ),
    );
    owner.configure_room("members", &[("muc#roomconfig_membersonly", "1")]);
    owner.configure_room(
        "vault",
        &[
            ("muc#roomconfig_passwordprotectedroom", "1"),
            ("muc#roomconfig_roomsecret", "room-pw"),
        ],
    );
    let rooms = ["lobby", "hidden", "members", "vault", "keyed"];
    let daemon = Daemon::start(
        &prosody,
        &rooms,
        "token = G-staff\ntoken.keyed = R-keyed\npassword.vault = room-pw",
    );
    let g = "?token=G-staff";
    // token = G: every stream needs G; G opens the public room and no private one.
    assert_eq!(status(&daemon, "/eventsource/lobby", &[]), 403);
    assert_eq!(status(&daemon, &format!("/eventsource/lobby{g}"), &[]), 200);
    for room in ["hidden", "members", "vault"] {
        assert_eq!(
            status(&daemon, &format!("/eventsource/{room}"), &[]),
            403,
            "{room}"
        );
        assert_eq!(
            status(&daemon, &format!("/eventsource/{room}{g}"), &[]),
            403,
            "{room}: the global token opened a private room"
        );
        assert_eq!(
            status(
                &daemon,
                &format!("/eventsource?room={room}&token=G-staff"),
                &[]
            ),
            403,
            "{room} in a multi-room stream"
        );
    }
    // token.<room> = R: R opens that private room; G does not.
    assert_eq!(status(&daemon, &format!("/eventsource/keyed{g}"), &[]), 403);
    assert_eq!(
        status(
            &daemon,
            "/eventsource/keyed",
            &[("Authorization", "Bearer R-keyed")]
        ),
        200
    );
    // A stream that G opened on a public room stays open while G is valid.
    let mut lobby = SseClient::connect(daemon.http, &format!("/eventsource/lobby{g}"), &[]);
    assert_eq!(lobby.status(), 200);

    // token = G and private_rooms = allow: G opens every room; no token still opens none.
    reload(&daemon, |text| format!("{text}\nprivate_rooms = allow\n"));
    for room in ["lobby", "hidden", "members", "vault"] {
        assert_eq!(
            status(&daemon, &format!("/eventsource/{room}{g}"), &[]),
            200,
            "{room}"
        );
        assert_eq!(
            status(&daemon, &format!("/eventsource/{room}"), &[]),
            403,
            "{room}"
        );
    }
    assert_eq!(status(&daemon, &format!("/eventsource/keyed{g}"), &[]), 403);
    sleep(Duration::from_millis(200));
    owner.join("lobby", user);
    owner.send_groupchat("lobby", "still open");
    assert_eq!(lobby.next_message_body(T).as_deref(), Some("still open"));
}

#[test]
fn pages_name_private_rooms_only_to_the_operator() {
    let prosody = Prosody::start();
    prosody.create_rooms(&["lobby", "hushhush"]);
    let (user, pass) = ROOM_OWNER;
    let mut owner = XmppClient::connect(&prosody, user, pass);
    hide(&mut owner, "hushhush");
    let daemon = Daemon::start(&prosody, &["lobby", "hushhush"], "status_token = op-secret");
    let _reader = SseClient::connect(daemon.http, "/eventsource/lobby", &[]);
    let operator = [("Authorization", "Bearer op-secret")];

    let (code, index) = get(&daemon, "/", &[]);
    assert_eq!(code, 200);
    assert!(index.contains("href=\"view/lobby\""), "{index}");
    assert!(
        !index.contains("hushhush"),
        "anonymous index names a hidden room: {index}"
    );
    let (_, index) = get(&daemon, "/?token=op-secret", &[]);
    assert!(
        index.contains("hushhush") && index.contains("hidden"),
        "{index}"
    );
    let (_, index) = get(&daemon, "/?token=wrong", &[]);
    assert!(!index.contains("hushhush"), "{index}");

    let (code, metrics) = get(&daemon, "/metrics", &[]);
    assert_eq!(code, 200);
    assert!(!metrics.contains("hushhush"), "{metrics}");
    assert!(
        metrics.contains("muc_eventsource_room_joined{room=\"lobby\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("muc_eventsource_private_rooms 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("muc_eventsource_subscribers{room=\"lobby\"} 1"),
        "{metrics}"
    );
    let (_, metrics) = get(&daemon, "/metrics", &operator);
    assert!(
        metrics.contains("muc_eventsource_room_joined{room=\"hushhush\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("muc_eventsource_private_rooms 0"),
        "{metrics}"
    );
    // The operator token opens no stream.
    assert_eq!(
        status(&daemon, "/eventsource/hushhush?token=op-secret", &[]),
        403
    );
    assert!(
        !daemon.log().contains("op-secret"),
        "the operator token is logged"
    );
}

/// With `on_demand`, a hidden room and a room that does not exist get the same answer, and
/// neither is listed afterwards.
#[test]
fn on_demand_hidden_and_missing_rooms_answer_alike_and_are_not_listed() {
    let prosody = Prosody::start();
    prosody.create_rooms(&["lobby", "backroom", "plaza"]);
    let (user, pass) = ROOM_OWNER;
    let mut owner = XmppClient::connect(&prosody, user, pass);
    hide(&mut owner, "backroom");
    let daemon = Daemon::start(&prosody, &["lobby"], "on_demand = yes");

    let hidden = http_request(daemon.http, "GET", "/eventsource/backroom", &[]);
    let missing = http_request(daemon.http, "GET", "/eventsource/nowhere", &[]);
    assert_eq!(hidden.0, 404);
    assert_eq!(
        (hidden.0, &hidden.1, &hidden.2),
        (missing.0, &missing.1, &missing.2),
        "a hidden room can be told from a missing one"
    );
    // Asked again (the entries were retired): still alike.
    let again = http_request(daemon.http, "GET", "/eventsource/backroom", &[]);
    assert_eq!((again.0, &again.2), (missing.0, &missing.2));
    for path in ["/view/backroom", "/eventsource?room=backroom"] {
        let a = get(&daemon, path, &[]);
        let b = get(&daemon, &path.replace("backroom", "nowhere"), &[]);
        assert_eq!(
            (a.0, a.1.replace("backroom", "X")),
            (b.0, b.1.replace("nowhere", "X")),
            "{path}"
        );
    }
    let (_, index) = get(&daemon, "/", &[]);
    assert!(
        !index.contains("backroom") && !index.contains("nowhere"),
        "{index}"
    );
    let (_, metrics) = get(&daemon, "/metrics", &[]);
    assert!(!metrics.contains("backroom") && !metrics.contains("nowhere"));
    // A public room is still streamed on demand.
    let mut plaza = SseClient::connect(daemon.http, "/eventsource/plaza", &[]);
    assert_eq!(plaza.status(), 200);
    daemon.expect_log("joined room plaza@", T);
    owner.join("plaza", user);
    owner.send_groupchat("plaza", "on demand");
    assert_eq!(plaza.next_message_body(T).as_deref(), Some("on demand"));
}

/// With `on_demand`, a request the policy refuses never places the daemon's occupant in the
/// room. Needs the XMPP side to look an on-demand room up (disco#info) without joining it
/// until it has a subscriber (issue 11/12, `src/xmpp/component.rs`).
#[test]
fn on_demand_never_joins_a_room_for_a_refused_request() {
    let prosody = Prosody::start();
    prosody.create_rooms(&["lobby", "backroom"]);
    let (user, pass) = ROOM_OWNER;
    let mut owner = XmppClient::connect(&prosody, user, pass);
    hide(&mut owner, "backroom");
    owner.join("backroom", user);
    let daemon = Daemon::start(&prosody, &["lobby"], "on_demand = yes");
    assert_eq!(status(&daemon, "/eventsource/backroom", &[]), 404);
    // The owner sits in the room: any occupant joining shows up as presence.
    let joined = owner.try_wait_for("eventsource", Duration::from_secs(3));
    assert!(
        joined.is_none(),
        "the daemon joined a hidden room for an anonymous request: {joined:?}"
    );
    assert!(
        !daemon.log().contains("joined room backroom@"),
        "{}",
        daemon.log_tail_block()
    );
}

/// A room reconfigured while anonymous streams are open (MUC status 104): each stream ends with
/// `forbidden` within a few seconds and gets none of the later messages; new anonymous requests
/// are refused. Needs the XMPP side to re-read disco#info on status 104/170–174 and call
/// `RoomTable::access_changed` (issue 11/12, `src/xmpp/component.rs`).
#[test]
fn a_room_that_turns_private_ends_its_anonymous_streams() {
    let prosody = Prosody::start();
    let rooms = ["tohide", "tomembers", "topassword"];
    prosody.create_rooms(&rooms);
    let (user, pass) = ROOM_OWNER;
    let mut owner = XmppClient::connect(&prosody, user, pass);
    let daemon = Daemon::start(&prosody, &rooms, "history = 0");
    let mut subs: Vec<SseClient> = rooms
        .iter()
        .map(|room| SseClient::connect(daemon.http, &format!("/eventsource/{room}"), &[]))
        .collect();
    for room in rooms {
        owner.join(room, user);
    }
    sleep(Duration::from_millis(200));
    for (room, sub) in rooms.iter().zip(subs.iter_mut()) {
        owner.send_groupchat(room, "before");
        assert_eq!(
            sub.next_message_body(T).as_deref(),
            Some("before"),
            "{room}"
        );
    }
    hide(&mut owner, "tohide");
    owner.configure_room("tomembers", &[("muc#roomconfig_membersonly", "1")]);
    owner.configure_room(
        "topassword",
        &[
            ("muc#roomconfig_passwordprotectedroom", "1"),
            ("muc#roomconfig_roomsecret", "new-pw"),
        ],
    );
    for room in rooms {
        owner.send_groupchat(room, "AFTER-PRIVATE");
    }
    for (room, sub) in rooms.iter().zip(subs.iter_mut()) {
        let events = ends_forbidden(sub, room, None);
        assert!(
            !bodies(&events).iter().any(|b| b == "AFTER-PRIVATE"),
            "{room}: {events:?}"
        );
        assert_eq!(
            status(&daemon, &format!("/eventsource/{room}"), &[]),
            403,
            "{room}"
        );
    }
}
