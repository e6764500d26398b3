//! The LAN room monitor against a real Prosody: the live view in headless Chromium (messages
//! from a real XMPP user rendered as text, the subject, the reconnecting state, the page's token
//! passed on to its EventSource), `/healthz` following the component link through a Prosody
//! stop and restart, and `/metrics` read by Prometheus' own Python text parser.
//!
//! Needs Debian's `prosody`, `chromium` and `python3-prometheus-client` (run by Debian's
//! `/usr/bin/python3`, whatever `python3` comes first on `PATH`; `PYTHON=/path/to/python3`
//! picks another interpreter that has `prometheus_client`). A missing one fails the test
//! naming it.
//!
//! `UPDATE_SCREENSHOTS=1 cargo test --test pages` also writes `docs/live-view.png`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::sleep;
use std::time::{Duration, Instant};

use cdp::Chrome;
use testkit::TempDir;
use testkit::browser::png_size;
use testkit::daemon::Daemon;
use testkit::json::Value;
use testkit::prosody::{Prosody, ROOM_OWNER};
use testkit::sse::{SseClient, find_header, http_raw, http_request};
use testkit::xmpp::XmppClient;
use testkit::xmpp::stanza_id;

const T: Duration = Duration::from_secs(10);
const PAGE_BUDGET: usize = 16 * 1024;
const SCRIPT_BODY: &str = "<script>window.pwned=1</script><b>bold</b>";

/// One Chromium at a time: two cores are shared with Prosody, the daemon and other tests.
static BROWSER: Mutex<()> = Mutex::new(());

fn browser_lock() -> std::sync::MutexGuard<'static, ()> {
    BROWSER.lock().unwrap_or_else(|e| e.into_inner())
}

/// Prosody with room `lobby` (subject set), user `alice` in it, and the daemon watching it
/// (`extra` appended to the daemon's config).
fn setup(extra: &str) -> (Prosody, XmppClient, Daemon) {
    setup_on(Prosody::start(), extra)
}

/// [`setup`] on a given Prosody.
fn setup_on(prosody: Prosody, extra: &str) -> (Prosody, XmppClient, Daemon) {
    prosody.create_rooms(&["lobby"]);
    prosody.register("alice", "alicepass");
    let (user, pass) = ROOM_OWNER;
    let mut owner = XmppClient::connect(&prosody, user, pass);
    owner.join("lobby", user);
    owner.set_subject("lobby", "Build status & <deploys> — wall display");
    owner.leave("lobby");
    owner.close();
    let mut alice = XmppClient::connect(&prosody, "alice", "alicepass");
    alice.join("lobby", "alice");
    let daemon = Daemon::start(&prosody, &["lobby"], extra);
    (prosody, alice, daemon)
}

/// Posts `bodies` and waits until a stream of the room has carried them all (so they are in
/// the room's ring when a page opens).
fn post_and_confirm(daemon: &Daemon, alice: &mut XmppClient, bodies: &[&str]) {
    let mut sub = SseClient::connect(daemon.http, "/eventsource/lobby", &[]);
    sleep(Duration::from_millis(200));
    for body in bodies {
        alice.send_groupchat("lobby", body);
    }
    let got = sub.collect(bodies.len(), T);
    let got: Vec<_> = got.iter().filter(|e| e.event_type == "message").collect();
    assert_eq!(got.len(), bodies.len(), "messages on the stream: {got:?}");
}

fn url(daemon: &Daemon, path: &str) -> String {
    format!("http://{}{path}", daemon.http)
}

/// Headless Chromium driven over the DevTools protocol (a minimal WebSocket client below):
/// `--dump-dom` and `--screenshot` act at the `load` event, before an EventSource has
/// delivered anything, and `--virtual-time-budget` never ends while one is open.
mod cdp {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::os::unix::process::CommandExt;
    use std::path::Path;
    use std::process::{Child, Command, Stdio};
    use std::thread::sleep;
    use std::time::{Duration, Instant};
    use testkit::browser::{self, FLAGS};
    use testkit::json::{self, Value};
    use testkit::xmpp::base64;
    use testkit::{TempDir, random_hex, tail};

    const START: Duration = Duration::from_secs(30);
    const CALL: Duration = Duration::from_secs(30);

    pub struct Chrome {
        child: Child,
        dir: TempDir,
        ws: Option<TcpStream>,
        next: u64,
    }

