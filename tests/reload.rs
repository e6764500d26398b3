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
