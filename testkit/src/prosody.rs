//! A real Prosody (Debian's 0.12) per test: owns its config file, temp data dir, log file, random
//! loopback ports and the child process (start, restart, stop, user registration).
//!
//! Layout (all under one [`TempDir`]): `prosody.cfg.lua`, `prosody.pid`, `prosody.log` (Prosody's
//! own log, level from env `PROSODY_LOG_LEVEL`, default `debug`), `prosody.console` (its
//! stdout/stderr), `data/` (accounts, persistent rooms, MAM) and an empty `certs/` (keeps
//! certmanager from logging an error about a missing certificate directory).
//!
//! Quirks this works around (found by experiment on Prosody 0.12.3):
//! - Prosody and prosodyctl refuse to run as root, or (prosodyctl) switch to the `prosody` user
//!   and then cannot write our temp dir, unless the config says `run_as_root = true`.
//! - `daemonize = false` in the config logs a deprecation warning unless `-F` is also given on
//!   the command line; we pass `-F` (then the config option is never read).
//! - Prosody does not exit when it cannot bind a port; it logs `Failed to open server port`.
//!   [`Prosody::start`] watches for that and retries with fresh ports.

use crate::xmpp::XmppClient;
use crate::{TempDir, free_port, random_hex, tail};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

const PROSODY: &str = "prosody";
const PROSODYCTL: &str = "prosodyctl";
const NOT_FOUND: &str = "prosody not found: install Debian's prosody (apt-get install -y prosody); integration tests need a real Prosody";
const START_TIMEOUT: Duration = Duration::from_secs(15);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running Prosody bound to 127.0.0.1 only. Dropping it stops Prosody and removes its dir.
pub struct Prosody {
    /// The c2s virtual host: `localhost`.
    pub domain: String,
    /// The MUC component: `conference.localhost`.
    pub muc: String,
    /// The external (XEP-0114) component the daemon logs in as: `sse.localhost`.
    pub component: String,
    /// `component_secret` of [`Prosody::component`] (random hex).
    pub secret: String,
    pub c2s_port: u16,
    pub component_port: u16,
    /// Temp dir holding config, data, pidfile and logs.
    pub dir: TempDir,
    extra_global: String,
    extra_muc: String,
    extra_component: String,
    child: Option<Child>,
}

impl Prosody {
    /// Starts Prosody with the base config (see [`Prosody::config_text`]).
    pub fn start() -> Prosody {
        Prosody::start_full("", "", "")
    }

    /// Starts Prosody with extra Lua lines appended to the global section (before the first
    /// `VirtualHost`) and to the `Component "conference.localhost" "muc"` section, e.g.
    /// `start_with("", "modules_enabled = { \"muc_mam\" }")`.
    ///
    /// Note: Lua assignments replace; an `extra_global` that sets `modules_enabled` replaces the
    /// base list ([`BASE_MODULES`]) and must repeat it. In a Component section `modules_enabled`
    /// adds to what the component loads anyway, so `extra_muc` can set it freely.
    pub fn start_with(extra_global: &str, extra_muc: &str) -> Prosody {
        Prosody::start_full(extra_global, extra_muc, "")
    }