    impl Chrome {
        /// Starts Chromium on `url` with a `width`×`height` window and attaches to the page.
        pub fn open(url: &str, width: u32, height: u32) -> Chrome {
            let dir = TempDir::new("muc-es-pages-chromium");
            let profile = dir.join("profile");
            let log = std::fs::File::create(dir.join("chromium.log")).expect("chromium log");
            let child = Command::new(browser::chromium_path())
                .args(FLAGS)
                .arg(format!("--user-data-dir={}", profile.display()))
                .arg("--remote-debugging-port=0")
                .arg(format!("--window-size={width},{height}"))
                .arg("--hide-scrollbars")
                .arg("--enable-logging=stderr")
                .arg(url)
                .env("XDG_CONFIG_HOME", dir.join("config"))
                .env("XDG_CACHE_HOME", dir.join("cache"))
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone log"))
                .stderr(log)
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start chromium: {e}\n{}", browser::NOT_FOUND));
            let mut chrome = Chrome {
                child,
                dir,
                ws: None,
                next: 0,
            };
            let deadline = Instant::now() + START;
            let port = loop {
                let text =
                    std::fs::read_to_string(profile.join("DevToolsActivePort")).unwrap_or_default();
                if let Some(port) = text.lines().next().and_then(|l| l.parse::<u16>().ok()) {
                    break port;
                }
                chrome.check(deadline, "DevToolsActivePort");
                sleep(Duration::from_millis(50));
            };
            let page = loop {
                let (status, _, body) =
                    testkit::sse::http_get(([127, 0, 0, 1], port).into(), "/json/list");
                if status == 200 {
                    let list = json::parse(&body).expect("/json/list is JSON");
                    if let Value::Array(targets) = list {
                        let found = targets.iter().find_map(|t| {
                            (t.get("type")?.as_str()? == "page")
                                .then(|| t.get("webSocketDebuggerUrl")?.as_str().map(String::from))
                                .flatten()
                        });
                        if let Some(ws) = found {
                            break ws;
                        }
                    }
                }
                chrome.check(deadline, "a page target");
                sleep(Duration::from_millis(50));
            };
            let path = page
                .strip_prefix(&format!("ws://127.0.0.1:{port}"))
                .unwrap_or_else(|| panic!("unexpected debugger URL {page}"));
            chrome.ws = Some(handshake(port, path));
            // The window's chrome takes some of --window-size: make the viewport exact.
            chrome.call(
                "Emulation.setDeviceMetricsOverride",
                &format!(
                    "{{\"width\":{width},\"height\":{height},\"deviceScaleFactor\":1,\"mobile\":false}}"
                ),
            );
            chrome
        }

