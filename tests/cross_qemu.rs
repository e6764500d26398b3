//! The ARM builds (`cross/build aarch64 armv7`, in `dist/`) run under qemu-user against the
//! real Prosody of the harness: component handshake, one room, one subscriber receives a
//! message. Not part of `cargo test` (it needs the cross builds); CI runs it after building
//! them: `cargo test --test cross_qemu -- --ignored`.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::time::Duration;

use testkit::daemon::Daemon;
use testkit::json::{self, Value};
use testkit::prosody::Prosody;
use testkit::sse::SseClient;
use testkit::xmpp::XmppClient;

fn dist(name: &str) -> PathBuf {
    let dir = std::env::var_os("DIST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("dist"));
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build it with `cross/build aarch64 armv7` first",
        path.display()
    );
    path
}

fn streams_under_qemu(qemu: &str, binary: &str) {
    let binary = dist(binary);
    let prosody = Prosody::start();
    prosody.create_rooms(&["lobby"]);
    prosody.register("alice", "pw");
    let config = Daemon::config_text(&prosody, &["lobby"], "history = 0");
    let mut daemon = Daemon::spawn_with(&config, &[OsStr::new(qemu), binary.as_os_str()]);
    // Emulated start-up is slower.
    daemon.wait_ready(&["lobby"], Duration::from_secs(60));
    let mut sub = SseClient::connect(daemon.http, "/eventsource/lobby", &[]);
    assert_eq!(sub.status(), 200);
    std::thread::sleep(Duration::from_millis(500));
    let mut alice = XmppClient::connect(&prosody, "alice", "pw");
    alice.join("lobby", "alice");
    alice.send_groupchat("lobby", "hello from an emulated ARM board");
    let event = loop {
        let e = sub
            .next_event(Duration::from_secs(20))
            .expect("a message under qemu");
        if e.event_type == "message" {
            break e;
        }
    };
    let json = json::parse(&event.data).unwrap();
    assert_eq!(
        json.get("body").and_then(Value::as_str),
        Some("hello from an emulated ARM board")
    );
    assert_eq!(daemon.stop().code(), Some(0), "{}", daemon.log());
}

#[test]
#[ignore = "needs the cross builds in dist/ (cross/build aarch64 armv7) and qemu-user"]
fn aarch64_binary_streams_under_qemu() {
    streams_under_qemu("qemu-aarch64", "muc-eventsource-aarch64-unknown-linux-gnu");
}

#[test]
#[ignore = "needs the cross builds in dist/ (cross/build aarch64 armv7) and qemu-user"]
fn armv7_binary_streams_under_qemu() {
    streams_under_qemu("qemu-arm", "muc-eventsource-armv7-unknown-linux-gnueabihf");
}
