//! A real ejabberd (Debian's 23.01) per test: owns its config, ctl config, spool (mnesia:
//! accounts, persistent rooms, archives) and logs in one [`TempDir`], its random loopback ports
//! and its Erlang node (start, restart, stop, user registration, room creation).
//!
//! Layout: `ejabberd.yml`, `ejabberdctl.cfg`, `inetrc`, `spool/` (mnesia and `ejabberd.pid`),
//! `logs/` (`ejabberd.log`, `error.log`), `ctl.out` (what `ejabberdctl` printed).
//!
//! Quirks this works around (found by experiment on ejabberd 23.01, Debian 12):
//! - `--ctl-config` is required: Debian's `/etc/ejabberd/ejabberdctl.cfg` is read after the
//!   command line and resets the config path to `/etc/ejabberd/ejabberd.yml` otherwise.
//! - With `ERL_DIST_PORT` set, ejabberdctl starts the node with `-start_epmd false` and
//!   reaches it on that port: no epmd runs at all (without it, an epmd would listen on every
//!   interface). `INET_DIST_INTERFACE=127.0.0.1` keeps the distribution port on loopback.
//! - Run as root, ejabberdctl switches to the `ejabberd` user, so the temp dir is handed to
//!   that user.
//! - `ejabberdctl start` detaches; the node is ready when its listeners accept TCP. It is
//!   stopped with `ejabberdctl stop` and the beam process (pid file) is awaited, then killed.
//! - Without epmd every node of a cluster must use the same distribution port (`-erl_epmd_port`
//!   names the port of every node), so [`Ejabberd::start_cluster`] puts the second node on
//!   127.0.0.2 (all of 127/8 is loopback) with long node names `ejt…@127.0.0.<n>`.

use crate::prosody::ROOM_OWNER;
use crate::server::Server;
use crate::xmpp::XmppClient;
use crate::{TempDir, free_port, random_hex, tail};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

const EJABBERDCTL: &str = "ejabberdctl";
const NOT_FOUND: &str = "ejabberd not found: install Debian's ejabberd (apt-get install -y ejabberd, then stop its system service: service ejabberd stop); the tests against ejabberd need a real one";
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// A running ejabberd bound to one loopback address (127.0.0.1 unless clustered). Dropping it
/// stops the node and removes its dir.
pub struct Ejabberd {
    /// The c2s virtual host: `localhost`.
    pub domain: String,
    /// The MUC service: `conference.localhost`.
    pub muc: String,
    /// The external (XEP-0114) component the daemon logs in as: `sse.localhost`.
    pub component: String,
    /// The component's password (random hex).
    pub secret: String,
    pub c2s_port: u16,
    pub component_port: u16,
    pub http_port: u16,
    /// Erlang distribution port (the node listens on [`Ejabberd::ip`] only, no epmd).
    pub dist_port: u16,
    /// Erlang node name, unique per instance: `ejt<hex>@localhost` (`@127.0.0.<n>` clustered).
    pub node: String,
    /// The loopback address every listener of this node binds.
    pub ip: [u8; 4],
    pub dir: TempDir,
    /// Extra components, each on a listener of its own: (JID, password, port). One
    /// `ejabberd_service` listener routes all of its `hosts` to whichever component logs in
    /// there, so two daemons need two listeners.
    extra_components: Vec<(String, String, u16)>,
    running: bool,
}

impl Ejabberd {
    /// Starts ejabberd with the base config (see [`Ejabberd::config_text`]).
    pub fn start() -> Ejabberd {
        Ejabberd::start_with_components(&[])
    }

    /// Like [`Ejabberd::start`], with more components (JID, password), each on an
    /// `ejabberd_service` listener of its own ([`Ejabberd::component_addr_of`]), e.g.
    /// `sse2.localhost` for a second daemon.
    pub fn start_with_components(extra: &[(&str, &str)]) -> Ejabberd {
        Ejabberd::launch([127, 0, 0, 1], None, false, extra)
    }