    /// Like [`Prosody::start_with`], plus extra lines for the `Component "sse.localhost"` section.
    pub fn start_full(extra_global: &str, extra_muc: &str, extra_component: &str) -> Prosody {
        check_installed();
        let dir = TempDir::new("muc-es-prosody");
        std::fs::create_dir_all(dir.join("data")).expect("create prosody data dir");
        std::fs::create_dir_all(dir.join("certs")).expect("create prosody certs dir");
        let mut p = Prosody {
            domain: "localhost".into(),
            muc: "conference.localhost".into(),
            component: "sse.localhost".into(),
            secret: random_hex(16),
            c2s_port: 0,
            component_port: 0,
            dir,
            extra_global: extra_global.into(),
            extra_muc: extra_muc.into(),
            extra_component: extra_component.into(),
            child: None,
        };
        // A port picked by free_port() can be taken by someone else before Prosody binds it;
        // Prosody then keeps running without that listener, so retry with new ports.
        for attempt in 1..=3 {
            p.c2s_port = free_port();
            p.component_port = free_port();
            while p.component_port == p.c2s_port {
                p.component_port = free_port();
            }
            std::fs::write(p.config_path(), p.config_text()).expect("write prosody config");
            match p.spawn_and_wait() {
                Ok(()) => return p,
                Err(why) if attempt < 3 && why.contains("Failed to open server port") => {
                    p.kill_now();
                }
                Err(why) => {
                    p.kill_now();
                    panic!(
                        "Prosody did not start: {why}\nconfig {}:\n{}\n--- prosody log tail ---\n{}\n--- console ---\n{}",
                        p.config_path().display(),
                        p.config_text(),
                        tail(&p.log(), 60),
                        tail(&p.console(), 20)
                    );
                }
            }
        }
        unreachable!()
    }

