//! A real `EventSource` in headless Chromium (Debian's `chromium`) against the daemon and a
//! real Prosody: it receives live messages, reconnects by itself after the daemon restarts on
//! the same port, resumes with `Last-Event-ID` (stanza-ids from `mod_muc_mam`, which the new
//! daemon seeds its ring with from MUC history) and ends up with every message exactly once.
//! Plus a check of the screenshot helper in `testkit/src/browser.rs`.
//!
//! The page is served by a std-only HTTP server in the test ([`PageServer`]); it reports what
//! its `EventSource` saw by `POST /report` (the whole record list, numbered, after every event
//! and once a second), so the test only reads the newest report.
//!
//! Needs `apt-get install -y chromium` (and prosody); a missing Chromium fails the test.

use std::sync::{Mutex, MutexGuard};
use std::thread::sleep;
use std::time::{Duration, Instant};

use testkit::TempDir;
use testkit::browser::{self, Browser, Page, PageServer, png_size, screenshot, screenshot_after};
use testkit::daemon::{Daemon, READY_TIMEOUT};
use testkit::json::{self, Value};
use testkit::prosody::Prosody;
use testkit::xmpp::XmppClient;
use testkit::xmpp::stanza_id;

/// The whole scenario must finish within this (each wait is also capped by it).
const BUDGET: Duration = Duration::from_secs(55);
/// One XMPP round trip.
const T: Duration = Duration::from_secs(10);

/// Chromium is heavy for a shared 2-core machine: one browser test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The test page: opens the stream and reports every `open`, `error`, message and named event.
fn page_html(stream_url: &str) -> String {
    let url = Value::String(stream_url.to_string()).to_string();
    format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>muc-eventsource browser test</title></head>
<body><pre id="out"></pre>
<script>
"use strict";
const STREAM_URL = {url};
const records = [];
let seq = 0;
function report() {{
  seq += 1;
  fetch("/report", {{ method: "POST", body: JSON.stringify({{ seq, records }}) }}).catch(() => {{}});
}}
function record(r) {{
  r.at = Math.round(performance.now());
  records.push(r);
  document.getElementById("out").textContent += JSON.stringify(r) + "\n";
  report();
}}
const states = ["connecting", "open", "closed"];
record({{ t: "start", url: STREAM_URL }});
const source = new EventSource(STREAM_URL);
source.onopen = () => record({{ t: "open", state: states[source.readyState] }});
source.onerror = () => record({{ t: "error", state: states[source.readyState] }});
source.onmessage = (e) => {{
  let body;
  try {{ body = JSON.parse(e.data).body; }} catch (x) {{ body = "unparsable: " + e.data; }}
  record({{ t: "message", body: String(body), id: e.lastEventId }});
}};
for (const type of ["status", "gap", "subject"]) {{
  source.addEventListener(type, (e) => record({{ t: type, data: e.data, id: e.lastEventId }}));
}}
setInterval(report, 1000);
</script></body></html>
"#
    )
}

/// One thing the page's `EventSource` saw.
#[derive(Clone, Debug, Default)]
struct Rec {
    /// `start`, `open`, `error`, `message`, `status`, `gap`, `subject`.
    t: String,
    body: String,
    id: String,
    data: String,
    state: String,
    /// Milliseconds since the page started.
    at: String,
}

impl std::fmt::Display for Rec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:>6} ms {}", self.at, self.t)?;
        for (k, v) in [
            ("state", &self.state),
            ("body", &self.body),
            ("data", &self.data),
            ("id", &self.id),
        ] {
            if !v.is_empty() {
                write!(f, " {k}={v:?}")?;
            }
        }
        Ok(())
    }
}

/// The records of the newest (highest `seq`) report; empty before the first one.
fn records(page: &PageServer) -> Vec<Rec> {
    let newest = page
        .reports()
        .iter()
        .filter_map(|r| json::parse(r).ok())
        .filter_map(|j| {
            let seq = match j.get("seq") {
                Some(Value::Number(n)) => n.as_u64()?,
                _ => return None,
            };
            Some((seq, j))
        })
        .max_by_key(|(seq, _)| *seq);
    let Some((_, report)) = newest else {
        return Vec::new();
    };
    let Some(Value::Array(items)) = report.get("records") else {
        return Vec::new();
    };
    let text = |j: &Value, k: &str| match j.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    items
        .iter()
        .map(|j| Rec {
            t: text(j, "t"),
            body: text(j, "body"),
            id: text(j, "id"),
            data: text(j, "data"),
            state: text(j, "state"),
            at: text(j, "at"),
        })
        .collect()
}

