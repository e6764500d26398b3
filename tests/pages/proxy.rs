//! The README's nginx recipe, tested: Debian's nginx on loopback serves the daemon under a
//! prefix (`/chat/`), events arrive through it unbuffered, and the live page's links (all
//! relative) work under the prefix.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use testkit::daemon::Daemon;
use testkit::nginx::Nginx;
use testkit::prosody::Prosody;
use testkit::sse::{SseClient, http_get};
use testkit::xmpp::XmppClient;
use testkit::{TempDir, free_port};

const T: Duration = Duration::from_secs(10);

/// The recipe from the README, with the test's ports.
fn nginx_conf(dir: &TempDir, listen: u16, daemon: SocketAddr) -> String {
    let d = dir.path().display();
    format!(
        r#"daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{listen};
        # --- the recipe ---
        location /chat/ {{
            proxy_pass http://{daemon}/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_cache off;
            proxy_read_timeout 1h;
        }}
        # ---
    }}
}}
"#
    )
}

#[test]
fn streams_and_pages_through_nginx_under_a_prefix() {
    let prosody = Prosody::start();
    prosody.create_rooms(&["lobby"]);
    prosody.register("alice", "pw");
    let daemon = Daemon::start(&prosody, &["lobby"], "history = 0");
    let dir = TempDir::new("muc-es-nginx");
    let port = free_port();
    let mut nginx = Nginx::start(&dir, &nginx_conf(&dir, port, daemon.http), port);
    let proxy = SocketAddr::from(([127, 0, 0, 1], port));

    let mut sub = SseClient::connect(proxy, "/chat/eventsource/lobby", &[]);
    assert_eq!(sub.status(), 200);
    assert_eq!(sub.header("content-type"), Some("text/event-stream"));
    std::thread::sleep(Duration::from_millis(300));
    let mut alice = XmppClient::connect(&prosody, "alice", "pw");
    alice.join("lobby", "alice");
    // Unbuffered: each event arrives on its own, promptly, not when a buffer fills.
    for i in 0..3 {
        let sent = Instant::now();
        alice.send_groupchat("lobby", &format!("through nginx {i}"));
        let event = sub.next_event(T).expect("an event through nginx");
        assert!(
            event.data.contains(&format!("through nginx {i}")),
            "{event:?}"
        );
        assert!(
            sent.elapsed() < Duration::from_secs(2),
            "event {i} took {:?}: the proxy buffers",
            sent.elapsed()
        );
    }

    // The pages' links are relative, so they work under the prefix.
    let (status, _, index) = http_get(proxy, "/chat/");
    assert_eq!(status, 200);
    assert!(index.contains("href=\"view/lobby\""), "{index}");
    let (status, _, view) = http_get(proxy, "/chat/view/lobby");
    assert_eq!(status, 200);
    let script = view
        .split("<script src=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("the view's script");
    assert!(script.starts_with("../assets/"), "{script}");
    let (status, _, js) = http_get(proxy, &format!("/chat/view/{script}"));
    assert_eq!(status, 200, "{script} under the prefix");
    assert!(js.contains("../eventsource/"));

    // Stopped gracefully, nginx exits 0 and leaves no worker behind (stop() checks its group).
    drop(sub);
    let status = nginx.stop();
    assert!(
        status.is_some_and(|s| s.success()),
        "nginx on QUIT: {status:?}"
    );
    let nginx_left: Vec<_> = testkit::procs::children()
        .into_iter()
        .filter(|p| p.cmdline.starts_with("nginx"))
        .collect();
    assert!(nginx_left.is_empty(), "left running: {nginx_left:?}");
}