    /// The complete Lua config this instance runs with.
    pub fn config_text(&self) -> String {
        let d = self.dir.path().display();
        let level = std::env::var("PROSODY_LOG_LEVEL").unwrap_or_else(|_| "debug".into());
        format!(
            r#"-- Generated by testkit/src/prosody.rs
daemonize = false
run_as_root = true
pidfile = "{d}/prosody.pid"
data_path = "{d}/data"
certificates = "{d}/certs"
log = {{ {{ levels = {{ min = "{level}" }}, to = "file", filename = "{d}/prosody.log" }} }}

interfaces = {{ "127.0.0.1" }}
local_interfaces = {{ "127.0.0.1" }}
c2s_interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {c2s} }}
c2s_direct_tls_ports = {{ }}
legacy_ssl_ports = {{ }}
component_interfaces = {{ "127.0.0.1" }}
component_ports = {{ {comp} }}
s2s_interfaces = {{ "127.0.0.1" }}
s2s_ports = {{ }}
s2s_direct_tls_ports = {{ }}
http_interfaces = {{ "127.0.0.1" }}
https_interfaces = {{ "127.0.0.1" }}
http_ports = {{ }}
https_ports = {{ }}

modules_enabled = {{ {modules} }}
modules_disabled = {{ "s2s"; "s2s_auth_certs" }}

c2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_plain"
storage = "internal"
-- extra_global:
{extra_global}

VirtualHost "{domain}"

Component "{muc}" "muc"
  muc_room_locking = false
  muc_room_default_public = true
  muc_room_default_persistent = true
  -- extra_muc:
{extra_muc}

Component "{component}"
  component_secret = "{secret}"
  -- extra_component:
{extra_component}
"#,
            c2s = self.c2s_port,
            comp = self.component_port,
            modules = BASE_MODULES,
            extra_global = self.extra_global,
            domain = self.domain,
            muc = self.muc,
            extra_muc = self.extra_muc,
            component = self.component,
            secret = self.secret,
            extra_component = self.extra_component,
        )
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("prosody.cfg.lua")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("prosody.log")
    }

    /// Prosody's log file so far (empty if not yet written).
    pub fn log(&self) -> String {
        read_lossy(&self.log_path())
    }

    /// Prosody's stdout/stderr so far.
    pub fn console(&self) -> String {
        read_lossy(&self.dir.join("prosody.console"))
    }

    /// `127.0.0.1:<c2s_port>`.
    pub fn c2s_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.c2s_port))
    }

    /// `127.0.0.1:<component_port>`.
    pub fn component_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.component_port))
    }

    /// `node@conference.localhost`.
    pub fn room_jid(&self, node: &str) -> String {
        format!("{node}@{}", self.muc)
    }

    /// Pid of the running Prosody, if any.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// `prosodyctl --config FILE register USER localhost PASS`; panics with its output on failure.
    /// Works while Prosody runs (internal_plain storage is read from disk at login).
    pub fn register(&self, user: &str, pass: &str) {
        let out = Command::new(PROSODYCTL)
            .arg("--config")
            .arg(self.config_path())
            .args(["register", user, &self.domain, pass])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {PROSODYCTL}: {e}\n{NOT_FOUND}"));
        if !out.status.success() {
            panic!(
                "prosodyctl register {user} {} failed ({}):\nstdout: {}\nstderr: {}",
                self.domain,
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// Creates (persistent, public, unlocked) rooms by joining and leaving each as
    /// [`ROOM_OWNER`], who thereby owns them (connect as it to configure them later). Rooms
    /// that already exist are just joined and left. muc-eventsource never creates rooms, so
    /// call this before [`crate::Daemon::start`].
    pub fn create_rooms(&self, rooms: &[&str]) {
        let (user, pass) = ROOM_OWNER;
        self.register(user, pass);
        let mut c = XmppClient::connect(self, user, pass);
        for room in rooms {
            c.join(room, user);
            c.leave(room);
        }
        c.close();
    }

    /// SIGTERM, wait up to 10 s, then SIGKILL. Returns the exit status (None if not running).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => sleep(Duration::from_millis(20)),
                _ => {
                    eprintln!("Prosody did not exit within {STOP_TIMEOUT:?} of SIGTERM; killing");
                    let _ = child.kill();
                    return child.wait().ok();
                }
            }
        }
    }

    /// Stops Prosody and starts it again with the same config, ports and data dir (persistent
    /// rooms and accounts survive). Panics with the log tail if it does not come back.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(why) = self.spawn_and_wait() {
            self.kill_now();
            panic!(
                "Prosody did not restart: {why}\n--- prosody log tail ---\n{}\n--- console ---\n{}",
                tail(&self.log(), 60),
                tail(&self.console(), 20)
            );
        }
    }

    /// Starts the child and waits until both ports accept TCP.
    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let log_len_before = self.log().len();
        let console = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("prosody.console"))
            .expect("open prosody console file");
        let child = crate::procs::tie_to_parent(&mut Command::new(PROSODY))
            .arg("-F")
            .arg("--config")
            .arg(self.config_path())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(console.try_clone().expect("clone console file"))
            .stderr(console)
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!("{NOT_FOUND}"),
            Err(e) => panic!("cannot spawn {PROSODY}: {e}"),
        };
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return Err(format!("prosody exited during startup with {status}"));
            }
            let new_log = self.log().get(log_len_before..).unwrap_or("").to_string();
            if let Some(line) = new_log
                .lines()
                .find(|l| l.contains("Failed to open server port"))
            {
                return Err(line.to_string());
            }
            if accepts(self.c2s_addr()) && accepts(self.component_addr()) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "c2s port {} and component port {} not both accepting after {START_TIMEOUT:?}",
                    self.c2s_port, self.component_port
                ));
            }
            sleep(Duration::from_millis(50));
        }
    }

    fn kill_now(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Prosody {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            // Don't wait 10 s for a wedged Prosody while unwinding a failed test.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    self.child = None;
                    return;
                }
                sleep(Duration::from_millis(20));
            }
        }
        self.kill_now();
    }
}

/// The account [`Prosody::create_rooms`] registers and joins with (nick = user name).
pub const ROOM_OWNER: (&str, &str) = ("owner", "owner-pw");

/// Global `modules_enabled` of the base config (c2s needs `saslauth` for SASL PLAIN).
pub const BASE_MODULES: &str =
    r#""roster"; "saslauth"; "disco"; "ping"; "posix"; "time"; "uptime"; "version""#;

fn check_installed() {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(PROSODY).is_file()))
        .unwrap_or(false);
    if !found {
        panic!("{NOT_FOUND}");
    }
}

fn accepts(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}
