//! Soak test, on demand (not in CI): `SOAK_SECS=600 cargo test --release --test soak -- --ignored
//! --nocapture`. Steady traffic into two rooms, subscriber churn, two Prosody restarts; prints
//! RSS over time and fails if RSS grows after warm-up or a connected fast subscriber misses a
//! message.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use testkit::daemon::Daemon;
use testkit::prosody::Prosody;
use testkit::sse::SseClient;
use testkit::xmpp::XmppClient;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
#[ignore = "soak: minutes long; run on demand"]
fn soak() {
    let total = Duration::from_secs(
        std::env::var("SOAK_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(600),
    );
    let mut prosody = Prosody::start_with("", r#"modules_enabled = { "muc_mam" }"#);
    prosody.create_rooms(&["a", "b"]);
    prosody.register("poster", "pw");
    let daemon = Daemon::start(
        &prosody,
        &["a", "b"],
        "history = 50\nreconnect_max_secs = 2",
    );
    let pid = daemon.pid();
    let start = Instant::now();
    let mut poster = XmppClient::connect(&prosody, "poster", "pw");
    poster.join("a", "poster");
    poster.join("b", "poster");
    // One long-lived subscriber per room must see every message, in order, across restarts.
    let mut watchers = [
        SseClient::connect(daemon.http, "/eventsource/a", &[]),
        SseClient::connect(daemon.http, "/eventsource/b", &[]),
    ];
    let mut seen: [Vec<u64>; 2] = [Vec::new(), Vec::new()];
    let mut sent: [u64; 2] = [0, 0];
    let mut churn: Vec<SseClient> = Vec::new();
    let mut samples: Vec<(u64, u64)> = Vec::new();
    let mut restarts = 0;
    let mut n = 0u64;
    while start.elapsed() < total {
        let t = start.elapsed().as_secs();
        if (restarts == 0 && t >= total.as_secs() / 3)
            || (restarts == 1 && t >= 2 * total.as_secs() / 3)
        {
            prosody.restart();
            daemon.wait_log_count("joined room a@", restarts + 2, Duration::from_secs(30));
            poster = XmppClient::connect(&prosody, "poster", "pw");
            poster.join("a", "poster");
            poster.join("b", "poster");
            restarts += 1;
        }
        let room = (n % 2) as usize;
        poster.send_groupchat(["a", "b"][room], &format!("{n}"));
        sent[room] += 1;
        n += 1;
        if n.is_multiple_of(20) {
            churn.push(SseClient::connect(
                daemon.http,
                "/eventsource/a?history=5",
                &[],
            ));
            if churn.len() > 30 {
                churn.drain(..10);
            }
        }
        for (i, w) in watchers.iter_mut().enumerate() {
            while let Some(body) = w.next_message_body(Duration::from_millis(1)) {
                seen[i].push(body.parse().unwrap());
            }
        }
        if n.is_multiple_of(100) {
            samples.push((t, rss_kib(pid)));
            println!("t={t:>4}s messages={n:>6} RSS={} KiB", rss_kib(pid));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_secs(2));
    for (i, w) in watchers.iter_mut().enumerate() {
        while let Some(body) = w.next_message_body(Duration::from_millis(200)) {
            seen[i].push(body.parse().unwrap());
        }
        let unique: HashSet<u64> = seen[i].iter().copied().collect();
        assert_eq!(
            unique.len(),
            seen[i].len(),
            "room {i}: a message came twice"
        );
        assert_eq!(seen[i].len() as u64, sent[i], "room {i}: messages lost");
        assert!(
            seen[i].windows(2).all(|w| w[0] < w[1]),
            "room {i}: out of order"
        );
    }
    // After warm-up (the first third), RSS may wobble but not trend upwards.
    let warm: Vec<u64> = samples
        .iter()
        .filter(|(t, _)| *t >= total.as_secs() / 3)
        .map(|s| s.1)
        .collect();
    if let (Some(first), Some(max)) = (warm.first(), warm.iter().max()) {
        println!("RSS after warm-up: first {first} KiB, max {max} KiB");
        assert!(
            *max <= first + 512,
            "RSS grew after warm-up: {first} → {max} KiB"
        );
    }
    println!("{n} messages, {restarts} Prosody restarts, no loss, no duplicates");
}