    /// Two nodes clustered on loopback (the second joined to the first with `ejabberdctl
    /// join_cluster`): accounts, rooms and archives are shared, each node has its own
    /// listeners (first on 127.0.0.1, second on 127.0.0.2) and its own component password for
    /// `sse.localhost`; `extra` components are accepted by both.
    pub fn start_cluster(extra: &[(&str, &str)]) -> (Ejabberd, Ejabberd) {
        let first = Ejabberd::launch([127, 0, 0, 1], None, true, extra);
        let second = Ejabberd::launch([127, 0, 0, 2], Some(first.dist_port), true, extra);
        let out = second.ctl(&["join_cluster", &first.node]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "join_cluster {} failed ({}): {text}
--- log of {} ---
{}",
            first.node,
            out.status,
            second.node,
            tail(&second.log(), 40)
        );
        // join_cluster restarts the second node's ejabberd application: wait for it again.
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let listed =
                String::from_utf8_lossy(&second.ctl(&["list_cluster"]).stdout).into_owned();
            if listed.contains(&first.node)
                && listed.contains(&second.node)
                && accepts(second.c2s_addr())
                && accepts(second.component_addr())
            {
                return (first, second);
            }
            assert!(
                Instant::now() < deadline,
                "{} did not come back clustered with {}: {listed}
{}",
                second.node,
                first.node,
                tail(&second.log(), 40)
            );
            sleep(Duration::from_millis(200));
        }
    }

    /// Starts a node on `ip`; `dist_port` is picked freely unless given (a cluster's nodes
    /// share theirs); a cluster's nodes have long names (`@<ip>`), a lone node `@localhost`.
    fn launch(
        ip: [u8; 4],
        dist_port: Option<u16>,
        clustered: bool,
        extra: &[(&str, &str)],
    ) -> Ejabberd {
        check_installed();
        let dir = TempDir::new("muc-es-ejabberd");
        for sub in ["spool", "logs"] {
            std::fs::create_dir_all(dir.join(sub)).expect("create ejabberd dirs");
        }
        let mut e = Ejabberd {
            domain: "localhost".into(),
            muc: "conference.localhost".into(),
            component: "sse.localhost".into(),
            secret: random_hex(16),
            c2s_port: 0,
            component_port: 0,
            http_port: 0,
            dist_port: 0,
            node: if clustered {
                format!("ejt{}@{}", random_hex(5), ip_text(ip))
            } else {
                format!("ejt{}@localhost", random_hex(5))
            },
            ip,
            dir,
            extra_components: extra
                .iter()
                .map(|(j, p)| (j.to_string(), p.to_string(), 0))
                .collect(),
            running: false,
        };
        // Ports picked by free_port() may be taken before ejabberd binds them: retry.
        for attempt in 1..=3 {
            e.pick_ports(dist_port);
            e.write_config();
            match e.spawn_and_wait() {
                Ok(()) => return e,
                Err(why) => {
                    e.stop_node();
                    if attempt == 3 {
                        panic!(
                            "ejabberd did not start: {why}\nconfig {}:\n{}\n--- ejabberd log tail ---\n{}\n--- ctl output ---\n{}",
                            e.dir.join("ejabberd.yml").display(),
                            e.config_text(),
                            tail(&e.log(), 60),
                            tail(&read_lossy(&e.dir.join("ctl.out")), 20)
                        );
                    }
                }
            }
        }
        unreachable!()
    }

    fn pick_ports(&mut self, dist_port: Option<u16>) {
        let mut ports: Vec<u16> = Vec::new();
        while ports.len() < 4 + self.extra_components.len() {
            let p = free_port();
            if !ports.contains(&p) {
                ports.push(p);
            }
        }
        self.c2s_port = ports[0];
        self.component_port = ports[1];
        self.http_port = ports[2];
        self.dist_port = dist_port.unwrap_or(ports[3]);
        for (i, extra) in self.extra_components.iter_mut().enumerate() {
            extra.2 = ports[4 + i];
        }
    }

    /// The complete `ejabberd.yml` this instance runs with.
    pub fn config_text(&self) -> String {
        let ip = ip_text(self.ip);
        let service = |jid: &str, pass: &str, port: u16| {
            format!(
                "  -\n    port: {port}\n    ip: \"{ip}\"\n    module: ejabberd_service\n    hosts:\n      \"{jid}\":\n        password: \"{pass}\"\n"
            )
        };
        let mut services = service(&self.component, &self.secret, self.component_port);
        for (jid, pass, port) in &self.extra_components {
            services.push_str(&service(jid, pass, *port));
        }
        let level = std::env::var("EJABBERD_LOG_LEVEL").unwrap_or_else(|_| "info".into());
        format!(
            r#"# Generated by testkit/src/ejabberd.rs
hosts:
  - "{domain}"
loglevel: {level}
log_rotate_count: 0
certfiles: []
auth_method: internal
auth_password_format: plain
listen:
  -
    port: {c2s}
    ip: "{ip}"
    module: ejabberd_c2s
    starttls: false
{services}  -
    port: {http}
    ip: "{ip}"
    module: ejabberd_http
acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
  c2s:
    allow: all
  muc_create:
    allow: local
modules:
  mod_disco: {{}}
  mod_ping: {{}}
  mod_mam:
    default: always
  mod_muc:
    host: "{muc}"
    access: all
    access_create: muc_create
    access_persistent: all
    default_room_options:
      persistent: true
      public: true
      mam: true
"#,
            domain = self.domain,
            c2s = self.c2s_port,
            http = self.http_port,
            muc = self.muc,
        )
    }

    fn ctl_config_text(&self) -> String {
        format!(
            "# Generated by testkit/src/ejabberd.rs\n\
             ERLANG_NODE={node}\n\
             ERL_DIST_PORT={dist}\n\
             INET_DIST_INTERFACE={ip}\n\
             ERL_EPMD_ADDRESS=127.0.0.1\n\
             EJABBERD_PID_PATH={pid}\n\
             EJABBERD_BYPASS_WARNINGS=true\n",
            node = self.node,
            dist = self.dist_port,
            ip = ip_text(self.ip),
            pid = self.pid_path().display(),
        )
    }

    fn write_config(&self) {
        std::fs::write(self.dir.join("ejabberd.yml"), self.config_text())
            .expect("write ejabberd.yml");
        std::fs::write(self.dir.join("ejabberdctl.cfg"), self.ctl_config_text())
            .expect("write ejabberdctl.cfg");
        // Erlang's resolver config (ejabberdctl points ERL_INETRC into the config dir).
        let inetrc = std::fs::read_to_string("/etc/ejabberd/inetrc")
            .unwrap_or_else(|_| "{lookup,[file,native]}.\n".into());
        std::fs::write(self.dir.join("inetrc"), inetrc).expect("write inetrc");
        // ejabberdctl runs the node as the `ejabberd` user when started by root.
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "ejabberd:"])
                .arg(self.dir.path())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(
                ok,
                "chown -R ejabberd: {} failed",
                self.dir.path().display()
            );
        }
    }

    fn pid_path(&self) -> PathBuf {
        self.dir.join("spool").join("ejabberd.pid")
    }

    /// Runs `ejabberdctl --config-dir … <args>`; its output is also appended to `ctl.out`.
    pub fn ctl(&self, args: &[&str]) -> Output {
        let d = self.dir.path();
        let out = Command::new(ejabberdctl())
            .arg("--config-dir")
            .arg(d)
            .arg("--config")
            .arg(d.join("ejabberd.yml"))
            .arg("--ctl-config")
            .arg(d.join("ejabberdctl.cfg"))
            .arg("--spool")
            .arg(d.join("spool"))
            .arg("--logs")
            .arg(d.join("logs"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {EJABBERDCTL}: {e}\n{NOT_FOUND}"));
        let mut log = format!("$ ejabberdctl {} -> {}\n", args.join(" "), out.status);
        log.push_str(&String::from_utf8_lossy(&out.stdout));
        log.push_str(&String::from_utf8_lossy(&out.stderr));
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("ctl.out"))
            .and_then(|mut f| std::io::Write::write_all(&mut f, log.as_bytes()));
        out
    }

    /// `<ip>:<c2s_port>`.
    pub fn c2s_addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, self.c2s_port))
    }

    /// `<ip>:<component_port>`.
    pub fn component_addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, self.component_port))
    }

    /// Where the extra component `jid` logs in (its own `ejabberd_service` listener).
    pub fn component_addr_of(&self, jid: &str) -> SocketAddr {
        let port = self
            .extra_components
            .iter()
            .find(|(j, _, _)| j == jid)
            .map(|(_, _, port)| *port)
            .unwrap_or_else(|| panic!("{jid} is not a component of this ejabberd"));
        SocketAddr::from((self.ip, port))
    }

    /// ejabberd's log (`logs/ejabberd.log`) so far.
    pub fn log(&self) -> String {
        read_lossy(&self.dir.join("logs").join("ejabberd.log"))
    }

    /// The beam process's pid (from the pid file), if it is alive.
    pub fn pid(&self) -> Option<u32> {
        let pid: u32 = read_lossy(&self.pid_path()).trim().parse().ok()?;
        Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
    }

    /// `ejabberdctl register USER localhost PASS`; an existing account is fine.
    pub fn register(&self, user: &str, pass: &str) {
        let out = self.ctl(&["register", user, &self.domain, pass]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() && !text.contains("already registered") {
            panic!(
                "ejabberdctl register {user} {} failed ({}): {text}",
                self.domain, out.status
            );
        }
    }

    /// Creates persistent public rooms by joining each as [`ROOM_OWNER`] (who thereby owns
    /// it), accepting the default configuration of a new (locked, status 201) room, and
    /// leaving. Rooms that already exist are just joined and left.
    pub fn create_rooms(&self, rooms: &[&str]) {
        let (user, pass) = ROOM_OWNER;
        self.register(user, pass);
        let mut c = XmppClient::connect(self, user, pass);
        for room in rooms {
            let joined = c
                .try_join(room, user, "")
                .unwrap_or_else(|e| panic!("{user} could not create {room}: {e}"));
            if joined.contains("code='201'") || joined.contains("code=\"201\"") {
                let id = c.id("instant");
                let jid = c.room_jid(room);
                let reply = c.iq(
                    &id,
                    &format!(
                        "<iq type='set' to='{jid}' id='{id}'><query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'/></query></iq>"
                    ),
                );
                assert!(
                    reply.contains("type='result'") || reply.contains("type=\"result\""),
                    "instant room {jid}: {reply}"
                );
            }
            c.leave(room);
        }
        c.close();
    }

    /// Stops the node and starts it again with the same config, ports and spool (accounts,
    /// persistent rooms and archives survive). Panics with the log tail if it does not return.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(why) = self.spawn_and_wait() {
            self.stop_node();
            panic!(
                "ejabberd did not restart: {why}\n--- ejabberd log tail ---\n{}",
                tail(&self.log(), 60)
            );
        }
    }

    /// `ejabberdctl stop`, waits for the beam process to exit (killed after 15 s).
    pub fn stop(&mut self) {
        if self.running {
            self.stop_node();
        }
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let log_len_before = self.log().len();
        let out = self.ctl(&["start"]);
        if !out.status.success() {
            return Err(format!(
                "ejabberdctl start exited with {}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        self.running = true;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if accepts(self.c2s_addr()) && accepts(self.component_addr()) {
                return Ok(());
            }
            let log = self.log();
            if let Some(line) = log
                .get(log_len_before..)
                .unwrap_or("")
                .lines()
                .find(|l| l.contains("eaddrinuse") || l.contains("[critical]"))
            {
                return Err(line.to_string());
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

    /// Stops the node however it is doing: `ejabberdctl stop`, then waits for the beam pid,
    /// then SIGKILL.
    fn stop_node(&mut self) {
        let pid = self.pid();
        let _ = self.ctl(&["stop"]);
        self.running = false;
        let Some(pid) = pid else { return };
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Path::new(&format!("/proc/{pid}")).exists() {
            if Instant::now() >= deadline {
                eprintln!("ejabberd (pid {pid}) did not stop within {STOP_TIMEOUT:?}; killing");
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
                sleep(Duration::from_millis(200));
                break;
            }
            sleep(Duration::from_millis(50));
        }
        let _ = std::fs::remove_file(self.pid_path());
    }
}

impl Drop for Ejabberd {
    fn drop(&mut self) {
        if self.running || self.pid().is_some() {
            self.stop_node();
        }
    }
}

impl Server for Ejabberd {
    fn name(&self) -> &'static str {
        "ejabberd"
    }
    fn domain(&self) -> &str {
        &self.domain
    }
    fn muc(&self) -> &str {
        &self.muc
    }
    fn component(&self) -> &str {
        &self.component
    }
    fn secret(&self) -> &str {
        &self.secret
    }
    fn c2s_addr(&self) -> SocketAddr {
        Ejabberd::c2s_addr(self)
    }
    fn component_addr(&self) -> SocketAddr {
        Ejabberd::component_addr(self)
    }
    fn register(&self, user: &str, pass: &str) {
        Ejabberd::register(self, user, pass)
    }
    fn create_rooms(&self, rooms: &[&str]) {
        Ejabberd::create_rooms(self, rooms)
    }
    fn restart(&mut self) {
        Ejabberd::restart(self)
    }
    fn stop(&mut self) {
        Ejabberd::stop(self)
    }
    fn log(&self) -> String {
        Ejabberd::log(self)
    }
}

fn check_installed() {
    if !ejabberdctl().is_file() {
        panic!("{NOT_FOUND}");
    }
}

/// `ejabberdctl` on `PATH`, or in `/usr/sbin` (where Debian puts it; not on every user's PATH).
fn ejabberdctl() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|p| p.join(EJABBERDCTL))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(EJABBERDCTL))
}

fn ip_text(ip: [u8; 4]) -> String {
    std::net::Ipv4Addr::from(ip).to_string()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn accepts(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}
