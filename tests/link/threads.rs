//! The single-thread design, checked on the running process: one thread does all the work
//! (plus the `async-io` reactor's helper), before and after load and hostile requests,
//! including `Expect: 100-continue` (which makes async-h1 start a thread pool).

use std::time::Duration;

use testkit::daemon::Daemon;
use testkit::prosody::Prosody;
use testkit::sse::{SseClient, http_raw};
use testkit::xmpp::XmppClient;

/// Names of the daemon's threads, from `/proc/<pid>/task/*/comm`.
fn threads(pid: u32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the daemon's /proc entry")
        .map(|t| {
            let path = t.unwrap().path().join("comm");
            std::fs::read_to_string(path).unwrap().trim().to_string()
        })
        .collect();
    names.sort();
    names
}

fn assert_single_worker(pid: u32, when: &str) {
    let names = threads(pid);
    let workers: Vec<&String> = names.iter().filter(|n| *n != "async-io").collect();
    assert_eq!(workers.len(), 1, "{when}: threads {names:?}");
    assert!(names.len() <= 2, "{when}: threads {names:?}");
}

#[test]
fn one_worker_thread_before_and_after_load_and_hostile_requests() {
    let prosody = Prosody::start();
    prosody.create_rooms(&["lobby"]);
    prosody.register("alice", "alicepass");
    let daemon = Daemon::start(&prosody, &["lobby"], "");
    let pid = daemon.pid();
    assert_single_worker(pid, "after start-up");

    let mut subs: Vec<SseClient> = (0..50)
        .map(|_| SseClient::connect(daemon.http, "/eventsource/lobby", &[]))
        .collect();
    let hostile: Vec<Vec<u8>> = vec![
        b"GET /eventsource/lobby HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n".to_vec(),
        b"POST /eventsource/lobby HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 100000\r\n\r\n".to_vec(),
        b"GET /eventsource/lobby HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec(),
        b"GET / HTTP/1.1\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n\r\n".to_vec(),
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
        vec![0xffu8; 10_000],
    ];
    for request in &hostile {
        let _ = http_raw(daemon.http, request, Duration::from_secs(3));
    }
    let mut alice = XmppClient::connect(&prosody, "alice", "alicepass");
    alice.join("lobby", "alice");
    for i in 0..50 {
        alice.send_groupchat("lobby", &format!("load {i}"));
    }
    for sub in &mut subs {
        assert_eq!(sub.collect(50, Duration::from_secs(10)).len(), 50);
    }
    assert_single_worker(pid, "under load, after hostile requests");
}
