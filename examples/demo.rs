//! The whole product on one machine, throwaway: starts a private Prosody on loopback (random
//! ports, temp dir), creates a room `lobby`, starts the release `muc-eventsource` against it,
//! prints the URL to open, and posts a message to the room every two seconds until Ctrl-C.
//!
//!     cargo build --release && cargo run --release --example demo
//!
//! Needs Debian's `prosody` (installed here with apt-get when missing and running as root).

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::time::Duration;

use common::daemon::Daemon;
use common::prosody::Prosody;
use common::xmpp::XmppClient;

fn main() {
    if Command::new("prosody").arg("--help").output().is_err() {
        let root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout == b"0\n");
        if root.unwrap_or(false) {
            eprintln!("demo: installing Debian's prosody (apt-get install -y prosody)…");
            let _ = Command::new("apt-get").args(["update", "-qq"]).status();
            let ok = Command::new("apt-get")
                .args(["install", "-y", "-qq", "prosody"])
                .status()
                .is_ok_and(|s| s.success());
            // The package starts a system-wide Prosody; the demo runs its own.
            let _ = Command::new("systemctl").args(["stop", "prosody"]).status();
            if !ok {
                eprintln!("demo: apt-get install prosody failed");
                std::process::exit(1);
            }
        } else {
            eprintln!(
                "demo: Prosody is not installed: run `sudo apt-get install -y prosody` first"
            );
            std::process::exit(1);
        }
    }
    let prosody = Prosody::start();
    prosody.create_rooms(&["lobby"]);
    prosody.register("demo", "demo-pass");
    let listen = std::env::var("DEMO_LISTEN").unwrap_or_else(|_| "127.0.0.1:8080".into());
    let config = Daemon::config_text(&prosody, &["lobby"], "")
        .lines()
        .map(|l| {
            if l.starts_with("listen =") {
                format!("listen = {listen}")
            } else if l.starts_with("log_level =") {
                "log_level = info".into()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut daemon = Daemon::spawn_raw(&config);
    daemon.wait_ready(&["lobby"], Duration::from_secs(15));
    let mut poster = XmppClient::connect(&prosody, "demo", "demo-pass");
    poster.join("lobby", "demo");
    println!();
    println!("muc-eventsource is streaming lobby@{} — open:", prosody.muc);
    println!();
    println!("    http://{listen}/eventsource/lobby");
    println!();
    println!("or: curl -N http://{listen}/eventsource/lobby");
    println!(
        "Prosody c2s (user demo / demo-pass) is on 127.0.0.1:{}; Ctrl-C stops everything.",
        prosody.c2s_port
    );
    println!("daemon log: {}", daemon.dir().join("daemon.log").display());
    for n in 1.. {
        std::thread::sleep(Duration::from_secs(2));
        poster.send_groupchat("lobby", &format!("demo message {n} 🎉"));
        if daemon.try_wait().is_some() {
            eprintln!("demo: the daemon stopped:\n{}", daemon.log());
            std::process::exit(1);
        }
    }
}