        fn check(&mut self, deadline: Instant, what: &str) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "chromium exited ({status}) before {what}\n{}",
                    self.log_tail()
                );
            }
            if Instant::now() > deadline {
                panic!("chromium: no {what} after {START:?}\n{}", self.log_tail());
            }
        }

        pub fn log_tail(&self) -> String {
            let log = std::fs::read_to_string(self.dir.join("chromium.log")).unwrap_or_default();
            format!(
                "--- chromium log ---\n{}",
                tail(&browser::filter_noise(&log), 30)
            )
        }

        /// Sends a DevTools command (`params`: a JSON object) and returns its `result`.
        pub fn call(&mut self, method: &str, params: &str) -> Value {
            self.next += 1;
            let id = self.next;
            let ws = self.ws.as_mut().expect("attached to the page");
            send(
                ws,
                &format!("{{\"id\":{id},\"method\":\"{method}\",\"params\":{params}}}"),
            );
            let deadline = Instant::now() + CALL;
            loop {
                let ws = self.ws.as_mut().expect("attached to the page");
                let text = receive(ws, deadline)
                    .unwrap_or_else(|e| panic!("{method}: {e}\n{}", self.log_tail()));
                let reply = json::parse(&text).unwrap_or_else(|e| panic!("{method}: {e}: {text}"));
                if reply.get("id") != Some(&Value::from(id)) {
                    continue; // an event
                }
                if let Some(err) = reply.get("error") {
                    panic!("{method} failed: {err}");
                }
                return reply.get("result").cloned().unwrap_or(Value::Null);
            }
        }

        /// The value of a JavaScript expression in the page (JSON-serializable values).
        pub fn eval(&mut self, expression: &str) -> Value {
            self.try_eval(expression)
                .unwrap_or_else(|e| panic!("{expression}: threw {e}"))
        }

        /// Like [`Chrome::eval`], `Err` with the exception when the expression throws.
        pub fn try_eval(&mut self, expression: &str) -> Result<Value, String> {
            let params = format!(
                "{{\"expression\":{},\"returnByValue\":true}}",
                quote(expression)
            );
            let result = self.call("Runtime.evaluate", &params);
            if let Some(e) = result.get("exceptionDetails") {
                return Err(e.to_string());
            }
            Ok(result
                .get("result")
                .and_then(|r| r.get("value"))
                .cloned()
                .unwrap_or(Value::Null))
        }

        /// A string-valued expression.
        pub fn text(&mut self, expression: &str) -> String {
            match self.eval(expression) {
                Value::String(s) => s,
                other => panic!("{expression}: not a string: {other}"),
            }
        }

        /// Polls until `expression` is `true`; panics after `timeout` showing `show`'s value.
        pub fn wait(&mut self, expression: &str, timeout: Duration, show: &str) {
            let deadline = Instant::now() + timeout;
            // Until the page has loaded, the expression may throw (no `document.body` yet).
            while self.try_eval(expression) != Ok(Value::Bool(true)) {
                if Instant::now() > deadline {
                    let shown = self.try_eval(show);
                    panic!(
                        "after {timeout:?} still not {expression}: {shown:?}\n{}",
                        self.log_tail()
                    );
                }
                sleep(Duration::from_millis(100));
            }
        }

        /// A PNG of the viewport into `out`; returns its size in bytes.
        pub fn screenshot(&mut self, out: &Path) -> usize {
            let result = self.call("Page.captureScreenshot", "{\"format\":\"png\"}");
            let data = result
                .get("data")
                .and_then(Value::as_str)
                .expect("screenshot data");
            let png = unbase64(data);
            if let Some(parent) = out.parent() {
                std::fs::create_dir_all(parent).expect("screenshot dir");
            }
            std::fs::write(out, &png).expect("write screenshot");
            png.len()
        }
    }

    impl Drop for Chrome {
        fn drop(&mut self) {
            let group = format!("-{}", self.child.id());
            let _ = Command::new("kill")
                .args(["-KILL", "--", &group])
                .stderr(Stdio::null())
                .status();
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// A JSON string literal, escaped as `JSON.stringify` escapes.
    pub fn quote(text: &str) -> String {
        let mut out = String::from("\"");
        for c in text.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    fn handshake(port: u16, path: &str) -> TcpStream {
        let mut ws = TcpStream::connect(("127.0.0.1", port)).expect("connect to DevTools");
        let key = base64(random_hex(8).as_bytes());
        write!(
            ws,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .expect("WebSocket handshake");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        ws.set_read_timeout(Some(START)).ok();
        while !head.ends_with(b"\r\n\r\n") {
            ws.read_exact(&mut byte).expect("WebSocket handshake reply");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(
            head.starts_with("HTTP/1.1 101"),
            "DevTools refused the WebSocket: {head}"
        );
        ws
    }

    /// One masked text frame.
    fn send(ws: &mut TcpStream, text: &str) {
        let payload = text.as_bytes();
        let mut frame = vec![0x81u8];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n < 65536 => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask: [u8; 4] = u32::from_str_radix(&random_hex(4), 16)
            .unwrap()
            .to_be_bytes();
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        ws.write_all(&frame).expect("WebSocket write");
    }

    /// One whole text message (continuation frames joined; control frames skipped).
    fn receive(ws: &mut TcpStream, deadline: Instant) -> Result<String, String> {
        let mut message = Vec::new();
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err("no DevTools reply in time".into());
            }
            ws.set_read_timeout(Some(deadline - now)).ok();
            let mut head = [0u8; 2];
            ws.read_exact(&mut head)
                .map_err(|e| format!("WebSocket read: {e}"))?;
            let mut len = u64::from(head[1] & 0x7f);
            if len == 126 {
                let mut b = [0u8; 2];
                ws.read_exact(&mut b).map_err(|e| e.to_string())?;
                len = u64::from(u16::from_be_bytes(b));
            } else if len == 127 {
                let mut b = [0u8; 8];
                ws.read_exact(&mut b).map_err(|e| e.to_string())?;
                len = u64::from_be_bytes(b);
            }
            let mut payload = vec![0u8; len as usize];
            ws.read_exact(&mut payload).map_err(|e| e.to_string())?;
            let opcode = head[0] & 0x0f;
            if opcode == 8 {
                return Err("DevTools closed the WebSocket".into());
            }
            if opcode >= 8 {
                continue;
            }
            message.extend_from_slice(&payload);
            if head[0] & 0x80 != 0 {
                return String::from_utf8(message).map_err(|e| e.to_string());
            }
        }
    }

    fn unbase64(text: &str) -> Vec<u8> {
        let value = |c: u8| match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        };
        let bytes: Vec<u8> = text.bytes().filter(|&c| c != b'=').collect();
        let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
        for chunk in bytes.chunks(4) {
            let v: Vec<u32> = chunk.iter().map(|&c| u32::from(value(c))).collect();
            let n = v
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, d)| n | d << (18 - 6 * i));
            out.push((n >> 16) as u8);
            if v.len() > 2 {
                out.push((n >> 8) as u8);
            }
            if v.len() > 3 {
                out.push(n as u8);
            }
        }
        out
    }
}

/// The text of every message body on the page, as a JSON array.
const BODIES: &str =
    "JSON.stringify(Array.from(document.querySelectorAll('#log .body'), e => e.textContent))";
/// What the page says about its connection.
const STATE: &str = "JSON.stringify([document.body.dataset.state, \
    document.getElementById('state').textContent, \
    document.getElementById('banner').className, \
    document.getElementById('banner').textContent])";
/// `Emulation.setEmulatedMedia` parameters for a dark colour scheme.
const DARK: &str = r#"{"features":[{"name":"prefers-color-scheme","value":"dark"}]}"#;

/// `items` as the JSON array `JSON.stringify` writes.
fn json_array(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| cdp::quote(i)).collect();
    format!("[{}]", quoted.join(","))
}

/// The page body's computed font size in pixels.
fn font_px(page: &mut Chrome) -> f64 {
    page.text("getComputedStyle(document.body).fontSize")
        .trim_end_matches("px")
        .parse()
        .unwrap()
}

