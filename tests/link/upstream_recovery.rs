//! Upstream recovery against a real Prosody: a frozen (half-open) link is detected by the link
//! ping and re-established; a NAT/firewall-style idle timeout between the daemon and Prosody
//! (a relay in the test) does not drop a link kept alive by the whitespace keepalive, and does
//! drop one without it (the control); subscribers stay connected and are told what happens.
//! (Prosody 0.12 itself answers a silent component with whitespace instead of dropping it.)

use std::process::Command;
use std::time::Duration;

use testkit::daemon::Daemon;
use testkit::prosody::Prosody;
use testkit::sse::SseClient;
use testkit::sse::field;
use testkit::xmpp::XmppClient;

const T: Duration = Duration::from_secs(10);

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
}

#[test]
fn a_frozen_link_is_detected_by_ping_and_reconnected() {
    let prosody = Prosody::start();
    prosody.create_rooms(&["lobby"]);
    prosody.register("alice", "pw");
    let daemon = Daemon::start(
        &prosody,
        &["lobby"],
        "keepalive_secs = 1\nping_timeout_secs = 2\nreconnect_min_secs = 1\nreconnect_max_secs = 2\nhistory = 0",
    );
    let mut sub = SseClient::connect(daemon.http, "/eventsource/lobby", &[]);
    let pid = prosody.pid().expect("prosody pid");
    // Prosody freezes: the TCP link stays open but nothing is read or answered.
    signal(pid, "-STOP");
    let detected = daemon.wait_log("no answer to a ping", Duration::from_secs(15));
    signal(pid, "-CONT");
    assert!(detected, "dead link not detected:\n{}", daemon.log());
    assert!(
        daemon.wait_log_count("joined room lobby@", 2, Duration::from_secs(30)),
        "not re-joined:\n{}",
        daemon.log()
    );
    let statuses: Vec<String> = sub
        .collect(2, T)
        .iter()
        .map(|e| field(e, "status").unwrap_or_default())
        .collect();
    assert_eq!(statuses, vec!["reconnecting", "joined"]);
    // `history = 0` and no archive: nothing proves no message was sent during the freeze, so
    // the stream says so before whatever comes next.
    let gap = sub.next_event(T).expect("a gap event after the re-join");
    assert_eq!(gap.event_type, "gap", "{gap:?}");
    let mut alice = XmppClient::connect(&prosody, "alice", "pw");
    alice.join("lobby", "alice");
    alice.send_groupchat("lobby", "after the freeze");
    let event = sub.next_event(T).expect("the same stream goes on");
    assert_eq!(field(&event, "body").as_deref(), Some("after the freeze"));
}

/// A TCP relay to `upstream` that closes a connection when the client side (the daemon) has
/// sent nothing for `idle` — what a NAT or firewall with an idle timeout does. Returns its port.
fn idle_dropping_relay(upstream: std::net::SocketAddr, idle: Duration) -> u16 {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { return };
            let Ok(mut server) = TcpStream::connect(upstream) else {
                return;
            };
            let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n) = s2.read(&mut buf) {
                    if n == 0 || c2.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = c2.shutdown(Shutdown::Both);
            });
            std::thread::spawn(move || {
                client.set_read_timeout(Some(idle)).unwrap();
                let mut buf = [0u8; 8192];
                // A timeout (silence) ends the loop like a close does.
                while let Ok(n) = client.read(&mut buf) {
                    if n == 0 || server.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = server.shutdown(Shutdown::Both);
                let _ = client.shutdown(Shutdown::Both);
            });
        }
    });
    port
}

fn link_drops_behind_an_idle_timeout(keepalive_secs: u64) -> bool {
    let prosody = Prosody::start();
    prosody.create_rooms(&["lobby"]);
    let relay = idle_dropping_relay(prosody.component_addr(), Duration::from_secs(3));
    let config = Daemon::config_text(
        &prosody,
        &["lobby"],
        &format!("keepalive_secs = {keepalive_secs}\nping_timeout_secs = 30\nhistory = 0"),
    )
    .replace(
        &format!("upstream = 127.0.0.1:{}", prosody.component_port),
        &format!("upstream = 127.0.0.1:{relay}"),
    );
    let mut daemon = Daemon::spawn_raw(&config);
    daemon.wait_ready(&["lobby"], T);
    std::thread::sleep(Duration::from_secs(8));
    daemon.log().contains("link to")
}

#[test]
fn keepalive_holds_the_link_through_an_idle_timeout() {
    assert!(
        !link_drops_behind_an_idle_timeout(1),
        "the link dropped although the keepalive runs every second"
    );
    // The control: without keepalive within the idle time, the same relay drops the link.
    assert!(
        link_drops_behind_an_idle_timeout(3600),
        "the relay did not drop a silent link; this test proves nothing"
    );
}
