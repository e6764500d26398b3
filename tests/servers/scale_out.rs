//! Scale-out, proven: two daemons (components `sse1.localhost` and `sse2.localhost`) watch the
//! same room on one Prosody (with `mod_muc_mam`, so event ids are the room's stanza-ids) behind
//! nginx (`upstream` with both). A real `EventSource` in headless Chromium streams through
//! nginx; the instance it is connected to is killed (SIGKILL, no goodbye), the browser
//! reconnects through nginx to the other instance with `Last-Event-ID`, and ends up with every
//! message exactly once, in order, with the stanza-ids as ids and no `gap`.
//!
//! And two ejabberd nodes clustered on loopback, one daemon on each: a message posted on node 1
//! is streamed by both daemons with the same id.
//!
//! Needs Debian's prosody, ejabberd, nginx and chromium; a missing one fails the test.

use std::net::SocketAddr;
use std::thread::sleep;
use std::time::{Duration, Instant};

use testkit::browser::{self, Browser, Page, PageServer};
use testkit::daemon::{Daemon, READY_TIMEOUT};
use testkit::ejabberd::Ejabberd;
use testkit::json::{self, Value};
use testkit::nginx::Nginx;
use testkit::prosody::Prosody;
use testkit::sse::SseClient;
use testkit::xmpp::{XmppClient, stanza_attr};
use testkit::{TempDir, free_port, random_hex};

const T: Duration = Duration::from_secs(10);
/// The whole scenario must finish within this.
const BUDGET: Duration = Duration::from_secs(90);

/// The README's "More than one box" nginx block, with the test's ports.
fn nginx_conf(dir: &TempDir, listen: u16, a: SocketAddr, b: SocketAddr) -> String {
    let d = dir.path().display();
    format!(
        r#"daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
    log_format resume '$upstream_addr "$http_last_event_id" $status';
    access_log {d}/access.log resume;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    # --- the recipe ---
    upstream muc_eventsource {{
        server {a} max_fails=1 fail_timeout=30s;
        server {b} max_fails=1 fail_timeout=30s;
    }}
    server {{
        listen 127.0.0.1:{listen};
        location /eventsource/ {{
            proxy_pass http://muc_eventsource;
            proxy_next_upstream error timeout;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_cache off;
            proxy_read_timeout 1h;
        }}
    }}
    # ---
}}
"#
    )
}

/// Chromium and a cluster are heavy for a shared 2-core machine: one test at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The daemon config for component `sse<n>.localhost` with its own nick.
fn instance_config(prosody: &Prosody, n: u8, secret: &str) -> String {
    Daemon::config_text(prosody, &["lobby"], "history = 20")
        .replace(
            &format!("component = {}\n", prosody.component),
            &format!("component = sse{n}.localhost\n"),
        )
        .replace(
            &format!("secret = {}\n", prosody.secret),
            &format!("secret = {secret}\n"),
        )
        .replace("nick = eventsource\n", &format!("nick = eventsource{n}\n"))
}

/// The page: one `EventSource` through nginx; reports what it saw by `POST /report`.
fn page_html(stream_url: &str) -> String {
    let url = Value::String(stream_url.to_string()).to_string();
    format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>scale-out</title></head><body>
<script>
"use strict";
const records = [];
let seq = 0;
function report() {{
  seq += 1;
  fetch("/report", {{ method: "POST", body: JSON.stringify({{ seq, records }}) }}).catch(() => {{}});
}}
function record(r) {{ records.push(r); report(); }}
const source = new EventSource({url});
source.onopen = () => record({{ t: "open" }});
source.onerror = () => record({{ t: "error" }});
source.onmessage = (e) => {{
  let body;
  try {{ body = JSON.parse(e.data).body; }} catch (x) {{ body = "unparsable: " + e.data; }}
  record({{ t: "message", body: String(body), id: e.lastEventId }});
}};
for (const type of ["status", "gap"]) {{
  source.addEventListener(type, (e) => record({{ t: type, body: e.data, id: e.lastEventId }}));
}}
setInterval(report, 1000);
</script></body></html>
"#
    )
}

/// One thing the page's `EventSource` saw: `(type, body or data, id)`.
type Rec = (String, String, String);

/// Everything the page saw, from its newest report.
fn records(page: &PageServer) -> Vec<Rec> {
    let newest = page
        .reports()
        .iter()
        .filter_map(|r| json::parse(r).ok())
        .filter_map(|j| match j.get("seq") {
            Some(Value::Number(n)) => Some((n.as_u64()?, j)),
            _ => None,
        })
        .max_by_key(|(seq, _)| *seq);
    let Some((_, report)) = newest else {
        return Vec::new();
    };
    let Some(Value::Array(items)) = report.get("records") else {
        return Vec::new();
    };
    let text = |j: &Value, k: &str| j.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    items
        .iter()
        .map(|j| (text(j, "t"), text(j, "body"), text(j, "id")))
        .collect()
}

