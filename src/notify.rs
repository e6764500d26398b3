//! A tiny `sd_notify(3)` client: tells systemd (or anything else that sets `$NOTIFY_SOCKET`) that
//! the daemon is ready, what it is doing, that it is still alive, and that it is stopping.
//!
//! Protocol: one `AF_UNIX` datagram per call, holding newline-separated `KEY=value` assignments,
//! sent to the socket named by `$NOTIFY_SOCKET`: a path (`/run/systemd/notify`) or, with a
//! leading `@`, a Linux abstract-namespace name. Nothing beyond `std` is used.
//!
//! Every public function is a no-op when `$NOTIFY_SOCKET` is unset or empty (running by hand,
//! under procd, in tests), never panics, and never blocks: the socket is non-blocking, and a
//! datagram that cannot be sent is dropped and logged at `debug` (`warn` for `READY=1`, the one
//! message systemd acts on by itself under `Type=notify`).
//!
//! Where the daemon calls them (see `systemd/muc-eventsource.service`):
//! - [`ready`] and [`status`] once the component handshake with Prosody has succeeded;
//! - [`status`] on every reconnect attempt and every successful reconnect;
//! - [`watchdog`] from a timer every half of [`watchdog_interval`], when that is `Some`;
//! - [`stopping`] as soon as shutdown is requested.
//!
//! The environment is read by thin wrappers; the work is done by [`notify_to`] and
//! [`watchdog_interval_from`], which take their inputs as arguments so tests need not set
//! environment variables (that is `unsafe` in edition 2024, and this crate forbids `unsafe`).

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// `READY=1`: startup is finished (for `Type=notify`, this is when `systemctl start` returns).
pub fn ready() {
    if let Err(e) = notify("READY=1") {
        log::warn!("cannot tell the service manager READY=1: {e}");
    }
}

/// `STATUS=...`: a one-line status shown by `systemctl status`. Newlines become spaces.
pub fn status(text: &str) {
    let _ = notify(&format!("STATUS={}", one_line(text)));
}

/// `WATCHDOG=1`: the keep-alive ping, needed at least every `WatchdogSec=` when that is set.
pub fn watchdog() {
    let _ = notify("WATCHDOG=1");
}

/// `STOPPING=1`: shutdown has begun.
pub fn stopping() {
    let _ = notify("STOPPING=1");
}

/// The watchdog period the service manager expects pings within (`$WATCHDOG_USEC`), if it is
/// meant for this process (`$WATCHDOG_PID` unset or equal to our pid). Ping every half of it.
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    watchdog_interval_from(usec.as_deref(), pid.as_deref(), std::process::id())
}

/// Sends `state` to `$NOTIFY_SOCKET`. `Ok(false)` when there is no socket to tell.
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(socket) if !socket.is_empty() => notify_to(&socket, state).map(|()| true),
        _ => Ok(false),
    }
}

/// Sends `state` as one datagram to `socket`: a path, or `@name` for an abstract socket.
pub fn notify_to(socket: &OsStr, state: &str) -> io::Result<()> {
    let addr = socket_addr(socket)?;
    let sock = UnixDatagram::unbound()?;
    sock.set_nonblocking(true)?;
    let sent = sock.send_to_addr(state.as_bytes(), &addr)?;
    if sent != state.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("sent {sent} of {} bytes", state.len()),
        ));
    }
    Ok(())
}

fn socket_addr(socket: &OsStr) -> io::Result<SocketAddr> {
    let bytes = socket.as_bytes();
    match bytes.first() {
        Some(b'/') => SocketAddr::from_pathname(socket),
        Some(b'@') => abstract_addr(&bytes[1..]),
        _ => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "NOTIFY_SOCKET={}: only absolute paths and @abstract names are supported",
                socket.to_string_lossy()
            ),
        )),
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_addr(name: &[u8]) -> io::Result<SocketAddr> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_addr(_name: &[u8]) -> io::Result<SocketAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract unix sockets exist only on Linux",
    ))
}

/// `WATCHDOG_USEC` / `WATCHDOG_PID` rules of `sd_watchdog_enabled(3)`: a positive number of
/// microseconds, for us only if the pid is absent or ours.
pub fn watchdog_interval_from(
    usec: Option<&str>,
    pid: Option<&str>,
    own_pid: u32,
) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&n| n > 0)?;
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok() != Some(own_pid)
    {
        return None;
    }
    Some(Duration::from_micros(usec))
}

fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A datagram socket bound in a fresh temp dir, removed on drop.
    struct Listener {
        dir: PathBuf,
        path: PathBuf,
        sock: UnixDatagram,
    }

    fn unique(tag: &str) -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        format!(
            "muc-eventsource-notify-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )
    }

    impl Listener {
        fn new() -> Listener {
            let dir = std::env::temp_dir().join(unique("dir"));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("notify.sock");
            let sock = UnixDatagram::bind(&path).unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            Listener { dir, path, sock }
        }

        fn recv(&self) -> String {
            let mut buf = [0u8; 4096];
            let n = self.sock.recv(&mut buf).unwrap();
            String::from_utf8(buf[..n].to_vec()).unwrap()
        }
    }

    impl Drop for Listener {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[test]
    fn datagrams_reach_a_path_socket() {
        let l = Listener::new();
        let to = l.path.as_os_str();
        notify_to(to, "READY=1").unwrap();
        assert_eq!(l.recv(), "READY=1");
        notify_to(to, "STATUS=connected to 127.0.0.1:5347").unwrap();
        assert_eq!(l.recv(), "STATUS=connected to 127.0.0.1:5347");
        notify_to(to, "WATCHDOG=1").unwrap();
        assert_eq!(l.recv(), "WATCHDOG=1");
        notify_to(to, "STOPPING=1").unwrap();
        assert_eq!(l.recv(), "STOPPING=1");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn datagrams_reach_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = unique("abstract");
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        notify_to(OsStr::new(&format!("@{name}")), "READY=1\nSTATUS=up").unwrap();
        let mut buf = [0u8; 64];
        let n = sock.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=up");
    }

    #[test]
    fn bad_sockets_are_errors_not_panics() {
        let l = Listener::new();
        let missing = l.dir.join("nobody-here.sock");
        assert!(notify_to(missing.as_os_str(), "READY=1").is_err());
        let e = notify_to(OsStr::new("relative.sock"), "READY=1").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::Unsupported);
        assert!(notify_to(OsStr::new(""), "READY=1").is_err());
    }

    #[test]
    fn status_is_one_line() {
        assert_eq!(one_line("a\nb\r\nc"), "a b  c");
    }

    #[test]
    fn watchdog_interval_rules() {
        let me = 4242;
        let w = |u, p| watchdog_interval_from(u, p, me);
        assert_eq!(w(Some("20000000"), None), Some(Duration::from_secs(20)));
        assert_eq!(
            w(Some("500000"), Some("4242")),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            w(Some("500000"), Some("1")),
            None,
            "another process's watchdog"
        );
        assert_eq!(w(Some("0"), None), None);
        assert_eq!(w(Some("soon"), None), None);
        assert_eq!(w(None, Some("4242")), None);
    }

    #[test]
    fn public_functions_are_silent_without_a_socket() {
        // The test runner is not started by systemd; if it ever is, these just send datagrams.
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            assert!(!notify("READY=1").unwrap());
        }
        ready();
        status("line one\nline two");
        watchdog();
        stopping();
        let _ = watchdog_interval();
    }
}
