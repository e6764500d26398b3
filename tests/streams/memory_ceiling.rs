//! The memory ceiling `--check-config` prints holds: the daemon is driven to every cap at once
//! (rooms, subscribers, multi-room streams, pending requests, full rings of large events,
//! stalled readers) and its peak RSS (VmHWM) must stay under the printed ceiling.

use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use testkit::daemon::{Daemon, bin};
use testkit::prosody::Prosody;
use testkit::sse::SseClient;
use testkit::xmpp::XmppClient;

const ROOMS: [&str; 3] = ["r1", "r2", "r3"];

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

#[test]
fn peak_rss_stays_under_the_printed_ceiling_at_every_cap() {
    let prosody = Prosody::start();
    prosody.create_rooms(&ROOMS);
    prosody.register("alice", "pw");
    let extra = "max_subscribers = 150\nmax_pending_requests = 40\nmax_multi_streams = 4\n\
                 ring_events = 32\nring_bytes = 131072\nmax_stanza_bytes = 65536\nhistory = 0";
    let daemon = Daemon::start(&prosody, &ROOMS, extra);
    // The ceiling's fixed part is the release binary's own idle RSS; tests run the debug build,
    // so that part is measured here and the tables' growth is checked against the rest.
    let idle = status_kib(daemon.pid(), "VmRSS:") * 1024;
    let printed = Command::new(bin())
        .args([
            "--config",
            daemon.config_path().to_str().unwrap(),
            "--check-config",
        ])
        .output()
        .unwrap();
    let printed = String::from_utf8(printed.stdout).unwrap();
    let ceiling: u64 = printed
        .lines()
        .find_map(|l| l.strip_prefix("# memory ceiling: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("the ceiling line");
    let fixed: u64 = printed
        .lines()
        .find_map(|l| {
            l.rsplit_once("+ process ")
                .map(|(_, n)| n.trim().to_string())
        })
        .and_then(|n| n.parse().ok())
        .expect("the process part of the ceiling");

    // Every cap: subscribers (some stalled: never read), multi-room streams, pending heads.
    let mut live: Vec<SseClient> = Vec::new();
    let mut stalled: Vec<TcpStream> = Vec::new();
    for i in 0..140 {
        let room = ROOMS[i % ROOMS.len()];
        if i % 2 == 0 {
            live.push(SseClient::connect(
                daemon.http,
                &format!("/eventsource/{room}"),
                &[],
            ));
        } else {
            let mut s = TcpStream::connect(daemon.http).unwrap();
            write!(s, "GET /eventsource/{room} HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
            stalled.push(s);
        }
    }
    for _ in 0..4 {
        live.push(SseClient::connect(
            daemon.http,
            "/eventsource?room=r1&room=r2&room=r3",
            &[],
        ));
    }
    let pending: Vec<TcpStream> = (0..60)
        .map(|_| {
            let mut s = TcpStream::connect(daemon.http).unwrap();
            let _ = s.write_all(b"GET /eventsource/r1 HTTP/1.1\r\nX-Slow: ");
            s
        })
        .collect();
    // Full rings of the largest events: bodies of ~30 KB full of characters JSON escapes.
    let mut alice = XmppClient::connect(&prosody, "alice", "pw");
    for room in ROOMS {
        alice.join(room, "alice");
    }
    let body = "\"\\\t".repeat(10_000);
    for i in 0..40 {
        alice.send_groupchat(ROOMS[i % ROOMS.len()], &format!("{i} {body}"));
    }
    alice.send_groupchat("r1", "all sent");
    alice.wait_for("all sent", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    let peak = status_kib(daemon.pid(), "VmHWM:") * 1024;
    let tables = ceiling - fixed;
    println!(
        "idle RSS {idle}, peak RSS {peak}: growth {} bytes; ceiling {ceiling} = tables {tables} + process {fixed}",
        peak - idle
    );
    assert!(
        peak - idle < tables,
        "RSS grew by {} bytes, more than the tables' ceiling {tables}\n{printed}",
        peak - idle
    );
    drop((live, stalled, pending));
}