fn message_bodies(recs: &[Rec]) -> Vec<String> {
    recs.iter()
        .filter(|r| r.0 == "message")
        .map(|r| r.1.clone())
        .collect()
}

/// Posts `body` as `alice` and returns the room's stanza-id from the echo.
fn post(alice: &mut XmppClient, body: &str) -> String {
    let id = alice.send_groupchat("lobby", body);
    let (_, echo) = alice.wait_match(
        |s| s.starts_with("<message") && stanza_attr(s, "id").as_deref() == Some(id.as_str()),
        T,
        body,
    );
    echo.split_once("<stanza-id")
        .and_then(|(_, rest)| stanza_attr(&format!("<stanza-id{rest}"), "id"))
        .unwrap_or_else(|| panic!("no stanza-id on the echo of {body:?}: {echo}"))
}

#[test]
fn a_browser_resumes_on_the_other_instance_with_every_message_once() {
    let _serial = serial();
    // Fail first, and clearly, if there is no browser.
    eprintln!("{}", browser::chromium_version());
    let started = Instant::now();
    let secret = random_hex(16);
    let sections: String = (1..=2)
        .map(|n| format!("Component \"sse{n}.localhost\"\n  component_secret = \"{secret}\"\n"))
        .collect();
    let prosody = Prosody::start_full("", r#"modules_enabled = { "muc_mam" }"#, &sections);
    prosody.create_rooms(&["lobby"]);
    let mut alice = XmppClient::user(&prosody, "alice", &["lobby"]);

    let mut daemons: Vec<Daemon> = (1..=2)
        .map(|n| Daemon::spawn_raw(&instance_config(&prosody, n, &secret)))
        .collect();
    for d in &mut daemons {
        d.wait_ready(&["lobby"], READY_TIMEOUT);
    }
    let dir = TempDir::new("muc-es-scale-out");
    let port = free_port();
    let _nginx = Nginx::start(
        &dir,
        &nginx_conf(&dir, port, daemons[0].http, daemons[1].http),
        port,
    );
    let stream_url = format!("http://127.0.0.1:{port}/eventsource/lobby");
    let page = PageServer::start(vec![Page::html("/", &page_html(&stream_url))]);
    let mut browser = Browser::open(&page.url("/"));
    let logs = |daemons: &[Daemon]| {
        daemons
            .iter()
            .map(|d| d.log_tail_block())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let mut wait = |what: &str, daemons: &[Daemon], pred: &dyn Fn(&[Rec]) -> bool| {
        loop {
            let recs = records(&page);
            if pred(&recs) {
                eprintln!("[{:.1} s] {what}", started.elapsed().as_secs_f64());
                return recs;
            }
            if browser.try_wait().is_some() || started.elapsed() > BUDGET {
                panic!(
                    "waiting for {what}: budget spent or chromium gone\nrecords: {recs:?}\n{}\n{}\nnginx error log:\n{}",
                    browser.log_tail_block(),
                    logs(daemons),
                    std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
                );
            }
            sleep(Duration::from_millis(50));
        }
    };
    wait("the EventSource is open", &daemons, &|r| {
        r.iter().any(|x| x.0 == "open")
    });
    // Which instance did nginx pick?
    let deadline = Instant::now() + T;
    let serving = loop {
        if let Some(i) = daemons
            .iter()
            .position(|d| d.log().contains("subscribed to lobby@"))
        {
            break i;
        }
        assert!(
            Instant::now() < deadline,
            "no instance saw the subscriber\n{}",
            logs(&daemons)
        );
        sleep(Duration::from_millis(50));
    };
    let other = 1 - serving;
    eprintln!(
        "the browser streams from instance {} (sse{}.localhost)",
        serving + 1,
        serving + 1
    );

    let bodies: Vec<String> = (1..=7).map(|i| format!("scale-out message {i}")).collect();
    let mut ids = Vec::new();
    for body in &bodies[..3] {
        ids.push(post(&mut alice, body));
    }
    wait("3 live messages", &daemons, &|r| {
        message_bodies(r).len() >= 3
    });

    // The instance the browser is connected to dies without a goodbye.
    let status = {
        let d = &mut daemons[serving];
        d.signal("KILL");
        d.wait_exit(T).expect("the killed instance exits")
    };
    eprintln!("instance {} killed: {status}", serving + 1);
    for body in &bodies[3..6] {
        ids.push(post(&mut alice, body));
    }
    // Posted before the browser came back (`retry: 3000`): they can only reach it through
    // the resume on the other instance.
    let recs = records(&page);
    assert_eq!(
        recs.iter().filter(|r| r.0 == "open").count(),
        1,
        "the browser reconnected before the missed messages were posted: {recs:?}"
    );
    wait(
        "the 3 missed messages from the other instance",
        &daemons,
        &|r| message_bodies(r).len() >= 6,
    );
    ids.push(post(&mut alice, &bodies[6]));
    wait("the 7th, live message", &daemons, &|r| {
        message_bodies(r).len() >= 7
    });
    // Anything duplicated or late would show up now.
    sleep(Duration::from_millis(1500));
    let recs = records(&page);
    assert_eq!(
        message_bodies(&recs),
        bodies,
        "every message exactly once, in order: {recs:?}"
    );
    let got_ids: Vec<&str> = recs
        .iter()
        .filter(|r| r.0 == "message")
        .map(|r| r.2.as_str())
        .collect();
    assert_eq!(got_ids, ids, "ids are the room's stanza-ids: {recs:?}");
    assert!(!recs.iter().any(|r| r.0 == "gap"), "no gap: {recs:?}");
    assert!(
        recs.iter().filter(|r| r.0 == "open").count() >= 2,
        "the browser reconnected: {recs:?}"
    );
    // The browser resumed on the other instance with the id of the last message it had: the
    // nginx access log (written when a request ends, so close the browser first) shows the
    // reconnect's `Last-Event-ID` and where nginx sent it.
    drop(browser);
    let other_addr = daemons[other].http.to_string();
    let want = format!("\"{}\" 200", ids[2]);
    let deadline = Instant::now() + T;
    let access = loop {
        let access = std::fs::read_to_string(dir.join("access.log")).unwrap_or_default();
        if access.lines().any(|l| l.ends_with(&want)) || Instant::now() >= deadline {
            break access;
        }
        sleep(Duration::from_millis(50));
    };
    eprintln!("nginx access log:\n{access}");
    let resume = access
        .lines()
        .find(|l| l.ends_with(&want))
        .unwrap_or_else(|| panic!("no request resumed with {want}:\n{access}"));
    assert!(
        resume
            .split(' ')
            .next()
            .is_some_and(|u| u.ends_with(&other_addr))
            || resume.contains(&format!("{other_addr} ")),
        "the resume went to the other instance ({other_addr}): {resume}"
    );
}

/// Two ejabberd nodes clustered on loopback, one daemon on each (components `sse1.localhost`
/// on node 1 and `sse2.localhost` on node 2): a message posted by a user of node 1 is streamed
/// by both daemons with the same id, the room's stanza-id.
#[test]
fn an_ejabberd_cluster_streams_a_message_with_the_same_id_from_both_nodes() {
    let _serial = serial();
    let secret = random_hex(16);
    let comps = [
        ("sse1.localhost", secret.as_str()),
        ("sse2.localhost", secret.as_str()),
    ];
    let (one, two) = Ejabberd::start_cluster(&comps);
    one.create_rooms(&["lobby"]);
    one.register("alice", "pw");
    let config = |node: &Ejabberd, n: u8| {
        Daemon::config_text(node, &["lobby"], "history = 0")
            .replace(
                &format!("component = {}\n", node.component),
                &format!("component = sse{n}.localhost\n"),
            )
            .replace(
                &format!("secret = {}\n", node.secret),
                &format!("secret = {secret}\n"),
            )
            .replace("nick = eventsource\n", &format!("nick = eventsource{n}\n"))
            .replace(
                &format!("upstream = {}\n", node.component_addr()),
                &format!(
                    "upstream = {}\n",
                    node.component_addr_of(&format!("sse{n}.localhost"))
                ),
            )
    };
    let mut daemons = [
        Daemon::spawn_raw(&config(&one, 1)),
        Daemon::spawn_raw(&config(&two, 2)),
    ];
    for d in &mut daemons {
        d.wait_ready(&["lobby"], READY_TIMEOUT);
    }
    assert!(daemons[1].log().contains(&format!(
        "connected to {}",
        two.component_addr_of("sse2.localhost")
    )));
    let mut subs: Vec<SseClient> = daemons
        .iter()
        .map(|d| SseClient::connect(d.http, "/eventsource/lobby", &[]))
        .collect();
    sleep(Duration::from_millis(300));
    let mut alice = XmppClient::connect(&one, "alice", "pw");
    alice.join("lobby", "alice");
    let id = post(&mut alice, "across the cluster");
    for (n, sub) in subs.iter_mut().enumerate() {
        let event = sub.next_event(T).unwrap_or_else(|| {
            panic!(
                "daemon {} got nothing\n{}",
                n + 1,
                daemons[n].log_tail_block()
            )
        });
        assert!(event.data.contains("across the cluster"), "{event:?}");
        assert_eq!(
            event.last_event_id,
            id,
            "daemon {}: the room's stanza-id",
            n + 1
        );
    }
}
