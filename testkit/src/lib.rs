//! The test harness (dev-only crate `testkit`, `publish = false`) shared by the integration
//! tests (`tests/*.rs`), the fanout bench and the demo example.
//!
//! Owns the small utilities every part of the harness needs: [`free_port`], [`TempDir`],
//! [`random_hex`], [`tail`], plus the re-exports of the harness modules:
//! - [`prosody`]: a real Prosody (c2s + MUC + the `sse.localhost` component) per test;
//! - [`ejabberd`]: the same with a real ejabberd;
//! - [`server`]: the [`Server`] trait over both, and [`server::Kind`] to start either;
//! - [`xmpp`]: a blocking c2s client that joins rooms and sends messages;
//! - [`sse`]: a WHATWG-conformant event-stream parser and a raw HTTP/SSE client;
//! - [`daemon`]: the `muc-eventsource` binary under test, configured against a [`Server`];
//! - [`sha1`]: SHA-1 for the component handshake, independent of the daemon's;
//! - [`sock`]: client sockets with a source address, `SO_RCVBUF` or `TCP_MAXSEG` set;
//! - [`nginx`]: nginx as a reverse proxy, stopped gracefully with its worker;
//! - [`json`]: the JSON reader for checking event data (`serde_json`, strict, order kept);
//! - [`procs`]: the check that no process outlives the test binary, and a graceful stop for
//!   servers with workers.
//!
//! Everything is blocking and std-only; every wait is bounded and panics with the relevant log
//! tail instead of hanging.

pub mod browser;
pub mod daemon;
pub mod ejabberd;
pub mod fake_upstream;
pub mod json;
pub mod nginx;
pub mod procs;
pub mod prosody;
pub mod relay;
pub mod server;
pub mod sha1;
pub mod sock;
pub mod sse;
pub mod xmpp;

pub use daemon::Daemon;
pub use ejabberd::Ejabberd;
pub use json::json_str;
pub use prosody::Prosody;
pub use server::{Kind, Server};
pub use sse::{SseClient, SseEvent, SseParser, http_get, http_raw, http_request};
pub use xmpp::XmppClient;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A TCP port on 127.0.0.1 that was free a moment ago (bind port 0, read it, drop the socket).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// `bytes * 2` random lowercase hex digits (std-only: per-process random hasher keys mixed with
/// the time, the pid and a counter; good enough for secrets and unique names in tests).
pub fn random_hex(bytes: usize) -> String {
    let mut out = String::with_capacity(bytes * 2);
    while out.len() < bytes * 2 {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.write_u32(std::process::id());
        h.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out.truncate(bytes * 2);
    out
}

/// Waits until `addr` accepts TCP connections; panics naming `what` after `timeout`.
pub fn wait_for_listener(addr: std::net::SocketAddr, timeout: std::time::Duration, what: &str) {
    let deadline = std::time::Instant::now() + timeout;
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} did not start listening on {addr} within {timeout:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The last `lines` lines of `text` (for panic messages).
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    all[start..].join("\n")
}

/// A fresh directory under `std::env::temp_dir()`, removed (recursively) on drop unless the
/// environment variable `KEEP_TEST_DIRS` is set (then its path is printed instead).
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `<tmp>/<prefix>-<pid>-<random>`. Every harness resource that starts a process
    /// creates its TempDir first, so this also arms [`procs::arm`]: the binary fails at exit
    /// if a child of it is still alive.
    pub fn new(prefix: &str) -> TempDir {
        procs::arm();
        let base = std::env::temp_dir();
        for _ in 0..100 {
            let path = base.join(format!("{prefix}-{}-{}", std::process::id(), random_hex(6)));
            match std::fs::create_dir(&path) {
                Ok(()) => return TempDir { path },
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("cannot create temp dir {}: {e}", path.display()),
            }
        }
        panic!("cannot find a free temp dir name under {}", base.display());
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `self.path().join(name)`.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("KEEP_TEST_DIRS").is_some() {
            eprintln!("KEEP_TEST_DIRS: keeping {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