fn show(recs: &[Rec]) -> String {
    recs.iter()
        .map(|r| format!("  {r}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn message_bodies(recs: &[Rec]) -> Vec<String> {
    recs.iter()
        .filter(|r| r.t == "message")
        .map(|r| r.body.clone())
        .collect()
}

/// Everything a failure message needs: the page's records, Chromium's and the daemon's logs.
struct Scene<'a> {
    started: Instant,
    page: &'a PageServer,
    browser: &'a mut Browser,
}

impl Scene<'_> {
    fn elapsed(&self) -> String {
        format!("{:.1} s", self.started.elapsed().as_secs_f64())
    }

    /// Polls the page's reports until `pred` holds; panics with everything known after `step`
    /// or when the whole [`BUDGET`] is spent, or if Chromium exits.
    fn wait(
        &mut self,
        what: &str,
        step: Duration,
        daemon_log: &dyn Fn() -> String,
        pred: impl Fn(&[Rec]) -> bool,
    ) -> Vec<Rec> {
        let until = (Instant::now() + step).min(self.started + BUDGET);
        loop {
            let recs = records(self.page);
            if pred(&recs) {
                eprintln!("[{}] {what}", self.elapsed());
                return recs;
            }
            let exited = self.browser.try_wait();
            if exited.is_some() || Instant::now() >= until {
                let why = match exited {
                    Some(status) => format!("chromium exited ({status})"),
                    None => format!("timed out after {step:?} (test budget {BUDGET:?})"),
                };
                panic!(
                    "[{}] waiting for: {what}: {why}\n--- page records ---\n{}\n--- page server requests ---\n{}\n{}\n{}",
                    self.elapsed(),
                    show(&recs),
                    self.page
                        .requests()
                        .iter()
                        .map(|r| format!("  {} {}", r.method, r.target))
                        .filter(|l| !l.contains("/report"))
                        .collect::<Vec<_>>()
                        .join("\n"),
                    self.browser.log_tail_block(),
                    daemon_log()
                );
            }
            sleep(Duration::from_millis(50));
        }
    }
}

/// Sends `body` to the room as `alice` and returns the room's stanza-id for it (from the
/// echo, which also proves Prosody has stored it in the room's history and archive).
fn post(alice: &mut XmppClient, body: &str) -> String {
    alice.send_groupchat("lobby", body);
    let (_, echo) = alice.wait_match(
        |s| s.starts_with("<message") && s.contains(&format!("<body>{body}</body>")),
        T,
        body,
    );
    stanza_id(&echo)
        .unwrap_or_else(|| panic!("no stanza-id on the echo of {body:?} (mod_muc_mam?): {echo}"))
}

