//! Caps and what a refused client sees: a full room answers an EventSource with 200, `retry:`
//! and a `status` event, and closes (the browser comes back later; any other status would make
//! it give up for good), other clients with 503 and Retry-After; a client address over its
//! connection cap is closed unanswered (a network error, which EventSources retry).

use std::time::Duration;

use testkit::daemon::Daemon;
use testkit::json::{self, Value};
use testkit::prosody::Prosody;
use testkit::sse::{SseClient, http_raw, http_request};

const T: Duration = Duration::from_secs(10);

#[test]
fn a_full_room_answers_browsers_with_retry_and_others_with_503() {
    let prosody = Prosody::start();
    prosody.create_rooms(&["lobby", "news"]);
    let daemon = Daemon::start(&prosody, &["lobby", "news"], "max_subscribers_per_room = 2");
    let a = SseClient::connect(daemon.http, "/eventsource/lobby", &[]);
    let b = SseClient::connect(daemon.http, "/eventsource/lobby", &[]);
    assert_eq!((a.status(), b.status()), (200, 200));
    let mut browser = SseClient::connect(daemon.http, "/eventsource/lobby", &[]);
    assert_eq!(
        browser.status(),
        200,
        "an EventSource must get 200 to come back later"
    );
    let event = browser.next_event(T).expect("a status event");
    assert_eq!(event.event_type, "status");
    let json = json::parse(&event.data).unwrap();
    assert_eq!(
        json.get("status").and_then(Value::as_str),
        Some("unavailable")
    );
    assert_eq!(browser.parser.retry, Some(10_000));
    assert!(browser.wait_closed(T));
    let (status, headers, _) = http_request(daemon.http, "GET", "/eventsource/lobby", &[]);
    assert_eq!(status, 503);
    assert_eq!(
        testkit::sse::find_header(&headers, "retry-after"),
        Some("10")
    );
    // Other rooms are not affected; a freed place is taken again.
    assert_eq!(
        SseClient::connect(daemon.http, "/eventsource/news", &[]).status(),
        200
    );
    drop(a);
    std::thread::sleep(Duration::from_millis(300));
    let mut again = SseClient::connect(daemon.http, "/eventsource/lobby", &[]);
    assert_eq!(again.status(), 200);
    assert!(
        again.next_event(Duration::from_millis(500)).is_none(),
        "a real stream"
    );
    assert!(
        daemon.log().contains("raise max_subscribers"),
        "{}",
        daemon.log()
    );
}

#[test]
fn connections_over_the_per_address_cap_are_closed_unanswered() {
    let prosody = Prosody::start();
    prosody.create_rooms(&["lobby"]);
    let daemon = Daemon::start(&prosody, &["lobby"], "max_connections_per_ip = 3");
    let subs: Vec<SseClient> = (0..3)
        .map(|_| SseClient::connect(daemon.http, "/eventsource/lobby", &[]))
        .collect();
    let reply = http_raw(
        daemon.http,
        b"GET /eventsource/lobby HTTP/1.1\r\nHost: h\r\nAccept: text/event-stream\r\n\r\n",
        Duration::from_secs(3),
    );
    assert!(reply.is_empty(), "{}", String::from_utf8_lossy(&reply));
    drop(subs);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        SseClient::connect(daemon.http, "/eventsource/lobby", &[]).status(),
        200
    );
    assert!(daemon.log().contains("max_connections_per_ip"));
}