fn get(
    daemon: &Daemon,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, String) {
    let (status, headers, body) = http_request(daemon.http, "GET", path, headers);
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

#[test]
fn live_view_shows_messages_as_text_with_subject_in_chromium() {
    let started = Instant::now();
    let (prosody, mut alice, daemon) = setup("");
    post_and_confirm(
        &daemon,
        &mut alice,
        &[
            "Good morning, wall!",
            SCRIPT_BODY,
            "two\nlines",
            "ünïcødé 🎉 مرحبا",
        ],
    );

    // The pages over plain HTTP: types, sizes, caching, the inlined subject.
    let (status, headers, page) = get(&daemon, "/view/lobby", &[]);
    assert_eq!(status, 200);
    assert_eq!(
        find_header(&headers, "content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(page.contains("<h1 id=\"subject\" data-room=\"lobby\">Build status &amp; &lt;deploys&gt; — wall display</h1>"), "{page}");
    assert!(page.len() <= PAGE_BUDGET);
    let csp = find_header(&headers, "content-security-policy").unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let etag = find_header(&headers, "etag").expect("an ETag").to_string();
    let (status, headers, rest) = get(&daemon, "/view/lobby", &[("If-None-Match", &etag)]);
    assert_eq!((status, rest.as_str()), (304, ""));
    assert_eq!(find_header(&headers, "etag"), Some(etag.as_str()));
    let (index_status, _, index) = get(&daemon, "/", &[]);
    assert_eq!(index_status, 200);
    assert!(index.contains("href=\"view/lobby\""), "{index}");
    assert!(index.contains("class=\"ok\">up</strong>"), "{index}");
    assert!(
        index.contains("Build status &amp; &lt;deploys&gt;"),
        "{index}"
    );
    assert!(index.contains("just now"), "last message time: {index}");
    let mut sizes = vec![
        ("/".to_string(), index.len()),
        ("/view/lobby".into(), page.len()),
    ];
    for asset in ["/assets/view.js", "/assets/monitor.css"] {
        let (status, headers, text) = get(&daemon, asset, &[]);
        assert_eq!(status, 200, "{asset}");
        assert!(
            find_header(&headers, "cache-control")
                .unwrap()
                .contains("immutable")
        );
        assert!(text.len() <= PAGE_BUDGET, "{asset}: {} bytes", text.len());
        sizes.push((asset.to_string(), text.len()));
    }
    assert_eq!(get(&daemon, "/view/nope", &[]).0, 404);
    println!("page sizes (bytes): {sizes:?}");

    // The live view in Chromium: history first, then a message posted while it is open.
    let _browser = browser_lock();
    let mut page = Chrome::open(&url(&daemon, "/view/lobby"), 1280, 720);
    page.wait(
        "document.body.dataset.state === 'live' && document.querySelectorAll('#log .msg').length === 4",
        T,
        BODIES,
    );
    // After the replay burst (the page shows times only for messages it saw being sent).
    sleep(Duration::from_millis(600));
    alice.send_groupchat("lobby", "posted while the page is open");
    page.wait(
        "document.querySelectorAll('#log .msg').length === 5",
        T,
        BODIES,
    );
    let expected = [
        "Good morning, wall!",
        SCRIPT_BODY,
        "two\nlines",
        "ünïcødé 🎉 مرحبا",
        "posted while the page is open",
    ];
    assert_eq!(
        page.text(BODIES),
        json_array(&expected),
        "message bodies, as text"
    );
    assert_eq!(
        page.eval("typeof window.pwned"),
        Value::String("undefined".into())
    );
    assert_eq!(
        page.eval("document.querySelectorAll('#log b, #log script').length"),
        Value::from(0),
        "markup in a body was interpreted: {}",
        page.text("document.getElementById('log').innerHTML")
    );
    let nicks = page.text(
        "JSON.stringify(Array.from(document.querySelectorAll('#log .nick'), e => e.textContent))",
    );
    assert_eq!(nicks, json_array(&["alice"; 5]));
    // Replayed history has no time (the stream does not carry it); the live message has one.
    assert_eq!(
        page.text(
            "JSON.stringify(Array.from(document.querySelectorAll('#log time'), \
             t => t.dateTime ? 'time' : t.className))"
        ),
        json_array(&["earlier", "earlier", "earlier", "earlier", "time"])
    );
    assert_eq!(
        page.text("document.getElementById('subject').textContent"),
        "Build status & <deploys> — wall display"
    );
    assert_eq!(
        page.text("document.getElementById('state').textContent"),
        "live"
    );
    assert_eq!(page.text("document.getElementById('banner').className"), "");
    // Newest at the bottom: the log overflows and stays scrolled to the end …
    for i in 1..=40 {
        alice.send_groupchat("lobby", &format!("filler {i}"));
    }
    page.wait(
        "document.querySelectorAll('#log .msg').length === 45",
        T,
        BODIES,
    );
    const SCROLL: &str =
        "(l => [l.scrollHeight, l.scrollTop, l.clientHeight])(document.getElementById('log'))";
    page.wait(
        "(l => l.scrollHeight > 2 * l.clientHeight && \
         l.scrollHeight - l.scrollTop - l.clientHeight < 2)(document.getElementById('log'))",
        T,
        SCROLL,
    );
    // … unless the reader has scrolled up: then the view stays put.
    page.eval("document.getElementById('log').scrollTop = 0");
    alice.send_groupchat("lobby", "does not yank the reader");
    page.wait(
        "document.querySelectorAll('#log .msg').length === 46",
        T,
        BODIES,
    );
    assert_eq!(
        page.eval("document.getElementById('log').scrollTop"),
        Value::from(0)
    );
    // Dark and light follow prefers-color-scheme.
    let light = page.text("getComputedStyle(document.body).backgroundColor");
    page.call("Emulation.setEmulatedMedia", DARK);
    let dark = page.text("getComputedStyle(document.body).backgroundColor");
    assert_eq!(
        (light.as_str(), dark.as_str()),
        ("rgb(251, 251, 248)", "rgb(18, 19, 21)")
    );
    let normal_px = font_px(&mut page);
    drop(page);

    // Kiosk mode: no chrome, bigger text.
    let mut kiosk = Chrome::open(&url(&daemon, "/view/lobby?kiosk=1"), 1280, 720);
    kiosk.wait(
        "document.querySelectorAll('#log .msg').length === 46",
        T,
        BODIES,
    );
    assert_eq!(
        kiosk.text("getComputedStyle(document.querySelector('.meta')).display"),
        "none"
    );
    let kiosk_px = font_px(&mut kiosk);
    assert!(
        kiosk_px > normal_px,
        "kiosk {kiosk_px}px, normal {normal_px}px"
    );
    drop(kiosk);

    // The pictures for the README: a fresh view without history, a conversation posted while
    // it is open (so every message has its time), in light and dark; and the index.
    prosody.register("bob", "bobpass");
    let mut bob = XmppClient::connect(&prosody, "bob", "bobpass");
    bob.join("lobby", "bob");
    let mut page = Chrome::open(&url(&daemon, "/view/lobby?history=0"), 1280, 720);
    page.wait("document.body.dataset.state === 'live'", T, STATE);
    sleep(Duration::from_millis(600));
    let conversation = [
        (true, "Deploy of build 1432 finished ✔"),
        (false, "Thanks! Canary looks healthy, error rate 0.02 %"),
        (true, "Standup in 5 minutes, room 2.01"),
        (
            false,
            "Reminder: a message like <b>this</b> shows as text here,\nnever as markup",
        ),
        (true, "On my way"),
    ];
    for (n, (from_alice, body)) in conversation.iter().enumerate() {
        let who = if *from_alice { &mut alice } else { &mut bob };
        who.send_groupchat("lobby", body);
        // One at a time: two senders' messages could otherwise overtake each other.
        page.wait(
            &format!(
                "document.querySelectorAll('#log .msg').length === {}",
                n + 1
            ),
            T,
            BODIES,
        );
    }
    let dir = TempDir::new("muc-es-pages-shot");
    let png = dir.join("live-view.png");
    page.screenshot(&png);
    assert_eq!(png_size(&png), Some((1280, 720)));
    if std::env::var_os("UPDATE_SCREENSHOTS").is_some() {
        let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::copy(&png, docs.join("live-view.png")).unwrap();
        page.call("Emulation.setEmulatedMedia", DARK);
        page.screenshot(&docs.join("live-view-dark.png"));
        let mut index = Chrome::open(&url(&daemon, "/"), 1280, 300);
        index.wait(
            "document.querySelectorAll('tbody tr').length === 1",
            T,
            STATE,
        );
        index.screenshot(&docs.join("index.png"));
        println!("wrote docs/live-view.png, docs/live-view-dark.png and docs/index.png");
    }
    println!("live view test took {:?}", started.elapsed());
}

/// A TCP proxy in front of the daemon that records every request line (to see the URL the
/// page's EventSource asks for).
struct Recorder {
    addr: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    fn start(upstream: SocketAddr) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let seen = lines.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let seen = seen.clone();
                std::thread::spawn(move || proxy(client, upstream, &seen));
            }
        });
        Recorder { addr, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

fn proxy(mut client: TcpStream, upstream: SocketAddr, seen: &Mutex<Vec<String>>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    client.set_read_timeout(Some(T)).ok();
    while !head.ends_with(b"\r\n\r\n") {
        match client.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let text = String::from_utf8_lossy(&head);
    seen.lock()
        .unwrap()
        .push(text.lines().next().unwrap_or("").to_string());
    let Ok(mut server) = TcpStream::connect(upstream) else {
        return;
    };
    if server.write_all(&head).is_err() {
        return;
    }
    client.set_read_timeout(None).ok();
    let (Ok(mut from_server), Ok(mut to_client)) = (server.try_clone(), client.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut client, &mut server);
    });
    let _ = std::io::copy(&mut from_server, &mut to_client);
    let _ = to_client.shutdown(std::net::Shutdown::Both);
}