#[test]
fn a_real_eventsource_resumes_across_a_daemon_restart_with_every_message_once() {
    let _serial = serial();
    // Fail first, and clearly, if there is no browser.
    eprintln!("{}", browser::chromium_version());
    let started = Instant::now();

    let prosody = Prosody::start_with("", r#"modules_enabled = { "muc_mam" }"#);
    prosody.create_rooms(&["lobby"]);
    let mut alice = XmppClient::user(&prosody, "alice", &["lobby"]);

    // One config, so the second daemon listens on the same port.
    let config = Daemon::config_text(&prosody, &["lobby"], "history = 20");
    let mut first = Daemon::spawn_raw(&config);
    first.wait_ready(&["lobby"], READY_TIMEOUT);
    let stream_url = format!("http://{}/eventsource/lobby", first.http);
    let page = PageServer::start(vec![Page::html("/", &page_html(&stream_url))]);
    let mut browser = Browser::open(&page.url("/"));
    eprintln!(
        "[{:.1} s] chromium {} on {} streaming {stream_url}",
        started.elapsed().as_secs_f64(),
        browser.pid(),
        page.url("/")
    );
    let mut scene = Scene {
        started,
        page: &page,
        browser: &mut browser,
    };

    let first_log = || first.log_tail_block();
    scene.wait(
        "the EventSource is open",
        Duration::from_secs(30),
        &first_log,
        |r| r.iter().any(|r| r.t == "open"),
    );
    assert!(
        first.wait_log("subscribed to lobby@", T),
        "the daemon saw no subscriber\n{}",
        first.log_tail_block()
    );

    let bodies: Vec<String> = (1..=7).map(|i| format!("browser message {i}")).collect();
    let mut ids = Vec::new();
    for body in &bodies[..3] {
        ids.push(post(&mut alice, body));
    }
    scene.wait(
        "3 live messages",
        Duration::from_secs(15),
        &first_log,
        |r| message_bodies(r).len() >= 3,
    );

    // SIGTERM: a `status` event, then the stream ends; the browser is left reconnecting.
    assert_eq!(first.stop().code(), Some(0), "{}", first.log_tail_block());
    let first_log_text = first.log();
    let first_log = || first.log_tail_block();
    scene.wait(
        "the EventSource noticed the end of the stream",
        Duration::from_secs(15),
        &first_log,
        |r| {
            r.iter()
                .rposition(|x| x.t == "message")
                .is_some_and(|m| r[m..].iter().any(|x| x.t == "error"))
        },
    );
    for body in &bodies[3..6] {
        ids.push(post(&mut alice, body));
    }
    eprintln!(
        "[{:.1} s] 3 messages posted while the daemon is down",
        started.elapsed().as_secs_f64()
    );

    let mut second = Daemon::spawn_raw(&config);
    second.wait_ready(&["lobby"], READY_TIMEOUT);
    assert_eq!(second.http, first.http);
    eprintln!(
        "[{:.1} s] new daemon ready on {}",
        started.elapsed().as_secs_f64(),
        second.http
    );
    let second_log = || second.log_tail_block();
    // `retry: 3000`, so the browser comes back within a few seconds.
    scene.wait(
        "the 3 missed messages after the browser reconnected",
        Duration::from_secs(30),
        &second_log,
        |r| message_bodies(r).len() >= 6,
    );
    ids.push(post(&mut alice, &bodies[6]));
    scene.wait(
        "the 7th, live message",
        Duration::from_secs(15),
        &second_log,
        |r| message_bodies(r).len() >= 7,
    );
    // Anything duplicated or late would show up now.
    sleep(Duration::from_millis(1500));
    let recs = records(&page);
    let all = show(&recs);
    eprintln!("page records:\n{all}");

    // What breaks this: a named event with an `id:` of its own (the shutdown `status` has a
    // per-run minted one) becomes the browser's lastEventId; the next daemon never had that id,
    // so it answers `gap` and replays its whole ring, messages 1..3 included.
    assert_eq!(
        message_bodies(&recs),
        bodies,
        "every message exactly once, in order:\n{all}"
    );
    let got_ids: Vec<&str> = recs
        .iter()
        .filter(|r| r.t == "message")
        .map(|r| r.id.as_str())
        .collect();
    assert_eq!(
        got_ids, ids,
        "lastEventId of each message is the room's stanza-id:\n{all}"
    );
    assert!(
        !recs.iter().any(|r| r.t == "gap"),
        "no gap: the browser's Last-Event-ID was found in the new daemon's ring:\n{all}"
    );

    // The order of things: 3 messages, the shutdown status, an error (while still reconnecting,
    // not closed), an open (the reconnect), then the 3 missed ones. The new daemon can only
    // have sent messages 4..6 because of the Last-Event-ID header: without one a stream starts
    // live (after message 6), with an id it does not hold it sends a `gap` and its whole ring.
    let pos = |pred: &dyn Fn(&Rec) -> bool, from: usize| {
        recs.iter()
            .skip(from)
            .position(pred)
            .map(|p| p + from)
            .unwrap_or_else(|| panic!("records out of order:\n{all}"))
    };
    let third = pos(&|r| r.t == "message" && r.body == bodies[2], 0);
    let shutdown = pos(
        &|r| r.t == "status" && r.data.contains("\"shutdown\""),
        third,
    );
    let error = pos(&|r| r.t == "error", shutdown);
    assert_eq!(
        recs[error].state, "connecting",
        "the EventSource keeps reconnecting (a closed one gave up):\n{all}"
    );
    let reopen = pos(&|r| r.t == "open", error);
    let fourth = pos(&|r| r.t == "message", reopen);
    assert_eq!(recs[fourth].body, bodies[3], "{all}");
    assert_eq!(
        recs[..reopen].iter().filter(|r| r.t == "message").count(),
        3,
        "the missed messages came only after the reconnect:\n{all}"
    );
    assert!(
        first_log_text.contains("subscribed to lobby@")
            && second.log().contains("subscribed to lobby@"),
        "both daemons served the browser\n{}",
        second.log_tail_block()
    );
    eprintln!("[{:.1} s] done", started.elapsed().as_secs_f64());
}

#[test]
fn screenshot_helper_writes_pngs_and_can_wait_for_a_page_to_fill_in() {
    let _serial = serial();
    let late = "<!doctype html><html><body style=\"margin:0;background:#fff\"><script>\
                addEventListener('load', () => setTimeout(() => \
                { document.body.style.background = '#0a0'; }, 300));\
                </script></body></html>";
    let green = "<!doctype html><html><body style=\"margin:0;background:#0a0\"></body></html>";
    let white = "<!doctype html><html><body style=\"margin:0;background:#fff\"></body></html>";
    let server = PageServer::start(vec![
        Page::html("/late", late),
        Page::html("/green", green),
        Page::html("/white", white),
    ]);
    let dir = TempDir::new("muc-es-screenshots");
    let shot = |name: &str| dir.join(&format!("{name}.png"));

    screenshot(&server.url("/green"), &shot("green"), 320, 200);
    assert_eq!(png_size(&shot("green")), Some((320, 200)));
    screenshot(&server.url("/white"), &shot("white"), 320, 200);
    screenshot_after(
        &server.url("/late"),
        &shot("late"),
        320,
        200,
        Duration::from_millis(2000),
    );
    assert_eq!(png_size(&shot("late")), Some((320, 200)));
    let bytes = |name: &str| std::fs::read(shot(name)).unwrap();
    assert_ne!(bytes("green"), bytes("white"));
    assert_eq!(
        bytes("late"),
        bytes("green"),
        "screenshot_after waited for the page to turn green"
    );
}
