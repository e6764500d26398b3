//! Access control against a real Prosody: public rooms stream to anyone; members-only and
//! password-protected rooms answer 403 unless a read token is configured and presented
//! (`?token=` or `Authorization: Bearer`); tokens never reach the log; CORS origins.

use std::time::Duration;

use testkit::daemon::Daemon;
use testkit::json::{self, Value};
use testkit::prosody::{Prosody, ROOM_OWNER};
use testkit::sse::{SseClient, http_request};
use testkit::xmpp::XmppClient;

const T: Duration = Duration::from_secs(10);

fn body(data: &str) -> String {
    json::parse(data)
        .unwrap()
        .get("body")
        .and_then(Value::as_str)
        .unwrap()
        .to_string()
}

#[test]
fn private_rooms_need_their_token_and_public_ones_do_not() {
    let prosody = Prosody::start();
    prosody.create_rooms(&["lobby", "staff", "vault"]);
    let (user, pass) = ROOM_OWNER;
    let mut owner = XmppClient::connect(&prosody, user, pass);
    // staff: members-only, with the component a member; vault: password-protected.
    let staff = owner.room_jid("staff");
    owner.iq(
        "aff1",
        &format!(
            "<iq type='set' to='{staff}' id='aff1'><query xmlns='http://jabber.org/protocol/muc#admin'><item affiliation='member' jid='{}'/></query></iq>",
            prosody.component
        ),
    );
    owner.configure_room("staff", &[("muc#roomconfig_membersonly", "1")]);
    owner.configure_room(
        "vault",
        &[
            ("muc#roomconfig_passwordprotectedroom", "1"),
            ("muc#roomconfig_roomsecret", "room-pw"),
        ],
    );
    let daemon = Daemon::start(
        &prosody,
        &["lobby", "staff", "vault"],
        "token.staff = staff-token-123\ntoken.vault = vault-token-456\npassword.vault = room-pw",
    );

    let status =
        |path: &str, headers: &[(&str, &str)]| http_request(daemon.http, "HEAD", path, headers).0;
    assert_eq!(
        status("/eventsource/lobby", &[]),
        200,
        "public rooms need no token"
    );
    assert_eq!(status("/eventsource/staff", &[]), 403);
    assert_eq!(status("/eventsource/staff?token=wrong", &[]), 403);
    assert_eq!(status("/eventsource/vault", &[]), 403);
    assert_eq!(status("/eventsource/vault?token=staff-token-123", &[]), 403);

    let mut staff_sub =
        SseClient::connect(daemon.http, "/eventsource/staff?token=staff-token-123", &[]);
    assert_eq!(staff_sub.status(), 200);
    let mut vault_sub = SseClient::connect(
        daemon.http,
        "/eventsource/vault",
        &[("Authorization", "Bearer vault-token-456")],
    );
    assert_eq!(vault_sub.status(), 200);
    std::thread::sleep(Duration::from_millis(200));
    owner.join("staff", user);
    owner.send_groupchat("staff", "members only");
    owner.join_with("vault", user, "<password>room-pw</password>");
    owner.send_groupchat("vault", "secret");
    let event = staff_sub.next_event(T).expect("staff message");
    assert_eq!(body(&event.data), "members only");
    let event = vault_sub.next_event(T).expect("vault message");
    assert_eq!(body(&event.data), "secret");

    let log = daemon.log();
    for secret in ["staff-token-123", "vault-token-456", "room-pw"] {
        assert!(!log.contains(secret), "{secret} appears in the log");
    }
}

#[test]
fn rooms_without_a_token_configured_are_refused_when_private() {
    let prosody = Prosody::start();
    prosody.create_rooms(&["staff"]);
    let (user, pass) = ROOM_OWNER;
    let mut owner = XmppClient::connect(&prosody, user, pass);
    owner.configure_room(
        "staff",
        &[("muc#roompublic", "0"), ("muc#roomconfig_publicroom", "0")],
    );
    let daemon = Daemon::start(&prosody, &["staff"], "");
    let (status, _, body) = http_request(daemon.http, "GET", "/eventsource/staff", &[]);
    assert_eq!(status, 403);
    assert!(
        String::from_utf8_lossy(&body).contains("token"),
        "says what to do"
    );
}

#[test]
fn cors_origins_are_echoed_only_when_allowed() {
    let prosody = Prosody::start();
    prosody.create_rooms(&["lobby"]);
    let daemon = Daemon::start(&prosody, &["lobby"], "cors_origins = http://wall.lan");
    let allowed = SseClient::connect(
        daemon.http,
        "/eventsource/lobby",
        &[("Origin", "http://wall.lan")],
    );
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("http://wall.lan")
    );
    assert_eq!(allowed.header("vary"), Some("Origin"));
    let other = SseClient::connect(
        daemon.http,
        "/eventsource/lobby",
        &[("Origin", "http://evil")],
    );
    assert_eq!(other.header("access-control-allow-origin"), None);
    let (status, headers, _) = http_request(
        daemon.http,
        "OPTIONS",
        "/eventsource/lobby",
        &[
            ("Origin", "http://wall.lan"),
            ("Access-Control-Request-Method", "GET"),
            ("Access-Control-Request-Headers", "last-event-id"),
        ],
    );
    assert_eq!(status, 204);
    let h = |name: &str| testkit::sse::find_header(&headers, name).map(str::to_string);
    assert_eq!(
        h("access-control-allow-origin").as_deref(),
        Some("http://wall.lan")
    );
    assert!(
        h("access-control-allow-headers")
            .unwrap()
            .contains("Last-Event-ID")
    );
}