#[test]
fn the_view_passes_its_token_to_the_stream_and_never_logs_it() {
    let token = "s3cret-Token_1";
    let (_prosody, mut alice, daemon) = setup(&format!("token.lobby = {token}\n"));
    assert_eq!(get(&daemon, "/view/lobby", &[]).0, 403, "no token, no view");
    let (_, _, index) = get(&daemon, "/", &[]);
    assert!(
        !index.contains("Build status"),
        "the subject needs the token: {index}"
    );
    let mut sub = SseClient::connect(
        daemon.http,
        &format!("/eventsource/lobby?token={token}"),
        &[],
    );
    assert_eq!(sub.status(), 200);
    sleep(Duration::from_millis(200));
    alice.send_groupchat("lobby", "for token holders");
    assert_eq!(sub.collect(1, T).len(), 1);

    let recorder = Recorder::start(daemon.http);
    let _browser = browser_lock();
    let mut page = Chrome::open(
        &format!("http://{}/view/lobby?token={token}", recorder.addr),
        800,
        600,
    );
    page.wait(
        "document.body.dataset.state === 'live' && document.querySelectorAll('#log .msg').length === 1",
        T,
        BODIES,
    );
    assert_eq!(page.text(BODIES), json_array(&["for token holders"]));
    assert_eq!(
        page.text("document.getElementById('home').getAttribute('href')"),
        format!("../?token={token}")
    );
    drop(page);
    let lines = recorder.lines();
    let stream: Vec<_> = lines
        .iter()
        .filter(|l| l.starts_with("GET /eventsource/"))
        .collect();
    assert_eq!(
        stream.first().map(|l| l.as_str()),
        Some(format!("GET /eventsource/lobby?token={token}&history=50 HTTP/1.1").as_str()),
        "requests: {lines:?}"
    );
    let log = daemon.log();
    assert!(
        log.contains("Get /view/lobby") && log.contains("subscribed to lobby@"),
        "the daemon logs requests at debug: {log}"
    );
    assert!(!log.contains(token), "the token is in the daemon's log");
}

