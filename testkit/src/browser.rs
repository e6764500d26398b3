//! A real browser for tests: Debian's headless Chromium, started per test with a fresh profile,
//! plus a tiny std-only HTTP server ([`PageServer`]) that serves the test's pages and collects
//! what they report back (`POST /report`), and a screenshot helper ([`screenshot`],
//! [`screenshot_after`]).
//!
//! Chromium always runs with [`FLAGS`] and a fresh `--user-data-dir` in a [`TempDir`]: on a
//! machine without network access its background connections (component updates, sync, QUIC
//! probes…) otherwise stall or spam the log. It runs in its own process group, and every path
//! (drop, timeout, panic) SIGKILLs that whole group, so no renderer or zygote outlives a test.
//!
//! A screenshot of a live page for the docs, from a test that has a daemon running:
//!
//! ```ignore
//! let url = format!("http://{}/some/live/page", daemon.http);
//! browser::screenshot_after(&url, Path::new("docs/live-view.png"), 1000, 700, Duration::from_secs(2));
//! ```
//!
//! A missing Chromium is a test failure naming the package (never a silent skip). The
//! environment variable `CHROMIUM` overrides the binary (e.g. `/usr/lib/chromium/chromium`).
//!
//! Chromium's crash handler (`chrome_crashpad_handler`) daemonizes into its own session, so the
//! group kill does not reach it; it exits by itself when the browser is gone.
//!
//! Quirks (Chromium 156 on Debian 12):
//! - the `/usr/bin/chromium` wrapper prints `[: …: unexpected operator` from
//!   `/etc/chromium.d/dev-shm` when `/dev/shm` is large, and Chromium logs `dbus` errors when no
//!   system bus runs: both harmless, and filtered from panic messages;
//! - `--screenshot` is taken right after the page's `load` event: content a page adds later
//!   (events from an `EventSource`) is not in it; [`screenshot_after`] delays `load`.
//!   `--virtual-time-budget` does not help: virtual time never advances while an `EventSource`
//!   is open, and Chromium hangs.

use crate::{TempDir, tail};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{JoinHandle, sleep};
use std::time::{Duration, Instant};

/// Flags every Chromium started here gets (besides `--user-data-dir`).
pub const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
];

pub const NOT_FOUND: &str = "chromium not found: browser tests drive a real EventSource in headless Chromium; install Debian's chromium (apt-get install -y chromium), or set CHROMIUM=/path/to/chromium";

/// How long one `--screenshot` run may take.
pub const SCREENSHOT_TIMEOUT: Duration = Duration::from_secs(60);

/// The Chromium binary: `$CHROMIUM`, else `chromium` on `PATH`. Panics with [`NOT_FOUND`].
pub fn chromium_path() -> PathBuf {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        let path = PathBuf::from(path);
        if path.is_file() {
            return path;
        }
        panic!("CHROMIUM={} is not a file. {NOT_FOUND}", path.display());
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("chromium"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| panic!("{NOT_FOUND}"))
}