/// Polls `/healthz` until it answers `status`; returns the body and how long it took.
fn wait_health(daemon: &Daemon, status: u16, timeout: Duration) -> (String, Duration) {
    let start = Instant::now();
    loop {
        let (got, _, body) = get(daemon, "/healthz", &[]);
        if got == status {
            return (body, start.elapsed());
        }
        if start.elapsed() > timeout {
            panic!(
                "/healthz still {got} ({body:?}) after {timeout:?}, wanted {status}\n{}",
                daemon.log_tail_block()
            );
        }
        sleep(Duration::from_millis(100));
    }
}

fn metric(daemon: &Daemon, line_start: &str) -> String {
    let (_, _, text) = get(daemon, "/metrics", &[]);
    text.lines()
        .find(|l| l.starts_with(line_start))
        .unwrap_or_else(|| panic!("no {line_start} in\n{text}"))
        .to_string()
}

#[test]
fn healthz_follows_the_component_link_through_a_prosody_restart() {
    let (mut prosody, _alice, daemon) = setup("reconnect_min_secs = 1\nreconnect_max_secs = 2\n");
    let started = Instant::now();
    let (status, headers, body) = get(&daemon, "/healthz", &[]);
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert_eq!(find_header(&headers, "cache-control"), Some("no-store"));
    assert_eq!(
        metric(&daemon, "muc_eventsource_upstream_up "),
        "muc_eventsource_upstream_up 1"
    );

    prosody.stop();
    let (why, took_down) = wait_health(&daemon, 503, Duration::from_secs(15));
    assert!(why.contains("upstream link down"), "{why:?}");
    assert!(why.contains("room lobby: joining"), "{why:?}");
    assert_eq!(why.lines().count(), 1, "{why:?}");
    assert_eq!(
        metric(&daemon, "muc_eventsource_upstream_up "),
        "muc_eventsource_upstream_up 0"
    );

    // The live view shows it (the ring holds the `reconnecting` status) …
    let _browser = browser_lock();
    let mut page = Chrome::open(&url(&daemon, "/view/lobby"), 800, 600);
    page.wait("document.body.dataset.state === 'reconnecting'", T, STATE);
    assert_eq!(
        page.text("document.getElementById('banner').className"),
        "show reconnecting"
    );
    let banner = page.text("document.getElementById('banner').textContent");
    assert!(
        banner.starts_with("reconnecting to the chat server…"),
        "{banner}"
    );

    prosody.restart();
    let (ok, took_up) = wait_health(&daemon, 200, Duration::from_secs(30));
    assert_eq!(ok, "ok\n");
    let reconnects = metric(&daemon, "muc_eventsource_upstream_reconnects_total ");
    assert_ne!(reconnects, "muc_eventsource_upstream_reconnects_total 0");
    // … and that it is live again, with what is said after the restart.
    page.wait("document.body.dataset.state === 'live'", T, STATE);
    assert_eq!(page.text("document.getElementById('banner').className"), "");
    let mut alice = XmppClient::connect(&prosody, "alice", "alicepass");
    alice.join("lobby", "alice");
    alice.send_groupchat("lobby", "back after the restart");
    page.wait(
        "Array.from(document.querySelectorAll('#log .body'))\
         .some(b => b.textContent === 'back after the restart')",
        T,
        BODIES,
    );
    // The daemon going away: the browser's own reconnecting shows too.
    drop(daemon);
    page.wait("document.body.dataset.state === 'reconnecting'", T, STATE);
    assert_eq!(
        page.text("document.getElementById('state').textContent"),
        "reconnecting…"
    );
    println!(
        "/healthz: 503 {took_down:?} after the stop, 200 {took_up:?} after the restart; test took {:?}",
        started.elapsed()
    );
}

/// The Python interpreter for the Prometheus parser: `$PYTHON`, else Debian's
/// `/usr/bin/python3` (the one `python3-prometheus-client` installs for; a pyenv or venv
/// `python3` first on `PATH` would not have it).
fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "/usr/bin/python3".into())
}

const PARSE: &str = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
for f in text_string_to_metric_families(sys.stdin.read()):
    print("TYPE\t%s\t%s" % (f.name, f.type))
    for s in f.samples:
        labels = ",".join("%s=%s" % kv for kv in sorted(s.labels.items()))
        print("SAMPLE\t%s\t%s\t%r" % (s.name, labels, s.value))
"#;

/// `("name{label=value,…}", value)` pairs.
type Samples = Vec<(String, f64)>;

/// Parses exposition `text` with `prometheus_client`: (family types, samples as
/// `name{labels}` → value).
fn prometheus_parse(text: &str) -> (Vec<(String, String)>, Samples) {
    let mut child = Command::new(python())
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e}; apt-get install -y python3-prometheus-client (or set PYTHON=…)",
                python()
            )
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("No module named 'prometheus_client'") {
        panic!(
            "{} has no prometheus_client: apt-get install -y python3-prometheus-client \
             (or PYTHON=/path/to/a/python3 that has it)",
            python()
        );
    }
    assert!(
        out.status.success(),
        "prometheus_client rejected /metrics: {stderr}\n{text}"
    );
    let (mut types, mut samples) = (Vec::new(), Vec::new());
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = line.split('\t').collect();
        match f.as_slice() {
            ["TYPE", name, kind] => types.push((name.to_string(), kind.to_string())),
            ["SAMPLE", name, labels, value] => {
                samples.push((format!("{name}{{{labels}}}"), value.parse::<f64>().unwrap()))
            }
            _ => panic!("unexpected parser output {line:?}"),
        }
    }
    (types, samples)
}

#[test]
fn metrics_parse_with_the_prometheus_client_parser() {
    let (_prosody, mut alice, daemon) = setup("");
    let mut subs: Vec<SseClient> = (0..2)
        .map(|_| SseClient::connect(daemon.http, "/eventsource/lobby", &[]))
        .collect();
    sleep(Duration::from_millis(200));
    alice.send_groupchat("lobby", "counted");
    for sub in &mut subs {
        assert_eq!(sub.collect(1, T).len(), 1);
    }
    let garbage = http_raw(daemon.http, b"BREW /pot HTCPCP/1.0\r\n\r\n", T);
    assert!(garbage.starts_with(b"HTTP/1.1 400 "));

    let (status, headers, text) = get(&daemon, "/metrics", &[]);
    assert_eq!(status, 200);
    assert_eq!(
        find_header(&headers, "content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let (types, samples) = prometheus_parse(&text);
    let kind = |name: &str| {
        types
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, k)| k.as_str())
            .unwrap_or_else(|| panic!("no family {name} in {types:?}"))
    };
    // The parser names a counter family without its `_total`.
    assert_eq!(kind("muc_eventsource_upstream_up"), "gauge");
    assert_eq!(kind("muc_eventsource_upstream_reconnects"), "counter");
    assert_eq!(kind("muc_eventsource_subscribers"), "gauge");
    assert_eq!(kind("muc_eventsource_rejected"), "counter");
    assert_eq!(kind("muc_eventsource_written_bytes"), "counter");
    let value = |key: &str| {
        samples
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no sample {key} in {samples:?}"))
    };
    assert_eq!(value("muc_eventsource_upstream_up{}"), 1.0);
    assert_eq!(value("muc_eventsource_upstream_reconnects_total{}"), 0.0);
    assert_eq!(value("muc_eventsource_rooms{}"), 1.0);
    assert_eq!(value("muc_eventsource_rooms_joined{}"), 1.0);
    assert_eq!(value("muc_eventsource_room_joined{room=lobby}"), 1.0);
    assert_eq!(value("muc_eventsource_subscribers{room=lobby}"), 2.0);
    assert!(value("muc_eventsource_events_in_total{}") >= 1.0);
    assert!(value("muc_eventsource_events_out_total{}") >= 2.0);
    assert!(value("muc_eventsource_written_bytes_total{}") > 0.0);
    assert!(value("muc_eventsource_streams_opened_total{}") >= 2.0);
    assert_eq!(
        value("muc_eventsource_subscribers_dropped_slow_total{}"),
        0.0
    );
    assert_eq!(
        value("muc_eventsource_rejected_total{reason=bad_request}"),
        1.0
    );
    for reason in ["subscribers_full", "timeout", "pending_full", "forbidden"] {
        assert_eq!(
            value(&format!(
                "muc_eventsource_rejected_total{{reason={reason}}}"
            )),
            0.0
        );
    }
}