/// `chromium --version`, e.g. `Chromium 156.0.8078.108 built on Debian GNU/Linux 12 (bookworm)`.
pub fn chromium_version() -> String {
    let out = Command::new(chromium_path())
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run chromium --version: {e}\n{NOT_FOUND}"));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Chromium's console output without the known harmless noise (see the module docs).
pub fn filter_noise(log: &str) -> String {
    log.lines()
        .filter(|l| !l.contains("dbus/") && !l.contains("unexpected operator"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A Chromium child in its own process group, with its profile dir and console log.
struct Chromium {
    child: Option<Child>,
    dir: TempDir,
}

impl Chromium {
    /// Starts `chromium FLAGS --user-data-dir=<fresh> extra…` with stdout and stderr in
    /// `<dir>/chromium.log`.
    fn spawn(extra: &[String]) -> Chromium {
        let bin = chromium_path();
        let dir = TempDir::new("muc-es-chromium");
        let profile = dir.join("profile");
        std::fs::create_dir_all(&profile).expect("create chromium profile dir");
        let log = std::fs::File::create(dir.join("chromium.log")).expect("create chromium log");
        let child = Command::new(&bin)
            .args(FLAGS)
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra)
            .current_dir(dir.path())
            // Crashpad's database (`$XDG_CONFIG_HOME/chromium/Crash Reports`) and caches go
            // to the temp dir too, not the user's home.
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .env("XDG_CACHE_HOME", dir.join("cache"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone chromium log"))
            .stderr(log)
            // Its own group: renderers and the zygote join it, so one kill ends them all.
            .process_group(0)
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!("{NOT_FOUND}"),
            Err(e) => panic!("cannot spawn {}: {e}", bin.display()),
        };
        Chromium {
            child: Some(child),
            dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read(self.dir.join("chromium.log"))
            .map(|b| filter_noise(&String::from_utf8_lossy(&b)))
            .unwrap_or_default()
    }

    fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGKILLs the whole process group, reaps the main process and waits (bounded) until no
    /// member of the group is left.
    fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let group = format!("-{}", child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = child.kill();
        let _ = child.wait();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let alive = Command::new("kill")
                .args(["-0", "--", &group])
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !alive {
                return;
            }
            sleep(Duration::from_millis(50));
        }
        eprintln!("chromium process group {group} still has members 5 s after SIGKILL");
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A headless Chromium showing one page until dropped (which kills it and all its children).
pub struct Browser {
    chromium: Chromium,
    pub url: String,
}

impl Browser {
    /// Starts Chromium on `url` (800×600 window).
    pub fn open(url: &str) -> Browser {
        let chromium = Chromium::spawn(&["--window-size=800,600".to_string(), url.to_string()]);
        Browser {
            chromium,
            url: url.to_string(),
        }
    }

    /// Chromium's console output so far (known noise filtered).
    pub fn log(&self) -> String {
        self.chromium.log()
    }

    /// The last lines of [`Browser::log`], framed for a panic message.
    pub fn log_tail_block(&self) -> String {
        format!(
            "--- chromium log tail ({}) ---\n{}\n--- end of chromium log ---",
            self.chromium.dir.join("chromium.log").display(),
            tail(&self.log(), 40)
        )
    }

    /// The exit status if Chromium has exited (it should not while the test runs).
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.chromium.try_wait()
    }

    /// Pid of Chromium's main process (also its process group id).
    pub fn pid(&self) -> u32 {
        self.chromium.child.as_ref().map_or(0, Child::id)
    }
}

/// Screenshots `url` into `out_png` (parent dirs created) with a `width`×`height` window:
/// `chromium FLAGS --user-data-dir=<fresh> --screenshot=<out_png> --window-size=W,H url`.
/// Taken right after the page's `load` event; for pages that fill in later use
/// [`screenshot_after`]. Panics with Chromium's output if no PNG is written within
/// [`SCREENSHOT_TIMEOUT`].
pub fn screenshot(url: &str, out_png: &Path, width: u32, height: u32) {
    let out = std::path::absolute(out_png).expect("absolute screenshot path");
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).expect("create screenshot dir");
    }
    let _ = std::fs::remove_file(&out);
    let mut chromium = Chromium::spawn(&[
        format!("--screenshot={}", out.display()),
        format!("--window-size={width},{height}"),
        "--hide-scrollbars".to_string(),
        url.to_string(),
    ]);
    let deadline = Instant::now() + SCREENSHOT_TIMEOUT;
    let status = loop {
        if let Some(status) = chromium.try_wait() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            break None;
        }
        sleep(Duration::from_millis(50));
    };
    let log = chromium.log();
    chromium.kill();
    let written = png_size(&out);
    if status.is_none_or(|s| !s.success()) || written.is_none() {
        panic!(
            "chromium --screenshot of {url} failed (exit: {status:?}; PNG written: {written:?}; timeout {SCREENSHOT_TIMEOUT:?})\n--- chromium output ---\n{}",
            tail(&log, 40)
        );
    }
}

/// Like [`screenshot`], but taken `settle` after `url` has loaded, so what the page adds by
/// itself meanwhile (e.g. a live view filled by an `EventSource`) is in the picture.
///
/// How: a [`PageServer`] serves a wrapper page that shows `url` in a borderless full-window
/// iframe and holds its own `load` event back with an image the server answers only after
/// `settle`. (Chromium's `--virtual-time-budget` cannot do this: virtual time stops while an
/// `EventSource` is open.) The iframe has the window's size, so `url` lays out as it would
/// at top level.
pub fn screenshot_after(url: &str, out_png: &Path, width: u32, height: u32, settle: Duration) {
    let wrapper = format!(
        "<!doctype html><html><head><meta charset=utf-8><style>\
         html,body{{margin:0;padding:0;overflow:hidden}}\
         iframe{{position:fixed;top:0;left:0;width:100vw;height:100vh;border:0}}\
         </style></head><body>\
         <iframe src=\"{}\"></iframe>\
         <img src=\"/settle\" alt=\"\" style=\"display:none\">\
         </body></html>",
        html_attr(url)
    );
    let server = PageServer::start(vec![
        Page::html("/", &wrapper),
        Page {
            path: "/settle".into(),
            content_type: "image/gif".into(),
            body: TRANSPARENT_GIF.to_vec(),
            delay: settle,
        },
    ]);
    screenshot(&server.url("/"), out_png, width, height);
}

/// A 1×1 transparent GIF.
const TRANSPARENT_GIF: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// Width and height from a PNG file's IHDR, `None` if it is missing or not a PNG.
pub fn png_size(path: &Path) -> Option<(u32, u32)> {
    let bytes = std::fs::read(path).ok()?;
    if bytes.len() < 24 || &bytes[..8] != b"\x89PNG\r\n\x1a\n" || &bytes[12..16] != b"IHDR" {
        return None;
    }
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    Some((be(&bytes[16..20]), be(&bytes[20..24])))
}

/// `text` escaped for a double-quoted HTML attribute.
pub fn html_attr(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One thing [`PageServer`] serves at `GET path` (query ignored), after `delay`.
#[derive(Clone, Debug)]
pub struct Page {
    pub path: String,
    pub content_type: String,
    pub body: Vec<u8>,
    pub delay: Duration,
}

impl Page {
    pub fn html(path: &str, html: &str) -> Page {
        Page {
            path: path.into(),
            content_type: "text/html; charset=utf-8".into(),
            body: html.as_bytes().to_vec(),
            delay: Duration::ZERO,
        }
    }
}

/// One request [`PageServer`] received.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// Path with query.
    pub target: String,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Shared {
    requests: Vec<Request>,
    /// Bodies of `POST /report`, in arrival order.
    reports: Vec<String>,
}

/// A std-only HTTP/1.1 server on a fresh 127.0.0.1 port, one thread per connection, every
/// response `Connection: close`: `GET` of a [`Page`] path serves it, `POST /report` stores its
/// body (see [`PageServer::reports`]) and answers `204`, anything else `404`. Every request is
/// logged ([`PageServer::requests`]). Stops (and joins its accept thread) on drop.
pub struct PageServer {
    pub addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PageServer {
    pub fn start(pages: Vec<Page>) -> PageServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind page server");
        let addr = listener.local_addr().expect("page server address");
        let shared = Arc::new(Mutex::new(Shared::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let pages: Arc<HashMap<String, Page>> =
            Arc::new(pages.into_iter().map(|p| (p.path.clone(), p)).collect());
        let thread = {
            let (shared, stop) = (shared.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(conn) = conn else { continue };
                    let (shared, pages) = (shared.clone(), pages.clone());
                    std::thread::spawn(move || serve(conn, &pages, &shared));
                }
            })
        };
        PageServer {
            addr,
            shared,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        lock(&self.shared).requests.clone()
    }

    /// Bodies of every `POST /report` so far, in arrival order.
    pub fn reports(&self) -> Vec<String> {
        lock(&self.shared).reports.clone()
    }
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

fn serve(conn: TcpStream, pages: &HashMap<String, Page>, shared: &Mutex<Shared>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(10)));
    let Some(req) = read_request(&conn) else {
        return;
    };
    let path = req.target.split('?').next().unwrap_or("").to_string();
    let reply = match (req.method.as_str(), path.as_str()) {
        ("POST", "/report") => {
            lock(shared)
                .reports
                .push(String::from_utf8_lossy(&req.body).into_owned());
            (204, "text/plain".to_string(), Vec::new(), Duration::ZERO)
        }
        ("GET", p) => match pages.get(p) {
            Some(page) => (
                200,
                page.content_type.clone(),
                page.body.clone(),
                page.delay,
            ),
            None => (
                404,
                "text/plain".into(),
                b"not found\n".to_vec(),
                Duration::ZERO,
            ),
        },
        _ => (
            405,
            "text/plain".into(),
            b"method\n".to_vec(),
            Duration::ZERO,
        ),
    };
    lock(shared).requests.push(req);
    let (status, content_type, body, delay) = reply;
    if !delay.is_zero() {
        sleep(delay);
    }
    let reason = match status {
        200 => "OK",
        204 => "No Content",
        404 => "Not Found",
        _ => "Method Not Allowed",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut conn = conn;
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(&body);
    let _ = conn.flush();
}

/// Reads one request (head and a `Content-Length` body); `None` on EOF, timeout or garbage
/// (Chromium opens speculative connections it may never use).
fn read_request(conn: &TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length.min(16 << 20)];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        target,
        headers,
        body,
    })
}