#[test]
fn corrections_and_retractions_update_the_live_view() {
    let prosody = Prosody::start_with("", r#"modules_enabled = { "muc_mam" }"#);
    let (_prosody, mut alice, daemon) = setup_on(prosody, "");
    let _browser = browser_lock();
    let mut page = Chrome::open(&url(&daemon, "/view/lobby"), 800, 600);
    page.wait("document.body.dataset.state === 'live'", T, STATE);
    let room = alice.room_jid("lobby");
    alice.send_raw(&format!(
        "<message to='{room}' type='groupchat' id='orig-1'><body>helo</body></message>"
    ));
    let echoed = alice.wait_for("helo", T);
    let stanza_id = stanza_id(&echoed).expect("a stanza-id (mod_muc_mam)");
    alice.send_groupchat("lobby", "unrelated");
    page.wait(
        "document.querySelectorAll('#log .msg').length === 2",
        T,
        BODIES,
    );
    alice.send_raw(&format!(
        "<message to='{room}' type='groupchat' id='orig-2'><body>hello</body>\
         <replace xmlns='urn:xmpp:message-correct:0' id='orig-1'/></message>"
    ));
    page.wait(
        "document.querySelector('#log .msg').classList.contains('edited')",
        T,
        BODIES,
    );
    assert_eq!(page.text(BODIES), json_array(&["hello", "unrelated"]));
    alice.send_raw(&format!(
        "<message to='{room}' type='groupchat' id='r1'>\
         <retract xmlns='urn:xmpp:message-retract:1' id='{stanza_id}'/>\
         <body>/me retracted a message</body>\
         <fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:message-retract:1'/></message>"
    ));
    page.wait(
        "document.querySelector('#log .msg').classList.contains('retracted')",
        T,
        BODIES,
    );
    assert_eq!(
        page.text(BODIES),
        json_array(&["message removed", "unrelated"])
    );
    drop(page);
    // A page opened later replays neither the original nor, in effect, its correction.
    let mut late = Chrome::open(&url(&daemon, "/view/lobby"), 800, 600);
    late.wait(
        "document.body.dataset.state === 'live' && \
         document.querySelectorAll('#log .msg.retracted').length === 1",
        T,
        BODIES,
    );
    assert_eq!(
        late.text(BODIES),
        json_array(&["unrelated", "message removed"])
    );
}

/// A live view whose access is withdrawn while it is open (here a `SIGHUP` rotates the room's
/// token) says so plainly and stops, instead of freezing or retrying forever: the stream's last
/// `status: forbidden` event reaches the page, which closes its EventSource.
#[test]
fn the_live_view_says_access_was_withdrawn_and_stops() {
    let (_prosody, mut alice, daemon) = setup("token.lobby = view-token\nhistory = 0\n");
    let _browser = browser_lock();
    let mut page = Chrome::open(&url(&daemon, "/view/lobby?token=view-token"), 800, 600);
    page.wait("document.body.dataset.state === 'live'", T, STATE);
    sleep(Duration::from_millis(300));
    alice.send_groupchat("lobby", "before");
    page.wait(
        "document.querySelectorAll('#log .msg').length === 1",
        T,
        BODIES,
    );

    let path = daemon.config_path().clone();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("token.lobby = view-token", "token.lobby = rotated"),
    )
    .unwrap();
    daemon.signal("HUP");
    daemon.expect_log("tokens, CORS and the other live settings replaced", T);
    page.wait(
        "document.body.dataset.state === 'down' && \
         document.getElementById('banner').textContent.indexOf('access withdrawn') >= 0",
        Duration::from_secs(5),
        STATE,
    );
    let refused_before = daemon.log_count("/eventsource/lobby -> 403");
    alice.send_groupchat("lobby", "after");
    sleep(Duration::from_secs(4));
    assert_eq!(page.text(BODIES), json_array(&["before"]), "nothing after");
    let state = page.text(STATE);
    assert!(state.contains("access withdrawn"), "{state}");
    let notes = page.text(
        "JSON.stringify(Array.from(document.querySelectorAll('#log .note'), e => e.textContent))",
    );
    assert!(notes.contains("Reload the page"), "{notes}");
    // It stopped: no EventSource came back to be refused.
    assert_eq!(
        daemon.log_count("/eventsource/lobby -> 403"),
        refused_before,
        "the page kept reconnecting"
    );
}
